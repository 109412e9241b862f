//! Where a layer's tar stream puts its headers, followed as the bytes go
//! by, so that an extension header — a GNU long name (`L`) or long link
//! (`K`), a PAX header (`x`, `g`) — that declares more than
//! `tar_header_bytes` is refused from its 512-byte header, before its body
//! is read. The tar crate reads those bodies whole into memory
//! (`read_all`), and a layer of a few hundred KiB of gzip can declare a
//! long name of many GiB.
//!
//! The tracker frames the stream exactly as the tar crate (0.4) does, or a
//! header could hide from it inside what it takes for a body: it reads
//! sizes with the crate's own `Header::entry_size` (octal or GNU base-256),
//! lets a local PAX header's `size` record replace the size of the entry it
//! describes (parsed with the crate's `PaxExtensions`), and passes over GNU
//! sparse extension blocks. Where the crate fails on a header, so does the
//! tracker (the crate reads no further). The fuzz target
//! `store::unpack::fuzz` checks that the two agree.

use tar::{GnuExtSparseHeader, Header, PaxExtensions};

const BLOCK: usize = 512;

/// What the tracker found wrong with a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// An extension header declares a body of `size` bytes, past `cap`.
    TooLarge {
        what: &'static str,
        at: u64,
        size: u64,
        cap: u64,
    },
    /// A header the tar crate fails on too.
    Corrupt(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::TooLarge {
                what,
                at,
                size,
                cap,
            } => write!(
                f,
                "its {what} header at byte {at} of the tar stream declares {size} bytes, \
                 more than {cap} (a real one holds a path or a few attributes)"
            ),
            Fault::Corrupt(why) => f.write_str(why),
        }
    }
}

/// Follows one tar stream's headers (see the module docs).
pub(crate) struct Headers {
    cap: u64,
    /// Offset in the stream of the next byte fed.
    at: u64,
    state: State,
    /// `Some` once a local PAX header waits for the entry it describes;
    /// inside, its `size` record, if it has one.
    pax: Option<Option<u64>>,
    /// The block being collected (a header or a sparse extension).
    block: [u8; BLOCK],
    filled: usize,
    /// Where the headers of the entries the tar crate yields begin.
    #[cfg(test)]
    pub(crate) entries: Vec<u64>,
}

enum State {
    /// Collecting a header.
    Header,
    /// Collecting a GNU sparse extension block; then `body` bytes.
    Sparse { body: u64 },
    /// Collecting `left` more bytes of a local PAX header's records; then
    /// `pad` bytes.
    Pax {
        records: Vec<u8>,
        left: u64,
        pad: u64,
    },
    /// Passing over this many bytes of a body and its padding.
    Skip(u64),
    /// A fault was found: the stream is not read on.
    Failed(Fault),
}

fn skip(n: u64) -> State {
    if n == 0 {
        State::Header
    } else {
        State::Skip(n)
    }
}

impl Headers {
    /// A tracker refusing extension headers past `cap` bytes.
    pub(crate) fn new(cap: u64) -> Headers {
        Headers {
            cap,
            at: 0,
            state: State::Header,
            pax: None,
            block: [0; BLOCK],
            filled: 0,
            #[cfg(test)]
            entries: Vec::new(),
        }
    }

