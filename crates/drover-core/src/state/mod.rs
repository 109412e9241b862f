//! The state database, `<state dir>/drover.db`: opening it with the settings
//! every drover process relies on, its versioned schema migrations, and the
//! mapping from SQLite errors to [`Error`].
//!
//! One SQLite file holds all mutable state that must change atomically with
//! its audit trail: image tags and referrers (the store), the ledger, and later
//! releases and instances. Content itself (blobs) lives on disk next to it;
//! the database only names it.
//!
//! Concurrency model: any number of drover processes may open the file at
//! once. Readers never block (WAL). Writers take the write lock up front
//! ([`Db::transaction`] is `BEGIN IMMEDIATE`), so two writers serialize instead
//! of one failing halfway through with `SQLITE_BUSY`, and each waits up to
//! [`BUSY_TIMEOUT`] for the other.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::error::{Error, IoContext, Result};

/// The database's file name inside the state directory.
pub const FILE_NAME: &str = "drover.db";

/// How long a drover process waits for another one's write lock before
/// giving up with [`Error::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Schema migrations, in order. Migration `i` (0-based) takes the database
/// from `PRAGMA user_version` `i` to `i + 1`, in one transaction together with
/// the version bump, so a crash mid-migration leaves the previous version.
///
/// APPEND-ONLY. Never edit or reorder a migration that has shipped: databases
/// in the field have already run it, and would silently differ from fresh
/// ones. Fix mistakes with a new migration.
const MIGRATIONS: &[&str] = &[
    // 1: image tags, OCI referrers, store metadata, the ledger.
    r#"
-- Image tags: `name:tag` -> manifest digest.
CREATE TABLE tags (
    name       TEXT PRIMARY KEY,
    digest     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created    TEXT NOT NULL
);

-- OCI 1.1 artifacts (signatures, SBOMs, ...) attached to a subject manifest.
CREATE TABLE referrers (
    digest        TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    artifact_type TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL
);
CREATE INDEX referrers_subject ON referrers (subject);

-- Small store-wide values, e.g. a generation counter.
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The audit ledger (see ledger/mod.rs for the hash chain). `subjects` is a
-- JSON array of strings, `details` canonical JSON.
CREATE TABLE ledger (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subjects  TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- The seq and hash of the last entry, written in the same transaction as
-- the entry: deleting entries from the end leaves the head pointing past them.
CREATE TABLE ledger_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);

-- The ledger is append-only. These do not stop anyone who can drop them (the
-- hash chain is what detects that); they stop a drover bug or a careless
-- hand edit from rewriting history quietly.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only: entries cannot be changed');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only: entries cannot be deleted');
END;
"#,
    // 2: instances (see instance/mod.rs for the state machine).
    r#"
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    name          TEXT,
    image         TEXT NOT NULL,  -- manifest digest
    image_ref     TEXT NOT NULL,  -- what the user asked for
    release       INTEGER,
    driver        TEXT NOT NULL,
    state         TEXT NOT NULL,  -- created | running | stopping | exited | deleted
    pid           INTEGER,
    pid_start     INTEGER,        -- with pid, names one process despite pid reuse
    monitor_pid   INTEGER,
    monitor_start INTEGER,
    port          INTEGER,
    created       TEXT NOT NULL,
    started       TEXT,
    finished      TEXT,
    exit_code     INTEGER,
    exit_signal   INTEGER,
    stop_signal   INTEGER NOT NULL,
    launch        TEXT NOT NULL   -- JSON: everything the runtime config was made from
);
CREATE UNIQUE INDEX instances_live_name ON instances (name)
    WHERE name IS NOT NULL AND state != 'deleted';
"#,
    // 3: services, releases, quarantine, deploy locks, instance transitions.
    r#"
-- Services: what should run, as last applied (see deploy/mod.rs).
CREATE TABLE services (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,  -- JSON: replicas, strategy, the release content as written
    spec_digest TEXT NOT NULL,  -- digest of the fleet entry as written: apply acts when it changes
    desired     INTEGER,        -- the release that should run
    created     TEXT NOT NULL,
    updated     TEXT NOT NULL
);

