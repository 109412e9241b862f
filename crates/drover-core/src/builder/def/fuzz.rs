//! Fuzz target: the `drover.toml` parser (see `crate::fuzz`). It never
//! panics, every error is located (file:line:column), and a valid
//! definition written out and read back is what was written.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::error::Error;
use crate::fuzz::{any_text, apply, config, edits, quoted};

const FILE: &str = "app/drover.toml";

/// A definition as a generator sees it: what it writes, and what the
/// parser must read back.
#[derive(Debug, Clone)]
struct Model {
    name: String,
    tag: String,
    compression: Option<Compression>,
    layers: Vec<LayerDef>,
    config: RuntimeConfig,
}

fn component() -> impl Strategy<Value = String> {
    // Never `.wh.`-prefixed, `.` or `..`: those are refused.
    "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,8}".prop_filter("not a whiteout", |c| !c.starts_with(".wh."))
}

fn absolute() -> impl Strategy<Value = String> {
    proptest::collection::vec(component(), 1..4).prop_map(|c| format!("/{}", c.join("/")))
}

fn relative() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(".".to_string()),
        3 => proptest::collection::vec(component(), 1..3).prop_map(|c| c.join("/")),
    ]
}

fn glob() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("**".to_string()),
        Just("*.txt".to_string()),
        Just("etc/**".to_string()),
        component(),
    ]
}

/// Text that every string field accepts: no control characters.
fn printable() -> impl Strategy<Value = String> + Clone {
    prop_oneof![3 => "[a-zA-Z0-9 ._/:=-]{0,12}", 1 => "\\PC{0,12}"]
}

fn layer() -> impl Strategy<Value = LayerDef> {
    let owner = proptest::option::of((0..70_000u32, 0..70_000u32));
    let mode = proptest::option::of(0..=0o7777u32);
    prop_oneof![
        (
            relative(),
            absolute(),
            proptest::collection::vec(glob(), 1..3),
            proptest::collection::vec(glob(), 0..2),
            mode.clone(),
            mode.clone(),
            owner.clone(),
            any::<bool>(),
        )
            .prop_map(
                |(src, dest, include, exclude, mode, dir_mode, owner, xattrs)| {
                    LayerDef::Copy(CopyLayer {
                        src,
                        dest,
                        include,
                        exclude,
                        mode,
                        dir_mode,
                        owner,
                        xattrs,
                    })
                }
            ),
        (absolute(), any_text(), mode, owner).prop_map(|(dest, content, mode, owner)| {
            LayerDef::File(FileLayer {
                dest,
                content,
                mode: mode.unwrap_or(DEFAULT_FILE_MODE),
                owner: owner.unwrap_or((0, 0)),
            })
        }),
    ]
}

fn runtime_config() -> impl Strategy<Value = RuntimeConfig> {
    let args = || proptest::option::of(proptest::collection::vec(printable(), 0..3));
    (
        args(),
        args(),
        proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,6}", printable(), 0..3),
        proptest::option::of(absolute()),
        proptest::collection::btree_map("[a-z][a-z0-9.]{0,10}", printable(), 0..3),
        proptest::collection::btree_set(1..=65535u16, 0..3),
    )
        .prop_map(
            |(entrypoint, cmd, env, workdir, labels, ports)| RuntimeConfig {
                entrypoint,
                cmd,
                env,
                workdir,
                user: None,
                ports: ports.into_iter().map(|p| format!("{p}/tcp")).collect(),
                labels,
                stop_signal: None,
                health: None,
                tmpfs: vec![],
                init: None,
            },
        )
}

fn model() -> impl Strategy<Value = Model> {
    (
        "[a-z0-9]{1,6}(/[a-z0-9]{1,6})?",
        "[A-Za-z0-9_][A-Za-z0-9._-]{0,10}",
        proptest::option::of(prop_oneof![
            Just(Compression::Gzip),
            Just(Compression::Zstd)
        ]),
        proptest::collection::vec(layer(), 0..4),
        runtime_config(),
    )
        .prop_map(|(name, tag, compression, layers, config)| Model {
            name,
            tag,
            compression,
            layers,
            config,
        })
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", items.join(", "))
}

fn map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn owner(o: (u32, u32)) -> String {
    quoted(&format!("{}:{}", o.0, o.1))
}

fn mode(m: u32) -> String {
    quoted(&format!("{m:04o}"))
}

