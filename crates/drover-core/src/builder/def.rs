//! The image definition, `drover.toml`: parsing and validation into an
//! [`ImageDef`].
//!
//! Everything the builder needs is checked here, before any file is read or
//! any layer is built, so a mistake costs a second, not a build. Unknown keys
//! and bad values are errors ([`Error::Definition`](crate::Error::Definition))
//! that name the file, the 1-based line and column of the offending key or
//! value, its dotted key path (`image.name`, `layer[0].mode`,
//! `config.health.interval`), what is wrong and what is allowed:
//!
//! ```text
//! drover.toml:14:8: layer[1].mode: "0999" is not an octal mode (expected e.g. "0644", at most 0o7777)
//! drover.toml:3:1: image.nmae: unknown key (expected one of: name, tag, compression, compression_level, base)
//! ```
//!
//! Layers are numbered from 0 in key paths (`layer[0]` is the first
//! `[[layer]]`), as in Kubernetes field paths and jq. A missing required key
//! points at the table that lacks it.
//!
//! # Format
//!
//! <!-- The block below is parsed by the test `documented_example_parses`. -->
//! ```toml
//! [image]
//! name = "hello"            # required: an OCI repository name, e.g. "hello", "team/web"
//! tag = "1.0"               # default "latest"; [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
//! compression = "zstd"      # "gzip" or "zstd"; unset means the builder's default (gzip)
//! compression_level = 3     # gzip 1-9 (default 1), zstd 1-19 (default 3)
//! base = "scratch"          # the default: start from nothing. Or one of:
//! # base = { image = "sha256:<64 hex>" }   # an image in drover's store, by manifest digest
//! # base = { layout = "../base-oci", digest = "sha256:<64 hex>" }
//! #   an OCI image layout directory (relative to this file's directory) and a
//! #   manifest digest in it
//!
//! # Layers are applied in order, each on top of the previous ones.
//! [[layer]]
//! kind = "copy"             # copy a directory tree from the build context
//! src = "rootfs"            # relative to the build context (this file's directory);
//!                           # "." is the whole context; no absolute paths, no ".."
//! dest = "/"                # absolute path in the image
//! include = ["**"]          # globs relative to src; default ["**"] (everything)
//! exclude = ["**/*.tmp"]    # globs relative to src; default none
//! mode = "0644"             # override the mode of regular files (octal, at most 0o7777)
//! dir_mode = "0755"         # override the mode of directories
//! owner = "1000:1000"       # numeric uid:gid for every entry; default 0:0
//! xattrs = false            # record extended attributes; default false (reproducible)
//!
//! [[layer]]
//! kind = "file"             # one file with inline content
//! dest = "/etc/motd"        # absolute file path
//! content = "hello\n"
//! mode = "0644"             # default "0644"
//! owner = "0:0"             # default "0:0"
//!
//! [config]
//! entrypoint = ["/bin/httpd", "-f"]
//! cmd = ["-p", "8080"]
//! env = { PATH = "/bin", GREETING = "hi" }   # names: [A-Za-z_][A-Za-z0-9_]*
//! workdir = "/www"                            # absolute
//! user = "1000:1000"                          # "uid", "uid:gid", "name" or "name:group"
//! ports = ["8080/tcp", "53/udp", 9000]        # 1-65535, /tcp (default), /udp or /sctp
//! labels = { "org.opencontainers.image.source" = "https://example.com" }
//! stop_signal = "SIGTERM"                     # a name, "SIGRTMIN+n", or a number 1-64
//!
//! [config.health]
//! kind = "http"             # "http" (port, path), "tcp" (port) or "exec" (command)
//! port = 8080              # default: the instance's port (PORT)
//! path = "/healthz"         # default "/"
//! interval = "5s"           # durations: "500ms", "5s", "1m", "1m30s", "1h"; default "10s"
//! timeout = "2s"            # default "3s"; at most interval
//! retries = 3               # default 3; at least 1
//! start_period = "0s"       # default "0s"
//! # an exec probe instead: kind = "exec", command = ["/bin/check", "--quick"]
//! ```
//!
//! The located TOML tree and the generic checks (unknown keys, wrong types,
//! positions, durations) are `crate::toml_doc`'s; the `[config.health]` table
//! is read by `crate::health`, which other formats share. This module holds
//! what only `drover.toml` has.
//!
//! Glob syntax is [`globset`]'s with `*` not crossing `/` (use `**` for any
//! depth); [`compile_glob`] is the one place that decides it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;
use crate::health::{self, Deadline};
use crate::toml_doc::{self, Checker, Kinded, Node, Table, Value, index_key};

