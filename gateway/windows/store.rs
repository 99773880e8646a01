//! Where windows live: a small trait, so the embedded SQLite store and a shared
//! PostgreSQL store (for an HA pair or a county) are interchangeable.
//!
//! SQLite layout: one row per window with the fields the queries need as columns and
//! the whole window as JSON (`doc`); the schema version is `PRAGMA user_version` and
//! `MIGRATIONS[i]` takes version i to i+1.

use super::model::{State, Window};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("window store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("window store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("window store: stored window {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("window store: the lock was poisoned by a panic")]
    Poisoned,
}

/// Run a blocking store call (window or block store) off the async workers.
pub async fn blocking<S: ?Sized + Send + Sync + 'static, T: Send + 'static>(
    store: &std::sync::Arc<S>,
    f: impl FnOnce(&S) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref())).await.unwrap_or_else(|_| Err(StoreError::Poisoned))
}

pub trait WindowStore: Send + Sync {
    fn insert(&self, w: &Window) -> Result<(), StoreError>;
    /// Replace a window whose stored state is still `expected`; false if it changed
    /// meanwhile (another admin, another gateway).
    fn update(&self, w: &Window, expected: State) -> Result<bool, StoreError>;
    fn get(&self, id: &str) -> Result<Option<Window>, StoreError>;
    /// All windows in `states` (all if empty), newest first.
    fn list(&self, states: &[State]) -> Result<Vec<Window>, StoreError>;
}

const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE windows (
        id TEXT PRIMARY KEY NOT NULL,
        state TEXT NOT NULL,
        requester TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        requested_ms INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX windows_state ON windows(state);",
    // 1 -> 2: the runtime block list (`menshen block`).
    "CREATE TABLE blocks (
        cidr TEXT PRIMARY KEY NOT NULL,
        expires_ms INTEGER,
        doc TEXT NOT NULL
    );",
];

/// The runtime block list's storage (the same SQLite file as the windows).
pub trait BlockStore: Send + Sync {
    /// Insert or replace the block for `cidr`.
    fn put_block(&self, cidr: &str, expires_ms: Option<i64>, doc: &str) -> Result<(), StoreError>;
    /// Whether a block for `cidr` was there.
    fn delete_block(&self, cidr: &str) -> Result<bool, StoreError>;
    /// Every stored block as (cidr, doc).
    fn blocks(&self) -> Result<Vec<(String, String)>, StoreError>;
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Open (creating if needed) `dir/windows.sqlite` and bring its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join("windows.sqlite");
        let fail = |reason: String| StoreError::Open { path: path.display().to_string(), reason };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        conn.busy_timeout(std::time::Duration::from_secs(2)).map_err(|e| fail(e.to_string()))?;
        // A foreign or damaged file fails here, not at the first request.
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| fail(format!("{e} (is it a Menshen window store? is another process holding it?)")))?;
        if check != "ok" {
            return Err(fail(format!("damaged: {check}")));
        }
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")
            .map_err(|e| fail(format!("{e} (is the directory writable?)")))?;
        migrate(&conn).map_err(|e| fail(e.to_string()))?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    pub fn path(dir: &Path) -> PathBuf {
        dir.join("windows.sqlite")
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&conn)
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "schema version {version} is newer than this Menshen knows ({}); upgrade Menshen",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn to_row(w: &Window) -> Result<(String, i64, i64, i64), StoreError> {
    let doc = serde_json::to_string(w).map_err(|e| StoreError::Corrupt { id: w.id.clone(), reason: e.to_string() })?;
    Ok((doc, w.start.as_millisecond(), w.end.as_millisecond(), w.requested_at.as_millisecond()))
}

fn from_doc(id: &str, doc: &str) -> Result<Window, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt { id: id.to_string(), reason: e.to_string() })
}

