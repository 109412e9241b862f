//! The trust chain: who may vouch for an image, and how that is checked.
//!
//! | file | owns |
//! |------|------|
//! | [`key`] | Ed25519 keys: generation, PEM files (0600 enforced), key ids, the host key |
//! | [`dsse`] | DSSE envelopes: the pre-authentication encoding, signing, verification |
//! | [`attest`] | in-toto v1 statements about an image, signed and attached as artifacts |
//! | [`signature`] | image signatures (`drover sign`, `build --sign`) and checking them |
//! | [`policy`] | the deploy policy (`policy.toml`), revocations, and the one place that refuses an image |
//!
//! Everything signed about an image is an in-toto statement in a DSSE
//! envelope, attached to the image manifest as an OCI 1.1 artifact, so it
//! moves with the image through registries and outside tools verify it
//! without drover. (Ledger entries are signed too, but plainly: each entry's
//! hash, by the host key; see `ledger` and docs/ledger-format.md.)

pub mod attest;
pub mod dsse;
pub mod key;
pub mod policy;
pub mod signature;

pub use key::{PublicKey, SigningKey, host_key};
