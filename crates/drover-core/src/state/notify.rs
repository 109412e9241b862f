//! Change notification on PostgreSQL: LISTEN/NOTIFY instead of polling.
//!
//! Statement triggers (migration 15) call `pg_notify('drover_changes',
//! <table>)` on every change of what [`Reader::changes`] looks at
//! (instance transitions, services, releases, revocations, condemned or
//! lost instances), the hosts, the fleet's settings and trusted keys.
//! PostgreSQL delivers them at commit, once per transaction and table.
//!
//! A serve process starts **one** listener per database ([`listen`]): its
//! own connection and thread, `LISTEN drover_changes`, bumping a
//! generation on every notification. From then on `Reader::changes` of
//! every `Db` of that database in the process is that generation (`n:<g>`),
//! read from memory: serve's reconcilers no longer query the database every
//! 100 ms to learn that nothing changed. The generation is also bumped
//! after every (re)connect, since notifications sent while disconnected are
//! lost, and every [`FALLBACK`], so a lost notification delays a pass by at
//! most that. Without a listener (SQLite, one-off commands, tests)
//! `changes` is the fingerprint query, as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use tracing::{debug, warn};

/// The channel the triggers notify.
pub const CHANNEL: &str = "drover_changes";

/// How often the generation moves even without a notification.
pub const FALLBACK: Duration = Duration::from_secs(5);

/// The generation of one database's changes, as its listener sees them.
#[derive(Debug, Default)]
pub struct Changes {
    generation: AtomicU64,
    notified: AtomicU64,
}

impl Changes {
    /// Moves on every notification, reconnect and [`FALLBACK`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// How many notifications arrived (not counting reconnects and
    /// fallbacks).
    pub fn notified(&self) -> u64 {
        self.notified.load(Ordering::SeqCst)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// The running listeners, by database (`pg_label`: URL without password).
fn listeners() -> &'static Mutex<HashMap<String, Arc<Changes>>> {
    static L: OnceLock<Mutex<HashMap<String, Arc<Changes>>>> = OnceLock::new();
    L.get_or_init(Default::default)
}

/// The listener of the database `label`, if this process runs one.
pub(crate) fn of(label: &str) -> Option<Arc<Changes>> {
    listeners().lock().ok()?.get(label).cloned()
}

/// Start the process's listener for the PostgreSQL database at `url` (the
/// one already running for it, if any), on its own thread for the rest of
/// the process's life. `None` on an unparsable URL.
pub fn listen(url: &str) -> Option<Arc<Changes>> {
    let mut config: postgres::Config = url.parse().ok()?;
    let label = super::pg_label(&config);
    let mut all = listeners().lock().ok()?;
    if let Some(c) = all.get(&label) {
        return Some(c.clone());
    }
    config.application_name("drover listen");
    config.connect_timeout(Duration::from_secs(10));
    let changes = Arc::new(Changes::default());
    let c = changes.clone();
    let name = label.clone();
    thread::Builder::new()
        .name("state changes".into())
        .spawn(move || run(&config, &name, &c))
        .ok()?;
    all.insert(label, changes.clone());
    Some(changes)
}

fn run(config: &postgres::Config, label: &str, changes: &Changes) {
    let mut said = false;
    loop {
        let mut client = match config.connect(postgres::NoTls) {
            Ok(c) => c,
            Err(e) => {
                if !said {
                    warn!(database = %label, error = %e, "change listener cannot connect; retrying every second");
                    said = true;
                }
                changes.bump();
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            warn!(database = %label, error = %e, "change listener cannot LISTEN");
            thread::sleep(Duration::from_secs(1));
            continue;
        }
        said = false;
        debug!(database = %label, "listening for changes");
        // Whatever happened while not listening counts as a change.
        changes.bump();
        let mut last = Instant::now();
        loop {
            let mut n = client.notifications();
            let mut it = n.timeout_iter(Duration::from_secs(1));
            let mut failed = false;
            loop {
                match it.next() {
                    Ok(Some(_)) => {
                        changes.notified.fetch_add(1, Ordering::SeqCst);
                        changes.bump();
                        last = Instant::now();
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(database = %label, error = %e, "change listener lost its connection");
                        failed = true;
                        break;
                    }
                }
            }
            drop(it);
            drop(n);
            if failed || client.is_closed() {
                break;
            }
            if last.elapsed() >= FALLBACK {
                changes.bump();
                last = Instant::now();
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::listen;
    use crate::state::sql::params;
    use crate::state::{Db, DbContext, FILE_NAME, Location, pgtest};

    fn until(what: &str, bound: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + bound;
        while !f() {
            assert!(Instant::now() < deadline, "{what} not within {bound:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A commit on one connection reaches another `Db`'s `changes()` by
    /// notification within a bound, and that `Db` asks the server nothing
    /// meanwhile (it stays parked: any query would reconnect it).
    #[test]
    fn a_write_on_one_db_wakes_another_without_polling() {
        let Some(cluster) = pgtest::cluster() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let url = cluster.database();
        let loc = |n: &str| Location::Postgres {
            url: url.clone(),
            local: dir.path().join(n).join(FILE_NAME),
        };
        let mut writer = Db::open_at(&loc("a")).unwrap();
        let mut reader = Db::open_at(&loc("b")).unwrap();
        let changes = listen(&url).unwrap();
        until("the listener listening", Duration::from_secs(10), || {
            changes.generation() >= 1
        });
        reader.park();
        let before = reader.read().changes().unwrap();
        assert!(before.starts_with("n:"), "{before}");
        let notified = changes.notified();
        writer
            .write(|tx| {
                tx.sql()
                    .execute(
                        "INSERT INTO revocations (digest, reason, time, actor) VALUES (?1, 'r', ?2, 'a')",
                        params![format!("sha256:{}", "c".repeat(64)), "2026-01-01T00:00:00Z"],
                    )
                    .db_ctx(tx.path())
            })
            .unwrap();
        until("the change seen", Duration::from_secs(2), || {
            reader.read().changes().unwrap() != before
        });
        assert!(changes.notified() > notified, "moved by a notification");
        assert!(!reader.conn.connected(), "changes() queried the server");
        // A statement that changes nothing a reconciler reacts to (a lease)
        // notifies nothing.
        let n = changes.notified();
        writer
            .write(|tx| {
                tx.sql()
                    .execute(
                        "INSERT INTO locks (name, holder, token, expires) VALUES ('x', 'h', 1, 0)",
                        params![],
                    )
                    .db_ctx(tx.path())
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(changes.notified(), n);
    }
}
