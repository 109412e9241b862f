//! One ledger entry: its fields, its canonical form and hash, its signature;
//! and who is acting ([`actor`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::keys::{self, PublicKey};

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the ledger, from 1, without gaps.
    pub seq: u64,
    /// When it was appended, RFC 3339 UTC (see [`crate::clock`]). Informational:
    /// clocks can step back, `seq` is the order.
    pub time: String,
    /// Who did it (see [`actor`]).
    pub actor: String,
    /// What happened, dotted (`tag.set`, `gc.run`).
    pub action: String,
    /// What it happened to: digests, tag names, instance ids.
    pub subjects: Vec<String>,
    /// Action-specific facts, as canonical JSON (object keys sorted).
    pub details: Value,
    /// The previous entry's `hash`, or [`super::GENESIS_HASH`] for entry 1.
    pub prev_hash: String,
    /// See the module docs for exactly what this covers.
    pub hash: String,
    /// The id of the key that signed `hash`; `None` for entries written
    /// before the ledger was signed. Not covered by `hash`.
    #[serde(default)]
    pub keyid: Option<String>,
    /// Ed25519 signature of the UTF-8 bytes of `hash`, standard base64;
    /// `None` with `keyid`. Not covered by `hash`.
    #[serde(default)]
    pub signature: Option<String>,
}

impl Entry {
    /// The bytes `hash` is the SHA-256 of: the canonical JSON of every field
    /// but `hash` (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let object: Map<String, Value> = [
            ("action", Value::from(self.action.as_str())),
            ("actor", Value::from(self.actor.as_str())),
            ("details", self.details.clone()),
            ("prev_hash", Value::from(self.prev_hash.as_str())),
            ("seq", Value::from(self.seq)),
            ("subjects", Value::from(self.subjects.clone())),
            ("time", Value::from(self.time.as_str())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        canonical(Value::Object(object)).to_string().into_bytes()
    }

    /// What `hash` should be for this entry's content.
    pub fn compute_hash(&self) -> String {
        Digest::of(&self.canonical_bytes()).to_string()
    }

    /// Set `keyid` and `signature`: `key`'s signature of [`Entry::hash`],
    /// which must already be computed.
    pub fn sign(&mut self, key: &keys::SigningKey) {
        self.keyid = Some(key.keyid());
        self.signature = Some(B64.encode(key.sign(self.hash.as_bytes())));
    }

    /// Check this entry's signature, if it has one, against `trusted`.
    /// `Ok(None)` for an unsigned entry (both columns empty), `Ok(Some(keyid))`
    /// for a good signature, `Err(reason)` otherwise. Only the signature is
    /// checked here, not whether `hash` matches the content.
    pub fn check_signature(
        &self,
        trusted: &[PublicKey],
    ) -> std::result::Result<Option<&str>, String> {
        let (keyid, signature) = match (&self.keyid, &self.signature) {
            (None, None) => return Ok(None),
            (Some(k), Some(s)) => (k, s),
            (Some(_), None) => return Err("has a key id but no signature".into()),
            (None, Some(_)) => return Err("has a signature but no key id".into()),
        };
        // The key id is not signed: look the key up by it, then require the
        // signature to verify under exactly that key, so a changed key id is
        // caught as well.
        let key = trusted.iter().find(|k| k.keyid() == *keyid).ok_or_else(|| {
            format!(
                "signed by key {keyid}, which is not a trusted key (trust it with --key PUB if it is yours, e.g. the host key before a rotation)"
            )
        })?;
        let raw = B64
            .decode(signature)
            .map_err(|_| "its signature is not base64".to_string())?;
        if raw.len() != 64 || !key.verify(self.hash.as_bytes(), &raw) {
            return Err(format!(
                "signature does not match its hash under key {keyid} (the signature was altered, or the entry re-hashed after signing)"
            ));
        }
        Ok(Some(keyid))
    }
}

/// An entry to append; [`crate::state::Tx::record`] fills in the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub action: String,
    pub subjects: Vec<String>,
    pub details: Value,
}

