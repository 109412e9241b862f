//! The state seam: where services, releases, instances, tags, revocations and
//! the ledger live, and the one way to change them.
//!
//! | type | what it is |
//! |------|------------|
//! | [`Db`] | an open state database; owns the host key that signs the ledger |
//! | [`Reader`] | reads, at a consistent point ([`Db::read`], or [`Tx::read`] inside a change) |
//! | [`Tx`] | one atomic change: every mutation and its ledger entry ([`Tx::record`], the only way to append) commit together or not at all |
//!
//! Every statement lives here, grouped by noun, one file each, all behind
//! these types: `images` (tags, referrers, the store generation, what keeps
//! an image from gc), `ledger` (append, list, the rows verification and
//! export walk), `releases` (services, releases, quarantine, service health),
//! `instances` (rows, transitions, traffic columns), `leases`, `proxies`,
//! `drift` (findings), `revocations`, `tokens` (API tokens, hashed), `hosts`
//! (a fleet's hosts, heartbeats, fencing, trusted signing keys), and [`Reader::changes`]. Values whose
//! types belong to modules above this one (a release's config, a service's
//! rollout) are stored as JSON and are generic here; `instance` decodes its
//! own rows. Nothing outside this crate sees a database type, and outside
//! this module only tests write SQL (to play someone editing the file).
//! The per-noun changes on [`Tx`] are crate-private: from outside, a change
//! is made through the domain function that also records its ledger entry.
//!
//! # What a backend must provide
//!
//! The backend is SQLite (`<state dir>/drover.db`) by default, or
//! PostgreSQL, for a fleet of hosts ([`Db::open_at`] with a
//! [`Location::Postgres`]). Which one a store uses is decided in one place,
//! [`location::resolve`] (`--state`, recorded in `<store>/state`).
//! Both sit behind `sql.rs`, the one file that names the drivers; the noun
//! modules' statements are shared text. A backend must give:
//!
//! - **Transactions**: serializable, all-or-nothing changes, begun with the
//!   write intent up front (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: `BEGIN`
//!   READ COMMITTED then one advisory lock every writer takes, under
//!   `lock_timeout`), waiting a bounded time ([`BUSY_TIMEOUT`])
//!   for other writers and then failing with [`Error::Busy`], never halfway.
//! - **The append-only ledger**: rows that can be inserted but not updated or
//!   deleted (triggers on both; PostgreSQL's also refuse TRUNCATE), plus the
//!   head row written in the same transaction. Entries are chained and
//!   signed by [`crate::ledger`], not by the backend, so any backend's
//!   ledger verifies the same way and exports the same bytes.
//! - **Leases with fencing**: named leases with a holder, an expiry and a
//!   token that only grows, taken and checked inside the same transaction as
//!   the change they guard (`deploy::lock`).
//! - **Change notification**: a cheap way for a long-running process to learn
//!   that another one committed something it must react to: the
//!   fingerprint [`Reader::changes`], polled, on SQLite; on PostgreSQL in
//!   `serve`, a generation kept by one `LISTEN`ing connection per process
//!   ([`notify`]), so reconcilers poll memory, not the server.
//! - **Versioned migrations**: a schema version that only grows, refused when
//!   newer than the binary ([`Error::DatabaseTooNew`]); PostgreSQL's list is
//!   a one-for-one translation of SQLite's, under the same numbers.
//!
//! The statements are written in the SQL both SQLite and PostgreSQL take
//! (`ON CONFLICT … DO UPDATE`, not `INSERT OR REPLACE`; subqueries in
//! `FROM` named; columns qualified where an upsert could read two), so the
//! backends share their text; only the ledger's two JSON queries differ
//! (docs/fleet-plan.md).
//!
//! # PostgreSQL specifics
//!
//! The database must collate text bytewise (`LC_COLLATE 'C'`, the libc
//! provider), as SQLite does: names and RFC 3339 times are ordered and
//! compared as bytes. Opening any other is refused, saying how to create one.
//! The host key and the signed ledger head stay in the local directory
//! [`Location::Postgres`] names. `store backup` is SQLite's; back PostgreSQL
//! up with `pg_dump`. No TLS yet: connect over a unix socket or loopback.
//! A process that holds a `Db` for long but seldom uses it (an instance's
//! monitor) parks it ([`Db::park`]): the connection closes and the next use
//! opens a new one. A connection the server dropped is replaced the same
//! way on next use, never inside a transaction ([`is_unreachable`] says
//! which errors are worth retrying later).
//!
//! # SQLite specifics
//!
//! Any number of drover processes may open the file at once. Readers never
//! block (WAL). Writers take the write lock up front, so two writers
//! serialize instead of one failing halfway through with `SQLITE_BUSY`, and
//! each waits up to [`BUSY_TIMEOUT`] for the other. Content itself (blobs)
//! lives on disk beside the database; the database only names it.

