//! Instances: one container of one image, never modified — replaced.
//!
//! An instance's life is a small state machine ([`State`]), kept in the
//! state database next to the ledger and changed only by [`transition`],
//! which writes the ledger entry in the same transaction:
//!
//! ```text
//! created ──start──▶ running ──stop──▶ stopping ──exit──▶ exited ──rm──▶ deleted
//!                       └──────────────exit──────────────────┘
//! ```
//!
//! Each running instance has a *monitor* ([`monitor`]): a small drover
//! process, detached from the terminal, that creates the container through
//! the driver, waits for its process and records how it exited. Instances
//! therefore keep running after the CLI exits, and any later drover process
//! finds them in the database. If the monitor itself is killed, the next
//! [`refresh`] sees the process gone and records the exit as unknown — an
//! instance whose process died is never shown as running. Nor is one
//! recorded on another machine or an earlier boot ([`host`]: a restored or
//! copied store, a reboot), whatever its pid says: [`refresh`] records it
//! *lost* (`instance.lost`, exited with its status unknown), and deploys
//! replace it as any exited instance.
//!
//! Files: `<store>/instances/<id>/` is the OCI bundle (`config.json`) and
//! holds the log (`log`, rotated to `log.1` … by [`log`]; kept in
//! `<store>/logs/instances/<id>/` once it is removed); volumes live in `<store>/volumes/<name>/` and
//! outlive instances; runtimes keep their own state in `<store>/run/`.
//!
//! A volume mounted read-write has one writer unless it is declared shared
//! ([`volume`]): creating an instance that would write a volume beside
//! another live writer is refused. A service's instances each hold a
//! replica slot, recorded with them, which names their per-replica volumes.

pub mod debug;
pub mod host;
pub mod log;
pub mod monitor;
mod prepare;
mod sandbox;
mod userns;
pub mod volume;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

pub use prepare::RunOptions;
pub use sandbox::BuildSandbox;
pub use volume::{Access, Held, VolumeSpec};

use crate::clock;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::ledger::NewEntry;
use crate::runtime::{self, DriverKind, spec::Launch};
use crate::state::{Db, InstanceRow, Reader, Tx};
use crate::store::{Store, unpack};
use crate::trust::admit;
use crate::trust::policy::Operation;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Recorded, container not yet running.
    Created,
    Running,
    /// Asked to stop; its process has not exited yet.
    Stopping,
    /// Its process has exited (see [`Exit`]).
    Exited,
    /// Removed: container and bundle are gone (the log is kept for a
    /// while, see [`log::keep`]); the row stays as history.
    Deleted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Deleted => "deleted",
        }
    }

    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "created" => State::Created,
            "running" => State::Running,
            "stopping" => State::Stopping,
            "exited" => State::Exited,
            "deleted" => State::Deleted,
            _ => return None,
        })
    }

    /// Whether moving to this state is part of stopping or removing, which
    /// a full disk must not prevent (see `Db::write_freeing`).
    fn frees(self) -> bool {
        matches!(self, State::Stopping | State::Exited | State::Deleted)
    }

    /// Whether the instance's process may be alive.
    pub fn is_live(self) -> bool {
        matches!(self, State::Running | State::Stopping)
    }

    /// The one place that says which changes are allowed.
    pub fn can_become(self, to: State) -> bool {
        use State::*;
        matches!(
            (self, to),
            (Created, Running)
                | (Created, Exited)
                | (Running, Stopping)
                | (Running, Exited)
                | (Stopping, Exited)
                | (Created | Exited, Deleted)
        )
    }
}

