//! Named volumes: how one is written (`name:/path`, `name:/path:ro`,
//! `name:/path:shared`), per-replica names (`data-{replica}`), and who may
//! mount one at the same time as whom.
//!
//! A read-write volume has one writer by default ([`Access::Exclusive`]): no
//! two live instances mount it read-write at once. `shared` says the
//! program coordinates its writers itself (several may mount it read-write,
//! never beside an exclusive writer); read-only mounts never conflict. The
//! rule is [`Access::conflicts`]; `prepare` applies it in the transaction
//! that records a new instance, so nothing can start beside a writer that
//! holds its volume.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grammar;

/// The placeholder a fleet service's volume name may hold: the instance's
/// replica slot (0-based), so each replica gets its own volume.
pub const REPLICA: &str = "{replica}";

/// The largest slot a service can have (its replicas are at most 10000):
/// a templated name must still be a name with it substituted.
const MAX_SLOT: u32 = 9_999;

/// The part of a volume an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Name,
    Target,
    /// Read-only, shared, or the two together.
    Mode,
}

/// How an instance mounts a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    ReadOnly,
    /// Read-write, the only writer (the default).
    Exclusive,
    /// Read-write beside other `shared` writers.
    Shared,
}

impl Access {
    /// Whether an instance mounting a volume `self` may not run beside one
    /// that mounts it `other`.
    pub fn conflicts(self, other: Access) -> bool {
        use Access::*;
        matches!(
            (self, other),
            (Exclusive, Exclusive | Shared) | (Shared, Exclusive)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::ReadOnly => "read-only",
            Access::Exclusive => "read-write",
            Access::Shared => "shared read-write",
        }
    }
}

/// A volume an instance mounts, as recorded with it (its name resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub name: String,
    pub access: Access,
}

/// `name:/path`, `name:/path:ro` or `name:/path:shared`; in a fleet
/// service the name may hold `{replica}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub target: String,
    pub read_only: bool,
    /// Read-write, and other instances may write it at the same time.
    pub shared: bool,
}

impl VolumeSpec {
    /// A volume as `drover run -v` takes it: no `{replica}`.
    pub fn parse(s: &str) -> Result<VolumeSpec> {
        let v = Self::parse_template(s)?;
        if v.is_per_replica() {
            return Err(Error::Usage(format!(
                "volume {s:?}: {REPLICA} names one volume per replica of a fleet service; \
                 name the volume itself here"
            )));
        }
        Ok(v)
    }

    /// A volume as a fleet service (and its release) writes it: the name
    /// may hold `{replica}`.
    pub fn parse_template(s: &str) -> Result<VolumeSpec> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "volume {s:?}: {why} (expected name:/path, name:/path:ro or name:/path:shared)"
            ))
        };
        let mut parts = s.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let target = parts.next().ok_or_else(|| bad("no target path"))?;
        let (read_only, shared) = match parts.next() {
            None | Some("rw") => (false, false),
            Some("ro") => (true, false),
            Some("shared") => (false, true),
            Some(_) => return Err(bad("the mode must be ro, rw or shared")),
        };
        Self::new(name, target, read_only, shared).map_err(|(part, e)| match part {
            Part::Name => bad(&format!("the volume name: {e}")),
            Part::Target => bad(&format!("the target: {e}")),
            Part::Mode => bad(&e),
        })
    }

    /// A checked volume (the fleet file's table form comes here too); the
    /// error says which part is wrong.
    pub fn new(
        name: &str,
        target: &str,
        read_only: bool,
        shared: bool,
    ) -> std::result::Result<VolumeSpec, (Part, String)> {
        check_name(name).map_err(|e| (Part::Name, e))?;
        let target = grammar::volume_target(target).map_err(|e| (Part::Target, e))?;
        if read_only && shared {
            return Err((
                Part::Mode,
                "read-only and shared: shared is for writers; pick one".into(),
            ));
        }
        if shared && name.contains(REPLICA) {
            return Err((
                Part::Mode,
                format!(
                    "a per-replica volume ({REPLICA}) has one writer by construction; drop shared"
                ),
            ));
        }
        Ok(VolumeSpec {
            name: name.to_string(),
            target,
            read_only,
            shared,
        })
    }

    /// The canonical string form, as a release records it: `name:/path`,
    /// `name:/path:ro`, `name:/path:shared` (so releases made before
    /// `shared` existed keep their config digests).
    pub fn canonical(&self) -> String {
        let mode = match self.access() {
            Access::ReadOnly => ":ro",
            Access::Exclusive => "",
            Access::Shared => ":shared",
        };
        format!("{}:{}{mode}", self.name, self.target)
    }

    pub fn access(&self) -> Access {
        if self.read_only {
            Access::ReadOnly
        } else if self.shared {
            Access::Shared
        } else {
            Access::Exclusive
        }
    }

    /// One volume per replica: the name holds `{replica}`.
    pub fn is_per_replica(&self) -> bool {
        self.name.contains(REPLICA)
    }

    /// Whether instances mounting it must never overlap, so a rollout
    /// stops an old instance before its replacement starts.
    pub fn single_writer(&self) -> bool {
        self.access() == Access::Exclusive
    }

    /// This volume for the replica in `slot`: `{replica}` replaced. A
    /// per-replica volume without a slot is an error (only fleet services
    /// have slots).
    pub fn for_slot(&self, slot: Option<u32>) -> Result<VolumeSpec> {
        if !self.is_per_replica() {
            return Ok(self.clone());
        }
        let Some(slot) = slot else {
            return Err(Error::Usage(format!(
                "volume {}: {REPLICA} is only for the replicas of a fleet service",
                self.name
            )));
        };
        Ok(VolumeSpec {
            name: self.name.replace(REPLICA, &slot.to_string()),
            ..self.clone()
        })
    }

    pub fn held(&self) -> Held {
        Held {
            name: self.name.clone(),
            access: self.access(),
        }
    }
}

