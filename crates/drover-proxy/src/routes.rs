//! One listener's routing state ([`Routes`]): the routable backends,
//! round-robin picks that pass over backends cooling down after a refused
//! connection, exact in-flight counts per backend, and the counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hyper::http::uri::Authority;

/// How long a backend that refused a connection is passed over.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// One place traffic can go: an instance, by id, and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    /// Preference: a request goes to the lowest tier that has a backend
    /// it has not tried and that is not cooling down (`drover serve`: 0 for
    /// an instance on this host, 1 for one on another host). Within a tier,
    /// round-robin.
    pub tier: u8,
}

impl Backend {
    /// A backend of tier 0 (the preferred one).
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            id: id.into(),
            addr,
            tier: 0,
        }
    }
}

/// Counters of one listener since its [`Routes`] was made. For TCP, a
/// "request" is a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// 502 and 504 the proxy produced (TCP: connections closed because no
    /// backend could be reached).
    pub failures: u64,
    /// 503 because nothing was routable (TCP: connections closed for it).
    pub unavailable: u64,
    /// Connection attempts to backends that failed (the request or
    /// connection then moved on to the next backend, if one was left).
    pub connect_errors: u64,
    /// The routable backends, then the removed ones still busy.
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStats {
    pub id: String,
    pub addr: SocketAddr,
    pub tier: u8,
    pub routable: bool,
    pub in_flight: usize,
    /// Responses (TCP: connections) this backend produced. A backend's
    /// counters go once it is removed and idle.
    pub served: u64,
}

/// Shared routing state for one listener; cheap to clone.
#[derive(Clone)]
pub struct Routes(Arc<Shared>);

pub(crate) struct Shared {
    /// The routable set. Read (briefly) by every request, written by `set`.
    live: RwLock<Vec<Arc<Target>>>,
    /// Every target a request may still be using: the live ones and the
    /// removed ones with requests in flight. Only `set`, `in_flight` and
    /// `stats` take this lock.
    known: Mutex<Vec<Arc<Target>>>,
    next: AtomicUsize,
    epoch: Instant,
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    connect_errors: AtomicU64,
    /// Told of each request, with the service's name.
    observer: Option<(String, Arc<dyn crate::Observe>)>,
}

pub(crate) struct Target {
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) tier: u8,
    /// `addr` as a URI authority, made once.
    pub(crate) authority: Authority,
    in_flight: AtomicUsize,
    pub(crate) served: AtomicU64,
    /// Pass this backend over until then (ms since `Shared::epoch`); 0 = no.
    cool_until: AtomicU64,
}

impl Target {
    fn new(b: Backend) -> Self {
        let authority = Authority::try_from(b.addr.to_string())
            .expect("a socket address is a valid URI authority");
        Self {
            id: b.id,
            addr: b.addr,
            tier: b.tier,
            authority,
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            cool_until: AtomicU64::new(0),
        }
    }
}

/// One request (or TCP connection) in flight to a target; counted from
/// creation to drop.
pub(crate) struct InFlight(pub(crate) Arc<Target>);