pub use crate::health::{HealthCheck, Probe};
pub use crate::toml_doc::parse_duration;

/// A parsed and validated `drover.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDef {
    /// The definition file, as given.
    pub file: PathBuf,
    /// The build context: the definition file's directory (`.` for a bare
    /// file name). Copy layer sources and layout bases are relative to it.
    pub context: PathBuf,
    pub name: String,
    pub tag: String,
    /// `None` when the definition does not say, so a command-line flag can
    /// choose; the builder's default is [`Compression::Gzip`].
    pub compression: Option<Compression>,
    /// Compression level; unset means the default for the compression
    /// (`Compression::default_level`).
    pub compression_level: Option<u32>,
    pub base: Base,
    pub layers: Vec<LayerDef>,
    pub config: RuntimeConfig,
}

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The levels this compression accepts.
    pub fn levels(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Compression::Gzip => 1..=9,
            Compression::Zstd => 1..=19,
        }
    }

    /// The level used when none is given. gzip 1 (zlib's fast "quick"
    /// strategy) is 3-4x faster than level 6 and makes layers about a fifth
    /// larger; level 2 is within 3% of level 6's size at 2.6x its speed.
    /// zstd 3 is zstd's own default: smaller than gzip 6 and faster than gzip 1.
    pub fn default_level(self) -> u32 {
        match self {
            Compression::Gzip => 1,
            Compression::Zstd => 3,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!(
                "{s:?} is not a compression (expected \"gzip\" or \"zstd\")"
            )),
        }
    }
}

/// What the image's first layer goes on top of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// Nothing: the image is exactly its layers.
    Scratch,
    /// An image in drover's store, by manifest digest.
    Store(Digest),
    /// An image in an OCI image layout directory, by manifest digest.
    Layout {
        /// The layout directory, already joined to the build context.
        dir: PathBuf,
        digest: Digest,
    },
}

/// One layer to build. Serializes to canonical JSON (`{"kind":"copy",...}`)
/// for the layer cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LayerDef {
    Copy(CopyLayer),
    File(FileLayer),
}

/// Copy a directory tree from the build context into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyLayer {
    /// Relative to the build context, normalized: no `.` or empty
    /// components, no trailing `/`; `"."` for the context itself.
    pub src: String,
    /// Absolute and normalized (see [`RuntimeConfig::workdir`]).
    pub dest: String,
    /// Globs relative to `src`; `["**"]` unless given. Never empty.
    pub include: Vec<String>,
    /// Globs relative to `src`.
    pub exclude: Vec<String>,
    /// Mode for regular files, overriding the source's.
    pub mode: Option<u32>,
    /// Mode for directories, overriding the source's.
    pub dir_mode: Option<u32>,
    /// `(uid, gid)` for every entry; `None` means `0:0`.
    pub owner: Option<(u32, u32)>,
    /// Record extended attributes.
    pub xattrs: bool,
}

/// A single file with inline content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileLayer {
    /// Absolute, normalized, not `/` and not ending in `/`.
    pub dest: String,
    pub content: String,
    pub mode: u32,
    pub owner: (u32, u32),
}

/// How a container from the image runs (the OCI image config), plus drover's
/// health check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuntimeConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Absolute and normalized: no `.`, `..` or empty components and no
    /// trailing `/` (except `/` itself).
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Normalized `"<port>/<tcp|udp|sctp>"`, in the order written, no duplicates.
    pub ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Normalized: `"SIGTERM"`, `"SIGRTMIN"`, `"SIGRTMIN+3"`, `"SIGRTMAX"`.
    pub stop_signal: Option<String>,
    pub health: Option<HealthCheck>,
}

