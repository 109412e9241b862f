use super::*;
use crate::builder::{self, BuildOptions, NoProgress};
use crate::runtime::{Driver, Fake};
use std::os::fd::AsFd;

/// A store holding `app:1`, a one-file image whose stop signal is SIGQUIT.
fn store_with_image() -> (tempfile::TempDir, Store) {
    store_with_image_in(None)
}

/// [`store_with_image`] with its state at `state` (a PostgreSQL URL
/// recorded in the store's state file), or in SQLite.
fn store_with_image_in(state: Option<&str>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    if let Some(url) = state {
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join(crate::state::location::STATE_FILE), url).unwrap();
    }
    let mut store = Store::open(&root).unwrap();
    let text = "[image]\nname = \"app\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/bin/app\"\ncontent = \"x\"\nmode = \"0755\"\n\
                    [config]\nentrypoint = [\"/bin/app\"]\nstop_signal = \"SIGQUIT\"\nuser = \"1000:1000\"\n";
    let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
    builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress).unwrap();
    (dir, store)
}

fn fake(store: &Store) -> Fake {
    Fake::new(runtime_root(store.root()).join("fake"))
}

/// What `run` does, with the fake driver and no monitor process: the
/// test plays the monitor.
fn start(store: &mut Store, name: &str) -> Instance {
    let opts = RunOptions {
        name: Some(name.into()),
        driver: DriverKind::Fake,
        env: vec![("MODE".into(), "test".into())],
        ..RunOptions::default()
    };
    let inst = {
        let d = store.resolve("app:1").unwrap().digest;
        prepare::create(store, &d, "app:1", &opts).unwrap().0
    };
    let root = store.root().to_path_buf();
    monitor::launch(&root, store.db_mut(), &inst).unwrap();
    // The monitor recorded is this test process; forget it, as if the
    // monitor had gone (the fake has no process for it to wait for).
    store
        .db()
        .sql()
        .execute(
            "UPDATE instances SET monitor_pid = NULL WHERE id = ?1",
            [&inst.id],
        )
        .unwrap();
    reload(store.db(), &inst.id).unwrap()
}

/// The server connections to the database at `url` other than the asker's.
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

/// A monitor parks its PostgreSQL connection while its instance runs (so
/// running instances hold none of the server's max_connections), and
/// records the exit by connecting again, also when the connection it had
/// was cut under it (the server restarted): it retries until the server
/// answers. (Restarting the shared test cluster would disturb other tests;
/// terminating the connection is what a restart does to a client.)
#[test]
fn a_parked_monitor_reconnects_to_record_the_exit() {
    let Some(cluster) = crate::state::pgtest::cluster() else {
        return;
    };
    let url = cluster.database();
    let (_dir, mut store) = store_with_image_in(Some(&url));
    assert_eq!(store.db().location().backend(), "postgres");
    let a = start(&mut store, "a");
    let b = start(&mut store, "b");
    store.db_mut().park();
    assert_eq!(connections(&url), 0, "a parked Db holds no connection");
    let patience = Duration::from_secs(30);
    monitor::record_exit_patiently(store.db_mut(), &a.id, Exit::Code(3), patience).unwrap();
    assert!(connections(&url) >= 1, "it connected again");
    // Cut the connection, as a server restart does.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    // Without patience the cut shows: the server is out of reach.
    let e = monitor::record_exit_patiently(store.db_mut(), &b.id, Exit::Code(4), Duration::ZERO)
        .unwrap_err();
    assert!(crate::state::is_unreachable(&e), "{e}");
    assert!(e.to_string().contains("postgres://drover@"), "{e}");
    monitor::record_exit_patiently(store.db_mut(), &b.id, Exit::Code(4), patience).unwrap();
    for (inst, code) in [(&a, 3), (&b, 4)] {
        let row = reload(store.db(), &inst.id).unwrap();
        assert_eq!(row.state, State::Exited, "{}", inst.id);
        assert_eq!(row.exit, Some(Exit::Code(code)), "{}", inst.id);
    }
}

/// An unreachable server is an error worth retrying, named by its URL
/// without the password.
#[test]
fn an_unreachable_server_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let loc = crate::state::Location::Postgres {
        url: format!("postgres://drover:s3cret@127.0.0.1:{port}/drover"),
        local: dir.path().join("drover.db"),
    };
    let e = Db::open_at(&loc).unwrap_err();
    let text = e.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}/drover")), "{text}");
}

fn actions(store: &Store, id: &str) -> Vec<String> {
    store
        .db()
        .read()
        .ledger(&crate::ledger::Filter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.subjects.iter().any(|s| s == id))
        .map(|e| e.action)
        .collect()
}

