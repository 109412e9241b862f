//! The trust chain: who may vouch for an image, and how that is checked.
//! Sits above the store (statements are artifacts in it); the keys and the
//! DSSE envelopes it signs with are the leaf module [`crate::keys`].
//!
//! | file | owns |
//! |------|------|
//! | [`attest`] | in-toto v1 statements about an image, signed and attached as artifacts |
//! | [`signature`] | image signatures (`drover sign`, `build --sign`) and checking them |
//! | [`policy`] | the deploy policy (`policy.toml`), revocations, and the one place that refuses an image |
//! | [`admit`] | what every instance start passes: the policy (cached per image and policy state) and, for a release, the signed ledger entry that made it |
//!
//! Everything signed about an image is an in-toto statement in a DSSE
//! envelope, attached to the image manifest as an OCI 1.1 artifact, so it
//! moves with the image through registries and outside tools verify it
//! without drover. (Ledger entries are signed too, but plainly: each entry's
//! hash, by the host key; see `ledger` and docs/ledger-format.md.)

pub mod admit;
pub mod attest;
pub mod policy;
pub mod signature;
