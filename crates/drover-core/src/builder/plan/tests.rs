use std::collections::BTreeMap;

use super::*;
use crate::builder::BuildOptions;
use crate::builder::def::parse;
use crate::health::{HealthCheck, Probe};

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
/// A definition file that does not exist: planning reads nothing.
const FILE: &str = "/nonexistent/app/drover.toml";
const EPOCH_0: &str = "1970-01-01T00:00:00.000Z";

fn def(text: &str) -> ImageDef {
    parse(text, Path::new(FILE)).unwrap_or_else(|e| panic!("{e}"))
}

fn host() -> Host<'static> {
    Host {
        definition: Path::new("/real/app/drover.toml"),
        arch: "arm64",
        cpus: 6,
    }
}

fn plan_of<'a>(def: &'a ImageDef, opts: &BuildOptions) -> Plan<'a> {
    plan(def, opts, &host()).unwrap_or_else(|e| panic!("{e}"))
}

fn history(created: &str, source: &str) -> oci::History {
    oci::History {
        created: Some(created.into()),
        created_by: Some(format!("drover build: {source}")),
        comment: None,
        empty_layer: false,
    }
}

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

#[test]
fn a_bare_definition_plans_an_empty_scratch_image_with_the_defaults() {
    let d = def("[image]\nname = \"app\"\n");
    assert_eq!(
        plan_of(&d, &BuildOptions::default()),
        Plan {
            tag: "app:latest".into(),
            epoch: 0,
            created: EPOCH_0.into(),
            settings: Settings {
                mtime: 0,
                compression: Compression::Gzip,
                level: 1,
                threads: 6,
                use_cache: true,
            },
            definition: "/real/app/drover.toml".into(),
            base: BaseStep::Scratch {
                architecture: "arm64".into()
            },
            layers: Vec::new(),
            generated: None,
            runtime: &d.config,
        }
    );
}

/// The generated layer goes after every layer of the definition (the one
/// decision of its place), names what it holds, and has its own cache
/// slot; its history entry comes where its diff id does.
#[test]
fn accounts_and_tmpfs_mount_points_plan_one_generated_layer_last() {
    let d = def("[image]\nname = \"app\"\n\
         [[layer]]\nkind = \"file\"\ndest = \"/a\"\ncontent = \"\"\n\
         [[layer]]\nkind = \"file\"\ndest = \"/b\"\ncontent = \"\"\n\
         [[account]]\nname = \"app\"\nuid = 10001\n\
         [[account]]\nname = \"web\"\nuid = 10002\n\
         [config]\ntmpfs = [\"/var/lib/x\", \"/run/x\"]\n");
    let p = plan_of(&d, &BuildOptions::default());
    let g = p.generated.as_ref().unwrap();
    assert_eq!(g.after, 2);
    assert_eq!(g.source, "accounts app, web; tmpfs mount points /var/lib/x");
    assert_eq!(g.slot, "/real/app/drover.toml#accounts");
    let created_by: Vec<_> = p
        .histories()
        .iter()
        .map(|h| h.created_by.clone().unwrap())
        .collect();
    assert_eq!(
        created_by,
        [
            "drover build: file /a",
            "drover build: file /b",
            "drover build: accounts app, web; tmpfs mount points /var/lib/x"
        ]
    );
    // Only paths inside /tmp or /run: nothing to make, no layer.
    let d = def("[image]\nname = \"app\"\n[config]\ntmpfs = [\"/run/x\"]\n");
    assert_eq!(plan_of(&d, &BuildOptions::default()).generated, None);
}