#[test]
fn run_records_a_running_instance_with_its_config() {
    let (_dir, mut store) = store_with_image();
    let inst = start(&mut store, "web");
    assert_eq!(inst.state, State::Running);
    assert_eq!(inst.name.as_deref(), Some("web"));
    assert_eq!(inst.stop_signal, libc::SIGQUIT);
    assert_eq!((inst.launch.uid, inst.launch.gid), (1000, 1000));
    assert_eq!(inst.launch.args, ["/bin/app"]);
    let port = inst.port.unwrap();
    // The image sets no PATH: the instance gets Docker's default.
    assert_eq!(
        inst.launch.env,
        [
            format!("PATH={}", super::prepare::DEFAULT_PATH),
            "MODE=test".to_string(),
            format!("PORT={port}")
        ]
    );
    assert!(inst.bundle(store.root()).join("config.json").is_file());
    assert_eq!(
        fake(&store).inspect(&inst.id).unwrap().unwrap().status,
        runtime::Status::Running
    );
    assert_eq!(actions(&store, &inst.id), ["instance.start"]);
    // Found by id, unique prefix and name.
    assert_eq!(find(store.db(), &inst.id).unwrap().id, inst.id);
    assert_eq!(find(store.db(), &inst.id[..6]).unwrap().id, inst.id);
    assert_eq!(find(store.db(), "web").unwrap().id, inst.id);
    assert!(matches!(
        find(store.db(), "nope"),
        Err(Error::NotFound { .. })
    ));
}

/// Regression (review of the trust chain): `run` resolved its reference
/// three times (policy check, revocation check, create), so a tag moved
/// in between started an image the policy never saw. What is created is
/// now the digest that was checked, whatever the tag says by then.
#[test]
fn a_tag_moved_after_the_check_does_not_change_what_runs() {
    let (_dir, mut store) = store_with_image();
    let checked = store.resolve("app:1").unwrap().digest;
    let text = "[image]\nname = \"app\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/bin/app\"\ncontent = \"other\"\nmode = \"0755\"\n\
                    [config]\nentrypoint = [\"/bin/app\"]\n";
    let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
    let moved = builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress)
        .unwrap()
        .digest;
    assert_ne!(moved, checked);
    let opts = RunOptions {
        driver: DriverKind::Fake,
        ..RunOptions::default()
    };
    let inst = prepare::create(&mut store, &checked, "app:1", &opts)
        .unwrap()
        .0;
    assert_eq!((inst.image, inst.image_ref.as_str()), (checked, "app:1"));
}

