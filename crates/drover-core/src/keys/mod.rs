//! Ed25519 keys: generation, PEM files, key ids, and the host key; with
//! [`dsse`], the envelopes everything signed about an image travels in.
//!
//! A leaf: it imports nothing of drover's but digests, errors and durable
//! file writes, so the ledger (which signs every entry) and the trust chain
//! (which signs images) both build on it without a loop. Nothing here caches
//! a key: whoever opens the state owns the host key (a
//! [`crate::state::Db`] loads it once, when it first signs) and hands it to
//! what signs (builds, `drover sign`, ledger exports).
//!
//! Files are the standard PEM forms, so OpenSSL and Python's `cryptography`
//! read them as they are: the private key is PKCS#8 (RFC 8410, `PRIVATE
//! KEY`), the public key is SubjectPublicKeyInfo (`PUBLIC KEY`). A private
//! key file must be readable by its owner only (mode 0600 or stricter);
//! [`SigningKey::load`] refuses anything looser rather than use a key others
//! may have read.
//!
//! A key's id is the one securesystemslib (and so in-toto) computes: the
//! lowercase hex SHA-256 of `{"keytype":"ed25519","keyval":{"public":"<hex>"},"scheme":"ed25519"}`.
//! DSSE signatures carry it, so outside verifiers match signatures to keys
//! without being told.

pub mod dsse;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self as ring_sig, Ed25519KeyPair, KeyPair};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};

/// DER prefix of an RFC 8410 PKCS#8 v1 Ed25519 private key; the 32-byte seed follows.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Where the host key lives inside a state directory.
pub const HOST_KEY: &str = "keys/host.key";
/// Its public half, written beside it for sharing.
pub const HOST_PUB: &str = "keys/host.pub";

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.keyid())
    }
}

impl PublicKey {
    pub fn from_raw(raw: [u8; 32]) -> Self {
        PublicKey(raw)
    }

    pub fn raw(&self) -> &[u8; 32] {
        &self.0
    }

    /// The securesystemslib key id (see the module docs).
    pub fn keyid(&self) -> String {
        let canonical = format!(
            r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
            hex::encode(self.0)
        );
        Digest::of(canonical.as_bytes()).hex()
    }

    /// True when `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        ring_sig::UnparsedPublicKey::new(&ring_sig::ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem_encode("PUBLIC KEY", &der)
    }

    pub fn from_pem(text: &str, what: &Path) -> Result<Self> {
        let der = pem_decode(text, "PUBLIC KEY").ok_or_else(|| {
            Error::input(what, "not a PEM public key (-----BEGIN PUBLIC KEY-----)")
        })?;
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(raw) if raw.len() == 32 => Ok(PublicKey(raw.try_into().expect("32 bytes"))),
            _ => Err(Error::input(what, "not an Ed25519 public key")),
        }
    }

    /// Read a public key file. A private key file is accepted too (its
    /// public half is used), so `--key` can name either.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).ctx("read key", path)?;
        if text.contains("-----BEGIN PRIVATE KEY-----") {
            return SigningKey::load(path).map(|k| k.public());
        }
        Self::from_pem(&text, path)
    }
}

/// An Ed25519 key pair that can sign.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    seed: [u8; 32],
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| Error::Failed("the system random source failed".into()))?;
        Self::from_seed(seed)
    }

    fn from_seed(seed: [u8; 32]) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|_| Error::Failed("could not derive an Ed25519 key".into()))?;
        Ok(SigningKey { pair, seed })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(
            self.pair
                .public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        )
    }

    pub fn keyid(&self) -> String {
        self.public().keyid()
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.pair
            .sign(msg)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }

    pub fn to_pem(&self) -> String {
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&self.seed);
        pem_encode("PRIVATE KEY", &der)
    }

    /// Read a private key file, refusing one that group or others can read
    /// or write.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = fs::metadata(path).ctx("read key", path)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::input(
                path,
                format!(
                    "private key has mode {mode:04o}, so others may have read it; \
                     it must be 0600 or stricter (chmod 600 {}; replace the key if it was exposed)",
                    path.display()
                ),
            ));
        }
        let text = fs::read_to_string(path).ctx("read key", path)?;
        let der = pem_decode(&text, "PRIVATE KEY").ok_or_else(|| {
            Error::input(path, "not a PEM private key (-----BEGIN PRIVATE KEY-----)")
        })?;
        if let Some(seed) = der.strip_prefix(&PKCS8_V1_PREFIX[..])
            && seed.len() == 32
        {
            return Self::from_seed(seed.try_into().expect("32 bytes"));
        }
        // PKCS#8 v2 (with the public key inside), as ring and some tools write it.
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| Error::input(path, "not an Ed25519 private key"))?;
        let seed = der
            .get(16..48)
            .and_then(|s| <[u8; 32]>::try_from(s).ok())
            .ok_or_else(|| Error::input(path, "not an Ed25519 private key"))?;
        let key = Self::from_seed(seed)?;
        if key.public().raw() != pair.public_key().as_ref() {
            return Err(Error::input(
                path,
                "private key does not match its public key",
            ));
        }
        Ok(key)
    }

    /// Write the key to `path` (created, never overwritten; mode 0600) and
    /// its public half to `pub_path`. The key is written in full to a
    /// temporary file and then linked into place, so a crash never leaves
    /// an empty or partial key behind (which would stop every later
    /// signature, and so every ledger append).
    pub fn write(&self, path: &Path, pub_path: &Path) -> Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            // Owner only: whoever can write here can replace the key.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .ctx("create key directory", dir)?;
        }
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("key"),
            std::process::id()
        ));
        // A leftover of a crashed run with the same pid; never followed.
        let _ = fs::remove_file(&tmp);
        let written = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
                .ctx("create private key", &tmp)?;
            f.write_all(self.to_pem().as_bytes())
                .and_then(|()| f.sync_all())
                .ctx("write private key", &tmp)?;
            // link, unlike rename, fails when the key exists: never overwrite one.
            fs::hard_link(&tmp, path).ctx("create private key", path)
        })();
        let _ = fs::remove_file(&tmp);
        written?;
        crate::durable::write_atomic(
            pub_path.parent().unwrap_or(Path::new(".")),
            pub_path,
            self.public().to_pem().as_bytes(),
        )?;
        // The key is durable before anything is signed with it.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx("fsync key directory", dir)
    }
}

