//! Tests on PostgreSQL: one throwaway cluster per test binary (Debian's
//! PostgreSQL 15, `initdb` in a temporary directory, run as the `postgres`
//! user when we are root, loopback and a unix socket only), and one
//! database per test, copied from a migrated template.
//!
//! The cluster is a direct child of a `sh` whose stdin is a pipe this
//! process holds: when the test binary exits, however it exits, the pipe
//! closes and the shell stops PostgreSQL and deletes its directory.
//!
//! [`backends!`] makes each test twice, `name::sqlite` and
//! `name::postgres`; the test opens its database with [`open`], which
//! follows the backend of the test it runs in.
//!
//! drover's integration tests use the same cluster (the `test-support`
//! feature makes this module public): `tests/common`'s `backends!` runs a
//! test under [`with`], and its `Env` takes a [`Cluster::database`] for
//! its store's `DROVER_STATE`.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Db, Location};
use crate::error::Result;

/// The newest Debian PostgreSQL (15 or later: `STRATEGY FILE_COPY`, ICU
/// databases) installed: its bin directory.
fn bin() -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|v| *v >= 15)
        .map(|v| (v, PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))))
        .filter(|(_, b)| b.join("initdb").exists())
        .max_by_key(|(v, _)| *v)
        .map(|(_, b)| b)
}

/// Which database the running test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

/// The PostgreSQL databases made for tests, by the local path each stands
/// for, so that a test (or a thread it spawns) opening the same path again
/// gets the same database.
fn made() -> &'static Mutex<HashMap<PathBuf, String>> {
    static MADE: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    MADE.get_or_init(Default::default)
}

/// Run `f` as a test on `backend`; on PostgreSQL, skipped (with a word)
/// when PostgreSQL is not installed, unless in CI, where that fails.
pub fn with(backend: Backend, f: impl FnOnce()) {
    if backend == Backend::Postgres && cluster().is_none() {
        return;
    }
    BACKEND.with(|b| b.set(backend));
    f();
}

/// The backend of the running test.
pub fn backend() -> Backend {
    BACKEND.with(Cell::get)
}

/// Open the state "at" `path` on the running test's backend: SQLite's file,
/// or a fresh PostgreSQL database standing for it (the same one each time
/// for the same path).
pub fn open(path: &Path) -> Result<Db> {
    Db::open_at(&location(path))
}

/// [`open`]'s location.
pub fn location(path: &Path) -> Location {
    let known = made().lock().unwrap().get(path).cloned();
    match (known, backend()) {
        (Some(url), _) => Location::Postgres {
            url,
            local: path.to_path_buf(),
        },
        (None, Backend::Sqlite) => Location::Sqlite(path.to_path_buf()),
        (None, Backend::Postgres) => {
            let url = cluster()
                .expect("PostgreSQL tests run only with a cluster")
                .database();
            made()
                .lock()
                .unwrap()
                .insert(path.to_path_buf(), url.clone());
            Location::Postgres {
                url,
                local: path.to_path_buf(),
            }
        }
    }
}

/// A fresh, empty (unmigrated) database on the cluster, for tests of
/// migrations themselves.
pub fn empty_database() -> Option<String> {
    let c = cluster()?;
    Some(c.create("template0"))
}

/// Each test twice: `name::sqlite` and `name::postgres`.
#[cfg(test)]
macro_rules! backends {
    ($($(#[$m:meta])* fn $name:ident() $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(#[$m])*
            #[test]
            fn sqlite() {
                $crate::state::pgtest::with($crate::state::pgtest::Backend::Sqlite, || $body)
            }
            $(#[$m])*
            #[test]
            fn postgres() {
                $crate::state::pgtest::with($crate::state::pgtest::Backend::Postgres, || $body)
            }
        }
    )*};
}
#[cfg(test)]
pub(crate) use backends;

pub struct Cluster {
    port: u16,
    sock: PathBuf,
    next: Mutex<u32>,
    /// The pipe whose closing stops the cluster: held for the process's life.
    _reaper: Mutex<Child>,
}

/// The cluster, started on first use; `None` (after saying so) when
/// PostgreSQL is not installed and this is not CI.
pub fn cluster() -> Option<&'static Cluster> {
    static PG: OnceLock<Option<Cluster>> = OnceLock::new();
    PG.get_or_init(|| {
        let Some(bin) = bin() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL 15 or later is required in CI (scripts/setup.sh installs it)"
            );
            eprintln!("skipping: PostgreSQL (15 or later) not installed (run scripts/setup.sh)");
            return None;
        };
        Some(start(&bin))
    })
    .as_ref()
}

/// The uid and gid of `user`, from /etc/passwd.
fn ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

