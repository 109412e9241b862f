//! Events: what happened to services, releases and instances, as `docker
//! events` and `kubectl get events -w` show it — release created / healthy /
//! failed / rolled back, instance started / exited / healed / condemned /
//! lost, drift found, policy refusals, revocations — each with its time,
//! subject (service, release, instance, image) and reason.
//!
//! Nothing is recorded for events: every one of them is already a signed
//! ledger entry, written in the same transaction as the change it tells of.
//! This module is the mapping from a ledger [`Entry`] to the [`Event`]s it
//! means ([`from_entry`], pure: one entry can mean none, one or two events),
//! and the reading of them from the state ([`read`] a batch after a cursor,
//! [`follow`] by polling). The CLI's `drover events` prints these values;
//! the coming HTTP API (`/api/v1/events`, server-sent) sends the same ones,
//! resuming from an event's `seq`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock;
use crate::error::Result;
use crate::ledger::{Entry, Filter};
use crate::state::{Db, Reader};

/// What an event tells of (`type` in its JSON form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "release.created")]
    ReleaseCreated,
    #[serde(rename = "release.healthy")]
    ReleaseHealthy,
    #[serde(rename = "release.failed")]
    ReleaseFailed,
    /// The service was moved off this release, back to an earlier one's
    /// content (after a failed rollout, a crash loop, or by hand).
    #[serde(rename = "release.rolled_back")]
    ReleaseRolledBack,
    /// Its content may not be deployed to its service again without `--force`.
    #[serde(rename = "release.quarantined")]
    ReleaseQuarantined,
    #[serde(rename = "instance.started")]
    InstanceStarted,
    /// Its process exited without anyone asking.
    #[serde(rename = "instance.exited")]
    InstanceExited,
    /// Its process exited after a stop was asked for.
    #[serde(rename = "instance.stopped")]
    InstanceStopped,
    /// Found dead by `serve` (or `apply`) and removed for a replacement.
    #[serde(rename = "instance.healed")]
    InstanceHealed,
    /// To be replaced (drift), keeping its traffic until its replacement is ready.
    #[serde(rename = "instance.condemned")]
    InstanceCondemned,
    /// Failed its health check while serving: out of traffic, to be replaced.
    #[serde(rename = "instance.unhealthy")]
    InstanceUnhealthy,
    /// Its process is not one this host can see (another boot, a restored store).
    #[serde(rename = "instance.lost")]
    InstanceLost,
    #[serde(rename = "instance.removed")]
    InstanceRemoved,
    #[serde(rename = "drift.found")]
    DriftFound,
    #[serde(rename = "service.backoff")]
    ServiceBackoff,
    #[serde(rename = "service.removed")]
    ServiceRemoved,
    #[serde(rename = "policy.refused")]
    PolicyRefused,
    #[serde(rename = "image.revoked")]
    ImageRevoked,
    #[serde(rename = "image.unrevoked")]
    ImageUnrevoked,
    #[serde(rename = "token.created")]
    TokenCreated,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// A valid token asked the HTTP API for more than its role allows.
    #[serde(rename = "api.denied")]
    ApiDenied,
    /// A host's heartbeat lapsed: marked down, its instances counted lost.
    #[serde(rename = "host.down")]
    HostDown,
    /// A host came back after being marked down and stopped its stale
    /// instances before anything else.
    #[serde(rename = "host.fenced")]
    HostFenced,
}

