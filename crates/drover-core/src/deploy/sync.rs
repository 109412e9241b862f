//! Whether a service runs what its fleet file asks for (Argo CD's
//! Synced / OutOfSync), and how a detached rollout is doing.
//!
//! `apply` records which release's content the fleet file asked for
//! ([`release::Service::fleet_release`]) and keeps it across rollbacks: a
//! manual `rollback` stands until the fleet file asks for something new
//! (see `needs_release`), and a failed release is rolled back by itself.
//! Either way the service then runs another release than the file's, and
//! [`of_service`] says so, naming both and what differs — by content
//! (image and config digest), so a rollback *to* the fleet's content is in
//! sync again.
//!
//! [`rollout`] follows one release (by default the newest: the rollout
//! `apply --detach` or `rollback` started) to healthy or failed, for
//! `drover rollout status`.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::diff::{self, Change, Content};
use super::release::{self, Outcome, Release, Service};
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::state::{Db, Reader};

/// Whether a service runs its fleet file's release content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncState {
    Synced,
    OutOfSync,
    /// `apply` has not recorded what the fleet file asks (a service
    /// recorded before drover kept it): apply the fleet file once.
    Unknown,
}

/// A service's sync with its fleet file, as `status` and `plan` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Sync {
    pub state: SyncState,
    /// The release whose content the fleet file asks for.
    pub fleet_release: Option<i64>,
    /// The release that should run now.
    pub running_release: Option<i64>,
    /// What the running release would change to match the fleet file
    /// (old: running, new: the fleet's).
    pub differences: Vec<Change>,
    /// For people: why they differ and how to go back.
    pub reason: Option<String>,
}

impl Sync {
    pub fn in_sync(&self) -> bool {
        self.state != SyncState::OutOfSync
    }
}

/// Whether two releases have the same content (image and config).
pub fn same_content(a: &Release, b: &Release) -> bool {
    a.image == b.image && a.config_digest == b.config_digest
}

/// The sync state of recorded service `svc`; `revoked` says why an image
/// is revoked, if it is.
pub fn of_service(
    r: Reader<'_>,
    svc: &Service,
    mut revoked: impl FnMut(&Digest) -> Result<Option<String>>,
) -> Result<Sync> {
    let name = svc.name.as_str();
    let Some(fleet_n) = svc.fleet_release else {
        return Ok(Sync {
            state: SyncState::Unknown,
            fleet_release: None,
            running_release: svc.desired,
            differences: Vec::new(),
            reason: None,
        });
    };
    let fleet = release::release(r, name, fleet_n)?;
    let running = match svc.desired {
        Some(n) => Some(release::release(r, name, n)?),
        None => None,
    };
    if running
        .as_ref()
        .is_some_and(|run| same_content(run, &fleet))
    {
        return Ok(Sync {
            state: SyncState::Synced,
            fleet_release: Some(fleet_n),
            running_release: svc.desired,
            differences: Vec::new(),
            reason: None,
        });
    }
    let mut sync = out_of_sync(name, &fleet, running.as_ref());
    if let Some(why) = revoked(&fleet.image)? {
        sync.reason = Some(off_revoked(name, &fleet, running.as_ref(), &why));
    }
    Ok(sync)
}

/// Why service `name` runs `running` although its fleet file asks for
/// `fleet`, whose image is revoked (`why`): `serve` moved it (see
/// `converge::off_revoked`), or will once it runs.
fn off_revoked(name: &str, fleet: &Release, running: Option<&Release>, why: &str) -> String {
    let f = fleet.number;
    let moved = match running {
        Some(run) if run.image == fleet.image => format!(
            "it still runs release {} on that image (`drover serve` moves it to the newest \
             release that was healthy and stable, is not quarantined and whose image the \
             policy allows, unless replace_revoked is off)",
            run.number
        ),
        Some(run) => match run.rollback_of {
            Some(of) => format!(
                "it runs release {} with release {of}'s content (`drover releases {name}` \
                 says who chose it and why)",
                run.number
            ),
            None => format!("it runs release {}", run.number),
        },
        None => "no release runs".to_string(),
    };
    format!(
        "the fleet file asks for release {f}, whose image sha256:{}… ({}) is revoked ({why}); \
         {moved}; build a fixed image and apply it to be in sync again",
        fleet.image.short(),
        fleet.image_ref
    )
}

/// The report of service `name` running `running` while its fleet file
/// asks for `fleet`'s content (they differ).
pub fn out_of_sync(name: &str, fleet: &Release, running: Option<&Release>) -> Sync {
    let differences = match running {
        Some(run) => diff::content(&Content::of(run), &Content::of(fleet)),
        None => Vec::new(),
    };
    let f = fleet.number;
    let runs = match running {
        None => "no release runs".to_string(),
        Some(run) => match run.rollback_of {
            Some(of) => format!("runs release {} (a rollback to release {of})", run.number),
            None => format!("runs release {}", run.number),
        },
    };
    let reason = match fleet.outcome {
        Outcome::Failed => format!(
            "the fleet file asks for release {f}, which failed (quarantined: {}); {runs}; \
             fix the fleet file and apply it",
            fleet.reason.as_deref().unwrap_or("no reason recorded")
        ),
        _ => format!(
            "the fleet file asks for release {f}; {runs}; `drover rollback {name} --to {f}` \
             goes back to the fleet's version, or change the fleet file"
        ),
    };
    Sync {
        state: SyncState::OutOfSync,
        fleet_release: Some(f),
        running_release: running.map(|r| r.number),
        differences,
        reason: Some(reason),
    }
}

