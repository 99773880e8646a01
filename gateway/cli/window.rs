//! `menshen window …` and `menshen token`.
//!
//! Exit codes: 0 done; 1 the gateway refused (bad field, not allowed, wrong state: the
//! message says why); 2 could not ask (bad usage, gateway unreachable, TLS, 5xx).

use super::client::{AdminClient, CallError};
use crate::admin::api::WindowView;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct Connection {
    /// Admin API URL, e.g. https://127.0.0.1:9443
    #[arg(long, env = "MENSHEN_ADMIN_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token (prefer the MENSHEN_TOKEN variable: arguments show in `ps`).
    #[arg(long, env = "MENSHEN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// CA (or self-signed) certificate that signs the gateway's certificate.
    #[arg(long, env = "MENSHEN_ADMIN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum WindowCmd {
    /// Ask for access: services, from which sources, for how long, and why.
    Request {
        #[arg(long = "service", required = true)]
        services: Vec<String>,
        #[arg(long = "source", required = true)]
        sources: Vec<String>,
        /// RFC 3339, or local time in the gateway's zone (default: now).
        #[arg(long)]
        start: Option<String>,
        #[arg(long, conflicts_with = "duration")]
        end: Option<String>,
        /// e.g. 2h, 90m
        #[arg(long)]
        duration: Option<String>,
        #[arg(long)]
        reason: String,
    },
    Approve {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    Deny {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    Revoke {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Record what was checked after the window ended (LY-1.6.5).
    Review {
        id: String,
        #[arg(long)]
        note: String,
    },
    List {
        /// requested, approved, active, expired, denied, revoked, pending_review
        #[arg(long)]
        state: Option<String>,
    },
    Show {
        id: String,
    },
}

pub fn token(account: Option<String>) -> ExitCode {
    if let Some(a) = &account {
        if a.is_empty() || a.contains('.') || a.len() > 64 {
            eprintln!("menshen: --account must be 1-64 characters without '.'");
            return ExitCode::from(2);
        }
    }
    match crate::admin::auth::new_token(account.as_deref()) {
        Ok((token, hash)) => {
            println!("token        {token}");
            println!("token_sha256 = \"{hash}\"");
            eprintln!("Give the token to its one owner (e.g. as MENSHEN_TOKEN); put only token_sha256 in the config.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("menshen: {e}");
            ExitCode::from(2)
        }
    }
}

impl Connection {
    /// The API client, or exit 2 with what is missing.
    pub fn client(&self) -> Result<(AdminClient, &str), ExitCode> {
        let (Some(url), Some(token)) = (self.url.as_deref(), self.token.as_deref()) else {
            eprintln!("menshen: set MENSHEN_ADMIN_URL and MENSHEN_TOKEN (or --url and --token)");
            return Err(ExitCode::from(2));
        };
        match AdminClient::new(url, token, self.ca.as_deref()) {
            Ok(c) => Ok((c, url)),
            Err(e) => {
                eprintln!("menshen: {e}");
                Err(ExitCode::from(2))
            }
        }
    }
}

impl Connection {
    /// Print an API answer (`--json`: as JSON; else `render`ed) and pick the exit code:
    /// 0 done, 1 refused (every listed problem on stderr), 2 could not ask.
    pub fn answer(&self, url: &str, result: Result<Value, CallError>, render: impl Fn(&Value) -> String) -> ExitCode {
        match result {
            Ok(v) => {
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                } else {
                    print!("{}", render(&v));
                }
                ExitCode::SUCCESS
            }
            Err(CallError::Refused { status, message, code, body }) => {
                if self.json {
                    println!(
                        "{}",
                        json!({ "error": message, "code": code, "status": status, "errors": body["errors"] })
                    );
                }
                match body["errors"].as_array().filter(|e| !e.is_empty()) {
                    Some(errors) => {
                        eprintln!("menshen: refused ({status} {code}):");
                        for e in errors {
                            eprintln!("  {}", e.as_str().unwrap_or_default());
                        }
                    }
                    None => eprintln!("menshen: refused ({status} {code}): {message}"),
                }
                ExitCode::from(1)
            }
            Err(CallError::Unreachable(e)) => {
                eprintln!("menshen: cannot reach the admin API at {url}: {e}");
                ExitCode::from(2)
            }
        }
    }
}

pub async fn run(conn: Connection, cmd: WindowCmd) -> ExitCode {
    let (client, url) = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let action = |verb: &str, id: &str, note: Option<String>| {
        (Method::POST, format!("/api/v1/windows/{}/{verb}", encode(id)), Some(json!({ "note": note })))
    };
    let (method, path, body) = match cmd {
        WindowCmd::Request { services, sources, start, end, duration, reason } => (
            Method::POST,
            "/api/v1/windows".to_string(),
            Some(
                json!({ "services": services, "sources": sources, "start": start, "end": end, "duration": duration, "reason": reason }),
            ),
        ),
        WindowCmd::Approve { id, note } => action("approve", &id, note),
        WindowCmd::Deny { id, note } => action("deny", &id, note),
        WindowCmd::Revoke { id, note } => action("revoke", &id, note),
        WindowCmd::Review { id, note } => action("review", &id, Some(note)),
        WindowCmd::List { state } => {
            let q = state.map(|s| format!("?state={}", encode(&s))).unwrap_or_default();
            (Method::GET, format!("/api/v1/windows{q}"), None)
        }
        WindowCmd::Show { id } => (Method::GET, format!("/api/v1/windows/{}", encode(&id)), None),
    };
    let result = client.call(method, &path, body).await;
    conn.answer(url, result, render)
}

/// Percent-encode a path segment (ids are plain, but never trust the argument).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b',' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn render(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let views: Vec<WindowView> = items.iter().filter_map(|i| serde_json::from_value(i.clone()).ok()).collect();
            table(&views)
        }
        other => match serde_json::from_value::<WindowView>(other.clone()) {
            Ok(w) => detail(&w),
            Err(_) => format!("{other}\n"),
        },
    }
}

