//! `drover serve`'s Prometheus metrics, one [`Metrics`] per serve.
//!
//! Three kinds, all encoded by `prometheus-client` (never by hand), in the
//! OpenMetrics text format the admin listener serves at `/metrics`:
//!
//! - **Events, counted as they happen**, by the one place each happens:
//!   the proxies (requests by service and status code, their latency,
//!   upstream errors and retries — fed through the binary's adapter of
//!   `drover_proxy::Observe`), the supervisor's reconcile threads (from each
//!   pass's `deploy::Report`: heals, rollouts, rollbacks, back-offs; the
//!   serving instances' health probes, which the reconciler keeps for it) and its
//!   drift thread (scans, their duration, drifted instances). Counters start
//!   at 0 with each serve, as Prometheus' `rate()` expects.
//! - **State, read from the database at each scrape** ([`StateCollector`]):
//!   instances by service and state, the running release of each service
//!   (an `_info` metric), desired replicas, services backing off, ledger
//!   entries by action. Read, not counted, so they are right after a
//!   restart or an `apply` from another shell.
//! - **The process** ([`ProcessCollector`]): CPU seconds, resident memory,
//!   open descriptors, start time, read from `/proc/self` (the client has
//!   no process collector of its own). These keep the conventional
//!   `process_` names, unprefixed, so stock dashboards find them.
//!
//! Everything else is prefixed `drover_` and named as Prometheus asks:
//! counters end in `_total`, durations are `_seconds` histograms, the
//! release is an `_info` gauge of 1. The README's "Metrics" section lists
//! them; the tests hold the names to that list.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::deploy::{Report, release};
use crate::instance::{self, State};
use crate::store::Store;

#[cfg(test)]
mod tests;

/// The prefix of every metric but the process's own.
pub const PREFIX: &str = "drover";

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    service: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    service: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    service: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    service: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    service: String,
    result: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    service: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    method: String,
    route: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latencies: 1 ms to about 33 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Drift scans: 10 ms to about 11 min.
fn scan_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