/// How an instance's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "value")]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Its monitor was gone too, so nobody saw the status.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// One instance as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    pub id: String,
    pub name: Option<String>,
    /// The image's manifest digest: what runs, whatever tag was used.
    pub image: Digest,
    /// What the user asked to run (a tag or digest).
    pub image_ref: String,
    /// The service and release it was started for, by a deploy.
    pub service: Option<String>,
    pub release: Option<i64>,
    pub driver: DriverKind,
    pub state: State,
    pub pid: Option<u32>,
    #[serde(skip)]
    pub pid_start: Option<u64>,
    #[serde(skip)]
    pub monitor_pid: Option<u32>,
    #[serde(skip)]
    pub monitor_start: Option<u64>,
    pub port: Option<u16>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub exit: Option<Exit>,
    pub stop_signal: i32,
    pub launch: Launch,
    /// When it passed its health check and began to take traffic (unix ms).
    pub ready_at: Option<i64>,
    /// When a deploy began to drain it: no new traffic from then (unix ms).
    pub drain_at: Option<i64>,
    /// Why it must be replaced (drift, a failing health check), if it must.
    pub condemned: Option<String>,
    /// Digest of the `config.json` it was created with.
    #[serde(skip)]
    pub config_digest: Option<Digest>,
    /// Its replica slot, if it is a service's (none for instances made
    /// before slots existed).
    pub slot: Option<u32>,
    /// The volumes it mounts, names resolved, and how.
    pub volumes: Vec<Held>,
    /// The machine and boot its processes were started on ([`host`]).
    #[serde(skip)]
    pub machine_id: Option<String>,
    #[serde(skip)]
    pub boot_id: Option<String>,
    /// The fleet host it runs on (none: a store that never joined).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Why it is counted lost (its host was marked down), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

/// The fleet host this store joined as (`serve --join`), if it did.
pub fn this_host(db: &Db) -> Option<String> {
    crate::state::hosts::local_host(crate::state::state_dir(db.path())).map(|(h, _)| h)
}

impl Instance {
    /// Whether it runs on another host of the fleet than `me` (this
    /// store's, [`this_host`]): then only its row says how it is, and only
    /// its own host starts, probes or stops it.
    pub fn elsewhere(&self, me: Option<&str>) -> bool {
        self.host.is_some() && self.host.as_deref() != me
    }

    pub fn bundle(&self, store_root: &Path) -> PathBuf {
        bundle_dir(store_root, &self.id)
    }

    /// Is the process this row names still the one running? (pid and start
    /// time both match, so a reused pid does not count.)
    fn process_alive(&self) -> bool {
        self.on_this_boot() && same_process_alive(self.pid, self.pid_start)
    }

    fn monitor_alive(&self) -> bool {
        self.on_this_boot() && same_process_alive(self.monitor_pid, self.monitor_start)
    }

    /// Whether its processes were recorded on this boot of this machine;
    /// if not, its pids name nothing of its own ([`host`]).
    pub fn on_this_boot(&self) -> bool {
        host::current().admits(self.machine_id.as_deref(), self.boot_id.as_deref())
    }

    /// Exited unseen: nobody saw its process end (its monitor was gone
    /// too, it was recorded on another host or boot, or the store was
    /// restored from a backup).
    pub fn is_lost(&self) -> bool {
        matches!(self.state, State::Exited | State::Deleted) && self.exit == Some(Exit::Unknown)
    }

    /// Created, and its monitor is at work creating the container: it will
    /// be running (or gone) in a moment.
    pub fn is_starting(&self) -> bool {
        self.state == State::Created && self.monitor_alive()
    }
}

fn same_process_alive(pid: Option<u32>, start: Option<u64>) -> bool {
    match (pid, start) {
        (Some(pid), Some(start)) => runtime::alive(pid) && runtime::start_time(pid) == Some(start),
        _ => false,
    }
}

pub fn bundle_dir(store_root: &Path, id: &str) -> PathBuf {
    store_root.join("instances").join(id)
}

/// Where runtimes keep their state.
pub fn runtime_root(store_root: &Path) -> PathBuf {
    store_root.join("run")
}

pub fn volume_dir(store_root: &Path, name: &str) -> PathBuf {
    store_root.join("volumes").join(name)
}

