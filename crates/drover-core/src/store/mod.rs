//! The image store: an OCI image layout in drover's state directory.
//!
//! ```text
//! <state dir>/
//!   oci-layout, index.json     the OCI image layout (readable by skopeo, umoci, buildah)
//!   blobs/sha256/<hex>         immutable, content-addressed blobs (see `blob`)
//!   drover.db                  tags, referrers and the ledger (see `state`, `ledger`)
//!   state                      where that state lives: `sqlite` (drover.db) or a
//!                              PostgreSQL URL (see `state::location`)
//!   cache/                     build caches; deleting it only costs speed
//!   rootfs/                    unpacked, verified image roots for containers (see `unpack`)
//!   store.lock, leases/        who uses the store, and the lock gc waits on (see below)
//!   tmp/                       in-flight writes; never read
//! ```
//!
//! **gc beside everything else: leases and a short exclusive window.**
//! Whatever may create content or need content gc would delete holds a
//! [`Lease`] while it runs: a shared `flock` on `store.lock` plus a file in
//! `leases/` naming it (see [`lease`]). A command's [`Store::open`] holds
//! one for its lifetime, named by its command line, so a build, pull,
//! tag, run, apply or rollback is covered from start to end, its "blob is
//! present, skip the write" checks included. Long-lived holders — `serve`'s
//! threads — open with [`Store::open_unleased`] and lease per operation:
//! an instance start from materializing its root to recording its row
//! (after which the row itself keeps the image and root alive), a drift
//! pass's tainting. `gc` takes the lock exclusively
//! ([`Store::open_exclusive_within`]); while it waits it names the holders
//! and gives up after its `--wait`. Inside the window it marks (tags,
//! instances, releases), sweeps blobs and moves doomed roots aside — all
//! quick — then ends the window ([`Store::end_exclusive`]) before deleting
//! the roots it moved and the unshared pool files (`unpack`), which nothing
//! can reach any more. So a build or pull that starts during gc's sweep
//! waits for the window to end, and then finds the blobs gc removed absent
//! and writes them again: it can never have seen a blob present that gc
//! then deletes.
//!
//! The database is the source of truth for tags and referrers: a tag change
//! and its ledger entry commit in one transaction, and `index.json` is then
//! regenerated from the database (atomically, tagged with the generation it
//! reflects). A process killed between the two leaves an index one generation
//! behind, which the next `Store::open` rewrites — so tags and ledger never
//! disagree.

pub mod artifact;
pub mod baseline;
mod blob;
mod gc;
pub mod lease;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod unpack;
pub mod validate;
mod verify;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use blob::{BlobWriter, VerifyingReader};
pub use gc::{GcOptions, GcReport};
pub use lease::{Holder, Lease};
pub use oci::{Descriptor, ImageConfig, Index, Manifest};
pub use reference::{ImageInfo, ImageRef};
pub use verify::{BlobProblem, TagProblem, VerifyReport};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::ledger::NewEntry;
use crate::limits::Limits;
use crate::state::{Db, Tx};

/// Manifests and configs larger than this are refused: they are JSON
/// documents of a few KiB, and reading one must never exhaust memory.
const MAX_DOCUMENT: u64 = 16 << 20;
const GENERATION_ANNOTATION: &str = "vnd.drover.store.generation";

/// Where a store keeps things: plain paths, shareable across threads
/// (unlike the database handle).
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
}

impl Layout {
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }
}

pub struct Store {
    layout: Layout,
    db: Db,
    exclusive: bool,
    /// The bounds on what this store reads and keeps (`DROVER_LIMIT_*`).
    limits: Limits,
    /// Images the deploy policy admitted, each with the fingerprint of the
    /// policy, keys, revocations and store generation it was admitted under
    /// (`trust::policy::admit`): a start that finds its pair here costs no
    /// re-verification.
    admitted: std::cell::RefCell<std::collections::HashSet<(Digest, Digest)>>,
    /// Held for the Store's lifetime: a lease ([`Store::open`]), the
    /// exclusive lock (`gc`, until [`Store::end_exclusive`]), or nothing
    /// ([`Store::open_unleased`], whose owner leases per operation).
    _hold: Hold,
}

