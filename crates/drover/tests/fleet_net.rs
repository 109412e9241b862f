//! One fleet on real components: three hosts as network namespaces
//! (`common::netns`), each running `drover serve --join` with its own
//! store, over one PostgreSQL database of the test cluster, reached from
//! inside the namespaces over its unix socket. One trust domain (issue 22
//! item 6): the hosts see each other, a revocation made on one host
//! refuses the image on another at once, a key trusted on one host admits
//! what it signed on another, the fleet's policy set on one host applies on
//! the others, `audit verify` on any host checks every host's entries, and
//! a host killed whole is marked down and fences itself when it returns.
//! Needs root, `ip` and PostgreSQL (CI has them). Placement and rollouts
//! across hosts are tested elsewhere.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::netns::Net;
use crate::common::{self, DROVER, Env, eventually, show};

/// How long after its heartbeat lapses a host may still be listed up:
/// `--host-timeout` (3 s here) plus one fleet check (1 s), with slack for
/// a loaded machine.
const DOWN_BOUND: Duration = Duration::from_secs(12);

/// A host of the fleet: its namespace, its store, its serve.
struct Host {
    node: String,
    /// Its store (`env.store()`), on the fleet's database.
    env: Env,
    serve: Option<Child>,
    log: PathBuf,
}

/// The fleet: the net, the database, the hosts.
struct Fleet {
    net: Net,
    url: String,
    hosts: Vec<Host>,
    /// Instances h1 started outside the namespaces: stopped on drop.
    instances: Vec<String>,
}