-- Releases: numbered per service, immutable, append-only; only the outcome
-- moves, once, from pending.
CREATE TABLE releases (
    service       TEXT NOT NULL REFERENCES services (name),
    number        INTEGER NOT NULL,
    image         TEXT NOT NULL,  -- manifest digest
    image_ref     TEXT NOT NULL,  -- as written in the fleet file
    config        TEXT NOT NULL,  -- JSON: env, volumes, limits, capabilities, health, driver
    config_digest TEXT NOT NULL,
    author        TEXT NOT NULL,
    message       TEXT NOT NULL,
    created       TEXT NOT NULL,
    parent        INTEGER,        -- the release it replaced
    rollback_of   INTEGER,        -- for a rollback: the release whose content it repeats
    outcome       TEXT NOT NULL,  -- pending | healthy | failed
    reason        TEXT,
    PRIMARY KEY (service, number)
);
CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are append-only: they cannot be deleted');
END;
CREATE TRIGGER releases_immutable BEFORE UPDATE OF service, number, image, image_ref, config,
    config_digest, author, message, created, parent, rollback_of ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are immutable');
END;
CREATE TRIGGER releases_outcome_once BEFORE UPDATE OF outcome ON releases
    WHEN OLD.outcome != 'pending'
BEGIN
    SELECT RAISE(ABORT, 'a release outcome is final');
END;

-- Release contents (image digest + config digest) that failed for a
-- service; applying one again needs --force.
CREATE TABLE quarantine (
    service TEXT NOT NULL,
    image   TEXT NOT NULL,
    config  TEXT NOT NULL,
    release INTEGER NOT NULL,
    reason  TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (service, image, config)
);

-- Leases with fencing tokens (deploy/lock.rs). Rows stay, so tokens only grow.
CREATE TABLE locks (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    token   INTEGER NOT NULL,
    expires INTEGER NOT NULL  -- unix milliseconds
);

-- Which service an instance belongs to, and every state change it made.
ALTER TABLE instances ADD COLUMN service TEXT;
CREATE INDEX instances_service ON instances (service);
CREATE TABLE instance_transitions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    time     TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL
);
CREATE INDEX instance_transitions_instance ON instance_transitions (instance);
"#,
    // 4: traffic, self-healing and drift (deploy/traffic.rs, reconcile.rs, drift/).
    r#"
-- Traffic: an instance takes requests once it passed its health check
-- (ready_at) and until a deploy drains it (drain_at); a proxy that saw its
-- last request finish says so (drained_at). Unix milliseconds.
ALTER TABLE instances ADD COLUMN ready_at INTEGER;
ALTER TABLE instances ADD COLUMN drain_at INTEGER;
ALTER TABLE instances ADD COLUMN drained_at INTEGER;
-- Why the instance must be replaced (drift, a failing health check).
ALTER TABLE instances ADD COLUMN condemned TEXT;
-- Digest of the config.json it was created with (drift compares the file).
ALTER TABLE instances ADD COLUMN config_digest TEXT;
-- Service instances running before this migration passed their gates.
UPDATE instances SET ready_at = 0 WHERE service IS NOT NULL AND state = 'running';

-- Live proxies of `drover serve`, one row per service; a deploy that stops
-- an instance waits for them to drain it while heartbeat is recent.
CREATE TABLE proxies (
    service   TEXT PRIMARY KEY,
    holder    TEXT NOT NULL,   -- user@host pid N start T (as deploy locks)
    heartbeat INTEGER NOT NULL -- unix milliseconds
);

-- The reconciler's view of each service: restarts of crashed instances and
-- the back-off of a failing or crash-looping service.
CREATE TABLE service_health (
    service       TEXT PRIMARY KEY,
    restarts      INTEGER NOT NULL DEFAULT 0,
    failures      INTEGER NOT NULL DEFAULT 0, -- in a row; reset by a healthy pass
    backoff_until INTEGER,                    -- unix milliseconds
    last_error    TEXT,
    updated       TEXT NOT NULL
);

-- Drift findings: what a scan found on an instance, and what was done.
CREATE TABLE drift_findings (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    time     TEXT NOT NULL,
    instance TEXT NOT NULL,
    image    TEXT NOT NULL,
    findings TEXT NOT NULL, -- JSON list of {path, change}
    action   TEXT NOT NULL  -- replaced | reported
);
CREATE INDEX drift_findings_instance ON drift_findings (instance);
"#,
    // 5: the trust chain (sign/, signed ledger, revocation).
    r#"