/// Where one rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Still rolling out (or waiting for `drover serve` to start).
    Rolling,
    /// Rolled out, every instance healthy, and still the one that runs.
    Healthy,
    /// It failed and was rolled back.
    Failed,
    /// Another release runs in its place (a later apply or rollback, or
    /// an automatic rollback after it was healthy).
    Superseded,
}

/// `drover rollout status`: one release of a service and how it is doing.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutStatus {
    pub service: String,
    pub release: i64,
    pub state: RolloutState,
    /// Why it failed, or what replaced it.
    pub reason: Option<String>,
    /// The release that should run now.
    pub running: Option<i64>,
}

impl RolloutStatus {
    /// The result `apply` would have ended with: `Ok` when healthy; a
    /// failed deploy's error when it failed or was superseded; while it
    /// still rolls, [`Error::Busy`] (exit 5: look again later).
    pub fn result(&self) -> Result<()> {
        let (s, n) = (&self.service, self.release);
        let why = self.reason.as_deref().unwrap_or("");
        match self.state {
            RolloutState::Healthy => Ok(()),
            RolloutState::Rolling => Err(Error::Busy {
                what: format!("service {s}"),
                reason: format!(
                    "release {n} is still rolling out (`drover rollout status {s} --watch` \
                     follows it)"
                ),
            }),
            RolloutState::Failed | RolloutState::Superseded => Err(Error::Deploy {
                kind: ErrorKind::Internal,
                messages: vec![format!("service {s}: release {n} {why}")],
            }),
        }
    }
}

/// How release `number` of `service` (default: its newest) is doing.
pub fn rollout(r: Reader<'_>, service: &str, number: Option<i64>) -> Result<RolloutStatus> {
    let not_found = || Error::NotFound {
        what: format!("service {service}"),
        hint: Some("`drover status` lists services".into()),
    };
    let svc = release::service(r, service)?.ok_or_else(not_found)?;
    if svc.removed.is_some() {
        return Err(not_found());
    }
    let number = match number {
        Some(n) => n,
        None => match r.next_release_number(service)? - 1 {
            0 => {
                return Err(Error::NotFound {
                    what: format!("a release of service {service}"),
                    hint: Some(format!("`drover apply` one for {service}")),
                });
            }
            n => n,
        },
    };
    let rel = release::release(r, service, number)?;
    let running = svc.desired;
    let now = match running {
        Some(d) => format!("release {d} runs"),
        None => "no release runs".into(),
    };
    let (state, reason) = match rel.outcome {
        Outcome::Failed => (
            RolloutState::Failed,
            Some(format!(
                "failed: {}; {now}",
                rel.reason.as_deref().unwrap_or("no reason recorded")
            )),
        ),
        _ if running != Some(number) => (
            RolloutState::Superseded,
            Some(format!("no longer runs: {now}")),
        ),
        Outcome::Pending => (RolloutState::Rolling, None),
        Outcome::Healthy => (RolloutState::Healthy, None),
    };
    Ok(RolloutStatus {
        service: service.to_string(),
        release: number,
        state,
        reason,
        running,
    })
}

/// Follow release `number` of `service` (default: its newest) until it is
/// no longer rolling or `timeout` passes; `seen` hears every change.
pub fn watch(
    db: &Db,
    service: &str,
    number: Option<i64>,
    timeout: Option<Duration>,
    mut seen: impl FnMut(&RolloutStatus),
) -> Result<RolloutStatus> {
    let start = Instant::now();
    let first = rollout(db.read(), service, number)?;
    let number = Some(first.release);
    let mut last = first.state;
    seen(&first);
    let mut now = first;
    while now.state == RolloutState::Rolling && timeout.is_none_or(|t| start.elapsed() < t) {
        std::thread::sleep(Duration::from_millis(200));
        now = rollout(db.read(), service, number)?;
        if now.state != last {
            last = now.state;
            seen(&now);
        }
    }
    Ok(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rollout status` ends as `apply` would: 0, a failed deploy (1), or
    /// busy (5) while it still rolls.
    #[test]
    fn each_rollout_state_has_apply_s_exit_kind() {
        let st = |state, reason: Option<&str>| RolloutStatus {
            service: "web".into(),
            release: 2,
            state,
            reason: reason.map(str::to_string),
            running: Some(1),
        };
        assert!(st(RolloutState::Healthy, None).result().is_ok());
        let kind = |s: RolloutStatus| s.result().unwrap_err().kind();
        assert_eq!(kind(st(RolloutState::Rolling, None)), ErrorKind::Busy);
        assert_eq!(
            kind(st(RolloutState::Superseded, Some("no longer runs"))),
            ErrorKind::Internal
        );
        let e = st(RolloutState::Failed, Some("failed: boom; release 1 runs"))
            .result()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(
            e.to_string()
                .contains("service web: release 2 failed: boom; release 1 runs"),
            "{e}"
        );
    }
}