impl Fleet {
    fn cmd(&self, i: usize) -> Command {
        let h = &self.hosts[i];
        let mut c = self.net.cmd(&h.node);
        c.arg(DROVER)
            .arg("--init")
            .arg("--store")
            .arg(h.env.store())
            .env("DROVER_STATE", &self.url)
            .env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn run(&self, i: usize, args: &[&str]) -> Output {
        self.cmd(i).args(args).output().expect("run drover")
    }

    fn ok(&self, i: usize, args: &[&str]) -> String {
        let out = self.run(i, args);
        assert!(
            out.status.success(),
            "drover {args:?} on {} failed:\n{}",
            self.hosts[i].node,
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn items(&self, i: usize, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        common::items(&self.ok(i, &a))
    }

    fn start(&mut self, i: usize) {
        let node = self.hosts[i].node.clone();
        let n = &node[1..];
        let addr = self.net.addr(&node);
        let log = self.hosts[i].log.clone();
        let child = self
            .cmd(i)
            .args([
                "serve",
                "--admin",
                "off",
                "--drift-interval",
                "0",
                "--interval",
                "500ms",
                "--join",
                "--host",
                &node,
                "--label",
                &format!("zone=z{n}"),
                "--address",
                &addr,
                "--host-timeout",
                "3s",
            ])
            .stdout(Stdio::null())
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .expect("start drover serve");
        self.hosts[i].serve = Some(child);
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }

    fn hosts_seen_from(&self, i: usize) -> Vec<Value> {
        self.items(i, &["hosts"])
    }

    fn state_of(&self, i: usize, name: &str) -> Option<String> {
        self.hosts_seen_from(i)
            .into_iter()
            .find(|h| h["name"] == name)
            .and_then(|h| h["state"].as_str().map(str::to_string))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for id in &self.instances {
            let _ = self.hosts[0].env.run(&["stop", id]);
        }
        for h in &mut self.hosts {
            if let Some(c) = &mut h.serve
                && c.try_wait().ok().flatten().is_none()
            {
                common::stop(c, Duration::from_secs(10));
            }
        }
        // The Net's own drop then kills whatever is left in the namespaces.
    }
}

/// A tiny image (FROM scratch) that is never run: the policy decides first.
fn app_def(dir: &Path, tag: &str) -> PathBuf {
    let ctx = dir.join(format!("ctx-{tag}"));
    std::fs::create_dir_all(&ctx).unwrap();
    let def = ctx.join("drover.toml");
    common::write(
        &def,
        format!(
            "[image]\nname = \"app\"\ntag = \"{tag}\"\n\n[[layer]]\nkind = \"file\"\ndest = \"/bin/app\"\n\
             content = \"app {tag}\\n\"\nmode = \"0755\"\n\n[config]\nentrypoint = [\"/bin/app\"]\n"
        )
        .as_bytes(),
        0o644,
    );
    def
}

fn refused(out: &Output, rule: &str) {
    assert_eq!(out.status.code(), Some(6), "{}", show(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("rule {rule}: ")), "{}", show(out));
}

#[test]
fn three_hosts_share_one_trust_domain() {
    let Some(net) = Net::new(3) else { return };
    let Some(cluster) = drover_core::state::pgtest::cluster() else {
        return;
    };
    let url = cluster.database();
    assert!(
        url.contains("host=/"),
        "reached over its unix socket: {url}"
    );
    let hosts = (1..=3)
        .map(|n| {
            let env = Env {
                dir: tempfile::tempdir().unwrap(),
                state: Some(url.clone()),
            };
            let log = env.dir.path().join("serve.log");
            Host {
                node: format!("h{n}"),
                env,
                serve: None,
                log,
            }
        })
        .collect();
    let mut f = Fleet {
        net,
        url,
        hosts,
        instances: vec![],
    };
    let t0 = Instant::now();
    for i in 0..3 {
        f.ok(i, &["key", "show"]);
    }
    for i in 0..3 {
        f.start(i);
    }

    // a) every host sees all three up, with labels and addresses.
    let all_up = |f: &Fleet, i: usize| {
        let hs = f.hosts_seen_from(i);
        hs.len() == 3 && hs.iter().all(|h| h["state"] == "up")
    };
    assert!(
        eventually(Duration::from_secs(20), || all_up(&f, 0)),
        "not all up:\n{}\n{}\n{}",
        f.log(0),
        f.log(1),
        f.log(2)
    );
    for i in 0..3 {
        let hs = f.hosts_seen_from(i);
        for (n, h) in hs.iter().enumerate() {
            let n = n + 1;
            assert_eq!(h["name"], format!("h{n}"), "{hs:?}");
            assert_eq!(h["labels"]["zone"], format!("z{n}"), "{hs:?}");
            assert_eq!(h["address"], format!("198.18.0.1{n}"), "{hs:?}");
        }
    }

    // c) a CI key trusted on h2 admits, on h3, what it signed; the fleet's
    // policy set on h1 applies on h2.
    let dir = f.hosts[1].env.dir.path().to_path_buf();
    let ci = dir.join("ci");
    f.ok(1, &["key", "generate", ci.to_str().unwrap()]);
    let def = app_def(f.hosts[2].env.dir.path(), "1");
    let digest = common::last_line(&f.ok(2, &["build", "-f", def.to_str().unwrap()]));
    let ci_key = ci.with_extension("key");
    f.ok(2, &["sign", "app:1", "--key", ci_key.to_str().unwrap()]);
    refused(
        &f.run(2, &["policy", "check", "app:1"]),
        "require_signature",
    );
    f.ok(
        1,
        &[
            "policy",
            "trust",
            ci.with_extension("pub").to_str().unwrap(),
            "--name",
            "ci",
        ],
    );
    f.ok(2, &["policy", "check", "app:1"]);
    let policy = dir.join("fleet-policy.toml");
    common::write(&policy, b"require_provenance = false\n", 0o644);
    f.ok(0, &["policy", "set", policy.to_str().unwrap()]);
    let shown = f.ok(1, &["policy", "show"]);
    assert!(
        shown.contains("the fleet's policy in the state database")
            && shown.contains("require_provenance = false"),
        "{shown}"
    );

    // b) revoked on h1: refused on h3 at once, by `policy check` and by
    // `apply` (which would roll it out), with nothing to wait for: every
    // host's admission reads the revocations from the shared database at
    // each start, and serve's reconcilers are woken by its notification.
    let fleet_file = f.hosts[2].env.dir.path().join("fleet.toml");
    common::write(
        &fleet_file,
        format!("[service.app]\nimage = \"{digest}\"\nmin_healthy = \"0s\"\nreplicas = 1\n")
            .as_bytes(),
        0o644,
    );
    f.ok(0, &["revoke", &digest, "--reason", "CVE-2026-0001"]);
    refused(&f.run(2, &["policy", "check", "app:1"]), "revoked");
    refused(
        &f.run(2, &["apply", "-f", fleet_file.to_str().unwrap()]),
        "revoked",
    );
    let refusals = f.items(2, &["audit", "--action", "policy.refuse"]);
    assert!(
        refusals.iter().any(|e| e["details"]["rule"] == "revoked"),
        "{refusals:?}"
    );

    // e) h2 killed whole: h1 lists it down within the bound; restarted, it
    // fences itself before anything else and is up again.
    let killed = f.net.kill_host("h2");
    assert!(!killed.is_empty());
    f.hosts[1].serve.take().map(|mut c| c.wait());
    let since = Instant::now();
    assert!(
        eventually(DOWN_BOUND, || f.state_of(0, "h2").as_deref()
            == Some("down")),
        "h2 not down within {DOWN_BOUND:?}:\n{}",
        f.log(0)
    );
    eprintln!("h2 seen down {:?} after it was killed", since.elapsed());
    f.start(1);
    assert!(
        eventually(Duration::from_secs(20), || f.state_of(0, "h2").as_deref()
            == Some("up")),
        "h2 not up again:\n{}",
        f.log(1)
    );
    let fenced = f.items(0, &["audit", "--action", "host.fenced"]);
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    let all = f.items(0, &["audit"]);
    let after_down = all
        .iter()
        .skip_while(|e| e["action"] != "host.down")
        .filter(|e| e["action"] != "host.join")
        .find(|e| e["keyid"] == fenced[0]["keyid"]);
    assert_eq!(
        after_down.map(|e| e["action"].clone()),
        Some(Value::from("host.fenced")),
        "h2's first entry after it was marked down (but its join) is host.fenced"
    );

    // f) an instance made on h1, traced from h3: the database's side of
    // the chain (instance, host, release or image, revocation) is traced
    // there; its config and root are h1's, and the image, which h3's store
    // does not hold, is said to be missing with how to fetch it.
    if common::require("busybox") {
        common::web_image(
            &f.hosts[0].env,
            "1",
            "version one\n",
            "/",
            common::WEB_SERVER,
        );
        // From the root namespace: `ip netns exec` mounts a sysfs of its
        // own, without the cgroup tree the runtime needs. The instance is
        // h1's all the same (its store joined as h1).
        let id = common::last_line(&f.hosts[0].env.ok(&["run", "web:1"]));
        f.instances.push(id.clone());
        let out = f.run(2, &["trace", &id]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&id) && text.contains("h1"), "{}", show(&out));
        assert!(text.contains("on host h1"), "{}", show(&out));
        assert!(text.contains("not in this host's store"), "{}", show(&out));
        let here = f.run(0, &["trace", &id]);
        assert!(
            !String::from_utf8_lossy(&here.stdout).contains("on host h1"),
            "{}",
            show(&here)
        );
        f.hosts[0].env.ok(&["stop", &id]);
        f.instances.clear();
    }

    // d) `audit verify` on h3 checks the whole fleet's ledger: entries
    // signed by three host keys.
    let verified = f.ok(2, &["audit", "verify"]);
    assert!(verified.contains("ledger valid"), "{verified}");
    let signers: std::collections::BTreeSet<String> = f
        .items(2, &["audit"])
        .iter()
        .filter_map(|e| e["keyid"].as_str().map(str::to_string))
        .collect();
    assert_eq!(signers.len(), 3, "{signers:?}");
    eprintln!("fleet_net took {:?}", t0.elapsed());
}