impl Kind {
    /// The name in JSON and in `drover events` lines (`release.healthy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ReleaseCreated => "release.created",
            Kind::ReleaseHealthy => "release.healthy",
            Kind::ReleaseFailed => "release.failed",
            Kind::ReleaseRolledBack => "release.rolled_back",
            Kind::ReleaseQuarantined => "release.quarantined",
            Kind::InstanceStarted => "instance.started",
            Kind::InstanceExited => "instance.exited",
            Kind::InstanceStopped => "instance.stopped",
            Kind::InstanceHealed => "instance.healed",
            Kind::InstanceCondemned => "instance.condemned",
            Kind::InstanceUnhealthy => "instance.unhealthy",
            Kind::InstanceLost => "instance.lost",
            Kind::InstanceRemoved => "instance.removed",
            Kind::DriftFound => "drift.found",
            Kind::ServiceBackoff => "service.backoff",
            Kind::ServiceRemoved => "service.removed",
            Kind::PolicyRefused => "policy.refused",
            Kind::ImageRevoked => "image.revoked",
            Kind::ImageUnrevoked => "image.unrevoked",
            Kind::TokenCreated => "token.created",
            Kind::TokenRevoked => "token.revoked",
            Kind::ApiDenied => "api.denied",
            Kind::HostDown => "host.down",
            Kind::HostFenced => "host.fenced",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event. Its JSON form is what `drover events --json` prints, a line
/// each, and what the HTTP API will send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The ledger entry it comes from: `audit --since SEQ` shows the entry;
    /// a reader resumes after it.
    pub seq: u64,
    /// When (RFC 3339 UTC, milliseconds), as the entry was stamped.
    pub time: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The image's digest (or the reference given, for a policy refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A token's name, for token events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A host's name, for host events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Why, or what, in a sentence.
    pub reason: String,
    /// Who did it (the entry's actor).
    pub actor: String,
}

impl Event {
    /// What it happened to, for a line: `web@3`, `web@3 1a2b3c4d5e6f`,
    /// an image, a token.
    pub fn subject(&self) -> String {
        let mut parts = Vec::new();
        match (&self.service, self.release) {
            (Some(s), Some(r)) => parts.push(format!("{s}@{r}")),
            (Some(s), None) => parts.push(s.clone()),
            _ => {}
        }
        if let Some(i) = &self.instance {
            parts.push(i.chars().take(12).collect());
        }
        if parts.is_empty() {
            if let Some(t) = &self.token {
                parts.push(format!("token {t}"));
            } else if let Some(h) = &self.host {
                parts.push(format!("host {h}"));
            } else if let Some(image) = &self.image {
                parts.push(image.clone());
            }
        }
        if parts.is_empty() {
            parts.push("-".into());
        }
        parts.join(" ")
    }
}

/// Which events to read. All conditions must hold; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Events of this service only.
    pub service: Option<String>,
    /// Written at or after this time (RFC 3339 UTC as entries store it,
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub since: Option<String>,
    /// Written before this time (same form).
    pub until: Option<String>,
}

impl Query {
    fn matches(&self, e: &Event) -> bool {
        self.service
            .as_ref()
            .is_none_or(|s| e.service.as_ref() == Some(s))
    }
}

/// Events read from the state, and where to go on from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub events: Vec<Event>,
    /// The ledger seq to read from next time (one past the last entry seen,
    /// event or not).
    pub next: u64,
}

/// The events matching `q` in the entries from seq `from` (1: all) on, in
/// order.
pub fn read(r: Reader<'_>, q: &Query, from: u64) -> Result<Batch> {
    let entries = r.ledger(&Filter {
        since_seq: Some(from.max(1)),
        since_time: q.since.clone(),
        until_time: q.until.clone(),
        ..Filter::default()
    })?;
    let next = entries.last().map_or(from.max(1), |e| e.seq + 1);
    let events = entries
        .iter()
        .flat_map(from_entry)
        .filter(|e| q.matches(e))
        .collect();
    Ok(Batch { events, next })
}

