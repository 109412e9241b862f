//! A repository's signed indexes: `dists/<suite>/InRelease`, verified with
//! `gpgv` against the repository's keyring, and each component's
//! `Packages` index, checked against the sha256 and size the signed
//! `InRelease` lists.
//!
//! Both are kept in the package cache (content-addressed), with a pointer
//! per (repository, suite) to the last verified `InRelease`, so a machine
//! that cannot reach the repository still resolves from a complete cache:
//! the signature and every hash are checked again on the way out.
//! Nothing is stored unless everything verified: a bad signature or a
//! hash mismatch leaves the cache as it was.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Repository;
use super::cache::PackageCache;
use super::http::{Http, NetError};
use crate::digest::Digest;
use crate::durable::tmp_path;
use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;

/// Whether to use the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Online {
    /// Try the network; when the repository cannot be reached at all, use
    /// the cache and say so.
    #[default]
    Auto,
    /// The network only: no falling back to the cache.
    Yes,
    /// The cache only: no network at all.
    No,
}

/// How to fetch indexes.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    pub online: Online,
    /// Accept an `InRelease` past its `Valid-Until` (an archived snapshot).
    pub allow_expired: bool,
}

/// A repository's verified indexes for one architecture.
#[derive(Debug, Clone)]
pub struct Indexes {
    pub repo: Repository,
    pub arch: String,
    /// The signed `Date:` of the `InRelease`, as written there.
    pub release_date: String,
    /// Its `Valid-Until:`, if it has one.
    pub valid_until: Option<String>,
    /// Its `Origin` (`Debian`) and `Version` (`12.12`), when it says.
    pub origin: Option<String>,
    pub version: Option<String>,
    /// The digest of the `InRelease` file as fetched (signature included).
    pub inrelease: Digest,
    /// Each component's `Packages` text, in the repository's order of
    /// `repo.components`.
    pub packages: Vec<(String, String)>,
    /// Set when the network could not be reached and the cache served:
    /// why, for the user.
    pub offline: Option<String>,
}

/// Fetch (or, offline, read from the cache) the indexes of `repo` for `arch`.
pub fn fetch_indexes(
    repo: &Repository,
    arch: &str,
    cache: &PackageCache,
    limits: &Limits,
    opts: &IndexOptions,
) -> Result<Indexes> {
    if opts.online == Online::No {
        return from_cache(repo, arch, cache, limits, opts, "offline".into());
    }
    let http = Http::new(limits)?;
    match http.block_on(online(&http, repo, arch, cache, limits, opts)) {
        Ok(ix) => Ok(ix),
        Err(NetError {
            unreachable: true,
            error,
        }) if opts.online == Online::Auto => {
            let why = format!("{} cannot be reached ({error})", repo.url);
            from_cache(repo, arch, cache, limits, opts, why)
        }
        Err(e) => Err(e.error),
    }
}

/// The pointer key of a repository's last verified `InRelease`.
fn ref_key(repo: &Repository) -> String {
    format!("inrelease {} {}", repo.url, repo.suite)
}

fn repo_name(repo: &Repository) -> String {
    format!("repository {} (suite {})", repo.url, repo.suite)
}

