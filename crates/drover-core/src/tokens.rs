//! API tokens: bearer secrets for the coming HTTP API, each with a name and
//! a role (`read` < `deploy` < `admin`), an optional expiry, revocable.
//!
//! A secret is `drv_` followed by the lowercase hex of 32 random bytes. It
//! is shown once, when made ([`create`]); the state keeps only its SHA-256
//! (a plain hash suffices: the secret is high-entropy, so there is nothing
//! to guess from the hash). [`authenticate`] hashes what a caller presents
//! and compares it with every stored hash in constant time; a revoked or
//! expired token is refused like an unknown one, with one public message
//! ("invalid token") and the real reason kept in the error for the log.
//! Names stay taken after revocation, so the ledger's `token.create` and
//! `token.revoke` entries (the actor: who made or revoked it) name one
//! token each.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock;
use crate::digest::Digest;
use crate::error::{AuthFailure, Error, Result};
use crate::ledger::{self, NewEntry};
use crate::state::{Db, Reader, TokenRow};

/// What every secret starts with (so scanners and people recognise one).
pub const PREFIX: &str = "drv_";

/// What a token may do. Ordered: each role may do what those below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything the API shows.
    Read,
    /// Also apply fleet files and roll back.
    Deploy,
    /// Also revoke images and manage tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Deploy => "deploy",
            Role::Admin => "admin",
        }
    }

    /// Whether a token of this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;

    fn from_str(s: &str) -> Result<Role> {
        match s {
            "read" => Ok(Role::Read),
            "deploy" => Ok(Role::Deploy),
            "admin" => Ok(Role::Admin),
            _ => Err(Error::Usage(format!(
                "{s:?} is not a token role (expected read, deploy or admin)"
            ))),
        }
    }
}

/// A token as shown (`drover token list`, the API): never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub name: String,
    pub role: Role,
    /// RFC 3339 UTC.
    pub created: String,
    /// Who made it (the ledger's actor).
    pub creator: String,
    pub expires: Option<String>,
    pub revoked: Option<String>,
}

impl Token {
    /// `active`, `revoked` or `expired` at `now` (RFC 3339 UTC).
    pub fn status(&self, now: &str) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.expires.as_deref().is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }

    fn from_row(r: TokenRow) -> Result<Token> {
        let role = r.role.parse().map_err(|_| {
            Error::corrupt(
                format!("token {}", r.name),
                format!("role {:?} is not one drover writes", r.role),
            )
        })?;
        Ok(Token {
            name: r.name,
            role,
            created: r.created,
            creator: r.creator,
            expires: r.expires,
            revoked: r.revoked,
        })
    }
}

/// A token just made, with its secret: the only time the secret exists
/// outside the caller's hands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Created {
    #[serde(flatten)]
    pub token: Token,
    pub secret: String,
}

/// Make a token `name` with `role`, expiring `expires_in_ms` from now if
/// given; ledgered (`token.create`). Refuses a name already used, revoked
/// tokens' included.
pub fn create(db: &mut Db, name: &str, role: Role, expires_in_ms: Option<u64>) -> Result<Created> {
    crate::grammar::name(name).map_err(|e| Error::Usage(format!("token name: {e}")))?;
    let secret = new_secret()?;
    let now_ms = clock::now_ms();
    let created = clock::now_rfc3339();
    let expires = expires_in_ms.map(|ms| {
        let at = now_ms.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX / 2));
        clock::format_rfc3339(at.div_euclid(1000), at.rem_euclid(1000) as u32)
    });
    let row = TokenRow {
        name: name.to_string(),
        role: role.as_str().to_string(),
        hash: hash(&secret),
        created,
        creator: ledger::actor(),
        expires,
        revoked: None,
    };
    db.write(|tx| {
        if let Some(old) = tx.read().token(name)? {
            let state = if old.revoked.is_some() {
                " (revoked)"
            } else {
                ""
            };
            return Err(Error::Usage(format!(
                "a token named {name:?} already exists{state}: choose another name \
                 (`drover token list` lists them; names are not reused)"
            )));
        }
        tx.insert_token(&row)?;
        tx.record(NewEntry::new(
            "token.create",
            [name.to_string()],
            json!({"name": name, "role": role.as_str(), "expires": row.expires}),
        ))
        .map(drop)
    })?;
    Ok(Created {
        token: Token::from_row(row)?,
        secret,
    })
}

/// Every token, by name, revoked and expired ones included.
pub fn list(r: Reader<'_>) -> Result<Vec<Token>> {
    r.tokens()?.into_iter().map(Token::from_row).collect()
}

/// Revoke token `name` at once; ledgered (`token.revoke`). Revoking a
/// revoked token is fine and records nothing. Returns the token.
pub fn revoke(db: &mut Db, name: &str) -> Result<Token> {
    let row = db.write(|tx| {
        if tx.read().token(name)?.is_none() {
            return Err(Error::NotFound {
                what: format!("token {name:?}"),
                hint: Some("`drover token list` lists them".into()),
            });
        }
        if tx.revoke_token(name, &clock::now_rfc3339())? {
            tx.record(NewEntry::new(
                "token.revoke",
                [name.to_string()],
                json!({"name": name}),
            ))?;
        }
        tx.read().token(name)
    })?;
    Token::from_row(row.expect("checked in the same transaction"))
}

/// The token whose secret is `secret`, if it is neither revoked nor
/// expired. Every refusal is [`Error::Unauthenticated`] ("invalid token"),
/// its [`AuthFailure`] saying why. The presented secret's hash is compared
/// with every stored one in constant time, none skipped.
pub fn authenticate(r: Reader<'_>, secret: &str) -> Result<Token> {
    let well_formed = secret
        .strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !well_formed {
        return Err(Error::Unauthenticated(AuthFailure::Malformed));
    }
    let presented = hash(secret);
    let mut found = None;
    for row in r.tokens()? {
        if constant_time_eq(presented.as_bytes(), row.hash.as_bytes()) {
            found = Some(row);
        }
    }
    let token = Token::from_row(found.ok_or(Error::Unauthenticated(AuthFailure::Unknown))?)?;
    match token.status(&clock::now_rfc3339()) {
        "revoked" => Err(Error::Unauthenticated(AuthFailure::Revoked)),
        "expired" => Err(Error::Unauthenticated(AuthFailure::Expired)),
        _ => Ok(token),
    }
}

/// A new secret: the prefix and 32 random bytes in hex.
fn new_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Failed("the system's random number source failed".into()))?;
    Ok(format!("{PREFIX}{}", hex::encode(bytes)))
}

/// What the state keeps of a secret: its SHA-256, lowercase hex.
fn hash(secret: &str) -> String {
    Digest::of(secret.as_bytes()).hex()
}

/// Equal, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests;
