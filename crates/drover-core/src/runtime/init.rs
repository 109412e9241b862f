//! The embedded runtime's init: a tiny PID 1 in front of the entrypoint,
//! for instances whose config carries [`INIT_ANNOTATION`].
//!
//! A program that is PID 1 of its namespace gets no default signal
//! actions (a shell loop ignores SIGTERM and only SIGKILL ends it, after
//! the whole grace period) and inherits every orphan, which it may never
//! reap. So the container's process forks: the child execs the entrypoint
//! in a process group of its own, and the parent stays PID 1: it reaps
//! every child, forwards [`FORWARDED`] signals to the entrypoint's group,
//! and exits with the entrypoint's status (128 + n when signal n killed
//! it), which ends the namespace. No binary enters the image: this code
//! runs in libcontainer's init process, as its workload executor.

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, setpgid};
use oci_spec::runtime::Spec;

use super::spec::INIT_ANNOTATION;

/// What the init passes on to the entrypoint's process group.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// libcontainer's executor, with the init when the config asks for it.
#[derive(Clone)]
pub(super) struct WithInit;

impl Executor for WithInit {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if !wants_init(spec) {
            return DefaultExecutor {}.exec(spec);
        }
        let mut signals = SigSet::empty();
        for s in FORWARDED {
            signals.add(*s);
        }
        signals.add(Signal::SIGCHLD);
        // Blocked before the fork, so nothing sent meanwhile is lost: a
        // blocked signal is queued even for PID 1, and `wait` takes it.
        let mut old = SigSet::empty();
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), Some(&mut old))
            .map_err(|e| ExecutorError::Other(format!("init: block signals: {e}")))?;
        match crate::sys::fork_single_threaded() {
            Err(e) => Err(ExecutorError::Other(format!("init: fork: {e}"))),
            Ok(ForkResult::Child) => {
                let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                // Returns only on failure; libcontainer reports it.
                DefaultExecutor {}.exec(spec)
            }
            Ok(ForkResult::Parent { child }) => {
                // Both sides set the group, so a signal forwarded at once
                // finds it.
                let _ = setpgid(child, child);
                std::process::exit(supervise(child, &signals))
            }
        }
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

fn wants_init(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(INIT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// PID 1's loop: wait for a signal; forward it, or on SIGCHLD reap every
/// child that has exited. Returns the exit code once `child` has exited.
fn supervise(child: Pid, signals: &SigSet) -> i32 {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(child) {
                    return code;
                }
            }
            Ok(sig) => {
                // The group, else (it left it) the entrypoint alone.
                if kill(Pid::from_raw(-child.as_raw()), sig) == Err(Errno::ESRCH) {
                    let _ = kill(child, sig);
                }
            }
            Err(_) => {}
        }
    }
}

/// Reap every child that has exited; `child`'s exit code if it was one.
fn reap(child: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p == child => code = Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p == child => code = Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return code,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &[(&str, &str)]) -> Spec {
        let mut s = Spec::default();
        if !annotations.is_empty() {
            s.set_annotations(Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ));
        }
        s
    }

    #[test]
    fn only_a_config_that_asks_gets_the_init() {
        assert!(wants_init(&spec(&[(INIT_ANNOTATION, "true")])));
        assert!(!wants_init(&spec(&[(INIT_ANNOTATION, "false")])));
        assert!(!wants_init(&spec(&[("other", "true")])));
        assert!(!wants_init(&spec(&[])));
    }
}