    /// The next bytes of the stream, in order.
    pub(crate) fn feed(&mut self, mut buf: &[u8]) -> Result<(), Fault> {
        while !buf.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Header);
            let taken;
            self.state = match state {
                State::Failed(f) => {
                    self.state = State::Failed(f.clone());
                    return Err(f);
                }
                State::Skip(left) => {
                    taken = left.min(buf.len() as u64) as usize;
                    skip(left - taken as u64)
                }
                State::Pax {
                    mut records,
                    left,
                    pad,
                } => {
                    taken = left.min(buf.len() as u64) as usize;
                    records.extend_from_slice(&buf[..taken]);
                    let left = left - taken as u64;
                    if left == 0 {
                        self.pax = Some(pax_size(&records));
                        skip(pad)
                    } else {
                        State::Pax { records, left, pad }
                    }
                }
                State::Header | State::Sparse { .. } => {
                    taken = (BLOCK - self.filled).min(buf.len());
                    self.block[self.filled..self.filled + taken].copy_from_slice(&buf[..taken]);
                    self.filled += taken;
                    if self.filled < BLOCK {
                        state
                    } else {
                        self.filled = 0;
                        let start = self.at + taken as u64 - BLOCK as u64;
                        match state {
                            State::Sparse { body } => {
                                let mut ext = GnuExtSparseHeader::new();
                                ext.as_mut_bytes().copy_from_slice(&self.block);
                                if ext.is_extended() {
                                    State::Sparse { body }
                                } else {
                                    skip(body)
                                }
                            }
                            _ => match self.header(start) {
                                Ok(next) => next,
                                Err(f) => {
                                    self.state = State::Failed(f.clone());
                                    return Err(f);
                                }
                            },
                        }
                    }
                }
            };
            self.at += taken as u64;
            buf = &buf[taken..];
        }
        Ok(())
    }

    /// The header just collected, which began at `start`: what follows it.
    fn header(&mut self, start: u64) -> Result<State, Fault> {
        // The end of the archive (or, read with `ignore_zeros`, a block
        // skipped): the next block is a header again.
        if self.block.iter().all(|&b| b == 0) {
            return Ok(State::Header);
        }
        let h = Header::from_byte_slice(&self.block);
        let kind = h.entry_type();
        let what = if kind.is_gnu_longname() {
            Some("GNU long-name (L)")
        } else if kind.is_gnu_longlink() {
            Some("GNU long-link (K)")
        } else if kind.is_pax_local_extensions() {
            Some("PAX (x)")
        } else if kind.is_pax_global_extensions() {
            Some("PAX global (g)")
        } else {
            None
        };
        let corrupt = |why: String| Fault::Corrupt(format!("tar header at byte {start}: {why}"));
        let mut size = h.entry_size().map_err(|e| corrupt(e.to_string()))?;
        if let Some(what) = what {
            if size > self.cap {
                return Err(Fault::TooLarge {
                    what,
                    at: start,
                    size,
                    cap: self.cap,
                });
            }
        } else if let Some(Some(pax)) = self.pax {
            size = pax;
        }
        let padded = size
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
            .ok_or_else(|| corrupt("size overflow".into()))?;
        // The crate reads an extension header as one only in a GNU or
        // ustar header; in an old one it is an entry like any other.
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        if recognized && (kind.is_gnu_longname() || kind.is_gnu_longlink()) {
            return Ok(skip(padded));
        }
        if recognized && kind.is_pax_local_extensions() {
            if size == 0 {
                self.pax = Some(None);
                return Ok(skip(padded));
            }
            return Ok(State::Pax {
                records: Vec::with_capacity(size.min(64 << 10) as usize),
                left: size,
                pad: padded - size,
            });
        }
        // An entry the crate yields: a pending PAX header was its.
        self.pax = None;
        #[cfg(test)]
        self.entries.push(start);
        if kind.is_gnu_sparse() {
            let Some(gnu) = h.as_gnu() else {
                return Err(corrupt(
                    "sparse entry type listed but not GNU header".into(),
                ));
            };
            if gnu.is_extended() {
                return Ok(State::Sparse { body: padded });
            }
        }
        Ok(skip(padded))
    }
}

/// A PAX header's `size` record, read as the tar crate reads it: the first
/// one, and none if a record before it is malformed or its value is not a
/// number.
fn pax_size(records: &[u8]) -> Option<u64> {
    for ext in PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

/// Checks that the tracker frames `stream` as the tar crate does: with no
/// cap it lets through whatever the crate reads, failing only where the
/// crate fails too, and it finds the header of every entry the crate
/// yields where the crate found it.
#[cfg(test)]
pub(crate) fn agrees_with_the_tar_crate(stream: &[u8]) {
    use std::io::Read;

    struct Tracked<'a> {
        inner: &'a [u8],
        headers: Headers,
        fault: Option<Fault>,
    }
    impl Read for Tracked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            if let Err(f) = self.headers.feed(&buf[..n]) {
                self.fault = Some(f.clone());
                return Err(std::io::Error::other(f.to_string()));
            }
            Ok(n)
        }
    }
    /// The header positions of the entries the crate yields, and whether
    /// it ended in an error.
    fn entries(r: impl Read) -> (Vec<u64>, bool) {
        let mut ar = tar::Archive::new(r);
        let mut out = Vec::new();
        let Ok(entries) = ar.entries() else {
            return (out, true);
        };
        for e in entries {
            match e {
                Ok(e) => out.push(e.raw_header_position()),
                Err(_) => return (out, true),
            }
        }
        (out, false)
    }

    let (plain, plain_failed) = entries(stream);
    let mut t = Tracked {
        inner: stream,
        headers: Headers::new(u64::MAX),
        fault: None,
    };
    let (seen, _) = entries(&mut t);
    assert_eq!(seen, plain, "the tracker changed what the crate read");
    if let Some(f) = &t.fault {
        assert!(
            plain_failed,
            "the tracker failed ({f}) where the crate did not"
        );
    }
    // The crate may fail on a header the tracker took for an entry's (a
    // checksum mismatch): one more, at most, and only then.
    let tracked = &t.headers.entries;
    assert!(
        tracked.starts_with(&plain)
            && (tracked.len() == plain.len() || (plain_failed && tracked.len() == plain.len() + 1)),
        "framing differs: crate {plain:?}, tracker {tracked:?}"
    );
}

#[cfg(test)]
mod tests;
