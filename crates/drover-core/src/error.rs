//! The library's error type. Every error names the thing it is about (a path,
//! a digest, a key, a ledger entry) and `Error::kind` classifies it in one
//! place, so the CLI (and later the API) can map it to an exit code or status.
//! A command that finds a problem it was asked to look for (drift, a link of
//! a trace that does not hold, a deploy that failed) ends with an error too,
//! after printing its report: its exit code comes from the kind like any
//! other's.

use std::path::{Path, PathBuf};

use crate::digest::Digest;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an error is; the CLI maps each to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input (definition, arguments, build context) is wrong.
    Invalid,
    /// Something named does not exist.
    NotFound,
    /// Stored data does not match its digest or its hash chain.
    Corrupt,
    /// Another process holds what we need.
    Busy,
    /// The deploy policy refuses the image.
    Refused,
    /// A check the user asked for found a problem (drift, a signature or a
    /// link of a trace that does not verify); its report says what.
    CheckFailed,
    /// The environment failed us (I/O, database), or a deploy did.
    Internal,
    /// A caller's credentials (an API token) are not good (an HTTP API's 401).
    Unauthenticated,
}

/// Why a token was not accepted ([`Error::Unauthenticated`]): for the log
/// and the tests, never for the caller, who is told only "invalid token".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not a drover token's shape.
    Malformed,
    /// No token has this secret.
    Unknown,
    Revoked,
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A definition file could not be read or is malformed.
    #[error("{file}:{line}:{column}: {message}")]
    Definition {
        file: PathBuf,
        line: usize,
        column: usize,
        /// Dotted key path (`layers[1].mode`) when one is known.
        key: Option<String>,
        message: String,
    },

    /// A build input (copy source, base image, argument) cannot be used.
    #[error("{path}: {reason}", path = .path.display())]
    Input { path: PathBuf, reason: String },

    /// An argument given by the user is malformed.
    #[error("{0}")]
    Usage(String),

    /// A token was not accepted. The message is the same whatever the
    /// reason (which is kept for the log), so a caller learns nothing of
    /// which tokens exist.
    #[error("invalid token")]
    Unauthenticated(AuthFailure),

    #[error("{what} not found{hint}", hint = .hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotFound { what: String, hint: Option<String> },

    /// A blob's bytes do not hash to its name.
    #[error("corrupt blob {digest} at {path}: content hashes to {actual}", path = .path.display())]
    CorruptBlob {
        digest: Digest,
        path: PathBuf,
        actual: String,
    },

    /// Stored metadata (index, manifest, cache record) does not parse or is inconsistent.
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },

    /// The ledger's hash chain is broken.
    #[error("ledger entry {seq} is not valid: {reason}")]
    LedgerTampered { seq: u64, reason: String },

    /// The deploy policy (or a revocation) refuses an image.
    #[error("policy refuses image {image}: rule {rule}: {reason}")]
    Refused {
        image: String,
        rule: String,
        reason: String,
    },

    #[error("{what} is busy: {reason}")]
    Busy { what: String, reason: String },

    /// A container runtime failed to do something to an instance.
    #[error("instance {id}: the {driver} runtime could not {op} it: {reason}")]
    Runtime {
        id: String,
        driver: &'static str,
        op: &'static str,
        reason: String,
    },

    /// An operation failed for a reason another process reported as text.
    #[error("{0}")]
    Failed(String),

    /// A check the user asked for found problems (listed in its report).
    #[error("{0}")]
    Check(String),

    /// Services failed to deploy; `kind` is what they failed of (see
    /// `deploy::outcome`).
    #[error("{}", .messages.join("; "))]
    Deploy {
        kind: ErrorKind,
        messages: Vec<String>,
    },

    /// Input went past one of the bounds in `limits` (a manifest too large,
    /// a layer that inflates without end, ...).
    #[error("{what}: {detail}: over the limit {limit} (set {var} to change it)")]
    LimitExceeded {
        what: String,
        limit: &'static str,
        detail: String,
        var: String,
    },

    /// An OCI registry refused or failed a request.
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },

    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state database {path}: {source}", path = .path.display())]
    Database {
        path: PathBuf,
        /// What the backend said (its own error type stays inside `state`).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The state database was migrated by a newer drover than this one.
    #[error(
        "state database {path} has schema version {found}, but this drover only knows versions up to {supported}; use a drover at least as new as the one that last wrote it",
        path = .path.display()
    )]
    DatabaseTooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Definition { .. }
            | Error::Input { .. }
            | Error::Usage(_)
            | Error::LimitExceeded { .. }
            | Error::DatabaseTooNew { .. } => ErrorKind::Invalid,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::CorruptBlob { .. } | Error::Corrupt { .. } | Error::LedgerTampered { .. } => {
                ErrorKind::Corrupt
            }
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::Check(_) => ErrorKind::CheckFailed,
            Error::Deploy { kind, .. } => *kind,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Io { .. }
            | Error::Database { .. }
            | Error::Runtime { .. }
            | Error::Registry { .. }
            | Error::Failed(_) => ErrorKind::Internal,
        }
    }

    pub fn input(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound {
            what: what.into(),
            hint: None,
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

/// Attach the operation and path to an `io::Error`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
