use super::migrations::{POSTGRES, SQLITE as MIGRATIONS, migrate, user_version};
use super::pgtest::{self, backends};
use super::sql::{self, Conn, params};
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
            "drain_acks",
            "drift_findings",
            "fleet_settings",
            "hosts",
            "id_ranges",
            "instance_transitions",
            "instances",
            "ledger",
            "ledger_head",
            "locks",
            "placements",
            "proxies",
            "proxy_beats",
            "quarantine",
            "referrers",
            "releases",
            "revocations",
            "service_health",
            "services",
            "sqlite_sequence",
            "store_meta",
            "tags",
            "tokens",
            "trusted_keys",
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

backends! {
fn reopening_keeps_data_and_does_not_rerun_migrations() {
    let (_dir, path) = temp_db();
    let mut db = pgtest::open(&path).unwrap();
    db.write(|tx| {
        tx.sql()
            .execute(
                "INSERT INTO store_meta (key, value) VALUES ('generation', '7')",
                (),
            )
            .db_ctx(tx.path())
    })
    .unwrap();
    drop(db);
    let db = pgtest::open(&path).unwrap();
    let v: String = db
        .sql()
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'generation'",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, "7");
}
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

/// An instance's monitor started by the drover before an upgrade records
/// its exit in a database the new drover migrated further.
#[test]
fn a_monitor_writes_to_a_newer_schema() {
    let (_dir, path) = temp_db();
    drop(Db::open(&path).unwrap());
    let raw = Connection::open(&path).unwrap();
    // What a later migration may do: a column, a table.
    raw.execute_batch(
        "ALTER TABLE instances ADD COLUMN future TEXT; CREATE TABLE future (x TEXT);",
    )
    .unwrap();
    raw.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(raw);
    assert!(matches!(Db::open(&path), Err(Error::DatabaseTooNew { .. })));
    let mut db = Db::open_for_monitor(&Location::Sqlite(path.clone())).unwrap();
    db.write(|tx| {
        tx.record(crate::ledger::NewEntry::new(
            "instance.exit",
            ["i1".to_string()],
            serde_json::json!({"code": 1}),
        ))
        .map(drop)
    })
    .unwrap();
    let v: u32 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1, "the newer schema is left alone");
}

