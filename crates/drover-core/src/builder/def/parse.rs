//! `drover.toml`'s rules: every key and value of a definition checked into
//! the types of the parent module, each error located (see its docs). The
//! value grammars themselves are [`crate::grammar`]'s.

use std::collections::HashSet;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use super::{
    Base, Compression, CopyLayer, DEFAULT_FILE_MODE, DEFAULT_RUN_TIMEOUT_MS, DEFAULT_SUITE,
    DEFAULT_TAG, FileLayer, ImageDef, LayerDef, PackagesLayer, RepositoryDef, RunLayer, RunMount,
    RuntimeConfig, compile_glob,
};
use crate::digest::Digest;
use crate::error::Result;
use crate::grammar;
use crate::health::{self, Deadline};
use crate::toml_doc::{Checker, Kinded, Node, Table, Value, index_key};

const TOP_KEYS: &[&str] = &["image", "layer", "account", "accounts", "config"];
const IMAGE_KEYS: &[&str] = &["name", "tag", "compression", "compression_level", "base"];
const BASE_KEYS: &[&str] = &["image", "layout", "digest"];
const LAYER_KINDS: &[&str] = &["copy", "file", "packages", "run"];
const COPY_KEYS: &[&str] = &[
    "kind", "src", "dest", "include", "exclude", "mode", "dir_mode", "owner", "xattrs",
];
const FILE_KEYS: &[&str] = &["kind", "dest", "content", "mode", "owner"];
const PACKAGES_KEYS: &[&str] = &[
    "kind",
    "packages",
    "suite",
    "components",
    "arch",
    "repositories",
    "recommends",
    "essential",
    "scripts",
];
const REPOSITORY_KEYS: &[&str] = &["url", "keyring"];
const RUN_KEYS: &[&str] = &[
    "kind", "command", "mounts", "network", "timeout", "env", "workdir", "user",
];
const MOUNT_KEYS: &[&str] = &["src", "dest"];
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
    "tmpfs",
    "init",
];

/// `drover.toml`'s rules, on top of the generic [`Checker`] (whose helpers
/// its methods call as `self.string(..)`, `self.table(..)`).
pub(super) struct Def<'a>(pub(super) Checker<'a>);

impl<'a> Deref for Def<'a> {
    type Target = Checker<'a>;

    fn deref(&self) -> &Checker<'a> {
        &self.0
    }
}