fn table(views: &[WindowView]) -> String {
    let mut rows =
        vec![["ID", "STATE", "REQUESTER", "SERVICES", "SOURCES", "START", "END", "REVIEW"].map(String::from).to_vec()];
    for w in views {
        let review = if w.pending_review {
            "pending"
        } else if w.reviewed_by.is_some() {
            "done"
        } else {
            "-"
        };
        rows.push(vec![
            w.id.clone(),
            w.state.clone() + if w.self_approved { " (self)" } else { "" },
            w.requester.clone(),
            w.services.join(","),
            w.sources.join(","),
            short_time(&w.start),
            short_time(&w.end),
            review.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if views.is_empty() {
        out.push_str("(no windows)\n");
    }
    out
}

/// `2026-11-21T14:00:00.000+08:00` -> `2026-11-21 14:00+08:00`.
fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(11..16), t.get(23..)) {
        (Some(d), Some(hm), Some(off)) => format!("{d} {hm}{off}"),
        _ => t.to_string(),
    }
}

fn detail(w: &WindowView) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: &str| o.push_str(&format!("{k:<14}{v}\n"));
    line("id", &w.id);
    line("state", &format!("{}{}", w.state, if w.self_approved { " (self-approved: review it)" } else { "" }));
    line("requester", &w.requester);
    line("approver", w.approver.as_deref().unwrap_or("-"));
    line("services", &w.services.join(", "));
    line("sources", &w.sources.join(", "));
    line("start", &w.start);
    line("end", &w.end);
    line("reason", &w.reason);
    line("requested at", &w.requested_at);
    if let Some(t) = &w.approved_at {
        line("approved at", t);
    }
    if let Some(t) = &w.activated_at {
        line("active at", t);
    }
    if let Some(t) = &w.ended_at {
        line("ended at", t);
    }
    if let Some(n) = &w.end_note {
        line("note", n);
    }
    match (&w.reviewed_by, w.pending_review) {
        (Some(by), _) => line(
            "review",
            &format!("{by} at {}: {}", w.reviewed_at.as_deref().unwrap_or("?"), w.review_note.as_deref().unwrap_or("")),
        ),
        (None, true) => line("review", "pending"),
        _ => {}
    }
    if let Some(a) = &w.activity {
        line(
            "activity",
            &format!(
                "{} connections, {} bytes in, {} bytes out, from {}",
                a.connections,
                a.bytes_in,
                a.bytes_out,
                if a.sources.is_empty() { "-".to_string() } else { a.sources.join(", ") }
            ),
        );
        if let (Some(f), Some(l)) = (&a.first, &a.last) {
            line("", &format!("first {f}, last {l}"));
        }
    }
    o
}
