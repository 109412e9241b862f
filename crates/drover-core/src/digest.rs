//! `Digest`: the sha256 identity of every blob, image, baseline and config,
//! and `Hasher`, the one way bytes become a digest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// `sha256:<64 lowercase hex>`. Only sha256 is supported: it is what every
/// OCI tool writes by default, and one algorithm keeps identities comparable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(raw: [u8; 32]) -> Self {
        Digest(raw)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex characters without the `sha256:` prefix (a blob's file name).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex characters, for tables meant for people.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a digest: {input:?} (expected sha256:<64 lowercase hex characters>)")]
pub struct ParseDigestError {
    pub input: String,
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError {
            input: s.to_string(),
        };
        let hex_part = s.strip_prefix("sha256:").ok_or_else(err)?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(err());
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut raw).map_err(|_| err())?;
        Ok(Digest(raw))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 that counts the bytes it saw and can be paused and
/// resumed: `checkpoint` captures the exact state after any prefix, so a
/// rebuild whose layer starts with the same bytes as last time continues the
/// hash from there instead of re-reading the prefix.
#[derive(Clone)]
pub struct Hasher {
    state: [u32; 8],
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
}

const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

impl Default for Hasher {
    fn default() -> Self {
        Hasher {
            state: H0,
            len: 0,
            buf: [0; 64],
            buf_len: 0,
        }
    }
}

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(bytes.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&bytes[..take]);
            self.buf_len += take;
            bytes = &bytes[take..];
            if self.buf_len < 64 {
                return;
            }
            let block = self.buf;
            compress_blocks(&mut self.state, &block);
            self.buf_len = 0;
        }
        let full = bytes.len() / 64 * 64;
        compress_blocks(&mut self.state, &bytes[..full]);
        let rest = &bytes[full..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(mut self) -> Digest {
        let bits = self.len.wrapping_mul(8);
        let mut tail = [0u8; 128];
        tail[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        tail[self.buf_len] = 0x80;
        let total = if self.buf_len < 56 { 64 } else { 128 };
        tail[total - 8..total].copy_from_slice(&bits.to_be_bytes());
        compress_blocks(&mut self.state, &tail[..total]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        Digest(out)
    }

    /// The state after everything hashed so far, as a hex string.
    pub fn checkpoint(&self) -> String {
        let mut raw = Vec::with_capacity(40 + self.buf_len);
        for w in self.state {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        raw.extend_from_slice(&self.len.to_be_bytes());
        raw.extend_from_slice(&self.buf[..self.buf_len]);
        hex::encode(raw)
    }

    /// Continue from a `checkpoint`; `None` if it is malformed.
    pub fn resume(checkpoint: &str) -> Option<Hasher> {
        let raw = hex::decode(checkpoint).ok()?;
        if raw.len() < 40 || raw.len() >= 40 + 64 {
            return None;
        }
        let mut h = Hasher::new();
        for (w, b) in h.state.iter_mut().zip(raw[..32].chunks_exact(4)) {
            *w = u32::from_be_bytes(b.try_into().ok()?);
        }
        h.len = u64::from_be_bytes(raw[32..40].try_into().ok()?);
        h.buf_len = raw.len() - 40;
        h.buf[..h.buf_len].copy_from_slice(&raw[40..]);
        (h.len % 64 == h.buf_len as u64).then_some(h)
    }
}

/// Run the sha256 compression function over whole 64-byte blocks (sha2
/// picks SHA-NI or AVX2 at run time).
#[allow(unsafe_code)]
fn compress_blocks(state: &mut [u32; 8], blocks: &[u8]) {
    use sha2::digest::generic_array::{GenericArray, typenum::U64};
    debug_assert_eq!(blocks.len() % 64, 0);
    // SAFETY: GenericArray<u8, U64> is a transparent wrapper of [u8; 64]
    // (size 64, alignment 1), and `blocks` holds exactly len/64 of them.
    let blocks = unsafe {
        std::slice::from_raw_parts(
            blocks.as_ptr().cast::<GenericArray<u8, U64>>(),
            blocks.len() / 64,
        )
    };
    sha2::compress256(state, blocks);
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_malformed_input() {
        let d = Digest::of(b"drover");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn hasher_matches_sha2_for_every_split_and_survives_checkpoints() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000] {
            let want = Digest::of(&data[..len]);
            for split in [0, 1, 30, 64, len / 2, len] {
                let split = split.min(len);
                let mut h = Hasher::new();
                h.update(&data[..split]);
                let mut h = Hasher::resume(&h.checkpoint()).expect("checkpoint parses");
                h.update(&data[split..len]);
                assert_eq!(h.finish(), want, "len {len} split {split}");
            }
        }
        assert!(Hasher::resume("zz").is_none());
        assert!(
            Hasher::resume(&"00".repeat(41)).is_none(),
            "tail length must match len % 64"
        );
    }

    #[test]
    fn hasher_matches_one_shot_digest() {
        let mut h = Hasher::new();
        h.update(b"dro");
        h.update(b"ver");
        assert_eq!(h.len(), 6);
        assert_eq!(h.finish(), Digest::of(b"drover"));
    }
}
