//! The monitor: the process that owns one running instance.
//!
//! `drover run` starts it as `drover __monitor <id>` in its own session (so
//! the terminal's signals and the CLI's exit don't reach it). It creates and
//! starts the container through the instance's driver, records it running,
//! tells the CLI over a pipe ("ok" or the error), then waits for the
//! container's init process and records how it exited. It is the init
//! process's parent — directly for the embedded runtime, by adoption as a
//! child subreaper when `runc create` exits — so it alone can learn the exit
//! status. It holds no store lock, so `gc` never waits for instances.
//!
//! Its own log (`tracing` events: started, exited, and at `DROVER_LOG=debug`
//! libcontainer's, which creates the container here) goes to
//! [`log_path`], in the format of the process that started it
//! ([`pass_env`]): its stdout is the pipe to the CLI, and its stderr
//! nobody's once it reported.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::{Change, Exit, Instance, State, log, record_exit, runtime_root, transition};
use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;
use crate::runtime;
use crate::state::{self, Db};
use tracing::{info, warn};

/// The hidden subcommand the binary routes to [`main`].
pub const SUBCOMMAND: &str = "__monitor";

/// Environment variables every monitor started from now on gets, beyond
/// this process's own: the binary's log settings (`serve --log-format`).
static PASSED_ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Give the monitors this process starts the variables `vars` (once; later
/// calls change nothing), so they log as it does.
pub fn pass_env(vars: Vec<(String, String)>) {
    let _ = PASSED_ENV.set(vars);
}

/// Where the monitor of instance `id` logs: beside the instance's own log.
pub fn log_path(store_root: &Path, id: &str) -> PathBuf {
    super::bundle_dir(store_root, id).join("monitor.log")
}

/// Start the monitor of instance `id`; [`report`] then waits for its word.
pub fn start(store_root: &Path, id: &str) -> Result<Child> {
    let mut exe =
        std::env::current_exe().ctx("find the drover binary", Path::new("/proc/self/exe"))?;
    // Replaced by an upgrade (renamed over): this process's own binary is
    // still reachable through /proc until it hands over.
    if exe.to_string_lossy().ends_with(" (deleted)") {
        exe = "/proc/self/exe".into();
    }
    Command::new(&exe)
        .arg("--store")
        .arg(store_root)
        .arg(SUBCOMMAND)
        .arg(id)
        .envs(PASSED_ENV.get().into_iter().flatten().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ctx("start the instance monitor", &exe)
}

/// Wait until the monitor `child` of instance `id` reports the instance
/// running, or why it could not start.
pub fn report(mut child: Child, id: &str) -> Result<()> {
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    BufReader::new(stdout).read_line(&mut line).ctx(
        "read the instance monitor's report",
        Path::new("<monitor pipe>"),
    )?;
    // The monitor stays running; don't leave a zombie behind if this
    // process lives on (a daemon or a test).
    std::thread::spawn(move || child.wait());
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ok" => Ok(()),
        Some(message) => Err(Error::Failed(message.to_string())),
        None => Err(Error::Failed(format!(
            "instance {id}: its monitor exited before reporting (got {:?})",
            line.trim_end()
        ))),
    }
}

/// The monitor process: see the module docs. Its stdout is the pipe to the
/// CLI that spawned it.
pub fn main(store_root: &Path, id: &str) -> Result<()> {
    // Own session: no controlling terminal, no signals from the CLI's.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::Failed(format!("instance {id}: cannot become a subreaper: {e}")))?;
    // After an upgrade the database may be newer than this binary.
    let mut db =
        state::location::resolve(store_root, None).and_then(|loc| Db::open_for_monitor(&loc));
    let launched = match &mut db {
        Ok(db) => super::reload(db, id).and_then(|inst| launch(store_root, db, &inst)),
        Err(e) => Err(Error::Failed(e.to_string())),
    };
    // `launch` reset SIGPIPE for the container's sake; if the CLI that
    // started us is gone, the report must fail quietly, not kill us.
    crate::sys::ignore_sigpipe();
    let mut out = std::io::stdout();
    let report = match &launched {
        Ok(_) => "ok\n".to_string(),
        Err(e) => format!("error: {}\n", e.to_string().replace('\n', " ")),
    };
    let _ = out.write_all(report.as_bytes()).and_then(|()| out.flush());
    // Nobody reads our output any more.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 2);
    }
    let (pid, log) = match launched {
        Ok(l) => l,
        Err(e) => {
            warn!(instance = %id, error = %e, "the instance could not start");
            return Err(e);
        }
    };
    info!(instance = %id, pid, "instance started");
    let mut db = db?;
    // Nothing to write until the instance exits: hold no server connection
    // meanwhile (PostgreSQL's max_connections would bound the instances).
    db.park();
    watch(&mut db, id, pid, log)
}