async fn online(
    http: &Http,
    repo: &Repository,
    arch: &str,
    cache: &PackageCache,
    limits: &Limits,
    opts: &IndexOptions,
) -> std::result::Result<Indexes, NetError> {
    let max = limits.index_bytes;
    let dists = format!("{}/dists/{}", repo.url, repo.suite);
    let url = format!("{dists}/InRelease");
    let inrelease = http
        .get(&url, max, "index_bytes")
        .await?
        .ok_or_else(|| Error::NotFound {
            what: url.clone(),
            hint: Some(format!(
                "{} has no signed InRelease for suite {:?}; check the URL and suite",
                repo.url, repo.suite
            )),
        })?;
    let release = verified_release(repo, &inrelease, cache, opts)?;
    let mut packages = Vec::new();
    let mut verified: Vec<(Vec<u8>, Digest, u64, String)> = Vec::new();
    for component in &repo.components {
        let index = release.index(repo, component, arch)?;
        let what = format!("{} index {}", repo_name(repo), index.path);
        let compressed = match cache.read(&index.sha256, max, &what) {
            Ok(Some(bytes)) => bytes,
            _ => {
                let by_hash = format!(
                    "{dists}/{}/by-hash/SHA256/{}",
                    index.path.rsplit_once('/').map_or("", |(d, _)| d),
                    index.sha256.hex()
                );
                let plain = format!("{dists}/{}", index.path);
                let mut got = None;
                if release.by_hash {
                    got = http
                        .get(&by_hash, index.size.min(max), "index_bytes")
                        .await?;
                }
                if got.is_none() {
                    got = http.get(&plain, index.size.min(max), "index_bytes").await?;
                }
                let bytes = got.ok_or_else(|| Error::NotFound {
                    what: plain.clone(),
                    hint: Some(format!("the signed InRelease of {} lists it", repo.url)),
                })?;
                check(&bytes, &index.sha256, index.size, &what)?;
                verified.push((bytes.clone(), index.sha256, index.size, what.clone()));
                bytes
            }
        };
        packages.push((
            component.clone(),
            decompress(&compressed, &index.path, &what, max)?,
        ));
    }
    // Everything verified: only now does anything enter the cache.
    let digest = Digest::of(&inrelease);
    let inrelease_what = format!("InRelease of {}", repo_name(repo));
    cache.put_bytes(&inrelease, &digest, inrelease.len() as u64, &inrelease_what)?;
    for (bytes, sha256, size, what) in &verified {
        cache.put_bytes(bytes, sha256, *size, what)?;
    }
    cache.set_ref(&ref_key(repo), &digest)?;
    Ok(Indexes {
        repo: repo.clone(),
        arch: arch.to_string(),
        release_date: release.date,
        valid_until: release.valid_until,
        origin: release.origin,
        version: release.version,
        inrelease: digest,
        packages,
        offline: None,
    })
}

/// The indexes from the cache alone; `why` says why the network is not used.
fn from_cache(
    repo: &Repository,
    arch: &str,
    cache: &PackageCache,
    limits: &Limits,
    opts: &IndexOptions,
    why: String,
) -> Result<Indexes> {
    let max = limits.index_bytes;
    let missing = |what: String| Error::NotFound {
        what,
        hint: Some(format!(
            "{why}; the package cache is incomplete: fetch once with the network to fill it"
        )),
    };
    let Some(pointer) = cache.get_ref(&ref_key(repo))? else {
        return Err(missing(format!(
            "the InRelease of {} in the package cache",
            repo_name(repo)
        )));
    };
    let inrelease_what = format!("cached InRelease of {}", repo_name(repo));
    let Some(inrelease) = cache.read(&pointer.digest, max, &inrelease_what)? else {
        return Err(missing(format!(
            "the InRelease of {} ({}) in the package cache",
            repo_name(repo),
            pointer.digest
        )));
    };
    let release = verified_release(repo, &inrelease, cache, opts)?;
    let mut packages = Vec::new();
    let mut absent = Vec::new();
    for component in &repo.components {
        let mut found = None;
        let mut wanted = Vec::new();
        for index in release.candidates(component, arch) {
            let what = format!("{} index {}", repo_name(repo), index.path);
            if let Some(bytes) = cache.read(&index.sha256, max, &what)? {
                found = Some(decompress(&bytes, &index.path, &what, max)?);
                break;
            }
            wanted.push(format!("{} ({})", index.path, index.sha256));
        }
        match found {
            Some(text) => packages.push((component.clone(), text)),
            None if wanted.is_empty() => {
                return Err(release.index(repo, component, arch).unwrap_err());
            }
            None => absent.push(wanted.join(" or ")),
        }
    }
    if !absent.is_empty() {
        return Err(missing(format!(
            "the package indexes {} of {} in the package cache",
            absent.join(", "),
            repo_name(repo)
        )));
    }
    Ok(Indexes {
        repo: repo.clone(),
        arch: arch.to_string(),
        release_date: release.date,
        valid_until: release.valid_until,
        origin: release.origin,
        version: release.version,
        inrelease: pointer.digest,
        packages,
        offline: Some(why),
    })
}

