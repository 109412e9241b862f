//! Instance logs, stamped and bounded: the container's stdout and stderr
//! go into two pipes that its monitor reads ([`Pump`]); each line is
//! written to `<bundle>/log` with the time it was read and its stream, in
//! the CRI (Kubernetes container log) format ([`line`]). The file is capped
//! at the service's `logs.max_size` (default `limits.log_bytes`) and
//! rotated to `log.1` … `log.<max_files>` (oldest dropped), so an instance
//! never holds more than (max_files + 1) × max_size of log (plus one
//! record), however much it prints. A file ends where a record does.
//!
//! The container never waits on the disk for long: each pipe is read into
//! a bounded queue by its own thread and written out by another. When the
//! queue is full (the disk is slower than the output) the reader waits up
//! to [`QUEUE_WAIT`] for room — the container's writes slow to the disk's
//! pace, as under docker's blocking log mode — and then drops what it read;
//! a failed write (a full disk) drops its bytes too. Dropped bytes are
//! counted, and a marker line saying how many goes into the log (as a
//! stderr record) as soon as writing works again: nothing is lost silently.
//!
//! The pipes have one reader, the monitor: a container whose monitor was
//! killed gets EPIPE (or SIGPIPE) on its next write, as under docker's or
//! podman's shims.
//!
//! Reading back ([`read`]) joins pieces, merges instances by time and
//! filters; when an instance is removed its files move to the store's kept
//! logs ([`keep`]), which `gc` collects after the service's retention.

pub mod keep;
pub mod line;
pub mod read;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use self::line::{Splitter, Stream};
use crate::clock;
use crate::error::{IoContext, Result};

/// Output read from the pipe and not yet written: past this it is dropped
/// (and counted) rather than making the container wait.
const QUEUE_BYTES: usize = 4 << 20;

/// How long a full queue may hold the container's output back before what
/// it wrote is dropped (a stalled disk must not stall the container).
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// The pipe's own buffer, asked for (the kernel may give less).
const PIPE_BYTES: i32 = 1 << 20;

/// A pipe for a container's output: (read end, write end), both close-on-exec
/// (the runtime dups the write end onto the container's stdout and stderr).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(io::Error::from)
        .ctx("create log pipe", Path::new("<pipe>"))?;
    // Best effort: a bigger buffer absorbs bursts; the default (64 KiB) works too.
    let _ = nix::fcntl::fcntl(
        r.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES),
    );
    Ok((r, w))
}

/// Copies a container's stdout and stderr from their pipes into its
/// rotated log, each line stamped.
pub struct Pump {
    done: mpsc::Receiver<()>,
}

enum Item {
    Data(Vec<u8>),
    /// This many bytes were dropped here.
    Dropped(u64),
}

/// The queue, a signal that it has items, and one that it has room.
type Shared = (Mutex<Queue>, Condvar, Condvar);

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    /// Readers whose pipe is still open.
    readers: usize,
    /// The writer let the queue stay full for [`QUEUE_WAIT`] and has not
    /// taken from it since.
    stalled: bool,
}

impl Pump {
    /// Start copying from `stdout` and `stderr` (read ends) into `log`,
    /// keeping at most `bytes` per file and `files` rotated files.
    pub fn start(stdout: OwnedFd, stderr: OwnedFd, log: PathBuf, bytes: u64, files: u64) -> Pump {
        let queue: Arc<Shared> = Arc::new((
            Mutex::new(Queue {
                readers: 2,
                ..Default::default()
            }),
            Condvar::new(),
            Condvar::new(),
        ));
        let (tx, done) = mpsc::channel();
        for (pipe, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
            let q = queue.clone();
            std::thread::spawn(move || read_pipe(File::from(pipe), stream, &q));
        }
        std::thread::spawn(move || {
            write_log(&queue, Rotating::new(log, bytes, files));
            let _ = tx.send(());
        });
        Pump { done }
    }

    /// Wait up to `timeout` for everything the container wrote to be in the
    /// log (the pipe closes when its last process exits). True if it is.
    pub fn finish(self, timeout: Duration) -> bool {
        self.done.recv_timeout(timeout).is_ok()
    }
}

fn read_pipe(mut pipe: File, stream: Stream, queue: &Shared) {
    let mut buf = vec![0u8; 64 << 10];
    let mut lines = Splitter::new(stream);
    loop {
        // Text without its newline waits for it only so long.
        if lines.holds() && !crate::sys::readable(pipe.as_fd(), line::FLUSH_AFTER) {
            let mut out = Vec::new();
            lines.flush(clock::now_ns(), &mut out);
            enqueue(queue, out, 0);
            continue;
        }
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut out = Vec::with_capacity(n + 64);
        lines.push(clock::now_ns(), &buf[..n], &mut out);
        enqueue(queue, out, n);
    }
    let mut out = Vec::new();
    lines.finish(clock::now_ns(), &mut out);
    enqueue(queue, out, 0);
    let (lock, ready, _) = queue;
    lock.lock().unwrap_or_else(|p| p.into_inner()).readers -= 1;
    ready.notify_all();
}