impl NewEntry {
    pub fn new<S: Into<String>>(
        action: impl Into<String>,
        subjects: impl IntoIterator<Item = S>,
        details: Value,
    ) -> Self {
        NewEntry {
            action: action.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            details,
        }
    }
}

/// `v` as compact JSON with object keys sorted at every level: the form
/// drover hashes (ledger entries, release configs).
pub fn canonical_json(v: &Value) -> String {
    canonical(v.clone()).to_string()
}

pub(crate) fn canonical(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut fields: Vec<(String, Value)> = map.into_iter().collect();
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(fields.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}

thread_local! {
    static ACTING_FOR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with [`actor`] answering `who` on this thread: how `serve`'s
/// HTTP API records an action as the authenticated caller's (a token's
/// name), not as serve's own user. Scoped to the thread and to `f`, so
/// concurrent requests on other threads keep their own.
pub fn acting_for<T>(who: &str, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTING_FOR.with(|a| *a.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(ACTING_FOR.with(|a| a.borrow_mut().replace(who.to_string())));
    f()
}

/// Who is acting, for [`Entry::actor`]:
///
/// 0. The caller [`acting_for`] names, inside it.
/// 1. `$DROVER_ACTOR`, verbatim, if set and non-empty: for automation, and
///    for a service acting on behalf of a caller it has authenticated.
/// 2. Otherwise the login name of the real uid (or `uid:N` if it has none),
///    as `alice(via root)` when run through sudo (`$SUDO_USER`), followed by
///    `@hostname`.
///
/// This attributes, it does not authenticate: anyone who can write to the
/// database can also set these variables.
pub fn actor() -> String {
    if let Some(who) = ACTING_FOR.with(|a| a.borrow().clone()) {
        return who;
    }
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    let uid = sys::uid();
    compose_actor(
        var("DROVER_ACTOR"),
        var("SUDO_USER"),
        sys::user_name(uid),
        uid,
        sys::hostname(),
    )
}

pub(super) fn compose_actor(
    explicit: Option<String>,
    sudo_user: Option<String>,
    user: Option<String>,
    uid: u32,
    host: Option<String>,
) -> String {
    if let Some(actor) = explicit {
        return actor;
    }
    let me = user.unwrap_or_else(|| format!("uid:{uid}"));
    let who = match sudo_user {
        Some(original) if original != me => format!("{original}(via {me})"),
        _ => me,
    };
    match host {
        Some(host) => format!("{who}@{host}"),
        None => who,
    }
}

/// The libc calls behind [`actor`]; std has no safe wrapper for them.
#[allow(unsafe_code)]
pub(super) mod sys {
    use std::ffi::{CStr, c_char};

    pub(crate) fn uid() -> u32 {
        // SAFETY: getuid has no preconditions and cannot fail.
        unsafe { libc::getuid() }
    }

    /// The passwd entry's name for `uid`, through NSS (so LDAP/sssd users
    /// resolve too), or None if there is none.
    pub(crate) fn user_name(uid: u32) -> Option<String> {
        let mut buf: Vec<c_char> = vec![0; 1024];
        loop {
            // SAFETY: passwd is plain data (integers and pointers) for which
            // all-zero is a valid value; getpwuid_r overwrites it.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            // SAFETY: every pointer is valid for the duration of the call and
            // buf.len() is its true length. On success pwd's strings point
            // into buf, which outlives their use below.
            let rc = unsafe {
                libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
            };
            if rc == libc::ERANGE && buf.len() < (1 << 20) {
                buf.resize(buf.len() * 2, 0);
                continue;
            }
            if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
                return None;
            }
            // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated
            // string inside buf.
            let name = unsafe { CStr::from_ptr(pwd.pw_name) };
            let name = name.to_string_lossy().into_owned();
            return (!name.is_empty()).then_some(name);
        }
    }

    pub(crate) fn hostname() -> Option<String> {
        let mut buf = [0u8; 256];
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc != 0 {
            return None;
        }
        // POSIX leaves termination unspecified on truncation; take what fits.
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..len]).into_owned();
        (!name.is_empty()).then_some(name)
    }
}
