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
//! [[layer]]
//! kind = "run"              # run a command on the image built so far; the layer is
//!                           # what it changed (adds, changes, deletions as whiteouts)
//! command = ["/bin/sh", "-c", "echo hi > /etc/greeting"]   # required, not empty
//! mounts = [{ src = "app", dest = "/src" }]   # build-context directories, read-only;
//!                           # src relative to the build context, dest absolute
//! network = false           # default false: only a loopback interface
//! timeout = "10m"           # default "10m"; the command is killed after it
//! env = { LANG = "C.UTF-8" }   # over the image's environment (PATH defaults
//!                              # to the usual /usr/local/sbin:...:/bin)
//! workdir = "/"             # absolute; default "/"
//! user = "0:0"              # numeric uid:gid; default root of the sandbox
//!
//! [config]
//! entrypoint = ["/bin/httpd", "-f"]
//! cmd = ["-p", "8080"]
//! env = { PATH = "/bin", GREETING = "hi" }   # names: [A-Za-z_][A-Za-z0-9_]*
//! workdir = "/www"                            # absolute
//! user = "1000:1000"                          # "uid", "uid:gid", "name" or "name:group"
//! ports = ["8080/tcp", "53/udp", 9000]        # 1-65535, /tcp (default), /udp or /sctp
//! labels = { "org.opencontainers.image.source" = "https://example.com" }
//! stop_signal = "SIGTERM"                     # a name, "SIGRTMIN+n", "SIGRTMAX-n", or a number 1-31 or 34-64
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
//! positions) are `crate::toml_doc`'s; the value grammars (names, tags,
//! signals, durations, users, modes, owners, ports) are [`crate::grammar`]'s,
//! shared with every other reader of such values; the `[config.health]` table
//! is read by `crate::health`, which other formats share. This module holds
//! what only `drover.toml` has: its types here, its rules in `parse`.
//!
//! Glob syntax is [`globset`]'s with `*` not crossing `/` (use `**` for any
//! depth); [`compile_glob`] is the one place that decides it.

#[cfg(test)]
mod fuzz;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;
use crate::toml_doc;

pub use crate::health::{HealthCheck, Probe};

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
    Run(RunLayer),
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

/// A command run in a sandbox made from the image built so far; the layer
/// is what it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLayer {
    /// The program and its arguments; never empty.
    pub command: Vec<String>,
    /// Build-context directories mounted read-only, in order.
    pub mounts: Vec<RunMount>,
    /// Use the host's network (the build is then not hermetic); otherwise
    /// the command sees only a loopback interface.
    pub network: bool,
    /// Milliseconds before the command is killed.
    pub timeout_ms: u64,
    /// Set over the image's environment.
    pub env: BTreeMap<String, String>,
    /// Absolute and normalized.
    pub workdir: String,
    /// `(uid, gid)` the command runs as, inside the sandbox.
    pub user: (u32, u32),
}

/// A build-context directory a run layer's command sees, read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMount {
    /// Relative to the build context, normalized as [`CopyLayer::src`].
    pub src: String,
    /// Absolute, normalized, not `/`.
    pub dest: String,
}

/// A run layer's timeout unless it says otherwise: ten minutes.
pub const DEFAULT_RUN_TIMEOUT_MS: u64 = 10 * 60 * 1000;

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
    parse::Def(checker).image_def(&root, file, context)
}

/// Compiles a copy layer's include or exclude pattern. The builder must use
/// this too, so what validates here is exactly what matches there: `*` and `?`
/// do not match `/`, `**` matches any number of path components.
pub fn compile_glob(pattern: &str) -> std::result::Result<globset::Glob, globset::Error> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
}