impl Instance {
    /// Decode a recorded row; a value drover never writes is corruption.
    fn from_row(row: InstanceRow) -> Result<Instance> {
        let bad = |what: String| {
            Error::corrupt(format!("instance {} in the state database", row.id), what)
        };
        let state = State::parse(&row.state)
            .ok_or_else(|| bad(format!("unknown state {:?}", row.state)))?;
        let exit = match (row.exit_code, row.exit_signal) {
            (Some(c), _) => Some(Exit::Code(c)),
            (None, Some(s)) => Some(Exit::Signal(s)),
            (None, None) if matches!(state, State::Exited | State::Deleted) => Some(Exit::Unknown),
            _ => None,
        };
        let driver = DriverKind::parse(&row.driver).map_err(|e| bad(e.to_string()))?;
        let launch = serde_json::from_str(&row.launch).map_err(|e| bad(format!("launch: {e}")))?;
        let volumes = match &row.volumes {
            Some(v) => serde_json::from_str(v).map_err(|e| bad(format!("volumes: {e}")))?,
            None => Vec::new(),
        };
        Ok(Instance {
            id: row.id,
            name: row.name,
            image: row.image,
            image_ref: row.image_ref,
            release: row.release,
            driver,
            state,
            pid: row.pid,
            pid_start: row.pid_start,
            monitor_pid: row.monitor_pid,
            monitor_start: row.monitor_start,
            port: row.port,
            created: row.created,
            started: row.started,
            finished: row.finished,
            exit,
            stop_signal: row.stop_signal,
            launch,
            service: row.service,
            ready_at: row.ready_at,
            drain_at: row.drain_at,
            condemned: row.condemned,
            config_digest: row.config_digest,
            slot: row.slot,
            volumes,
            machine_id: row.machine_id,
            boot_id: row.boot_id,
            host: row.host,
            lost: row.lost,
        })
    }
}

/// Every instance, oldest first; deleted ones only with `all`.
pub fn list(db: &Db, all: bool) -> Result<Vec<Instance>> {
    db.read()
        .instances(all)?
        .into_iter()
        .map(Instance::from_row)
        .collect()
}

fn get(r: Reader<'_>, id: &str) -> Result<Option<Instance>> {
    r.instance(id)?.map(Instance::from_row).transpose()
}

