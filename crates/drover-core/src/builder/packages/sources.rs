//! The machine's apt sources, read the way apt reads them:
//! `/etc/apt/sources.list` and `/etc/apt/sources.list.d/*.list` in the
//! one-line format (`deb [opt=val ...] uri suite component...`) and
//! `/etc/apt/sources.list.d/*.sources` in the deb822 format; `deb-src`
//! entries and stanzas with `Enabled: no` are skipped. `Signed-By` (or
//! `[signed-by=...]`) names the keyring a repository must be signed with;
//! without one, Debian's archive keyring. An inline key (apt accepts an
//! armoured key in `Signed-By`) or a fingerprint list is reported as
//! unsupported when a build would use that source. `trusted=yes` is
//! ignored: drover always verifies.

use std::path::{Path, PathBuf};

use super::Repository;
use super::deb822;
use crate::error::{Error, IoContext, Result};

/// The keyring used when a source names none.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// How a source says it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keyring {
    /// A keyring file (below the root the sources were read from).
    Path(PathBuf),
    /// Something drover cannot use; says what (`an inline key`, ...).
    Unsupported(String),
}

/// One `deb` entry: a repository URL and one suite of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Without a trailing `/`.
    pub url: String,
    pub suite: String,
    pub components: Vec<String>,
    /// Empty when the entry does not restrict architectures.
    pub architectures: Vec<String>,
    pub keyring: Keyring,
    /// `file:line` it was read from, for messages.
    pub origin: String,
}

/// Every `deb` source of the machine whose root is `root` (`/` normally),
/// in apt's order: `sources.list`, then `sources.list.d` by file name.
pub fn machine_sources(root: &Path) -> Result<Vec<Source>> {
    let etc = root.join("etc/apt");
    let mut files = Vec::new();
    let main = etc.join("sources.list");
    if main.is_file() {
        files.push(main);
    }
    let dir = etc.join("sources.list.d");
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut found = Vec::new();
            for e in entries {
                let e = e.ctx("read directory", &dir)?;
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                // apt ignores names with other characters (backups, `~` files).
                let ok = name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                if ok
                    && (name.ends_with(".list") || name.ends_with(".sources"))
                    && e.path().is_file()
                {
                    found.push(e.path());
                }
            }
            found.sort();
            files.extend(found);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read directory", dir, e)),
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).ctx("read", &file)?;
        let name = file.to_string_lossy().to_string();
        if name.ends_with(".sources") {
            out.extend(parse_deb822_sources(&text, &file, root)?);
        } else {
            out.extend(parse_one_line_sources(&text, &file, root)?);
        }
    }
    Ok(out)
}

/// The repositories apt would use for `suite` on `arch`: the sources of
/// `suite`, `suite-updates`, `suite-security` (and the old
/// `suite/updates`), in order, the components of repeated entries merged.
pub fn repositories_for(sources: &[Source], suite: &str, arch: &str) -> Result<Vec<Repository>> {
    let suites = [
        suite.to_string(),
        format!("{suite}-updates"),
        format!("{suite}-security"),
        format!("{suite}/updates"),
    ];
    let mut out: Vec<Repository> = Vec::new();
    for s in sources {
        if !suites.contains(&s.suite)
            || !(s.architectures.is_empty() || s.architectures.iter().any(|a| a == arch))
        {
            continue;
        }
        let keyring = match &s.keyring {
            Keyring::Path(p) => p.clone(),
            Keyring::Unsupported(what) => {
                return Err(Error::input(
                    &s.origin,
                    format!(
                        "Signed-By of {} {} is {what}, which drover does not support; save the key to a file and name that file in Signed-By",
                        s.url, s.suite
                    ),
                ));
            }
        };
        match out
            .iter_mut()
            .find(|r| r.url == s.url && r.suite == s.suite && r.keyring == keyring)
        {
            Some(r) => {
                for c in &s.components {
                    if !r.components.contains(c) {
                        r.components.push(c.clone());
                    }
                }
            }
            None => out.push(Repository {
                url: s.url.clone(),
                suite: s.suite.clone(),
                components: s.components.clone(),
                keyring,
            }),
        }
    }
    Ok(out)
}

