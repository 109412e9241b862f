//! What every instance start passes — `run`, the instances a deploy starts,
//! `serve`'s heals — so that someone who can write the state database but
//! not the host key cannot get an image started that the policy refuses.
//!
//! - [`image`]: the whole deploy policy ([`policy::Policy::evaluate`]:
//!   revocations, signatures, provenance, bases), a refusal ledgered. A
//!   release row names its image, and the database's writers can change
//!   that name, so a start never relies on the check made when the release
//!   was created. The verdict is cached in the store per image and
//!   [`fingerprint`], so a heal costs a policy load and a few small reads
//!   (tens of microseconds), not a re-verification.
//! - [`release`]: a release's image and config digests against the ledger
//!   entry that created it, whose hash and host-key signature the attacker
//!   cannot forge. Finding that entry reads the whole ledger, so it is done
//!   once per release and process, and cached the same way.

use serde_json::json;

use super::policy::{self, Operation, Origin, Policy, Refusal, Verdict};
use crate::digest::Digest;
use crate::error::Result;
use crate::store::Store;

/// Admit `image` for a start (see the module docs), or refuse it: a
/// refusal is recorded (`policy.refuse`, as `op`) and returned as
/// [`crate::Error::Refused`].
pub fn image(store: &mut Store, image: &Digest, op: Operation) -> Result<()> {
    let policy = policy::load(store.root())?;
    let key = (*image, fingerprint(store, &policy)?);
    if store.admitted().borrow().contains(&key) {
        return Ok(());
    }
    match policy.evaluate(store, image, Origin::Local)? {
        Verdict::Allowed { .. } => {
            store.admitted().borrow_mut().insert(key);
            Ok(())
        }
        Verdict::Refused(r) => Err(policy::refuse(store, r, op)),
    }
}

/// What a verdict on a local image depends on besides the image itself: the
/// effective policy with its keys' ids (as `policy show` prints it), every
/// revocation, and the store generation (bumped by every change of tags and
/// referrers, so a signature or provenance attached or removed counts).
pub fn fingerprint(store: &Store, policy: &Policy) -> Result<Digest> {
    let read = store.db().read();
    let mut text = policy.to_toml();
    text.push_str(&format!("\ngeneration {}\n", read.generation()?));
    for r in read.revocations()? {
        text.push_str(&format!("revoked {} {}\n", r.digest, r.time));
    }
    Ok(Digest::of(text.as_bytes()))
}

/// Admit a start of release `number` of `service` running `image`: the
/// release row must say what the ledger entry that created it says (image
/// and config digest), and that entry must be intact and signed by the host
/// key (unless it predates signing). Refusals are recorded like the
/// policy's, under the rule `release_record`.
pub fn release(store: &mut Store, service: &str, number: i64, image: &Digest) -> Result<()> {
    let read = store.db().read();
    let row = read.release::<serde_json::Value>(service, number)?;
    let key = (
        Digest::of(format!("release {service}#{number}").as_bytes()),
        Digest::of(format!("{} {} {image}", row.image, row.config_digest).as_bytes()),
    );
    if store.admitted().borrow().contains(&key) {
        return Ok(());
    }
    let problem = release_problem(store, service, number, &row, image)?;
    match problem {
        None => {
            store.admitted().borrow_mut().insert(key);
            Ok(())
        }
        Some(reason) => Err(policy::refuse(
            store,
            Refusal {
                image: image.to_string(),
                rule: "release_record",
                reason: format!(
                    "release {number} of {service}: {reason} (the state database was edited; run `drover audit verify`)"
                ),
            },
            Operation::Run,
        )),
    }
}

fn release_problem(
    store: &Store,
    service: &str,
    number: i64,
    row: &crate::state::ReleaseOf<serde_json::Value>,
    image: &Digest,
) -> Result<Option<String>> {
    if row.image != *image {
        return Ok(Some(format!(
            "its row names image {}, but {image} is being started",
            row.image
        )));
    }
    let read = store.db().read();
    let entries = read.release_entries(service, number)?;
    if entries.is_empty() {
        return Ok(Some("no ledger entry created it".into()));
    }
    let host = store.db().signer()?.public();
    let signed_from = read.ledger_signed_from()?.unwrap_or(1);
    for e in &entries {
        if e.compute_hash() != e.hash {
            return Ok(Some(format!(
                "ledger entry {} that created it does not match its hash",
                e.seq
            )));
        }
        match e.check_signature(std::slice::from_ref(&host)) {
            Ok(Some(_)) => {}
            Ok(None) if e.seq < signed_from => {}
            Ok(None) => {
                return Ok(Some(format!(
                    "ledger entry {} that created it is not signed",
                    e.seq
                )));
            }
            Err(why) => {
                return Ok(Some(format!(
                    "ledger entry {} that created it: {why}",
                    e.seq
                )));
            }
        }
        let said = (
            e.details["image"].as_str(),
            e.details["config_digest"].as_str(),
        );
        let row_says = (row.image.to_string(), row.config_digest.to_string());
        if said != (Some(row_says.0.as_str()), Some(row_says.1.as_str())) {
            return Ok(Some(format!(
                "its row says image {} and config {}, but ledger entry {} that created it says {}",
                row.image,
                row.config_digest,
                e.seq,
                json!({"image": said.0, "config_digest": said.1})
            )));
        }
    }
    Ok(None)
}
