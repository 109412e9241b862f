//! `run` layers: a command run in a sandbox made from the image built so
//! far, whose layer is what the command changed.
//!
//! The image so far is unpacked once per parent chain (`store::unpack`,
//! keyed by a manifest of the layers so far) and becomes the lower
//! directory of an overlay; the command runs on the merged view, and the
//! overlay's upper directory afterwards IS the layer: new and changed
//! files, deletions (overlay whiteouts, char devices 0:0, become OCI
//! `.wh.<name>` entries) and opaque directories (`trusted.overlay.opaque`
//! becomes `.wh..wh..opq`), normalized like every other layer (ids shifted
//! back from the sandbox's range, one mtime, sorted), so a deterministic
//! command gives a bit-identical layer ([`upper_entries`]).
//!
//! The sandbox itself is a [`Sandbox`], passed in through
//! [`BuildOptions::sandbox`](super::BuildOptions::sandbox): the builder may
//! not reach the runtime's instance machinery (user namespaces, id ranges),
//! which sits above it; `instance::sandbox` is the real one.
//!
//! The running and the layer-making are [`execute`] (with [`cached`] and
//! [`materialize_parent`]), which a packages layer's maintainer scripts
//! (`packages::scripts`) share.
//!
//! Cache key: the parent image (every diff id so far), the command, its
//! environment, working directory, user and network, and the digests of the
//! mounted build-context trees. A hit reuses the layer without running
//! anything; `--no-cache` runs it again.

use std::collections::VecDeque;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::def::{CopyLayer, RunLayer};
use super::layer::{self, CacheUse, LayerRecord};
use super::plan::{LayerStep, Plan};
use super::scan::{self, Entry, Source, StatKey};
use super::statcache::StatCache;
use super::tar::Kind;
use super::{Progress, provenance};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::{Descriptor, ImageConfig, Manifest, Store, oci, unpack};

/// The PATH a command gets when the image sets none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How many lines of a failed command's output its error shows.
pub const TAIL_LINES: usize = 40;

/// Runs one command on an overlay of a directory tree: the side effect
/// behind `run` layers and package maintainer scripts.
pub trait Sandbox: Send + Sync + std::fmt::Debug {
    /// Run `step` to the end (or its timeout). The command's own failure
    /// is an outcome, not an error; errors are the sandbox's.
    fn run(&self, store: &mut Store, step: &RunStep<'_>) -> Result<RunOutcome>;
}

/// One command to run.
#[derive(Debug, Clone)]
pub struct RunStep<'a> {
    /// The tree the command starts from (owned as the image says: root's
    /// files by uid 0), read-only; the overlay's lower directory.
    pub lower: &'a Path,
    /// Empty directories on one filesystem (the store's): the overlay's
    /// upper directory, which receives every change, and its work directory.
    pub upper: &'a Path,
    pub work: &'a Path,
    pub args: &'a [String],
    /// `KEY=value`, in order.
    pub env: &'a [String],
    /// Absolute.
    pub cwd: &'a str,
    /// `(uid, gid)` inside the sandbox.
    pub user: (u32, u32),
    /// Host directories and where the command sees them, read-only.
    pub mounts: &'a [(PathBuf, String)],
    /// The host's network; otherwise a network namespace with only `lo`.
    pub network: bool,
    pub timeout: Duration,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Exited(i32),
    Signaled(i32),
    /// Killed when its timeout passed.
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    /// The last lines of its output (stdout and stderr, interleaved).
    pub tail: Vec<String>,
    /// The host id the sandbox's id 0 was: files in the upper directory
    /// are owned by `id_base + n` for the sandbox's `n`.
    pub id_base: u32,
    /// How many ids the sandbox had.
    pub id_count: u32,
}

/// The last lines of a stream, bounded in lines and in bytes per line.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    const LINE_BYTES: usize = 4096;

    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end_line();
            } else if self.partial.len() < Self::LINE_BYTES {
                self.partial.push(b);
            }
        }
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        self.lines.push_back(line);
        if self.lines.len() > TAIL_LINES {
            self.lines.pop_front();
        }
    }

    pub fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            self.end_line();
        }
        self.lines.into()
    }
}