#[test]
fn an_exit_is_recorded_exactly_once() {
    let (_dir, mut store) = store_with_image();
    let inst = start(&mut store, "a");
    assert!(record_exit(store.db_mut(), &inst.id, Exit::Code(3)).unwrap());
    assert!(!record_exit(store.db_mut(), &inst.id, Exit::Unknown).unwrap());
    let now = reload(store.db(), &inst.id).unwrap();
    assert_eq!((now.state, now.exit), (State::Exited, Some(Exit::Code(3))));
    assert_eq!(
        actions(&store, &inst.id),
        ["instance.start", "instance.exit"]
    );
    // Every state change has its row, in order.
    let mut stmt = store
        .db()
        .conn()
        .prepare(
            "SELECT from_state || '>' || to_state FROM instance_transitions \
                 WHERE instance = ?1 ORDER BY seq",
        )
        .unwrap();
    let steps: Vec<String> = stmt
        .query_map([&inst.id], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(steps, ["created>running", "running>exited"]);
}

#[test]
fn a_process_gone_without_its_monitor_shows_as_exited_unknown() {
    let (_dir, mut store) = store_with_image();
    // The fake's pid is never alive, and no monitor ever recorded it:
    // just what a host reboot or a killed monitor leaves.
    let inst = start(&mut store, "a");
    let listed = refresh(store.db_mut(), false).unwrap();
    assert_eq!(listed[0].state, State::Exited);
    assert_eq!(listed[0].exit, Some(Exit::Unknown));
    assert_eq!(
        actions(&store, &inst.id),
        ["instance.start", "instance.exit"]
    );
}

/// Issue 20, part 4: a store restored (or copied) elsewhere, or a host
/// rebooted, must never show the recorded pids as its running instances.
#[test]
fn an_instance_recorded_on_another_boot_is_lost_even_if_its_pid_lives() {
    let (_dir, mut store) = store_with_image();
    let inst = start(&mut store, "a");
    let here = host::current();
    assert_eq!(inst.boot_id, here.boot_id, "the start records this boot");
    assert_eq!(inst.machine_id, here.machine_id);
    // Its pid and start time name a live process: this test's own.
    let me = std::process::id();
    let start = runtime::start_time(me).map(|s| s as i64);
    store
        .db()
        .conn()
        .execute(
            "UPDATE instances SET pid = ?2, pid_start = ?3 WHERE id = ?1",
            rusqlite::params![inst.id, me, start],
        )
        .unwrap();
    let listed = refresh(store.db_mut(), false).unwrap();
    assert_eq!(listed[0].state, State::Running, "same boot, live pid");
    // The same row, as an earlier boot (or another machine) recorded it.
    store
        .db()
        .sql()
        .execute(
            "UPDATE instances SET boot_id = 'an-earlier-boot' WHERE id = ?1",
            [&inst.id],
        )
        .unwrap();
    let listed = refresh(store.db_mut(), false).unwrap();
    assert_eq!(
        (listed[0].state, listed[0].exit),
        (State::Exited, Some(Exit::Unknown))
    );
    assert!(listed[0].is_lost());
    assert_eq!(
        actions(&store, &inst.id),
        ["instance.start", "instance.lost"]
    );
    let entry = store
        .db()
        .read()
        .ledger(&crate::ledger::Filter::default())
        .unwrap()
        .into_iter()
        .find(|e| e.action == "instance.lost")
        .unwrap();
    let why = entry.details["why"].as_str().unwrap();
    assert!(why.contains("boot an-earlier-b"), "{why}");
}

#[test]
fn stop_never_signals_a_process_that_is_gone_and_rm_cleans_up() {
    let (_dir, mut store) = store_with_image();
    let inst = start(&mut store, "a");
    let stopped = stop(&mut store, "a", Duration::ZERO).unwrap();
    assert_eq!(
        (stopped.state, stopped.exit),
        (State::Exited, Some(Exit::Unknown))
    );
    assert!(fake(&store).signals(&inst.id).is_empty());
    let gone = remove(&mut store, "a", false).unwrap();
    assert_eq!(gone.state, State::Deleted);
    assert!(!gone.bundle(store.root()).exists());
    assert!(fake(&store).inspect(&inst.id).unwrap().is_none());
    assert_eq!(
        actions(&store, &inst.id),
        ["instance.start", "instance.exit", "instance.delete"]
    );
    // Removing twice is fine; the name is free again.
    assert_eq!(
        remove(&mut store, &inst.id, false).unwrap().state,
        State::Deleted
    );
    start(&mut store, "a");
}

#[test]
fn the_fake_driver_follows_the_oci_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let f = Fake::new(dir.path().join("fake"));
    let bundle = dir.path().join("b");
    fs::create_dir_all(&bundle).unwrap();
    let null = fs::File::open("/dev/null").unwrap();
    assert!(
        f.create("x", &bundle, null.as_fd()).is_err(),
        "no config.json"
    );
    fs::write(bundle.join("config.json"), "{}").unwrap();
    f.create("x", &bundle, null.as_fd()).unwrap();
    assert!(f.create("x", &bundle, null.as_fd()).is_err(), "exists");
    f.start("x").unwrap();
    assert!(f.start("x").is_err(), "start twice");
    f.stop("x", libc::SIGTERM, Duration::ZERO).unwrap();
    assert_eq!(f.signals("x"), [libc::SIGTERM]);
    assert_eq!(f.list().unwrap().len(), 1);
    f.delete("x").unwrap();
    f.delete("x").unwrap();
    assert!(f.list().unwrap().is_empty());
}

#[test]
fn names_are_unique_among_live_instances() {
    let (_dir, mut store) = store_with_image();
    start(&mut store, "web");
    let opts = RunOptions {
        name: Some("web".into()),
        driver: DriverKind::Fake,
        ..RunOptions::default()
    };
    let err = {
        let d = store.resolve("app:1").unwrap().digest;
        prepare::create(&mut store, &d, "app:1", &opts).unwrap_err()
    };
    assert!(err.to_string().contains("already exists"), "{err}");
}

#[test]
fn only_the_lifecycle_transitions_are_allowed() {
    use State::*;
    let all = [Created, Running, Stopping, Exited, Deleted];
    let allowed = [
        (Created, Running),
        (Created, Exited),
        (Running, Stopping),
        (Running, Exited),
        (Stopping, Exited),
        (Created, Deleted),
        (Exited, Deleted),
    ];
    for from in all {
        for to in all {
            assert_eq!(
                from.can_become(to),
                allowed.contains(&(from, to)),
                "{from:?} -> {to:?}"
            );
        }
    }
}
