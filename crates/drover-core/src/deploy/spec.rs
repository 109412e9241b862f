//! What a fleet file asks for, and what a release is made of.
//!
//! A [`ServiceSpec`] is one `[service.<name>]` table as written. Applying it
//! resolves its image to a digest and splits it in two: the release content
//! ([`ReleaseConfig`] plus the image digest — what runs, and what a rollback
//! repeats) and the rollout settings (replicas, strategy, constraints,
//! spread_by — how many, how to get there, and on which hosts), which change
//! without a new release.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::placement::Constraints;
use super::plan::Strategy;
use crate::digest::Digest;
use crate::health::HealthCheck;
use crate::instance::VolumeSpec;
use crate::runtime::DriverKind;
use crate::runtime::spec::{Limits, LogPolicy};
use crate::runtime::tmpfs::Tmpfs;
use crate::store::registry::Remote;

/// How long a new instance has to become healthy, unless the fleet says.
pub const DEFAULT_DEADLINE_MS: u64 = 60_000;

/// How long a new instance must stay up and passing after its health check
/// first passed before it counts as healthy, unless the fleet says.
pub const DEFAULT_MIN_HEALTHY_MS: u64 = 10_000;

/// One service as the fleet file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    /// A tag (pinned to its digest at apply time) or a digest; or a
    /// registry reference with a digest (see `registry`).
    pub image: String,
    /// The registry `image` names, if it does: `apply` pulls it from there
    /// when the store lacks it.
    pub registry: Option<Remote>,
    /// Reach `registry` over plain HTTP (loopback registries only).
    pub insecure_registry: bool,
    pub replicas: u32,
    pub strategy: Strategy,
    /// Overrides the image's health check.
    pub health: Option<HealthCheck>,
    pub deadline_ms: u64,
    pub env: BTreeMap<String, String>,
    /// The names in `env` whose values are secret (`{ value = "…", secret =
    /// true }`): never shown by `plan`, `status` or `releases`. Sorted.
    pub secret_env: Vec<String>,
    /// Ports the service is reached on (the traffic proxy's; each instance
    /// gets its own `PORT`).
    pub ports: Vec<u16>,
    /// How `drover serve` proxies the ports.
    pub proxy: ProxyMode,
    /// How long a stopping instance may take to finish its requests.
    pub drain_ms: u64,
    /// How long a new instance must stay up and passing before it counts as
    /// healthy (Nomad's `min_healthy_time`, Kubernetes' `minReadySeconds`).
    pub min_healthy_ms: u64,
    /// When a healthy release that crash-loops later is rolled back.
    pub crash_loop: CrashLoop,
    pub volumes: Vec<VolumeSpec>,
    /// Added to the image's tmpfs paths (`runtime::tmpfs::overlay`).
    pub tmpfs: Vec<Tmpfs>,
    pub limits: Limits,
    pub cap_add: Vec<String>,
    pub driver: DriverKind,
    /// Why this service runs without a user namespace (`userns = false`,
    /// `userns_reason = "…"`); `None`, the default: it runs in one.
    pub userns_opt_out: Option<String>,
    /// `init = true|false`; `None`: decided by the entrypoint (on for a shell).
    pub init: Option<bool>,
    /// `logs = { max_size, max_files, keep, keep_instances }`.
    pub logs: LogPolicy,
    /// On a fleet, the host labels a host must have to run it.
    pub constraints: Constraints,
    /// On a fleet, the host label whose values its replicas spread over.
    pub spread_by: Option<String>,
}

/// Everything about how a release's instances run, besides the image.
/// Its canonical JSON's digest is the release's config digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseConfig {
    pub env: BTreeMap<String, String>,
    /// The names in `env` whose values are secret, sorted: shown as
    /// "(secret)" wherever the config is shown. Absent from the JSON when
    /// empty, so configs from before keep their digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// `name:/path`, `name:/path:ro` or `name:/path:shared`
    /// ([`VolumeSpec::canonical`]); the name may hold `{replica}`.
    pub volumes: Vec<String>,
    /// The service's tmpfs paths (the image's come with the image). Absent
    /// from the JSON when empty, so configs from before keep their digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<Tmpfs>,
    pub limits: Limits,
    pub cap_add: Vec<String>,
    /// The effective check: the fleet's override, else the image's, else none.
    pub health: Option<HealthCheck>,
    pub deadline_ms: u64,
    pub driver: DriverKind,
    /// Why the instances run without a user namespace, if they do. Absent
    /// (the default) from the JSON, so configs from before it keep their
    /// digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_opt_out: Option<String>,
    /// The fleet's `init`, if it says; absent (the default: on for a shell
    /// entrypoint) from the JSON, so configs from before keep their digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// The fleet's `logs`; absent (the defaults) from the JSON, so configs
    /// from before keep their digests.
    #[serde(default, skip_serializing_if = "LogPolicy::is_default")]
    pub logs: LogPolicy,
}

