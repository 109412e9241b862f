//! Instance logs, bounded: the container's stdout and stderr go into a pipe
//! that its monitor reads ([`Pump`]) and writes to `<bundle>/log`, capped at
//! `limits.log_bytes` and rotated to `log.1` … `log.<log_files>` (oldest
//! dropped), so an instance never holds more than (log_files + 1) ×
//! log_bytes of log, however much it prints.
//!
//! The container never waits on the disk for long: the pipe is read into a
//! bounded queue by one thread and written out by another. When the queue
//! is full (the disk is slower than the output) the reader waits up to
//! [`QUEUE_WAIT`] for room — the container's writes slow to the disk's pace,
//! as under docker's blocking log mode — and then drops what it read; a
//! failed write (a full disk) drops its bytes too. Dropped bytes are
//! counted, and a marker line saying how many goes into the log as soon as
//! writing works again: nothing is lost silently.
//!
//! The pipe has one reader, the monitor: a container whose monitor was
//! killed gets EPIPE (or SIGPIPE) on its next write, as under docker's or
//! podman's shims.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

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

/// Copies a container's output from its pipe into its rotated log.
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
    eof: bool,
    /// The writer let the queue stay full for [`QUEUE_WAIT`] and has not
    /// taken from it since.
    stalled: bool,
}

impl Pump {
    /// Start copying from `pipe` (a read end) into `log`, keeping at most
    /// `bytes` per file and `files` rotated files.
    pub fn start(pipe: OwnedFd, log: PathBuf, bytes: u64, files: u64) -> Pump {
        let queue: Arc<Shared> = Arc::new(Default::default());
        let (tx, done) = mpsc::channel();
        let q = queue.clone();
        std::thread::spawn(move || read_pipe(File::from(pipe), &q));
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

fn read_pipe(mut pipe: File, queue: &Shared) {
    let (lock, ready, room) = queue;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
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
            match q.items.back_mut() {
                Some(Item::Dropped(d)) => *d += n as u64,
                _ => q.items.push_back(Item::Dropped(n as u64)),
            }
        } else {
            q.bytes += n;
            q.items.push_back(Item::Data(buf[..n].to_vec()));
        }
        ready.notify_one();
    }
    lock.lock().unwrap_or_else(|p| p.into_inner()).eof = true;
    ready.notify_one();
}