/// Create and start the container of `inst` and record it running, with
/// this process as its monitor. Returns the init pid and the pump that
/// copies its output into its log. On failure nothing of the container is
/// left.
pub fn launch(store_root: &Path, db: &mut Db, inst: &Instance) -> Result<(u32, log::Pump)> {
    let limits = Limits::from_env()?;
    // Two pipes, so each line is told apart by its stream.
    let (out_r, out_w) = log::pipe()?;
    let (err_r, err_w) = log::pipe()?;
    // The container's user owns its output pipes, so it may reopen
    // /dev/stdout and /dev/stderr (/proc/self/fd/1, 2) as programs do
    // (nginx's `error_log /dev/stderr`); a pipe is otherwise its
    // creator's, mode 0600. Ids as the host sees them.
    let shift = inst.launch.userns.map_or(0, |m| m.host);
    for pipe in [&out_w, &err_w] {
        nix::unistd::fchown(
            pipe.as_raw_fd(),
            Some(nix::unistd::Uid::from_raw(shift + inst.launch.uid)),
            Some(nix::unistd::Gid::from_raw(shift + inst.launch.gid)),
        )
        .map_err(std::io::Error::from)
        .ctx(
            "give the log pipe to the instance's user",
            Path::new("<pipe>"),
        )?;
    }
    let null = std::fs::File::open("/dev/null").ctx("open", Path::new("/dev/null"))?;
    // Only the container may hold the write ends: the log ends when it does.
    let stdio = (null, std::fs::File::from(out_w), std::fs::File::from(err_w));
    let pid = launch_with(store_root, db, inst, stdio)?;
    let policy = inst.launch.logs.unwrap_or_default();
    let log = log::Pump::start(
        out_r,
        err_r,
        runtime::log_path(&inst.bundle(store_root)),
        policy.max_size.unwrap_or(limits.log_bytes),
        policy.max_files.unwrap_or(limits.log_files),
    );
    Ok((pid, log))
}

/// Create and start the container of `inst` with `stdio` as its stdin,
/// stdout and stderr, and record it running, with this process as its
/// monitor. Returns the init pid. On failure nothing of the container is
/// left. (`launch` gives it a log; a debug session its own terminal.)
pub(super) fn launch_with(
    store_root: &Path,
    db: &mut Db,
    inst: &Instance,
    stdio: runtime::Stdio,
) -> Result<u32> {
    let me = std::process::id();
    if !super::claim(db, &inst.id, me, runtime::start_time(me))? {
        return Err(Error::Failed(format!(
            "instance {}: removed before it could start",
            inst.id
        )));
    }
    // The container's process inherits ignored signals from this one.
    crate::sys::reset_ignored_signals();
    let driver = runtime::driver(inst.driver, &runtime_root(store_root));
    let bundle = inst.bundle(store_root);
    let started = driver
        .create_with(&inst.id, &bundle, stdio)
        .and_then(|pid| driver.start(&inst.id).map(|()| pid));
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            let _ = driver.delete(&inst.id);
            return Err(e);
        }
    };
    let recorded = transition(
        db,
        &inst.id,
        State::Running,
        Some("instance.start"),
        Change {
            pid: Some((pid, runtime::start_time(pid))),
            monitor: Some((me, runtime::start_time(me))),
            exit: None,
        },
    );
    if !matches!(recorded, Ok(true)) {
        // Removed meanwhile, or the database failed: nothing may run that
        // the state does not show.
        let _ = driver.delete(&inst.id);
        return Err(recorded.err().unwrap_or_else(|| {
            Error::Failed(format!("instance {}: removed while it started", inst.id))
        }));
    }
    Ok(pid)
}

/// Wait for the instance's init process `pid` and record its exit, once its
/// output is in its log (so `logs -f`, which stops at the exit, sees it all).
pub fn watch(db: &mut Db, id: &str, pid: u32, log: log::Pump) -> Result<()> {
    let exit = wait_for(pid);
    info!(instance = %id, pid, exit = %exit, "instance exited");
    // The pipe closes when the container's last process is gone, which
    // follows its init's exit at once (its PID namespace dies with it).
    log.finish(Duration::from_secs(5));
    record_exit_patiently(db, id, exit, RECORD_PATIENCE)
}

/// How long a monitor keeps trying to reach the state database to record
/// its instance's exit before it gives up (`serve` then finds the instance
/// gone by its pid).
const RECORD_PATIENCE: Duration = Duration::from_secs(3600);

/// Record the exit; while the database server is out of reach (restarted,
/// down), retry with back-off, saying so in the monitor's log, for up to
/// `patience`. Other errors are not retried.
pub(super) fn record_exit_patiently(
    db: &mut Db,
    id: &str,
    exit: Exit,
    patience: Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(500);
    let mut waited = false;
    loop {
        match record_exit(db, id, exit) {
            Ok(_) => {
                if waited {
                    info!(instance = %id, "the state database answers again; the exit is recorded");
                }
                return Ok(());
            }
            Err(e) if state::is_unreachable(&e) && std::time::Instant::now() < deadline => {
                warn!(
                    instance = %id,
                    error = %e,
                    retry_in_ms = pause.as_millis() as u64,
                    "cannot reach the state database to record the exit; retrying"
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(30));
                waited = true;
            }
            Err(e) => {
                warn!(instance = %id, error = %e, "cannot record the exit");
                return Err(e);
            }
        }
    }
}

pub(super) fn wait_for(pid: u32) -> Exit {
    let target = Pid::from_raw(pid as i32);
    loop {
        // Any child: as a subreaper we also adopt the container's orphans
        // until its init exits, and must reap them.
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p == target => return Exit::Code(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == target => return Exit::Signal(sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => {
                // Not our child after all (adoption failed): all we can do
                // is watch it disappear.
                while runtime::alive(pid) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return Exit::Unknown;
            }
        }
    }
}

/// Make this process a child subreaper, so a foreground `run` can wait for
/// an init process that `runc create` leaves behind.
pub fn adopt_orphans() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::Failed(format!("cannot become a subreaper: {e}")))
}
