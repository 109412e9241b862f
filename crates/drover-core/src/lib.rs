//! drover-core: all of drover's domain logic. The binary (`crates/drover`) is a
//! thin shell over this crate.
//!
//! Module index (dependencies point down this list, never up):
//!
//! | module    | owns |
//! |-----------|------|
//! | [`reconcile`] | `drover serve`'s reconciler: the deploy pass, run forever, with back-off |
//! | [`drift`]  | drift: instances against their releases — image, runtime config, process, and the root's every file against the baseline (budgeted); condemns drifted instances for replacement |
//! | [`deploy`] | fleet files, releases, the rollout planner, health gates, traffic hand-over, rollback |
//! | [`instance`] | instances: run, stop, remove, logs; their state machine and monitor process |
//! | [`runtime`] | the `Driver` trait (embedded libcontainer, runc, fake) and the OCI runtime config |
//! | [`builder`] | `drover.toml` parsing, the build plan, deterministic layers, compression, the layer cache, SLSA provenance, SPDX SBOMs |
//! | [`health`] | the health check: its types, its `[...health]` table, its JSON form (an image label) |
//! | `toml_doc` | TOML with positions: every value located, errors naming file:line:column and dotted key |
//! | [`store`]  | the OCI image layout: atomic verified blobs, tags, referrers, baselines, unpacked roots, `gc`, `verify` |
//! | [`trust`]  | signatures, attestations, the deploy policy and revocations |
//! | [`ledger`] | the append-only, hash-chained audit log |
//! | [`keys`]   | Ed25519 keys, the host key, DSSE envelopes (a leaf) |
//! | [`state`]  | the SQLite database (tags, referrers, ledger, instances) and its versioned migrations |
//! | [`grammar`] | every small value grammar, written once: signals, durations, sizes, names, tags, modes, ports |
//! | [`digest`], [`error`], [`clock`] | the `Digest` type, the error type, timestamps |
//!
//! Every mutation of the store writes its ledger entry here, inside the same
//! database transaction as the change itself, so the CLI and any later daemon
//! leave the same trail.

pub mod builder;
pub mod clock;
pub mod deploy;
pub mod digest;
pub mod drift;
mod durable;
pub mod error;
pub mod grammar;
pub mod health;
pub mod instance;
pub mod keys;
pub mod ledger;
pub mod reconcile;
pub mod runtime;
pub mod state;
pub mod store;
mod sys;
mod toml_doc;
pub mod trace;
pub mod trust;

pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