/// The image as far as it is built, below a run layer.
pub(super) struct Parent<'a> {
    /// The base's config (history and diff ids aside, what the run sees:
    /// its environment).
    pub config: &'a ImageConfig,
    /// Every layer so far, base's first, with its diff id.
    pub layers: Vec<(Descriptor, Digest)>,
}

/// A run layer, built or reused.
pub(super) struct Built {
    pub rec: LayerRecord,
    pub cache: CacheUse,
    pub files: usize,
    pub input: provenance::Dependency,
    pub hashed_bytes: u64,
}

/// Build (or reuse) the run layer of `step`.
#[allow(clippy::too_many_arguments)]
pub(super) fn build(
    store: &mut Store,
    plan: &Plan,
    step: &LayerStep,
    run: &RunLayer,
    context: &Path,
    stat_cache: &mut StatCache,
    parent: Parent,
    previous: Option<LayerRecord>,
    sandbox: Option<&Arc<dyn Sandbox>>,
    progress: &dyn Progress,
) -> Result<Built> {
    let use_cache = plan.settings.use_cache;
    let mut hashed_bytes = 0;
    // The mounted trees, by content: part of the key.
    let mut mounts = Vec::new();
    let mut mounted = Vec::new();
    for m in &run.mounts {
        let src = scan::resolve_in_context(context, &m.src)?;
        if !src.is_dir() {
            return Err(Error::input(
                &src,
                format!(
                    "{}: a run layer mounts directories; {} is not one",
                    step.source, m.src
                ),
            ));
        }
        let mut entries = scan::copy_layer(context, &whole_tree(&m.src))?;
        hashed_bytes += stat_cache.hash_entries(&mut entries, !use_cache, 0, &|_| {})?;
        let records: Vec<_> = entries.iter().map(Entry::record).collect();
        let bytes = serde_json::to_vec(&records)
            .map_err(|e| Error::corrupt("mount file records", e.to_string()))?;
        let digest = Digest::of(&bytes);
        mounted.push(json!({ "src": m.src, "dest": m.dest, "sha256": digest.hex() }));
        mounts.push((src, m.dest.clone()));
    }
    let env = environment(&parent.config.config.env, &run.env);
    let diff_ids: Vec<Digest> = parent.layers.iter().map(|(_, d)| *d).collect();
    let key = Digest::of(
        json!({
            "format": "drover-run-v1",
            "parent": diff_ids,
            "command": run.command,
            "env": env,
            "workdir": run.workdir,
            "user": [run.user.0, run.user.1],
            "network": run.network,
            "mounts": mounted,
            "media_type": layer::media_type(plan.settings.compression),
            "level": plan.settings.level,
            "mtime": plan.settings.mtime,
        })
        .to_string()
        .as_bytes(),
    );
    let mut input = provenance::Dependency::new(step.source.clone(), None, &key);
    input
        .annotations
        .insert("command".into(), json!(run.command));
    input.annotations.insert("mounts".into(), json!(mounted));
    input
        .annotations
        .insert("network".into(), json!(run.network));
    input
        .annotations
        .insert("hermetic".into(), json!(!run.network));

    if use_cache && let Some(rec) = cached(store, &key) {
        input
            .annotations
            .insert("diffId".into(), json!(rec.diff_id));
        let files = rec.files.len();
        return Ok(Built {
            rec,
            cache: CacheUse::Hit,
            files,
            input,
            hashed_bytes,
        });
    }

    let Some(sandbox) = sandbox else {
        return Err(Error::Usage(format!(
            "{}: run layers need a sandbox to run in, and this build has none",
            step.source
        )));
    };
    let lower = materialize_parent(store, &parent)?;
    let job = Job {
        args: &run.command,
        env: &env,
        cwd: &run.workdir,
        user: run.user,
        mounts: &mounts,
        network: run.network,
        timeout_ms: run.timeout_ms,
    };
    let check = |o: &RunOutcome| check_status(&step.source, "the command", run.timeout_ms, o);
    let ran = execute(
        store,
        plan,
        (&step.slot, &key),
        previous,
        &**sandbox,
        &lower,
        &job,
        &check,
        progress,
    )?;
    input
        .annotations
        .insert("diffId".into(), json!(ran.rec.diff_id));
    Ok(Built {
        rec: ran.rec,
        cache: ran.cache,
        files: ran.files,
        input,
        hashed_bytes: hashed_bytes + ran.hashed_bytes,
    })
}