mod drift;
pub mod fleet;
pub mod hosts;
mod id_ranges;
mod images;
mod instances;
mod leases;
mod ledger;
pub mod location;
mod migrations;
pub mod notify;
/// The PostgreSQL test harness; public to drover's integration tests with
/// the `test-support` feature (a dev-dependency feature only).
#[cfg(any(test, feature = "test-support"))]
pub mod pgtest;
mod placements;
mod proxies;
mod releases;
mod revocations;
pub(crate) mod sql;
mod tokens;

use std::cell::{Cell, OnceCell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

use sql::{Conn, Dialect, SqlError};

pub use fleet::FleetSetting;
pub use hosts::{HostDown, HostJoin, HostRow, TrustedKey};
pub use images::{Referrer, Tag};
pub use instances::{InstanceRow, NewInstance, VolumeHolder};
pub use leases::LeaseRow;
pub use placements::PlacementRow;
pub use releases::{NewReleaseRow, Outcome, Quarantined, ReleaseOf, ServiceHealth, ServiceOf};
pub use revocations::Revocation;
pub use tokens::TokenRow;

use crate::error::{Error, IoContext, Result};
use crate::keys::SigningKey;
use crate::ledger::{Entry, NewEntry};

/// The database's file name inside the state directory.
pub const FILE_NAME: &str = "drover.db";

/// How long a drover process waits for another one's write lock before
/// giving up with [`Error::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The schema version this binary creates and understands.
pub const SCHEMA_VERSION: u32 = migrations::SQLITE.len() as u32;

/// The advisory lock every PostgreSQL writer holds for its whole
/// transaction: writers serialize, as under SQLite's `BEGIN IMMEDIATE`.
const K_WRITE: i64 = 7_234_001;

/// Where the state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (`<store>/drover.db`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…`). `local` stands where the
    /// SQLite file would: the host key and the signed ledger head live in
    /// its directory.
    Postgres { url: String, local: PathBuf },
}

impl Location {
    /// The backend's name: `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Location::Sqlite(_) => "sqlite",
            Location::Postgres { .. } => "postgres",
        }
    }

    /// Where, for users: the SQLite file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres { url, .. } => location::redact(url),
        }
    }
}

/// An open state database.
pub struct Db {
    conn: Conn,
    path: PathBuf,
    /// Where it lives (what `status` names).
    loc: Location,
    /// The key every ledger entry is signed with: the host key of the
    /// directory holding the database, loaded once, when first needed.
    signer: OnceCell<Arc<SigningKey>>,
}

impl Db {
    /// Open (creating if needed, parent directory included) the database at
    /// `path` and bring its schema up to [`SCHEMA_VERSION`].
    ///
    /// Fails with [`Error::DatabaseTooNew`] if a newer drover has migrated it
    /// past what this one knows: writing to a schema we do not understand
    /// could break the newer drover's invariants.
    pub fn open(path: &Path) -> Result<Db> {
        Self::open_with(path, false)
    }

    /// [`Db::open`] for an instance's monitor: a database a newer drover
    /// migrated past this binary's schema is opened as it is, not refused.
    /// A monitor started by the drover before an upgrade must still record
    /// its instance's exit (and the next `serve` heal it); it writes only
    /// instance transitions and their ledger entries, which every later
    /// schema keeps valid (the rule at the top of `MIGRATIONS`).
    pub fn open_for_monitor(loc: &Location) -> Result<Db> {
        Self::open_loc(loc, true)
    }