const DEFAULT_TAG: &str = "latest";
const DEFAULT_FILE_MODE: u32 = 0o644;

/// Reads and parses the definition at `path`. An unreadable file is
/// [`Error::Io`](crate::Error::Io); everything else wrong is
/// [`Error::Definition`](crate::Error::Definition).
pub fn load(path: &Path) -> Result<ImageDef> {
    let text = toml_doc::read(path, "a definition")?;
    parse(&text, path)
}

/// Parses definition `text`; `file` is where it came from, for error messages
/// and the build context. Reads nothing from disk.
pub fn parse(text: &str, file: &Path) -> Result<ImageDef> {
    let (root, checker) = toml_doc::parse(text, file)?;
    let context = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Def(checker).image_def(&root, file, context)
}

/// Compiles a copy layer's include or exclude pattern. The builder must use
/// this too, so what validates here is exactly what matches there: `*` and `?`
/// do not match `/`, `**` matches any number of path components.
pub fn compile_glob(pattern: &str) -> std::result::Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
}

// ---------------------------------------------------------------------------
// Validation.

const TOP_KEYS: &[&str] = &["image", "layer", "config"];
const IMAGE_KEYS: &[&str] = &["name", "tag", "compression", "compression_level", "base"];
const BASE_KEYS: &[&str] = &["image", "layout", "digest"];
const LAYER_KINDS: &[&str] = &["copy", "file"];
const COPY_KEYS: &[&str] = &[
    "kind", "src", "dest", "include", "exclude", "mode", "dir_mode", "owner", "xattrs",
];
const FILE_KEYS: &[&str] = &["kind", "dest", "content", "mode", "owner"];
const CONFIG_KEYS: &[&str] = &[
    "entrypoint",
    "cmd",
    "env",
    "workdir",
    "user",
    "ports",
    "labels",
    "stop_signal",
    "health",
];

/// `drover.toml`'s rules, on top of the generic [`Checker`] (whose helpers
/// its methods call as `self.string(..)`, `self.table(..)`).
struct Def<'a>(Checker<'a>);

impl<'a> Deref for Def<'a> {
    type Target = Checker<'a>;

    fn deref(&self) -> &Checker<'a> {
        &self.0
    }
}

