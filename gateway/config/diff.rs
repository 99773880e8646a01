//! What a reload changes, for the `config.reload` record: the names of changed keys,
//! listeners, services, sets and accounts, never their values (the file holds token
//! hashes, and the record is read by people who need no secrets).

use std::collections::{BTreeMap, BTreeSet};
use toml::Value;

/// Arrays of tables whose entries are named by their `name` key.
const NAMED: &[&str] = &["listener", "service", "account"];

/// A line per change, sections in name order: `service nas: added`,
/// `service web: allow, upstream changed`, `ip_sets.maintenance: changed`,
/// `zone_rule wan->dmz: removed`, `tls: cert changed`. Empty when nothing changed
/// (or when either text is not TOML: the caller has already validated both).
pub fn summarize(old: &str, new: &str) -> Vec<String> {
    let (Ok(Value::Table(old)), Ok(Value::Table(new))) = (old.parse::<Value>(), new.parse::<Value>()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let sections: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for section in sections {
        let (a, b) = (old.get(section), new.get(section));
        if a == b {
            continue;
        }
        if NAMED.contains(&section.as_str()) {
            named_entries(section, a, b, &mut out);
        } else if section == "zone_rule" {
            zone_rules(a, b, &mut out);
        } else {
            match (a, b) {
                (None, Some(_)) => out.push(format!("{section}: added")),
                (Some(_), None) => out.push(format!("{section}: removed")),
                (Some(Value::Table(x)), Some(Value::Table(y))) => table_keys(section, x, y, &mut out),
                _ => out.push(format!("{section}: changed")),
            }
        }
    }
    out
}

/// Keys of a table that differ. For `ip_sets` and `zones` each key is itself a name.
fn table_keys(section: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
    let named = matches!(section, "ip_sets" | "zones");
    let mut changed = Vec::new();
    for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        let what = match (a.get(key), b.get(key)) {
            (x, y) if x == y => continue,
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        if named {
            out.push(format!("{section}.{key}: {what}"));
        } else {
            changed.push(key.as_str());
        }
    }
    if !changed.is_empty() {
        out.push(format!("{section}: {} changed", changed.join(", ")));
    }
}

fn by_name(v: Option<&Value>) -> BTreeMap<String, &toml::Table> {
    let mut map = BTreeMap::new();
    for t in v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_table) {
        if let Some(name) = t.get("name").and_then(Value::as_str) {
            map.insert(name.to_string(), t);
        }
    }
    map
}

/// `service web: added`, `account chen: removed`, `service web: allow, upstream changed`.
fn named_entries(section: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    let (a, b) = (by_name(a), by_name(b));
    for (name, x) in &a {
        match b.get(name) {
            None => out.push(format!("{section} {name}: removed")),
            Some(y) if x != y => {
                let keys: BTreeSet<&String> = x.keys().chain(y.keys()).filter(|k| x.get(*k) != y.get(*k)).collect();
                let keys: Vec<&str> = keys.into_iter().map(String::as_str).collect();
                out.push(format!("{section} {name}: {} changed", keys.join(", ")));
            }
            Some(_) => {}
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        out.push(format!("{section} {name}: added"));
    }
}

/// Zone rules are keyed by `from->to`.
fn zone_rules(a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
    let keyed = |v: Option<&Value>| -> BTreeMap<String, Option<String>> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_table)
            .map(|t| {
                let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                (format!("{}->{}", s("from"), s("to")), t.get("access").and_then(Value::as_str).map(str::to_string))
            })
            .collect()
    };
    let (a, b) = (keyed(a), keyed(b));
    for (pair, access) in &a {
        match b.get(pair) {
            None => out.push(format!("zone_rule {pair}: removed")),
            Some(new) if new != access => out.push(format!(
                "zone_rule {pair}: {} -> {}",
                access.as_deref().unwrap_or("?"),
                new.as_deref().unwrap_or("?")
            )),
            Some(_) => {}
        }
    }
    for (pair, access) in b.iter().filter(|(p, _)| !a.contains_key(*p)) {
        out.push(format!("zone_rule {pair}: added ({})", access.as_deref().unwrap_or("?")));
    }
}

#[cfg(test)]
mod tests {
    use super::summarize;

    #[test]
    fn names_what_changed_without_values() {
        let old = r#"
[gateway]
name = "a"
[tls]
cert = "c.pem"
key = "k.pem"
[ip_sets]
maintenance = ["10.0.0.0/24"]
office = ["10.1.0.0/24"]
[[zone_rule]]
from = "wan"
to = "dmz"
access = "allow"
[[service]]
name = "web"
upstream = "http://10.0.0.1"
allow = ["maintenance"]
[[service]]
name = "old"
upstream = "http://10.0.0.2"
[[account]]
name = "chen"
token_sha256 = "aaaa"
"#;
        let new = r#"
[gateway]
name = "a"
[tls]
cert = "c2.pem"
key = "k.pem"
[ip_sets]
maintenance = ["10.0.0.0/25"]
[[zone_rule]]
from = "wan"
to = "dmz"
access = "window"
[[zone_rule]]
from = "wan"
to = "lan"
access = "deny"
[[service]]
name = "web"
upstream = "http://10.0.0.9"
allow = ["office"]
[[service]]
name = "new"
upstream = "http://10.0.0.3"
[[account]]
name = "chen"
token_sha256 = "bbbb"
"#;
        let got = summarize(old, new);
        assert_eq!(
            got,
            vec![
                "account chen: token_sha256 changed",
                "ip_sets.maintenance: changed",
                "ip_sets.office: removed",
                "service old: removed",
                "service web: allow, upstream changed",
                "service new: added",
                "tls: cert changed",
                "zone_rule wan->dmz: allow -> window",
                "zone_rule wan->lan: added (deny)",
            ]
        );
        assert!(!got.iter().any(|l| l.contains("bbbb") || l.contains("10.0.0")), "no values in the summary");
        assert!(summarize(old, old).is_empty());
    }
}