/// `path` (absolute, as the sources write it) below `root`.
fn rooted(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn keyring(value: Option<&str>, root: &Path) -> std::result::Result<Keyring, String> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Keyring::Path(rooted(root, DEFAULT_KEYRING)));
    };
    if value.contains("-----BEGIN PGP") {
        return Ok(Keyring::Unsupported("an inline key".to_string()));
    }
    let parts: Vec<&str> = value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [one] if one.starts_with('/') => Ok(Keyring::Path(rooted(root, one))),
        [_, _, ..] if parts.iter().all(|p| p.starts_with('/')) => {
            Ok(Keyring::Unsupported("several keyrings".to_string()))
        }
        _ if parts.iter().all(|p| {
            p.trim_end_matches('!')
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
        }) =>
        {
            Ok(Keyring::Unsupported(
                "a list of key fingerprints".to_string(),
            ))
        }
        _ => Err(format!(
            "Signed-By {value:?} is neither an absolute keyring path nor a key"
        )),
    }
}

fn clean_url(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// The one-line format of `sources.list` and `*.list`.
pub fn parse_one_line_sources(text: &str, file: &Path, root: &Path) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| Error::input(file, format!("line {}: {reason}", n + 1));
        let (kind, mut rest) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((line, ""));
        match kind {
            "deb" => {}
            "deb-src" => continue,
            other => {
                return Err(bad(format!(
                    "unknown source type {other:?} (expected deb or deb-src)"
                )));
            }
        }
        rest = rest.trim_start();
        let (mut signed_by, mut architectures) = (None, Vec::new());
        if let Some(opts) = rest.strip_prefix('[') {
            let close = opts
                .find(']')
                .ok_or_else(|| bad("missing `]` after the options".to_string()))?;
            for opt in opts[..close].split_ascii_whitespace() {
                let (key, value) = opt
                    .split_once('=')
                    .ok_or_else(|| bad(format!("option {opt:?} is not key=value")))?;
                match key {
                    "signed-by" => signed_by = Some(value),
                    "arch" => architectures = value.split(',').map(str::to_string).collect(),
                    _ => {}
                }
            }
            rest = &opts[close + 1..];
        }
        let mut words = rest.split_ascii_whitespace();
        let (Some(url), Some(suite)) = (words.next(), words.next()) else {
            return Err(bad(
                "expected `deb [options] URI suite [component...]`".to_string()
            ));
        };
        let components: Vec<String> = words.map(str::to_string).collect();
        if components.is_empty() && !suite.ends_with('/') {
            return Err(bad(format!(
                "suite {suite:?} needs at least one component (like main)"
            )));
        }
        out.push(Source {
            url: clean_url(url),
            suite: suite.to_string(),
            components,
            architectures,
            keyring: keyring(signed_by, root).map_err(bad)?,
            origin: format!("{}:{}", file.display(), n + 1),
        });
    }
    Ok(out)
}

/// The deb822 format of `*.sources`: one stanza may list several types,
/// URIs and suites.
pub fn parse_deb822_sources(text: &str, file: &Path, root: &Path) -> Result<Vec<Source>> {
    let paras = deb822::parse(text).map_err(|e| Error::input(file, e.to_string()))?;
    let mut out = Vec::new();
    for para in paras {
        let bad = |reason: String| Error::input(file, format!("line {}: {reason}", para.line));
        let words = |name: &str| -> Vec<&str> {
            para.get(name)
                .unwrap_or("")
                .split_ascii_whitespace()
                .collect()
        };
        if para
            .get("Enabled")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("no"))
        {
            continue;
        }
        let types = words("Types");
        if types.is_empty() {
            return Err(bad("no Types field (deb or deb-src)".to_string()));
        }
        if let Some(t) = types.iter().find(|t| !matches!(**t, "deb" | "deb-src")) {
            return Err(bad(format!(
                "unknown source type {t:?} (expected deb or deb-src)"
            )));
        }
        if !types.contains(&"deb") {
            continue;
        }
        let (uris, suites, components) = (words("URIs"), words("Suites"), words("Components"));
        if uris.is_empty() || suites.is_empty() {
            return Err(bad("a stanza needs URIs and Suites".to_string()));
        }
        let keyring = keyring(para.get("Signed-By"), root).map_err(bad)?;
        let architectures: Vec<String> = words("Architectures")
            .into_iter()
            .map(str::to_string)
            .collect();
        for uri in &uris {
            for suite in &suites {
                if components.is_empty() && !suite.ends_with('/') {
                    return Err(bad(format!("suite {suite:?} needs Components (like main)")));
                }
                out.push(Source {
                    url: clean_url(uri),
                    suite: suite.to_string(),
                    components: components.iter().map(|c| c.to_string()).collect(),
                    architectures: architectures.clone(),
                    keyring: keyring.clone(),
                    origin: format!("{}:{}", file.display(), para.line),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