/// The instance `key` names: its id, a unique prefix of it, or its name
/// (deleted instances only by full id).
pub fn find(db: &Db, key: &str) -> Result<Instance> {
    if let Some(i) = get(db.read(), key)? {
        return Ok(i);
    }
    let live = list(db, false)?;
    if let Some(i) = live.iter().find(|i| i.name.as_deref() == Some(key)) {
        return Ok(i.clone());
    }
    let matches: Vec<&Instance> = live.iter().filter(|i| i.id.starts_with(key)).collect();
    match matches.as_slice() {
        [one] if !key.is_empty() => Ok((*one).clone()),
        [] | [_] => Err(Error::NotFound {
            what: format!("instance {key:?}"),
            hint: Some("`drover ps` lists instances".into()),
        }),
        many => Err(Error::Usage(format!(
            "{key:?} matches {} instances ({}); give more of the id",
            many.len(),
            many.iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A state change and what comes with it.
#[derive(Debug, Default)]
pub struct Change {
    pub pid: Option<(u32, Option<u64>)>,
    pub monitor: Option<(u32, Option<u64>)>,
    pub exit: Option<Exit>,
}

/// Move instance `id` to `to` and write the ledger entry `action` (if any),
/// in one transaction. Returns `false` (and changes nothing) when the instance is
/// not in a state that can become `to` — e.g. its exit was already recorded
/// by someone else — so concurrent observers record an event exactly once.
pub fn transition(
    db: &mut Db,
    id: &str,
    to: State,
    action: Option<&str>,
    change: Change,
) -> Result<bool> {
    let f = |tx: &mut Tx<'_>| transition_in(tx, id, to, action, &change, None);
    if to.frees() {
        // Stopping and removing must work on a full disk.
        db.write_freeing(f)
    } else {
        db.write(f)
    }
}

fn transition_in(
    tx: &Tx<'_>,
    id: &str,
    to: State,
    action: Option<&str>,
    change: &Change,
    why: Option<&str>,
) -> Result<bool> {
    let Some(inst) = get(tx.read(), id)? else {
        return Err(Error::not_found(format!("instance {id}")));
    };
    if !inst.state.can_become(to) {
        return Ok(false);
    }
    // A monitor is creating its container: not abandoned, not removable.
    if inst.is_starting() && to == State::Deleted {
        return Ok(false);
    }
    let now = clock::now_rfc3339();
    tx.set_instance_state(id, inst.state.as_str(), to.as_str(), &now)?;
    if let Some((pid, start)) = change.pid {
        tx.set_instance_process(id, pid, start, &now)?;
    }
    if let Some((pid, start)) = change.monitor {
        tx.set_instance_monitor(id, pid, start)?;
    }
    if change.pid.is_some() || change.monitor.is_some() {
        let here = host::current();
        tx.set_instance_host(id, here.machine_id.as_deref(), here.boot_id.as_deref())?;
    }
    let mut details = json!({
        "image": inst.image.to_string(),
        "driver": inst.driver.as_str(),
        "from": inst.state.as_str(),
        "to": to.as_str(),
    });
    if let Some(name) = &inst.name {
        details["name"] = json!(name);
    }
    if let Some(service) = &inst.service {
        details["service"] = json!(service);
    }
    if let Some(release) = inst.release {
        details["release"] = json!(release);
    }
    if let Some((pid, _)) = change.pid {
        details["pid"] = json!(pid);
    }
    if let Some(exit) = change.exit {
        let (code, signal) = match exit {
            Exit::Code(c) => (Some(c), None),
            Exit::Signal(s) => (None, Some(s)),
            Exit::Unknown => (None, None),
        };
        tx.set_instance_exit(id, &now, code, signal)?;
        details["exit"] = json!(exit.to_string());
    }
    if let Some(why) = why {
        details["why"] = json!(why);
    }
    if let Some(action) = action {
        tx.record(NewEntry::new(
            action,
            [id.to_string(), inst.image.to_string()],
            details,
        ))?;
    }
    Ok(true)
}

/// Record that instance `id`'s process exited: `instance.stop` if a stop
/// was asked for, else `instance.exit`. Returns `false` if its exit was
/// already recorded.
pub fn record_exit(db: &mut Db, id: &str, exit: Exit) -> Result<bool> {
    db.write_freeing(|tx| {
        let Some(inst) = get(tx.read(), id)? else {
            return Err(Error::not_found(format!("instance {id}")));
        };
        let change = Change {
            exit: Some(exit),
            ..Change::default()
        };
        transition_in(
            tx,
            id,
            State::Exited,
            Some(exit_action(inst.state)),
            &change,
            None,
        )
    })
}

/// Bring recorded states up to date with reality: an instance whose process
/// is gone is recorded as exited (with its status if its monitor is about
/// to record it, else as unknown). Returns the refreshed list.
pub fn refresh(db: &mut Db, all: bool) -> Result<Vec<Instance>> {
    let mut out = Vec::new();
    for inst in list(db, all)? {
        out.push(refresh_one(db, inst)?);
    }
    Ok(out)
}

fn refresh_one(db: &mut Db, inst: Instance) -> Result<Instance> {
    // Another fleet host's instance: its pids name nothing here; its own
    // host judges it (and the fleet check, when that host is down).
    if !inst.state.is_live() || inst.elsewhere(this_host(db).as_deref()) || inst.process_alive() {
        return Ok(inst);
    }
    if !inst.on_this_boot() {
        let why = format!(
            "recorded on {}; this is {}",
            host::HostId::describe(inst.machine_id.as_deref(), inst.boot_id.as_deref()),
            host::HostId::describe(
                host::current().machine_id.as_deref(),
                host::current().boot_id.as_deref()
            )
        );
        mark_lost(db, &inst.id, &why)?;
        return reload(db, &inst.id);
    }
    // The process is gone. A live monitor records its status within
    // moments; give it that long before recording an unknown exit.
    if inst.monitor_alive() {
        let id = inst.id.clone();
        let recorded = runtime::wait_until(Duration::from_secs(2), || {
            Ok(get(db.read(), &id)?.is_some_and(|i| !i.state.is_live()))
        })?;
        if recorded {
            return reload(db, &inst.id);
        }
    }
    record_exit(db, &inst.id, Exit::Unknown)?;
    reload(db, &inst.id)
}

/// Record that instance `id` is lost — its process, if any, is not one
/// this host can see or stop (another machine, an earlier boot, a restored
/// store) — as an exit nobody saw (`instance.lost`, naming `why`).
/// Returns `false` if it was not live.
pub fn mark_lost(db: &mut Db, id: &str, why: &str) -> Result<bool> {
    let change = Change {
        exit: Some(Exit::Unknown),
        ..Change::default()
    };
    db.write_freeing(|tx| {
        transition_in(
            tx,
            id,
            State::Exited,
            Some("instance.lost"),
            &change,
            Some(why),
        )
    })
}

/// The ledger action for an exit seen in state `from`: a stop the user
/// asked for, or an exit nobody asked for.
fn exit_action(from: State) -> &'static str {
    if from == State::Stopping {
        "instance.stop"
    } else {
        "instance.exit"
    }
}

fn reload(db: &Db, id: &str) -> Result<Instance> {
    get(db.read(), id)?.ok_or_else(|| Error::not_found(format!("instance {id}")))
}

/// Run an instance of `image_ref`, detached: returns once its process is
/// running (or with the reason it could not start). The deploy policy is
/// checked first ([`admit`]).
pub fn run(store: &mut Store, image_ref: &str, opts: &RunOptions) -> Result<Instance> {
    let image = admit(store, image_ref)?;
    see_dead_writers(store, opts)?;
    run_many(store, &image, image_ref, std::slice::from_ref(opts))?
        .pop()
        .expect("one instance asked for")
}

/// Before an ad-hoc instance writes a volume: record the exit of any
/// instance whose process died unseen, so a dead writer does not hold its
/// volume ([`volume`]). (Deploys refresh on every pass anyway.)
fn see_dead_writers(store: &mut Store, opts: &RunOptions) -> Result<()> {
    if opts.volumes.iter().any(|v| !v.read_only) {
        refresh(store.db_mut(), false)?;
    }
    Ok(())
}

/// What `drover run` must pass before anything is created: the store's
/// whole deploy policy ([`admit::image`]), a refusal ledgered. Returns
/// the digest that was checked, which is then what runs: the reference is
/// resolved once, so a tag moved after the check changes nothing.
fn admit(store: &mut Store, image_ref: &str) -> Result<Digest> {
    let image = store.resolve(image_ref)?.digest;
    admit::image(store, &image, Operation::Run)?;
    Ok(image)
}

/// Run instances of `image_ref` at once, one per entry of `each` (of one
/// service and release, or ad hoc; each with its own slot): their monitors
/// create the containers in parallel. One result per instance; an instance
/// that could not start leaves nothing behind.
///
/// This is how deploys and `serve`'s heals start instances of a release.
/// The image passes the whole deploy policy here too ([`admit::image`],
/// cached, a refusal ledgered), and a release's row must match the signed
/// ledger entry that created it ([`admit::release`]): whoever can write the
/// database can change the row.
pub fn run_many(
    store: &mut Store,
    image: &Digest,
    image_ref: &str,
    each: &[RunOptions],
) -> Result<Vec<Result<Instance>>> {
    admit::image(store, image, Operation::Run)?;
    let mut admitted = std::collections::BTreeSet::new();
    for opts in each {
        if let (Some(service), Some(number)) = (&opts.service, opts.release)
            && admitted.insert((service, number))
        {
            admit::release(store, service, number, image)?;
        }
    }
    refuse_drifted_root(store, image)?;
    let mut started = Vec::new();
    let mut out = Vec::new();
    for opts in each {
        match prepare::create(store, image, image_ref, opts) {
            Ok((inst, made)) => {
                let child = monitor::start(store.root(), &inst.id);
                started.push((inst, made, child));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    for (inst, made, child) in started {
        match child.and_then(|c| monitor::report(c, &inst.id)) {
            Ok(()) => out.push(reload(store.db(), &inst.id)),
            Err(e) => {
                discard(store, &inst, &made);
                out.push(Err(e));
            }
        }
    }
    Ok(out)
}

/// Run an instance in the foreground: this process is its monitor. Returns
/// when it has exited, with the instance as recorded then.
pub fn run_wait(store: &mut Store, image_ref: &str, opts: &RunOptions) -> Result<Instance> {
    let image = admit(store, image_ref)?;
    see_dead_writers(store, opts)?;
    refuse_drifted_root(store, &image)?;
    monitor::adopt_orphans()?;
    let (inst, made) = prepare::create(store, &image, image_ref, opts)?;
    let root = store.root().to_path_buf();
    match monitor::launch(&root, store.db_mut(), &inst) {
        Ok((pid, log)) => {
            monitor::watch(store.db_mut(), &inst.id, pid, log)?;
            reload(store.db(), &inst.id)
        }
        Err(e) => {
            discard(store, &inst, &made);
            Err(e)
        }
    }
}

/// Never start on a root drift found tampered: if a scan marked it, move
/// it aside (instances on it keep it) so `create` unpacks a fresh one from
/// the verified blobs.
fn refuse_drifted_root(store: &Store, image: &Digest) -> Result<()> {
    // Taint first, then drop the mark: a crash in between leaves the mark,
    // which costs one more (needless) unpack, never a reused root.
    if unpack::marked_drifted(store.layout(), image) {
        unpack::taint(store.layout(), image)?;
        unpack::take_drift_mark(store.layout(), image)?;
    }
    Ok(())
}

/// Undo a `create` whose instance never ran: nothing of it stays (runtime
/// state, bundle, the volumes it made, its row), and the ledger never
/// mentioned it. Files first, so the row's removal finds room on a full
/// disk (and the store's reserve, if it must).
fn discard(store: &mut Store, inst: &Instance, made: &prepare::Made) {
    let _ = runtime::driver(inst.driver, &runtime_root(store.root())).delete(&inst.id);
    made.undo(store);
    let _ = store
        .db_mut()
        .write_freeing(|tx| tx.delete_instance(&inst.id));
}

/// Stop an instance: its stop signal, then SIGKILL after `grace`. Returns
/// the instance as recorded afterwards.
pub fn stop(store: &mut Store, key: &str, grace: Duration) -> Result<Instance> {
    let found = find(store.db(), key)?;
    stop_many(store, &[found.id], grace).map(|mut v| v.pop().expect("one instance stopped"))
}

/// Stop several instances at once: every stop signal first, then wait for
/// each (SIGKILL after `grace`). Returns them as recorded afterwards.
pub fn stop_many(store: &mut Store, ids: &[String], grace: Duration) -> Result<Vec<Instance>> {
    let mut signalled = Vec::new();
    for id in ids {
        let found = find(store.db(), id)?;
        let inst = refresh_one(store.db_mut(), found)?;
        if !inst.state.is_live() {
            continue;
        }
        // Not a ledger entry of its own: the exit is recorded as `instance.stop`.
        transition(
            store.db_mut(),
            &inst.id,
            State::Stopping,
            None,
            Change::default(),
        )?;
        let driver = runtime::driver(inst.driver, &runtime_root(store.root()));
        driver.kill(&inst.id, inst.stop_signal)?;
        signalled.push(inst);
    }
    // One grace period for all of them, then SIGKILL for whoever is left.
    let deadline = std::time::Instant::now() + grace;
    for inst in &signalled {
        let driver = runtime::driver(inst.driver, &runtime_root(store.root()));
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let stopped = runtime::wait_until(left, || {
            Ok(driver
                .inspect(&inst.id)?
                .is_none_or(|s| s.status == runtime::Status::Stopped))
        })?;
        if !stopped {
            driver.stop(&inst.id, libc::SIGKILL, Duration::ZERO)?;
        }
        // The monitor records the exit status; wait for it (a refresh below
        // covers a monitor that is gone).
        let db = store.db_mut();
        runtime::wait_until(Duration::from_secs(5), || {
            Ok(get(db.read(), &inst.id)?.is_some_and(|i| !i.state.is_live()))
        })?;
    }
    let mut out = Vec::new();
    for id in ids {
        let inst = reload(store.db(), id)?;
        out.push(refresh_one(store.db_mut(), inst)?);
    }
    Ok(out)
}

/// Remove an instance: its container and bundle; its log moves to the
/// kept logs ([`log::keep`]). A live instance needs `force` (it is killed
/// first).
pub fn remove(store: &mut Store, key: &str, force: bool) -> Result<Instance> {
    let found = find(store.db(), key)?;
    let inst = refresh_one(store.db_mut(), found)?;
    if inst.state == State::Deleted {
        return Ok(inst);
    }
    if inst.state.is_live() {
        if !force {
            return Err(Error::Usage(format!(
                "instance {} is {}; stop it first or use --force",
                inst.id,
                inst.state.as_str()
            )));
        }
        stop(store, &inst.id, Duration::ZERO)?;
    }
    // A created instance is marked deleted first: a monitor that has not
    // claimed it yet then never will (see `claim`), and one at work keeps
    // it (the transition is refused).
    let created = inst.state == State::Created;
    if created && !delete_row(store, &inst)? {
        return Err(Error::Busy {
            what: format!("instance {}", inst.id),
            reason: "it is being started; try again in a moment".into(),
        });
    }
    let driver = runtime::driver(inst.driver, &runtime_root(store.root()));
    driver.delete(&inst.id)?;
    let bundle = inst.bundle(store.root());
    userns::detach(store.root(), &inst.id)?;
    // Its log outlives it, for the service's retention (best effort: a
    // removal must not fail for want of room).
    let _ = log::keep::keep(store.root(), &inst);
    match fs::remove_dir_all(&bundle) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove instance directory", bundle, e)),
    }
    if !created {
        delete_row(store, &inst)?;
    }
    userns::release(
        store.db_mut(),
        &userns::owner(inst.service.as_deref(), &inst.id),
    )?;
    reload(store.db(), &inst.id)
}

fn delete_row(store: &mut Store, inst: &Instance) -> Result<bool> {
    transition(
        store.db_mut(),
        &inst.id,
        State::Deleted,
        Some("instance.delete"),
        Change::default(),
    )
}

/// Clean up after `run`s killed part-way: detach instance views, give back
/// id ranges and remove instance directories that no recorded instance
/// holds. Needs the store opened exclusively (`gc`), so that no instance
/// is being created meanwhile. Returns how many instances' leftovers went.
pub fn collect_orphans(store: &mut Store) -> Result<usize> {
    if !store.is_exclusive() {
        return Err(Error::Busy {
            what: "store".into(),
            reason: "collecting orphaned instance views needs the store opened exclusively".into(),
        });
    }
    let rows = list(store.db(), true)?;
    let live: Vec<String> = rows
        .iter()
        .filter(|i| i.state != State::Deleted)
        .map(|i| i.id.clone())
        .collect();
    let root = store.root().to_path_buf();
    let mut gone = userns::sweep(store.db_mut(), &root, &live)?;
    let dir = root.join("instances");
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&id) && e.path().is_dir() {
                // Its views, if any, are detached above: nothing is mounted here.
                let path = e.path();
                fs::remove_dir_all(&path).ctx("remove orphaned instance directory", &path)?;
                gone += 1;
            }
        }
    }
    Ok(gone)
}

/// A monitor takes charge of a created instance. `false` if it was removed
/// meanwhile, or another monitor has it.
pub(crate) fn claim(db: &mut Db, id: &str, pid: u32, start: Option<u64>) -> Result<bool> {
    db.write(|tx| {
        let claimed = tx.claim_instance(id, pid, start)?;
        if claimed {
            let here = host::current();
            tx.set_instance_host(id, here.machine_id.as_deref(), here.boot_id.as_deref())?;
        }
        Ok(claimed)
    })
}

/// Print instance `key`'s log (its rotated files, then the current one) to
/// `out`; with `follow`, keep printing as it grows, across rotations,
/// until the instance has exited. (`drover logs` takes more: [`log::read`].)
pub fn logs(
    store: &mut Store,
    key: &str,
    follow: bool,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let req = log::read::Request {
        target: find(store.db(), key)?.id,
        follow,
        ..Default::default()
    };
    log::read::show(store, &req, out)
}

#[cfg(test)]
mod tests;
