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
//! kind = "packages"         # Debian packages and everything they depend on
//! packages = ["nginx-light", "ca-certificates=20230311"]   # "name" or "name=version"
//! suite = "bookworm"        # default "bookworm"
//! components = ["main"]     # default ["main"]
//! arch = "amd64"            # default: the building host's
//! recommends = false        # also install Recommends; default false
//! essential = false         # also install the Essential set; default false
//! scripts = false           # default false. true: run the maintainer scripts (preinst
//!                           # install, postinst configure in dependency order, then
//!                           # the triggers the layer activates) in the build sandbox
//!                           # (no network, 10m), as dpkg would; what they change is
//!                           # one more layer, "scripts of layer[N]". Needs /bin/sh in
//!                           # the image (dash, or essential = true) and, for most
//!                           # scripts, coreutils & co. (essential = true); users they
//!                           # add (adduser, which their packages depend on) end up in
//!                           # /etc/passwd before [[account]]s are merged in
//! # Default: the machine's apt sources for the suite. Or name them:
//! repositories = [{ url = "http://deb.debian.org/debian", keyring = "/usr/share/keyrings/debian-archive-keyring.gpg" }]
//! # The exact versions, URLs and sha256s are in drover.lock beside this file
//! # (`drover lock` writes it; a build uses exactly it).
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
//! # Users and groups with fixed ids, merged into the image's /etc/passwd and
//! # /etc/group (kept line for line; a name or id the image gives another
//! # meaning is an error) by a layer the build generates after all others.
//! [[account]]               # or: accounts = [{ name = "app", uid = 10001 }]
//! name = "app"              # required: [A-Za-z_][A-Za-z0-9_.-]{0,31}
//! uid = 10001               # required
//! gid = 10001               # default: the uid
//! group = "app"             # the primary group's name; default: the name
//! home = "/home/app"        # default "/home/<name>", made and owned by the
//!                           # account; "/nonexistent" makes none
//! shell = "/usr/sbin/nologin"  # the default
//! groups = ["adm"]          # supplementary: in the image, or an account's group
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
//! init = true                                # a tiny init as PID 1 (reaps zombies, forwards
//!                                             # signals); default: on for a shell entrypoint
//! tmpfs = ["/var/lib/app", { path = "/var/cache/app", size = "16m" }]
//!   # writable paths in the read-only root: a tmpfs each (default size 64m,
//!   # nosuid, nodev, mode 0755, owned by the instance's user); not /, /tmp,
//!   # /run, nor on /proc, /sys or /dev. The build makes their mount points.
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

mod account;
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
    /// Users and groups with fixed ids (`[[account]]`), written into the
    /// image's `/etc/passwd` and `/etc/group` by a generated layer.
    pub accounts: Vec<Account>,
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
    Packages(PackagesLayer),
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

/// Debian packages, resolved under `drover.lock` (see `builder::packages`).
///
/// Everything here that decides *which* packages are installed is the
/// layer's [`PackagesLayer::request`]; the lock is tied to it, so comments,
/// key order and the order of the package list do not matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagesLayer {
    /// `name` or `name=version`, as written (validated).
    pub packages: Vec<String>,
    /// Default `bookworm`.
    pub suite: String,
    /// Default `["main"]`.
    pub components: Vec<String>,
    /// A Debian architecture (`amd64`, `arm64`); `None`: the host's.
    pub arch: Option<String>,
    /// Empty: the machine's apt sources for the suite.
    pub repositories: Vec<RepositoryDef>,
    /// Follow `Recommends` as well as `Depends` (default false).
    pub recommends: bool,
    /// Add the `Essential: yes` set (default false).
    pub essential: bool,
    /// Run the maintainer scripts in the build sandbox (default false).
    pub scripts: bool,
}

/// A repository a packages layer names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RepositoryDef {
    /// `http://` or `https://`, without a trailing `/`.
    pub url: String,
    /// An OpenPGP keyring file (absolute path on the building host);
    /// `None`: `debian-archive-keyring`.
    pub keyring: Option<String>,
}

/// The default suite of a packages layer.
pub const DEFAULT_SUITE: &str = "bookworm";
/// The default keyring of a Debian repository.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// A user the build adds to the image (`[[account]]`), with its primary
/// group. Names follow [`crate::grammar::account_name`]; paths are
/// absolute and normalized, without `:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// Default: `uid`.
    pub gid: u32,
    /// The primary group's name; default: `name`.
    pub group: String,
    /// Default `/home/<name>`, made and owned by the account;
    /// [`NO_HOME`] makes none.
    pub home: String,
    /// Default [`DEFAULT_SHELL`].
    pub shell: String,
    /// Supplementary groups, each in the image or another account's primary group.
    pub groups: Vec<String>,
}

/// An account's home that is not made (Debian's and Docker's convention).
pub const NO_HOME: &str = "/nonexistent";
/// An account's shell unless it says: Debian's, as base-passwd writes it.
pub const DEFAULT_SHELL: &str = "/usr/sbin/nologin";
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
    /// Writable tmpfs paths (see `runtime::tmpfs`), sorted; carried as the
    /// image label `vnd.drover.tmpfs`. Left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<crate::runtime::tmpfs::Tmpfs>,
    /// `init = true|false`: carried as the image label `vnd.drover.init`;
    /// `None` (left out of the JSON): decided when it runs (on for a shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
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