impl WindowStore for SqliteStore {
    fn insert(&self, w: &Window) -> Result<(), StoreError> {
        let (doc, start, end, req) = to_row(w)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO windows (id, state, requester, start_ms, end_ms, requested_ms, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![w.id, w.state.as_str(), w.requester, start, end, req, doc],
            )?;
            Ok(())
        })
    }

    fn update(&self, w: &Window, expected: State) -> Result<bool, StoreError> {
        let (doc, start, end, _) = to_row(w)?;
        self.with(|c| {
            let n = c.execute(
                "UPDATE windows SET state = ?2, start_ms = ?3, end_ms = ?4, doc = ?5 WHERE id = ?1 AND state = ?6",
                params![w.id, w.state.as_str(), start, end, doc, expected.as_str()],
            )?;
            Ok(n == 1)
        })
    }

    fn get(&self, id: &str) -> Result<Option<Window>, StoreError> {
        self.with(|c| {
            let doc: Option<String> =
                c.query_row("SELECT doc FROM windows WHERE id = ?1", [id], |r| r.get(0)).optional()?;
            doc.map(|d| from_doc(id, &d)).transpose()
        })
    }

    fn list(&self, states: &[State]) -> Result<Vec<Window>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT id, state, doc FROM windows ORDER BY requested_ms DESC, id")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, state, doc) = row?;
                if states.is_empty() || State::parse(&state).is_some_and(|s| states.contains(&s)) {
                    out.push(from_doc(&id, &doc)?);
                }
            }
            Ok(out)
        })
    }
}

impl BlockStore for SqliteStore {
    fn put_block(&self, cidr: &str, expires_ms: Option<i64>, doc: &str) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO blocks (cidr, expires_ms, doc) VALUES (?1, ?2, ?3)",
                params![cidr, expires_ms, doc],
            )?;
            Ok(())
        })
    }

    fn delete_block(&self, cidr: &str) -> Result<bool, StoreError> {
        self.with(|c| Ok(c.execute("DELETE FROM blocks WHERE cidr = ?1", [cidr])? == 1))
    }

    fn blocks(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT cidr, doc FROM blocks ORDER BY cidr")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::model::Action;

    fn sample(id: &str) -> Window {
        let t: jiff::Timestamp = "2026-11-21T02:00:00Z".parse().unwrap();
        Window {
            id: id.into(),
            state: State::Requested,
            requester: "li".into(),
            approver: None,
            services: vec!["nas".into()],
            sources: vec!["203.0.113.0/24".parse().unwrap()],
            start: t,
            end: t + jiff::SignedDuration::from_hours(2),
            reason: "disk swap".into(),
            self_approved: false,
            requested_at: t,
            approved_at: None,
            activated_at: None,
            ended_at: None,
            end_note: None,
            review: None,
        }
    }

    #[test]
    fn round_trip_and_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut w = sample("w1");
        store.insert(&w).unwrap();
        store.insert(&sample("w2")).unwrap();
        assert_eq!(store.get("w1").unwrap().as_ref(), Some(&w));
        assert!(store.get("nope").unwrap().is_none());
        w.apply(Action::Approve, "chen", None, false, w.start).unwrap();
        assert!(store.update(&w, State::Requested).unwrap());
        // A second writer that still thinks it is requested loses.
        assert!(!store.update(&w, State::Requested).unwrap());
        assert_eq!(store.list(&[State::Approved]).unwrap(), vec![w.clone()]);
        assert_eq!(store.list(&[]).unwrap().len(), 2);
        drop(store);
        // Survives reopening; the migration does not run twice.
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.get("w1").unwrap(), Some(w));
    }

    #[test]
    fn a_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(SqliteStore::path(dir.path()), b"this is not a database, just some text that is long enough")
            .unwrap();
        let err = SqliteStore::open(dir.path()).err().expect("refused").to_string();
        assert!(err.contains("windows.sqlite"), "{err}");
        assert!(err.contains("not a database"), "{err}");
    }
}
