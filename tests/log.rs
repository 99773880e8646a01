//! The audit log: tampering of every kind is found at the right place, a crash at any
//! moment leaves a verifiable directory, rotation, retention, both on_full modes, a
//! failing (full or read-only) disk, and the syslog copy to a real rsyslog.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn config(up: std::net::SocketAddr, log: &str) -> String {
    let topology_allow = lan_behind_https("allow");
    format!(
        r#"{head}
[ip_sets]
it = ["127.0.0.0/8"]
{topology_allow}
[[service]]
name = "nas"
listener = "https"
hosts = ["nas.test"]
upstream = "http://{up}"
zone = "lan"
allow = ["it"]
"#,
        head = config_head("").replace("[log]\ndir = \"log\"\n", &format!("[log]\ndir = \"log\"\n{log}\n"))
    )
}

/// `n` requests, each on its own connection (3 records each).
async fn traffic(gw: &TestGateway, n: usize) {
    for i in 0..n {
        let r = gw.client().get(gw.addr("https"), "127.0.0.2", "nas.test").path(&format!("/{i}")).send().await;
        assert_eq!(r.expect("request").status, 200);
    }
}

struct Verified {
    code: i32,
    out: String,
}

fn verify(dir: &Path, pubkey: Option<&str>) -> Verified {
    let mut cmd = Command::new(bin());
    cmd.args(["log", "verify"]).arg(dir);
    if let Some(k) = pubkey {
        cmd.args(["--pubkey", k]);
    }
    let out = cmd.output().unwrap();
    Verified {
        code: out.status.code().unwrap_or(-1),
        out: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    }
}

fn pubkey_of(gw: &TestGateway) -> String {
    menshen::audit::chain::existing_public_key(&gw.dir.path().join("state")).expect("key")
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    menshen::audit::files::list(dir).unwrap().into_iter().map(|f| f.path).collect()
}

/// A copy of a log directory to tamper with.
fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for f in log_files(from) {
        std::fs::copy(&f, to.path().join(f.file_name().unwrap())).unwrap();
    }
    to
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

/// Recompute a record's hash the way the gateway does, after changing it.
fn rehash(line: &str, prev: &str) -> (String, String) {
    let body = &line[..line.rfind(",\"prev\":\"").unwrap()];
    let covered = format!("{body},\"prev\":\"{prev}\"}}");
    let hash = blake3::hash(covered.as_bytes()).to_hex().to_string();
    (format!("{body},\"prev\":\"{prev}\",\"hash\":\"{hash}\"}}"), hash)
}