-- Each ledger entry's Ed25519 signature of its hash by the host key
-- (ledger/): the key id (hex) and the signature (base64). NULL for entries
-- written before this migration.
ALTER TABLE ledger ADD COLUMN keyid TEXT;
ALTER TABLE ledger ADD COLUMN signature TEXT;
-- Where signing began: every entry from this seq on must be signed, so
-- stripping signatures cannot pass the ledger off as older than signing.
INSERT OR REPLACE INTO store_meta (key, value)
    SELECT 'ledger_signed_from', CAST(coalesce(max(seq), 0) + 1 AS TEXT) FROM ledger;

-- Revoked images: never deployed, run or built FROM again.
CREATE TABLE revocations (
    digest TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    time   TEXT NOT NULL,
    actor  TEXT NOT NULL
);
"#,
];

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// An open state database.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Open (creating if needed, parent directory included) the database at
    /// `path` and bring its schema up to [`SCHEMA_VERSION`].
    ///
    /// Fails with [`Error::DatabaseTooNew`] if a newer drover has migrated it
    /// past what this one knows: writing to a schema we do not understand
    /// could break the newer drover's invariants.
    pub fn open(path: &Path) -> Result<Db> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ctx("create state directory", parent)?;
        }
        // Without SQLITE_OPEN_URI, so a path is always a path.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).db_ctx(path)?;
        // Two processes opening a new database at once can each hold a lock
        // the other needs (switching to WAL, the first migration); SQLite
        // then answers SQLITE_BUSY at once instead of waiting, to avoid a
        // deadlock. Retrying from scratch is safe: both steps are idempotent.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            let attempt = configure(&conn)
                .db_ctx(path)
                .and_then(|()| migrate(&mut conn, path, MIGRATIONS));
            match attempt {
                Err(Error::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                other => {
                    other?;
                    break;
                }
            }
        }
        Ok(Db {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The connection, for reads (and for statements inside a transaction
    /// obtained from [`Db::transaction`], which derefs to it).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The database file, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Begin a write transaction. It takes the write lock immediately
    /// (`BEGIN IMMEDIATE`), waiting up to [`BUSY_TIMEOUT`] for other writers,
    /// so everything read inside it stays true until commit. Dropping it
    /// without `commit()` rolls back.
    ///
    /// The transaction borrows the `Db`; take a copy of [`Db::path`] first
    /// if you need it for error context, or use [`Db::write`].
    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db_ctx(&self.path)
    }

    /// Run `f` in a write transaction (see [`Db::transaction`]) and commit if
    /// it succeeds; roll back if it fails. `f` also gets the database path,
    /// which the transaction's borrow would otherwise make awkward to reach.
    pub fn write<T>(&mut self, f: impl FnOnce(&Transaction<'_>, &Path) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db_ctx(&self.path)?;
        let out = f(&tx, &self.path)?;
        tx.commit().db_ctx(&self.path)?;
        Ok(out)
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

/// Attach the database path to a rusqlite result; see [`db_error`].
pub trait DbContext<T> {
    fn db_ctx(self, path: &Path) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db_ctx(self, path: &Path) -> Result<T> {
        self.map_err(|source| db_error(path, source))
    }
}

/// Turn a rusqlite error about the database at `path` into an [`Error`].
///
/// Lock timeouts become [`Error::Busy`] rather than [`Error::Database`]: they
/// are not a fault, and the caller (or the user) should simply retry.
pub fn db_error(path: &Path, source: rusqlite::Error) -> Error {
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy {
            what: format!("state database {}", path.display()),
            reason: format!(
                "another drover process kept it locked for longer than {} s; retry when it has finished",
                BUSY_TIMEOUT.as_secs()
            ),
        },
        _ => Error::Database {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Per-connection settings. None of these persist in the file except the
/// journal mode, so every open sets them all.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First: switching the journal mode below already needs a lock.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets `ledger verify` and listings read while a writer commits. On a
    // filesystem that cannot do WAL (no shared memory, e.g. some network
    // mounts) SQLite keeps its rollback journal; that is slower under
    // contention but just as correct, so it is not an error.
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    // WAL's default (NORMAL) may lose the last commits on power loss. A tag
    // or ledger entry the user was told succeeded must survive that.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn user_version(conn: &Connection, path: &Path) -> Result<u32> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .db_ctx(path)?;
    u32::try_from(v).map_err(|_| {
        Error::corrupt(
            format!("state database {}", path.display()),
            format!("schema version {v} is not one drover ever writes"),
        )
    })
}

/// Apply `migrations[user_version..]`, each in its own transaction.
fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<()> {
    let supported = u32::try_from(migrations.len()).unwrap_or(u32::MAX);
    loop {
        // Checked outside a transaction first: the common case (up to date)
        // then never takes the write lock, so opening stays cheap under load.
        let current = user_version(conn, path)?;
        if current > supported {
            return Err(Error::DatabaseTooNew {
                path: path.to_path_buf(),
                found: current,
                supported,
            });
        }
        let Some(&sql) = migrations.get(current as usize) else {
            return Ok(());
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .db_ctx(path)?;
        // Another process may have migrated while we waited for the lock;
        // if so, drop (roll back) and look again.
        if user_version(&tx, path)? != current {
            continue;
        }
        tx.execute_batch(sql).db_ctx(path)?;
        tx.pragma_update(None, "user_version", current + 1)
            .db_ctx(path)?;
        tx.commit().db_ctx(path)?;
    }
}

/// Digests are stored as their `sha256:<hex>` text; a malformed one reads
/// back as an error naming the column, never as a wrong digest.
impl rusqlite::types::FromSql for crate::digest::Digest {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn temp_db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(FILE_NAME);
        (dir, path)
    }

    fn pragma<T: rusqlite::types::FromSql>(db: &Db, name: &str) -> T {
        db.conn()
            .pragma_query_value(None, name, |r| r.get(0))
            .unwrap()
    }

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn open_creates_the_file_and_schema_with_the_right_settings() {
        let (_dir, path) = temp_db();
        let db = Db::open(&path).unwrap();
        assert!(path.is_file());
        assert_eq!(db.path(), path);
        assert_eq!(pragma::<String>(&db, "journal_mode"), "wal");
        assert_eq!(pragma::<i64>(&db, "synchronous"), 2, "FULL");
        assert_eq!(pragma::<i64>(&db, "foreign_keys"), 1);
        assert_eq!(pragma::<i64>(&db, "busy_timeout"), 30_000);
        assert_eq!(
            pragma::<i64>(&db, "user_version"),
            i64::from(SCHEMA_VERSION)
        );
        assert_eq!(
            tables(db.conn()),
            [
                "drift_findings",
                "instance_transitions",
                "instances",
                "ledger",
                "ledger_head",
                "locks",
                "proxies",
                "quarantine",
                "referrers",
                "releases",
                "revocations",
                "service_health",
                "services",
                "sqlite_sequence",
                "store_meta",
                "tags",
            ]
        );
        let index: String = db
            .conn()
            .query_row(
                "SELECT tbl_name FROM sqlite_schema WHERE type = 'index' AND name = 'referrers_subject'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, "referrers");
    }

    #[test]
    fn reopening_keeps_data_and_does_not_rerun_migrations() {
        let (_dir, path) = temp_db();
        let mut db = Db::open(&path).unwrap();
        db.write(|tx, p| {
            tx.execute(
                "INSERT INTO store_meta (key, value) VALUES ('generation', '7')",
                [],
            )
            .db_ctx(p)
        })
        .unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        let v: String = db
            .conn()
            .query_row(
                "SELECT value FROM store_meta WHERE key = 'generation'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, "7");
    }

    #[test]
    fn a_newer_schema_is_refused_with_both_versions_and_the_path() {
        let (_dir, path) = temp_db();
        drop(Db::open(&path).unwrap());
        let raw = Connection::open(&path).unwrap();
        raw.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
            .unwrap();
        drop(raw);

        let err = Db::open(&path).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::DatabaseTooNew { path: p, found, supported }
                    if p == &path && *found == SCHEMA_VERSION + 5 && *supported == SCHEMA_VERSION
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&(SCHEMA_VERSION + 5).to_string()), "{msg}");
        assert!(msg.contains(&SCHEMA_VERSION.to_string()), "{msg}");
        assert_eq!(err.kind(), ErrorKind::Invalid);
    }

    #[test]
    fn a_failing_migration_rolls_back_entirely() {
        let (dir, _) = temp_db();
        let path = dir.path().join("m.db");
        let mut conn = Connection::open(&path).unwrap();
        let broken = [
            "CREATE TABLE a (x);",
            "CREATE TABLE b (y); CREATE TABLE c (oops",
        ];
        let err = migrate(&mut conn, &path, &broken).unwrap_err();
        assert!(matches!(err, Error::Database { .. }), "{err:?}");
        assert_eq!(user_version(&conn, &path).unwrap(), 1);
        assert_eq!(
            tables(&conn),
            ["a"],
            "migration 2's first statement survived"
        );

        // Only the missing migration runs: re-running 1 would fail (table a exists).
        let fixed = ["CREATE TABLE a (x);", "CREATE TABLE b (y);"];
        migrate(&mut conn, &path, &fixed).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), 2);
        assert_eq!(tables(&conn), ["a", "b"]);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error_naming_it() {
        let (dir, _) = temp_db();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = Db::open(&path).unwrap_err();
        assert!(matches!(err, Error::Database { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn write_commits_on_success_and_rolls_back_on_error() {
        let (_dir, path) = temp_db();
        let mut db = Db::open(&path).unwrap();
        let insert = |tx: &Transaction<'_>, p: &Path, key: &str| {
            tx.execute(
                "INSERT INTO store_meta (key, value) VALUES (?1, 'v')",
                [key],
            )
            .db_ctx(p)
        };
        db.write(|tx, p| insert(tx, p, "kept")).unwrap();
        let err = db
            .write(|tx, p| {
                insert(tx, p, "dropped")?;
                Err::<(), _>(Error::Usage("changed my mind".into()))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
        let keys: Vec<String> = db
            .conn()
            .prepare("SELECT key FROM store_meta WHERE key != 'ledger_signed_from'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(keys, ["kept"]);
    }

    #[test]
    fn writers_exclude_each_other_and_a_timeout_is_busy() {
        let (_dir, path) = temp_db();
        let mut first = Db::open(&path).unwrap();
        let mut second = Db::open(&path).unwrap();
        second
            .conn()
            .busy_timeout(Duration::from_millis(50))
            .unwrap();

        let tx = first.transaction().unwrap();
        let err = second.transaction().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy, "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));

        // Readers are not blocked by the writer (WAL).
        let n: i64 = second
            .conn()
            .query_row("SELECT count(*) FROM tags", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);

        drop(tx);
        second.transaction().unwrap();
    }

    #[test]
    fn ledger_rows_cannot_be_changed_through_sql_by_accident() {
        let (_dir, path) = temp_db();
        let db = Db::open(&path).unwrap();
        let c = db.conn();
        c.execute(
            "INSERT INTO ledger VALUES (1, 't', 'a', 'x', '[]', '{}', 'p', 'h', NULL, NULL)",
            [],
        )
        .unwrap();
        for sql in ["UPDATE ledger SET action = 'y'", "DELETE FROM ledger"] {
            let err = c.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        let err = c
            .execute("INSERT INTO ledger_head VALUES (2, 1, 'h')", [])
            .unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{err}");
    }

    /// Regression: two processes opening a brand-new database at once got
    /// an immediate SQLITE_BUSY (each held a lock the other needed) instead
    /// of one waiting for the other.
    #[test]
    fn concurrent_first_opens_both_succeed() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("drover.db");
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let p = path.clone();
                    std::thread::spawn(move || Db::open(&p).map(drop))
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
        }
    }

    /// Guards the append-only rule where review might not: editing a shipped
    /// migration changes its digest. When appending a migration, append its
    /// digest here; never change an existing line.
    #[test]
    fn shipped_migrations_are_unchanged() {
        let shipped = [
            "sha256:436ea427895b63acd005327c49e68c227f56c3c58b7113032832201941a152ec", // 1
            "sha256:441a539634b172f6fd3f6ad245ebf35d9faddb98226c65a981f6cadd05a53736", // 2
            "sha256:5f1bc925d30ebf7b51b4f6a56ba2d08e557f3c812539034a93304731005b992f", // 3
            "sha256:9a90265149bd5bc62ce4c46a412d7c4a5afcff9d99e5a3a0954c4715d11c0544", // 4
            "sha256:b12af37ce9dea250ca8762ca2db354c7c3fd927311a41e5f1903c9c9cfd97ac1", // 5
        ];
        assert_eq!(shipped.len(), MIGRATIONS.len());
        for (i, (m, want)) in MIGRATIONS.iter().zip(shipped).enumerate() {
            assert_eq!(
                crate::Digest::of(m.as_bytes()).to_string(),
                want,
                "migration {}",
                i + 1
            );
        }
    }
}
