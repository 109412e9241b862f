//! Where a store's state lives, and the one function that decides it
//! ([`resolve`]).
//!
//! The choice is made once, by the first command that names it (`--state`,
//! `DROVER_STATE`), and recorded in `<store>/state` (one line: `sqlite` or
//! the PostgreSQL URL; mode 0600, as the URL may hold a password). Every
//! later open of the store reads it, so the processes that only know the
//! store root (instance monitors, `serve`'s threads, `drover` run by a
//! systemd unit) open the same backend. A store with a `drover.db` and no
//! record is SQLite (stores from before the choice existed). The state
//! never moves: an explicit choice that differs from the recorded one is
//! refused, as there is no migration tool.

use std::path::Path;

use super::{FILE_NAME, Location};
use crate::error::{Error, IoContext, Result};

/// The file in the store root that records where its state lives.
pub const STATE_FILE: &str = "state";

/// A backend as the user names it (`--state`, `DROVER_STATE`, the
/// [`STATE_FILE`]).
#[derive(Debug, Clone)]
pub enum Choice {
    /// `sqlite`: the file `<store>/drover.db`.
    Sqlite,
    /// `postgres://…` or `postgresql://…`, as libpq takes it.
    Postgres(String),
}

/// What `--state` accepts, for errors.
const ACCEPTED: &str = "`sqlite` (the default: <store>/drover.db) or a PostgreSQL URL \
     (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, or postgresql:///DATABASE?host=/socket/dir)";

impl Choice {
    /// Parse what the user wrote; a bad value is a usage error naming it
    /// (its password hidden) and what is accepted.
    pub fn parse(text: &str) -> Result<Choice> {
        let text = text.trim();
        if text == "sqlite" {
            return Ok(Choice::Sqlite);
        }
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(Error::Usage(format!(
                "--state {:?}: not a state backend drover knows; expected {ACCEPTED}",
                redact(text)
            )));
        }
        text.parse::<postgres::Config>().map_err(|e| {
            Error::Usage(format!(
                "--state {:?}: not a PostgreSQL URL ({e}); expected {ACCEPTED}",
                redact(text)
            ))
        })?;
        Ok(Choice::Postgres(text.to_string()))
    }

    /// The choice for users: `sqlite`, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Choice::Sqlite => "sqlite".to_string(),
            Choice::Postgres(url) => redact(url),
        }
    }

    /// Whether two choices name the same database: URLs compare by user,
    /// hosts, ports and database (not password or options).
    fn same(&self, other: &Choice) -> bool {
        match (self, other) {
            (Choice::Sqlite, Choice::Sqlite) => true,
            (Choice::Postgres(a), Choice::Postgres(b)) => identity(a) == identity(b),
            _ => false,
        }
    }

    fn location(&self, root: &Path) -> Location {
        let local = root.join(FILE_NAME);
        match self {
            Choice::Sqlite => Location::Sqlite(local),
            Choice::Postgres(url) => Location::Postgres {
                url: url.clone(),
                local,
            },
        }
    }
}

/// The user, hosts, ports and database a URL names.
fn identity(url: &str) -> Option<String> {
    let c: postgres::Config = url.parse().ok()?;
    Some(format!(
        "{:?}|{:?}|{:?}|{:?}",
        c.get_user(),
        c.get_hosts(),
        c.get_ports(),
        c.get_dbname()
    ))
}

/// `url` without its password (`user:***@`, `password=***`), for anything
/// shown or logged.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth_end, _) = rest
        .char_indices()
        .find(|(_, c)| matches!(c, '/' | '?'))
        .unwrap_or((rest.len(), ' '));
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// What `<store>/state` says, if it exists.
fn recorded(root: &Path) -> Result<Option<Choice>> {
    let path = root.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read where the store's state lives", &path, e)),
    };
    Choice::parse(&text).map(Some).map_err(|e| {
        Error::corrupt(
            format!("{}", path.display()),
            format!("{e}; it records where the store's state lives (see README, \"State on PostgreSQL\")"),
        )
    })
}

/// Record `choice` in `<store>/state` (atomically, mode 0600).
fn record(root: &Path, choice: &Choice) -> Result<()> {
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).ctx("create store directory", &tmp)?;
    let line = match choice {
        Choice::Sqlite => "sqlite\n".to_string(),
        Choice::Postgres(url) => format!("{url}\n"),
    };
    crate::durable::write_atomic_private(&tmp, &root.join(STATE_FILE), line.as_bytes())
}

