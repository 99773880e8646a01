//! `menshen check`: the validation result, and a summary an admin (or auditor) can read:
//! every exposed port, every zone rule, and who may reach which service (MOE-15).

use crate::config::{self, Config, Mode, OnFull, SyncMode};
use crate::policy::Access;
use std::path::Path;
use std::process::ExitCode;

pub fn check(path: &Path) -> ExitCode {
    match config::load(path, Mode::Check) {
        Ok(cfg) => {
            print!("{}", summarize(&cfg));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} problem(s); fix them and run `menshen check` again", path.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

pub fn summarize(cfg: &Config) -> String {
    use std::fmt::Write;
    let p = &cfg.policy;
    let mut o = String::new();
    let _ = writeln!(o, "{}: OK", cfg.path.display());
    let g = &cfg.gateway;
    let _ = writeln!(o, "gateway   {} (time zone {}), state in {}", g.name, g.timezone_name, g.state_dir.display());
    let l = &cfg.log;
    let _ = writeln!(
        o,
        "log       {} (keep {} days, max {} MiB, sync {}, when full: {}, http requests: {})",
        l.dir.display(),
        l.retention_days,
        l.max_disk >> 20,
        if l.sync == SyncMode::Always { "always" } else { "interval" },
        if l.on_full == OnFull::Refuse { "refuse connections" } else { "overwrite oldest" },
        if l.http_requests { "on" } else { "off" }
    );
    let key = crate::audit::chain::existing_public_key(&g.state_dir)
        .unwrap_or_else(|| "(created at first run in state_dir/log-signing.key)".into());
    let _ = writeln!(o, "log key   {key}  (menshen log verify DIR --pubkey <this>)");
    let t = &cfg.tls;
    let min = match t.min_version {
        crate::tls::MinVersion::Tls12 => "1.2",
        crate::tls::MinVersion::Tls13 => "1.3",
    };
    match &t.cert_info {
        Some(c) => {
            let _ = writeln!(
                o,
                "tls       TLS {min}+, cert {} ({}, valid until {})",
                t.cert.display(),
                if c.self_signed { "self-signed" } else { c.subject.as_str() },
                c.not_after
            );
        }
        None => {
            let _ = writeln!(o, "tls       TLS {min}+, cert {} (generated at first run)", t.cert.display());
        }
    }
    let _ = writeln!(o, "\nlisteners (every port the gateway opens)");
    for l in &p.listeners {
        let _ = writeln!(
            o,
            "  {:<14} {:<22} {:<6} clients from zone {}",
            l.name,
            l.bind,
            l.kind.as_str(),
            p.zones[l.zone].name
        );
        if let Some(peers) = &l.proxy_protocol {
            let _ = writeln!(o, "  {:<14} PROXY header required from {}", "", peers.sources.join(", "));
        }
    }
    let _ = writeln!(o, "\nzone rules (unlisted pairs: deny)");
    for from in 0..p.zones.len() {
        for to in 0..p.zones.len() {
            let a = p.access(from, to);
            if a != Access::Deny {
                let _ = writeln!(o, "  {} -> {}: {}", p.zones[from].name, p.zones[to].name, a.as_str());
            }
        }
    }
    let blocked = if p.blocked.is_empty() { "none" } else { "the `blocked` set, refused first" };
    let _ = writeln!(o, "\nservices (who may reach what; blocked sources: {blocked})");
    for s in &p.services {
        let l = &p.listeners[s.listener];
        let access = p.access(l.zone, s.zone);
        let who = match access {
            Access::Allow if s.allow_sources.is_empty() => "nobody (empty allow list)".to_string(),
            Access::Allow => format!("sources in {}", s.allow_sources.join(", ")),
            Access::Window => "only through an active window".to_string(),
            Access::Deny => "nobody".to_string(),
        };
        let _ = writeln!(o, "  {}", s.name);
        match s.guard {
            None => {
                let _ = writeln!(o, "    reached at   https://{{{}}} on {} ({})", s.hosts.join(","), l.name, l.bind);
            }
            Some(g) => {
                let names = if s.hosts.is_empty() { String::new() } else { format!(" for {{{}}}", s.hosts.join(",")) };
                let speaks = match g {
                    crate::proxy::guard::Guard::None => "anything: PLAINTEXT ALLOWED (guard none)".to_string(),
                    g => format!("{} only (guard)", g.as_str()),
                };
                let _ = writeln!(o, "    reached at   tcp {} ({}){names}; clients must speak {speaks}", l.name, l.bind);
            }
        }
        let _ = writeln!(
            o,
            "    forwards to  {:?} in zone {} ({} -> {}: {})",
            s.upstream,
            p.zones[s.zone].name,
            p.zones[l.zone].name,
            p.zones[s.zone].name,
            access.as_str()
        );
        let _ = writeln!(o, "    who          {who}");
        if s.send_proxy {
            let _ = writeln!(o, "    upstream     gets a PROXY v2 header with the client's address");
        }
        let window = match s.window_max {
            Some(w) => format!("access windows up to {}", human_duration(w)),
            None => "no access windows".into(),
        };
        let _ = writeln!(o, "    limits       {window}; idle timeout {}", human_duration(s.idle_timeout));
    }
    if !cfg.warnings.is_empty() {
        let _ = writeln!(o, "\nwarnings");
        for w in &cfg.warnings {
            let _ = writeln!(o, "  {w}");
        }
    }
    o
}
