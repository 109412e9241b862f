use std::path::Path;

use super::parse::{normalize_absolute, normalize_relative};
use super::*;
use crate::error::Error;
use crate::runtime::tmpfs::Tmpfs;

const FILE: &str = "drover.toml";
const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn ok(text: &str) -> ImageDef {
    match parse(text, Path::new(FILE)) {
        Ok(def) => def,
        Err(e) => panic!("{e}"),
    }
}

/// Asserts that `text` fails at `line:column` on `key` with a message
/// containing `needle`, and returns the whole message.
#[track_caller]
fn fails(text: &str, line: usize, column: usize, key: Option<&str>, needle: &str) -> String {
    match parse(text, Path::new(FILE)) {
        Err(e @ Error::Definition { .. }) => {
            let shown = e.to_string();
            let Error::Definition {
                file,
                line: l,
                column: c,
                key: k,
                message,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(
                (l, c, k.as_deref()),
                (line, column, key),
                "position or key of: {shown}"
            );
            assert_eq!(file, Path::new(FILE));
            assert!(message.contains(needle), "{shown:?} lacks {needle:?}");
            assert_eq!(shown, format!("{FILE}:{line}:{column}: {message}"));
            message
        }
        other => panic!("expected a definition error, got {other:?}"),
    }
}

/// The ```toml block of this module's documentation.
fn documented_example() -> String {
    let source = include_str!("mod.rs");
    let mut lines = source.lines().skip_while(|l| *l != "//! ```toml").skip(1);
    let block: Vec<&str> = lines
        .by_ref()
        .take_while(|l| *l != "//! ```")
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect();
    assert!(block.len() > 40, "documented example not found");
    block.join("\n")
}

#[test]
fn documented_example_parses() {
    let def = parse(&documented_example(), Path::new("app/drover.toml")).unwrap();
    let expected = ImageDef {
        file: PathBuf::from("app/drover.toml"),
        context: PathBuf::from("app"),
        name: "hello".into(),
        tag: "1.0".into(),
        compression: Some(Compression::Zstd),
        compression_level: Some(3),
        base: Base::Scratch,
        layers: vec![
            LayerDef::Copy(CopyLayer {
                src: "rootfs".into(),
                dest: "/".into(),
                include: vec!["**".into()],
                exclude: vec!["**/*.tmp".into()],
                mode: Some(0o644),
                dir_mode: Some(0o755),
                owner: Some((1000, 1000)),
                xattrs: false,
            }),
            LayerDef::File(FileLayer {
                dest: "/etc/motd".into(),
                content: "hello\n".into(),
                mode: 0o644,
                owner: (0, 0),
            }),
            LayerDef::Packages(PackagesLayer {
                packages: vec!["nginx-light".into(), "ca-certificates=20230311".into()],
                suite: "bookworm".into(),
                components: vec!["main".into()],
                arch: Some("amd64".into()),
                repositories: vec![RepositoryDef {
                    url: "http://deb.debian.org/debian".into(),
                    keyring: Some("/usr/share/keyrings/debian-archive-keyring.gpg".into()),
                }],
                recommends: false,
                essential: false,
                scripts: false,
            }),
            LayerDef::Run(RunLayer {
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "echo hi > /etc/greeting".into(),
                ],
                mounts: vec![RunMount {
                    src: "app".into(),
                    dest: "/src".into(),
                }],
                network: false,
                timeout_ms: 600_000,
                env: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
                workdir: "/".into(),
                user: (0, 0),
            }),
        ],
        accounts: vec![Account {
            name: "app".into(),
            uid: 10001,
            gid: 10001,
            group: "app".into(),
            home: "/home/app".into(),
            shell: "/usr/sbin/nologin".into(),
            groups: vec!["adm".into()],
        }],
        config: RuntimeConfig {
            init: Some(true),
            tmpfs: vec![
                Tmpfs {
                    path: "/var/cache/app".into(),
                    size: 16 << 20,
                },
                Tmpfs {
                    path: "/var/lib/app".into(),
                    size: 64 << 20,
                },
            ],
            entrypoint: Some(vec!["/bin/httpd".into(), "-f".into()]),
            cmd: Some(vec!["-p".into(), "8080".into()]),
            env: BTreeMap::from([
                ("PATH".into(), "/bin".into()),
                ("GREETING".into(), "hi".into()),
            ]),
            workdir: Some("/www".into()),
            user: Some("1000:1000".into()),
            ports: vec!["8080/tcp".into(), "53/udp".into(), "9000/tcp".into()],
            labels: BTreeMap::from([(
                "org.opencontainers.image.source".into(),
                "https://example.com".into(),
            )]),
            stop_signal: Some("SIGTERM".into()),
            health: Some(HealthCheck {
                probe: Probe::Http {
                    port: Some(8080),
                    path: "/healthz".into(),
                },
                interval_ms: 5_000,
                timeout_ms: 2_000,
                retries: 3,
                start_period_ms: 0,
                deadline_ms: None,
            }),
        },
    };
    assert_eq!(def, expected);
}