impl Def<'_> {
    pub(super) fn image_def(&self, root: &Node, file: &Path, context: PathBuf) -> Result<ImageDef> {
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
        grammar::repository(name).map_err(|e| self.err(name_node.at(), "image.name", e))?;

        let tag = match image.get("tag") {
            None => DEFAULT_TAG.to_string(),
            Some(node) => {
                let tag = self.string(node, "image.tag")?;
                grammar::tag(tag).map_err(|e| self.err(node.at(), "image.tag", e))?;
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
        let accounts = self.accounts(&top)?;

        Ok(ImageDef {
            file: file.to_path_buf(),
            context,
            name: name.to_string(),
            tag,
            compression,
            compression_level,
            base,
            layers,
            accounts,
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
        let all: Vec<&str> = [COPY_KEYS, FILE_KEYS, PACKAGES_KEYS, RUN_KEYS].concat();
        let kinded = Kinded {
            all: &all,
            what: format!("{kind:?} layer"),
        };
        let allowed = match kind {
            "copy" => COPY_KEYS,
            "file" => FILE_KEYS,
            "packages" => PACKAGES_KEYS,
            _ => RUN_KEYS,
        };
        self.check_keys(&table, allowed, Some(&kinded))?;
        match kind {
            "copy" => self.copy_layer(&table).map(LayerDef::Copy),
            "file" => self.file_layer(&table).map(LayerDef::File),
            "packages" => self.packages_layer(&table).map(LayerDef::Packages),
            _ => self.run_layer(&table).map(LayerDef::Run),
        }
    }

    fn run_layer(&self, t: &Table<'_>) -> Result<RunLayer> {
        let command_node = self.required(
            t,
            "command",
            "the program and its arguments, e.g. command = [\"/bin/sh\", \"-c\", \"make\"]",
        )?;
        let command = self.strings(command_node, &t.key("command"))?;
        if command.is_empty() || command[0].is_empty() {
            return Err(self.err(
                command_node.at(),
                &t.key("command"),
                "empty (expected the program and its arguments, e.g. [\"/bin/sh\", \"-c\", \"make\"])",
            ));
        }
        let mut mounts: Vec<RunMount> = Vec::new();
        if let Some(node) = t.get("mounts") {
            let key = t.key("mounts");
            let items = self.array(
                node,
                &key,
                "an array of tables ({ src = \"dir\", dest = \"/path\" })",
            )?;
            for (i, item) in items.iter().enumerate() {
                let mount = self.run_mount(item, &index_key(&key, i))?;
                if let Some(m) = mounts.iter().find(|m| m.dest == mount.dest) {
                    return Err(self.err(
                        item.at(),
                        &index_key(&key, i),
                        format!("{} is already the mount point of {:?}", mount.dest, m.src),
                    ));
                }
                mounts.push(mount);
            }
        }
        let timeout_ms = match self.duration(t, "timeout")? {
            None => DEFAULT_RUN_TIMEOUT_MS,
            Some((0, node)) => {
                return Err(self.err(
                    node.at(),
                    &t.key("timeout"),
                    "zero (expected a positive duration such as \"10m\")",
                ));
            }
            Some((ms, _)) => ms,
        };
        let workdir = match t.get("workdir") {
            None => "/".to_string(),
            Some(node) => {
                let key = t.key("workdir");
                normalize_absolute(self.string(node, &key)?)
                    .map_err(|e| self.err(node.at(), &key, e))?
            }
        };
        let user = match t.get("user") {
            None => (0, 0),
            Some(node) => {
                let key = t.key("user");
                grammar::owner(self.string(node, &key)?)
                    .map_err(|e| self.err(node.at(), &key, e))?
            }
        };
        Ok(RunLayer {
            command,
            mounts,
            network: match t.get("network") {
                None => false,
                Some(node) => self.boolean(node, &t.key("network"))?,
            },
            timeout_ms,
            env: match t.get("env") {
                None => Default::default(),
                Some(node) => self.string_map(node, &t.key("env"), grammar::env_name)?,
            },
            workdir,
            user,
        })
    }

    fn run_mount(&self, node: &Node, path: &str) -> Result<RunMount> {
        let t = self.table(node, path, MOUNT_KEYS)?;
        let src_node = self.required(
            &t,
            "src",
            "the build-context directory to mount, e.g. src = \"app\"",
        )?;
        let src_key = t.key("src");
        let src = normalize_relative(self.string(src_node, &src_key)?)
            .map_err(|e| self.err(src_node.at(), &src_key, e))?;
        let dest_node = self.required(
            &t,
            "dest",
            "where the command sees it, e.g. dest = \"/src\"",
        )?;
        let dest_key = t.key("dest");
        let dest = normalize_absolute(self.string(dest_node, &dest_key)?)
            .map_err(|e| self.err(dest_node.at(), &dest_key, e))?;
        if dest == "/" {
            return Err(self.err(
                dest_node.at(),
                &dest_key,
                "\"/\" is the image itself (mount the directory somewhere inside it, e.g. \"/src\")",
            ));
        }
        Ok(RunMount { src, dest })
    }

    fn packages_layer(&self, t: &Table<'_>) -> Result<PackagesLayer> {
        let node = self.required(
            t,
            "packages",
            "the Debian packages to install, e.g. packages = [\"nginx-light\"]",
        )?;
        let key = t.key("packages");
        let items = self.array(node, &key, "an array of package names")?;
        if items.is_empty() {
            return Err(self.err(
                node.at(),
                &key,
                "empty (name at least one package, e.g. packages = [\"nginx-light\"])",
            ));
        }
        let mut packages = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let key = index_key(&key, i);
            let s = self.string(item, &key)?;
            let (name, constraint) =
                grammar::deb_request(s).map_err(|e| self.err(item.at(), &key, e))?;
            if !seen.insert(name.to_string()) {
                return Err(self.err(item.at(), &key, format!("{name} is listed twice")));
            }
            // One spelling per meaning: the lock is tied to it.
            packages.push(grammar::deb_request_text(name, constraint));
        }
        let word = |name: &str| -> Result<Option<String>> {
            let Some(node) = t.get(name) else {
                return Ok(None);
            };
            let key = t.key(name);
            let s = self.string(node, &key)?;
            grammar::deb_word(s).map_err(|e| self.err(node.at(), &key, e))?;
            Ok(Some(s.to_string()))
        };
        let suite = word("suite")?.unwrap_or_else(|| DEFAULT_SUITE.to_string());
        let arch = word("arch")?;
        let components = match t.get("components") {
            None => vec!["main".to_string()],
            Some(node) => {
                let key = t.key("components");
                let items = self.array(node, &key, "an array of component names")?;
                if items.is_empty() {
                    return Err(self.err(node.at(), &key, "empty (the default is [\"main\"])"));
                }
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let key = index_key(&key, i);
                    let s = self.string(item, &key)?;
                    grammar::deb_word(s).map_err(|e| self.err(item.at(), &key, e))?;
                    if out.iter().any(|c| c == s) {
                        return Err(self.err(item.at(), &key, format!("{s} is listed twice")));
                    }
                    out.push(s.to_string());
                }
                out
            }
        };
        let repositories = match t.get("repositories") {
            None => Vec::new(),
            Some(node) => {
                let key = t.key("repositories");
                let items = self.array(
                    node,
                    &key,
                    "an array of tables such as { url = \"http://deb.debian.org/debian\" }",
                )?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.repository(item, &index_key(&key, i)))
                    .collect::<Result<_>>()?
            }
        };
        let flag = |name: &str| -> Result<bool> {
            match t.get(name) {
                None => Ok(false),
                Some(node) => self.boolean(node, &t.key(name)),
            }
        };
        Ok(PackagesLayer {
            packages,
            suite,
            components,
            arch,
            repositories,
            recommends: flag("recommends")?,
            essential: flag("essential")?,
            scripts: flag("scripts")?,
        })
    }

    fn repository(&self, node: &Node, path: &str) -> Result<RepositoryDef> {
        let t = self.table(node, path, REPOSITORY_KEYS)?;
        let url_node = self.required(
            &t,
            "url",
            "the repository's base URL, e.g. url = \"http://deb.debian.org/debian\"",
        )?;
        let url_key = t.key("url");
        let url = self.string(url_node, &url_key)?;
        let well_formed = (url.starts_with("http://") || url.starts_with("https://"))
            && !url.chars().any(|c| c.is_whitespace() || c.is_control())
            && url.split_once("://").is_some_and(|(_, rest)| {
                !rest.is_empty() && !rest.starts_with('/') && !rest.contains("/../")
            });
        if !well_formed {
            return Err(self.err(
                url_node.at(),
                &url_key,
                format!("{url:?} is not a repository URL (expected http:// or https://host/path)"),
            ));
        }
        let keyring = match t.get("keyring") {
            None => None,
            Some(node) => {
                let key = t.key("keyring");
                let k = self.string(node, &key)?;
                if !k.starts_with('/') || k.contains('\0') {
                    return Err(self.err(
                        node.at(),
                        &key,
                        format!("{k:?} is not an absolute path to an OpenPGP keyring, e.g. \"/usr/share/keyrings/debian-archive-keyring.gpg\""),
                    ));
                }
                Some(k.to_string())
            }
        };
        Ok(RepositoryDef {
            url: url.trim_end_matches('/').to_string(),
            keyring,
        })
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
            if pattern.split('/').any(|c| c == "..") {
                return Err(self.err(
                    item.at(),
                    &key,
                    format!("{pattern:?} contains \"..\" (globs match paths inside src and cannot climb out of it)"),
                ));
            }
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
        grammar::mode(s)
            .map(Some)
            .map_err(|e| self.err(node.at(), &key, e))
    }

    fn opt_owner(&self, t: &Table<'_>) -> Result<Option<(u32, u32)>> {
        let Some(node) = t.get("owner") else {
            return Ok(None);
        };
        let key = t.key("owner");
        let s = self.string(node, &key)?;
        grammar::owner(s)
            .map(Some)
            .map_err(|e| self.err(node.at(), &key, e))
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
            config.env = self.string_map(node, &t.key("env"), grammar::env_name)?;
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
            grammar::user(user).map_err(|e| self.err(node.at(), &key, e))?;
            config.user = Some(user.to_string());
        }
        if let Some(node) = t.get("ports") {
            config.ports = self.ports(node, &t.key("ports"))?;
        }
        if let Some(node) = t.get("labels") {
            config.labels = self.string_map(node, &t.key("labels"), grammar::label_key)?;
        }
        if let Some(node) = t.get("stop_signal") {
            config.stop_signal = Some(self.signal(node, &t.key("stop_signal"))?);
        }
        if let Some(node) = t.get("tmpfs") {
            config.tmpfs = crate::runtime::tmpfs::parse(self, node, &t.key("tmpfs"))?;
        }
        if let Some(node) = t.get("init") {
            config.init = Some(self.boolean(node, &t.key("init"))?);
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
                Value::Integer(n) => grammar::exposed_port(&n.to_string()),
                Value::String(s) => grammar::exposed_port(s),
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
        grammar::signal(&written)
            .map(|s| s.to_string())
            .map_err(|e| self.err(node.at(), key, e))
    }
}

// ---------------------------------------------------------------------------
// Paths.

/// An absolute path in the image, without empty or `.` components or a
/// trailing `/`; `..` is refused rather than resolved, and so is a
/// whiteout name (`.wh.…`) anywhere in it ([`grammar::image_path_component`]).
pub(super) fn normalize_absolute(path: &str) -> std::result::Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "{path:?} is not absolute (expected a path in the image starting with '/', e.g. \"/app\")"
        ));
    }
    let parts = components(path)?;
    for part in &parts {
        grammar::image_path_component(part).map_err(|e| format!("{path:?}: {e}"))?;
    }
    Ok(format!("/{}", parts.join("/")))
}

/// A path relative to the build context, without empty or `.` components;
/// `"."` for the context itself. Absolute paths and `..` are refused.
pub(super) fn normalize_relative(path: &str) -> std::result::Result<String, String> {
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