/// `bytes` must be `size` long and hash to `sha256`.
fn check(bytes: &[u8], sha256: &Digest, size: u64, what: &str) -> Result<()> {
    let actual = Digest::of(bytes);
    if bytes.len() as u64 != size || actual != *sha256 {
        return Err(Error::corrupt(
            what,
            format!(
                "{} bytes with sha256 {actual}, but the signed InRelease says {size} bytes with \
                 {sha256}; refused, nothing stored",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// An index's text, decompressed per its name; at most `max` bytes.
fn decompress(bytes: &[u8], path: &str, what: &str, max: u64) -> Result<String> {
    let r: Box<dyn Read + '_> = if path.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else if path.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(bytes))
    } else {
        Box::new(bytes)
    };
    let mut out = Vec::new();
    r.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(what, format!("does not decompress: {e}")))?;
    if out.len() as u64 > max {
        return Err(Limits::exceeded(
            "index_bytes",
            what.to_string(),
            format!("it decompresses to more than {max} bytes"),
        ));
    }
    String::from_utf8(out).map_err(|_| Error::corrupt(what, "not UTF-8 text"))
}

/// What a verified `InRelease` says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Release {
    date: String,
    origin: Option<String>,
    version: Option<String>,
    valid_until: Option<String>,
    by_hash: bool,
    /// (path, sha256, size) of every file the SHA256 field lists.
    files: Vec<IndexFile>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexFile {
    path: String,
    sha256: Digest,
    size: u64,
}

impl Release {
    /// The listed `Packages` indexes of `component`/`arch`, best first.
    fn candidates(&self, component: &str, arch: &str) -> Vec<&IndexFile> {
        ["Packages.gz", "Packages.xz", "Packages"]
            .iter()
            .filter_map(|name| {
                let path = format!("{component}/binary-{arch}/{name}");
                self.files.iter().find(|f| f.path == path)
            })
            .collect()
    }

    fn index(&self, repo: &Repository, component: &str, arch: &str) -> Result<&IndexFile> {
        self.candidates(component, arch)
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound {
                what: format!(
                    "component {component:?} for architecture {arch} in {}",
                    repo_name(repo)
                ),
                hint: Some(format!(
                    "its signed InRelease lists no {component}/binary-{arch}/Packages index; check \
                 the components and the architecture"
                )),
            })
    }
}

/// Verify `inrelease` and read it: the signature (see [`gpgv`]), the suite
/// it is for, and its validity.
fn verified_release(
    repo: &Repository,
    inrelease: &[u8],
    cache: &PackageCache,
    opts: &IndexOptions,
) -> Result<Release> {
    let text = gpgv(repo, inrelease, cache.tmp_dir())?;
    let release = parse_release(&text)
        .map_err(|why| Error::corrupt(format!("InRelease of {}", repo_name(repo)), why))?;
    // A validly signed InRelease of another suite (an older one, say)
    // served in place of this one would otherwise pass.
    let fields = fields(&text);
    let names: Vec<&str> = ["Suite", "Codename"]
        .iter()
        .filter_map(|k| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.trim()))
        .collect();
    if !names.is_empty() && !names.contains(&repo.suite.as_str()) {
        return Err(Error::corrupt(
            format!("InRelease of {}", repo_name(repo)),
            format!(
                "it is signed for suite {}, not {:?}; refused",
                names.join(" / "),
                repo.suite
            ),
        ));
    }
    if let Some(until) = &release.valid_until
        && !opts.allow_expired
    {
        let t = parse_date(until).ok_or_else(|| {
            Error::corrupt(
                format!("InRelease of {}", repo_name(repo)),
                format!("Valid-Until {until:?} is not a date"),
            )
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if t < now {
            return Err(Error::corrupt(
                format!("InRelease of {}", repo_name(repo)),
                format!(
                    "it expired at {until} (Valid-Until); a current one is needed, or allow \
                     expired indexes for an archived snapshot"
                ),
            ));
        }
    }
    Ok(release)
}

/// Check the cleartext signature of `inrelease` against the repository's
/// keyring with Debian's `gpgv`; return the signed text exactly as gpgv
/// verified it. At least one signature must be good and valid (made by a
/// key in the keyring, not expired, not revoked); a bad or revoked one
/// anywhere refuses the file. Signatures by keys the keyring does not hold
/// are passed over, as apt does (Debian signs with several keys).
fn gpgv(repo: &Repository, inrelease: &[u8], tmp: &Path) -> Result<String> {
    let refuse = |why: String| {
        Error::corrupt(
            format!("InRelease of {}", repo_name(repo)),
            format!(
                "its signature does not verify against the keyring {}: {why}; refused, nothing stored",
                repo.keyring.display()
            ),
        )
    };
    check_framing(inrelease).map_err(|why| refuse(why.to_string()))?;
    let work = tmp_path(tmp, "gpgv");
    fs::create_dir(&work).ctx("create directory", &work)?;
    let _cleanup = RemoveOnDrop(work.clone());
    let keyring = keyring_for_gpgv(&repo.keyring, &work)?;
    let signed = work.join("InRelease");
    fs::write(&signed, inrelease).ctx("write", &signed)?;
    let out_path = work.join("signed");
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(&work)
        .args(["--status-fd", "1", "--output"])
        .arg(&out_path)
        .arg("--keyring")
        .arg(&keyring)
        .arg(&signed)
        .output()
        .map_err(|e| {
            Error::Failed(format!(
                "run gpgv to verify the InRelease of {}: {e} (install Debian's gpgv)",
                repo_name(repo)
            ))
        })?;
    let status = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    judge(&status).map_err(|why| {
        let detail = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .map(|l| format!(" ({})", l.trim()))
            .unwrap_or_default();
        refuse(format!("{why}{detail}"))
    })?;
    let text = fs::read(&out_path).ctx("read gpgv's output", &out_path)?;
    String::from_utf8(text).map_err(|_| refuse("the signed text is not UTF-8".into()))
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Exactly one cleartext-signed message and nothing around it, so what
/// gpgv verified is all there is (text outside the signed part has been
/// used to smuggle fields past verifiers).
fn check_framing(bytes: &[u8]) -> std::result::Result<(), &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text")?;
    let mut lines = text.lines();
    if lines.next().map(str::trim_end) != Some("-----BEGIN PGP SIGNED MESSAGE-----") {
        return Err("it does not start with a cleartext signature header");
    }
    let begins = text
        .lines()
        .filter(|l| l.trim_end() == "-----BEGIN PGP SIGNED MESSAGE-----")
        .count();
    let sigs = text
        .lines()
        .filter(|l| l.trim_end() == "-----BEGIN PGP SIGNATURE-----")
        .count();
    if begins != 1 || sigs != 1 {
        return Err("it holds more or less than one signed message");
    }
    let end = text
        .find("-----END PGP SIGNATURE-----")
        .ok_or("its signature block is not closed")?;
    if !text[end + "-----END PGP SIGNATURE-----".len()..]
        .trim()
        .is_empty()
    {
        return Err("it has text after its signature");
    }
    Ok(())
}

/// Read gpgv's status lines: Ok if at least one signature is good and
/// valid and none is bad or revoked; else why not.
fn judge(status: &str) -> std::result::Result<(), String> {
    let mut good = 0;
    let mut problems = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut blocks = Vec::new();
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        if rest.starts_with("NEWSIG") {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
            continue;
        }
        block.push(rest);
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    for b in &blocks {
        let has = |k: &str| b.iter().find(|l| l.split(' ').next() == Some(k));
        if let Some(l) = has("BADSIG") {
            return Err(format!("a bad signature: {l}"));
        }
        if let Some(l) = has("REVKEYSIG") {
            return Err(format!("signed by a revoked key: {l}"));
        }
        if has("GOODSIG").is_some() && has("VALIDSIG").is_some() {
            good += 1;
        } else if let Some(l) = has("EXPKEYSIG").or(has("EXPSIG")) {
            problems.push(format!("signed by an expired key or expired: {l}"));
        } else if let Some(l) = has("ERRSIG") {
            problems.push(format!(
                "cannot check a signature (key not in the keyring?): {l}"
            ));
        }
    }
    if good > 0 {
        return Ok(());
    }
    if problems.is_empty() {
        problems.push("no valid signature".into());
    }
    Err(problems.join("; "))
}

/// The keyring as gpgv reads it: a binary keyring as it is (absolute, or
/// gpgv would look for it in its home directory), an ASCII-armored one
/// (`.asc`) decoded into `work`.
fn keyring_for_gpgv(keyring: &Path, work: &Path) -> Result<PathBuf> {
    let bytes = fs::read(keyring).map_err(|e| {
        Error::input(
            keyring,
            format!("cannot read the repository keyring: {e} (install debian-archive-keyring, or name the keyring file)"),
        )
    })?;
    let armored = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN PGP"));
    if !armored {
        return std::path::absolute(keyring).ctx("resolve the keyring path", keyring);
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::input(keyring, "an armored keyring that is not text"))?;
    let binary = dearmor(text).map_err(|why| Error::input(keyring, why))?;
    let out = work.join("keyring.gpg");
    fs::write(&out, binary).ctx("write", &out)?;
    Ok(out)
}

/// The packets of every `-----BEGIN PGP PUBLIC KEY BLOCK-----` in `text`.
fn dearmor(text: &str) -> std::result::Result<Vec<u8>, String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    let mut blocks = 0;
    while let Some(line) = lines.next() {
        if line != "-----BEGIN PGP PUBLIC KEY BLOCK-----" {
            continue;
        }
        blocks += 1;
        // Armor headers ("Comment: …") end at the first empty line.
        let mut body = String::new();
        let mut in_headers = true;
        let mut closed = false;
        for l in lines.by_ref() {
            if l == "-----END PGP PUBLIC KEY BLOCK-----" {
                closed = true;
                break;
            }
            if in_headers {
                if l.is_empty() {
                    in_headers = false;
                } else if !l.contains(": ") {
                    // No headers at all: this line is data.
                    in_headers = false;
                    body.push_str(l);
                }
                continue;
            }
            if l.starts_with('=') && l.len() == 5 {
                continue; // the CRC-24 checksum line
            }
            body.push_str(l);
        }
        if !closed {
            return Err("an armored key block is not closed".into());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("an armored key block is not valid base64: {e}"))?;
        out.extend_from_slice(&raw);
    }
    if blocks == 0 {
        return Err("no PGP PUBLIC KEY BLOCK in the armored keyring".into());
    }
    Ok(out)
}

/// The fields of the first paragraph of deb822 `text`: (name, value),
/// continuation lines joined with '\n'.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn parse_release(text: &str) -> std::result::Result<Release, String> {
    let fields = fields(text);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let date = get("Date").ok_or("it has no Date field")?.to_string();
    let mut files = Vec::new();
    for line in get("SHA256").ok_or("it lists no SHA256 sums")?.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.is_empty() {
            continue;
        }
        let [hex, size, path] = parts[..] else {
            return Err(format!("a SHA256 line is malformed: {line:?}"));
        };
        let sha256 = format!("sha256:{hex}")
            .parse::<Digest>()
            .map_err(|_| format!("a SHA256 line has no sha256: {line:?}"))?;
        let size = size
            .parse::<u64>()
            .map_err(|_| format!("a SHA256 line has no size: {line:?}"))?;
        files.push(IndexFile {
            path: path.to_string(),
            sha256,
            size,
        });
    }
    Ok(Release {
        date,
        origin: get("Origin").map(str::to_string),
        version: get("Version").map(str::to_string),
        valid_until: get("Valid-Until").map(str::to_string),
        by_hash: get("Acquire-By-Hash").is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        files,
    })
}

/// `Sat, 10 Aug 2024 09:21:35 UTC` (RFC 2822, as Release files write it)
/// → seconds since the epoch.
fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.split_once(',').map_or(s, |(_, rest)| rest).trim();
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [day, month, year, time, ref rest @ ..] = parts[..] else {
        return None;
    };
    if !matches!(rest, [] | ["UTC" | "GMT" | "Z" | "+0000" | "-0000"]) {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|n| n.eq_ignore_ascii_case(month))? + 1;
    let day: u32 = day.parse().ok()?;
    let year: u32 = year.parse().ok()?;
    let (h, rest) = time.split_once(':')?;
    let (mi, sec) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, mi, sec): (u32, u32, u32) = (h.parse().ok()?, mi.parse().ok()?, sec.parse().ok()?);
    crate::clock::parse_rfc3339_secs(&format!(
        "{year:04}-{m:02}-{day:02}T{h:02}:{mi:02}:{sec:02}Z"
    ))
}

#[cfg(test)]
pub(super) mod tests;