    /// Open the state at `loc` (see [`Db::open`]).
    pub fn open_at(loc: &Location) -> Result<Db> {
        Self::open_loc(loc, false)
    }

    fn open_loc(loc: &Location, newer_ok: bool) -> Result<Db> {
        match loc {
            Location::Sqlite(path) => Self::open_with(path, newer_ok),
            Location::Postgres { url, local } => Self::open_postgres(url, local, newer_ok),
        }
    }

    /// Where this database lives.
    pub fn location(&self) -> &Location {
        &self.loc
    }

    /// Let go of the server connection until the next use, which reconnects
    /// (PostgreSQL; on SQLite nothing happens): for a process that holds a
    /// `Db` for long but uses it seldom, such as an instance's monitor, so
    /// that running instances do not each hold one of the server's
    /// `max_connections`. Never inside a change.
    pub fn park(&mut self) {
        self.conn.park();
    }

    fn open_postgres(url: &str, local: &Path, newer_ok: bool) -> Result<Db> {
        if let Some(parent) = local.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ctx("create state directory", parent)?;
        }
        let conn = pg_connect(url, local)?;
        check_collation(&conn, local)?;
        match migrations::migrate(&conn, local, migrations::POSTGRES) {
            Err(Error::DatabaseTooNew { .. }) if newer_ok => {}
            other => other?,
        }
        let db = Db {
            conn,
            path: local.to_path_buf(),
            loc: Location::Postgres {
                url: url.to_string(),
                local: local.to_path_buf(),
            },
            signer: OnceCell::new(),
        };
        db.start_signed_head();
        Ok(db)
    }

    fn open_with(path: &Path, newer_ok: bool) -> Result<Db> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).ctx("create state directory", parent)?;
        }
        // Without SQLITE_OPEN_URI, so a path is always a path.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Conn::Sqlite(Connection::open_with_flags(path, flags).db_ctx(path)?);
        // Two processes opening a new database at once can each hold a lock
        // the other needs (switching to WAL, the first migration); SQLite
        // then answers SQLITE_BUSY at once instead of waiting, to avoid a
        // deadlock. Retrying from scratch is safe: both steps are idempotent.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            let attempt = configure(conn.sqlite().expect("SQLite"))
                .db_ctx(path)
                .and_then(|()| migrations::migrate(&conn, path, migrations::SQLITE));
            let attempt = match attempt {
                Err(Error::DatabaseTooNew { .. }) if newer_ok => Ok(()),
                other => other,
            };
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
        ensure_reserve(path);
        let db = Db {
            conn,
            path: path.to_path_buf(),
            loc: Location::Sqlite(path.to_path_buf()),
            signer: OnceCell::new(),
        };
        db.start_signed_head();
        Ok(db)
    }

    /// A store from before the signed head (or one whose process died
    /// between its first commit and the file write) has a ledger but no
    /// signed head: sign the current one, so truncation is caught from here
    /// on. Best effort: a store that cannot be written (read-only, full)
    /// still opens, and `audit verify` says there is no signed head.
    fn start_signed_head(&self) {
        if ledger::signed_head_path(&self.path).exists() {
            return;
        }
        let Ok(Some((seq, hash))) = self.read().ledger_head() else {
            return;
        };
        let (Ok(seq), Ok(key)) = (u64::try_from(seq), self.signer()) else {
            return;
        };
        let signed_from = self.read().ledger_signed_from().ok().flatten();
        let _ = ledger::write_signed_head(&self.path, seq, &hash, key, signed_from, false);
    }

    /// The key that signs this database's ledger entries (loading, or on
    /// first use creating, the host key of the state directory).
    pub fn signer(&self) -> Result<&Arc<SigningKey>> {
        signer(&self.signer, &self.path)
    }

    /// The database file, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what is committed. Each statement sees a consistent state; for
    /// several reads that must agree, read inside [`Db::write`].
    pub fn read(&self) -> Reader<'_> {
        Reader {
            conn: &self.conn,
            path: &self.path,
        }
    }

    /// Copy the database as committed at one moment into a new file `to`
    /// (SQLite's online backup API, all pages in one step under one read
    /// transaction: writers go on meanwhile and the copy is consistent).
    pub fn snapshot(&self, to: &Path) -> Result<()> {
        let Some(conn) = self.conn.sqlite() else {
            return Err(Error::Usage(format!(
                "the store's state is in PostgreSQL ({}), which `drover store backup` does not copy: \
                 back the database up with pg_dump, and the store directory's keys/, policy.toml \
                 and ledger.head with it",
                self.loc.describe()
            )));
        };
        let mut dst = Connection::open(to).db_ctx(to)?;
        let backup = rusqlite::backup::Backup::new(conn, &mut dst).db_ctx(to)?;
        match backup.step(-1).db_ctx(&self.path)? {
            rusqlite::backup::StepResult::Done => Ok(()),
            other => Err(Error::Busy {
                what: format!("state database {}", self.path.display()),
                reason: format!("its snapshot did not complete ({other:?}); retry"),
            }),
        }
    }

    /// The raw connection, for tests that play someone editing the file.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        self.conn.sqlite().expect("a test of SQLite's file")
    }

    /// The connection, whichever the backend, for tests.
    #[cfg(test)]
    pub(crate) fn sql(&self) -> &Conn {
        &self.conn
    }

    /// Begin a change. It takes the write lock immediately (`BEGIN
    /// IMMEDIATE`), waiting up to [`BUSY_TIMEOUT`] for other writers, so
    /// everything read inside it stays true until [`Tx::commit`]. Dropping it
    /// uncommitted rolls back.
    pub fn begin(&mut self) -> Result<Tx<'_>> {
        self.begin_as(Mode::Normal)
    }

    fn begin_as(&mut self, mode: Mode) -> Result<Tx<'_>> {
        let begin = match self.conn.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE".to_string(),
            // READ COMMITTED on purpose: each statement after the lock sees
            // every commit made before it was granted (under REPEATABLE READ
            // the snapshot would predate the wait), and as every writer holds
            // the lock nothing changes under us.
            Dialect::Postgres => format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL lock_timeout = '{}s'; \
                 SELECT pg_advisory_xact_lock({K_WRITE})",
                BUSY_TIMEOUT.as_secs()
            ),
        };
        self.conn.begin(&begin).db_ctx(&self.path)?;
        Ok(Tx {
            conn: &self.conn,
            done: Cell::new(false),
            path: &self.path,
            signer: &self.signer,
            appended: RefCell::new(None),
            mode,
            gap: RefCell::new(None),
        })
    }

    /// Run `f` in a change (see [`Db::begin`]) and commit if it succeeds;
    /// roll back if it fails.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.write_as(Mode::Normal, f)
    }

    pub(crate) fn write_as<T>(
        &mut self,
        mode: Mode,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut tx = self.begin_as(mode)?;
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// [`Db::write`] for a change that is part of freeing space (stopping or
    /// removing an instance), which a full disk must not prevent: if it
    /// fails for want of space, the store's reserve ([`RESERVE_FILE`]) is
    /// released and the change tried once more. The reserve comes back when
    /// a later [`Db::open`] finds room for it.
    ///
    /// Nor does a gap between the ledger and its signed head (a deleted
    /// tail, a restored backup): other appends are refused until the gap
    /// is acknowledged, but a freeing change is recorded after a loud
    /// warning, and the head file is not re-signed over the gap.
    pub fn write_freeing<T>(&mut self, f: impl Fn(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        match self.write_as(Mode::Freeing, &f) {
            Err(e) if is_disk_full(&e) && release_reserve(&self.path) => {
                self.write_as(Mode::Freeing, &f)
            }
            other => other,
        }
    }
}

/// A file the store keeps (`<state dir>/reserve`, [`RESERVE_BYTES`]) so that
/// on a full disk stopping and removing instances still find room for their
/// state and ledger writes: [`Db::write_freeing`] deletes it and retries.
pub const RESERVE_FILE: &str = "reserve";

/// The reserve's size: room for many transactions' WAL frames.
pub const RESERVE_BYTES: u64 = 8 << 20;

/// Make the reserve if it is missing and the disk has room for it; a disk
/// without room simply has no reserve until one is freed.
fn ensure_reserve(db_path: &Path) {
    let path = state_dir(db_path).join(RESERVE_FILE);
    if path.exists() {
        return;
    }
    let tmp = state_dir(db_path).join(format!("{RESERVE_FILE}.{}.tmp", std::process::id()));
    let made = std::fs::File::create(&tmp).and_then(|f| {
        use std::os::fd::AsRawFd;
        // Allocated, not sparse: the blocks must really be held.
        nix::fcntl::fallocate(
            f.as_raw_fd(),
            nix::fcntl::FallocateFlags::empty(),
            0,
            RESERVE_BYTES as i64,
        )
        .map_err(std::io::Error::from)?;
        std::fs::rename(&tmp, &path)
    });
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Delete the reserve; true if there was one to free.
fn release_reserve(db_path: &Path) -> bool {
    let path = state_dir(db_path).join(RESERVE_FILE);
    std::fs::remove_file(&path).is_ok()
}

/// Whether `e` is the disk (or its quota) running out of space.
pub fn is_disk_full(e: &Error) -> bool {
    match e {
        Error::Database { source, .. } => match source.downcast_ref::<SqlError>() {
            Some(SqlError::Sqlite(e)) => e.sqlite_error_code() == Some(ErrorCode::DiskFull),
            Some(SqlError::Postgres(e, _)) => e.code().is_some_and(|c| c.code() == "53100"),
            _ => false,
        },
        Error::Io { source, .. } => {
            matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
        }
        _ => false,
    }
}

/// Whether `e` is the PostgreSQL server being out of reach (refused, gone,
/// shutting down, the connection lost): worth retrying later, unlike an
/// error in what was asked.
pub fn is_unreachable(e: &Error) -> bool {
    let Error::Database { source, .. } = e else {
        return false;
    };
    match source.downcast_ref::<SqlError>() {
        Some(SqlError::Lost) => true,
        Some(SqlError::Postgres(e, _)) => match e.code() {
            // connection_exception, admin/crash shutdown, cannot connect now.
            Some(c) => {
                c.code().starts_with("08") || ["57P01", "57P02", "57P03"].contains(&c.code())
            }
            // Not the server's answer: connecting, or the socket, failed.
            None => e.as_db_error().is_none(),
        },
        _ => false,
    }
}

fn signer<'a>(cell: &'a OnceCell<Arc<SigningKey>>, db_path: &Path) -> Result<&'a Arc<SigningKey>> {
    if cell.get().is_none() {
        let key = crate::keys::host_key(state_dir(db_path))?;
        let _ = cell.set(Arc::new(key));
    }
    Ok(cell.get().expect("just set"))
}