/// What a [`Store`] holds of the store lock for its lifetime.
enum Hold {
    Lease(#[allow(dead_code)] Lease),
    Exclusive(#[allow(dead_code)] File),
    Nothing,
}

/// How [`Store::open_with`] holds the store lock.
enum Mode<'a> {
    Leased,
    Unleased,
    Exclusive(Duration, &'a mut dyn FnMut(&[Holder], Duration)),
}

/// An artifact attached to an image (OCI 1.1 `subject`).
pub use crate::state::Referrer;
/// One tagged image, as `drover images` lists it.
pub use crate::state::Tag as TagInfo;

impl Store {
    /// Opened with no other drover process in it ([`Store::open_exclusive`]).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// The bounds in force for this store.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tests lower the bounds without touching the environment.
    #[cfg(test)]
    pub(crate) fn limits_mut(&mut self) -> &mut Limits {
        &mut self.limits
    }

    /// Whether `root` holds a store already (one [`Store::open`] made:
    /// it writes `oci-layout` first thing).
    pub fn exists_at(root: &Path) -> bool {
        root.join("oci-layout").is_file()
    }

    /// Open (creating if needed) the store rooted at `root`, holding a lease
    /// named after this process's command line until the Store is dropped:
    /// what a command does in it is safe from `gc`. Waits while a `gc` is
    /// in its exclusive window.
    pub fn open(root: &Path) -> Result<Store> {
        Self::open_with(root, Mode::Leased)
    }

    /// Open the store holding nothing: for long-lived holders (`serve`'s
    /// threads), which take a [`Store::lease`] around each operation that
    /// creates or needs content, so `gc` never waits for them long.
    pub fn open_unleased(root: &Path) -> Result<Store> {
        Self::open_with(root, Mode::Unleased)
    }

    /// Open the store with no other lease on it (for `gc`); waits for as
    /// long as it takes.
    pub fn open_exclusive(root: &Path) -> Result<Store> {
        Self::open_exclusive_within(root, Duration::MAX, &mut |_, _| {})
    }

    /// Open the store with no other lease on it, waiting at most `wait`;
    /// `waiting` is told who holds leases, about once a second meanwhile.
    /// After `wait`, an [`Error::Busy`] names them.
    pub fn open_exclusive_within(
        root: &Path,
        wait: Duration,
        waiting: &mut dyn FnMut(&[Holder], Duration),
    ) -> Result<Store> {
        Self::open_with(root, Mode::Exclusive(wait, waiting))
    }

    /// A lease on this store for `what` (see [`lease`]), held until dropped.
    /// Within a store opened exclusively it holds nothing more.
    pub fn lease(&self, what: &str) -> Result<Lease> {
        if self.exclusive {
            return Ok(Lease::none());
        }
        lease::take(&self.layout.root, what)
    }

    /// Give up the exclusive lock (`gc`'s window is over); the Store then
    /// holds nothing.
    pub fn end_exclusive(&mut self) {
        self.exclusive = false;
        self._hold = Hold::Nothing;
    }

    fn open_with(root: &Path, how: Mode<'_>) -> Result<Store> {
        let limits = Limits::from_env()?;
        // Absolute, because paths under it end up in runtime configs that
        // other processes read from other directories.
        let root = &std::path::absolute(root).ctx("resolve the store path", root)?;
        let blobs = root.join("blobs").join("sha256");
        let tmp = root.join("tmp");
        for dir in [&blobs, &tmp, &root.join("cache")] {
            fs::create_dir_all(dir).ctx("create store directory", dir)?;
        }
        // Closed to every other host user: volumes hold files that mapped
        // container ids wrote (setuid ones too), and the database holds
        // the services' environments.
        let mode = fs::metadata(root)
            .ctx("inspect store", root)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))
                .ctx("close the store to other users", root)?;
        }
        let exclusive = matches!(how, Mode::Exclusive(..));
        let hold = match how {
            Mode::Leased => Hold::Lease(lease::take(root, &lease::this_process())?),
            Mode::Unleased => Hold::Nothing,
            Mode::Exclusive(wait, waiting) => {
                Hold::Exclusive(lease::exclusive(root, wait, waiting)?)
            }
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            crate::durable::write_atomic(&tmp, &layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let db = Db::open_at(&crate::state::location::resolve(root, None)?)?;
        let store = Store {
            layout: Layout {
                root: root.to_path_buf(),
                blobs,
                tmp,
            },
            db,
            exclusive,
            limits,
            admitted: Default::default(),
            _hold: hold,
        };
        store.sync_index()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// The deploy policy's admissions in this process (see the field).
    pub(crate) fn admitted(
        &self,
    ) -> &std::cell::RefCell<std::collections::HashSet<(Digest, Digest)>> {
        &self.admitted
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn db_mut(&mut self) -> &mut Db {
        &mut self.db
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.layout.cache_dir()
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.layout.tmp
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout.blob_path(digest)
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Start streaming a new blob.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::create(&self.layout.tmp, &self.layout.blobs)
    }

    /// Store a small blob; a no-op when it is already present and intact.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if let Ok(existing) = fs::read(self.blob_path(&digest))
            && Digest::of(&existing) == digest
        {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)?;
        w.commit()?;
        Ok(digest)
    }

    /// Store a JSON document and describe it.
    pub fn put_json<T: Serialize>(&self, media_type: &str, value: &T) -> Result<Descriptor> {
        let bytes =
            serde_json::to_vec(value).map_err(|e| Error::corrupt("document", e.to_string()))?;
        let digest = self.put_blob(&bytes)?;
        Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
    }

    /// Read a whole (small) blob, verifying its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let len = fs::metadata(&path)
            .map_err(|_| Error::NotFound {
                what: format!("blob {digest}"),
                hint: Some(format!("expected at {}", path.display())),
            })?
            .len();
        if len > MAX_DOCUMENT {
            return Err(Error::corrupt(
                format!("blob {digest}"),
                format!("{len} bytes is too large for a JSON document"),
            ));
        }
        let bytes = fs::read(&path).ctx("read blob", &path)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Error::CorruptBlob {
                digest: *digest,
                path,
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Open a blob for streaming; the reader fails at EOF if it is corrupt.
    pub fn open_blob(&self, digest: &Digest) -> Result<VerifyingReader> {
        VerifyingReader::open_path(&self.blob_path(digest), *digest)
    }

    /// Re-hash one blob on disk.
    pub fn check_blob(&self, digest: &Digest) -> Result<u64> {
        blob::check_file(&self.blob_path(digest), digest)
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<T> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("{what} {digest}"), e.to_string()))
    }

    pub fn manifest(&self, digest: &Digest) -> Result<Manifest> {
        self.read_json(digest, "manifest")
    }

    pub fn image_config(&self, manifest: &Manifest) -> Result<ImageConfig> {
        self.read_json(&manifest.config.digest, "image config")
    }

    pub(crate) fn describe_manifest(&self, digest: &Digest) -> Result<Descriptor> {
        let bytes = self.read_blob(digest)?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            media_type: Option<String>,
        }
        let probe: Probe = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("manifest {digest}"), e.to_string()))?;
        Ok(Descriptor::new(
            probe.media_type.as_deref().unwrap_or(oci::MEDIA_MANIFEST),
            *digest,
            bytes.len() as u64,
        ))
    }

    /// All tags, sorted by name.
    pub fn tags(&self) -> Result<Vec<TagInfo>> {
        self.db.read().tags()
    }

    /// Artifacts whose subject is `subject`, optionally of one artifact type.
    pub fn referrers(
        &self,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        Ok(self
            .db
            .read()
            .referrers(Some(subject))?
            .into_iter()
            .filter(|r| artifact_type.is_none_or(|t| r.artifact_type == t))
            .collect())
    }

    pub fn all_referrers(&self) -> Result<Vec<Referrer>> {
        self.db.read().referrers(None)
    }

    /// Apply a change to tags/referrers and record it in the ledger, all in
    /// one transaction; then bring `index.json` up to date.
    pub fn mutate<T>(&mut self, f: impl FnOnce(&mut Mutation<'_>) -> Result<T>) -> Result<T> {
        let out = self.db.write(|tx| {
            let mut m = Mutation { tx };
            let out = f(&mut m)?;
            m.tx.bump_generation()?;
            Ok(out)
        })?;
        self.sync_index()?;
        Ok(out)
    }

    /// Point `name` at an image and record it.
    pub fn tag(&mut self, reference: &str, name: &str) -> Result<Descriptor> {
        let name = normalize_tag(name);
        validate_tag_name(&name)?;
        let desc = self.resolve(reference)?;
        self.mutate(|m| {
            let previous = m.set_tag(&name, &desc)?;
            m.record(NewEntry::new(
                "image.tag",
                vec![desc.digest.to_string()],
                serde_json::json!({ "tag": name, "previous": previous.map(|d| d.to_string()) }),
            ))
        })?;
        Ok(desc)
    }

    /// Remove a tag (or every tag of a digest). Blobs go at the next `gc`.
    pub fn untag(&mut self, reference: &str) -> Result<Vec<String>> {
        let desc = self.resolve(reference)?;
        let tags = self.tags()?;
        let name = normalize_tag(reference);
        let removed: Vec<String> = if tags.iter().any(|t| t.name == name) {
            vec![name]
        } else {
            tags.iter()
                .filter(|t| t.digest == desc.digest)
                .map(|t| t.name.clone())
                .collect()
        };
        self.mutate(|m| {
            for n in &removed {
                m.remove_tag(n)?;
            }
            m.record(NewEntry::new(
                "image.untag",
                vec![desc.digest.to_string()],
                serde_json::json!({ "tags": removed }),
            ))
        })?;
        Ok(removed)
    }

    pub fn verify(&self) -> Result<VerifyReport> {
        verify::run(self)
    }

    /// Tags whose row is not what the ledger's entries make it (see
    /// [`verify::tags`]): a tag moved by editing the database.
    pub fn verify_tags(&self) -> Result<Vec<TagProblem>> {
        verify::tags(self)
    }

    fn generation(&self) -> Result<u64> {
        self.db.read().generation()
    }

    /// Rewrite `index.json` from the database unless it already reflects the
    /// current generation. Serialized by a file lock, so of two racing
    /// writers the later one always writes the newer state.
    fn sync_index(&self) -> Result<()> {
        let lock_path = self.layout.root.join("index.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .ctx("open index lock", &lock_path)?;
        lock.lock().ctx("lock index", &lock_path)?;
        let generation = self.generation()?.to_string();
        let index_path = self.layout.root.join("index.json");
        let current: Option<Index> = fs::read(&index_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if current
            .as_ref()
            .and_then(|i| i.annotations.get(GENERATION_ANNOTATION))
            == Some(&generation)
        {
            return Ok(());
        }
        let mut manifests = Vec::new();
        for t in self.tags()? {
            let mut d = Descriptor::new(&t.media_type, t.digest, t.size);
            d.annotations
                .insert(oci::ANNOTATION_REF_NAME.into(), t.name);
            manifests.push(d);
        }
        for r in self.all_referrers()? {
            let mut d = Descriptor::new(&r.media_type, r.digest, r.size);
            d.artifact_type = Some(r.artifact_type);
            manifests.push(d);
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_INDEX.into()),
            manifests,
            annotations: BTreeMap::from([(GENERATION_ANNOTATION.to_string(), generation)]),
        };
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| Error::corrupt("index", e.to_string()))?;
        crate::durable::write_atomic(&self.layout.tmp, &index_path, &bytes)
    }
}