/// A stopped gateway's log spread over several files (small max_file).
async fn sample_log() -> (TestGateway, String) {
    let up = start_upstream().await;
    let mut gw = TestGateway::start(&config(up.addr, "max_file = \"16KiB\""));
    traffic(&gw, 60).await;
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(), 0);
    let key = pubkey_of(&gw);
    (gw, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_log_verifies_and_rotates_by_size() {
    let (gw, key) = sample_log().await;
    let files = log_files(&gw.log_dir());
    assert!(files.len() >= 3, "max_file 16KiB should have rotated: {files:?}");
    for (i, f) in files.iter().enumerate() {
        let ls = lines(f);
        let first: Value = serde_json::from_str(&ls[0]).unwrap();
        assert_eq!(first["event"], "log.header");
        assert_eq!(first["pubkey"], key.as_str());
        assert!(std::fs::metadata(f).unwrap().len() < 16 * 1024 + 4096, "{f:?} much larger than max_file");
        let last: Value = serde_json::from_str(ls.last().unwrap()).unwrap();
        if i + 1 < files.len() {
            assert_eq!(last["event"], "log.checkpoint", "{f:?} closes with a checkpoint");
        }
    }
    let v = verify(&gw.log_dir(), Some(&key));
    assert_eq!(v.code, 0, "{}", v.out);
    assert!(v.out.contains("log OK"), "{}", v.out);
    // The graceful stop signed everything.
    assert!(v.out.contains("0 record(s) after it"), "{}", v.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_tampering_is_found_where_it_is() {
    let (gw, key) = sample_log().await;
    let dir = gw.log_dir();
    let files = log_files(&dir);
    let name = |i: usize| files[i].file_name().unwrap().to_str().unwrap().to_string();
    let case = |what: &str, change: &dyn Fn(&Path), expect_file: &str, expect_line: Option<usize>, expect: &str| {
        let copy = copy_dir(&dir);
        change(copy.path());
        for k in [Some(key.as_str()), None] {
            let v = verify(copy.path(), k);
            assert_eq!(v.code, 1, "{what}: not detected (key {k:?}):\n{}", v.out);
            assert!(v.out.contains(expect_file), "{what}: wrong file:\n{}", v.out);
            if let Some(l) = expect_line {
                assert!(v.out.contains(&format!("{expect_file}:{l}:")), "{what}: wrong line:\n{}", v.out);
            }
            assert!(v.out.contains(expect), "{what}: wrong reason:\n{}", v.out);
        }
    };
    let f1 = name(1);
    let path = |d: &Path| d.join(&f1);
    case(
        "edited field",
        &|d| {
            let mut ls = lines(&path(d));
            let edited = ls[4].replacen("\"gateway\":\"test-gw\"", "\"gateway\":\"test-gx\"", 1);
            assert_ne!(edited, ls[4]);
            ls[4] = edited;
            write_lines(&path(d), &ls);
        },
        &f1,
        Some(5),
        "edited",
    );
    case(
        "deleted record",
        &|d| {
            let mut ls = lines(&path(d));
            ls.remove(5);
            write_lines(&path(d), &ls);
        },
        &f1,
        Some(6),
        "removed, inserted or reordered",
    );
    case(
        "inserted record",
        &|d| {
            let mut ls = lines(&path(d));
            let dup = ls[3].clone();
            ls.insert(6, dup);
            write_lines(&path(d), &ls);
        },
        &f1,
        Some(7),
        "removed, inserted or reordered",
    );
    case(
        "reordered records",
        &|d| {
            let mut ls = lines(&path(d));
            ls.swap(4, 5);
            write_lines(&path(d), &ls);
        },
        &f1,
        Some(5),
        "removed, inserted or reordered",
    );
    let f2 = name(2);
    case("missing middle file", &|d| std::fs::remove_file(d.join(&f1)).unwrap(), &f2, Some(1), "missing or altered");
    case(
        "truncated middle file",
        &|d| {
            let ls = lines(&path(d));
            write_lines(&path(d), &ls[..ls.len() / 2]);
        },
        &f1,
        None,
        "truncated",
    );
    case(
        "torn last line",
        &|d| {
            let p = log_files(d).pop().unwrap();
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() - 20]).unwrap();
        },
        &name(files.len() - 1),
        None,
        "truncated",
    );
    // A consistent rewrite: the record is changed and every hash after it recomputed.
    // Only the signatures can tell, and they do.
    case(
        "re-hashed rewrite",
        &|d| {
            let mut prev: Option<String> = None;
            let mut started = false;
            for f in log_files(d) {
                let mut ls = lines(&f);
                for (i, l) in ls.iter_mut().enumerate() {
                    if f.ends_with(&f1) && i == 4 {
                        let forged = l.replacen("\"gateway\":\"test-gw\"", "\"gateway\":\"forged\"", 1);
                        assert_ne!(forged, *l, "the forgery changes something");
                        *l = forged;
                        started = true;
                    }
                    if started {
                        let p = prev.clone().unwrap();
                        // A careful forger also points checkpoints at the new hashes.
                        if let Some(at) = l.find("\"signed_hash\":\"") {
                            let from = at + 15;
                            l.replace_range(from..from + 64, &p);
                        }
                        let (new, h) = rehash(l, &p);
                        *l = new;
                        prev = Some(h);
                    } else {
                        let v: Value = serde_json::from_str(l).unwrap();
                        prev = Some(v["hash"].as_str().unwrap().to_string());
                    }
                }
                write_lines(&f, &ls);
            }
        },
        &f1,
        None,
        "signature is not valid",
    );
    // A renamed file (e.g. to dodge retention) is noticed by its header.
    let last = name(files.len() - 1);
    let moved = match last.strip_suffix(".jsonl").and_then(|b| b.rsplit_once('-')) {
        Some((base, part)) if part.len() < 8 => format!("{base}-{}.jsonl", part.parse::<u32>().unwrap() + 5),
        _ => last.replace(".jsonl", "-5.jsonl"),
    };
    case("renamed file", &|d| std::fs::rename(d.join(&last), d.join(&moved)).unwrap(), &moved, Some(1), "renamed");

    // Old files deleted and "explained" by a forged, unsigned prune record.
    let copy = copy_dir(&dir);
    std::fs::remove_file(copy.path().join(name(0))).unwrap();
    let last_file = log_files(copy.path()).pop().unwrap();
    let mut ls = lines(&last_file);
    let first_header: Value = serde_json::from_str(&lines(&copy.path().join(&f1))[0]).unwrap();
    let tail: Value = serde_json::from_str(ls.last().unwrap()).unwrap();
    let forged = format!(
        "{{\"seq\":{},\"ts\":\"{}\",\"event\":\"log.prune\",\"gateway\":\"test-gw\",\"reason\":\"retention\",\"files\":[\"{}\"],\"last_seq\":1,\"last_hash\":\"{}\",\"prev\":\"x\"}}",
        tail["seq"].as_u64().unwrap() + 1,
        tail["ts"].as_str().unwrap(),
        name(0),
        first_header["prev"].as_str().unwrap()
    );
    let (forged, _) = rehash(&forged, tail["hash"].as_str().unwrap());
    ls.push(forged);
    write_lines(&last_file, &ls);
    let v = verify(copy.path(), Some(&key));
    assert_eq!(v.code, 1, "a forged prune was accepted:\n{}", v.out);
    assert!(v.out.contains("not covered by a signed checkpoint"), "{}", v.out);

    // The wrong key is refused outright.
    let other = "11".repeat(32);
    let v = verify(&dir, Some(&other));
    assert_eq!(v.code, 1, "{}", v.out);
    assert!(v.out.contains("signing key"), "{}", v.out);
    // Unreadable: exit 2.
    let v = verify(Path::new("/nonexistent/menshen-log"), None);
    assert_eq!(v.code, 2, "{}", v.out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_any_moment_leaves_a_verifiable_log() {
    let up = start_upstream().await;
    let mut gw = TestGateway::start(&config(up.addr, "max_file = \"64KiB\""));
    let key = pubkey_of(&gw);
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for round in 0..20 {
        // Load from a task, then SIGKILL after a pseudo-random 20-220 ms.
        let c = gw.client();
        let addr = gw.addr("https");
        let load = tokio::spawn(async move {
            for i in 0..1000 {
                if c.get(addr, "127.0.0.2", "nas.test").path(&format!("/{i}")).send().await.is_err() {
                    break;
                }
            }
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(20 + seed % 200)).await;
        gw.signal("KILL");
        let _ = gw.wait_exit();
        load.abort();
        let _ = load.await;
        if round < 19 {
            gw.restart_after_crash();
        }
    }
    gw.restart_after_crash();
    traffic(&gw, 3).await;
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(), 0);
    let v = verify(&gw.log_dir(), Some(&key));
    assert_eq!(v.code, 0, "{}", v.out);
    assert_eq!(gw.records().last().unwrap()["event"], "log.checkpoint", "the stop signs the end");
    assert!(gw.records().iter().any(|r| r["event"] == "gateway.stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_files_with_a_record() {
    let up = start_upstream().await;
    let mut gw = TestGateway::start(&config(up.addr, "retention_days = 180"));
    traffic(&gw, 3).await;
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(), 0);
    // The clock, as retention sees it: the file's date. Make today's file 200 days old.
    let today = log_files(&gw.log_dir()).pop().unwrap();
    let old_date = jiff::Zoned::now().date().checked_sub(jiff::Span::new().days(200)).unwrap();
    let old_name = menshen::audit::files::FileId { date: old_date, part: 0 }.name();
    // Keep the header consistent with the name, so only age distinguishes it.
    let ls: Vec<String> = lines(&today);
    let mut prev = menshen::audit::GENESIS.to_string();
    let mut renamed = Vec::new();
    for (i, l) in ls.iter().enumerate() {
        let l = if i == 0 { l.replace(today.file_name().unwrap().to_str().unwrap(), &old_name) } else { l.clone() };
        let (new, h) = rehash(&l, &prev);
        renamed.push(new);
        prev = h;
    }
    std::fs::remove_file(&today).unwrap();
    write_lines(&gw.log_dir().join(&old_name), &renamed);

    gw.restart_after_crash();
    let prune = gw.wait_record(|r| r["event"] == "log.prune").await;
    assert_eq!(prune["reason"], "retention");
    assert_eq!(prune["files"], serde_json::json!([old_name]));
    // The record is made durable first, then the file goes.
    let deadline = std::time::Instant::now() + DEADLINE;
    while gw.log_dir().join(&old_name).exists() {
        assert!(std::time::Instant::now() < deadline, "the pruned file is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(), 0);
    let v = verify(&gw.log_dir(), Some(&pubkey_of(&gw)));
    assert_eq!(v.code, 0, "a prune is not tampering:\n{}", v.out);
    // Without the prune record, the missing file is reported.
    let copy = copy_dir(&gw.log_dir());
    let f = log_files(copy.path()).pop().unwrap();
    let ls: Vec<String> = lines(&f).into_iter().filter(|l| !l.contains("\"log.prune\"")).collect();
    write_lines(&f, &ls);
    assert_eq!(verify(copy.path(), None).code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_full_refuse_fails_closed_until_there_is_room() {
    let up = start_upstream().await;
    let gw = TestGateway::start(&config(up.addr, "max_file = \"16KiB\"\nmax_disk = \"64KiB\"\non_full = \"refuse\""));
    let mut refused = false;
    for i in 0..400 {
        if gw.client().get(gw.addr("https"), "127.0.0.2", "nas.test").path(&format!("/{i}")).send().await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "the gateway kept serving with a full log");
    gw.wait_record(|r| r["event"] == "log.capacity_warning").await;
    gw.wait_record(|r| r["event"] == "log.full").await;
    assert!(gw.client().get(gw.addr("https"), "127.0.0.2", "nas.test").send().await.is_err(), "still refusing");
    // An admin makes room (archives the oldest files): the gateway notices by itself.
    let files = log_files(&gw.log_dir());
    for f in &files[..files.len() - 1] {
        std::fs::remove_file(f).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if gw.client().get(gw.addr("https"), "127.0.0.2", "nas.test").send().await.is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never accepted again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gw.wait_record(|r| r["event"] == "log.capacity_ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_full_overwrite_oldest_prunes_and_goes_on() {
    let up = start_upstream().await;
    let mut gw = TestGateway::start(&config(
        up.addr,
        "max_file = \"16KiB\"\nmax_disk = \"64KiB\"\non_full = \"overwrite-oldest\"",
    ));
    traffic(&gw, 150).await;
    gw.wait_record(|r| r["event"] == "log.prune" && r["reason"] == "overwrite-oldest").await;
    let total: u64 = menshen::audit::files::list(&gw.log_dir()).unwrap().iter().map(|f| f.size).sum();
    assert!(total < 64 * 1024 + 32 * 1024, "{total} bytes: the cap is not kept");
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(), 0);
    let v = verify(&gw.log_dir(), Some(&pubkey_of(&gw)));
    assert_eq!(v.code, 0, "{}", v.out);
}

/// Mount a small tmpfs over `dir` (root only). None if mounting is not allowed here;
/// with MENSHEN_REQUIRE_MOUNT set (CI), that is a failure instead.
fn tmpfs(dir: &Path, size: &str) -> Option<()> {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("MENSHEN_REQUIRE_MOUNT").is_none(),
            "cannot mount a tmpfs, and MENSHEN_REQUIRE_MOUNT is set"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root; this case runs in CI");
        return None;
    }
    Some(())
}

fn umount(dir: &Path) {
    let _ = Command::new("umount").arg("-l").arg(dir).status();
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        umount(&self.0);
    }
}

#[test]
fn a_read_only_log_dir_stops_the_start_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("log");
    if tmpfs(&logdir, "1m").is_none() {
        return;
    }
    let _guard = Unmount(logdir.clone());
    assert!(Command::new("mount").args(["-o", "remount,ro"]).arg(&logdir).status().unwrap().success());
    let pki = TestPki::new(&["nas.test"]);
    std::fs::write(dir.path().join("gateway.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.path().join("gateway.key"), &pki.key_pem).unwrap();
    let cfg = dir.path().join("menshen.toml");
    std::fs::write(&cfg, config("127.0.0.1:9".parse().unwrap(), "")).unwrap();
    let out = Command::new(bin()).args(["run", "-c"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&logdir.display().to_string()) && err.to_lowercase().contains("read-only"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_closed_and_recovers_by_itself() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("log");
    if tmpfs(&logdir, "192k").is_none() {
        return;
    }
    let _guard = Unmount(logdir.clone());
    // max_disk is far away: the disk itself fills up (ENOSPC), on_full = refuse.
    let gw = TestGateway::start_in(dir, &config(up.addr, "max_file = \"32KiB\""));
    let mut refused = false;
    for i in 0..1000 {
        if gw.client().get(gw.addr("https"), "127.0.0.2", "nas.test").path(&format!("/{i}")).send().await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "connections still admitted with a full disk");
    // Room again (an admin archived old files): writing resumes by itself.
    for f in &log_files(&logdir)[..2] {
        std::fs::remove_file(f).unwrap();
    }
    let rec = gw.wait_record(|r| r["event"] == "log.write_recovered").await;
    assert!(rec["error"].as_str().unwrap().to_lowercase().contains("space"), "{rec}");
    let deadline = std::time::Instant::now() + DEADLINE;
    while gw.client().get(gw.addr("https"), "127.0.0.2", "nas.test").send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "never accepted again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_copy_reaches_a_real_rsyslog() {
    let Some(rsyslogd) = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"].into_iter().find(|p| Path::new(p).exists()) else {
        panic!("rsyslogd is not installed (apt-get install rsyslog; .ci/run does)");
    };
    let work = tempfile::tempdir().unwrap();
    let port = closed_port();
    let out = work.path().join("received.log");
    let conf = work.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}\")\nmodule(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"m\")\nruleset(name=\"m\") {{ action(type=\"omfile\" file=\"{o}\" template=\"RSYSLOG_SyslogProtocol23Format\") }}\n",
            w = work.path().display(),
            o = out.display()
        ),
    )
    .unwrap();
    let mut rs =
        Command::new(rsyslogd).args(["-n", "-f"]).arg(&conf).arg("-i").arg(work.path().join("pid")).spawn().unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // Wait (bounded) until rsyslog listens.
    let deadline = std::time::Instant::now() + DEADLINE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "rsyslogd did not listen");
        if let Ok(Some(s)) = rs.try_wait() {
            panic!("rsyslogd exited: {s}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _rs = Kill(rs);
    let up = start_upstream().await;
    let gw = TestGateway::start(&config(up.addr, &format!("syslog = \"tcp://127.0.0.1:{port}\"")));
    traffic(&gw, 2).await;
    let local = gw.wait_record(|r| r["event"] == "http.request").await;
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        let hash = local["hash"].as_str().unwrap();
        if let Some(line) = got.lines().find(|l| l.contains(hash)) {
            assert!(line.contains("menshen"), "{line}");
            assert!(line.contains("http.request"), "{line}");
            assert!(got.contains("gateway.start"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rsyslog received:\n{got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_oldest_on_a_truly_full_disk_goes_on() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let logdir = dir.path().join("log");
    if tmpfs(&logdir, "160k").is_none() {
        return;
    }
    let _guard = Unmount(logdir.clone());
    // max_disk far above the disk: the disk fills (ENOSPC), rotation included.
    let mut gw = TestGateway::start_in(dir, &config(up.addr, "max_file = \"16KiB\"\non_full = \"overwrite-oldest\""));
    for i in 0..300 {
        let r = gw.client().get(gw.addr("https"), "127.0.0.2", "nas.test").path(&format!("/{i}")).send().await;
        assert_eq!(r.expect("served while the oldest files make room").status, 200);
    }
    gw.wait_record(|r| r["event"] == "log.prune" && r["reason"] == "overwrite-oldest").await;
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(), 0);
    let v = verify(&logdir, Some(&pubkey_of(&gw)));
    assert_eq!(v.code, 0, "{}", v.out);
}
