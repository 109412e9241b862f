//! The log line format: the CRI (Kubernetes container log) format, so the
//! files read as kubelet's and containerd's do and tools that know it
//! (fluent-bit's `cri` parser, vector, promtail) read drover's logs:
//!
//! ```text
//! 2026-12-05T21:57:05.123456789Z stdout F a whole line
//! 2026-12-05T21:57:05.123500000Z stderr P the first 16 KiB of a long line, then
//! 2026-12-05T21:57:05.123500000Z stderr F the rest of it
//! ```
//!
//! The time is when the monitor read the output (RFC 3339, UTC,
//! nanoseconds, fixed width); the stream is `stdout` or `stderr`; the tag
//! is `F` for a line that ends here, `P` for a piece of one that goes on in
//! the stream's next record: cut at [`MAX_LINE`] bytes, or written without a
//! newline and followed by nothing for [`FLUSH_AFTER`]. The text is the
//! program's bytes as written, newline dropped (invalid UTF-8 kept as is).
//!
//! A line that does not parse (a log written by a monitor from before
//! stamping) reads as an unstamped stdout line: old logs still print.

use std::time::Duration;

use crate::clock;

/// The longest text one record holds; a longer line is cut into `P` pieces
/// (containerd's and kubelet's bound too).
pub const MAX_LINE: usize = 16 << 10;

/// How long text without a newline waits for the rest of its line before
/// it is written as a `P` piece (a prompt, a progress bar).
pub const FLUSH_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Nanoseconds since the Unix epoch; `None` for an unstamped line.
    pub time: Option<i64>,
    pub stream: Stream,
    /// A piece of a line that goes on in the next record of its stream.
    pub partial: bool,
    pub text: Vec<u8>,
}

/// Append the record `text` (no newline in it) read at `time` to `out`.
pub fn write(out: &mut Vec<u8>, time: i64, stream: Stream, partial: bool, text: &[u8]) {
    out.extend_from_slice(clock::format_rfc3339_nanos(time).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Read one line of a log file (without its newline).
pub fn parse(line: &[u8]) -> Record {
    parse_stamped(line).unwrap_or_else(|| Record {
        time: None,
        stream: Stream::Stdout,
        partial: false,
        text: line.to_vec(),
    })
}

fn parse_stamped(line: &[u8]) -> Option<Record> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let time = clock::parse_rfc3339_nanos(time)?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"F" => false,
        b"P" => true,
        _ => return None,
    };
    Some(Record {
        time: Some(time),
        stream,
        partial,
        text: parts.next().unwrap_or_default().to_vec(),
    })
}

/// Cuts one stream's output into records: whole lines as they come, the
/// rest held until its newline, [`MAX_LINE`], a [`Splitter::flush`] or the
/// end.
#[derive(Debug)]
pub struct Splitter {
    stream: Stream,
    held: Vec<u8>,
}

impl Splitter {
    pub fn new(stream: Stream) -> Splitter {
        Splitter {
            stream,
            held: Vec::new(),
        }
    }

    /// Text is waiting for the rest of its line.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Take `data` read at `time`; append the records it completes to `out`.
    pub fn push(&mut self, time: i64, data: &[u8], out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let piece = &rest[..i];
            if self.held.is_empty() {
                self.emit_line(time, piece, out);
            } else {
                let mut line = std::mem::take(&mut self.held);
                line.extend_from_slice(piece);
                self.emit_line(time, &line, out);
            }
            rest = &rest[i + 1..];
        }
        self.held.extend_from_slice(rest);
        while self.held.len() >= MAX_LINE {
            let tail = self.held.split_off(MAX_LINE);
            write(out, time, self.stream, true, &self.held);
            self.held = tail;
        }
    }

    /// A whole line: in pieces of at most MAX_LINE, the last one `F`.
    fn emit_line(&self, time: i64, mut line: &[u8], out: &mut Vec<u8>) {
        while line.len() > MAX_LINE {
            write(out, time, self.stream, true, &line[..MAX_LINE]);
            line = &line[MAX_LINE..];
        }
        write(out, time, self.stream, false, line);
    }

    /// Write what is held as a piece (`P`): nothing followed it in time.
    pub fn flush(&mut self, time: i64, out: &mut Vec<u8>) {
        if !self.held.is_empty() {
            write(out, time, self.stream, true, &self.held);
            self.held.clear();
        }
    }

    /// The stream ended: what is held is its last line (`F`, as containerd
    /// writes it).
    pub fn finish(&mut self, time: i64, out: &mut Vec<u8>) {
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            write(out, time, self.stream, false, &held);
        }
    }
}

/// A line as read back: its pieces joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When its first piece was read; an unstamped line takes the time of
    /// the stamped line before it (so merging keeps it in place).
    pub time: Option<i64>,
    pub stream: Stream,
    pub text: Vec<u8>,
}

/// Joins `P` pieces into lines, per stream.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: [Option<Line>; 2],
    last_time: Option<i64>,
}

impl Assembler {
    /// Take one file line; returns the line it completes, if it does.
    pub fn push(&mut self, raw: &[u8]) -> Option<Line> {
        let r = parse(raw);
        let time = r.time.or(self.last_time);
        if r.time.is_some() {
            self.last_time = r.time;
        }
        let slot = &mut self.pending[r.stream as usize];
        let line = match slot.take() {
            Some(mut l) => {
                l.text.extend_from_slice(&r.text);
                l
            }
            None => Line {
                time,
                stream: r.stream,
                text: r.text,
            },
        };
        if r.partial {
            *slot = Some(line);
            None
        } else {
            Some(line)
        }
    }

    /// Pieces whose end never came (the log was cut or rotated away).
    pub fn finish(&mut self) -> Vec<Line> {
        self.pending.iter_mut().filter_map(Option::take).collect()
    }
}

#[cfg(test)]
mod tests;
