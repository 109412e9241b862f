//! Layers: from sorted entries to a compressed tar blob, as fast as two cores
//! allow and byte-for-byte reproducible.
//!
//! The tar stream is cut into *chunks* at entry boundaries chosen from the
//! entries' paths (and inside large files at fixed offsets), and each chunk is
//! compressed on its own — a gzip chunk as a raw deflate run ended by a sync
//! flush, a zstd chunk as a whole frame — then the results are concatenated
//! into one valid gzip member or zstd stream. Three things follow:
//!
//! * the output does not depend on the number of threads (a chunk's bytes
//!   depend only on its content), so builds are bit-identical anywhere;
//! * chunks compress in parallel;
//! * a chunk whose content did not change since the last build of this layer
//!   is copied from the previous blob instead of being compressed again, so
//!   changing one file recompresses one chunk.
//!
//! A chunk's identity is a digest over its header bytes and the content
//! digests of its files (which `statcache` provides), so reuse is decided
//! without compressing anything.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use flate2::{Compress, FlushCompress};
use serde::{Deserialize, Serialize};

use super::def::Compression;
use super::sbom::{Sha1, sha1_of};
use super::scan::{Entry, Source};
use super::statcache::{self, check_unchanged};
use super::tar::{self, Kind};
use crate::digest::{Digest, Hasher};
use crate::error::{Error, IoContext, Result};
use crate::store::baseline::FileRecord;
use crate::store::{Layout, Store, oci};

/// A chunk is closed before an entry once it holds at least this much and the
/// entry's path hash says "cut" (1 in 16); so boundaries follow the paths, not
/// offsets, and an edit moves at most the boundaries next to it.
const MIN_CHUNK: u64 = 256 << 10;
/// ...or unconditionally once it holds this much.
const MAX_CHUNK: u64 = 8 << 20;
/// Large files are split at multiples of this offset.
const FILE_PIECE: u64 = 4 << 20;
/// Bump when the chunking or framing changes: old cache records then miss.
const FORMAT: &str = "drover-layer-v1";

/// How to build a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The mtime of every entry.
    pub mtime: u64,
    pub compression: Compression,
    /// Compression level (see `Compression::levels`); part of the layer's identity.
    pub level: u32,
    /// Compression threads; the output does not depend on it.
    pub threads: usize,
    /// Reuse earlier results (whole layers or chunks); off for `--no-cache`,
    /// which also rewrites a damaged blob.
    pub use_cache: bool,
}

/// What the cache remembers about a built layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    pub key: Digest,
    pub media_type: String,
    /// Chunks are only reused at the same level: their bytes depend on it.
    pub level: u32,
    pub blob: Digest,
    pub size: u64,
    pub diff_id: Digest,
    pub chunks: Vec<ChunkRec>,
    pub files: Vec<FileRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkRec {
    pub id: Digest,
    /// Offset and length of the chunk's compressed bytes in the blob.
    pub coff: u64,
    pub clen: u64,
    pub ulen: u64,
    /// CRC-32 of the uncompressed bytes (gzip's trailer needs it).
    pub crc: u32,
    /// CRC-32 of the compressed bytes, checked whenever they are reused, so
    /// a damaged old blob is never copied into a new one.
    pub ccrc: u32,
    /// Hash states (`Hasher::checkpoint`) of the uncompressed stream and of
    /// the blob just before this chunk: a rebuild that keeps the chunks
    /// before this one resumes both hashes here instead of re-reading.
    pub plain_at: String,
    pub packed_at: String,
}

/// How much of a layer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "cache", rename_all = "lowercase")]
pub enum CacheUse {
    /// The whole layer was reused.
    Hit,
    /// Built, reusing `reused` of `chunks` compressed chunks.
    Built { reused: usize, chunks: usize },
}

enum Piece {
    Bytes(Vec<u8>),
    File { entry: usize, offset: u64, len: u64 },
}

struct ChunkPlan {
    pieces: Vec<Piece>,
    ulen: u64,
    /// Known up front when every file in the chunk has a known digest;
    /// otherwise computed by the worker that reads the chunk.
    id: Option<Digest>,
}

/// A file digest learned while writing a layer: (entry index, when the read
/// began in ns since the epoch, digest, SHA-1 of the same bytes), for the
/// content-hash cache and the SBOM.
pub type Learned = (usize, i128, Digest, Sha1);