/// The directory whose host key signs the ledger in `db_path`: the one
/// holding the database, i.e. the store root.
pub fn state_dir(db_path: &Path) -> &Path {
    match db_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Reads of committed state (or, from [`Tx::read`], of the change so far).
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    conn: &'a Conn,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    /// The database file, for error messages.
    pub fn path(&self) -> &'a Path {
        self.path
    }

    /// The connection, for the noun modules' queries.
    pub(crate) fn sql(&self) -> &'a Conn {
        self.conn
    }

    /// Change notification, by polling: a value that differs whenever
    /// something a reconciler must react to was committed (an instance
    /// changed state, a service or its releases changed, an instance was
    /// condemned, a revocation was made or lifted). Heartbeats, leases and
    /// drains do not change it, so they cost no reconcile pass. (A backend
    /// with notifications, PostgreSQL's `LISTEN`, can wake on the same set.)
    pub fn changes(&self) -> Result<String> {
        // With this process's listener running (PostgreSQL, serve), the
        // generation it keeps: no query (see [`notify`]).
        if let Some(c) = self.conn.pg_label().and_then(|l| notify::of(&l)) {
            return Ok(format!("n:{}", c.generation()));
        }
        self.conn
            .query_row(
                "SELECT (SELECT coalesce(max(seq), 0) FROM instance_transitions) || '/' || \
                 (SELECT coalesce(max(updated), '') FROM services) || '/' || \
                 (SELECT count(*) FROM releases) || '/' || \
                 (SELECT count(*) FROM instances WHERE condemned IS NOT NULL AND state != 'deleted') || '/' || \
                 (SELECT count(*) || ':' || coalesce(max(time), '') FROM revocations)",
                (),
                |r| r.get(0),
            )
            .db_ctx(self.path)
    }
}

