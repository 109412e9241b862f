//! Where a store's state lives: `--state` / `DROVER_STATE` chooses it on a
//! new store, `<store>/state` records it for every later command (the
//! hidden ones too), a different choice is refused, and on PostgreSQL the
//! monitors of running instances hold no server connection. The deploy,
//! serve, policy and audit tests run on both backends themselves
//! (`common::backends!`).

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Backend, Env, eventually, show};
use drover_core::state::pgtest;
use serde_json::Value;

/// `drover ARGS` on `env`'s store with neither --state nor DROVER_STATE.
fn bare(env: &Env, args: &[&str]) -> Output {
    Command::new(common::DROVER)
        .arg("--store")
        .arg(env.store())
        .args(args)
        .env_remove("DROVER_STATE")
        .output()
        .expect("run drover")
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// The connections to the database at `url`, other than this one.
fn connections(url: &str) -> i64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
        &[],
    )
    .unwrap()
    .get(0)
}

#[test]
fn the_choice_is_recorded_and_later_commands_use_it() {
    pgtest::with(Backend::Postgres, || {
        let env = Env::new();
        let url = env.state.clone().unwrap();
        env.ok(&["images"]);
        let file = env.store().join("state");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{url}\n"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "it may hold a password");
        assert!(
            !env.store().join("drover.db").exists(),
            "no SQLite file beside a PostgreSQL state"
        );
        // Without --state: the recorded backend.
        let out = bare(&env, &["--json", "store", "info"]);
        assert!(out.status.success(), "{}", show(&out));
        let info = common::doc(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(info["state"]["backend"], "postgres", "{info}");
        assert_eq!(info["state"]["location"], url.as_str(), "{info}");
        let out = bare(&env, &["--json", "status"]);
        let status = common::doc(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(status["state"]["backend"], "postgres", "{status}");
        let out = bare(&env, &["status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("state: postgres {url}")), "{text}");
        // What one command did, the next sees, through the database.
        env.ok(&["key", "show"]);
        let out = bare(&env, &["--json", "audit", "verify"]);
        assert!(out.status.success(), "{}", show(&out));
    });
}

#[test]
fn another_backend_than_the_recorded_one_is_refused() {
    pgtest::with(Backend::Postgres, || {
        let env = Env::new();
        let url = env.state.clone().unwrap();
        env.ok(&["images"]);
        let out = bare(&env, &["--state", "sqlite", "images"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), Some(2), "{}", show(&out));
        assert!(
            err.contains(&url) && err.contains("sqlite") && err.contains("no migration tool"),
            "{err}"
        );
        let other = "postgres://drover:s3cret@127.0.0.1:1/other";
        let out = bare(&env, &["--state", other, "images"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), Some(2), "{}", show(&out));
        assert!(!err.contains("s3cret"), "{err}");
        assert!(
            err.contains("postgres://drover:***@127.0.0.1:1/other"),
            "{err}"
        );
        // The same database, named again, is fine.
        let out = bare(&env, &["--state", &url, "images"]);
        assert!(out.status.success(), "{}", show(&out));
        // Backups of PostgreSQL are pg_dump's.
        let file = env.dir.path().join("backup.tar");
        let out = bare(&env, &["store", "backup", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), Some(2), "{}", show(&out));
        assert!(err.contains("pg_dump"), "{err}");
        assert!(!file.exists());
    });
    // A SQLite store refuses PostgreSQL the same way.
    let env = Env::on(Backend::Sqlite);
    env.ok(&["images"]);
    let out = bare(
        &env,
        &["--state", "postgres://drover@127.0.0.1:1/x", "images"],
    );
    assert_eq!(code(&out), Some(2), "{}", show(&out));
}

#[test]
fn a_state_drover_does_not_know_is_a_usage_error() {
    let env = Env::on(Backend::Sqlite);
    for bad in ["mysql://u:s3cret@h/d", "sqlite3", "postgres://h/d?bogus=1"] {
        let out = env.cmd().args(["--state", bad, "images"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), Some(2), "{bad}: {}", show(&out));
        assert!(
            err.contains("`sqlite`") && err.contains("postgres://") && !err.contains("s3cret"),
            "{bad}: {err}"
        );
    }
    assert!(
        !env.store().join("state").exists(),
        "nothing recorded from a refused choice"
    );
    // A backup holds SQLite's state: restoring it "into PostgreSQL" is refused.
    let out = env
        .cmd()
        .args(["--state", "postgres://drover@127.0.0.1:1/x"])
        .args(["store", "restore", "/nonexistent.tar"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), Some(2), "{}", show(&out));
    assert!(err.contains("pg_restore"), "{err}");
}

/// Running instances' monitors park their connection (the server's
/// max_connections would otherwise bound the instances), and connect
/// again to record an exit.
#[test]
fn running_instances_hold_no_database_connection() {
    pgtest::with(Backend::Postgres, || {
        let Some(env) = crate::instances::box_env() else {
            return;
        };
        let url = env.state.clone().unwrap();
        let ids: Vec<String> = (0..4)
            .map(|i| common::last_line(&env.ok(&["run", "--name", &format!("idle{i}"), "box:1"])))
            .collect();
        let mut seen = -1;
        assert!(
            eventually(Duration::from_secs(10), || {
                seen = connections(&url);
                seen == 0
            }),
            "{} instances run and {seen} connections are open",
            ids.len()
        );
        let ps: Vec<Value> = env.items(&["ps"]);
        let pid = ps
            .iter()
            .find(|i| i["id"] == ids[0].as_str())
            .and_then(|i| i["pid"].as_u64())
            .unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let mut state = Value::Null;
        assert!(
            eventually(Duration::from_secs(20), || {
                let ps: Vec<Value> = env.items(&["ps", "-a"]);
                state = ps
                    .into_iter()
                    .find(|i| i["id"] == ids[0].as_str())
                    .unwrap_or_default();
                state["state"] == "exited"
            }),
            "the monitor recorded the exit: {state}"
        );
        assert_eq!(state["exit"]["kind"], "signal", "{state}");
    });
}