/// One command to run on the image so far, as a run layer's or the
/// maintainer scripts of a packages layer (`packages::scripts`).
pub(super) struct Job<'a> {
    pub args: &'a [String],
    /// `KEY=value`, in order ([`environment`]).
    pub env: &'a [String],
    pub cwd: &'a str,
    pub user: (u32, u32),
    pub mounts: &'a [(PathBuf, String)],
    pub network: bool,
    pub timeout_ms: u64,
}

/// A sandboxed step that ran, and its layer.
pub(super) struct Ran {
    pub rec: LayerRecord,
    pub cache: CacheUse,
    pub files: usize,
    pub hashed_bytes: u64,
}

/// The layer an earlier build made for the sandboxed step keyed `key`,
/// if the store still has it.
pub(super) fn cached(store: &Store, key: &Digest) -> Option<LayerRecord> {
    fs::read_to_string(marker_path(store, key))
        .ok()
        .filter(|k| k.trim().len() == 64 && k.trim().bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|k| layer::cached(store.layout(), k.trim()))
}

fn marker_path(store: &Store, key: &Digest) -> PathBuf {
    store
        .cache_dir()
        .join("runs")
        .join(format!("{}.key", key.hex()))
}

/// Run `job` in `sandbox` on an overlay of `lower` (the image so far,
/// [`materialize_parent`]) and make what it changed the layer of `slot`,
/// remembered under `key` ([`cached`]). `check` turns an outcome that is
/// not a success into the build's error; then nothing is stored.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    store: &mut Store,
    plan: &Plan,
    (slot, key): (&str, &Digest),
    previous: Option<LayerRecord>,
    sandbox: &dyn Sandbox,
    lower: &Path,
    job: &Job,
    check: &dyn Fn(&RunOutcome) -> Result<()>,
    progress: &dyn Progress,
) -> Result<Ran> {
    let scratch = Scratch::new(store.tmp_dir())?;
    progress.phase("run", 0, 0);
    let outcome = sandbox.run(
        store,
        &RunStep {
            lower,
            upper: &scratch.upper(),
            work: &scratch.work(),
            args: job.args,
            env: job.env,
            cwd: job.cwd,
            user: job.user,
            mounts: job.mounts,
            network: job.network,
            timeout: Duration::from_millis(job.timeout_ms),
        },
    )?;
    check(&outcome)?;

    let mut hashed_bytes = 0;
    let upper = scratch.upper();
    let mut entries = upper_entries(&upper, outcome.id_base, outcome.id_count)?;
    let dests: Vec<&str> = job.mounts.iter().map(|(_, d)| d.as_str()).collect();
    drop_scaffolding(&mut entries, lower, &dests);
    for e in entries.iter_mut() {
        // Empty files are never read (the layer writer learns digests from
        // what it reads), large ones span chunks: both are hashed here.
        if matches!(e.source, Some(Source::Disk { .. })) && e.size == 0 {
            e.sha256 = Some(Digest::of(b""));
            e.sha1 = Some(super::sbom::sha1_of(b""));
        }
        if let Some(Source::Disk { path, stat }) = &e.source
            && e.sha256.is_none()
            && e.size > layer::HASH_AHEAD_ABOVE
        {
            let (d, s1) = super::statcache::hash_file(path, stat)?;
            e.sha256 = Some(d);
            e.sha1 = Some(s1);
            hashed_bytes += e.size;
        }
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    progress.phase("layer", entries.len() as u64, total);
    let (rec, cache, _) =
        layer::produce(store, &mut entries, &plan.settings, slot, previous, &|n| {
            progress.advance(n)
        })?;
    hashed_bytes += total;
    // The command ran: never report that as a hit, even when it wrote
    // exactly the layer an earlier build did.
    let cache = match cache {
        CacheUse::Hit => CacheUse::Built {
            reused: rec.chunks.len(),
            chunks: rec.chunks.len(),
        },
        built => built,
    };
    let marker = marker_path(store, key);
    if let Some(dir) = marker.parent() {
        fs::create_dir_all(dir).ctx("create cache directory", dir)?;
    }
    crate::durable::write_atomic(store.tmp_dir(), &marker, rec.key.hex().as_bytes())?;
    Ok(Ran {
        files: entries.len(),
        rec,
        cache,
        hashed_bytes,
    })
}

/// A copy layer of the whole of `src`, to scan and hash a mounted tree.
fn whole_tree(src: &str) -> CopyLayer {
    CopyLayer {
        src: src.to_string(),
        dest: "/".into(),
        include: vec!["**".into()],
        exclude: vec![],
        mode: None,
        dir_mode: None,
        owner: None,
        xattrs: false,
    }
}

/// A command's environment: the image's, `over` it (a run layer's), and
/// Docker's default PATH when neither sets one.
pub(super) fn environment(
    image_env: &[String],
    over: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = image_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in over {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A failed or killed command (`what`: "the command") of `source` is the
/// build's error, with its last lines.
pub(super) fn check_status(
    source: &str,
    what: &str,
    timeout_ms: u64,
    outcome: &RunOutcome,
) -> Result<()> {
    let how = match outcome.status {
        RunStatus::Exited(0) => return Ok(()),
        RunStatus::Exited(n) => format!("{what} exited with status {n}"),
        RunStatus::Signaled(s) => format!("{what} was killed by signal {s}"),
        RunStatus::TimedOut => format!(
            "{what} was killed after {} (its timeout; raise it with timeout = \"...\")",
            crate::grammar::format_duration(timeout_ms)
        ),
    };
    Err(Error::Failed(format!(
        "{source}: {how}{}",
        tail_text(outcome)
    )))
}

/// How an error shows a failed command's last lines of output.
pub(super) fn tail_text(outcome: &RunOutcome) -> String {
    if outcome.tail.is_empty() {
        " (it printed nothing)".to_string()
    } else {
        format!(
            "; its last {} lines of output:\n{}",
            outcome.tail.len(),
            outcome.tail.join("\n")
        )
    }
}

/// The unpacked root of the image so far, made once per parent chain: a
/// manifest of the layers so far names it in the store's unpack cache.
pub(super) fn materialize_parent(store: &Store, parent: &Parent) -> Result<PathBuf> {
    let mut config = parent.config.clone();
    config.rootfs.diff_ids = parent.layers.iter().map(|(_, d)| *d).collect();
    config.history.clear();
    let config = store.put_json(oci::MEDIA_CONFIG, &config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.into()),
        artifact_type: None,
        config,
        layers: parent.layers.iter().map(|(l, _)| l.clone()).collect(),
        subject: None,
        annotations: Default::default(),
    };
    let manifest = store.put_json(oci::MEDIA_MANIFEST, &manifest)?;
    Ok(unpack::materialize(store, &manifest.digest)?.path)
}

/// The upper and work directories of one run, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tmp: &Path) -> Result<Scratch> {
        let mut bytes = [0u8; 8];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .ctx("read", Path::new("/dev/urandom"))?;
        let dir = tmp.join(format!("run-{}", hex::encode(bytes)));
        for sub in ["upper", "work"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).ctx("create run directory", &d)?;
        }
        Ok(Scratch(dir))
    }

    fn upper(&self) -> PathBuf {
        self.0.join("upper")
    }

    fn work(&self) -> PathBuf {
        self.0.join("work")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OPAQUE: &str = ".wh..wh..opq";

/// The layer entries of an overlay upper directory whose files are owned
/// by host ids `id_base..id_base + id_count` (the sandbox's `0..`):
/// files, directories and symlinks as they are (modes kept, ids shifted
/// back), whiteouts (char devices 0:0) as `.wh.<name>`, opaque directories
/// with a `.wh..wh..opq` entry. Anything else a layer cannot hold (a
/// socket, a fifo, a device) is refused by path. Sorted by path, except
/// that an opaque marker comes right after its directory, before what the
/// same layer puts in it.
pub(crate) fn upper_entries(upper: &Path, id_base: u32, id_count: u32) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk_upper(upper, upper, "", (id_base, id_count), &mut out)?;
    scan::assign_hardlinks(&mut out);
    out.sort_by_cached_key(|e| sort_key(&e.path));
    Ok(out)
}

