//! Operations: the metrics contract after real traffic, promtool on the live output and
//! on the deploy/ rules, and a real Prometheus scraping the gateway over TLS with the
//! scrape config from deploy/.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn promtool() -> &'static str {
    let p = "/usr/bin/promtool";
    assert!(Path::new(p).exists(), "promtool is not installed (apt-get install prometheus; .ci/run does)");
    p
}

fn config(up: std::net::SocketAddr) -> String {
    let (_, hash) = menshen::admin::auth::new_token(Some("chen")).unwrap();
    let head =
        config_head("").replace("drain_timeout = \"10s\"", "drain_timeout = \"10s\"\nmetrics_bind = \"127.0.0.1:0\"");
    let topology_allow = lan_behind_https("allow");
    format!(
        r#"{head}
[ip_sets]
it = ["127.0.0.2/32"]
{topology_allow}
[[service]]
name = "nas"
listener = "https"
hosts = ["nas.test"]
upstream = "http://{up}"
zone = "lan"
allow = ["it"]
window_max = "1h"
[admin]
bind = "127.0.0.1:0"
allow = ["127.0.0.1/32"]
[[account]]
name = "chen"
role = "admin"
token_sha256 = "{hash}"
"#
    )
}

/// Label names of the first sample of `name`.
fn label_names(text: &str, name: &str) -> Option<BTreeSet<String>> {
    let line = text.lines().find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))?;
    let Some(open) = line.find('{') else { return Some(BTreeSet::new()) };
    let close = line.rfind('}')?;
    Some(line[open + 1..close].split(',').filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string())).collect())
}

async fn traffic_and_metrics() -> (TestGateway, String) {
    let up = start_upstream().await;
    let gw = TestGateway::start(&config(up.addr));
    let c = gw.client();
    assert_eq!(c.get(gw.addr("https"), "127.0.0.2", "nas.test").send().await.expect("allowed").status, 200);
    assert!(c.get(gw.addr("https"), "127.0.0.3", "nas.test").send().await.is_err());
    assert!(c.get(gw.addr("https"), "127.0.0.2", "other.test").send().await.is_err());
    gw.wait_record(|r| r["event"] == "conn.close").await;
    let (status, text) = http_get(gw.addr("metrics"), "/metrics").await;
    assert_eq!(status, 200);
    (gw, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_contract_after_allowed_and_denied_traffic() {
    let (gw, text) = traffic_and_metrics().await;
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    for (name, labels) in [
        ("menshen_connections_total", set(&["listener", "service", "action", "reason"])),
        ("menshen_connections_active", set(&["listener", "service"])),
        ("menshen_bytes_total", set(&["service", "direction"])),
        ("menshen_http_requests_total", set(&["service", "code"])),
        ("menshen_http_request_duration_seconds_bucket", set(&["service", "le"])),
        ("menshen_windows", set(&["state"])),
        ("menshen_window_cuts_total", set(&[])),
        ("menshen_log_records_total", set(&[])),
        ("menshen_log_write_errors_total", set(&[])),
        ("menshen_log_disk_usage_ratio", set(&[])),
        ("menshen_config_reloads_total", set(&["result"])),
        ("menshen_config_last_reload_success_timestamp_seconds", set(&[])),
        ("menshen_clock_synchronized", set(&[])),
        ("menshen_build_info", set(&["version"])),
    ] {
        assert_eq!(label_names(&text, name), Some(labels), "{name} in:\n{text}");
    }
    assert!(
        text.contains(
            r#"menshen_connections_total{action="allow",listener="https",reason="allowlist",service="nas"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"menshen_connections_total{action="deny",listener="https",reason="not-allowed",service="nas"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"menshen_connections_total{action="deny",listener="https",reason="no-route",service=""} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"menshen_http_requests_total{code="200",service="nas"} 1"#), "{text}");
    assert!(!text.contains("127.0.0."), "a client address in a label:\n{text}");
    // The same registry on the admin listener (TLS).
    let tls = gw.client().connect(gw.addr("admin"), ip("127.0.0.1"), "localhost", false).await.expect("admin tls");
    drop(tls);
    // The clock gauge agrees with the start-up record.
    let synced = text.lines().find(|l| l.starts_with("menshen_clock_synchronized ")).unwrap().ends_with(" 1");
    let warned = gw.records().iter().any(|r| r["event"] == "clock.unsynchronized");
    assert_eq!(warned, !synced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_live_metrics() {
    let (_gw, text) = traffic_and_metrics().await;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_deploy_rules_pass_promtool() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    for args in [vec!["check", "rules", "alerts.yml"], vec!["test", "rules", "alerts_test.yml"]] {
        let out = Command::new(promtool()).args(&args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_gateway() {
    let prometheus = "/usr/bin/prometheus";
    assert!(Path::new(prometheus).exists(), "prometheus is not installed (.ci/run installs it)");
    let (gw, _) = traffic_and_metrics().await;
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("ca.pem");
    std::fs::write(&ca, &gw.pki.ca_pem).unwrap();
    // The shipped scrape config, pointed at this gateway.
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus/scrape.yml")).unwrap();
    let scrape = shipped
        .replace("192.168.10.1:9443", &gw.addr("admin").to_string())
        .replace("/etc/prometheus/menshen-ca.pem", &ca.display().to_string())
        .replace("menshen.school.example", "localhost")
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    let cfg = work.path().join("prometheus.yml");
    std::fs::write(&cfg, format!("global:\n  scrape_interval: 1s\n{scrape}")).unwrap();
    let port = closed_port();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", work.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _p = Kill(child);
    let api: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(api).await.is_ok() {
            let (status, body) = http_get(api, "/api/v1/query?query=menshen_connections_total").await;
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
                if results.iter().any(|r| r["metric"]["service"] == "nas" && r["metric"]["reason"] == "allowlist") {
                    break;
                }
            }
        }
        assert!(std::time::Instant::now() < deadline, "Prometheus never had menshen_connections_total");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[test]
fn plaintext_metrics_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&["nas.test"]);
    std::fs::write(dir.path().join("gateway.crt"), &pki.cert_pem).unwrap();
    std::fs::write(dir.path().join("gateway.key"), &pki.key_pem).unwrap();
    let cfg = dir.path().join("menshen.toml");
    std::fs::write(&cfg, config_head("").replace("drain_timeout = \"10s\"", "metrics_bind = \"0.0.0.0:9464\""))
        .unwrap();
    let out = Command::new(bin()).args(["check", "-c"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("gateway.metrics_bind") && err.contains("loopback"), "{err}");
}
