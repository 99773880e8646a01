//! `menshen reload`: `POST /api/v1/reload` and a readable answer.
//! Exit codes as for `menshen window`: 0 applied, 1 refused (every problem listed;
//! the running config stays in force), 2 could not ask.

use super::window::Connection;
use serde_json::Value;
use std::process::ExitCode;

pub async fn run(conn: Connection) -> ExitCode {
    let (client, url) = match conn.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = client.call(http::Method::POST, "/api/v1/reload", None).await;
    conn.answer(url, result, render)
}

fn render(v: &Value) -> String {
    let mut out = String::from("reloaded\n");
    let changes = v["changes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if changes.is_empty() {
        out.push_str("  no change in the file\n");
    }
    for c in changes {
        out.push_str(&format!("  {}\n", c.as_str().unwrap_or_default()));
    }
    out.push_str(&format!("connections cut: {}\n", v["cut_connections"].as_u64().unwrap_or(0)));
    for l in v["listeners"].as_array().map(Vec::as_slice).unwrap_or_default() {
        out.push_str(&format!(
            "listener {} on {}\n",
            l["name"].as_str().unwrap_or_default(),
            l["addr"].as_str().unwrap_or_default()
        ));
    }
    if let Some(p) = v["saved_as"].as_str() {
        out.push_str(&format!("kept as {p}\n"));
    }
    out
}