fn sort_key(path: &str) -> String {
    // "\0" sorts before every byte a name can hold.
    match path.strip_suffix(OPAQUE) {
        Some(dir) => format!("{dir}\0"),
        None => path.to_string(),
    }
}

fn walk_upper(
    root: &Path,
    dir: &Path,
    rel: &str,
    ids: (u32, u32),
    out: &mut Vec<Entry>,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .ctx("read directory", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .ctx("read directory", dir)?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let shown = || format!("/{}", path.strip_prefix(root).unwrap_or(&path).display());
        let Some(name) = name.to_str() else {
            return Err(Error::input(
                shown(),
                "the command left a file whose name is not valid UTF-8; an image cannot hold it",
            ));
        };
        let child = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path).ctx("stat", &path)?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            out.push(whiteout(rel, &format!(".wh.{name}")));
            continue;
        }
        let shift = |id: u32, what: &str| -> Result<u32> {
            id.checked_sub(ids.0).filter(|n| *n < ids.1).ok_or_else(|| {
                Error::corrupt(
                    format!("run layer file {}", shown()),
                    format!("its {what} {id} is outside the sandbox's ids"),
                )
            })
        };
        let (uid, gid) = (shift(meta.uid(), "owner")?, shift(meta.gid(), "group")?);
        let mode = meta.mode() & 0o7777;
        let base = Entry::dir(child.clone(), mode, (uid, gid));
        if ft.is_dir() {
            out.push(base);
            if crate::sys::xattrs(&path)
                .ctx("read extended attributes", &path)?
                .iter()
                .any(|(k, v)| k == OPAQUE_XATTR && v.as_slice() == b"y")
            {
                out.push(whiteout(&child, OPAQUE));
            }
            walk_upper(root, &path, &child, ids, out)?;
        } else if ft.is_file() {
            out.push(Entry {
                kind: Kind::File,
                size: meta.size(),
                source: Some(Source::Disk {
                    path: path.clone(),
                    stat: StatKey::of(&meta),
                }),
                ..base
            });
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).ctx("read symlink", &path)?;
            let Some(target) = target.to_str() else {
                return Err(Error::input(
                    shown(),
                    "the command left a symlink whose target is not valid UTF-8",
                ));
            };
            out.push(Entry {
                kind: Kind::Symlink,
                mode: 0o777,
                link: Some(target.to_string()),
                ..base
            });
        } else {
            let what = if ft.is_socket() {
                "a socket"
            } else if ft.is_fifo() {
                "a fifo"
            } else {
                "a device node"
            };
            return Err(Error::input(
                shown(),
                format!(
                    "the command left {what} here, which an image layer cannot hold; remove it \
                     before the command ends"
                ),
            ));
        }
    }
    Ok(())
}

/// An OCI whiteout entry named `name` in directory `dir`.
fn whiteout(dir: &str, name: &str) -> Entry {
    let path = if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    };
    Entry::inline(path, &b""[..], 0o644, (0, 0))
}

/// Drop the directories the runtime made only to mount something on
/// (`dests`, and parents of theirs the image did not have) when nothing
/// else landed in them.
fn drop_scaffolding(entries: &mut Vec<Entry>, lower: &Path, dests: &[&str]) {
    let mut made: Vec<String> = Vec::new();
    for dest in dests {
        let mut acc = String::new();
        for part in dest.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if fs::symlink_metadata(lower.join(&acc)).is_err() && !made.contains(&acc) {
                made.push(acc.clone());
            }
        }
    }
    // Deepest first, so a parent is judged after its child left.
    made.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for dir in made {
        let inside = format!("{dir}/");
        let empty = !entries.iter().any(|e| e.path.starts_with(&inside));
        if empty {
            entries.retain(|e| !(e.path == dir && e.kind == Kind::Dir));
        }
    }
}

#[cfg(test)]
mod tests;