/// Queue `records` (`read` bytes of output), or drop and count them when
/// the queue stays full.
fn enqueue(queue: &Shared, records: Vec<u8>, read: usize) {
    if records.is_empty() {
        return;
    }
    let (lock, ready, room) = queue;
    let n = records.len();
    let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
    // Wait for room once; while the writer stays stuck, drop at once.
    if q.bytes + n > QUEUE_BYTES && !q.stalled {
        q = room
            .wait_timeout_while(q, QUEUE_WAIT, |q| q.bytes + n > QUEUE_BYTES)
            .unwrap_or_else(|p| p.into_inner())
            .0;
        q.stalled = q.bytes + n > QUEUE_BYTES;
    }
    if q.bytes + n > QUEUE_BYTES {
        let lost = read.max(1) as u64;
        match q.items.back_mut() {
            Some(Item::Dropped(d)) => *d += lost,
            _ => q.items.push_back(Item::Dropped(lost)),
        }
    } else {
        q.bytes += n;
        q.items.push_back(Item::Data(records));
    }
    ready.notify_all();
}

fn write_log(queue: &Shared, mut log: Rotating) {
    let (lock, ready, room) = queue;
    // Bytes dropped and not yet reported in the log, and why.
    let mut lost = 0u64;
    let mut why = String::new();
    loop {
        let items: Vec<Item> = {
            let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
            while q.items.is_empty() && q.readers > 0 {
                q = ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.items.is_empty() {
                break;
            }
            q.bytes = 0;
            q.stalled = false;
            room.notify_one();
            q.items.drain(..).collect()
        };
        for item in items {
            let data = match item {
                Item::Dropped(n) => {
                    lost += n;
                    why = "the log could not keep up".into();
                    continue;
                }
                Item::Data(d) => d,
            };
            if lost > 0 {
                if log.write(&marker(lost, &why)).is_err() {
                    lost += data.len() as u64;
                    continue;
                }
                lost = 0;
            }
            if let Err(e) = log.write(&data) {
                lost += data.len() as u64;
                why = format!("writing {} failed: {e}", log.path.display());
            }
        }
    }
    if lost > 0 {
        let _ = log.write(&marker(lost, &why));
    }
}

/// The record saying `lost` bytes of output were dropped, and why.
fn marker(lost: u64, why: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let text = format!("[drover: {lost} bytes of output dropped: {why}]");
    line::write(
        &mut out,
        clock::now_ns(),
        Stream::Stderr,
        false,
        text.as_bytes(),
    );
    out
}

/// A log file that rotates itself: see the module docs.
struct Rotating {
    path: PathBuf,
    bytes: u64,
    files: u64,
    file: Option<File>,
    /// Bytes in the current file; set to `bytes` to rotate before the next write.
    size: u64,
}

impl Rotating {
    fn new(path: PathBuf, bytes: u64, files: u64) -> Rotating {
        Rotating {
            path,
            bytes: bytes.max(1),
            files,
            file: None,
            size: 0,
        }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.bytes {
                self.rotate()?;
            }
            let file = match &mut self.file {
                Some(f) => f,
                None => {
                    let f = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)?;
                    self.size = f.metadata()?.len();
                    self.file.insert(f)
                }
            };
            let room = (self.bytes - self.size.min(self.bytes)) as usize;
            if room == 0 {
                continue;
            }
            // A whole number of records when they fit, so a rotated file
            // ends where a record does; a record longer than a whole file
            // goes alone into a file of its own.
            let n = if data.len() <= room {
                data.len()
            } else {
                match data[..room].iter().rposition(|&b| b == b'\n') {
                    Some(i) => i + 1,
                    None if self.size > 0 => {
                        self.size = self.bytes;
                        continue;
                    }
                    None => data
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(data.len(), |i| i + 1),
                }
            };
            file.write_all(&data[..n])?;
            self.size += n as u64;
            if n < data.len() {
                self.size = self.bytes;
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// `log.<k>` → `log.<k+1>` (the last one dropped), `log` → `log.1`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        for k in (1..self.files).rev() {
            match fs::rename(rotated(&self.path, k), rotated(&self.path, k + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.files == 0 {
            fs::remove_file(&self.path)?;
        } else {
            fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.size = 0;
        Ok(())
    }
}

/// `log` → `log.<k>`.
fn rotated(log: &Path, k: u64) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(format!(".{k}"));
    PathBuf::from(p)
}

/// Every file of the log at `log`, oldest first: the rotated ones, then
/// `log` itself if it is there.
pub(crate) fn files(log: &Path) -> Vec<PathBuf> {
    let mut all = rotated_files(log);
    if log.exists() {
        all.push(log.to_path_buf());
    }
    all
}

/// The rotated files of `log` that exist, oldest first (highest number first).
fn rotated_files(log: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name();
            let k = n.to_str()?.strip_prefix(&prefix)?.parse().ok()?;
            Some((k, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Copy the whole log at `log`, rotated files first, to `out`: the files
/// as they were at one moment (see [`Snapshot`]), so a rotation meanwhile
/// neither repeats nor grows what is copied.
pub fn copy_all(log: &Path, out: &mut dyn Write) -> Result<()> {
    Follower::start(log, out).map(drop)
}

/// The files of a log opened at one moment: the rotated ones, oldest first,
/// and the current one. Opened files keep their content when the writer
/// renames them away (or drops the oldest), so what they hold is read
/// whole however fast the instance writes.
struct Snapshot {
    rotated: Vec<(PathBuf, File)>,
    current: Option<File>,
}

impl Snapshot {
    /// Attempts before taking a snapshot a rotation went through: the
    /// writer would have to rotate between every two opens.
    const ATTEMPTS: usize = 20;

    fn take(log: &Path) -> Result<Snapshot> {
        let mut last = None;
        for _ in 0..Self::ATTEMPTS {
            let current = open_if_there(log)?;
            let mut rotated = Vec::new();
            for p in rotated_files(log) {
                if let Some(f) = open_if_there(&p)? {
                    rotated.push((p, f));
                }
            }
            let snap = Snapshot { rotated, current };
            // Rotation always renames `log` away: if it is still the file
            // opened first, nothing rotated while the others were opened.
            let Some(ino) = snap.current_ino() else {
                return Ok(snap);
            };
            if fs::metadata(log).is_ok_and(|m| m.ino() == ino) {
                return Ok(snap);
            }
            last = Some(snap);
        }
        // Rotating faster than files open: never read one file twice.
        let mut snap = last.expect("at least one attempt");
        let ino = snap.current_ino();
        snap.rotated
            .retain(|(_, f)| f.metadata().map(|m| m.ino()).ok() != ino);
        Ok(snap)
    }

    fn current_ino(&self) -> Option<u64> {
        self.current
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.ino())
    }
}

/// `path` opened, or `None` when it is not there (rotated away, or never
/// written).
fn open_if_there(path: &Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("open log", path),
    }
}

/// Copy one file to `out`; a file rotated away meanwhile is skipped.
fn copy_file(path: &Path, out: &mut dyn Write) -> Result<()> {
    match open_if_there(path)? {
        Some(mut f) => copy(&mut f, path, out),
        None => Ok(()),
    }
}

fn copy(f: &mut File, path: &Path, out: &mut dyn Write) -> Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf).ctx("read log", path)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])
            .ctx("write log", Path::new("<stdout>"))?;
    }
}