/// A volume name, `{replica}` allowed: with it substituted (by any slot)
/// the name must be a name.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if !name.contains(REPLICA) {
        return grammar::name(name);
    }
    for slot in [0, MAX_SLOT] {
        let resolved = name.replace(REPLICA, &slot.to_string());
        grammar::name(&resolved).map_err(|e| format!("{name:?} with {REPLICA} = {slot}: {e}"))?;
    }
    Ok(())
}

/// The first volume of `wanted` that `held` (another instance's) mounts in
/// a way that conflicts, with both accesses.
pub fn conflict<'a>(wanted: &'a [Held], held: &[Held]) -> Option<(&'a Held, Access)> {
    wanted.iter().find_map(|w| {
        held.iter()
            .find(|h| h.name == w.name && w.access.conflicts(h.access))
            .map(|h| (w, h.access))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            VolumeSpec::parse("data:/var/lib/app").unwrap(),
            VolumeSpec {
                name: "data".into(),
                target: "/var/lib/app".into(),
                read_only: false,
                shared: false,
            }
        );
        assert!(VolumeSpec::parse("cfg:/etc/app:ro").unwrap().read_only);
        let shared = VolumeSpec::parse("cache:/cache:shared").unwrap();
        assert!(shared.shared && !shared.read_only);
        assert_eq!(shared.access(), Access::Shared);
        for bad in [
            "data",
            "../x:/a",
            "data:rel",
            "data:/a/../b",
            "data:/",
            "d:/a:rx",
            ":/a",
            "d{x}:/a",
        ] {
            assert!(VolumeSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_canonical_form_is_what_was_written_before_shared_existed() {
        for s in [
            "data:/var/lib/app",
            "cfg:/etc/app:ro",
            "c:/c:shared",
            "d-{replica}:/d",
        ] {
            assert_eq!(VolumeSpec::parse_template(s).unwrap().canonical(), s);
        }
        // `rw` was always accepted; it is the default, so it is not written.
        assert_eq!(
            VolumeSpec::parse("data:/d:rw").unwrap().canonical(),
            "data:/d"
        );
    }

    #[test]
    fn per_replica_names_resolve_by_slot_and_only_in_fleets() {
        let v = VolumeSpec::parse_template("data-{replica}:/data").unwrap();
        assert!(v.is_per_replica() && v.single_writer());
        assert_eq!(v.for_slot(Some(0)).unwrap().name, "data-0");
        assert_eq!(v.for_slot(Some(12)).unwrap().name, "data-12");
        assert!(v.for_slot(None).is_err());
        let e = VolumeSpec::parse("data-{replica}:/data").unwrap_err();
        assert!(e.to_string().contains("fleet service"), "{e}");
        // A placeholder alone is a name ("0"); a bad template is refused.
        assert!(VolumeSpec::parse_template("{replica}:/d").is_ok());
        for bad in [
            "-{replica}:/d",
            "d/{replica}:/d",
            "d-{replica:/d",
            "d-{replica}:/d:shared",
        ] {
            assert!(VolumeSpec::parse_template(bad).is_err(), "{bad}");
        }
        let long = format!("{}{{replica}}", "a".repeat(126));
        let e = VolumeSpec::parse_template(&format!("{long}:/d")).unwrap_err();
        assert!(e.to_string().contains("9999"), "{e}");
        assert!(
            VolumeSpec::parse_template("d:/d:ro")
                .unwrap()
                .for_slot(None)
                .is_ok()
        );
    }

    #[test]
    fn exclusive_writers_conflict_with_every_writer_and_readers_with_nobody() {
        use Access::*;
        let all = [ReadOnly, Exclusive, Shared];
        for a in all {
            for b in all {
                // Two writers, not both shared.
                let want = a != ReadOnly && b != ReadOnly && !(a == Shared && b == Shared);
                assert_eq!(a.conflicts(b), want, "{a:?} beside {b:?}");
                assert_eq!(a.conflicts(b), b.conflicts(a), "symmetric");
            }
        }
        let held = |name: &str, access| Held {
            name: name.into(),
            access,
        };
        let wanted = [held("cfg", ReadOnly), held("data", Exclusive)];
        assert_eq!(conflict(&wanted, &[held("data", ReadOnly)]), None);
        assert_eq!(conflict(&wanted, &[held("cfg", Exclusive)]), None);
        assert_eq!(
            conflict(&wanted, &[held("other", Exclusive), held("data", Shared)]),
            Some((&wanted[1], Shared))
        );
    }
}