impl InFlight {
    fn enter(t: &Arc<Target>) -> Self {
        t.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(t))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self::with_observer(None)
    }

    /// Routes of `service` whose requests `observer` is told of.
    pub fn observed(service: &str, observer: Arc<dyn crate::Observe>) -> Self {
        Self::with_observer(Some((service.to_string(), observer)))
    }

    fn with_observer(observer: Option<(String, Arc<dyn crate::Observe>)>) -> Self {
        Self(Arc::new(Shared {
            live: RwLock::new(Vec::new()),
            known: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            observer,
        }))
    }

    /// Replace the routable set. Backends not in the new set get no new
    /// requests or connections from the moment this returns; those in flight
    /// finish. A backend keeps its counters as long as its id and address
    /// stay the same. Duplicate ids: the first wins.
    pub fn set(&self, backends: Vec<Backend>) {
        let s = &self.0;
        let mut known = s.known.lock().unwrap_or_else(PoisonError::into_inner);
        let mut live: Vec<Arc<Target>> = Vec::with_capacity(backends.len());
        for b in backends {
            if live.iter().any(|t| t.id == b.id) {
                continue;
            }
            let t = known
                .iter()
                .find(|t| t.id == b.id && t.addr == b.addr && t.tier == b.tier)
                .cloned()
                .unwrap_or_else(|| Arc::new(Target::new(b)));
            live.push(t);
        }
        // Tiers in order, each in the order given: picks walk them so.
        live.sort_by_key(|t| t.tier);
        // Once the write lock is ours, no pick is running on the old set:
        // every request it let through is already counted in flight.
        *s.live.write().unwrap_or_else(PoisonError::into_inner) = live.clone();
        known.retain(|t| {
            !live.iter().any(|l| Arc::ptr_eq(l, t)) && t.in_flight.load(Ordering::SeqCst) > 0
        });
        live.append(&mut known);
        *known = live;
    }

    /// Requests (HTTP) or connections (TCP) in flight to backend `id` right
    /// now; 0 if unknown.
    pub fn in_flight(&self, id: &str) -> usize {
        let known = self.0.known.lock().unwrap_or_else(PoisonError::into_inner);
        known
            .iter()
            .filter(|t| t.id == id)
            .map(|t| t.in_flight.load(Ordering::SeqCst))
            .sum()
    }

    pub fn stats(&self) -> Stats {
        let s = &self.0;
        let known = s.known.lock().unwrap_or_else(PoisonError::into_inner);
        let live = s.live.read().unwrap_or_else(PoisonError::into_inner);
        Stats {
            requests: s.requests.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            unavailable: s.unavailable.load(Ordering::Relaxed),
            connect_errors: s.connect_errors.load(Ordering::Relaxed),
            backends: known
                .iter()
                .map(|t| BackendStats {
                    id: t.id.clone(),
                    addr: t.addr,
                    tier: t.tier,
                    routable: live.iter().any(|l| Arc::ptr_eq(l, t)),
                    in_flight: t.in_flight.load(Ordering::SeqCst),
                    served: t.served.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// The next backend for a request that has already failed on `tried`,
    /// counted in flight, and whether another untried one was left besides
    /// it. The lowest tier with an untried backend that is not cooling
    /// down wins, round-robin within it; a cooling one is taken only when
    /// every untried backend is (then the lowest tier's).
    pub(crate) fn pick(&self, tried: &[Arc<Target>]) -> Option<(InFlight, bool)> {
        let s = &self.0;
        let live = s.live.read().unwrap_or_else(PoisonError::into_inner);
        let n = live.len();
        if n == 0 {
            return None;
        }
        let turn = s.next.fetch_add(1, Ordering::Relaxed);
        let mut now = None;
        let (mut chosen, mut fallback, mut candidates) = (None, None, 0);
        // `live` is sorted by tier: walk each tier's run from its own
        // round-robin offset.
        let mut start = 0;
        while start < n {
            let tier = live[start].tier;
            let len = live[start..].iter().take_while(|t| t.tier == tier).count();
            let base = turn % len;
            for k in 0..len {
                let t = &live[start + (base + k) % len];
                if tried.iter().any(|x| Arc::ptr_eq(x, t)) {
                    continue;
                }
                candidates += 1;
                if chosen.is_none() {
                    if self.cooling(t, &mut now) {
                        fallback.get_or_insert(t);
                    } else {
                        chosen = Some(t);
                    }
                }
                if chosen.is_some() && candidates > 1 {
                    break;
                }
            }
            if chosen.is_some() && candidates > 1 {
                break;
            }
            start += len;
        }
        let t = chosen.or(fallback)?;
        // Counted while the read lock is held: see `set`.
        Some((InFlight::enter(t), candidates > 1))
    }

    fn now_ms(&self) -> u64 {
        self.0.epoch.elapsed().as_millis() as u64 + 1
    }

    fn cooling(&self, t: &Target, now: &mut Option<u64>) -> bool {
        let until = t.cool_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        let now = *now.get_or_insert_with(|| self.now_ms());
        if now < until {
            return true;
        }
        // Expired: clear it, so picks stop reading the clock for it.
        let _ = t
            .cool_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }

    /// `t` refused a connection: pass it over for a while.
    pub(crate) fn cool_down(&self, t: &Target) {
        let until = self.now_ms() + COOL_DOWN.as_millis() as u64;
        t.cool_until.store(until, Ordering::Relaxed);
        self.0.connect_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The observer, and the service it knows these routes as.
    /// The service these routes are of, for log events ("" if not named).
    pub(crate) fn service(&self) -> &str {
        self.0.observer.as_ref().map_or("", |(s, _)| s.as_str())
    }

    pub(crate) fn observer(&self) -> Option<(&str, &dyn crate::Observe)> {
        self.0
            .observer
            .as_ref()
            .map(|(s, o)| (s.as_str(), o.as_ref()))
    }

    pub(crate) fn count(&self, counter: fn(&Shared) -> &AtomicU64) {
        counter(&self.0).fetch_add(1, Ordering::Relaxed);
    }
}