pub fn media_type(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => oci::MEDIA_LAYER_GZIP,
        Compression::Zstd => oci::MEDIA_LAYER_ZSTD,
    }
}

/// Files larger than this are hashed before the layer is written (they
/// span chunks, and a chunk's identity needs its files' digests); smaller
/// ones are hashed by the worker that reads them into their chunk.
pub const HASH_AHEAD_ABOVE: u64 = FILE_PIECE;

/// Build (or reuse) the layer for `entries`. Files without a digest yet are
/// hashed from the same read that tars them; their digests (`sha256`, and
/// `sha1` for the SBOM) are filled in and also returned, for the
/// content-hash cache. `slot` names this layer's place in its definition,
/// so the previous build of the same place can lend its chunks.
pub fn produce(
    store: &Store,
    entries: &mut [Entry],
    settings: &Settings,
    slot: &str,
    previous: Option<LayerRecord>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(LayerRecord, CacheUse, Vec<Learned>)> {
    let Settings {
        mtime,
        compression,
        level,
        threads: _,
        use_cache,
    } = *settings;
    let chunks = plan(entries, mtime);
    let cache = store.cache_dir();
    let record_path = |key: &Digest| cache.join("layers").join(format!("{}.json", key.hex()));
    let slot_path = slot_path(store.layout(), slot);
    // With every digest known, the whole layer may already exist.
    let ids: Option<Vec<Digest>> = chunks.iter().map(|c| c.id).collect();
    let mut previous = previous.filter(|_| use_cache);
    if use_cache && let Some(ids) = ids {
        let key = layer_key(compression, level, &ids);
        // Usually the previous build of this slot is the match (a no-op rebuild).
        let hit = match previous.take_if(|p| p.key == key) {
            Some(p) => Some(p),
            None => load_record(&record_path(&key)).filter(|r| blob_present(store.layout(), r)),
        };
        if let Some(rec) = hit {
            save_slot(store, &slot_path, &key)?;
            return Ok((rec, CacheUse::Hit, Vec::new()));
        }
    }
    let written = write_chunks(
        store,
        entries,
        &chunks,
        settings,
        previous.as_ref(),
        progress,
    )?;
    for &(i, _, d, s1) in &written.learned {
        entries[i].sha256 = Some(d);
        entries[i].sha1 = Some(s1);
    }
    let key = layer_key(
        compression,
        level,
        &written.recs.iter().map(|r| r.id).collect::<Vec<_>>(),
    );
    let rec = LayerRecord {
        key,
        media_type: media_type(compression).to_string(),
        level,
        blob: written.blob,
        size: written.size,
        diff_id: written.diff_id,
        chunks: written.recs,
        files: entries.iter().map(Entry::record).collect(),
    };
    fs::create_dir_all(cache.join("layers")).ctx("create cache directory", &cache)?;
    let bytes =
        serde_json::to_vec(&rec).map_err(|e| Error::corrupt("layer record", e.to_string()))?;
    crate::durable::write_atomic(store.tmp_dir(), &record_path(&key), &bytes)?;
    save_slot(store, &slot_path, &key)?;
    let cache_use = CacheUse::Built {
        reused: written.reused,
        chunks: chunks.len(),
    };
    Ok((rec, cache_use, written.learned))
}

/// A layer's cache key: its format, compression and every chunk's identity
/// (which covers every header byte and every file digest).
fn layer_key(compression: Compression, level: u32, ids: &[Digest]) -> Digest {
    let mut h = Hasher::new();
    h.update(FORMAT.as_bytes());
    h.update(media_type(compression).as_bytes());
    h.update(&level.to_le_bytes());
    for id in ids {
        h.update(id.as_bytes());
    }
    h.finish()
}

/// The cached record of the layer whose key is `key` (hex), if its blob
/// is still in the store.
pub fn cached(layout: &Layout, key: &str) -> Option<LayerRecord> {
    let path = layout
        .cache_dir()
        .join("layers")
        .join(format!("{}.json", key.trim()));
    load_record(&path).filter(|r| r.key.hex() == key.trim() && blob_present(layout, r))
}

fn load_record(path: &Path) -> Option<LayerRecord> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn blob_present(layout: &Layout, rec: &LayerRecord) -> bool {
    fs::metadata(layout.blob_path(&rec.blob)).is_ok_and(|m| m.len() == rec.size)
}

fn slot_path(layout: &Layout, slot: &str) -> PathBuf {
    layout
        .cache_dir()
        .join("slots")
        .join(Digest::of(slot.as_bytes()).hex())
}

/// The record of the last build of `slot` whose blob is still in the store:
/// it lends chunks to the next build, and is the usual whole-layer hit.
/// Needs only paths, so it can load while the build context is scanned.
pub fn previous(layout: &Layout, slot: &str, settings: &Settings) -> Option<LayerRecord> {
    let key = fs::read_to_string(slot_path(layout, slot)).ok()?;
    let path = layout
        .cache_dir()
        .join("layers")
        .join(format!("{}.json", key.trim()));
    load_record(&path).filter(|r| {
        r.media_type == media_type(settings.compression)
            && r.level == settings.level
            && blob_present(layout, r)
    })
}

fn save_slot(store: &Store, slot_path: &Path, key: &Digest) -> Result<()> {
    if fs::read_to_string(slot_path).is_ok_and(|k| k.trim() == key.hex()) {
        return Ok(());
    }
    if let Some(dir) = slot_path.parent() {
        fs::create_dir_all(dir).ctx("create cache directory", dir)?;
    }
    crate::durable::write_atomic(store.tmp_dir(), slot_path, key.hex().as_bytes())
}

/// Cut the tar stream of `entries` into chunks. Pure: metadata in, plan out.
fn plan(entries: &[Entry], mtime: u64) -> Vec<ChunkPlan> {
    let mut chunks = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut cur_len = 0u64;
    let close = |cur: &mut Vec<Piece>, cur_len: &mut u64, chunks: &mut Vec<ChunkPlan>| {
        if !cur.is_empty() {
            chunks.push(ChunkPlan {
                pieces: std::mem::take(cur),
                ulen: *cur_len,
                id: None,
            });
            *cur_len = 0;
        }
    };
    for (i, e) in entries.iter().enumerate() {
        if cur_len >= MAX_CHUNK
            || (cur_len >= MIN_CHUNK && fnv1a(e.path.as_bytes()).is_multiple_of(16))
        {
            close(&mut cur, &mut cur_len, &mut chunks);
        }
        let mut header = Vec::with_capacity(tar::BLOCK);
        tar::write_header(
            &mut header,
            &tar::Header {
                path: &e.path,
                kind: e.kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                mtime,
                link: e.link.as_deref(),
                xattrs: &e.xattrs,
            },
        );
        cur_len += header.len() as u64;
        cur.push(Piece::Bytes(header));
        if e.kind != Kind::File {
            continue;
        }
        match &e.source {
            Some(Source::Inline(bytes)) => {
                cur_len += bytes.len() as u64;
                cur.push(Piece::Bytes(bytes.to_vec()));
            }
            Some(Source::Disk { .. }) => {
                let mut offset = 0;
                while offset < e.size {
                    if offset > 0 {
                        close(&mut cur, &mut cur_len, &mut chunks);
                    }
                    let len = FILE_PIECE.min(e.size - offset);
                    cur.push(Piece::File {
                        entry: i,
                        offset,
                        len,
                    });
                    cur_len += len;
                    offset += len;
                }
            }
            None => {}
        }
        let pad = tar::padding(e.size);
        if pad > 0 {
            cur_len += pad as u64;
            cur.push(Piece::Bytes(vec![0; pad]));
        }
    }
    // End of archive: two zero blocks.
    cur_len += 2 * tar::BLOCK as u64;
    cur.push(Piece::Bytes(vec![0; 2 * tar::BLOCK]));
    close(&mut cur, &mut cur_len, &mut chunks);
    for c in &mut chunks {
        c.id = chunk_id(entries, &c.pieces, |i| entries[i].sha256);
    }
    chunks
}

/// A chunk's identity: a digest over its literal bytes and, for file
/// content, the file's digest and the range taken. `None` while a file's
/// digest is unknown.
fn chunk_id(
    entries: &[Entry],
    pieces: &[Piece],
    digest_of: impl Fn(usize) -> Option<Digest>,
) -> Option<Digest> {
    let mut h = Hasher::new();
    for p in pieces {
        match p {
            Piece::Bytes(b) => {
                h.update(b"B");
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(b);
            }
            Piece::File { entry, offset, len } => {
                debug_assert!(entries[*entry].kind == Kind::File);
                h.update(b"F");
                h.update(digest_of(*entry)?.as_bytes());
                h.update(&offset.to_le_bytes());
                h.update(&len.to_le_bytes());
            }
        }
    }
    Some(h.finish())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A chunk ready to be appended: its uncompressed bytes (for the diff id) and
/// where its compressed bytes come from.
struct Ready {
    id: Digest,
    plain: Vec<u8>,
    crc: u32,
    packed: Packed,
    learned: Vec<Learned>,
}

enum Packed {
    New(Vec<u8>),
    Reuse(ChunkRec),
}

/// What `write_chunks` made.
struct Written {
    blob: Digest,
    size: u64,
    diff_id: Digest,
    recs: Vec<ChunkRec>,
    reused: usize,
    learned: Vec<Learned>,
}

fn write_chunks(
    store: &Store,
    entries: &[Entry],
    chunks: &[ChunkPlan],
    settings: &Settings,
    previous: Option<&LayerRecord>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Written> {
    let Settings {
        compression,
        threads,
        ..
    } = *settings;
    let reusable: HashMap<Digest, ChunkRec> = previous
        .map(|p| p.chunks.iter().map(|c| (c.id, c.clone())).collect())
        .unwrap_or_default();
    let old = match previous {
        Some(p) => {
            let path = store.blob_path(&p.blob);
            Some((File::open(&path).ctx("open previous layer", &path)?, path))
        }
        None => None,
    };
    // Chunks that are the same, in the same place, as last time form a
    // prefix whose hashes need not be recomputed (see `ChunkRec::plain_at`).
    let prefix: &[ChunkRec] = match previous {
        Some(p) => {
            let same = chunks
                .iter()
                .zip(&p.chunks)
                .take_while(|(c, r)| c.id == Some(r.id) && c.ulen == r.ulen)
                .count();
            match p.chunks.get(same) {
                Some(r) if same > 0 && !r.plain_at.is_empty() => &p.chunks[..same],
                _ => &[],
            }
        }
        None => &[],
    };
    let resume_at = previous
        .and_then(|p| p.chunks.get(prefix.len()))
        .filter(|_| !prefix.is_empty());
    let first = prefix.len();
    let threads = threads.max(1);
    let window = 2 * threads + 2;
    let next = AtomicUsize::new(first);
    let abort = AtomicBool::new(false);
    let done = (Mutex::new(first), Condvar::new());
    let (tx, rx) = mpsc::sync_channel::<(usize, Result<Ready>)>(window);
    let read_old = |rec: &ChunkRec| -> Result<Vec<u8>> {
        let (file, path) = old
            .as_ref()
            .ok_or_else(|| Error::corrupt("layer", "chunk reuse without a previous blob"))?;
        let mut buf = vec![0u8; rec.clen as usize];
        file.read_exact_at(&mut buf, rec.coff)
            .ctx("read previous layer", path)?;
        if crc32fast::hash(&buf) != rec.ccrc {
            return Err(Error::corrupt(
                format!("previous layer {}", path.display()),
                format!(
                    "bytes {}..{} do not match their checksum; run `drover verify`, or build with --no-cache",
                    rec.coff,
                    rec.coff + rec.clen
                ),
            ));
        }
        Ok(buf)
    };

    std::thread::scope(|s| -> Result<Written> {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, abort, done, reusable) = (&next, &abort, &done, &reusable);
            s.spawn(move || {
                let mut zstd = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks.len() || abort.load(Ordering::Relaxed) {
                        break;
                    }
                    // Stay within `window` chunks of the writer to bound memory.
                    {
                        let mut written = done.0.lock().unwrap_or_else(|e| e.into_inner());
                        while i >= *written + window && !abort.load(Ordering::Relaxed) {
                            written = done.1.wait(written).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                    let ready = prepare(entries, &chunks[i], reusable, settings, &mut zstd);
                    if tx.send((i, ready)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);

        // The diff id is the sha256 of the uncompressed stream; hash it on its
        // own thread so it overlaps with writing the compressed blob.
        let mut diff_hasher = match resume_at {
            Some(r) => Hasher::resume(&r.plain_at)
                .ok_or_else(|| Error::corrupt("layer cache record", "bad checkpoint"))?,
            None => Hasher::new(),
        };
        let (plain_tx, plain_rx) = mpsc::sync_channel::<Vec<u8>>(window);
        let diff = s.spawn(move || {
            let mut checkpoints = Vec::new();
            for plain in plain_rx {
                checkpoints.push(diff_hasher.checkpoint());
                diff_hasher.update(&plain);
            }
            (diff_hasher.finish(), checkpoints)
        });

        let result = (|| -> Result<Written> {
            let mut w = store.blob_writer()?;
            let mut learned = Vec::new();
            let mut recs: Vec<ChunkRec> = Vec::with_capacity(chunks.len());
            let mut crc = crc32fast::Hasher::new();
            let mut total = 0u64;
            if let Some(at) = resume_at {
                // The gzip header, then every prefix chunk, checked and copied.
                let mut head = vec![0u8; prefix[0].coff as usize];
                if let Some((file, path)) = &old {
                    file.read_exact_at(&mut head, 0)
                        .ctx("read previous layer", path)?;
                }
                w.write_prehashed(&head)?;
                for rec in prefix {
                    w.write_prehashed(&read_old(rec)?)?;
                    crc.combine(&crc32fast::Hasher::new_with_initial_len(rec.crc, rec.ulen));
                    total += rec.ulen;
                    progress(rec.ulen);
                }
                w.adopt_checkpoint(&at.packed_at)?;
                recs.extend_from_slice(prefix);
            } else if compression == Compression::Gzip {
                // Fixed header: no name, no mtime, OS "unknown", so no host data.
                w.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
            }
            let mut pending: BTreeMap<usize, Ready> = BTreeMap::new();
            let mut reused = prefix.len();
            let mut want = first;
            for (i, ready) in &rx {
                pending.insert(i, ready?);
                while let Some(mut r) = pending.remove(&want) {
                    let coff = w.len();
                    let packed_at = w.checkpoint();
                    let bytes = match r.packed {
                        Packed::New(bytes) => bytes,
                        Packed::Reuse(rec) => {
                            reused += 1;
                            read_old(&rec)?
                        }
                    };
                    w.write_all(&bytes)?;
                    let ulen = r.plain.len() as u64;
                    crc.combine(&crc32fast::Hasher::new_with_initial_len(r.crc, ulen));
                    total += ulen;
                    learned.append(&mut r.learned);
                    recs.push(ChunkRec {
                        id: r.id,
                        coff,
                        clen: bytes.len() as u64,
                        ulen,
                        crc: r.crc,
                        ccrc: crc32fast::hash(&bytes),
                        plain_at: String::new(),
                        packed_at,
                    });
                    progress(ulen);
                    if plain_tx.send(r.plain).is_err() {
                        return Err(Error::corrupt("layer", "diff hasher stopped"));
                    }
                    want += 1;
                    let mut written = done.0.lock().unwrap_or_else(|e| e.into_inner());
                    *written = want;
                    done.1.notify_all();
                }
            }
            if want != chunks.len() {
                return Err(Error::corrupt(
                    "layer",
                    "a compression worker stopped early",
                ));
            }
            if compression == Compression::Gzip {
                // Final empty fixed-Huffman block, then CRC-32 and length mod 2^32.
                w.write_all(&[0x03, 0x00])?;
                w.write_all(&crc.finalize().to_le_bytes())?;
                w.write_all(&(total as u32).to_le_bytes())?;
            }
            let (digest, size) = w.commit()?;
            Ok(Written {
                blob: digest,
                size,
                diff_id: Digest::of(b""), // set below, once the diff hasher is done
                recs,
                reused,
                learned,
            })
        })();
        if result.is_err() {
            abort.store(true, Ordering::Relaxed);
            done.1.notify_all();
        }
        drop(plain_tx);
        drop(rx);
        let (diff_id, checkpoints) = diff
            .join()
            .map_err(|_| Error::corrupt("layer", "diff hasher panicked"))?;
        let mut written = result?;
        written.diff_id = diff_id;
        let recs = &mut written.recs;
        for (rec, cp) in recs[first..].iter_mut().zip(checkpoints) {
            rec.plain_at = cp;
        }
        Ok(written)
    })
}

/// Read one chunk, learn the digests of its files that were not known, and
/// either find its compressed bytes in the previous layer or compress it.
fn prepare(
    entries: &[Entry],
    chunk: &ChunkPlan,
    reusable: &HashMap<Digest, ChunkRec>,
    settings: &Settings,
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<Ready> {
    let read_at = statcache::now_ns();
    let plain = assemble(entries, chunk)?;
    let mut learned = Vec::new();
    let id = match chunk.id {
        Some(id) => id,
        None => {
            // Files here are whole (larger ones were hashed ahead), so the
            // piece is the file's content.
            let mut at = 0usize;
            for p in &chunk.pieces {
                let len = match p {
                    Piece::Bytes(b) => b.len(),
                    Piece::File { entry, len, .. } => {
                        if entries[*entry].sha256.is_none() {
                            let content = &plain[at..at + *len as usize];
                            learned.push((*entry, read_at, Digest::of(content), sha1_of(content)));
                        }
                        *len as usize
                    }
                };
                at += len;
            }
            let find = |i: usize| {
                entries[i]
                    .sha256
                    .or_else(|| learned.iter().find(|l| l.0 == i).map(|l| l.2))
            };
            chunk_id(entries, &chunk.pieces, find).ok_or_else(|| {
                Error::corrupt("layer plan", "a file spanning chunks was not hashed ahead")
            })?
        }
    };
    match reusable.get(&id) {
        Some(rec) if rec.ulen == chunk.ulen => Ok(Ready {
            id,
            plain,
            crc: rec.crc,
            packed: Packed::Reuse(rec.clone()),
            learned,
        }),
        _ => Ok(Ready {
            id,
            crc: crc32fast::hash(&plain),
            packed: Packed::New(compress(&plain, settings, zstd)?),
            plain,
            learned,
        }),
    }
}

/// The uncompressed bytes of one chunk.
fn assemble(entries: &[Entry], chunk: &ChunkPlan) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(chunk.ulen as usize);
    for p in &chunk.pieces {
        match p {
            Piece::Bytes(b) => out.extend_from_slice(b),
            Piece::File { entry, offset, len } => {
                let Some(Source::Disk { path, stat }) = &entries[*entry].source else {
                    return Err(Error::corrupt("layer plan", "file piece without a source"));
                };
                let mut f = File::open(path).ctx("open", path)?;
                if *offset > 0 {
                    f.seek(SeekFrom::Start(*offset)).ctx("seek", path)?;
                }
                // read_to_end fills spare capacity without zeroing it first.
                let got = (&f).take(*len).read_to_end(&mut out).ctx("read", path)?;
                if got as u64 != *len {
                    return Err(Error::input(
                        path,
                        "file shrank while the build was reading it; build again",
                    ));
                }
                check_unchanged(&f, path, stat)?;
            }
        }
    }
    Ok(out)
}

fn compress(
    plain: &[u8],
    settings: &Settings,
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<Vec<u8>> {
    match settings.compression {
        Compression::Gzip => Ok(deflate_chunk(plain, settings.level)),
        Compression::Zstd => {
            if zstd.is_none() {
                *zstd = Some(
                    zstd::bulk::Compressor::new(settings.level as i32)
                        .map_err(|e| Error::corrupt("zstd", e.to_string()))?,
                );
            }
            let z = zstd.as_mut().expect("just set");
            z.compress(plain)
                .map_err(|e| Error::corrupt("zstd", e.to_string()))
        }
    }
}

/// Raw deflate of one chunk, ended by a sync flush (an empty stored block),
/// so chunks concatenate into one deflate stream with no final block yet.
fn deflate_chunk(plain: &[u8], level: u32) -> Vec<u8> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(plain.len() / 2 + 4096);
    let mut input = plain;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let before = c.total_in();
        // Compressing into a Vec cannot fail for a valid stream we drive ourselves.
        let _ = c.compress_vec(input, &mut out, FlushCompress::Sync);
        input = &input[(c.total_in() - before) as usize..];
        // The flush is complete when zlib returns with output space to spare.
        if input.is_empty() && out.len() < out.capacity() {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn chunked_deflate_is_one_valid_gzip_member() {
        let parts: Vec<Vec<u8>> = (0..5)
            .map(|i| format!("chunk {i} ").repeat(10_000 * (i + 1)).into_bytes())
            .collect();
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let mut crc = crc32fast::Hasher::new();
        let mut all = Vec::new();
        for p in &parts {
            gz.extend(deflate_chunk(p, 6));
            crc.combine(&crc32fast::Hasher::new_with_initial_len(
                crc32fast::hash(p),
                p.len() as u64,
            ));
            all.extend_from_slice(p);
        }
        gz.extend([3, 0]);
        gz.extend(crc.finalize().to_le_bytes());
        gz.extend((all.len() as u32).to_le_bytes());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, all);
    }

    #[test]
    fn empty_chunk_deflates_to_a_flush_only() {
        let out = deflate_chunk(b"", 6);
        assert!(!out.is_empty() && out.len() < 16);
    }
}