impl Def<'_> {
    fn image_def(&self, root: &Node, file: &Path, context: PathBuf) -> Result<ImageDef> {
        let top = self.table(root, "", TOP_KEYS)?;
        let Some(image) = top.get("image") else {
            return Err(self.err(
                0,
                "image",
                "missing required table (a definition starts with [image] and name = \"...\")",
            ));
        };
        let image = self.table(image, "image", IMAGE_KEYS)?;

        let name_node =
            self.required(&image, "name", "the repository name, e.g. name = \"hello\"")?;
        let name = self.string(name_node, "image.name")?;
        if !is_repository_name(name) {
            return Err(self.err(
                name_node.at(),
                "image.name",
                format!(
                    "{name:?} is not a repository name (expected lowercase letters and digits, \
                     separated by '.', '_', '__' or '-' and joined by '/', e.g. \"hello\" or \"team/web\")"
                ),
            ));
        }

        let tag = match image.get("tag") {
            None => DEFAULT_TAG.to_string(),
            Some(node) => {
                let tag = self.string(node, "image.tag")?;
                if !is_tag(tag) {
                    return Err(self.err(
                        node.at(),
                        "image.tag",
                        format!(
                            "{tag:?} is not a tag (expected 1 to 128 of A-Z a-z 0-9 _ . -, \
                             not starting with '.' or '-', e.g. \"1.0\")"
                        ),
                    ));
                }
                tag.to_string()
            }
        };

        let compression = match image.get("compression") {
            None => None,
            Some(node) => {
                let s = self.string(node, "image.compression")?;
                Some(
                    s.parse()
                        .map_err(|e: String| self.err(node.at(), "image.compression", e))?,
                )
            }
        };

        let compression_level = match image.get("compression_level") {
            None => None,
            Some(node) => {
                let key = "image.compression_level";
                let n = self.integer(node, key)?;
                let c: Compression = compression.unwrap_or_default();
                let level = u32::try_from(n).ok().filter(|l| c.levels().contains(l));
                Some(level.ok_or_else(|| {
                    let r = c.levels();
                    self.err(
                        node.at(),
                        key,
                        format!(
                            "{n} is not a {c} level (expected {} to {})",
                            r.start(),
                            r.end()
                        ),
                    )
                })?)
            }
        };

        let base = match image.get("base") {
            None => Base::Scratch,
            Some(node) => self.base(node, &context)?,
        };

        let layers = match top.get("layer") {
            None => Vec::new(),
            Some(node) => {
                let items = self.array(node, "layer", "an array of tables ([[layer]])")?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.layer(item, &index_key("layer", i)))
                    .collect::<Result<_>>()?
            }
        };

        let config = match top.get("config") {
            None => RuntimeConfig::default(),
            Some(node) => self.config(node)?,
        };

        Ok(ImageDef {
            file: file.to_path_buf(),
            context,
            name: name.to_string(),
            tag,
            compression,
            compression_level,
            base,
            layers,
            config,
        })
    }

    fn base(&self, node: &Node, context: &Path) -> Result<Base> {
        const KEY: &str = "image.base";
        const FORMS: &str = "\"scratch\", { image = \"sha256:...\" } or \
                             { layout = \"dir\", digest = \"sha256:...\" }";
        if let Value::String(s) = &node.value {
            if s == "scratch" {
                return Ok(Base::Scratch);
            }
            return Err(self.err(
                node.at(),
                KEY,
                format!("{s:?} is not a base (expected {FORMS})"),
            ));
        }
        if !matches!(node.value, Value::Table(_)) {
            return Err(self.wrong_type(node, KEY, &format!("one of {FORMS}")));
        }
        let table = self.table(node, KEY, BASE_KEYS)?;
        let digest = |node: &Node, key: &str| -> Result<Digest> {
            let path = table.key(key);
            self.string(node, &path)?
                .parse()
                .map_err(|e| self.err(node.at(), &path, e))
        };
        match (table.get("image"), table.get("layout")) {
            (Some(_), Some(layout)) => Err(self.err(
                layout.at(),
                &table.key("layout"),
                "a base is either image = \"sha256:...\" or layout = \"dir\", not both",
            )),
            (Some(image), None) => {
                if let Some(extra) = table.get("digest") {
                    return Err(self.err(
                        extra.at(),
                        &table.key("digest"),
                        "only used with layout (a store base is pinned by image = \"sha256:...\" itself)",
                    ));
                }
                Ok(Base::Store(digest(image, "image")?))
            }
            (None, Some(layout)) => {
                let dir = self.string(layout, &table.key("layout"))?;
                if dir.is_empty() {
                    return Err(self.err(
                        layout.at(),
                        &table.key("layout"),
                        "empty (expected the OCI layout directory, relative to the definition's directory)",
                    ));
                }
                let digest_node = self.required(
                    &table,
                    "digest",
                    "a layout base also needs the manifest digest: digest = \"sha256:...\"",
                )?;
                Ok(Base::Layout {
                    dir: context.join(dir),
                    digest: digest(digest_node, "digest")?,
                })
            }
            (None, None) => Err(self.err(
                table.at,
                KEY,
                format!("expected image or layout in the table ({FORMS})"),
            )),
        }
    }

    fn layer(&self, node: &Node, path: &str) -> Result<LayerDef> {
        let table = self.as_table(node, path)?;
        let kind = self.kind(&table, LAYER_KINDS, "layer")?;
        let all: Vec<&str> = COPY_KEYS.iter().chain(FILE_KEYS).copied().collect();
        let kinded = Kinded {
            all: &all,
            what: format!("{kind:?} layer"),
        };
        let allowed = if kind == "copy" { COPY_KEYS } else { FILE_KEYS };
        self.check_keys(&table, allowed, Some(&kinded))?;
        if kind == "copy" {
            self.copy_layer(&table).map(LayerDef::Copy)
        } else {
            self.file_layer(&table).map(LayerDef::File)
        }
    }

    fn copy_layer(&self, t: &Table<'_>) -> Result<CopyLayer> {
        let src_node = self.required(
            t,
            "src",
            "the directory to copy, relative to the build context, e.g. src = \"rootfs\" or \".\"",
        )?;
        let src_key = t.key("src");
        let src = normalize_relative(self.string(src_node, &src_key)?)
            .map_err(|e| self.err(src_node.at(), &src_key, e))?;

        let dest_node = self.required(
            t,
            "dest",
            "the absolute path in the image, e.g. dest = \"/\"",
        )?;
        let dest_key = t.key("dest");
        let dest = normalize_absolute(self.string(dest_node, &dest_key)?)
            .map_err(|e| self.err(dest_node.at(), &dest_key, e))?;

        let include = match t.get("include") {
            None => vec!["**".to_string()],
            Some(node) => {
                let globs = self.globs(node, &t.key("include"))?;
                if globs.is_empty() {
                    return Err(self.err(
                        node.at(),
                        &t.key("include"),
                        "empty, so nothing would be copied (omit include to copy everything)",
                    ));
                }
                globs
            }
        };
        let exclude = match t.get("exclude") {
            None => Vec::new(),
            Some(node) => self.globs(node, &t.key("exclude"))?,
        };

        Ok(CopyLayer {
            src,
            dest,
            include,
            exclude,
            mode: self.opt_mode(t, "mode")?,
            dir_mode: self.opt_mode(t, "dir_mode")?,
            owner: self.opt_owner(t)?,
            xattrs: match t.get("xattrs") {
                None => false,
                Some(node) => self.boolean(node, &t.key("xattrs"))?,
            },
        })
    }

    fn file_layer(&self, t: &Table<'_>) -> Result<FileLayer> {
        let dest_node = self.required(
            t,
            "dest",
            "the file's absolute path, e.g. dest = \"/etc/motd\"",
        )?;
        let dest_key = t.key("dest");
        let raw = self.string(dest_node, &dest_key)?;
        let dest = normalize_absolute(raw).map_err(|e| self.err(dest_node.at(), &dest_key, e))?;
        if dest == "/" || raw.ends_with('/') {
            return Err(self.err(
                dest_node.at(),
                &dest_key,
                format!(
                    "{raw:?} is a directory (a file layer's dest names a file, e.g. \"/etc/motd\")"
                ),
            ));
        }
        let content_node =
            self.required(t, "content", "the file's text, e.g. content = \"hello\\n\"")?;
        let content = self.string(content_node, &t.key("content"))?.to_string();
        Ok(FileLayer {
            dest,
            content,
            mode: self.opt_mode(t, "mode")?.unwrap_or(DEFAULT_FILE_MODE),
            owner: self.opt_owner(t)?.unwrap_or((0, 0)),
        })
    }

    fn globs(&self, node: &Node, key: &str) -> Result<Vec<String>> {
        let items = self.array(node, key, "an array of glob strings")?;
        let mut globs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let key = index_key(key, i);
            let pattern = self.string(item, &key)?;
            if pattern.starts_with('/') {
                return Err(self.err(
                    item.at(),
                    &key,
                    format!("{pattern:?} is absolute (globs match paths relative to src, e.g. \"etc/**\")"),
                ));
            }
            if let Err(e) = compile_glob(pattern) {
                return Err(self.err(
                    item.at(),
                    &key,
                    format!("{pattern:?} is not a valid glob: {}", e.kind()),
                ));
            }
            globs.push(pattern.to_string());
        }
        Ok(globs)
    }

    fn opt_mode(&self, t: &Table<'_>, name: &str) -> Result<Option<u32>> {
        let Some(node) = t.get(name) else {
            return Ok(None);
        };
        let key = t.key(name);
        let s = match &node.value {
            Value::String(s) => s,
            Value::Integer(_) => {
                return Err(self.err(
                    node.at(),
                    &key,
                    "expected an octal string such as \"0644\", found an integer \
                     (TOML integers are decimal; quote the mode)",
                ));
            }
            _ => return Err(self.wrong_type(node, &key, "an octal string such as \"0644\"")),
        };
        parse_mode(s).map(Some).ok_or_else(|| {
            self.err(
                node.at(),
                &key,
                format!("{s:?} is not an octal mode (expected e.g. \"0644\", at most 0o7777)"),
            )
        })
    }

    fn opt_owner(&self, t: &Table<'_>) -> Result<Option<(u32, u32)>> {
        let Some(node) = t.get("owner") else {
            return Ok(None);
        };
        let key = t.key("owner");
        let s = self.string(node, &key)?;
        parse_owner(s).map(Some).ok_or_else(|| {
            self.err(
                node.at(),
                &key,
                format!("{s:?} is not a numeric owner (expected \"uid:gid\", e.g. \"1000:1000\")"),
            )
        })
    }

    fn config(&self, node: &Node) -> Result<RuntimeConfig> {
        let t = self.table(node, "config", CONFIG_KEYS)?;
        let mut config = RuntimeConfig::default();
        if let Some(node) = t.get("entrypoint") {
            config.entrypoint = Some(self.strings(node, &t.key("entrypoint"))?);
        }
        if let Some(node) = t.get("cmd") {
            config.cmd = Some(self.strings(node, &t.key("cmd"))?);
        }
        if let Some(node) = t.get("env") {
            config.env = self.string_map(node, &t.key("env"), |name| {
                is_env_name(name).then_some(()).ok_or_else(|| {
                    format!(
                        "{name:?} is not an environment variable name \
                         (expected letters, digits and '_', not starting with a digit)"
                    )
                })
            })?;
        }
        if let Some(node) = t.get("workdir") {
            let key = t.key("workdir");
            let workdir = normalize_absolute(self.string(node, &key)?)
                .map_err(|e| self.err(node.at(), &key, e))?;
            config.workdir = Some(workdir);
        }
        if let Some(node) = t.get("user") {
            let key = t.key("user");
            let user = self.string(node, &key)?;
            if !is_user(user) {
                return Err(self.err(
                    node.at(),
                    &key,
                    format!(
                        "{user:?} is not a user (expected \"uid\", \"uid:gid\", \"name\" or \
                         \"name:group\", e.g. \"1000:1000\" or \"nobody\")"
                    ),
                ));
            }
            config.user = Some(user.to_string());
        }
        if let Some(node) = t.get("ports") {
            config.ports = self.ports(node, &t.key("ports"))?;
        }
        if let Some(node) = t.get("labels") {
            config.labels = self.string_map(node, &t.key("labels"), |name| {
                if name.is_empty() {
                    Err("a label key must not be empty".to_string())
                } else {
                    Ok(())
                }
            })?;
        }
        if let Some(node) = t.get("stop_signal") {
            config.stop_signal = Some(self.signal(node, &t.key("stop_signal"))?);
        }
        if let Some(node) = t.get("health") {
            config.health = Some(health::parse(
                self,
                node,
                &t.key("health"),
                Deadline::Refused,
            )?);
        }
        Ok(config)
    }

    fn ports(&self, node: &Node, path: &str) -> Result<Vec<String>> {
        let items = self.array(node, path, "an array of ports such as \"8080/tcp\" or 8080")?;
        let mut ports = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let key = index_key(path, i);
            let port = match &item.value {
                Value::Integer(n) => parse_port(&n.to_string()),
                Value::String(s) => parse_port(s),
                _ => {
                    return Err(self.wrong_type(item, &key, "a port such as \"8080/tcp\" or 8080"));
                }
            };
            let Some(port) = port else {
                let written = match &item.value {
                    Value::String(s) => format!("{s:?}"),
                    Value::Integer(n) => n.to_string(),
                    _ => unreachable!("non-port types returned above"),
                };
                return Err(self.err(
                    item.at(),
                    &key,
                    format!(
                        "{written} is not a port (expected 1-65535, optionally with /tcp, /udp \
                         or /sctp, e.g. \"8080/tcp\" or 8080)"
                    ),
                ));
            };
            if !seen.insert(port.clone()) {
                return Err(self.err(item.at(), &key, format!("{port} is listed twice")));
            }
            ports.push(port);
        }
        Ok(ports)
    }

    fn signal(&self, node: &Node, key: &str) -> Result<String> {
        let written = match &node.value {
            Value::String(s) => s.clone(),
            Value::Integer(n) => n.to_string(),
            _ => {
                return Err(self.wrong_type(
                    node,
                    key,
                    "a signal name such as \"SIGTERM\" or a number",
                ));
            }
        };
        normalize_signal(&written).ok_or_else(|| {
            self.err(
                node.at(),
                key,
                format!(
                    "{written:?} is not a signal (expected a name such as \"SIGTERM\" or \
                     \"SIGINT\", \"SIGRTMIN+n\", or a number 1-31 or 34-64)"
                ),
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Value grammars.

/// The OCI distribution spec's repository name:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn is_repository_name(name: &str) -> bool {
    name.split('/').all(|component| {
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
            return false;
        };
        if !alnum(first) || !alnum(last) {
            return false;
        }
        // Between alphanumeric runs: ".", "_", "__" or any number of "-".
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
            if !ok {
                return false;
            }
        }
        true
    })
}

/// The OCI tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    let bytes = tag.as_bytes();
    (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| ok(*b))
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `uid`, `uid:gid`, `name`, `name:group` (and mixes): numbers fit a u32,
/// names are `[A-Za-z_][A-Za-z0-9_.-]*`, at most 32 characters.
fn is_user(user: &str) -> bool {
    let part = |p: &str| {
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            return p.parse::<u32>().is_ok();
        }
        let mut bytes = p.bytes();
        p.len() <= 32
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    match user.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(user),
    }
}