fn write_log(queue: &Shared, mut log: Rotating) {
    let (lock, ready, room) = queue;
    // Bytes dropped and not yet reported in the log, and why.
    let mut lost = 0u64;
    let mut why = String::new();
    loop {
        let items: Vec<Item> = {
            let mut q = lock.lock().unwrap_or_else(|p| p.into_inner());
            while q.items.is_empty() && !q.eof {
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
                let marker = format!("\n[drover: {lost} bytes of output dropped: {why}]\n");
                if log.write(marker.as_bytes()).is_err() {
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
        let _ =
            log.write(format!("\n[drover: {lost} bytes of output dropped: {why}]\n").as_bytes());
    }
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
            // A whole number of lines when they fit, so a rotated file ends
            // where a line does; a line longer than a file is cut.
            let n = if data.len() <= room {
                data.len()
            } else {
                data[..room]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(room, |i| i + 1)
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

/// Copy the whole log at `log`, rotated files first, to `out`.
pub fn copy_all(log: &Path, out: &mut dyn Write) -> Result<()> {
    for path in rotated_files(log).iter().map(PathBuf::as_path).chain([log]) {
        copy_file(path, out)?;
    }
    Ok(())
}

/// Copy one file to `out`; a file rotated away meanwhile is skipped.
fn copy_file(path: &Path, out: &mut dyn Write) -> Result<()> {
    match File::open(path) {
        Ok(mut f) => copy(&mut f, path, out),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx("open log", path),
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
    /// Start at the beginning of the whole log: the rotated files are
    /// copied to `out` now, the current file as it grows ([`Follower::poll`]).
    pub fn start(log: &Path, out: &mut dyn Write) -> Result<Follower> {
        // The current file first, so a rotation while the older ones are
        // copied is seen (its inode moves to log.1) by the next poll.
        let file = File::open(log).ok();
        for path in rotated_files(log) {
            copy_file(&path, out)?;
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
mod tests {
    use super::*;

    fn read_all(log: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        copy_all(log, &mut out).unwrap();
        out
    }

    #[test]
    fn rotation_keeps_the_newest_output_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut r = Rotating::new(log.clone(), 100, 2);
        let lines: Vec<String> = (0..200).map(|i| format!("line {i:04}\n")).collect();
        for l in &lines {
            r.write(l.as_bytes()).unwrap();
        }
        let mut total = 0;
        for p in rotated_files(&log).iter().chain([&log]) {
            let len = fs::metadata(p).unwrap().len();
            assert!(len <= 100, "{} holds {len} bytes", p.display());
            total += len;
        }
        assert!(total <= 300);
        assert_eq!(rotated_files(&log).len(), 2);
        // Whole lines, in order, ending with the last one.
        let text = String::from_utf8(read_all(&log)).unwrap();
        assert!(text.ends_with("line 0199\n"), "{text}");
        let tail: Vec<&str> = text.lines().collect();
        let first = lines.len() - tail.len();
        assert_eq!(
            tail,
            lines[first..]
                .iter()
                .map(|l| l.trim_end())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_pump_copies_everything_and_follow_reads_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let (r, w) = pipe().unwrap();
        let pump = Pump::start(r, log.clone(), 1000, 1000);
        let mut w = File::from(w);
        let mut follower = Follower::start(&log, &mut Vec::new()).unwrap();
        let mut seen = Vec::new();
        let mut want = Vec::new();
        for i in 0..500 {
            let line = format!("{i}\n");
            w.write_all(line.as_bytes()).unwrap();
            want.extend_from_slice(line.as_bytes());
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(5));
                follower.poll(&mut seen).unwrap();
            }
        }
        drop(w);
        assert!(pump.finish(Duration::from_secs(5)));
        follower.poll(&mut seen).unwrap();
        assert_eq!(
            String::from_utf8(seen).unwrap(),
            String::from_utf8(want.clone()).unwrap()
        );
        assert_eq!(read_all(&log), want);
    }

    #[test]
    fn a_stalled_log_holds_the_container_back_only_for_a_while() {
        let (r, w) = pipe().unwrap();
        let queue: Arc<Shared> = Arc::new(Default::default());
        let q = queue.clone();
        let reader = std::thread::spawn(move || read_pipe(File::from(r), &q));
        // Nobody writes the queue out: past QUEUE_BYTES the reader waits
        // QUEUE_WAIT, then drops (and counts) instead of blocking the writer.
        let started = std::time::Instant::now();
        let mut w = File::from(w);
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..(QUEUE_BYTES / chunk.len() + 8) {
            w.write_all(&chunk).unwrap();
        }
        drop(w);
        reader.join().unwrap();
        assert!(started.elapsed() >= QUEUE_WAIT);
        assert!(
            started.elapsed() < 2 * QUEUE_WAIT,
            "one wait, not one per read"
        );
        let q = queue.0.lock().unwrap();
        assert!(q.bytes <= QUEUE_BYTES);
        let dropped: u64 = q
            .items
            .iter()
            .map(|i| match i {
                Item::Dropped(n) => *n,
                Item::Data(_) => 0,
            })
            .sum();
        assert_eq!(
            dropped + q.bytes as u64,
            (QUEUE_BYTES + 8 * chunk.len()) as u64
        );
    }

    #[test]
    fn a_failed_write_is_reported_in_the_log_not_lost_silently() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let queue: Shared = Default::default();
        {
            let mut q = queue.0.lock().unwrap();
            q.items.push_back(Item::Data(b"one\n".to_vec()));
            q.items.push_back(Item::Dropped(1234));
            q.items.push_back(Item::Data(b"two\n".to_vec()));
            q.eof = true;
        }
        write_log(&queue, Rotating::new(log.clone(), 1 << 20, 1));
        let text = String::from_utf8(read_all(&log)).unwrap();
        assert_eq!(
            text,
            "one\n\n[drover: 1234 bytes of output dropped: the log could not keep up]\ntwo\n"
        );
    }
}
