//! `menshen check`: every error case names the file, the key path and the reason, and
//! every problem is listed at once.

mod common;

use common::*;
use std::process::Command;

const GOOD: &str = r#"
[ip_sets]
maintenance = ["192.168.10.0/24", "2001:db8:10::/64"]
blocked = []

[zones]
dmz = ["210.240.1.0/24"]
lan = ["192.168.0.0/16"]

[[zone_rule]]
from = "wan"
to = "lan"
access = "allow"

[[zone_rule]]
from = "wan"
to = "dmz"
access = "allow"

[[listener]]
name = "https"
bind = "127.0.0.1:8443"
zone = "wan"
kind = "https"

[[service]]
name = "school-admin"
listener = "https"
hosts = ["admin.school.example"]
upstream = "https://192.168.1.20:443"
zone = "lan"
allow = ["maintenance"]

[[service]]
name = "web"
listener = "https"
hosts = ["www.school.example"]
upstream = "http://210.240.1.10:80"
zone = "dmz"
allow = ["maintenance", "203.0.113.7/32"]
"#;

struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `menshen check` on `head + body` with a valid certificate beside it.
fn check_with(head: &str, body: &str, pki: Option<&TestPki>) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let fresh;
    let pki = match pki {
        Some(p) => p,
        None => {
            fresh = TestPki::new(&["admin.school.example"]);
            &fresh
        }
    };
    std::fs::write(dir.path().join("gateway.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.path().join("gateway.key"), &pki.key_pem).unwrap();
    let cfg = dir.path().join("menshen.toml");
    std::fs::write(&cfg, format!("{head}\n{body}")).unwrap();
    let out = Command::new(bin()).args(["check", "-c"]).arg(&cfg).output().unwrap();
    Checked {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn check(body: &str) -> Checked {
    check_with(&config_head(""), body, None)
}

/// The check fails and one error line names `key` and contains `reason`.
fn assert_error(c: &Checked, key: &str, reason: &str) {
    assert_eq!(c.code, 1, "expected failure; stdout: {}\nstderr: {}", c.stdout, c.stderr);
    let hit = c.stderr.lines().any(|l| {
        l.starts_with("error: ")
            && l.contains("menshen.toml")
            && l.contains(&format!(": {key}: "))
            && l.contains(reason)
    });
    assert!(hit, "no error naming {key:?} with {reason:?} in:\n{}", c.stderr);
}

#[test]
fn a_good_config_passes_with_a_summary() {
    let c = check(GOOD);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(c.stdout.contains("menshen.toml: OK"));
    assert!(c.stdout.contains("127.0.0.1:8443"));
    assert!(c.stdout.contains("wan -> lan: allow"));
    assert!(c.stdout.contains("school-admin"));
    assert!(c.stdout.contains("sources in maintenance"));
    assert!(c.stdout.contains("sources in maintenance, 203.0.113.7/32"));
    // The plaintext upstream is accepted but flagged.
    assert!(c.stdout.contains("service[1].upstream") && c.stdout.contains("plaintext"), "{}", c.stdout);
}

#[test]
fn unknown_key() {
    let c = check_with(&config_head("colour = \"blue\""), GOOD, None);
    assert_error(&c, "tls.colour", "unknown field `colour`");
    let c = check(&GOOD.replace("kind = \"https\"", "kind = \"https\"\nport = 1"));
    assert_error(&c, "listener[0].port", "unknown field");
}

#[test]
fn bad_cidr() {
    let c = check(&GOOD.replace("\"2001:db8:10::/64\"", "\"192.168.300.0/24\""));
    assert_error(&c, "ip_sets.maintenance[1]", "not a CIDR");
    let c = check(&GOOD.replace("\"192.168.10.0/24\"", "\"192.168.10.5/24\""));
    assert_error(&c, "ip_sets.maintenance[0]", "host bits");
    let c = check(&GOOD.replace("\"203.0.113.7/32\"", "\"203.0.113.7/33\""));
    assert_error(&c, "service[1].allow[1]", "not a CIDR");
}

#[test]
fn unknown_names() {
    let c = check(&GOOD.replace("allow = [\"maintenance\"]", "allow = [\"maintenence\"]"));
    assert_error(&c, "service[0].allow[0]", "unknown ip set \"maintenence\"");
    let c = check(&GOOD.replace("zone = \"wan\"\nkind", "zone = \"internet\"\nkind"));
    assert_error(&c, "listener[0].zone", "unknown zone \"internet\"");
    let c = check(&GOOD.replace("listener = \"https\"\nhosts = [\"www", "listener = \"web443\"\nhosts = [\"www"));
    assert_error(&c, "service[1].listener", "unknown listener \"web443\"");
    let c = check(&GOOD.replace("to = \"dmz\"", "to = \"dmzz\""));
    assert_error(&c, "zone_rule[1].to", "unknown zone \"dmzz\"");
}

#[test]
fn duplicates() {
    let dup_listener = format!(
        "{GOOD}\n[[listener]]\nname = \"https\"\nbind = \"127.0.0.1:9443\"\nzone = \"wan\"\nkind = \"https\"\n"
    );
    assert_error(&check(&dup_listener), "listener[1].name", "duplicate listener name \"https\"");
    let same_bind = format!(
        "{GOOD}\n[[listener]]\nname = \"other\"\nbind = \"127.0.0.1:8443\"\nzone = \"wan\"\nkind = \"https\"\n"
    );
    assert_error(&check(&same_bind), "listener[1].bind", "already the bind of listener \"https\"");
    let c = check(&GOOD.replace("name = \"web\"", "name = \"school-admin\""));
    assert_error(&c, "service[1].name", "duplicate service name \"school-admin\"");
    let c = check(&GOOD.replace("hosts = [\"www.school.example\"]", "hosts = [\"ADMIN.school.example\"]"));
    assert_error(&c, "service[1].hosts[0]", "already routed to service \"school-admin\"");
    let dup_rule = format!("{GOOD}\n[[zone_rule]]\nfrom = \"wan\"\nto = \"lan\"\naccess = \"window\"\n");
    assert_error(&check(&dup_rule), "zone_rule[2]", "duplicate rule for wan -> lan");
}

#[test]
fn forbidden_zone_route() {
    let c = check(&GOOD.replace("to = \"lan\"\naccess = \"allow\"", "to = \"lan\"\naccess = \"deny\""));
    assert_error(&c, "service[0].zone", "zone rule wan -> lan is deny");
    // An upstream outside its declared zone.
    let c = check(&GOOD.replace("https://192.168.1.20:443", "https://210.240.1.20:443"));
    assert_error(&c, "service[0].zone", "is in zone \"dmz\", not \"lan\"");
}

#[test]
fn short_retention() {
    let head = config_head("").replace("dir = \"log\"", "dir = \"log\"\nretention_days = 90");
    assert_error(&check_with(&head, GOOD, None), "log.retention_days", "under 180");
}

#[test]
fn tls_below_12() {
    for v in ["1.0", "1.1"] {
        let c = check_with(&config_head(&format!("min_version = \"{v}\"")), GOOD, None);
        assert_error(&c, "tls.min_version", "TLS 1.2 or newer");
    }
}

#[test]
fn cert_and_key_must_match() {
    let a = TestPki::new(&["a.example"]);
    let b = TestPki::new(&["b.example"]);
    let mixed = TestPki { ca_pem: a.ca_pem.clone(), cert_pem: a.cert_pem.clone(), key_pem: b.key_pem.clone() };
    let c = check_with(&config_head(""), GOOD, Some(&mixed));
    assert_error(&c, "tls.cert", "do not belong together");
}

#[test]
fn expired_cert() {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["old.example".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    let old = TestPki { ca_pem: String::new(), cert_pem: cert.pem(), key_pem: key.serialize_pem() };
    let c = check_with(&config_head(""), GOOD, Some(&old));
    assert_error(&c, "tls.cert", "expired");
}

#[test]
fn every_problem_is_listed_at_once() {
    let head = config_head("min_version = \"1.1\"").replace("dir = \"log\"", "dir = \"log\"\nretention_days = 30");
    let body = GOOD
        .replace("\"192.168.10.0/24\"", "\"nonsense\"")
        .replace("allow = [\"maintenance\"]", "allow = [\"nobody\"]");
    let c = check_with(&head, &body, None);
    assert_error(&c, "tls.min_version", "1.2");
    assert_error(&c, "log.retention_days", "180");
    assert_error(&c, "ip_sets.maintenance[0]", "not a CIDR");
    assert_error(&c, "service[0].allow[0]", "unknown ip set");
    assert!(c.stderr.contains("4 problem(s)"), "{}", c.stderr);
}

#[test]
fn unreadable_and_malformed_files() {
    let out = Command::new(bin()).args(["check", "-c", "/nonexistent/menshen.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let c = check("[[listener]\nname = ");
    assert_eq!(c.code, 1);
    assert!(c.stderr.contains("line"), "{}", c.stderr);
}

#[test]
fn quickstart_config_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/quickstart.toml");
    let out = Command::new(bin()).args(["check", "-c", path]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn school_example_checks() {
    // The annotated example with real certificate paths replaced by a temp dir.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/school.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["cms.longsheng.example"]);
    std::fs::write(dir.path().join("gateway.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.path().join("gateway.key"), &pki.key_pem).unwrap();
    let text =
        text.replace("/etc/menshen/tls/", "").replace("/var/lib/menshen", "state").replace("/var/log/menshen", "log");
    let cfg = dir.path().join("school.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(bin()).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("wan -> lan: window"), "{stdout}");
    assert!(stdout.contains("only through an active window"), "{stdout}");
}

#[test]
fn numeric_host_forms_are_refused() {
    for url in ["https://3232235796:443", "https://0xC0A80114:443", "http://0300.0250.1.20:80"] {
        let c = check(&GOOD.replace("https://192.168.1.20:443", url));
        assert_error(&c, "service[0].upstream", "numeric address");
    }
}

const TCP: &str = r#"
[[listener]]
name = "ssh"
bind = "127.0.0.1:2222"
zone = "wan"
kind = "tcp"
proxy_protocol = ["10.0.0.5/32"]

[[service]]
name = "nas-ssh"
listener = "ssh"
upstream = "tcp://192.168.1.30:22"
zone = "lan"
guard = "ssh"
allow = ["maintenance"]
send_proxy = "v2"
"#;

#[test]
fn tcp_services_need_an_explicit_guard_and_tcp_upstreams() {
    let good = format!("{GOOD}{TCP}");
    let c = check(&good);
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(c.stdout.contains("clients must speak ssh only"), "{}", c.stdout);
    assert!(c.stdout.contains("PROXY header required from 10.0.0.5/32"), "{}", c.stdout);
    assert!(c.stdout.contains("PROXY v2 header"), "{}", c.stdout);

    assert_error(&check(&good.replace("guard = \"ssh\"\n", "")), "service[2].guard", "must say what its clients speak");
    assert_error(&check(&good.replace("guard = \"ssh\"", "guard = \"telnet\"")), "service[2].guard", "must be \"ssh\"");
    assert_error(
        &check(&good.replace("tcp://192.168.1.30:22", "https://192.168.1.30:22")),
        "service[2].upstream",
        "tcp://HOST:PORT",
    );
    assert_error(
        &check(&good.replace("tcp://192.168.1.30:22", "tcp://192.168.1.30")),
        "service[2].upstream",
        "needs a port",
    );
    assert_error(
        &check(&good.replace("send_proxy = \"v2\"", "send_proxy = \"v1\"")),
        "service[2].send_proxy",
        "\"v2\"",
    );
    assert_error(&check(&good.replace("[\"10.0.0.5/32\"]", "[]")), "listener[1].proxy_protocol", "trusts nobody");
    assert_error(
        &check(&good.replace("[\"10.0.0.5/32\"]", "[\"10.0.0.5/33\"]")),
        "listener[1].proxy_protocol[0]",
        "not a CIDR",
    );
    // https services take no guard; a tcp upstream needs a tcp listener.
    let c = check(&GOOD.replacen("allow = [\"maintenance\"]", "allow = [\"maintenance\"]\nguard = \"ssh\"", 1));
    assert_error(&c, "service[0].guard", "only tcp services");
    let c = check(&GOOD.replace("https://192.168.1.20:443", "tcp://192.168.1.20:22"));
    assert_error(&c, "service[0].upstream", "http:// or https://");
    // Several services on one tcp listener must all be tls-routed by name.
    let second = TCP.split("[[service]]").nth(1).unwrap().replace("nas-ssh", "nas-ssh2");
    let c = check(&format!("{good}\n[[service]]{second}"));
    assert_error(&c, "service[2].listener", "each must be guard = \"tls\" with hosts");
    // "admin" is the admin listener's name.
    assert_error(
        &check(
            &good.replace("name = \"ssh\"", "name = \"admin\"").replace("listener = \"ssh\"", "listener = \"admin\""),
        ),
        "listener[1].name",
        "admin listener",
    );
    // Plaintext is accepted only when written, and flagged.
    let c = check(&good.replace("guard = \"ssh\"", "guard = \"none\""));
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert!(c.stdout.contains("PLAINTEXT ALLOWED") && c.stdout.contains("service[2].guard"), "{}", c.stdout);
}