impl ReleaseConfig {
    pub fn digest(&self) -> Digest {
        let v = serde_json::to_value(self).expect("config serializes");
        Digest::of(crate::ledger::canonical_json(&v).as_bytes())
    }

    /// This config as people may see it: every secret env value replaced
    /// by [`super::diff::SECRET`].
    pub fn masked(&self) -> ReleaseConfig {
        let mut c = self.clone();
        for name in &self.secret_env {
            if let Some(v) = c.env.get_mut(name) {
                *v = super::diff::SECRET.to_string();
            }
        }
        c
    }

    /// The port its health check names, when it names one: the program
    /// listens there whatever `$PORT` says (nginx's `listen 8080`), so
    /// traffic goes there, and only one instance can hold it at a time.
    pub fn fixed_port(&self) -> Option<u16> {
        self.health.as_ref().and_then(|h| h.probe.fixed_port())
    }

    /// The names (as written, `{replica}` kept) of its volumes that have
    /// one writer: read-write and not shared.
    pub fn single_writer_volumes(&self) -> Vec<String> {
        self.volumes
            .iter()
            .filter_map(|v| VolumeSpec::parse_template(v).ok())
            .filter(VolumeSpec::single_writer)
            .map(|v| v.name)
            .collect()
    }
}

impl ServiceSpec {
    /// The rollout and traffic settings this spec asks for.
    pub fn rollout(&self) -> Rollout {
        Rollout {
            replicas: self.replicas,
            strategy: self.strategy,
            ports: self.ports.clone(),
            proxy: self.proxy,
            drain_ms: self.drain_ms,
            min_healthy_ms: self.min_healthy_ms,
            crash_loop: self.crash_loop,
            constraints: self.constraints.clone(),
            spread_by: self.spread_by.clone(),
        }
    }
}

/// How the proxy of `drover serve` carries a service's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// HTTP/1.1 and HTTP/2, request by request.
    #[default]
    Http,
    /// Plain TCP, connection by connection.
    Tcp,
}

/// The rollout and traffic settings of a service, as last applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub replicas: u32,
    pub strategy: Strategy,
    /// The proxy's ports; each forwards to every instance's own `PORT`.
    pub ports: Vec<u16>,
    #[serde(default)]
    pub proxy: ProxyMode,
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// A new instance counts as healthy (for the rollout, and for the
    /// release's outcome) once it stayed up and passing this long.
    #[serde(default = "default_min_healthy_ms")]
    pub min_healthy_ms: u64,
    #[serde(default)]
    pub crash_loop: CrashLoop,
    /// Where, on a fleet, its replicas may run ([`super::placement`]): like
    /// the replica count, a setting, not part of a release. Absent from
    /// the JSON when empty, so services recorded before read the same.
    #[serde(default, skip_serializing_if = "Constraints::is_empty")]
    pub constraints: Constraints,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
}

fn default_drain_ms() -> u64 {
    super::traffic::DEFAULT_DRAIN_MS
}

fn default_min_healthy_ms() -> u64 {
    DEFAULT_MIN_HEALTHY_MS
}

/// When `drover serve` rolls a healthy release back because it crash-loops:
/// `restarts` restarts of its instances within `within_ms` (the ECS
/// deployment circuit breaker, Nomad's `auto_revert`). `restarts = 0`: never
/// (the service only backs off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoop {
    pub restarts: u32,
    pub within_ms: u64,
}

impl Default for CrashLoop {
    fn default() -> Self {
        CrashLoop {
            restarts: 3,
            within_ms: 5 * 60_000,
        }
    }
}

impl CrashLoop {
    pub fn enabled(&self) -> bool {
        self.restarts > 0
    }
}