fn parse_decimal_u32(s: &str) -> Option<u32> {
    // `u32::from_str` accepts a leading '+'; a mode or id never has one.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An octal mode string (`"644"`, `"0644"`, `"4755"`), at most `0o7777`.
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// `"uid:gid"`, both decimal.
fn parse_owner(s: &str) -> Option<(u32, u32)> {
    let (uid, gid) = s.split_once(':')?;
    Some((parse_decimal_u32(uid)?, parse_decimal_u32(gid)?))
}

/// `"8080"`, `"8080/tcp"`, `"53/udp"`, `"9/sctp"` into `"<port>/<proto>"`.
fn parse_port(s: &str) -> Option<String> {
    let (number, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return None;
    }
    let port = parse_decimal_u32(number)?;
    (1..=65535)
        .contains(&port)
        .then(|| format!("{port}/{proto}"))
}

/// Linux signal names in number order (x86-64 and arm64 numbering), without
/// the `SIG` prefix.
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
/// glibc's SIGRTMIN and SIGRTMAX (32 and 33 are reserved by the C library).
const SIGRTMIN: u32 = 34;
const SIGRTMAX: u32 = 64;

/// A signal name (any case, with or without `SIG`), `SIGRTMIN+n`,
/// `SIGRTMAX-n`, or a number, into its canonical name.
fn normalize_signal(s: &str) -> Option<String> {
    let realtime = |n: u32| -> String {
        match n {
            SIGRTMIN => "SIGRTMIN".to_string(),
            SIGRTMAX => "SIGRTMAX".to_string(),
            n => format!("SIGRTMIN+{}", n - SIGRTMIN),
        }
    };
    if let Some(n) = parse_decimal_u32(s) {
        return match n {
            1..=31 => Some(format!("SIG{}", SIGNALS[n as usize - 1])),
            SIGRTMIN..=SIGRTMAX => Some(realtime(n)),
            _ => None,
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let name = match name {
        "IOT" => "ABRT",
        "POLL" => "IO",
        "CLD" => "CHLD",
        other => other,
    };
    if SIGNALS.contains(&name) {
        return Some(format!("SIG{name}"));
    }
    let offset = |rest: &str| parse_decimal_u32(rest).filter(|k| *k <= SIGRTMAX - SIGRTMIN);
    let n = if name == "RTMIN" {
        SIGRTMIN
    } else if name == "RTMAX" {
        SIGRTMAX
    } else if let Some(rest) = name.strip_prefix("RTMIN+") {
        SIGRTMIN + offset(rest)?
    } else if let Some(rest) = name.strip_prefix("RTMAX-") {
        SIGRTMAX - offset(rest)?
    } else {
        return None;
    };
    Some(realtime(n))
}

/// An absolute path in the image, without empty or `.` components or a
/// trailing `/`; `..` is refused rather than resolved.
fn normalize_absolute(path: &str) -> std::result::Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} is not absolute (expected a path in the image starting with '/', e.g. \"/app\")"
        ));
    }
    let parts = components(path)?;
    Ok(format!("/{}", parts.join("/")))
}

