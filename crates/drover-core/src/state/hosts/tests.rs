use std::path::{Path, PathBuf};

use super::*;
use crate::digest::Digest;
use crate::keys::SigningKey;
use crate::state::pgtest::{self, backends};
use crate::state::{FILE_NAME, Location, NewInstance};

/// Two hosts on one database: two state directories (each its own host
/// key, so its own ledger signer) over the same SQLite file (a symlink) or
/// the same PostgreSQL database.
struct Fleet {
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a").join(FILE_NAME);
        let b = dir.path().join("b").join(FILE_NAME);
        Fleet { _dir: dir, a, b }
    }

    fn open_a(&self) -> Db {
        pgtest::open(&self.a).unwrap()
    }

    fn open_b(&self) -> Db {
        let _ = self.open_a();
        match pgtest::location(&self.a) {
            Location::Postgres { url, .. } => Db::open_at(&Location::Postgres {
                url,
                local: self.b.clone(),
            })
            .unwrap(),
            Location::Sqlite(path) => {
                std::fs::create_dir_all(self.b.parent().unwrap()).unwrap();
                if !self.b.exists() {
                    std::os::unix::fs::symlink(&path, &self.b).unwrap();
                }
                Db::open(&self.b).unwrap()
            }
        }
    }
}

fn dir(db_path: &Path) -> &Path {
    crate::state::state_dir(db_path)
}

fn join(db: &mut Db, name: &str) -> HostRow {
    let key = db.signer().unwrap().public();
    db.join_host(&HostJoin {
        name,
        labels: r#"{"zone":"a"}"#,
        capacity: r#"{"cpus":2}"#,
        address: Some("198.18.0.11"),
        key: &key,
        version: "test",
    })
    .unwrap()
}

/// An instance row of `db`'s store (stamped with its joined host, if any).
fn instance(db: &mut Db, id: &str) {
    let image = Digest::of(id.as_bytes());
    db.write(|tx| {
        tx.insert_instance(&NewInstance {
            id,
            name: None,
            image: &image,
            image_ref: "test:1",
            release: None,
            driver: "fake",
            state: "running",
            port: None,
            stop_signal: 15,
            launch: "{}",
            service: None,
            config_digest: &image,
            slot: None,
            volumes: "[]",
        })
    })
    .unwrap();
}

fn actions(db: &Db, prefix: &str) -> Vec<crate::ledger::Entry> {
    db.read()
        .ledger(&crate::ledger::Filter::default())
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with(prefix))
        .collect()
}