/// The metrics of one serve: the registry, and the handles its threads
/// count with. Cheap to share (`Arc`); every call is a few atomics.
pub struct Metrics {
    registry: Registry,
    proxy_requests: Family<CodeLabels, Counter>,
    proxy_duration: HistogramFamily<ServiceLabel>,
    proxy_upstream_errors: Family<KindLabels, Counter>,
    proxy_retries: Family<ServiceLabel, Counter>,
    proxy_connections: Family<ResultLabels, Counter>,
    heals: Family<ServiceLabel, Counter>,
    rollouts: Family<ResultLabels, Counter>,
    rollbacks: Family<ReasonLabels, Counter>,
    api_requests: Family<ApiLabels, Counter>,
    pull_duration: Histogram,
    backoffs: Family<ServiceLabel, Counter>,
    drift_scans: Family<OutcomeLabel, Counter>,
    drift_scan_duration: Histogram,
    drift_findings: Counter,
    probes: Family<ProbeLabels, Counter>,
    probe_duration: HistogramFamily<PhaseLabels>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The event metrics and the process's; with `store`, also what is read
    /// from its database at each scrape.
    pub fn new(store: Option<PathBuf>) -> Self {
        // The handles first; then a registry holding clones of them (a
        // clone shares its counts), which goes in last.
        let mut m = Metrics {
            registry: Registry::default(),
            proxy_requests: Family::default(),
            proxy_duration: Family::new_with_constructor(request_buckets),
            proxy_upstream_errors: Family::default(),
            proxy_retries: Family::default(),
            proxy_connections: Family::default(),
            heals: Family::default(),
            rollouts: Family::default(),
            rollbacks: Family::default(),
            api_requests: Family::default(),
            pull_duration: scan_buckets(),
            backoffs: Family::default(),
            drift_scans: Family::default(),
            drift_scan_duration: scan_buckets(),
            drift_findings: Counter::default(),
            probes: Family::default(),
            probe_duration: Family::new_with_constructor(request_buckets),
        };
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let r = root.sub_registry_with_prefix(PREFIX);
        r.register(
            "proxy_requests",
            "HTTP requests answered by a service's proxy, by status code (the backend's, \
             or the proxy's own 502/503/504)",
            m.proxy_requests.clone(),
        );
        r.register_with_unit(
            "proxy_request_duration",
            "From receiving an HTTP request to sending its response head, retries included",
            Unit::Seconds,
            m.proxy_duration.clone(),
        );
        r.register(
            "proxy_upstream_errors",
            "Failed attempts to reach an instance: connect (refused or timed out; retried \
             on another if one is left), response (failed after the request was sent), \
             timeout (no response head in time)",
            m.proxy_upstream_errors.clone(),
        );
        r.register(
            "proxy_retries",
            "HTTP requests sent again to another instance after a connect error",
            m.proxy_retries.clone(),
        );
        r.register(
            "proxy_connections",
            "TCP connections a service's proxy accepted, by result: joined (to an \
             instance), refused (none could be reached; closed)",
            m.proxy_connections.clone(),
        );
        r.register(
            "heals",
            "Instances found exited and replaced by serve's reconciler",
            m.heals.clone(),
        );
        r.register(
            "rollouts",
            "Releases rolled out by serve's reconciler, by result (succeeded, failed)",
            m.rollouts.clone(),
        );
        r.register(
            "rollbacks",
            "Releases rolled back by serve's reconciler, by reason: health_check (a new \
             release failed its gate or stability window), crash_loop (a healthy release's \
             instances kept dying)",
            m.rollbacks.clone(),
        );
        r.register_with_unit(
            "image_pull_duration",
            "How long the image pulls serve made took (deploys through the HTTP API pull \
             what the store lacks)",
            Unit::Seconds,
            m.pull_duration.clone(),
        );
        r.register(
            "api_requests",
            "Requests to the HTTP API (/api/v1/), by method, route (the path's pattern, \
             `other` for none) and status code",
            m.api_requests.clone(),
        );
        r.register(
            "backoffs",
            "Times serve's reconciler backed a failing or crash-looping service off",
            m.backoffs.clone(),
        );
        r.register(
            "drift_scans",
            "Drift scans of all instances, by result (ok, error)",
            m.drift_scans.clone(),
        );
        r.register_with_unit(
            "drift_scan_duration",
            "How long a drift scan of all instances took",
            Unit::Seconds,
            m.drift_scan_duration.clone(),
        );
        r.register(
            "drift_findings",
            "Instances a drift scan found drifted (each condemned and replaced)",
            m.drift_findings.clone(),
        );
        r.register(
            "health_probes",
            "Health-check probes by serve, by result (ok, failed) and phase: rollout (the \
             gate and stability window of new instances), serving (instances in traffic)",
            m.probes.clone(),
        );
        r.register_with_unit(
            "health_probe_duration",
            "How long a health-check probe took, by phase (rollout, serving)",
            Unit::Seconds,
            m.probe_duration.clone(),
        );
        if let Some(dir) = store {
            r.register_collector(Box::new(StateCollector {
                dir,
                store: Mutex::new(None),
            }));
        }
        m.registry = root;
        m
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String fails only if a collector fails; what it
        // wrote before stays, and the scrape shows the rest missing.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// An HTTP request `service`'s proxy answered with `code`, `elapsed`
    /// after receiving it.
    pub fn proxy_request(&self, service: &str, code: u16, elapsed: Duration) {
        self.proxy_requests
            .get_or_create(&CodeLabels {
                service: service.into(),
                code: code.to_string(),
            })
            .inc();
        self.proxy_duration
            .get_or_create(&ServiceLabel {
                service: service.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// An attempt of `service`'s proxy to reach an instance failed
    /// (`kind`: connect, response, timeout).
    pub fn proxy_upstream_error(&self, service: &str, kind: &str) {
        self.proxy_upstream_errors
            .get_or_create(&KindLabels {
                service: service.into(),
                kind: kind.into(),
            })
            .inc();
    }

    /// A request of `service` went to another instance after a connect error.
    pub fn proxy_retry(&self, service: &str) {
        self.proxy_retries
            .get_or_create(&ServiceLabel {
                service: service.into(),
            })
            .inc();
    }

    /// `service`'s TCP proxy joined a connection to an instance, or closed
    /// it for want of one.
    pub fn proxy_connection(&self, service: &str, joined: bool) {
        self.proxy_connections
            .get_or_create(&ResultLabels {
                service: service.into(),
                result: if joined { "joined" } else { "refused" }.into(),
            })
            .inc();
    }

    /// What one reconcile pass did (`previous`: the release running before
    /// it, as the last pass reported). The one place serve's heals,
    /// rollouts, rollbacks and back-offs are counted.
    pub fn pass(&self, rep: &Report, previous: Option<i64>) {
        if rep.busy() {
            return;
        }
        let svc = ServiceLabel {
            service: rep.service.clone(),
        };
        if rep.healed > 0 {
            self.heals.get_or_create(&svc).inc_by(u64::from(rep.healed));
        }
        let result = |r: &str| ResultLabels {
            service: rep.service.clone(),
            result: r.into(),
        };
        if rep.failed.is_some() {
            self.rollouts.get_or_create(&result("failed")).inc();
        } else if rep.error.is_none() && rep.started > rep.healed && rep.release != previous {
            self.rollouts.get_or_create(&result("succeeded")).inc();
        }
        if rep.failed.is_some() {
            let reason = rep.rollback_reason.unwrap_or("health_check");
            self.rollbacks
                .get_or_create(&ReasonLabels {
                    service: rep.service.clone(),
                    reason: reason.into(),
                })
                .inc();
        }
        for (ok, took) in &rep.gate_probes {
            self.probe(&rep.service, "rollout", *ok, *took);
        }
        if rep.backs_off() {
            self.backoffs.get_or_create(&svc).inc();
        }
    }

    /// An image pull serve made took `took`.
    pub fn image_pull(&self, took: Duration) {
        self.pull_duration.observe(took.as_secs_f64());
    }

    /// A request to the HTTP API: `route` is the path's pattern
    /// (`/api/v1/services/{name}`), so the label's values stay few.
    pub fn api_request(&self, method: &str, route: &str, code: u16) {
        self.api_requests
            .get_or_create(&ApiLabels {
                method: method.into(),
                route: route.into(),
                code: code.to_string(),
            })
            .inc();
    }

    /// A health-check probe of a serving instance of `service`.
    pub fn health_probe(&self, service: &str, ok: bool, took: Duration) {
        self.probe(service, "serving", ok, took);
    }

    fn probe(&self, service: &str, phase: &str, ok: bool, took: Duration) {
        self.probes
            .get_or_create(&ProbeLabels {
                service: service.into(),
                result: if ok { "ok" } else { "failed" }.into(),
                phase: phase.into(),
            })
            .inc();
        self.probe_duration
            .get_or_create(&PhaseLabels {
                service: service.into(),
                phase: phase.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// A drift scan ended after `took`: `Some(n)` found `n` instances
    /// drifted, `None` failed.
    pub fn drift_scan(&self, took: Duration, drifted: Option<usize>) {
        let result = if drifted.is_some() { "ok" } else { "error" };
        self.drift_scans
            .get_or_create(&OutcomeLabel {
                result: result.into(),
            })
            .inc();
        self.drift_scan_duration.observe(took.as_secs_f64());
        if let Some(n) = drifted {
            self.drift_findings.inc_by(n as u64);
        }
    }
}

/// Encode one scrape-time family.
fn family<L, M>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    fam: &Family<L, M>,
) -> fmt::Result
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + fmt::Debug + Send + Sync,
    M: EncodeMetric + prometheus_client::metrics::TypedMetric + Default + fmt::Debug,
{
    let m = enc.encode_descriptor(name, help, None, fam.metric_type())?;
    fam.encode(m)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    service: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabels {
    service: String,
    release: String,
    image: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: String,
}

/// What the database says, read at each scrape, over a store opened once
/// (lazily, and again after an error).
struct StateCollector {
    dir: PathBuf,
    store: Mutex<Option<Store>>,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCollector")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The database's view, gathered before anything is encoded.
#[derive(Default)]
pub(crate) struct StateView {
    instances: Family<StateLabels, Gauge>,
    releases: Family<ReleaseLabels, Gauge>,
    replicas: Family<ServiceLabel, Gauge>,
    backing_off: Family<ServiceLabel, Gauge>,
    ledger: Family<ActionLabel, Counter>,
}

/// Read the services, their running releases, the instances and the
/// ledger's counts from `store`.
pub(crate) fn read_state(store: &Store) -> crate::Result<StateView> {
    let v = StateView::default();
    let db = store.db();
    let services = release::services(db.read())?;
    let now = crate::clock::now_ms();
    for s in services.iter().filter(|s| s.removed.is_none()) {
        let svc = ServiceLabel {
            service: s.name.clone(),
        };
        v.replicas
            .get_or_create(&svc)
            .set(i64::from(s.rollout.replicas));
        // Every service has a running count, 0 included, so that an alert
        // on it fires when the last instance goes, rather than the series
        // going away.
        let _ = v.instances.get_or_create(&StateLabels {
            service: s.name.clone(),
            state: State::Running.as_str().into(),
        });
        let h = release::health(db.read(), &s.name)?;
        v.backing_off
            .get_or_create(&svc)
            .set(i64::from(h.backoff_until.is_some_and(|t| t > now)));
        if let Some(n) = s.desired {
            let r = release::release(db.read(), &s.name, n)?;
            v.releases
                .get_or_create(&ReleaseLabels {
                    service: s.name.clone(),
                    release: n.to_string(),
                    image: r.image_ref.clone(),
                })
                .set(1);
        }
    }
    for i in instance::list(db, false)? {
        let Some(service) = i.service else { continue };
        v.instances
            .get_or_create(&StateLabels {
                service,
                state: i.state.as_str().into(),
            })
            .inc();
    }
    for (action, n) in db.read().ledger_counts()? {
        v.ledger.get_or_create(&ActionLabel { action }).inc_by(n);
    }
    Ok(v)
}

impl StateView {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        family(
            &mut enc,
            "instances",
            "Instances of each service by state (created, running, stopping, exited).",
            &self.instances,
        )?;
        family(
            &mut enc,
            "service_release_info",
            "The release each service runs (its desired release), and its image: always 1.",
            &self.releases,
        )?;
        family(
            &mut enc,
            "service_replicas_desired",
            "Instances each service asks for.",
            &self.replicas,
        )?;
        family(
            &mut enc,
            "service_backing_off",
            "1 while serve's reconciler backs a failing service off.",
            &self.backing_off,
        )?;
        family(
            &mut enc,
            "ledger_entries",
            "Entries in the store's ledger, by action.",
            &self.ledger,
        )
    }
}

impl Collector for StateCollector {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let mut guard = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Store::open_unleased(&self.dir).ok();
        }
        let Some(store) = guard.as_ref() else {
            return Ok(());
        };
        match read_state(store) {
            Ok(v) => v.encode(enc),
            Err(_) => {
                // Opened again at the next scrape; this one lacks them.
                *guard = None;
                Ok(())
            }
        }
    }
}

/// The process's own resources, from `/proc/self`.
#[derive(Debug)]
struct ProcessCollector;

/// `/proc`'s clock ticks per second (`USER_HZ`, 100 on every Linux port
/// drover runs on).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says of this process.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcessView {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub virtual_bytes: i64,
    pub open_fds: i64,
    pub max_fds: i64,
    pub start_time_seconds: f64,
    pub threads: i64,
}

/// Parse `/proc/self/stat` (after the command name, which may hold spaces
/// and parentheses) and `/proc/stat`'s boot time.
pub(crate) fn parse_stat(stat: &str, boot_time: f64) -> Option<ProcessView> {
    let rest = &stat[stat.rfind(')')? + 2..];
    // Fields from the 3rd (state) on: utime is the 14th, so index 11 here.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i)?.parse::<f64>().ok();
    Some(ProcessView {
        cpu_seconds: (num(11)? + num(12)?) / USER_HZ,
        threads: num(17)? as i64,
        start_time_seconds: boot_time + num(19)? / USER_HZ,
        virtual_bytes: num(20)? as i64,
        ..ProcessView::default()
    })
}

fn read_process() -> Option<ProcessView> {
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
    let mut v = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?, boot)?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    v.resident_bytes = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map_or(0, |kb| kb * 1024);
    v.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    v.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft as i64);
    Some(v)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(v) = read_process() else {
            return Ok(());
        };
        let c = ConstCounter::new(v.cpu_seconds);
        c.encode(enc.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent.",
            None,
            c.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size.",
                v.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size.",
                v.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Open file descriptors.",
                v.open_fds as f64,
            ),
            (
                "process_max_fds",
                "The limit of open file descriptors.",
                v.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch.",
                v.start_time_seconds,
            ),
            (
                "process_threads",
                "Threads of the process.",
                v.threads as f64,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}