#[test]
fn a_failing_migration_rolls_back_entirely() {
    let (dir, _) = temp_db();
    let path = dir.path().join("m.db");
    let conn = Conn::Sqlite(Connection::open(&path).unwrap());
    let broken = [
        "CREATE TABLE a (x);",
        "CREATE TABLE b (y); CREATE TABLE c (oops",
    ];
    let err = migrate(&conn, &path, &broken).unwrap_err();
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    assert_eq!(user_version(&conn, &path).unwrap(), 1);
    let tables = |c: &Conn| tables(c.sqlite().unwrap());
    assert_eq!(
        tables(&conn),
        ["a"],
        "migration 2's first statement survived"
    );

    // Only the missing migration runs: re-running 1 would fail (table a exists).
    let fixed = ["CREATE TABLE a (x);", "CREATE TABLE b (y);"];
    migrate(&conn, &path, &fixed).unwrap();
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

backends! {
fn write_commits_on_success_and_rolls_back_on_error() {
    let (_dir, path) = temp_db();
    let mut db = pgtest::open(&path).unwrap();
    let insert = |tx: &Tx<'_>, key: &str| {
        tx.sql()
            .execute(
                "INSERT INTO store_meta (key, value) VALUES (?1, 'v')",
                [key],
            )
            .db_ctx(tx.path())
    };
    db.write(|tx| insert(tx, "kept")).unwrap();
    let err = db
        .write(|tx| {
            insert(tx, "dropped")?;
            Err::<(), _>(Error::Usage("changed my mind".into()))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Usage(_)));
    let keys: Vec<String> = db
        .sql()
        .prepare("SELECT key FROM store_meta WHERE key != 'ledger_signed_from'")
        .unwrap()
        .query_map((), |r| r.get(0))
        .unwrap()
        .collect::<sql::Result<_>>()
        .unwrap();
    assert_eq!(keys, ["kept"]);
}
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

    let tx = first.begin().unwrap();
    let err = second
        .begin()
        .err()
        .expect("the second writer waits, then fails");
    assert_eq!(err.kind(), ErrorKind::Busy, "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));

    // Readers are not blocked by the writer (WAL).
    let n: i64 = second
        .conn()
        .query_row("SELECT count(*) FROM tags", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);

    drop(tx);
    second.begin().unwrap();
}

backends! {
fn ledger_rows_cannot_be_changed_through_sql_by_accident() {
    let (_dir, path) = temp_db();
    let db = pgtest::open(&path).unwrap();
    let c = db.sql();
    c.execute(
        "INSERT INTO ledger VALUES (1, 't', 'a', 'x', '[]', '{}', 'p', 'h', NULL, NULL)",
        (),
    )
    .unwrap();
    let mut refused = vec!["UPDATE ledger SET action = 'y'", "DELETE FROM ledger"];
    // PostgreSQL's TRUNCATE skips row triggers: a statement trigger refuses it.
    if c.dialect() == sql::Dialect::Postgres {
        refused.push("TRUNCATE ledger");
    }
    for sql in refused {
        let err = c.execute(sql, ()).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let n: i64 = c
        .query_row("SELECT count(*) FROM ledger", (), |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let err = c
        .execute("INSERT INTO ledger_head VALUES (2, 1, 'h')", ())
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("check"), "{err}");
}

fn releases_are_append_only_and_their_outcome_final() {
    let (_dir, path) = temp_db();
    let db = pgtest::open(&path).unwrap();
    let c = db.sql();
    c.execute_batch(
        "INSERT INTO services (name, spec, spec_digest, created, updated) VALUES ('s', '{}', 'd', 't', 't');
         INSERT INTO releases (service, number, image, image_ref, config, config_digest, author,
             message, created, outcome) VALUES ('s', 1, 'i', 'r', '{}', 'c', 'a', 'm', 't', 'pending');",
    )
    .unwrap();
    c.execute("UPDATE releases SET outcome = 'healthy'", ()).unwrap();
    let mut refused = vec![
        ("UPDATE releases SET outcome = 'failed'", "final"),
        ("UPDATE releases SET image = 'j'", "immutable"),
        ("DELETE FROM releases", "append-only"),
    ];
    if c.dialect() == sql::Dialect::Postgres {
        refused.push(("TRUNCATE releases", "append-only"));
    }
    for (sql, why) in refused {
        let err = c.execute(sql, ()).unwrap_err();
        assert!(err.to_string().contains(why), "{sql}: {err}");
    }
}

fn id_ranges_go_to_the_lowest_free_index_once_per_owner() {
    let (_dir, path) = temp_db();
    let mut db = pgtest::open(&path).unwrap();
    let mut hold = |owner: &str| db.write(|tx| tx.hold_id_range(owner, 3, "t"));
    assert_eq!(hold("service:a").unwrap(), 0);
    assert_eq!(hold("instance:x").unwrap(), 1);
    assert_eq!(hold("service:a").unwrap(), 0, "an owner keeps its range");
    assert_eq!(hold("service:b").unwrap(), 2);
    let e = hold("service:c").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Busy, "{e}");
    db.write(|tx| tx.release_id_range("instance:x")).unwrap();
    assert_eq!(
        db.write(|tx| tx.hold_id_range("service:c", 3, "t"))
            .unwrap(),
        1,
        "a freed range is reused"
    );
    assert_eq!(db.read().id_ranges().unwrap().len(), 3);
}
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
        "sha256:d3587f07706b02dbee8d0305a9994e98d4c3a2e8a952174f44328ff3a05ed647", // 6
        "sha256:096f94a49b61f930af18069cb1faaa2165ae0ae5d84f417d614d4c5cfcf4f921", // 7
        "sha256:f76f4120f9eb5e46c74df06959861be77f5c2953b72f7a4c8a39c2775746f19c", // 8
        "sha256:3b4874079c014513fa8bb35b566be3a8168f5d6db08eca6a587702088f5a2af0", // 9
        "sha256:a74aea2cf693ea8f530f7f595fe1a3e19622f3808ad53f72f209c1dcb4d73d9b", // 10 (host identity)
        "sha256:f68e8e86a8a0ee9848b9465287d6d6b27b993e9949f54dadc411a94b67116b9b", // 11 (tokens)
        "sha256:c3f30d87ee2b77b2ffd7c21ab2f88adf22a117a9073fe7ee70cea1488524477c", // 12 (hosts)
        "sha256:9ec2773ea637aaf3e5c84a89a3252eb054fdb0f7b520c532edcfdd10c3de09ee", // 13 (trusted keys)
        "sha256:8a70ff7f478b8d8c8f12bb4c3d3290ca5b79099c916d6e6f37e792c18a20db71", // 14 (proxy beats, drain acks per host)
        "sha256:a841dea317cce023c55d70c83bac83a826276445df7c7e00af36d8987c6baa86", // 15 (fleet settings)
        "sha256:76a6bfe750d7728cdf5634b0f7b8b0293503dac4ebca314712df9b435d6599a5", // 16 (PG notify; none)
        "sha256:d5997f8746b6d2c8af25599d8321dc9e378e2f414ecac19660076dd1dca737db", // 17 (placements)
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

/// The two migration lists make the same tables with the same columns and
/// nullability, so a schema version means one schema on both backends.
#[test]
fn both_backends_migrate_to_the_same_tables_and_columns() {
    let Some(url) = pgtest::empty_database() else {
        return;
    };
    let (dir, path) = temp_db();
    let lite = Db::open(&path).unwrap();
    let pg = Db::open_at(&Location::Postgres {
        url,
        local: dir.path().join("pg").join(FILE_NAME),
    })
    .unwrap();
    let lite_cols: Vec<(String, String, bool)> = lite
        .sql()
        .prepare(
            "SELECT t.name, c.name, c.\"notnull\" OR c.pk FROM sqlite_schema t, pragma_table_info(t.name) c \
             WHERE t.type = 'table' AND t.name != 'sqlite_sequence' ORDER BY t.name, c.name",
        )
        .unwrap()
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<sql::Result<_>>()
        .unwrap();
    let pg_cols: Vec<(String, String, bool)> = pg
        .sql()
        .prepare(
            "SELECT table_name::text, column_name::text, is_nullable = 'NO' \
             FROM information_schema.columns WHERE table_schema = 'public' \
             AND table_name != 'drover_schema' ORDER BY table_name, column_name",
        )
        .unwrap()
        .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<sql::Result<_>>()
        .unwrap();
    assert!(lite_cols.len() > 50, "{lite_cols:?}");
    assert_eq!(lite_cols, pg_cols);
    assert_eq!(POSTGRES.len(), MIGRATIONS.len());
    let version: i64 = pg
        .sql()
        .query_row("SELECT version FROM drover_schema", (), |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::from(SCHEMA_VERSION));
}

/// Several processes migrating one new PostgreSQL database at once: the
/// advisory lock lets one migrate and the others find it done.
#[test]
fn concurrent_first_opens_of_one_postgres_database_both_succeed() {
    let Some(url) = pgtest::empty_database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let loc = Location::Postgres {
                url: url.clone(),
                local: dir.path().join(i.to_string()).join(FILE_NAME),
            };
            std::thread::spawn(move || Db::open_at(&loc).map(drop))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
}

#[test]
fn a_postgres_database_that_does_not_collate_bytewise_is_refused() {
    let Some(cluster) = pgtest::cluster() else {
        return;
    };
    // ICU collation (PostgreSQL 15) needs no system locale: any machine
    // with Debian's PostgreSQL can make one.
    let url = cluster
        .database_with("LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'")
        .expect("an ICU-collated database");
    let dir = tempfile::tempdir().unwrap();
    let err = Db::open_at(&Location::Postgres {
        url,
        local: dir.path().join(FILE_NAME),
    })
    .unwrap_err();
    assert!(err.to_string().contains("LC_COLLATE 'C'"), "{err}");
}

#[test]
fn a_postgres_busy_writer_is_busy_not_a_failure() {
    let Some(cluster) = pgtest::cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let loc = Location::Postgres {
        url: cluster.database(),
        local: dir.path().join(FILE_NAME),
    };
    let mut first = Db::open_at(&loc).unwrap();
    let second = Db::open_at(&loc).unwrap();
    let tx = first.begin().unwrap();
    // What a writer waiting past BUSY_TIMEOUT gets, without the wait.
    let err = second
        .sql()
        .begin(&format!(
            "BEGIN; SET LOCAL lock_timeout = '50ms'; SELECT pg_advisory_xact_lock({K_WRITE})"
        ))
        .map_err(|e| db_error(second.path(), e))
        .expect_err("the second writer waits, then fails");
    assert_eq!(err.kind(), ErrorKind::Busy, "{err:?}");
    // Readers are not blocked by the writer.
    let n: i64 = second
        .sql()
        .query_row("SELECT count(*) FROM tags", (), |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    drop(tx);
    // The failed begin left no aborted transaction behind.
    let mut second = second;
    second.begin().unwrap();
}

backends! {
/// The change fingerprint `serve` polls runs on both backends and moves
/// when something a reconciler reacts to is committed.
fn changes_move_when_a_revocation_is_made() {
    let (_dir, path) = temp_db();
    let mut db = pgtest::open(&path).unwrap();
    let before = db.read().changes().unwrap();
    assert_eq!(before, db.read().changes().unwrap());
    db.write(|tx| {
        tx.sql()
            .execute(
                "INSERT INTO revocations (digest, reason, time, actor) VALUES (?1, 'r', ?2, 'a')",
                params![format!("sha256:{}", "b".repeat(64)), "2026-01-01T00:00:00Z"],
            )
            .db_ctx(tx.path())
    })
    .unwrap();
    let after = db.read().changes().unwrap();
    assert_ne!(before, after);
    assert!(after.ends_with("1:2026-01-01T00:00:00Z"), "{after}");
}
}

/// A lost or unreachable PostgreSQL is an error naming the database (its
/// URL without a password) and saying what happened.
#[test]
fn a_lost_or_unreachable_postgres_is_a_clear_error() {
    let Some(cluster) = pgtest::cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join(FILE_NAME);
    let url = cluster.database();
    let loc = Location::Postgres {
        url: url.clone(),
        local: local.clone(),
    };
    let db = Db::open_at(&loc).unwrap();
    let killer = Db::open_at(&loc).unwrap();
    let db_name = url.split('?').next().unwrap().rsplit('/').next().unwrap();
    killer
        .sql()
        .execute_batch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    let err = db.read().changes().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Database { .. }), "{err:?}");
    assert!(msg.contains("postgres://drover@"), "{msg}");
    assert!(msg.contains(&format!("/{db_name}")), "{msg}");

    let nowhere = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Db::open_at(&Location::Postgres {
        url: format!("postgres://drover:secret@127.0.0.1:{nowhere}/drover"),
        local,
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("cannot reach the PostgreSQL state database postgres://drover@127.0.0.1:{nowhere}/drover")),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "{msg}");
}

backends! {
/// The ledger's one query into JSON details (the entries that made a
/// release) matches the same rows on both backends, and a row whose
/// details are not JSON is passed over, not an error.
fn release_entries_match_service_and_number_in_the_details() {
    let (_dir, path) = temp_db();
    let mut db = pgtest::open(&path).unwrap();
    for (action, details) in [
        ("release.create", serde_json::json!({"service": "web", "release": 7})),
        ("release.create", serde_json::json!({"service": "web", "release": "7"})),
        ("release.create", serde_json::json!({"service": "api", "release": 7})),
        ("release.rollback", serde_json::json!({"service": "web", "release": 7, "to": 3})),
        ("tag.set", serde_json::json!({"service": "web", "release": 7})),
    ] {
        db.write(|tx| tx.record(crate::ledger::NewEntry::new(action, ["s"], details.clone())))
            .unwrap();
    }
    db.sql()
        .execute(
            "INSERT INTO ledger VALUES (100, 't', 'a', 'release.create', '[]', 'not json', 'p', 'h', NULL, NULL)",
            (),
        )
        .unwrap();
    let got: Vec<(u64, String)> = db
        .read()
        .release_entries("web", 7)
        .unwrap()
        .into_iter()
        .map(|e| (e.seq, e.action))
        .collect();
    assert_eq!(
        got,
        [(1, "release.create".to_string()), (4, "release.rollback".to_string())]
    );
}
}
