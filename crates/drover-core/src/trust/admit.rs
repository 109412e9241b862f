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
//!   (tens of microseconds), not a re-verification. A revocation row
//!   deleted from the database does not un-revoke: on a cache miss the
//!   ledger's revoke/unrevoke entries are replayed too.
//! - [`release`]: a release's image and config digests against the ledger
//!   entry that created it, whose hash and host-key signature the attacker
//!   cannot forge, and its config (env, volumes, limits, capabilities)
//!   against its digest. Finding that entry reads the whole ledger, so it is done
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
    let policy = policy::load_for(store)?;
    let key = (*image, fingerprint(store, &policy)?);
    if store.admitted().borrow().contains(&key) {
        return Ok(());
    }
    if let Some(r) = revocation_lost(store, image)? {
        return Err(policy::refuse(store, r, op));
    }
    match policy.evaluate(store, image, Origin::Local)? {
        Verdict::Allowed { .. } => {
            store.admitted().borrow_mut().insert(key);
            Ok(())
        }
        Verdict::Refused(r) => Err(policy::refuse(store, r, op)),
    }
}

/// A revocation reaching `image` (its own or a base's) that the ledger
/// records but the `revocations` table has lost: a row deleted in the
/// database would otherwise un-revoke an image. The ledger's entries are
/// replayed (`image.revoke`, lifted only by a later `image.unrevoke`);
/// that reads them all, but only when the cache missed.
fn revocation_lost(store: &Store, image: &Digest) -> Result<Option<Refusal>> {
    let read = store.db().read();
    let by = |action: &str| {
        read.ledger(&crate::ledger::Filter {
            action: Some(action.into()),
            ..Default::default()
        })
    };
    let mut entries = by("image.revoke")?;
    entries.extend(by("image.unrevoke")?);
    entries.sort_by_key(|e| e.seq);
    let mut revoked = std::collections::BTreeMap::new();
    for e in &entries {
        let Some(d) = e.subjects.first().and_then(|s| s.parse::<Digest>().ok()) else {
            continue;
        };
        if e.action == "image.revoke" {
            revoked.insert(d, e.seq);
        } else {
            revoked.remove(&d);
        }
    }
    revoked.retain(|d, _| matches!(read.revocation(d), Ok(None)));
    if revoked.is_empty() {
        return Ok(None);
    }
    for d in policy::lineage(store, image)? {
        if let Some(seq) = revoked.get(&d) {
            let whom = if d == *image {
                "it".to_string()
            } else {
                format!("its base {d}")
            };
            return Ok(Some(Refusal {
                image: image.to_string(),
                rule: "revoked",
                reason: format!(
                    "the ledger revokes {whom} (entry {seq}) but the revocations table has no row for it: the database was edited; run `drover audit verify`"
                ),
            }));
        }
    }
    Ok(None)
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
    // Keyed by everything checked, the config's content included.
    let config = Digest::of(crate::ledger::canonical_json(&row.config).as_bytes());
    let key = (
        Digest::of(format!("release {service}#{number}").as_bytes()),
        Digest::of(format!("{} {} {config} {image}", row.image, row.config_digest).as_bytes()),
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
    // The config column itself: its canonical JSON must still hash to the
    // digest (as `ReleaseConfig::digest` computes it), or env, volumes,
    // limits or added capabilities were edited in place.
    let config = Digest::of(crate::ledger::canonical_json(&row.config).as_bytes());
    if config != row.config_digest {
        return Ok(Some(format!(
            "its config hashes to {config}, not to its config digest {} (the config was edited)",
            row.config_digest
        )));
    }
    let read = store.db().read();
    let entries = read.release_entries(service, number)?;
    if entries.is_empty() {
        return Ok(Some("no ledger entry created it".into()));
    }
    let host = store.db().signer()?.public();
    // On a fleet, a release may be made on any host: each signs with its
    // own host key, registered when it joined (as `audit verify` trusts).
    let mut signers = vec![host];
    signers.extend(read.host_public_keys()?);
    // Where signing began, from the signed head only: the database's own
    // record (`store_meta`) is writable by the attacker this guards
    // against, who could raise it and strip a signature below it. No
    // signed head that says (none, forged, or from before it was carried):
    // every entry must be signed.
    let signed_from = match read.signed_ledger_head() {
        Some(Ok(h)) if h.check(std::slice::from_ref(&host)).is_ok() => h.signed_from.unwrap_or(1),
        _ => 1,
    };
    for e in &entries {
        if e.compute_hash() != e.hash {
            return Ok(Some(format!(
                "ledger entry {} that created it does not match its hash",
                e.seq
            )));
        }
        match e.check_signature(&signers) {
            Ok(Some(_)) => {}
            Ok(None) if e.seq < signed_from => {
                if let Some(why) = unsigned_link_problem(store, e, &host)? {
                    return Ok(Some(format!(
                        "ledger entry {} that created it predates signing, but {why}",
                        e.seq
                    )));
                }
            }
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

/// An entry from before signing carries no signature of its own; what
/// vouches for it is the chain: each following entry names the hash of the
/// one before, up to the first signed entry (or the signed head), whose
/// signature covers that link. The reason if the chain from `e` does not
/// reach one intact.
fn unsigned_link_problem(
    store: &Store,
    e: &crate::ledger::Entry,
    host: &crate::keys::PublicKey,
) -> Result<Option<String>> {
    let read = store.db().read();
    let later = read.ledger(&crate::ledger::Filter {
        since_seq: Some(e.seq + 1),
        ..Default::default()
    })?;
    let mut prev = (e.seq, e.hash.clone());
    for next in &later {
        if next.seq != prev.0 + 1 || next.prev_hash != prev.1 {
            return Ok(Some(format!(
                "entry {} after it does not link to it (its hash was recomputed)",
                prev.0 + 1
            )));
        }
        if next.compute_hash() != next.hash {
            return Ok(Some(format!(
                "entry {} after it does not match its hash",
                next.seq
            )));
        }
        if let Ok(Some(_)) = next.check_signature(std::slice::from_ref(host)) {
            return Ok(None);
        }
        prev = (next.seq, next.hash.clone());
    }
    match read.signed_ledger_head() {
        Some(Ok(h))
            if h.seq == prev.0
                && h.hash == prev.1
                && h.check(std::slice::from_ref(host)).is_ok() =>
        {
            Ok(None)
        }
        _ => Ok(Some(
            "no signed entry or signed head after it vouches for it".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use super::*;
    use crate::builder::{self, BuildOptions, NoProgress};
    use crate::error::Error;

    /// A store holding `app:1`, built (with its provenance) and signed by
    /// the host key: what the default policy admits.
    fn signed() -> (tempfile::TempDir, Store, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store")).unwrap();
        let text = "[image]\nname = \"app\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/app\"\ncontent = \"x\"\n";
        let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
        let built =
            builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress).unwrap();
        let key = crate::keys::host_key(store.root()).unwrap();
        super::super::signature::sign(&mut store, "app:1", &key).unwrap();
        (dir, store, built.digest)
    }

    #[test]
    fn an_admitted_image_is_admitted_again_from_the_cache_until_something_changes() {
        let (_dir, mut store, image) = signed();
        let t = Instant::now();
        super::image(&mut store, &image, Operation::Run).unwrap();
        let first = t.elapsed();
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            super::image(&mut store, &image, Operation::Run).unwrap();
        }
        let cached = t.elapsed() / n;
        eprintln!("admit: first {first:?}, cached {cached:?} each");
        let t = Instant::now();
        let p = policy::load(store.root()).unwrap();
        let load = t.elapsed();
        let t = Instant::now();
        fingerprint(&store, &p).unwrap();
        eprintln!("admit: policy load {load:?}, fingerprint {:?}", t.elapsed());
        assert!(cached < first, "first {first:?}, cached {cached:?}");

        // A revocation changes the fingerprint: refused (and ledgered) at once.
        policy::revoke(&mut store, &image.to_string(), "test").unwrap();
        let err = super::image(&mut store, &image, Operation::Run).unwrap_err();
        assert!(
            matches!(err, Error::Refused { ref rule, .. } if rule == "revoked"),
            "{err}"
        );
        policy::unrevoke(&mut store, &image.to_string(), "test").unwrap();
        super::image(&mut store, &image, Operation::Run).unwrap();

        // A policy that no longer trusts the host key refuses it too.
        let other = crate::keys::SigningKey::generate().unwrap();
        let pub_path = store.root().join("other.pub");
        std::fs::write(&pub_path, other.public().to_pem()).unwrap();
        std::fs::write(
            store.root().join(policy::FILE),
            "trusted_keys = [\"other.pub\"]\n",
        )
        .unwrap();
        let err = super::image(&mut store, &image, Operation::Run).unwrap_err();
        assert!(
            matches!(err, Error::Refused { ref rule, .. } if rule == "require_signature"),
            "{err}"
        );
    }

    /// Keys trusted for the fleet (`drover policy trust`) count as the
    /// policy's own: what they signed is admitted, and no longer once
    /// untrusted (the admission cache notices both).
    #[test]
    fn a_key_trusted_for_the_fleet_admits_what_it_signed_until_untrusted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store")).unwrap();
        let text = "[image]\nname = \"app\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/app\"\ncontent = \"ci\"\n";
        let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
        let image = builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress)
            .unwrap()
            .digest;
        let ci = crate::keys::SigningKey::generate().unwrap();
        super::super::signature::sign(&mut store, "app:1", &ci).unwrap();
        let refused = |store: &mut Store| {
            let err = super::image(store, &image, Operation::Run).unwrap_err();
            assert!(
                matches!(err, Error::Refused { ref rule, .. } if rule == "require_signature"),
                "{err}"
            );
        };
        refused(&mut store);
        assert!(store.db_mut().trust_key(&ci.public(), Some("ci")).unwrap());
        super::image(&mut store, &image, Operation::Run).unwrap();
        let policy = policy::load_for(&store).unwrap();
        assert!(policy.keys().contains(&ci.public()));
        assert!(policy.to_toml().contains(&ci.public().keyid()));
        store.db_mut().untrust_key(&ci.public().keyid()).unwrap();
        refused(&mut store);
    }

    #[test]
    fn an_unsigned_image_is_refused_and_the_refusal_ledgered() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store")).unwrap();
        let text = "[image]\nname = \"app\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/app\"\ncontent = \"x\"\n";
        let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
        let image = builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress)
            .unwrap()
            .digest;
        let err = super::image(&mut store, &image, Operation::Run).unwrap_err();
        assert!(
            matches!(err, Error::Refused { ref rule, .. } if rule == "require_signature"),
            "{err}"
        );
        let refusals = store
            .db()
            .read()
            .ledger(&crate::ledger::Filter {
                action: Some("policy.refuse".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(refusals.len(), 1);
        assert_eq!(refusals[0].subjects, [image.to_string()]);
    }
}