/// Where the state of the store at `root` lives, given the user's
/// `explicit` choice if any: the one place that decides it.
///
/// - Recorded in `<store>/state`: that, and an `explicit` choice naming
///   another database is refused (saying both, and that nothing migrates).
/// - Not recorded, but a `drover.db` exists: SQLite (recorded now).
/// - Neither: `explicit`, else SQLite. A PostgreSQL choice is recorded
///   only once the database has been reached and migrated, so a mistyped
///   URL leaves nothing behind; SQLite is recorded at once (best effort:
///   a read-only store still opens).
pub fn resolve(root: &Path, explicit: Option<&Choice>) -> Result<Location> {
    let recorded = recorded(root)?;
    let implied = match &recorded {
        Some(_) => None,
        None if root.join(FILE_NAME).exists() => Some(Choice::Sqlite),
        None => None,
    };
    let current = recorded.clone().or(implied);
    if let (Some(current), Some(explicit)) = (&current, explicit)
        && !current.same(explicit)
    {
        let how = match &recorded {
            Some(_) => format!("recorded in {}", root.join(STATE_FILE).display()),
            None => format!("it has {}", root.join(FILE_NAME).display()),
        };
        return Err(Error::Usage(format!(
            "the store at {} keeps its state in {} ({how}), but --state (or DROVER_STATE) says {}; \
             a store's state does not move and drover has no migration tool: drop --state to use \
             the store as it is, or give another --store for state in {}",
            root.display(),
            current.describe(),
            explicit.describe(),
            explicit.describe(),
        )));
    }
    let chosen = current
        .or_else(|| explicit.cloned())
        .unwrap_or(Choice::Sqlite);
    let loc = chosen.location(root);
    if recorded.is_none() {
        match &chosen {
            Choice::Sqlite => {
                let _ = record(root, &chosen);
            }
            Choice::Postgres(_) => {
                drop(super::Db::open_at(&loc)?);
                record(root, &chosen)?;
            }
        }
    }
    Ok(loc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://drover:s3cret@db.example:5432/drover"),
            "postgres://drover:***@db.example:5432/drover"
        );
        assert_eq!(
            redact("postgresql:///drover?host=/run/pg&password=s3cret&user=d"),
            "postgresql:///drover?host=/run/pg&password=***&user=d"
        );
        assert_eq!(redact("postgres://drover@h/d"), "postgres://drover@h/d");
        let e = Choice::parse("mysql://u:s3cret@h/d")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret") && e.contains("sqlite"), "{e}");
    }

    #[test]
    fn what_state_accepts() {
        assert!(matches!(Choice::parse("sqlite"), Ok(Choice::Sqlite)));
        assert!(matches!(
            Choice::parse("postgresql:///d?host=/tmp/s"),
            Ok(Choice::Postgres(_))
        ));
        for bad in [
            "",
            "SQLite",
            "/var/lib/drover/drover.db",
            "postgres://h/d?nope=1",
        ] {
            let e = Choice::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn urls_compare_by_database_not_password() {
        let a = Choice::Postgres("postgres://u:one@h:5432/d".into());
        let b = Choice::Postgres("postgresql://u:two@h:5432/d".into());
        let c = Choice::Postgres("postgres://u@h:5432/other".into());
        assert!(a.same(&b));
        assert!(!a.same(&c));
        assert!(!a.same(&Choice::Sqlite));
    }

    #[test]
    fn a_sqlite_store_is_recorded_and_a_different_choice_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let loc = resolve(root, None).unwrap();
        assert_eq!(loc, Location::Sqlite(root.join(FILE_NAME)));
        let state = root.join(STATE_FILE);
        assert_eq!(std::fs::read_to_string(&state).unwrap(), "sqlite\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let pg = Choice::Postgres("postgres://u:s3cret@h/d".into());
        let e = resolve(root, Some(&pg)).unwrap_err().to_string();
        assert!(
            e.contains("sqlite") && e.contains("postgres://u:***@h/d") && !e.contains("s3cret"),
            "{e}"
        );
        assert!(e.contains("no migration tool"), "{e}");
    }

    #[test]
    fn an_old_store_with_a_database_file_is_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"").unwrap();
        let pg = Choice::Postgres("postgres://u@h/d".into());
        let e = resolve(dir.path(), Some(&pg)).unwrap_err().to_string();
        assert!(e.contains("drover.db"), "{e}");
    }
}