#[test]
fn every_layer_becomes_a_step_in_order_with_its_slot_name_and_history() {
    let d = def(r#"
[image]
name = "web"
tag = "2.1"
[[layer]]
kind = "copy"
src = "rootfs"
dest = "/"
[[layer]]
kind = "file"
dest = "/etc/motd"
content = "hi\n"
[[layer]]
kind = "copy"
src = "."
dest = "/srv/www/"
exclude = ["*.tmp"]
[[layer]]
kind = "file"
dest = "/etc/motd"
content = "again\n"
"#);
    let p = plan_of(&d, &BuildOptions::default());
    assert_eq!(p.tag, "web:2.1");
    let expected = [
        ("copy rootfs -> /", "/real/app/drover.toml#0"),
        ("file /etc/motd", "/real/app/drover.toml#1"),
        ("copy . -> /srv/www", "/real/app/drover.toml#2"),
        // The same destination twice: two slots, each with its own cache.
        ("file /etc/motd", "/real/app/drover.toml#3"),
    ];
    assert_eq!(p.layers.len(), expected.len());
    for (i, (step, (source, slot))) in p.layers.iter().zip(expected).enumerate() {
        assert!(
            std::ptr::eq(step.def, &d.layers[i]),
            "step {i} is layer {i}"
        );
        assert_eq!(step.source, source);
        assert_eq!(step.slot, slot);
        assert_eq!(step.history, history(EPOCH_0, source));
    }
}

#[test]
fn slots_name_the_definition_as_the_host_resolved_it() {
    let d =
        def("[image]\nname = \"a\"\n[[layer]]\nkind = \"file\"\ndest = \"/f\"\ncontent = \"\"\n");
    let h = Host {
        definition: Path::new("drover.toml"),
        ..host()
    };
    let p = plan(&d, &BuildOptions::default(), &h).unwrap();
    assert_eq!(p.layers[0].slot, "drover.toml#0");
    assert_eq!(p.definition, Path::new("drover.toml"));
}

#[test]
fn bases_from_the_store_and_from_a_layout_are_image_steps() {
    let d = def(&format!(
        "[image]\nname = \"a\"\nbase = {{ image = \"{D1}\" }}\n"
    ));
    assert_eq!(
        plan_of(&d, &BuildOptions::default()).base,
        BaseStep::Image {
            digest: digest('1'),
            layout: None
        }
    );
    let d = def(&format!(
        "[image]\nname = \"a\"\nbase = {{ layout = \"../base-oci\", digest = \"{D1}\" }}\n"
    ));
    assert_eq!(
        plan_of(&d, &BuildOptions::default()).base,
        BaseStep::Image {
            digest: digest('1'),
            layout: Some(Path::new("/nonexistent/app/../base-oci"))
        }
    );
}

#[test]
fn options_override_tag_epoch_threads_and_cache_use() {
    let d = def(
        "[image]\nname = \"app\"\ntag = \"1\"\n[[layer]]\nkind = \"file\"\ndest = \"/f\"\ncontent = \"x\"\n",
    );
    let opts = BuildOptions {
        tag: Some("other:9".into()),
        source_date_epoch: Some(1_700_000_000),
        threads: Some(1),
        no_cache: true,
        ..Default::default()
    };
    let p = plan_of(&d, &opts);
    assert_eq!(p.tag, "other:9");
    assert_eq!(p.epoch, 1_700_000_000);
    assert_eq!(p.created, "2023-11-14T22:13:20.000Z");
    assert_eq!(
        p.settings,
        Settings {
            mtime: 1_700_000_000,
            compression: Compression::Gzip,
            level: 1,
            threads: 1,
            use_cache: false,
        }
    );
    assert_eq!(
        p.layers[0].history,
        history("2023-11-14T22:13:20.000Z", "file /f")
    );
}

#[test]
fn a_tag_without_a_version_means_latest_even_behind_a_registry_port() {
    let d = def("[image]\nname = \"app\"\n");
    for (given, tag) in [
        ("app", "app:latest"),
        ("team/app", "team/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost:5000/app:v2", "localhost:5000/app:v2"),
    ] {
        let opts = BuildOptions {
            tag: Some(given.into()),
            ..Default::default()
        };
        assert_eq!(plan_of(&d, &opts).tag, tag, "{given}");
    }
}

/// (definition's compression and level, options' compression and level)
/// → the compression and level the layers get.
#[test]
fn compression_and_level_come_from_options_then_definition_then_defaults() {
    use Compression::{Gzip, Zstd};
    type Pair = (Option<Compression>, Option<u32>);
    let cases: [(Pair, Pair, (Compression, u32)); 12] = [
        ((None, None), (None, None), (Gzip, 1)),
        ((None, None), (Some(Zstd), None), (Zstd, 3)),
        ((None, None), (None, Some(9)), (Gzip, 9)),
        ((Some(Zstd), None), (None, None), (Zstd, 3)),
        ((Some(Zstd), Some(7)), (None, None), (Zstd, 7)),
        ((Some(Zstd), Some(7)), (None, Some(12)), (Zstd, 12)),
        // Naming the same compression keeps the definition's level...
        ((Some(Zstd), Some(7)), (Some(Zstd), None), (Zstd, 7)),
        // ...another one starts from its own default, not from 7.
        ((Some(Zstd), Some(7)), (Some(Gzip), None), (Gzip, 1)),
        ((Some(Gzip), Some(9)), (Some(Zstd), None), (Zstd, 3)),
        ((Some(Gzip), Some(9)), (Some(Zstd), Some(19)), (Zstd, 19)),
        // A level without a compression belongs to the default, gzip.
        ((None, Some(5)), (None, None), (Gzip, 5)),
        ((None, Some(5)), (Some(Zstd), None), (Zstd, 3)),
    ];
    for ((dc, dl), (oc, ol), want) in cases {
        let d = ImageDef {
            compression: dc,
            compression_level: dl,
            ..def("[image]\nname = \"a\"\n")
        };
        let opts = BuildOptions {
            compression: oc,
            compression_level: ol,
            ..Default::default()
        };
        let s = plan_of(&d, &opts).settings;
        assert_eq!(
            (s.compression, s.level),
            want,
            "definition {dc:?} {dl:?}, options {oc:?} {ol:?}"
        );
    }
}

#[test]
fn a_level_outside_the_compressions_range_is_a_usage_error() {
    use Compression::{Gzip, Zstd};
    for (dc, oc, ol, msg) in [
        (None, None, 0, "0 is not a gzip level (expected 1 to 9)"),
        (None, None, 10, "10 is not a gzip level (expected 1 to 9)"),
        (
            None,
            Some(Gzip),
            19,
            "19 is not a gzip level (expected 1 to 9)",
        ),
        (
            None,
            Some(Zstd),
            20,
            "20 is not a zstd level (expected 1 to 19)",
        ),
        (
            Some(Zstd),
            None,
            0,
            "0 is not a zstd level (expected 1 to 19)",
        ),
    ] {
        let d = ImageDef {
            compression: dc,
            ..def(&format!(
                "[image]\nname = \"a\"\nbase = {{ image = \"{D1}\" }}\n"
            ))
        };
        let opts = BuildOptions {
            compression: oc,
            compression_level: Some(ol),
            ..Default::default()
        };
        match plan(&d, &opts, &host()) {
            Err(Error::Usage(m)) => assert_eq!(m, msg),
            other => panic!("{dc:?} {oc:?} {ol}: {other:?}"),
        }
    }
}

#[test]
fn the_definitions_own_level_is_checked_too() {
    // A definition the parser would refuse, made in code.
    let d = ImageDef {
        compression: Some(Compression::Gzip),
        compression_level: Some(12),
        ..def("[image]\nname = \"a\"\n")
    };
    assert!(matches!(
        plan(&d, &BuildOptions::default(), &host()),
        Err(Error::Usage(m)) if m == "12 is not a gzip level (expected 1 to 9)"
    ));
    // Unless the command line picks another compression.
    let opts = BuildOptions {
        compression: Some(Compression::Zstd),
        ..Default::default()
    };
    assert_eq!(plan_of(&d, &opts).settings.level, 3);
}

#[test]
fn planning_twice_gives_the_same_plan() {
    let d = def(&format!(
        "[image]\nname = \"a\"\nbase = {{ image = \"{D1}\" }}\n[[layer]]\nkind = \"copy\"\nsrc = \"x\"\ndest = \"/x\"\n"
    ));
    let opts = BuildOptions {
        source_date_epoch: Some(5),
        ..Default::default()
    };
    assert_eq!(plan_of(&d, &opts), plan_of(&d, &opts));
}

fn base_config() -> ImageConfig {
    let mut c = scratch_config("amd64");
    c.rootfs.diff_ids.push(digest('1'));
    c.history.push(oci::History {
        created_by: Some("base".into()),
        ..Default::default()
    });
    c.created = Some("2001-01-01T00:00:00Z".into());
    c.config = oci::ContainerConfig {
        user: Some("0".into()),
        env: vec!["PATH=/usr/bin".into(), "A=old".into(), "LANG=C".into()],
        entrypoint: Some(vec!["/base".into()]),
        cmd: Some(vec!["--base".into()]),
        working_dir: Some("/".into()),
        labels: BTreeMap::from([("keep".into(), "1".into()), ("x".into(), "old".into())]),
        stop_signal: Some("SIGTERM".into()),
        exposed_ports: BTreeMap::from([("80/tcp".into(), serde_json::Map::new())]),
    };
    c
}

#[test]
fn scratch_config_names_only_the_platform() {
    let c = scratch_config("arm64");
    assert_eq!((c.architecture.as_str(), c.os.as_str()), ("arm64", "linux"));
    assert_eq!(c.rootfs.kind, "layers");
    assert!(c.rootfs.diff_ids.is_empty() && c.history.is_empty() && c.created.is_none());
    assert_eq!(c.config, oci::ContainerConfig::default());
}

#[test]
fn the_config_appends_the_built_layers_after_the_bases_and_changes_nothing_unsaid() {
    let d = def(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"file\"\ndest = \"/a\"\ncontent = \"\"\n[[layer]]\nkind = \"file\"\ndest = \"/b\"\ncontent = \"\"\n",
    );
    let p = plan_of(&d, &BuildOptions::default());
    let c = p
        .config(base_config(), &[digest('2'), digest('3')])
        .unwrap();
    let mut want = base_config();
    want.rootfs.diff_ids.extend([digest('2'), digest('3')]);
    want.history.push(history(EPOCH_0, "file /a"));
    want.history.push(history(EPOCH_0, "file /b"));
    // The build's timestamp replaces the base's.
    want.created = Some(EPOCH_0.into());
    assert_eq!(c, want);
}

#[test]
fn the_runtime_config_overrides_and_merges_into_the_bases() {
    let d = def(r#"
[image]
name = "a"
[config]
entrypoint = ["/app"]
env = { A = "new", B = "2" }
workdir = "/srv"
user = "65534:65534"
ports = ["8080/tcp", 53]
labels = { x = "new", y = "2" }
stop_signal = "SIGINT"
[config.health]
kind = "tcp"
interval = "5s"
"#);
    let p = plan_of(&d, &BuildOptions::default());
    let c = p.config(base_config(), &[]).unwrap().config;
    assert_eq!(c.entrypoint, Some(vec!["/app".to_string()]));
    // As with Docker: a new entrypoint drops the base's cmd.
    assert_eq!(c.cmd, None);
    // A redefined variable moves to the end; the others keep their place.
    assert_eq!(c.env, ["PATH=/usr/bin", "LANG=C", "A=new", "B=2"]);
    assert_eq!(c.working_dir.as_deref(), Some("/srv"));
    assert_eq!(c.user.as_deref(), Some("65534:65534"));
    assert_eq!(
        c.exposed_ports.keys().collect::<Vec<_>>(),
        ["53/tcp", "80/tcp", "8080/tcp"]
    );
    assert_eq!(c.stop_signal.as_deref(), Some("SIGINT"));
    let health: HealthCheck = serde_json::from_str(&c.labels[HEALTH_LABEL]).unwrap();
    assert_eq!(health.probe, Probe::Tcp { port: None });
    assert_eq!(health.interval_ms, 5000);
    assert_eq!(
        c.labels
            .iter()
            .filter(|(k, _)| *k != HEALTH_LABEL)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        [("keep", "1"), ("x", "new"), ("y", "2")]
    );
}

#[test]
fn a_cmd_is_kept_beside_a_new_entrypoint_and_alone_replaces_the_bases() {
    let run = |text: &str| {
        let d = def(text);
        let c = plan_of(&d, &BuildOptions::default())
            .config(base_config(), &[])
            .unwrap()
            .config;
        (c.entrypoint.unwrap(), c.cmd.unwrap())
    };
    assert_eq!(
        run("[image]\nname = \"a\"\n[config]\nentrypoint = [\"/app\"]\ncmd = [\"-v\"]\n"),
        (vec!["/app".to_string()], vec!["-v".to_string()])
    );
    assert_eq!(
        run("[image]\nname = \"a\"\n[config]\ncmd = [\"-v\"]\n"),
        (vec!["/base".to_string()], vec!["-v".to_string()])
    );
}