fn start(bin: &Path) -> Cluster {
    // Not a TempDir: the shell below deletes it once PostgreSQL has stopped.
    let dir = tempfile::Builder::new()
        .prefix("drover-pg-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, sock) = (dir.join("data"), dir.join("sock"));
    std::fs::create_dir(&sock).unwrap();
    // initdb refuses to run as root: as root, run the cluster as `postgres`.
    let as_user = |cmd: &mut Command| {
        if nix::unistd::geteuid().is_root() {
            let (uid, gid) =
                ids("postgres").expect("the postgres user (Debian's postgresql package)");
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir(&dir);
    };
    if nix::unistd::geteuid().is_root() {
        let (uid, gid) = ids("postgres").expect("the postgres user (Debian's postgresql package)");
        for p in [&dir, &sock] {
            nix::unistd::chown(p, Some(uid.into()), Some(gid.into())).unwrap();
        }
    }
    let mut initdb = Command::new(bin.join("initdb"));
    initdb.args(["-D"]).arg(&data).args([
        "-U",
        "drover",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "-N",
    ]);
    as_user(&mut initdb);
    let out = initdb.output().unwrap();
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let script = format!(
        "{bin}/postgres -D {data} -p {port} -k {sock} -c listen_addresses=127.0.0.1 \
         -c fsync=off -c full_page_writes=off -c synchronous_commit=off \
         -c max_connections=300 >{dir}/log 2>&1 & pg=$!; \
         cat >/dev/null; kill -INT $pg; wait $pg; rm -rf {dir}",
        bin = bin.display(),
        data = data.display(),
        sock = sock.display(),
        dir = dir.display(),
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_user(&mut sh);
    let reaper = sh.spawn().unwrap();
    let cluster = Cluster {
        port,
        sock,
        next: Mutex::new(0),
        _reaper: Mutex::new(reaper),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.admin().is_err() {
        assert!(
            Instant::now() < deadline,
            "PostgreSQL did not come up: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The template every test's database is copied from: migrated once.
    cluster.exec(
        "CREATE DATABASE drover_tmpl TEMPLATE template0 ENCODING 'UTF8' \
         LC_COLLATE 'C' LC_CTYPE 'C'",
    );
    let local = dir.join("tmpl").join("drover.db");
    drop(
        Db::open_at(&Location::Postgres {
            url: cluster.url("drover_tmpl"),
            local,
        })
        .expect("migrating the template database"),
    );
    let _ = std::io::stderr().flush();
    cluster
}

impl Cluster {
    fn url(&self, db: &str) -> String {
        format!(
            "postgresql:///{db}?user=drover&host={}&port={}",
            self.sock.display(),
            self.port
        )
    }

    /// The TCP address (loopback), for tests that connect that way.
    pub fn tcp_url(&self, db: &str) -> String {
        format!("postgresql://drover@127.0.0.1:{}/{db}", self.port)
    }

    fn admin(&self) -> std::result::Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
    }

    fn exec(&self, sql: &str) {
        self.admin().unwrap().batch_execute(sql).unwrap();
    }

    /// A new database copied from `template`: its URL. Serialized, as a
    /// template may have no other session while it is copied.
    fn create(&self, template: &str) -> String {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let name = format!("t_{}", *next);
        self.exec(&format!(
            "CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY"
        ));
        self.url(&name)
    }

    /// A fresh migrated database: its URL.
    pub fn database(&self) -> String {
        self.create("drover_tmpl")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A fresh empty database made with `how` (`LC_COLLATE …`,
    /// `LOCALE_PROVIDER …`), if the system can make it.
    pub fn database_with(&self, how: &str) -> Option<String> {
        let mut next = self.next.lock().unwrap();
        *next += 1;
        let name = format!("t_{}", *next);
        self.admin()
            .unwrap()
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' {how}"
            ))
            .ok()?;
        Some(self.url(&name))
    }
}

/// A PostgreSQL cluster of one test's own, which it may stop and start
/// (the shared [`cluster`] must not be: every test uses it). Loopback and
/// a unix socket only, like the shared one; stopped (immediately) and
/// deleted when dropped.
pub struct Private {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Private {
    /// A new cluster, started, with an empty database `drover`; `None`
    /// when PostgreSQL is not installed (or not root, to run it as
    /// `postgres`).
    pub fn start() -> Option<Private> {
        let bin = bin()?;
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let (uid, gid) = ids("postgres")?;
        let dir = tempfile::Builder::new()
            .prefix("drover-pg-private-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sock = dir.join("sock");
        std::fs::create_dir(&sock).unwrap();
        for p in [&dir, &sock] {
            nix::unistd::chown(p, Some(uid.into()), Some(gid.into())).unwrap();
        }
        let pg = Private {
            bin,
            dir,
            port: free_port(),
        };
        let out = pg
            .as_postgres(&pg.bin.join("initdb"))
            .arg("-D")
            .arg(pg.dir.join("data"))
            .args([
                "-U",
                "drover",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.up();
        postgres::Client::connect(&pg.url("postgres"), postgres::NoTls)
            .unwrap()
            .batch_execute("CREATE DATABASE drover TEMPLATE template0 ENCODING 'UTF8'")
            .unwrap();
        Some(pg)
    }

    fn as_postgres(&self, program: &Path) -> Command {
        let (uid, gid) = ids("postgres").expect("the postgres user");
        let mut c = Command::new(program);
        c.uid(uid).gid(gid).current_dir(&self.dir);
        c
    }

    /// The URL of its database `drover` (over the unix socket).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql:///{db}?user=drover&host={}&port={}",
            self.dir.join("sock").display(),
            self.port
        )
    }

    /// Start it (again, on the same port and socket) and wait until it
    /// takes connections.
    pub fn up(&self) {
        let out = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c max_connections=100",
                self.port,
                self.dir.join("sock").display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Stop it: `fast` (clients disconnected, a clean shutdown) or
    /// `immediate`.
    pub fn down(&self, mode: &str) {
        let _ = self
            .as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", mode, "-w", "stop"])
            .output();
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        self.down("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
