//! Debian version numbers (`[epoch:]upstream[-revision]`) and their order,
//! exactly as Debian policy 5.6.12 and dpkg define it: the epoch compares
//! as a number; upstream and revision compare as alternating runs of
//! non-digits (character by character: `~` before everything, even the
//! end, then letters, then the rest by ASCII) and digits (as numbers).
//! Also the relation operators of dependency fields.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A valid Debian version, kept as written. Equality is the version order's
/// (`1.0` = `0:1.0` = `1.0-0` = `1.00`), so `Version` is not `Hash`.
#[derive(Clone)]
pub struct Version {
    text: String,
    epoch: u64,
    /// Byte offsets of the upstream part in `text`; the revision is what
    /// follows `upstream_end + 1` (empty when there is no `-`).
    upstream_start: u32,
    upstream_end: u32,
}

/// Why a string is not a Debian version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Debian version: {input:?} ({reason})")]
pub struct ParseVersionError {
    pub input: String,
    pub reason: &'static str,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version, ParseVersionError> {
        let err = |reason| ParseVersionError {
            input: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("it is empty"));
        }
        if s.len() > u32::MAX as usize / 2 {
            return Err(err("it is too long"));
        }
        let (epoch, rest_start) = match s.find(':') {
            Some(colon) => {
                let e = &s[..colon];
                if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("the epoch is not a number"));
                }
                let epoch = e
                    .parse::<u64>()
                    .map_err(|_| err("the epoch is too large"))?;
                (epoch, colon + 1)
            }
            None => (0, 0),
        };
        let rest = &s[rest_start..];
        let upstream_len = rest.rfind('-').unwrap_or(rest.len());
        let upstream = &rest[..upstream_len];
        if upstream.is_empty() {
            return Err(err("the upstream version is empty"));
        }
        if upstream_len < rest.len() && upstream_len + 1 == rest.len() {
            return Err(err("the revision after `-` is empty"));
        }
        let allowed =
            |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b'-' | b':');
        if !rest.bytes().all(allowed) {
            return Err(err("only letters, digits and . + ~ - : are allowed"));
        }
        if rest[upstream_len..].contains(':') {
            return Err(err("the revision contains `:`"));
        }
        Ok(Version {
            text: s.to_string(),
            epoch,
            upstream_start: rest_start as u32,
            upstream_end: (rest_start + upstream_len) as u32,
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn upstream(&self) -> &str {
        &self.text[self.upstream_start as usize..self.upstream_end as usize]
    }

    /// The Debian revision; empty when there is none (which orders as `0`).
    pub fn revision(&self) -> &str {
        self.text
            .get(self.upstream_end as usize + 1..)
            .unwrap_or("")
    }
}

/// A character's weight in a non-digit run (dpkg's `order()`): `~` lowest,
/// then the end of the run (and digits, which end it), letters, the rest.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: compare an upstream version or a revision.
pub fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        // A non-digit run, character by character.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // A digit run, as a number of any length.
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let da = a[i.min(a.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let db = b[j.min(b.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if da != db {
            return da.cmp(&db);
        }
        match a[i..i + da].cmp(&b[j..j + db]) {
            Ordering::Equal => {}
            other => return other,
        }
        i += da;
        j += db;
    }
    Ordering::Equal
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| compare_part(self.upstream(), other.upstream()))
            .then_with(|| compare_part(self.revision(), other.revision()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl FromStr for Version {
    type Err = ParseVersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Version::parse(s)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A relation operator of a dependency field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `<<`: strictly earlier.
    Earlier,
    /// `<=` (and the obsolete `<`).
    EarlierEqual,
    /// `=`.
    Equal,
    /// `>=` (and the obsolete `>`).
    LaterEqual,
    /// `>>`: strictly later.
    Later,
}

impl Op {
    /// `<<`, `<=`, `=`, `>=`, `>>`, and the obsolete `<` and `>` (which
    /// policy defines as `<=` and `>=`).
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<<" => Op::Earlier,
            "<=" | "<" => Op::EarlierEqual,
            "=" => Op::Equal,
            ">=" | ">" => Op::LaterEqual,
            ">>" => Op::Later,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Earlier => "<<",
            Op::EarlierEqual => "<=",
            Op::Equal => "=",
            Op::LaterEqual => ">=",
            Op::Later => ">>",
        }
    }

    /// Whether `have OP want` holds.
    pub fn holds(self, have: &Version, want: &Version) -> bool {
        let o = have.cmp(want);
        match self {
            Op::Earlier => o == Ordering::Less,
            Op::EarlierEqual => o != Ordering::Greater,
            Op::Equal => o == Ordering::Equal,
            Op::LaterEqual => o != Ordering::Less,
            Op::Later => o == Ordering::Greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