/// What a change may do when the ledger disagrees with its signed head
/// (see [`Db::write_freeing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Refuse to append.
    Normal,
    /// Stop, exit, remove: append anyway, warn, do not re-sign the head.
    Freeing,
    /// `audit accept-truncation`: append the acknowledgement and re-sign.
    AcceptGap,
}

/// One atomic change of the state, with its ledger entries.
pub struct Tx<'a> {
    conn: &'a Conn,
    /// Committed (or its commit was tried): nothing to roll back on drop.
    done: Cell<bool>,
    path: &'a Path,
    signer: &'a OnceCell<Arc<SigningKey>>,
    /// The last entry this change appended (seq, hash): signed as the
    /// ledger head once the change commits.
    appended: RefCell<Option<(u64, String)>>,
    mode: Mode,
    /// The gap between the chain and the signed head this change appended
    /// across, if any: the head file is then left as it is (or, for
    /// [`Mode::AcceptGap`], re-signed).
    gap: RefCell<Option<ledger::Gap>>,
}

impl Tx<'_> {
    /// The database file, for error messages.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// Read inside this change: sees its own writes.
    pub fn read(&self) -> Reader<'_> {
        Reader {
            conn: self.conn,
            path: self.path,
        }
    }

    /// Append the ledger entry that describes this change, stamped with the
    /// current time and [`crate::ledger::actor`], chained to the head and
    /// signed. The only way anything is appended to the ledger: nothing is
    /// visible until [`Tx::commit`], and a rollback removes the entry
    /// together with the change it describes.
    pub fn record(&self, e: NewEntry) -> Result<Entry> {
        self.record_as(e, crate::ledger::actor(), crate::clock::now_rfc3339())
    }

    /// [`Tx::record`] with a chosen actor and time (tests of filters).
    pub(crate) fn record_as(&self, e: NewEntry, actor: String, time: String) -> Result<Entry> {
        let entry = ledger::append(self, e, actor, time, || {
            signer(self.signer, self.path).cloned()
        })?;
        *self.appended.borrow_mut() = Some((entry.seq, entry.hash.clone()));
        Ok(entry)
    }

    /// Make the change durable and visible; then, if it appended to the
    /// ledger, sign the new head into the file beside the database
    /// ([`crate::ledger::head`]). That write comes after the commit, so a
    /// crash in between leaves the file behind the chain, never ahead; a
    /// failure to write it (a full disk) does not undo the committed change
    /// and is caught up by the next commit.
    pub fn commit(self) -> Result<()> {
        let appended = self.appended.take();
        let gap = self.gap.take().is_some();
        let signed_from = if appended.is_some() {
            self.read().ledger_signed_from()?
        } else {
            None
        };
        self.done.set(true);
        if let Err(e) = self.conn.end("COMMIT") {
            let _ = self.conn.end("ROLLBACK");
            return Err(db_error(self.path, e));
        }
        if let (Some((seq, hash)), Some(key)) = (appended, self.signer.get()) {
            match (gap, self.mode) {
                (false, _) => {
                    let _ =
                        ledger::write_signed_head(self.path, seq, &hash, key, signed_from, false);
                }
                // The acknowledgement is what moves the head past the gap;
                // failing to write it must not pass silently.
                (true, Mode::AcceptGap) => {
                    ledger::write_signed_head(self.path, seq, &hash, key, signed_from, true)?;
                }
                (true, _) => {}
            }
        }
        Ok(())
    }

    /// The transaction, for the noun modules' statements.
    pub(crate) fn sql(&self) -> &Conn {
        self.conn
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done.get() {
            let _ = self.conn.end("ROLLBACK");
        }
    }
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

