//! `menshen block add|remove|list`: the runtime block list, through the admin API.
//! Exit codes as for `menshen window`: 0 done, 1 refused, 2 could not ask.

use super::window::Connection;
use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum BlockCmd {
    /// Refuse an address or CIDR at once, everywhere, and cut its live connections.
    Add {
        /// e.g. 198.51.100.7 or 198.51.100.0/24
        cidr: String,
        #[arg(long)]
        reason: String,
        /// How long, e.g. 2h (default: until removed).
        #[arg(long, conflicts_with = "until")]
        duration: Option<String>,
        /// Until when: RFC 3339, or local time in the gateway's zone.
        #[arg(long)]
        until: Option<String>,
    },
    Remove {
        cidr: String,
    },
    List,
}

pub async fn run(conn: Connection, cmd: BlockCmd) -> ExitCode {
    let (client, url) = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (method, path, body) = match cmd {
        BlockCmd::Add { cidr, reason, duration, until } => (
            Method::POST,
            "/api/v1/blocks".to_string(),
            Some(json!({ "cidr": cidr, "reason": reason, "duration": duration, "until": until })),
        ),
        BlockCmd::Remove { cidr } => (Method::DELETE, format!("/api/v1/blocks/{}", cidr.replace('/', "%2F")), None),
        BlockCmd::List => (Method::GET, "/api/v1/blocks".to_string(), None),
    };
    let result = client.call(method, &path, body).await;
    conn.answer(url, result, render)
}

fn render(v: &Value) -> String {
    let line = |b: &Value| {
        let s = |k: &str| b[k].as_str().unwrap_or("").to_string();
        let until = b["expires"].as_str().map(str::to_string).unwrap_or_else(|| "until removed".into());
        format!("{:<20} {:<26} by {:<12} {}\n", s("cidr"), until, s("by"), s("reason"))
    };
    match v {
        Value::Array(list) if list.is_empty() => "no blocks\n".into(),
        Value::Array(list) => list.iter().map(line).collect(),
        v if v.get("removed").is_some() => format!("removed {}\n", v["removed"].as_str().unwrap_or("")),
        v => format!("{}connections cut: {}\n", line(v), v["cut_connections"].as_u64().unwrap_or(0)),
    }
}