/// Print the events matching `q` through `emit`, then wait for new ones,
/// polling the state every `every`, until `emit` returns `false`, an error
/// occurs, or `q.until` has passed. Holds no lease and no lock.
pub fn follow(
    db: &Db,
    q: &Query,
    every: Duration,
    emit: &mut dyn FnMut(&Event) -> Result<bool>,
) -> Result<()> {
    let mut from = 1;
    loop {
        let batch = read(db.read(), q, from)?;
        for e in &batch.events {
            if !emit(e)? {
                return Ok(());
            }
        }
        from = batch.next;
        if q.until.as_ref().is_some_and(|u| clock::now_rfc3339() >= *u) {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}

/// The events a ledger entry means: none for the entries that are not
/// events (builds, tags, gc), one for most, two for a rollback that makes a
/// new release (the new release, and the one rolled back).
pub fn from_entry(e: &Entry) -> Vec<Event> {
    let d = &e.details;
    let text = |key: &str| d.get(key).and_then(Value::as_str).map(str::to_string);
    let int = |key: &str| d.get(key).and_then(Value::as_i64);
    let subject = |i: usize| e.subjects.get(i).cloned();
    let event = |kind: Kind, reason: String| Event {
        seq: e.seq,
        time: e.time.clone(),
        kind,
        service: text("service"),
        release: int("release"),
        instance: None,
        image: None,
        token: None,
        host: None,
        reason,
        actor: e.actor.clone(),
    };
    let with_image = |mut ev: Event| {
        ev.image = subject(1);
        ev
    };
    let instance_event = |kind: Kind, reason: String| Event {
        instance: subject(0),
        image: subject(1),
        ..event(kind, reason)
    };
    let exit = text("exit").unwrap_or_else(|| "unknown".into());
    match e.action.as_str() {
        "release.create" => vec![with_image(event(
            Kind::ReleaseCreated,
            release_created(d, text("message")),
        ))],
        "release.rollback" => {
            let mut out = vec![with_image(event(
                Kind::ReleaseCreated,
                release_created(d, text("message")),
            ))];
            if let Some(parent) = int("parent") {
                let mut back = event(
                    Kind::ReleaseRolledBack,
                    format!(
                        "rolled back to release {}'s content as release {}",
                        int("rollback_of").map_or("?".into(), |n| n.to_string()),
                        int("release").map_or("?".into(), |n| n.to_string()),
                    ),
                );
                back.release = Some(parent);
                out.push(back);
            }
            out
        }
        "release.healthy" => vec![with_image(event(
            Kind::ReleaseHealthy,
            text("reason").unwrap_or_else(|| "rolled out: every instance ready".into()),
        ))],
        "release.failed" => vec![with_image(event(
            Kind::ReleaseFailed,
            text("reason").unwrap_or_else(|| "its rollout failed".into()),
        ))],
        "release.quarantine" => vec![with_image(event(
            Kind::ReleaseQuarantined,
            text("reason").unwrap_or_default(),
        ))],
        // A rollback that made a new release is told by that release's
        // entry (written in the same transaction); this one only when the
        // service went back to an existing release.
        "service.rollback" if d.get("rollback_of").is_none_or(Value::is_null) => {
            let mut ev = event(
                Kind::ReleaseRolledBack,
                match int("to") {
                    Some(to) => format!("back to release {to}"),
                    None => "no earlier release to go back to".into(),
                },
            );
            ev.release = int("from");
            if let Some(why) = text("reason") {
                ev.reason = format!("{}: {why}", ev.reason);
            }
            vec![ev]
        }
        "instance.start" => vec![instance_event(
            Kind::InstanceStarted,
            match int("pid") {
                Some(pid) => format!("running, pid {pid}"),
                None => "running".into(),
            },
        )],
        "instance.exit" => vec![instance_event(
            Kind::InstanceExited,
            format!("exited: {exit}"),
        )],
        "instance.stop" => vec![instance_event(
            Kind::InstanceStopped,
            format!("stopped: {exit}"),
        )],
        "instance.lost" => vec![instance_event(
            Kind::InstanceLost,
            text("why").unwrap_or_else(|| "its process is out of sight".into()),
        )],
        "instance.delete" => vec![instance_event(Kind::InstanceRemoved, "removed".into())],
        "instance.unhealthy" => vec![instance_event(
            Kind::InstanceUnhealthy,
            text("reason").unwrap_or_default(),
        )],
        "service.heal" => {
            let mut ev = instance_event(
                Kind::InstanceHealed,
                match int("seconds") {
                    Some(s) => format!("found dead ({exit}) after {s} s; replaced"),
                    None => format!("found dead ({exit}); replaced"),
                },
            );
            ev.instance = text("instance").or(ev.instance);
            vec![ev]
        }
        "instance.drift" => {
            let paths: Vec<&str> = d
                .get("paths")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let found = format!(
                "{} finding(s): {}",
                int("findings").unwrap_or(0),
                paths.join(", ")
            );
            let action = text("action").unwrap_or_default();
            vec![instance_event(
                Kind::DriftFound,
                format!("{found} ({action})"),
            )]
        }
        "instance.condemn" => vec![instance_event(
            Kind::InstanceCondemned,
            text("reason").unwrap_or_default(),
        )],
        "service.backoff" => vec![event(
            Kind::ServiceBackoff,
            format!(
                "failure {}, next try in {}: {}",
                int("failures").unwrap_or(0),
                crate::grammar::format_duration(int("backoff_ms").unwrap_or(0).max(0) as u64),
                text("reason").unwrap_or_default()
            ),
        )],
        "service.remove" => vec![event(
            Kind::ServiceRemoved,
            text("reason").unwrap_or_else(|| "removed".into()),
        )],
        "policy.refuse" => vec![Event {
            image: subject(0),
            ..event(
                Kind::PolicyRefused,
                format!(
                    "{} refused by rule {}: {}",
                    text("operation").unwrap_or_else(|| "use".into()),
                    text("rule").unwrap_or_default(),
                    text("reason").unwrap_or_default()
                ),
            )
        }],
        "image.revoke" => vec![Event {
            image: subject(0),
            ..event(Kind::ImageRevoked, text("reason").unwrap_or_default())
        }],
        "image.unrevoke" => vec![Event {
            image: subject(0),
            ..event(Kind::ImageUnrevoked, text("reason").unwrap_or_default())
        }],
        "host.down" => {
            let lost = d.get("lost").and_then(Value::as_array).map_or(0, Vec::len);
            vec![Event {
                host: text("host"),
                ..event(
                    Kind::HostDown,
                    format!(
                        "down (epoch {}): {}; {lost} instance(s) counted lost",
                        int("epoch").map_or("?".into(), |n| n.to_string()),
                        text("reason").unwrap_or_else(|| "its heartbeat lapsed".into())
                    ),
                )
            }]
        }
        "host.fenced" => {
            let stopped = d
                .get("stopped")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![Event {
                host: text("host"),
                ..event(
                    Kind::HostFenced,
                    format!(
                        "back after being marked down: stopped {stopped} stale instance(s) first (epoch {})",
                        int("epoch").map_or("?".into(), |n| n.to_string())
                    ),
                )
            }]
        }
        "token.create" => vec![Event {
            token: subject(0),
            ..event(
                Kind::TokenCreated,
                format!("role {}", text("role").unwrap_or_default()),
            )
        }],
        "token.revoke" => vec![Event {
            token: subject(0),
            ..event(Kind::TokenRevoked, "revoked".into())
        }],
        "api.denied" => vec![Event {
            token: subject(0),
            ..event(
                Kind::ApiDenied,
                format!(
                    "{} {} needs role {}, the token has {}",
                    text("method").unwrap_or_default(),
                    text("path").unwrap_or_default(),
                    text("needed").unwrap_or_default(),
                    text("role").unwrap_or_default()
                ),
            )
        }],
        _ => Vec::new(),
    }
}

/// "image web:2 (sha256:…): message".
fn release_created(d: &Value, message: Option<String>) -> String {
    let image = d
        .get("image_ref")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("image {image}: {m}"),
        None => format!("image {image}"),
    }
}

#[cfg(test)]
mod tests;