/// The definition `m` describes, as TOML.
fn render(m: &Model) -> String {
    let mut t = format!(
        "[image]\nname = {}\ntag = {}\n",
        quoted(&m.name),
        quoted(&m.tag)
    );
    if let Some(c) = m.compression {
        t += &format!("compression = \"{c}\"\n");
    }
    for layer in &m.layers {
        t += "\n[[layer]]\n";
        match layer {
            LayerDef::Copy(c) => {
                t += &format!(
                    "kind = \"copy\"\nsrc = {}\ndest = {}\n",
                    quoted(&c.src),
                    quoted(&c.dest)
                );
                t += &format!(
                    "include = {}\nexclude = {}\n",
                    list(&c.include),
                    list(&c.exclude)
                );
                if let Some(m) = c.mode {
                    t += &format!("mode = {}\n", mode(m));
                }
                if let Some(m) = c.dir_mode {
                    t += &format!("dir_mode = {}\n", mode(m));
                }
                if let Some(o) = c.owner {
                    t += &format!("owner = {}\n", owner(o));
                }
                t += &format!("xattrs = {}\n", c.xattrs);
            }
            LayerDef::Packages(p) => {
                t += &format!(
                    "kind = \"packages\"\npackages = {}\nsuite = {}\n",
                    list(&p.packages),
                    quoted(&p.suite)
                );
            }
            LayerDef::File(f) => {
                t += &format!(
                    "kind = \"file\"\ndest = {}\ncontent = {}\nmode = {}\nowner = {}\n",
                    quoted(&f.dest),
                    quoted(&f.content),
                    mode(f.mode),
                    owner(f.owner)
                );
            }
            // Not generated (the model makes copy and file layers).
            LayerDef::Run(_) => {}
        }
    }
    let c = &m.config;
    t += "\n[config]\n";
    if let Some(e) = &c.entrypoint {
        t += &format!("entrypoint = {}\n", list(e));
    }
    if let Some(e) = &c.cmd {
        t += &format!("cmd = {}\n", list(e));
    }
    t += &format!(
        "env = {}\nlabels = {}\nports = {}\n",
        map(&c.env),
        map(&c.labels),
        list(&c.ports)
    );
    if let Some(w) = &c.workdir {
        t += &format!("workdir = {}\n", quoted(w));
    }
    t
}

/// What parsing `text` must give: a definition, or a located error.
fn check_outcome(text: &str) -> std::result::Result<Option<ImageDef>, TestCaseError> {
    match parse(text, Path::new(FILE)) {
        Ok(def) => Ok(Some(def)),
        Err(Error::Definition {
            file, line, column, ..
        }) => {
            prop_assert_eq!(file, Path::new(FILE));
            prop_assert!(
                line >= 1 && line <= text.lines().count() + 1,
                "line {}",
                line
            );
            prop_assert!(column >= 1, "column {}", column);
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a located definition error: {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn a_valid_definition_round_trips(m in model()) {
        let text = render(&m);
        let def = parse(&text, Path::new(FILE)).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&def.name, &m.name);
        prop_assert_eq!(&def.tag, &m.tag);
        prop_assert_eq!(def.compression, m.compression);
        prop_assert_eq!(&def.layers, &m.layers);
        prop_assert_eq!(&def.config, &m.config);
        prop_assert_eq!(def.context, Path::new("app"));
    }

    #[test]
    fn a_mutated_definition_never_panics_and_errors_are_located(
        m in model(),
        edits in edits(6),
    ) {
        let bytes = apply(render(&m).as_bytes(), &edits);
        let text = String::from_utf8_lossy(&bytes);
        if let Some(def) = check_outcome(&text)? {
            // Whatever got through still holds the parser's promises.
            for layer in &def.layers {
                let dest = match layer {
                    LayerDef::Copy(c) => &c.dest,
                    LayerDef::File(f) => &f.dest,
                    LayerDef::Packages(p) => {
                        for name in &p.packages {
                            prop_assert!(crate::grammar::deb_request(name).is_ok(), "{}", name);
                        }
                        continue;
                    }
                    LayerDef::Run(r) => &r.workdir,
                };
                prop_assert!(dest.starts_with('/'), "{}", dest);
                prop_assert!(!dest.split('/').any(|c| c == ".." || c.starts_with(".wh.")), "{}", dest);
                if let LayerDef::Copy(c) = layer {
                    for g in c.include.iter().chain(&c.exclude) {
                        prop_assert!(!g.split('/').any(|c| c == ".."), "{}", g);
                    }
                }
            }
            for (k, v) in &def.config.env {
                prop_assert!(!k.contains('\0') && !v.contains('\0'), "{:?}={:?}", k, v);
            }
            for (k, v) in &def.config.labels {
                prop_assert!(!k.chars().any(char::is_control) && !v.contains('\0'), "{:?}={:?}", k, v);
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}|[\\[\\]{}=\".a-z\n ]{0,200}") {
        check_outcome(&text)?;
    }
}