/// Follows a log across rotations (`drover logs -f`).
pub struct Follower {
    log: PathBuf,
    file: Option<File>,
}

impl Follower {
    /// Copy the whole log as it is now (a [`Snapshot`]) to `out`; the
    /// follower then goes on from there ([`Follower::poll`]).
    pub fn start(log: &Path, out: &mut dyn Write) -> Result<Follower> {
        let Snapshot { rotated, current } = Snapshot::take(log)?;
        for (path, mut f) in rotated {
            copy(&mut f, &path, out)?;
        }
        let mut file = current;
        if let Some(f) = &mut file {
            copy(f, log, out)?;
        }
        Ok(Follower {
            log: log.to_path_buf(),
            file,
        })
    }

    /// Copy what was written since the last call, following the log to its
    /// new file when it was rotated.
    pub fn poll(&mut self, out: &mut dyn Write) -> Result<()> {
        loop {
            let Some(file) = &mut self.file else {
                self.file = File::open(&self.log).ok();
                if self.file.is_none() {
                    return Ok(());
                }
                continue;
            };
            copy(file, &self.log, out)?;
            let ino = file.metadata().ctx("stat log", &self.log)?.ino();
            let now = fs::metadata(&self.log).map(|m| m.ino()).ok();
            if now == Some(ino) {
                return Ok(());
            }
            // Rotated: the files that came after ours, then the new one.
            // Ours has finished growing (only `log` is written to).
            let mut newer = rotated_files(&self.log);
            if let Some(at) = newer
                .iter()
                .position(|p| fs::metadata(p).map(|m| m.ino()).ok() == Some(ino))
            {
                newer.drain(..=at);
            }
            self.file = File::open(&self.log).ok();
            for p in newer {
                copy_file(&p, out)?;
            }
            if self.file.is_none() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