/// Attach the database path to a rusqlite result; see [`db_error`].
pub(crate) trait DbContext<T> {
    fn db_ctx(self, path: &Path) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db_ctx(self, path: &Path) -> Result<T> {
        self.map_err(|source| db_error(path, SqlError::from(source)))
    }
}

impl<T> DbContext<T> for sql::Result<T> {
    fn db_ctx(self, path: &Path) -> Result<T> {
        self.map_err(|source| db_error(path, source))
    }
}

/// Turn a rusqlite error about the database at `path` into an [`Error`].
///
/// Lock timeouts become [`Error::Busy`] rather than [`Error::Database`]: they
/// are not a fault, and the caller (or the user) should simply retry.
pub(crate) fn db_error(path: &Path, source: SqlError) -> Error {
    let busy = match &source {
        SqlError::Sqlite(e) => matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        ),
        // lock_not_available (lock_timeout), serialization_failure, deadlock.
        SqlError::Postgres(e, _) => e
            .code()
            .is_some_and(|c| ["55P03", "40001", "40P01"].contains(&c.code())),
        _ => false,
    };
    // A PostgreSQL database is named by its URL (without password), not by
    // the local path that stands for it.
    let (path, source) = match source {
        SqlError::Postgres(e, Some(label)) => (PathBuf::from(label), SqlError::Postgres(e, None)),
        other => (path.to_path_buf(), other),
    };
    match busy {
        true => Error::Busy {
            what: format!("state database {}", path.display()),
            reason: format!(
                "another drover process kept it locked for longer than {} s; retry when it has finished",
                BUSY_TIMEOUT.as_secs()
            ),
        },
        false => Error::Database {
            path,
            source: Box::new(source),
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

/// Connect to PostgreSQL at `url` (no TLS yet: a unix socket or loopback).
fn pg_connect(url: &str, local: &Path) -> Result<Conn> {
    let mut config: postgres::Config = url.parse().map_err(|e| Error::Database {
        path: local.to_path_buf(),
        source: format!("not a PostgreSQL URL: {e}").into(),
    })?;
    let label = pg_label(&config);
    let unreachable = |e: postgres::Error| Error::Database {
        path: local.to_path_buf(),
        source: format!("cannot reach the PostgreSQL state database {label}: {e}").into(),
    };
    if config.get_application_name().is_none() {
        config.application_name("drover");
    }
    config.connect_timeout(Duration::from_secs(10));
    config.options("-c idle_in_transaction_session_timeout=60s");
    let client = config.connect(postgres::NoTls).map_err(unreachable)?;
    Ok(Conn::postgres(client, config, label))
}

/// What errors call a PostgreSQL database: its URL without the password.
pub(crate) fn pg_label(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = config
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    format!(
        "postgres://{}@{host}{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// drover's statements order text by bytes (names, RFC 3339 times), as
/// SQLite's BINARY collation does: refuse a database that collates otherwise.
fn check_collation(conn: &Conn, local: &Path) -> Result<()> {
    // PostgreSQL 15 added ICU as a database's collation provider.
    let (collate, provider): (String, String) = conn
        .query_row(
            "SELECT datcollate::text, CASE WHEN current_setting('server_version_num')::int >= 150000 \
             THEN (SELECT datlocprovider::text FROM pg_database WHERE datname = current_database()) \
             ELSE 'c' END FROM pg_database WHERE datname = current_database()",
            (),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .db_ctx(local)?;
    let collate = match provider.as_str() {
        "c" => collate,
        _ => format!("{collate} (provider {provider})"),
    };
    if ["C", "POSIX", "C.UTF-8", "C.utf8"].contains(&collate.as_str()) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "the PostgreSQL state database collates text as {collate:?}, but drover needs byte order; \
         create it with: CREATE DATABASE drover TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    )))
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
mod tests;
