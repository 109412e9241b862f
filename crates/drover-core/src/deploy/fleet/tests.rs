use super::*;
use crate::deploy::spec::ReleaseConfig;
use crate::error::Error;

fn ok(text: &str) -> Vec<ServiceSpec> {
    parse(text, Path::new("fleet.toml")).unwrap()
}

fn fails(text: &str, line: usize, key: &str, says: &str) {
    match parse(text, Path::new("fleet.toml")) {
        Err(Error::Definition {
            file,
            line: l,
            key: k,
            message,
            ..
        }) => {
            assert_eq!(file, Path::new("fleet.toml"));
            assert_eq!(l, line, "{message}");
            assert_eq!(k.as_deref(), Some(key), "{message}");
            assert!(message.contains(says), "{message:?} lacks {says:?}");
        }
        other => panic!("expected a definition error, got {other:?}"),
    }
}

#[test]
fn a_full_service_parses() {
    let f = ok(r#"
[service.web]
image = "web:1.0"
replicas = 3
strategy = "rolling"
max_surge = 2
max_unavailable = 1
env = { MODE = "prod" }
ports = [8080]
volumes = ["data-{replica}:/var/lib/web", "cfg:/etc/web:ro"]
memory = "256m"
cpus = 0.5
pids = 100
cap_add = ["net_bind_service"]
userns = false
userns_reason = "binds port 80 on the host"
driver = "runc"

[service.web.health]
kind = "http"
path = "/healthz"
interval = "1s"
timeout = "1s"
deadline = "30s"

[service.api]
image = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
strategy = "blue-green"
"#);
    assert_eq!(f.len(), 2);
    assert_eq!(f[0].name, "api");
    assert_eq!((f[0].replicas, f[0].strategy), (1, Strategy::BlueGreen));
    assert_eq!(f[0].deadline_ms, DEFAULT_DEADLINE_MS);
    let w = &f[1];
    assert_eq!(
        w.strategy,
        Strategy::Rolling {
            max_surge: 2,
            max_unavailable: 1
        }
    );
    assert_eq!(w.env["MODE"], "prod");
    assert_eq!(w.ports, [8080]);
    assert!(w.volumes[0].is_per_replica() && w.volumes[1].read_only);
    assert_eq!(w.limits.memory_bytes, Some(256 << 20));
    assert_eq!(w.limits.millicpus, Some(500));
    assert_eq!(w.limits.pids, Some(100));
    assert_eq!(w.cap_add, ["CAP_NET_BIND_SERVICE"]);
    assert_eq!(w.driver, DriverKind::Runc);
    assert_eq!(w.deadline_ms, 30_000);
    assert_eq!(w.health.as_ref().unwrap().interval_ms, 1000);
}

#[test]
fn registry_images_are_pinned_by_digest() {
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let f = ok(&format!(
        "[service.web]\nimage = \"127.0.0.1:5000/team/web@{d}\"\ninsecure_registry = true\n"
    ));
    let r = f[0].registry.as_ref().unwrap();
    assert_eq!(
        (r.registry.as_str(), r.repository.as_str()),
        ("127.0.0.1:5000", "team/web")
    );
    assert_eq!(r.digest.unwrap().to_string(), d);
    assert!(f[0].insecure_registry);
    // A local tag with a slash is not a registry.
    assert_eq!(
        ok("[service.web]\nimage = \"team/web:1\"\n")[0].registry,
        None
    );
    fails(
        "[service.web]\nimage = \"r.example.com/web:1.0\"\n",
        2,
        "service.web.image",
        "deploys pin registry images by digest",
    );
    fails(
        &format!("[service.web]\nimage = \"r.example.com/web@{d}\"\ninsecure_registry = true\n"),
        3,
        "service.web.insecure_registry",
        "loopback",
    );
    fails(
        "[service.web]\nimage = \"web:1\"\ninsecure_registry = true\n",
        3,
        "service.web.insecure_registry",
        "only for a registry image",
    );
}

#[test]
fn errors_name_line_and_key() {
    fails(
        "[service.web]\nimage = \"w\"\nreplicas = \"3\"\n",
        3,
        "service.web.replicas",
        "expected an integer",
    );
    fails(
        "[service.web]\nreplicas = 3\n",
        1,
        "service.web.image",
        "missing",
    );
    fails(
        "[service.web]\nimage = \"w\"\nreplica = 3\n",
        3,
        "service.web.replica",
        "unknown key",
    );
    fails(
        "[service.web]\nimage = \"w\"\nstrategy = \"canary\"\n",
        3,
        "service.web.strategy",
        "unknown strategy",
    );
    fails(
        "[service.web]\nimage = \"w\"\nmax_surge = 0\nmax_unavailable = 0\n",
        3,
        "service.web.max_surge",
        "both 0",
    );
    fails(
        "[service.web]\nimage = \"w\"\nstrategy = \"recreate\"\nmax_surge = 1\n",
        4,
        "service.web.max_surge",
        "only a \"rolling\"",
    );
    fails(
        "[service.web]\nimage = \"w\"\nvolumes = [\"x\"]\n",
        3,
        "service.web.volumes[0]",
        "no target",
    );
    fails(
        "[service.web]\nimage = \"w\"\ncap_add = [\"FLY\"]\n",
        3,
        "service.web.cap_add[0]",
        "unknown capability",
    );
    fails(
        "[service.web]\nimage = \"w\"\nenv = { PORT = \"1\" }\n",
        3,
        "service.web.env.PORT",
        "set by drover",
    );
    fails(
        "[service.web]\nimage = \"w\"\nmemory = \"lots\"\n",
        3,
        "service.web.memory",
        "not a size",
    );
    fails(
        "[service.web]\nimage = \"w\"\ncpus = 0\n",
        3,
        "service.web.cpus",
        "not a CPU limit",
    );
    fails(
        "[service.web]\nimage = \"w\"\ndriver = \"docker\"\n",
        3,
        "service.web.driver",
        "unknown driver",
    );
    fails(
        "[service.web]\nimage = \"w\"\n[service.web.health]\nkind = \"tcp\"\ndeadline = \"0s\"\n",
        5,
        "service.web.health.deadline",
        "",
    );
    fails(
        "[service.\"we b\"]\nimage = \"w\"\n",
        1,
        "service.\"we b\"",
        "a service name",
    );
    fails(
        "[services.web]\nimage = \"w\"\n",
        1,
        "services",
        "unknown key",
    );
}

#[test]
fn init_is_a_boolean_and_unset_by_default() {
    let base = "[service.web]\nimage = \"web:1\"\n";
    assert_eq!(ok(base)[0].init, None);
    assert_eq!(ok(&format!("{base}init = true\n"))[0].init, Some(true));
    assert_eq!(ok(&format!("{base}init = false\n"))[0].init, Some(false));
    fails(
        &format!("{base}init = \"yes\"\n"),
        3,
        "service.web.init",
        "",
    );
}

#[test]
fn a_user_namespace_is_turned_off_only_with_a_reason() {
    let base = "[service.web]\nimage = \"web:1\"\n";
    assert_eq!(ok(base)[0].userns_opt_out, None);
    let f = ok(&format!(
        "{base}userns = false\nuserns_reason = \"binds port 80\"\n"
    ));
    assert_eq!(f[0].userns_opt_out.as_deref(), Some("binds port 80"));
    fails(
        &format!("{base}userns = false\n"),
        3,
        "service.web.userns",
        "userns_reason",
    );
    fails(
        &format!("{base}userns = false\nuserns_reason = \" \"\n"),
        4,
        "service.web.userns_reason",
        "say why",
    );
    fails(
        &format!("{base}userns_reason = \"x\"\n"),
        3,
        "service.web.userns_reason",
        "only with userns = false",
    );
    fails(
        &format!("{base}cap_add = [\"NET_BIND_SERVICE\"]\n"),
        3,
        "service.web.cap_add",
        "user namespace",
    );
}

#[test]
fn a_services_tmpfs_paths_parse_and_bad_ones_are_located() {
    use crate::runtime::tmpfs::{DEFAULT_BYTES, Tmpfs};
    let f = ok("[service.web]\nimage = \"web:1\"\n\
         tmpfs = [\"/var/log/web\", { path = \"/var/cache/web\", size = \"16m\" }]\n");
    assert_eq!(
        f[0].tmpfs,
        [
            Tmpfs {
                path: "/var/cache/web".into(),
                size: 16 << 20
            },
            Tmpfs {
                path: "/var/log/web".into(),
                size: DEFAULT_BYTES
            },
        ]
    );
    assert!(ok("[service.web]\nimage = \"web:1\"\n")[0].tmpfs.is_empty());
    fails(
        "[service.web]\nimage = \"web:1\"\ntmpfs = [\"/dev/x\"]\n",
        3,
        "service.web.tmpfs[0]",
        "kernel filesystem",
    );
    fails(
        "[service.web]\nimage = \"web:1\"\ntmpfs = [\"/a\", \"/a\"]\n",
        3,
        "service.web.tmpfs[1]",
        "listed twice",
    );
}

#[test]
fn volumes_are_strings_or_tables_and_keep_their_canonical_form() {
    let f = ok(r#"
[service.db]
image = "db:1"
replicas = 3
volumes = [
  "data-{replica}:/data",
  "cfg:/etc/db:ro",
  { name = "cache", target = "/cache", shared = true },
  { name = "seed", target = "/seed", read_only = true },
  "spool:/spool:shared",
]
"#);
    let v: Vec<String> = f[0].volumes.iter().map(VolumeSpec::canonical).collect();
    assert_eq!(
        v,
        [
            "data-{replica}:/data",
            "cfg:/etc/db:ro",
            "cache:/cache:shared",
            "seed:/seed:ro",
            "spool:/spool:shared"
        ]
    );
    // One replica may own a plain read-write volume; so may a recreate.
    ok("[service.a]\nimage = \"a\"\nvolumes = [\"data:/data\"]\n");
    ok("[service.a]\nimage = \"a\"\nstrategy = \"recreate\"\nvolumes = [\"data:/data\"]\n");
}

/// Regression (issue 18): two redis replicas on `cachedata:/data` each
/// loaded and appended to the same files.
#[test]
fn a_volume_with_one_writer_is_refused_where_two_would_write_it() {
    fails(
        "[service.cache]\nimage = \"redis:7\"\nreplicas = 2\nvolumes = [\"cachedata:/data\"]\n",
        4,
        "service.cache.volumes[0]",
        "service cache runs 2 replicas, and volume cachedata is read-write with one writer",
    );
    fails(
        "[service.cache]\nimage = \"redis:7\"\nreplicas = 2\nvolumes = [\"cachedata:/data\"]\n",
        4,
        "service.cache.volumes[0]",
        "\"cachedata-{replica}:/data\"",
    );
    fails(
        "[service.web]\nimage = \"w\"\nstrategy = \"blue-green\"\nvolumes = [\"d-{replica}:/d\"]\n",
        4,
        "service.web.volumes[0]",
        "blue-green starts a full new set",
    );
    fails(
        "[service.a]\nimage = \"a\"\nvolumes = [\"data:/data\"]\n\
         [service.b]\nimage = \"b\"\nvolumes = [\"cfg:/c:ro\", \"data:/d:shared\"]\n",
        6,
        "service.b.volumes[1]",
        "volume data is also mounted by service.a (volumes[0]) as read-write",
    );
    fails(
        "[service.a]\nimage = \"a\"\nvolumes = [\"d-{replica}:/data\"]\n\
         [service.b]\nimage = \"b\"\nvolumes = [\"d-{replica}:/data\"]\n",
        6,
        "service.b.volumes[0]",
        "service.a",
    );
    fails(
        "[service.a]\nimage = \"a\"\nvolumes = [{ name = \"d\", target = \"/d\", read_only = true, shared = true }]\n",
        3,
        "service.a.volumes[0].shared",
        "pick one",
    );
    fails(
        "[service.a]\nimage = \"a\"\nvolumes = [{ name = \"../d\", target = \"/d\" }]\n",
        3,
        "service.a.volumes[0].name",
        "not a name",
    );
    fails(
        "[service.a]\nimage = \"a\"\nvolumes = [{ name = \"d\" }]\n",
        3,
        "service.a.volumes[0].target",
        "missing required key",
    );
    fails(
        "[service.a]\nimage = \"a\"\nvolumes = [{ name = \"d\", target = \"/d\", mode = \"rw\" }]\n",
        3,
        "service.a.volumes[0].mode",
        "unknown key",
    );
    fails(
        "[service.a]\nimage = \"a\"\nvolumes = [3]\n",
        3,
        "service.a.volumes[0]",
        "\"name:/path\" or a table",
    );
    // Readers never conflict; shared writers only with an exclusive one.
    ok(
        "[service.a]\nimage = \"a\"\nreplicas = 2\nvolumes = [\"d:/d:shared\", \"c:/c:ro\"]\n\
        [service.b]\nimage = \"b\"\nvolumes = [\"d:/d:shared\", \"c:/c\"]\n\
        [service.c]\nimage = \"c\"\nstrategy = \"blue-green\"\nvolumes = [\"d:/d:shared\"]\n",
    );
}

/// A release config without tmpfs paths serializes as before, so the
/// config digests of existing releases do not change.
#[test]
fn a_release_config_without_tmpfs_keeps_its_digest() {
    let c = ReleaseConfig {
        env: Default::default(),
        secret_env: vec![],
        volumes: vec![],
        tmpfs: vec![],
        limits: Default::default(),
        cap_add: vec![],
        health: None,
        deadline_ms: 1,
        driver: DriverKind::Embedded,
        userns_opt_out: None,
        init: None,
        logs: Default::default(),
    };
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("tmpfs"), "{json}");
    // Nor without `init` (issue 19): the key is absent unless the fleet says.
    assert!(!json.contains("init"), "{json}");
    let mut with = c.clone();
    with.init = Some(false);
    assert_ne!(with.digest(), c.digest());
    let mut with = c.clone();
    with.tmpfs = vec![crate::runtime::tmpfs::Tmpfs {
        path: "/a".into(),
        size: 1,
    }];
    assert_ne!(with.digest(), c.digest());
}

#[test]
fn the_stability_window_and_crash_loop_rollback_parse() {
    let f = ok(
        "[service.a]\nimage = \"a:1\"\n\n[service.b]\nimage = \"b:1\"\nmin_healthy = \"2s\"\n\
                crash_loop = { restarts = 5, within = \"10m\" }\n\n\
                [service.c]\nimage = \"c:1\"\nmin_healthy = \"0s\"\ncrash_loop = false\n",
    );
    assert_eq!(f[0].min_healthy_ms, DEFAULT_MIN_HEALTHY_MS);
    assert_eq!(f[0].crash_loop, CrashLoop::default());
    assert_eq!(
        (f[0].crash_loop.restarts, f[0].crash_loop.within_ms),
        (3, 300_000)
    );
    assert_eq!(f[1].min_healthy_ms, 2_000);
    assert_eq!(
        f[1].crash_loop,
        CrashLoop {
            restarts: 5,
            within_ms: 600_000
        }
    );
    assert_eq!(f[2].min_healthy_ms, 0);
    assert!(!f[2].crash_loop.enabled());

    let svc = "[service.web]\nimage = \"w:1\"\n";
    fails(
        &format!("{svc}min_healthy = \"2h\"\n"),
        3,
        "service.web.min_healthy",
        "at most \"1h\"",
    );
    fails(
        &format!("{svc}min_healthy = 10\n"),
        3,
        "service.web.min_healthy",
        "add a unit",
    );
    fails(
        &format!("{svc}crash_loop = \"often\"\n"),
        3,
        "service.web.crash_loop",
        "or false",
    );
    fails(
        &format!("{svc}crash_loop = {{ restarts = 0 }}\n"),
        3,
        "service.web.crash_loop.restarts",
        "out of range",
    );
    fails(
        &format!("{svc}crash_loop = {{ within = \"100ms\" }}\n"),
        3,
        "service.web.crash_loop.within",
        "between",
    );
    fails(
        &format!("{svc}crash_loop = {{ times = 3 }}\n"),
        3,
        "service.web.crash_loop.times",
        "",
    );
}

/// `env = { A = "x", PASSWORD = { value = "…", secret = true } }`: both
/// become variables, and the secret one is named as such.
#[test]
fn env_values_may_be_marked_secret() {
    let f = parse(
        "[service.web]\nimage = \"w\"\nenv = { A = \"x\", PASSWORD = { value = \"hunter2\", secret = true }, B = { value = \"y\" } }\n",
        Path::new("fleet.toml"),
    )
    .unwrap();
    let w = &f[0];
    assert_eq!(w.env["A"], "x");
    assert_eq!(w.env["PASSWORD"], "hunter2");
    assert_eq!(w.env["B"], "y");
    assert_eq!(w.secret_env, ["PASSWORD"]);
    let e = parse(
        "[service.web]\nimage = \"w\"\nenv = { P = { secret = true } }\n",
        Path::new("fleet.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("service.web.env.P") && e.contains("value"),
        "{e}"
    );
    let e = parse(
        "[service.web]\nimage = \"w\"\nenv = { P = { value = \"1\", hidden = true } }\n",
        Path::new("fleet.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("hidden"), "{e}");
    let e = parse(
        "[service.web]\nimage = \"w\"\nenv = { P = 1 }\n",
        Path::new("fleet.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("quote it"), "{e}");
}

#[test]
fn logs_rotation_and_retention_are_read_and_checked() {
    let base = "[service.web]\nimage = \"web:1\"\n";
    assert!(ok(base)[0].logs.is_default());
    let l = ok(&format!(
        "{base}logs = {{ max_size = \"10m\", max_files = 5, keep = \"2d\", keep_instances = 3 }}\n"
    ))[0]
        .logs;
    assert_eq!(l.max_size, Some(10 << 20));
    assert_eq!(l.max_files, Some(5));
    assert_eq!(l.keep_ms, Some(2 * 86_400_000));
    assert_eq!(l.keep_instances, Some(3));
    for (bad, says) in [
        ("logs = { max_size = \"1k\" }", "service.web.logs.max_size"),
        ("logs = { max_size = \"ten\" }", "not a size"),
        ("logs = { max_files = 0 }", "service.web.logs.max_files"),
        ("logs = { max_files = 1000 }", "at most 100"),
        ("logs = { keep = \"forever\" }", "service.web.logs.keep"),
        ("logs = { rotate = true }", "rotate"),
        ("logs = \"10m\"", "a table"),
    ] {
        let e = crate::deploy::fleet::parse(&format!("{base}{bad}\n"), Path::new("fleet.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// `constraints` and `spread_by` (issue 22): host labels a service's
/// replicas need and spread over; rollout settings, not release content.
#[test]
fn placement_constraints_and_spread_parse_and_bad_ones_are_located() {
    let f = ok(r#"
[service.web]
image = "w:1"
constraints = { zone = ["eu-1b", "eu-1a"], disk = "ssd", "example.com/rack" = ["r1"] }
spread_by = "zone"

[service.x]
image = "x:1"
"#);
    let zone: std::collections::BTreeSet<String> = ["eu-1a".into(), "eu-1b".into()].into();
    assert_eq!(f[0].constraints["zone"], zone);
    assert_eq!(f[0].constraints["disk"], ["ssd".to_string()].into());
    assert_eq!(
        f[0].constraints["example.com/rack"],
        ["r1".to_string()].into()
    );
    assert_eq!(f[0].spread_by.as_deref(), Some("zone"));
    assert_eq!(f[0].rollout().constraints, f[0].constraints);
    assert_eq!(f[0].rollout().spread_by.as_deref(), Some("zone"));
    assert!(f[1].constraints.is_empty() && f[1].spread_by.is_none());
    // A value and a list of one are the same constraint.
    let one = ok("[service.w]\nimage = \"w\"\nconstraints = { disk = [\"ssd\"] }\n");
    assert_eq!(one[0].constraints["disk"], f[0].constraints["disk"]);

    // Recorded services from before have neither: they read as empty, and
    // an empty one writes nothing.
    let old: crate::deploy::spec::Rollout =
        serde_json::from_str(r#"{"replicas":1,"strategy":{"kind":"recreate"},"ports":[]}"#)
            .unwrap();
    assert!(old.constraints.is_empty() && old.spread_by.is_none());
    let json = serde_json::to_string(&f[1].rollout()).unwrap();
    assert!(
        !json.contains("constraints") && !json.contains("spread_by"),
        "{json}"
    );

    let svc = "[service.web]\nimage = \"w:1\"\n";
    fails(
        &format!("{svc}constraints = \"zone=a\"\n"),
        3,
        "service.web.constraints",
        "expected a table of host labels",
    );
    fails(
        &format!("{svc}constraints = {{ zone = [] }}\n"),
        3,
        "service.web.constraints.zone",
        "an empty list matches no host",
    );
    fails(
        &format!("{svc}constraints = {{ zone = [\"a\", \"b\", \"a\"] }}\n"),
        3,
        "service.web.constraints.zone[2]",
        "\"a\" is listed twice",
    );
    fails(
        &format!("{svc}constraints = {{ rack = 3 }}\n"),
        3,
        "service.web.constraints.rack",
        "found an integer (quote it)",
    );
    fails(
        &format!("{svc}constraints = {{ zone = [\"a\", 1] }}\n"),
        3,
        "service.web.constraints.zone[1]",
        "expected a label value",
    );
    fails(
        &format!("{svc}constraints = {{ \"zone=a\" = \"b\" }}\n"),
        3,
        "service.web.constraints.\"zone=a\"",
        "is not a host label name",
    );
    fails(
        &format!("{svc}constraints = {{ zone = \"eu 1\" }}\n"),
        3,
        "service.web.constraints.zone",
        "is not a host label value",
    );
    fails(
        &format!("{svc}\n[service.web.constraints]\nzone = {{ in = [\"a\"] }}\n"),
        5,
        "service.web.constraints.zone",
        "expected a label value",
    );
    fails(
        &format!("{svc}spread_by = [\"zone\"]\n"),
        3,
        "service.web.spread_by",
        "expected a string",
    );
    fails(
        &format!("{svc}spread_by = \"-zone\"\n"),
        3,
        "service.web.spread_by",
        "is not a host label name",
    );
}