/// A change in progress inside `Store::mutate`: names images and artifacts
/// in the change's transaction, and records what it did.
pub struct Mutation<'a> {
    tx: &'a Tx<'a>,
}

impl Mutation<'_> {
    /// Point a tag at a manifest; returns the digest it pointed at before.
    pub fn set_tag(&mut self, name: &str, desc: &Descriptor) -> Result<Option<Digest>> {
        self.tx
            .set_tag(name, &desc.digest, &desc.media_type, desc.size)
    }

    pub fn remove_tag(&mut self, name: &str) -> Result<()> {
        self.tx.remove_tag(name)
    }

    /// Attach an artifact manifest to its subject.
    pub fn add_referrer(
        &mut self,
        artifact: &Descriptor,
        subject: &Digest,
        artifact_type: &str,
    ) -> Result<()> {
        self.tx.add_referrer(&Referrer {
            digest: artifact.digest,
            subject: *subject,
            artifact_type: artifact_type.to_string(),
            media_type: artifact.media_type.clone(),
            size: artifact.size,
        })
    }

    pub fn remove_referrer(&mut self, digest: &Digest) -> Result<()> {
        self.tx.remove_referrer(digest)
    }

    /// Append the ledger entry that describes this change.
    pub fn record(&mut self, entry: NewEntry) -> Result<()> {
        self.tx.record(entry).map(drop)
    }
}

/// `name` means `name:latest`.
pub fn normalize_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn validate_tag_name(name: &str) -> Result<()> {
    crate::grammar::tagged_name(name).map_err(Error::Usage)
}