/// The host key of the state directory `state_dir`, created (with its
/// public half) the first time it is asked for. Reads the file each call:
/// callers that sign often hold on to the key (the state database does).
pub fn host_key(state_dir: &Path) -> Result<SigningKey> {
    let path = state_dir.join(HOST_KEY);
    let key = match SigningKey::load(&path) {
        Ok(k) => k,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            // A lost key is not replaced quietly: everything signed with it
            // (images, the ledger) would stop verifying, and its public half
            // would be overwritten.
            let public = state_dir.join(HOST_PUB);
            if public.exists() {
                return Err(Error::input(
                    &path,
                    format!(
                        "the host key is missing, but its public key {} exists: restore the key from a backup; \
                         or, to start over with a new key, move {} aside (images and ledger entries signed \
                         with the old key then verify only with it, given as --key)",
                        public.display(),
                        public.display()
                    ),
                ));
            }
            let k = SigningKey::generate()?;
            match k.write(&path, &state_dir.join(HOST_PUB)) {
                Ok(()) => k,
                // Another process created it first: use theirs.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    SigningKey::load(&path)?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    Ok(key)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text.split_once(&begin)?.1.split_once(&end)?.0;
    let b64: String = body.split_whitespace().collect();
    B64.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_pem_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::generate().unwrap();
        let (kp, pp) = (dir.path().join("k.key"), dir.path().join("k.pub"));
        k.write(&kp, &pp).unwrap();
        assert_eq!(
            fs::metadata(&kp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = SigningKey::load(&kp).unwrap();
        assert_eq!(back.public(), k.public());
        let public = PublicKey::load(&pp).unwrap();
        let sig = back.sign(b"hello");
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellO", &sig));
        assert!(
            !SigningKey::generate()
                .unwrap()
                .public()
                .verify(b"hello", &sig)
        );
        // Never overwritten.
        assert!(k.write(&kp, &pp).is_err());
    }

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let kp = dir.path().join("k.key");
        SigningKey::generate()
            .unwrap()
            .write(&kp, &dir.path().join("k.pub"))
            .unwrap();
        fs::set_permissions(&kp, fs::Permissions::from_mode(0o640)).unwrap();
        let e = SigningKey::load(&kp).err().unwrap().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn keyid_matches_securesystemslib() {
        // RFC 8032 test 1 public key; keyid computed by securesystemslib 1.6
        // (SSlibKey.from_crypto) for it.
        let raw: [u8; 32] =
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(
            PublicKey::from_raw(raw).keyid(),
            "74c181c7ad8a0855d4b55e44d2ba87aabdddb196832571f15f92fece332e4916"
        );
    }

    #[test]
    fn host_key_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = host_key(dir.path()).unwrap();
        let b = host_key(dir.path()).unwrap();
        assert_eq!(a.public(), b.public());
        assert_eq!(
            PublicKey::load(&dir.path().join(HOST_PUB)).unwrap(),
            a.public()
        );
        assert_eq!(
            fs::metadata(dir.path().join("keys"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
    }

    /// Regression (review): a deleted host key was silently replaced by a
    /// new one, overwriting host.pub, so nothing signed before verified.
    #[test]
    fn a_lost_host_key_is_not_replaced_quietly() {
        let dir = tempfile::tempdir().unwrap();
        let first = host_key(dir.path()).unwrap().public();
        fs::remove_file(dir.path().join(HOST_KEY)).unwrap();
        // A fresh process would not have it cached.
        let e = host_key(dir.path()).err().unwrap().to_string();
        assert!(e.contains("restore the key"), "{e}");
        assert_eq!(PublicKey::load(&dir.path().join(HOST_PUB)).unwrap(), first);
    }
}