/// A path relative to the build context, without empty or `.` components;
/// `"."` for the context itself. Absolute paths and `..` are refused.
fn normalize_relative(path: &str) -> std::result::Result<String, String> {
    if path.is_empty() {
        return Err(
            "empty (expected a path relative to the build context; \".\" is all of it)".into(),
        );
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute (expected a path relative to the build context, e.g. \"rootfs\" or \".\")"
        ));
    }
    let parts = components(path)?;
    Ok(if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    })
}

fn components(path: &str) -> std::result::Result<Vec<&str>, String> {
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "{path:?} contains \"..\" (paths may not climb out of their root)"
                ));
            }
            part => parts.push(part),
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

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
        let source = include_str!("def.rs");
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
            ],
            config: RuntimeConfig {
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
        let def = ok(
            "image.name = \"a\"\nimage.tag = \"b\"\n[config.health]\nkind = \"tcp\"\nport = 1\n",
        );
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
            "unknown key (expected one of: image, layer, config)",
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
            "missing required key (expected \"copy\" or \"file\")",
        );
        fails(
            "[image]\nname = \"a\"\n[[layer]]\nkind = \"tar\"\n",
            4,
            8,
            Some("layer[0].kind"),
            "\"tar\" is not a layer kind (expected \"copy\" or \"file\")",
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
        assert!(is_tag(&"a".repeat(128)));
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
            &health_with("interval = \"1s\""),
            6,
            12,
            Some("config.health.interval"),
            "1s is shorter than the default timeout, 3s",
        );
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

    // --- grammars ---------------------------------------------------------

    #[test]
    fn signals_normalize() {
        for (input, canonical) in [
            ("SIGTERM", "SIGTERM"),
            ("term", "SIGTERM"),
            ("SigKill", "SIGKILL"),
            ("9", "SIGKILL"),
            ("1", "SIGHUP"),
            ("31", "SIGSYS"),
            ("SIGIOT", "SIGABRT"),
            ("SIGRTMIN", "SIGRTMIN"),
            ("34", "SIGRTMIN"),
            ("SIGRTMIN+3", "SIGRTMIN+3"),
            ("37", "SIGRTMIN+3"),
            ("SIGRTMAX-1", "SIGRTMIN+29"),
            ("64", "SIGRTMAX"),
            ("RTMIN+30", "SIGRTMAX"),
        ] {
            assert_eq!(
                normalize_signal(input).as_deref(),
                Some(canonical),
                "{input}"
            );
        }
        for bad in [
            "",
            "SIG",
            "0",
            "32",
            "33",
            "65",
            "SIGRTMIN+31",
            "SIGRTMAX-31",
            "SIGRTMIN+-1",
        ] {
            assert_eq!(normalize_signal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn names_users_and_env() {
        for good in [
            "a", "a1", "a.b", "a_b", "a__b", "a---b", "team/web", "x/y/z9",
        ] {
            assert!(is_repository_name(good), "{good}");
        }
        for bad in ["A", "a___b", "a._b", "/a", "a//b", "a.", "é"] {
            assert!(!is_repository_name(bad), "{bad}");
        }
        for good in [
            "0",
            "1000:1000",
            "nobody",
            "www-data:www-data",
            "app:0",
            "_x",
        ] {
            assert!(is_user(good), "{good}");
        }
        for bad in ["", ":", "1000:", ":1000", "a:b:c", "4294967296", "1x", "-a"] {
            assert!(!is_user(bad), "{bad}");
        }
        assert!(is_env_name("_A1") && !is_env_name("") && !is_env_name("A-B"));
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
}