backends! {
    fn first_join_pins_the_key_and_another_key_is_refused_naming_both() {
        let f = Fleet::new();
        let mut a = f.open_a();
        let row = join(&mut a, "h1");
        assert_eq!((row.state.as_str(), row.epoch), ("up", 1));
        let keyid = a.signer().unwrap().keyid();
        assert_eq!(row.keyid.as_deref(), Some(keyid.as_str()));
        assert!(row.heartbeat.is_some());
        // The same host again: labels updated, nothing else.
        let again = a
            .join_host(&HostJoin {
                name: "h1",
                labels: r#"{"zone":"b"}"#,
                capacity: "{}",
                address: None,
                key: &a.signer().unwrap().public(),
                version: "test",
            })
            .unwrap();
        assert_eq!(again.labels, r#"{"zone":"b"}"#);
        assert_eq!(again.epoch, 1);

        let other = SigningKey::generate().unwrap().public();
        let err = a
            .join_host(&HostJoin {
                name: "h1",
                labels: "{}",
                capacity: "{}",
                address: None,
                key: &other,
                version: "test",
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(&keyid) && err.contains(&other.keyid()), "{err}");
        // The same key under another name: a store is one host.
        let mut b = f.open_b();
        let err = b
            .join_host(&HostJoin {
                name: "h2",
                labels: "{}",
                capacity: "{}",
                address: None,
                key: &a.signer().unwrap().public(),
                version: "test",
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("as host \"h1\""), "{err}");
        assert_eq!(actions(&a, "host.join").len(), 2);
        assert_eq!(a.read().hosts().unwrap().len(), 1);
    }

    fn heartbeats_use_the_server_clock_and_stop_landing_once_fenced() {
        let f = Fleet::new();
        let mut a = f.open_a();
        join(&mut a, "h1");
        let before = a.read().now_ms().unwrap();
        assert!(a.host_heartbeat("h1", 1).unwrap());
        let beat = a.read().host("h1").unwrap().unwrap().heartbeat.unwrap();
        assert!(beat >= before && beat <= a.read().now_ms().unwrap());
        assert!(!a.host_heartbeat("h1", 0).unwrap(), "an old epoch is fenced");
        assert!(!a.host_heartbeat("nobody", 1).unwrap());
    }

    fn a_lapsed_host_is_marked_down_once_with_its_instances_lost() {
        let f = Fleet::new();
        let mut a = f.open_a();
        let mut b = f.open_b();
        join(&mut a, "h1");
        join(&mut b, "h2");
        write_local_host(dir(&f.a), "h1", 1).unwrap();
        instance(&mut a, "aaaa1");
        instance(&mut a, "aaaa2");
        // h2's instance is not h1's.
        write_local_host(dir(&f.b), "h2", 1).unwrap();
        instance(&mut b, "bbbb1");
        // Nobody lapsed yet.
        assert!(b.mark_lapsed_hosts_down(60_000, "h2").unwrap().is_empty());
        // h2 beats; h1 does not.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(b.host_heartbeat("h2", 1).unwrap());
        let down = b.mark_lapsed_hosts_down(200, "h2").unwrap();
        assert_eq!(
            down,
            [HostDown {
                host: "h1".into(),
                epoch: 2,
                lost: vec!["aaaa1".into(), "aaaa2".into()]
            }]
        );
        // The other checker finds nothing.
        assert!(a.mark_lapsed_hosts_down(200, "h1").unwrap().is_empty());
        let h1 = a.read().host("h1").unwrap().unwrap();
        assert_eq!((h1.state.as_str(), h1.epoch), ("down", 2));
        assert!(h1.reason.unwrap().contains("seen by h2"));
        assert_eq!(
            a.read().instance_lost("aaaa1").unwrap().as_deref(),
            Some("host h1 down (epoch 2)")
        );
        assert_eq!(a.read().instance_lost("bbbb1").unwrap(), None);
        let entries = actions(&a, "host.down");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].details["host"], "h1");
        assert_eq!(entries[0].details["epoch"], 2);
        assert_eq!(entries[0].details["lost"], serde_json::json!(["aaaa1", "aaaa2"]));
        // h1 is fenced: its heartbeat no longer lands, and it has stale
        // instances to stop before it is up again.
        assert!(!a.host_heartbeat("h1", 1).unwrap());
        assert_eq!(a.read().stale_instances("h1", 2).unwrap(), ["aaaa1", "aaaa2"]);
        assert!(a.read().stale_instances("h2", 1).unwrap().is_empty());
        a.host_up("h1", 2, Some(&["aaaa1".into(), "aaaa2".into()])).unwrap();
        let h1 = a.read().host("h1").unwrap().unwrap();
        assert_eq!((h1.state.as_str(), h1.reason), ("up", None));
        assert!(a.host_heartbeat("h1", 2).unwrap());
        let fenced = actions(&a, "host.fenced");
        assert_eq!(fenced[0].details["stopped"], serde_json::json!(["aaaa1", "aaaa2"]));
        assert_eq!(
            a.read().instances_per_host().unwrap(),
            [("h2".to_string(), 1)],
            "lost instances are not counted"
        );
    }

    fn of_two_concurrent_checkers_only_one_marks_a_host_down() {
        let f = Fleet::new();
        let mut a = f.open_a();
        join(&mut a, "h1");
        drop(a);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let paths = [f.a.clone(), f.b.clone()];
        let _ = f.open_b();
        let loc_b = match pgtest::location(&f.a) {
            Location::Postgres { url, .. } => Location::Postgres { url, local: f.b.clone() },
            Location::Sqlite(_) => Location::Sqlite(f.b.clone()),
        };
        let loc_a = pgtest::location(&paths[0]);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = [loc_a, loc_b]
            .into_iter()
            .enumerate()
            .map(|(i, loc)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut db = Db::open_at(&loc).unwrap();
                    barrier.wait();
                    db.mark_lapsed_hosts_down(100, &format!("checker{i}")).unwrap()
                })
            })
            .collect();
        let marked: Vec<Vec<HostDown>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(marked.iter().map(Vec::len).sum::<usize>(), 1, "{marked:?}");
        let a = f.open_a();
        assert_eq!(a.read().host("h1").unwrap().unwrap().epoch, 2);
        assert_eq!(actions(&a, "host.down").len(), 1);
    }

    fn draining_is_a_flag_recorded_once() {
        let f = Fleet::new();
        let mut a = f.open_a();
        join(&mut a, "h1");
        assert!(a.set_host_draining("h1", true).unwrap());
        assert!(!a.set_host_draining("h1", true).unwrap());
        assert_eq!(a.read().host("h1").unwrap().unwrap().state, "draining");
        assert!(a.host_heartbeat("h1", 1).unwrap(), "a draining host beats");
        assert!(a.set_host_draining("h1", false).unwrap());
        assert_eq!(a.read().host("h1").unwrap().unwrap().state, "up");
        assert!(a.set_host_draining("nope", true).is_err());
        assert_eq!(actions(&a, "host.drain").len(), 1);
        assert_eq!(actions(&a, "host.undrain").len(), 1);
    }

    fn trusted_keys_are_added_listed_and_removed_with_the_ledger_saying_who() {
        let f = Fleet::new();
        let mut a = f.open_a();
        let ci = SigningKey::generate().unwrap().public();
        assert!(a.trust_key(&ci, Some("ci")).unwrap());
        assert!(!a.trust_key(&ci, Some("ci")).unwrap(), "already trusted");
        // Every host sees it.
        let b = f.open_b();
        let keys = b.read().trusted_keys(false).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].keyid.as_str(), keys[0].name.as_deref()), (ci.keyid().as_str(), Some("ci")));
        assert_eq!(b.read().trusted_public_keys().unwrap(), [ci]);
        let trusted = actions(&b, "key.trust");
        assert_eq!(trusted[0].details["keyid"], ci.keyid());
        assert_eq!(trusted[0].actor, keys[0].actor);
        assert!(a.untrust_key("abc").is_err(), "too short");
        assert_eq!(a.untrust_key(&ci.keyid()[..12]).unwrap(), ci.keyid());
        assert!(a.untrust_key(&ci.keyid()).is_err(), "no longer trusted");
        assert!(b.read().trusted_public_keys().unwrap().is_empty());
        assert!(b.read().trusted_keys(true).unwrap()[0].removed.is_some());
        assert_eq!(actions(&b, "key.untrust").len(), 1);
        // Trusted anew.
        assert!(a.trust_key(&ci, None).unwrap());
        assert_eq!(b.read().trusted_public_keys().unwrap(), [ci]);
    }

    fn the_ledger_two_hosts_sign_verifies_against_the_joined_hosts_keys() {
        let f = Fleet::new();
        let mut a = f.open_a();
        let mut b = f.open_b();
        join(&mut a, "h1");
        join(&mut b, "h2");
        a.set_host_draining("h1", true).unwrap();
        b.set_host_draining("h2", true).unwrap();
        let (ka, kb) = (a.signer().unwrap().public(), b.signer().unwrap().public());
        assert_ne!(ka, kb);
        let signers: std::collections::BTreeSet<_> = a
            .read()
            .ledger(&crate::ledger::Filter::default())
            .unwrap()
            .into_iter()
            .filter_map(|e| e.keyid)
            .collect();
        assert_eq!(signers.len(), 2, "each host signs its own entries");
        // One host's key alone does not verify the fleet's ledger.
        let alone = a.read().verify_ledger(&[ka]).unwrap();
        assert!(!alone.is_ok());
        assert!(alone.problem.unwrap().reason.contains("not a trusted key"));
        let mut trusted = vec![ka];
        trusted.extend(a.read().host_public_keys().unwrap());
        let report = a.read().verify_ledger(&trusted).unwrap();
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.signed, report.entries);
    }
}