#[test]
fn minimal_definition_gets_defaults() {
    let def = ok("[image]\nname = \"hello\"\n");
    assert_eq!(def.file, PathBuf::from(FILE));
    assert_eq!(def.context, PathBuf::from("."));
    assert_eq!(def.tag, "latest");
    assert_eq!(def.compression, None);
    assert_eq!(def.base, Base::Scratch);
    assert!(def.layers.is_empty());
    assert_eq!(def.config, RuntimeConfig::default());
}

#[test]
fn layers_and_health_get_defaults() {
    let def = ok(r#"[image]
name = "hello"
[[layer]]
kind = "copy"
src = "./rootfs/"
dest = "/srv//www/./"
[[layer]]
kind = "file"
dest = "/etc/motd"
content = ""
[config.health]
kind = "tcp"
port = 53
"#);
    assert_eq!(
        def.layers,
        vec![
            LayerDef::Copy(CopyLayer {
                src: "rootfs".into(),
                dest: "/srv/www".into(),
                include: vec!["**".into()],
                exclude: vec![],
                mode: None,
                dir_mode: None,
                owner: None,
                xattrs: false,
            }),
            LayerDef::File(FileLayer {
                dest: "/etc/motd".into(),
                content: String::new(),
                mode: 0o644,
                owner: (0, 0),
            }),
        ]
    );
    assert_eq!(
        def.config.health,
        Some(HealthCheck {
            probe: Probe::Tcp { port: Some(53) },
            interval_ms: 10_000,
            timeout_ms: 3_000,
            retries: 3,
            start_period_ms: 0,
            deadline_ms: None,
        })
    );
}

#[test]
fn bases_resolve_against_the_context() {
    let store = parse(
        &format!("[image]\nname = \"a\"\nbase = {{ image = \"{D1}\" }}\n"),
        Path::new("/defs/drover.toml"),
    )
    .unwrap();
    assert_eq!(store.base, Base::Store(D1.parse().unwrap()));

    let layout = parse(
        &format!(
            "[image]\nname = \"a\"\n[image.base]\nlayout = \"../base-oci\"\ndigest = \"{D1}\"\n"
        ),
        Path::new("/defs/drover.toml"),
    )
    .unwrap();
    assert_eq!(
        layout.base,
        Base::Layout {
            dir: PathBuf::from("/defs/../base-oci"),
            digest: D1.parse().unwrap(),
        }
    );
    assert_eq!(
        ok("[image]\nname = \"a\"\nbase = \"scratch\"\n").base,
        Base::Scratch
    );
}

#[test]
fn exec_probe_and_other_spellings() {
    let def = ok(r#"[image]
name = "team/web-app__x.y"
tag = "_v1.2-rc.3"
compression = "gzip"
[config]
entrypoint = []
stop_signal = 15
user = "nobody:nogroup"
ports = [80, "80/udp", "9/sctp"]
[config.health]
kind = "exec"
command = ["/bin/check", "--quick"]
interval = "1m30s"
timeout = "1m"
retries = 10
start_period = "500ms"
"#);
    assert_eq!(def.compression, Some(Compression::Gzip));
    assert_eq!(def.config.entrypoint, Some(vec![]));
    assert_eq!(def.config.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(def.config.ports, ["80/tcp", "80/udp", "9/sctp"]);
    assert_eq!(
        def.config.health,
        Some(HealthCheck {
            probe: Probe::Exec {
                command: vec!["/bin/check".into(), "--quick".into()],
            },
            interval_ms: 90_000,
            timeout_ms: 60_000,
            retries: 10,
            start_period_ms: 500,
            deadline_ms: None,
        })
    );
}

#[test]
fn dotted_and_implicit_tables_parse_and_locate_errors() {
    // `image` is a dotted-key table and `config` an implicit one: neither
    // has a span of its own, which `toml::Spanned` cannot handle.
    let def =
        ok("image.name = \"a\"\nimage.tag = \"b\"\n[config.health]\nkind = \"tcp\"\nport = 1\n");
    assert_eq!(def.tag, "b");
    fails(
        "image.tag = \"b\"\n",
        1,
        1,
        Some("image.name"),
        "missing required key",
    );
    // No port: the instance's own.
    let def = ok("[image]\nname = \"a\"\n[config.health]\nkind = \"tcp\"\n");
    assert_eq!(def.config.health.unwrap().probe, Probe::Tcp { port: None });
}

// --- syntax -----------------------------------------------------------

#[test]
fn syntax_errors_have_positions() {
    let m = fails("[image]\nname = \"a\nfoo\n", 2, 10, None, "invalid TOML");
    assert!(!m.contains('\n'), "{m:?}");
    fails(
        "[image]\nname = \"a\"\nname = \"b\"\n",
        3,
        1,
        None,
        "duplicate key",
    );
    fails(
        "[image]\nname = \"a\"\ntag = \n",
        3,
        7,
        None,
        "invalid TOML",
    );
}

// --- unknown keys -----------------------------------------------------

#[test]
fn unknown_keys_are_named_with_what_is_allowed() {
    fails(
        "[image]\nname = \"a\"\n\n[imgae]\n",
        4,
        2,
        Some("imgae"),
        "unknown key (expected one of: image, layer, account, accounts, config)",
    );
    let m = fails(
        "[image]\nname = \"a\"\nnmae = \"b\"\n",
        3,
        1,
        Some("image.nmae"),
        "",
    );
    assert_eq!(
        m,
        "image.nmae: unknown key (expected one of: name, tag, compression, compression_level, base)"
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\n  perms = \"0644\"\n",
        7,
        3,
        Some("layer[0].perms"),
        "unknown key (expected one of: kind, src, dest, include, exclude, mode, dir_mode, owner, xattrs)",
    );
    fails(
        "[image]\nname = \"a\"\n[config.health]\nkind = \"tcp\"\nport = 1\nintervall = \"1s\"\n",
        6,
        1,
        Some("config.health.intervall"),
        "unknown key (expected one of: kind, port, interval, timeout, retries, start_period)",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nenv = {}\nvolumes = []\n",
        5,
        1,
        Some("config.volumes"),
        "unknown key",
    );
    fails(
        &format!("[image]\nname = \"a\"\nbase = {{ image = \"{D1}\", tag = \"x\" }}\n"),
        3,
        93,
        Some("image.base.tag"),
        "unknown key (expected one of: image, layout, digest)",
    );
}

#[test]
fn keys_of_another_kind_say_so() {
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"file\"\ndest = \"/x\"\ncontent = \"\"\nsrc = \"a\"\n",
        7,
        1,
        Some("layer[0].src"),
        "not used by a \"file\" layer (expected one of: kind, dest, content, mode, owner)",
    );
    fails(
        "[image]\nname = \"a\"\n[config.health]\nkind = \"tcp\"\nport = 1\npath = \"/\"\n",
        6,
        1,
        Some("config.health.path"),
        "not used by a \"tcp\" health check",
    );
}

// --- types ------------------------------------------------------------

#[test]
fn wrong_types_say_what_was_expected() {
    fails(
        "[image]\nname = 5\n",
        2,
        8,
        Some("image.name"),
        "expected a string, found an integer",
    );
    fails(
        "image = \"a\"\n",
        1,
        9,
        Some("image"),
        "expected a table, found a string",
    );
    fails(
        "[image]\nname = \"a\"\n[layer]\nkind = \"copy\"\n",
        3,
        1,
        Some("layer"),
        "expected an array of tables ([[layer]]), found a table",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\ncmd = [\"a\", 1]\n",
        4,
        13,
        Some("config.cmd[1]"),
        "expected a string, found an integer",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nenv = { PORT = 8080 }\n",
        4,
        16,
        Some("config.env.PORT"),
        "expected a string, found an integer (quote it)",
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\nxattrs = \"yes\"\n",
        7,
        10,
        Some("layer[0].xattrs"),
        "expected a boolean (true or false), found a string",
    );
    fails(
        "[image]\nname = \"a\"\ntag = 1979-05-27\n",
        3,
        7,
        Some("image.tag"),
        "found a date-time",
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\nmode = 644\n",
        7,
        8,
        Some("layer[0].mode"),
        "TOML integers are decimal",
    );
    fails(
        "[image]\nname = \"a\"\n[config.health]\nkind = \"tcp\"\nport = 1\ninterval = 5\n",
        6,
        12,
        Some("config.health.interval"),
        "add a unit",
    );
}

// --- values -----------------------------------------------------------

fn copy_layer_with(line: &str) -> String {
    format!(
        "[image]\nname = \"a\"\n\n[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\n[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\n{line}\n"
    )
}

#[test]
fn bad_modes_and_owners() {
    let m = fails(
        &copy_layer_with("mode = \"0999\""),
        12,
        8,
        Some("layer[1].mode"),
        "",
    );
    assert_eq!(
        m,
        "layer[1].mode: \"0999\" is not an octal mode (expected e.g. \"0644\", at most 0o7777)"
    );
    fails(
        &copy_layer_with("dir_mode = \"17777\""),
        12,
        12,
        Some("layer[1].dir_mode"),
        "at most 0o7777",
    );
    fails(
        &copy_layer_with("mode = \"\""),
        12,
        8,
        Some("layer[1].mode"),
        "not an octal mode",
    );
    fails(
        &copy_layer_with("owner = \"root:root\""),
        12,
        9,
        Some("layer[1].owner"),
        "not a numeric owner (expected \"uid:gid\"",
    );
    fails(
        &copy_layer_with("owner = \"1000\""),
        12,
        9,
        Some("layer[1].owner"),
        "not a numeric owner",
    );
    fails(
        &copy_layer_with("owner = \"+1:0\""),
        12,
        9,
        Some("layer[1].owner"),
        "not a numeric owner",
    );
    fails(
        &copy_layer_with("owner = \"1:4294967296\""),
        12,
        9,
        Some("layer[1].owner"),
        "not a numeric owner",
    );
}

#[test]
fn bad_paths() {
    fails(
        &copy_layer_with("").replace("dest = \"/\"\n\n", "dest = \"srv\"\n"),
        11,
        8,
        Some("layer[1].dest"),
        "\"srv\" is not absolute",
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \"a/../../b\"\n",
        5,
        7,
        Some("layer[0].src"),
        "contains \"..\"",
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \"/etc\"\n",
        5,
        7,
        Some("layer[0].src"),
        "\"/etc\" is absolute",
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \"\"\n",
        5,
        7,
        Some("layer[0].src"),
        "\".\" is all of it",
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/a/../b\"\n",
        6,
        8,
        Some("layer[0].dest"),
        "contains \"..\"",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nworkdir = \"www\"\n",
        4,
        11,
        Some("config.workdir"),
        "not absolute",
    );
    assert_eq!(normalize_relative("./."), Ok(".".to_string()));
    assert_eq!(normalize_relative("a//b/./c/"), Ok("a/b/c".to_string()));
    assert_eq!(normalize_absolute("//"), Ok("/".to_string()));
    assert_eq!(normalize_absolute("/a/b/"), Ok("/a/b".to_string()));
}

#[test]
fn file_layers_need_a_file_path() {
    for dest in ["/", "//", "/etc/"] {
        fails(
            &format!(
                "[image]\nname = \"a\"\n[[layer]]\nkind = \"file\"\ncontent = \"x\"\ndest = \"{dest}\"\n"
            ),
            6,
            8,
            Some("layer[0].dest"),
            "is a directory (a file layer's dest names a file",
        );
    }
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"file\"\ndest = \"/x\"\n",
        3,
        1,
        Some("layer[0].content"),
        "missing required key",
    );
}

#[test]
fn bad_globs() {
    let m = fails(
        &copy_layer_with("include = [\"etc/**\", \"[a-\"]"),
        12,
        22,
        Some("layer[1].include[1]"),
        "\"[a-\" is not a valid glob",
    );
    assert!(m.contains("character class"), "{m}");
    fails(
        &copy_layer_with("exclude = [\"/etc/**\"]"),
        12,
        12,
        Some("layer[1].exclude[0]"),
        "is absolute (globs match paths relative to src",
    );
    fails(
        &copy_layer_with("include = []"),
        12,
        11,
        Some("layer[1].include"),
        "omit include to copy everything",
    );
}

#[test]
fn bad_layer_kinds() {
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"copy\"\nsrc = \".\"\ndest = \"/\"\n[[layer]]\nsrc = \".\"\n",
        7,
        1,
        Some("layer[1].kind"),
        "missing required key (expected \"copy\", \"file\", \"packages\" or \"run\")",
    );
    fails(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"tar\"\n",
        4,
        8,
        Some("layer[0].kind"),
        "\"tar\" is not a layer kind (expected \"copy\", \"file\", \"packages\" or \"run\")",
    );
    fails(
        "layer = [1]\n[image]\nname = \"a\"\n",
        1,
        10,
        Some("layer[0]"),
        "expected a table, found an integer",
    );
}

#[test]
fn bad_image_values() {
    fails(
        "[image]\ntag = \"1\"\n",
        1,
        1,
        Some("image.name"),
        "missing required key (the repository name",
    );
    fails("# nothing\n", 1, 1, Some("image"), "missing required table");
    for name in ["Hello", "a..b", "-a", "a/", "a_-b", "a b", ""] {
        fails(
            &format!("[image]\nname = \"{name}\"\n"),
            2,
            8,
            Some("image.name"),
            "is not a repository name",
        );
    }
    for tag in [".v1", "-v1", "v1+build", "", &"a".repeat(129)] {
        fails(
            &format!("[image]\nname = \"a\"\ntag = \"{tag}\"\n"),
            3,
            7,
            Some("image.tag"),
            "is not a tag",
        );
    }
    fails(
        "[image]\nname = \"a\"\ncompression = \"lz4\"\n",
        3,
        15,
        Some("image.compression"),
        "\"lz4\" is not a compression (expected \"gzip\" or \"zstd\")",
    );
    // A level is checked against the compression it goes with.
    fails(
        "[image]\nname = \"a\"\ncompression_level = 12\n",
        3,
        21,
        Some("image.compression_level"),
        "12 is not a gzip level (expected 1 to 9)",
    );
    fails(
        "[image]\nname = \"a\"\ncompression = \"zstd\"\ncompression_level = \"high\"\n",
        4,
        21,
        Some("image.compression_level"),
        "an integer",
    );
    let def = parse(
        "[image]\nname = \"a\"\ncompression = \"zstd\"\ncompression_level = 12\n",
        Path::new("drover.toml"),
    )
    .unwrap();
    assert_eq!(def.compression_level, Some(12));
}

#[test]
fn bad_bases() {
    fails(
        "[image]\nname = \"a\"\nbase = { image = \"sha256:abc\" }\n",
        3,
        18,
        Some("image.base.image"),
        "not a digest: \"sha256:abc\"",
    );
    fails(
        "[image]\nname = \"a\"\n\n[image.base]\nlayout = \"../base-oci\"\n",
        4,
        1,
        Some("image.base.digest"),
        "missing required key (a layout base also needs the manifest digest",
    );
    fails(
        "[image]\nname = \"a\"\nbase = { layout = \"x\", digest = \"md5:x\" }\n",
        3,
        33,
        Some("image.base.digest"),
        "not a digest",
    );
    fails(
        &format!("[image]\nname = \"a\"\nbase = {{ image = \"{D1}\", digest = \"{D1}\" }}\n"),
        3,
        102,
        Some("image.base.digest"),
        "only used with layout",
    );
    fails(
        &format!("[image]\nname = \"a\"\nbase = {{ image = \"{D1}\", layout = \"x\" }}\n"),
        3,
        102,
        Some("image.base.layout"),
        "not both",
    );
    fails(
        "[image]\nname = \"a\"\nbase = {}\n",
        3,
        8,
        Some("image.base"),
        "expected image or layout",
    );
    fails(
        "[image]\nname = \"a\"\nbase = \"alpine\"\n",
        3,
        8,
        Some("image.base"),
        "\"alpine\" is not a base (expected \"scratch\"",
    );
}

#[test]
fn bad_config_values() {
    fails(
        "[image]\nname = \"a\"\n[config]\nports = [\"8080/tcp\", 0]\n",
        4,
        22,
        Some("config.ports[1]"),
        "0 is not a port (expected 1-65535",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nports = [\"80/icmp\"]\n",
        4,
        10,
        Some("config.ports[0]"),
        "\"80/icmp\" is not a port",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nports = [\"65536\"]\n",
        4,
        10,
        Some("config.ports[0]"),
        "is not a port",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nports = [80, \"80/tcp\"]\n",
        4,
        14,
        Some("config.ports[1]"),
        "80/tcp is listed twice",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nenv = { PATH = \"/bin\", 1BAD = \"x\" }\n",
        4,
        24,
        Some("config.env.1BAD"),
        "\"1BAD\" is not an environment variable name",
    );
    fails(
        "[image]\nname = \"a\"\n[config.env]\n\"MY-VAR\" = \"x\"\n",
        4,
        1,
        Some("config.env.MY-VAR"),
        "not an environment variable name",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nlabels = { \"\" = \"x\" }\n",
        4,
        12,
        Some("config.labels.\"\""),
        "must not be empty",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\nuser = \"1000:\"\n",
        4,
        8,
        Some("config.user"),
        "is not a user",
    );
    for signal in ["\"SIGFOO\"", "0", "32", "65", "\"SIGRTMIN+31\"", "\"\""] {
        fails(
            &format!("[image]\nname = \"a\"\n[config]\nstop_signal = {signal}\n"),
            4,
            15,
            Some("config.stop_signal"),
            "is not a signal",
        );
    }
}

fn health_with(lines: &str) -> String {
    format!("[image]\nname = \"a\"\n[config.health]\nkind = \"http\"\nport = 8080\n{lines}\n")
}

#[test]
fn bad_health_checks() {
    fails(
        &health_with("interval = \"5 s\""),
        6,
        12,
        Some("config.health.interval"),
        "\"5 s\" is not a duration",
    );
    fails(
        &health_with("start_period = \"1.5s\""),
        6,
        16,
        Some("config.health.start_period"),
        "is not a duration",
    );
    let m = fails(
        &health_with("interval = \"2s\"\ntimeout = \"5s\""),
        7,
        11,
        Some("config.health.timeout"),
        "",
    );
    assert!(m.contains("5s is longer than the interval, 2s"), "{m}");
    fails(
        &health_with("interval = \"0s\""),
        6,
        12,
        Some("config.health.interval"),
        "must be longer than 0s",
    );
    fails(
        &health_with("retries = 0"),
        6,
        11,
        Some("config.health.retries"),
        "0 is not a retry count (expected at least 1)",
    );
    fails(
        &health_with("path = \"healthz\""),
        6,
        8,
        Some("config.health.path"),
        "is not an HTTP path",
    );
    fails(
        &health_with("").replace("port = 8080", "port = 70000"),
        5,
        8,
        Some("config.health.port"),
        "70000 is not a port (expected 1-65535)",
    );
    fails(
        "[image]\nname = \"a\"\n[config.health]\nkind = \"grpc\"\n",
        4,
        8,
        Some("config.health.kind"),
        "\"grpc\" is not a health check kind (expected \"http\", \"tcp\" or \"exec\")",
    );
    fails(
        "[image]\nname = \"a\"\n[config.health]\nkind = \"exec\"\ncommand = []\n",
        5,
        11,
        Some("config.health.command"),
        "empty",
    );
}

// --- loading ----------------------------------------------------------

#[test]
fn load_reads_the_file_and_reports_io_and_encoding_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.toml");
    let missing = load(&path).unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");

    std::fs::write(&path, "[image]\nname = \"a\"\n").unwrap();
    let def = load(&path).unwrap();
    assert_eq!(def.context, dir.path());
    assert_eq!(def.file, path);

    std::fs::write(&path, b"[image]\nname = \"\xff\"\n").unwrap();
    match load(&path).unwrap_err() {
        Error::Definition {
            line,
            column,
            message,
            ..
        } => {
            assert_eq!((line, column), (2, 9));
            assert!(message.contains("not UTF-8"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn columns_count_characters_not_bytes() {
    fails(
        "[image]\nname = \"a\"\n[config]\nenv = { \"É\" = \"x\" }\n",
        4,
        9,
        Some("config.env.\"É\""),
        "not an environment variable name",
    );
}

// --- serialized forms -------------------------------------------------

#[test]
fn layers_serialize_canonically_for_the_cache_key() {
    let layer = LayerDef::File(FileLayer {
        dest: "/etc/motd".into(),
        content: "hi\n".into(),
        mode: 0o644,
        owner: (0, 0),
    });
    assert_eq!(
        serde_json::to_string(&layer).unwrap(),
        r#"{"kind":"file","dest":"/etc/motd","content":"hi\n","mode":420,"owner":[0,0]}"#
    );
    // Equivalent spellings of a definition produce the same key.
    let a = ok(&copy_layer_with("owner = \"1:2\""));
    let b = ok(&copy_layer_with("owner = \"1:2\"").replace("src = \".\"", "src = \"./\""));
    assert_eq!(
        serde_json::to_string(&a.layers).unwrap(),
        serde_json::to_string(&b.layers).unwrap()
    );
}

#[test]
fn compression_parses_and_displays() {
    for c in [Compression::Gzip, Compression::Zstd] {
        assert_eq!(c.to_string().parse::<Compression>(), Ok(c));
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{c}\""));
    }
    assert!(
        "xz".parse::<Compression>()
            .unwrap_err()
            .contains("\"gzip\" or \"zstd\"")
    );
    assert_eq!(Compression::default(), Compression::Gzip);
}

#[test]
fn packages_layers_refuse_what_debian_would() {
    let with =
        |body: &str| format!("[image]\nname = \"a\"\n[[layer]]\nkind = \"packages\"\n{body}\n");
    let err = |body: &str| {
        parse(&with(body), Path::new("drover.toml"))
            .unwrap_err()
            .to_string()
    };
    assert!(err("").contains("layer[0].packages: missing required key"));
    assert!(err("packages = []").contains("empty"));
    let e = err("packages = [\"Nginx\"]");
    assert!(
        e.contains("drover.toml:5:13: layer[0].packages[0]")
            && e.contains("not a Debian package name"),
        "{e}"
    );
    assert!(err("packages = [\"nginx=\"]").contains("not a Debian version"));
    assert!(err("packages = [\"nginx\", \"nginx=1.0\"]").contains("nginx is listed twice"));
    assert!(err("packages = [\"nginx\"]\nsuite = \"Bookworm\"").contains("layer[0].suite"));
    assert!(
        err("packages = [\"nginx\"]\ncomponents = [\"main\", \"main\"]").contains("listed twice")
    );
    assert!(
        err("packages = [\"nginx\"]\nrepositories = [{ url = \"ftp://x\" }]")
            .contains("layer[0].repositories[0].url")
    );
    assert!(
        err("packages = [\"nginx\"]\nrepositories = [{ url = \"http://x\", keyring = \"k.gpg\" }]")
            .contains("not an absolute path")
    );
    assert!(err("packages = [\"nginx\"]\nsrc = \".\"").contains("src"));
    let ok = parse(
        &with("packages = [\"nginx-light\"]"),
        Path::new("drover.toml"),
    )
    .unwrap();
    let LayerDef::Packages(p) = &ok.layers[0] else {
        panic!("{ok:?}")
    };
    assert_eq!(
        (p.suite.as_str(), p.components.as_slice()),
        ("bookworm", &["main".to_string()][..])
    );
    assert!(
        !p.recommends
            && !p.essential
            && !p.scripts
            && p.repositories.is_empty()
            && p.arch.is_none()
    );
}

// --- accounts and tmpfs -------------------------------------------------

#[test]
fn accounts_take_defaults_and_the_alias_reads_the_same() {
    let d = ok("[image]\nname = \"a\"\n[[account]]\nname = \"app\"\nuid = 10001\n");
    let a = &d.accounts[0];
    assert_eq!(
        (a.gid, a.group.as_str(), a.home.as_str(), a.shell.as_str()),
        (10001, "app", "/home/app", DEFAULT_SHELL)
    );
    assert!(a.groups.is_empty());
    let alias = ok("accounts = [{ name = \"app\", uid = 10001 }]\n[image]\nname = \"a\"\n");
    assert_eq!(alias.accounts, d.accounts);
}

#[test]
fn bad_accounts_are_located() {
    let head = "[image]\nname = \"a\"\n";
    for (body, line, column, key, needle) in [
        (
            "[[account]]\nuid = 1\n",
            3,
            1,
            "account[0].name",
            "missing required key",
        ),
        (
            "[[account]]\nname = \"app\"\n",
            3,
            1,
            "account[0].uid",
            "missing required key",
        ),
        (
            "[[account]]\nname = \"1app\"\nuid = 1\n",
            4,
            8,
            "account[0].name",
            "is not a user or group name",
        ),
        (
            "[[account]]\nname = \"a:b\"\nuid = 1\n",
            4,
            8,
            "account[0].name",
            "is not a user or group name",
        ),
        (
            "[[account]]\nname = \"app\"\nuid = -1\n",
            5,
            7,
            "account[0].uid",
            "is not an id",
        ),
        (
            "[[account]]\nname = \"app\"\nuid = 4294967295\n",
            5,
            7,
            "account[0].uid",
            "is not an id",
        ),
        (
            "[[account]]\nname = \"app\"\nuid = \"1\"\n",
            5,
            7,
            "account[0].uid",
            "expected an integer id",
        ),
        (
            "[[account]]\nname = \"app\"\nuid = 1\nhome = \"home\"\n",
            6,
            8,
            "account[0].home",
            "is not absolute",
        ),
        (
            "[[account]]\nname = \"app\"\nuid = 1\nshell = \"/bin:sh\"\n",
            6,
            9,
            "account[0].shell",
            "cannot be a passwd field",
        ),
        (
            "[[account]]\nname = \"app\"\nuid = 1\ngroups = [\"a\", \"a\"]\n",
            6,
            16,
            "account[0].groups[1]",
            "listed twice",
        ),
        (
            "[[account]]\nname = \"app\"\nuid = 1\npassword = \"x\"\n",
            6,
            1,
            "account[0].password",
            "unknown key",
        ),
        (
            "[[account]]\nname = \"a\"\nuid = 1\n[[account]]\nname = \"a\"\nuid = 2\n",
            7,
            8,
            "account[1].name",
            "declared twice",
        ),
        (
            "[[account]]\nname = \"a\"\nuid = 1\n[[account]]\nname = \"b\"\nuid = 1\n",
            8,
            7,
            "account[1].uid",
            "is \"a\"'s already",
        ),
        (
            "[[account]]\nname = \"a\"\nuid = 1\n[[account]]\nname = \"b\"\nuid = 2\ngid = 1\n",
            9,
            7,
            "account[1].gid",
            "gid 1 is group \"a\"'s",
        ),
        (
            "[[account]]\nname = \"a\"\nuid = 1\ngroup = \"g\"\n[[account]]\nname = \"b\"\nuid = 2\ngroup = \"g\"\n",
            10,
            9,
            "account[1].group",
            "group \"g\" has gid 1",
        ),
    ] {
        fails(&format!("{head}{body}"), line, column, Some(key), needle);
    }
    fails(
        "accounts = []\n[image]\nname = \"a\"\n[[account]]\nname = \"a\"\nuid = 1\n",
        1,
        12,
        Some("accounts"),
        "not both",
    );
    // Two accounts may share a group that has one gid.
    let d = ok(&format!(
        "{head}[[account]]\nname = \"a\"\nuid = 1\ngid = 5\ngroup = \"g\"\n\
         [[account]]\nname = \"b\"\nuid = 2\ngid = 5\ngroup = \"g\"\n"
    ));
    assert_eq!(d.accounts.len(), 2);
}

#[test]
fn tmpfs_paths_are_checked_where_written() {
    fails(
        "[image]\nname = \"a\"\n[config]\ntmpfs = [\"/var/x\", \"/sys/y\"]\n",
        4,
        20,
        Some("config.tmpfs[1]"),
        "kernel filesystem",
    );
    fails(
        "[image]\nname = \"a\"\n[config]\ntmpfs = [\"/tmp\"]\n",
        4,
        10,
        Some("config.tmpfs[0]"),
        "a tmpfs in every instance already",
    );
}

#[test]
fn run_layers_parse_with_defaults() {
    let def = ok("[image]\nname = \"a\"\n[[layer]]\nkind = \"run\"\ncommand = [\"/bin/true\"]\n");
    assert_eq!(
        def.layers,
        vec![LayerDef::Run(RunLayer {
            command: vec!["/bin/true".into()],
            mounts: vec![],
            network: false,
            timeout_ms: DEFAULT_RUN_TIMEOUT_MS,
            env: BTreeMap::new(),
            workdir: "/".into(),
            user: (0, 0),
        })]
    );
    let def = ok(
        "[image]\nname = \"a\"\n[[layer]]\nkind = \"run\"\ncommand = [\"make\"]\n\
                  mounts = [{ src = \"./app/\", dest = \"/src/\" }, { src = \".\", dest = \"/ctx\" }]\n\
                  network = true\ntimeout = \"1m30s\"\nworkdir = \"/src/.\"\nuser = \"1000:100\"\n",
    );
    let LayerDef::Run(r) = &def.layers[0] else {
        panic!("not a run layer")
    };
    assert_eq!(
        r.mounts,
        vec![
            RunMount {
                src: "app".into(),
                dest: "/src".into()
            },
            RunMount {
                src: ".".into(),
                dest: "/ctx".into()
            }
        ]
    );
    assert!(r.network);
    assert_eq!(r.timeout_ms, 90_000);
    assert_eq!(r.workdir, "/src");
    assert_eq!(r.user, (1000, 100));
}

#[test]
fn bad_run_layers_are_located() {
    let head = "[image]\nname = \"a\"\n[[layer]]\nkind = \"run\"\n";
    fails(head, 3, 1, Some("layer[0].command"), "missing required key");
    fails(
        &format!("{head}command = []\n"),
        5,
        11,
        Some("layer[0].command"),
        "empty",
    );
    fails(
        &format!("{head}command = [\"x\"]\nsrc = \"a\"\n"),
        6,
        1,
        Some("layer[0].src"),
        "not used by a \"run\" layer",
    );
    fails(
        &format!("{head}command = [\"x\"]\nmounts = [{{ src = \"../up\", dest = \"/x\" }}]\n"),
        6,
        19,
        Some("layer[0].mounts[0].src"),
        "\"..\"",
    );
    fails(
        &format!("{head}command = [\"x\"]\nmounts = [{{ src = \"/abs\", dest = \"/x\" }}]\n"),
        6,
        19,
        Some("layer[0].mounts[0].src"),
        "absolute",
    );
    fails(
        &format!("{head}command = [\"x\"]\nmounts = [{{ src = \"a\", dest = \"rel\" }}]\n"),
        6,
        31,
        Some("layer[0].mounts[0].dest"),
        "not absolute",
    );
    fails(
        &format!(
            "{head}command = [\"x\"]\nmounts = [{{ src = \"a\", dest = \"/x\", ro = true }}]\n"
        ),
        6,
        37,
        Some("layer[0].mounts[0].ro"),
        "unknown key",
    );
    fails(
        &format!("{head}command = [\"x\"]\ntimeout = \"soon\"\n"),
        6,
        11,
        Some("layer[0].timeout"),
        "not a duration",
    );
    fails(
        &format!("{head}command = [\"x\"]\ntimeout = \"0\"\n"),
        6,
        11,
        Some("layer[0].timeout"),
        "zero",
    );
    fails(
        &format!("{head}command = [\"x\"]\nnetwork = \"yes\"\n"),
        6,
        11,
        Some("layer[0].network"),
        "a boolean",
    );
    fails(
        &format!("{head}command = [\"x\"]\nuser = \"app\"\n"),
        6,
        8,
        Some("layer[0].user"),
        "",
    );
}

/// `[config] init` (issue 19): a boolean, absent unless written, so the
/// definitions of existing images serialize (and hash) as before.
#[test]
fn config_init_is_a_boolean_left_out_when_unset() {
    let parse = |extra: &str| {
        super::parse(
            &format!("[image]\nname = \"a\"\n[config]\n{extra}"),
            Path::new("drover.toml"),
        )
    };
    assert_eq!(parse("init = false\n").unwrap().config.init, Some(false));
    let plain = parse("").unwrap();
    assert_eq!(plain.config.init, None);
    assert!(
        !serde_json::to_string(&plain.config)
            .unwrap()
            .contains("init")
    );
    assert!(parse("init = 1\n").is_err());
}
