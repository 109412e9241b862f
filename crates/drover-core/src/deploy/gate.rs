//! Health gates: has a new instance become healthy, is it still on its way,
//! or has it failed? Probes run from drover against the instance (HTTP and
//! TCP on loopback: instances use the host network) or inside it (exec,
//! through the driver).
//!
//! Until its first success an instance is probed often (after 10 ms, then
//! backing off to every 250 ms, or the interval if shorter), so a rollout
//! never waits a whole interval for a server that is already up. It fails when its process exits, when it
//! has failed `retries` probes in a row spaced at least `interval` apart
//! after its start period, or when its deadline passes.
//!
//! Passing its gate puts an instance in traffic, but does not make it
//! healthy yet: it must then stay up and passing for the service's
//! `min_healthy` ([`Window`]), probed at the check's interval. An instance
//! that exits inside that window, or fails `retries` probes in a row, fails
//! the release exactly like a failed gate (a crash a few seconds after
//! ready is a bad release, not a healthy one).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::health::{HealthCheck, Probe};
use crate::instance::{self, Instance};
use crate::runtime;

/// Runs a command inside the instance: its exit code, or why it could not.
pub type Exec<'a> = dyn FnMut(&[String], Duration) -> Result<i32, String> + 'a;

/// Where a gate stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Pending,
    /// Why, for the user: the check, what it saw, for how long.
    Failed(String),
}

/// The health gate of one new instance.
#[derive(Debug)]
pub struct Gate {
    /// `None`: the release has no health check; running counts as healthy.
    check: Option<HealthCheck>,
    deadline: Duration,
    port: u16,
    started: Instant,
    next_probe: Instant,
    /// Pause before the next probe while not yet healthy.
    pause: Duration,
    /// Failures counted at interval spacing after the start period.
    strikes: u32,
    last_strike: Option<Instant>,
    last_error: String,
    /// Time spent probing (for the benchmark's overhead split).
    pub probing: Duration,
    /// Each probe's result and time, until [`Gate::take_probed`].
    probed: Vec<(bool, Duration)>,
}

/// Describe a check for messages: `http GET :8080/healthz`.
pub fn describe(check: &HealthCheck, port: u16) -> String {
    match &check.probe {
        Probe::Http { port: p, path } => format!("http GET :{}{path}", p.unwrap_or(port)),
        Probe::Tcp { port: p } => format!("tcp connect :{}", p.unwrap_or(port)),
        Probe::Exec { command } => format!("exec {}", command.join(" ")),
    }
}

impl Gate {
    pub fn new(check: Option<HealthCheck>, deadline: Duration, port: u16) -> Gate {
        let now = Instant::now();
        Gate {
            check,
            deadline,
            port,
            started: now,
            next_probe: now,
            pause: Duration::from_millis(10),
            strikes: 0,
            last_strike: None,
            last_error: "not probed yet".into(),
            probing: Duration::ZERO,
            probed: Vec::new(),
        }
    }

    /// The probes since the last call: whether each passed, how long it took
    /// (serve counts them in its metrics).
    pub fn take_probed(&mut self) -> Vec<(bool, Duration)> {
        std::mem::take(&mut self.probed)
    }

    /// Probe if it is time, and say where the instance stands. `alive`:
    /// whether its process still runs; `exec` runs a command inside it and
    /// returns its exit code.
    pub fn poll(&mut self, alive: bool, exec: &mut Exec<'_>) -> Verdict {
        let Some(check) = self.check.clone() else {
            return if alive {
                Verdict::Healthy
            } else {
                Verdict::Failed("its process exited (it has no health check)".into())
            };
        };
        let what = describe(&check, self.port);
        if !alive {
            return Verdict::Failed(format!(
                "its process exited before passing its health check ({what}; last result: {})",
                self.last_error
            ));
        }
        let now = Instant::now();
        if now < self.next_probe {
            return self.pending_or_late(now, &what);
        }
        let timeout = Duration::from_millis(check.timeout_ms);
        let t = Instant::now();
        let result = probe(&check.probe, self.port, timeout, exec);
        self.probing += t.elapsed();
        self.probed.push((result.is_ok(), t.elapsed()));
        let interval = Duration::from_millis(check.interval_ms);
        self.next_probe = Instant::now() + self.pause;
        self.pause = (self.pause * 2).min(interval.min(Duration::from_millis(250)));
        match result {
            Ok(()) => return Verdict::Healthy,
            Err(e) => self.last_error = e,
        }
        let start_period = Duration::from_millis(check.start_period_ms);
        if now.duration_since(self.started) >= start_period
            && self
                .last_strike
                .is_none_or(|t| now.duration_since(t) >= interval)
        {
            self.strikes += 1;
            self.last_strike = Some(now);
            if self.strikes >= check.retries {
                return Verdict::Failed(format!(
                    "health check {what} failed {} times in a row, {} apart: {}",
                    self.strikes,
                    crate::grammar::format_duration(check.interval_ms),
                    self.last_error
                ));
            }
        }
        self.pending_or_late(now, &what)
    }

    fn pending_or_late(&self, now: Instant, what: &str) -> Verdict {
        if now.duration_since(self.started) > self.deadline {
            Verdict::Failed(format!(
                "not healthy within its deadline of {} ({what}; last result: {})",
                crate::grammar::format_duration(self.deadline.as_millis() as u64),
                self.last_error
            ))
        } else {
            Verdict::Pending
        }
    }
}

/// The stability window of one instance that passed its gate: it counts as
/// healthy once it stayed up and passing until `until`.
#[derive(Debug)]
pub struct Window {
    check: Option<HealthCheck>,
    port: u16,
    /// When it passed its gate.
    since: Instant,
    until: Instant,
    next_probe: Instant,
    failures: u32,
    probed: Vec<(bool, Duration)>,
}

impl Window {
    /// The window of an instance that passed its gate at `since` (earlier
    /// than now when another process saw it pass), for `length`.
    pub fn new(check: Option<HealthCheck>, port: u16, since: Instant, length: Duration) -> Window {
        let interval = check
            .as_ref()
            .map_or(Duration::ZERO, |c| Duration::from_millis(c.interval_ms));
        Window {
            check,
            port,
            since,
            until: since + length,
            next_probe: Instant::now() + interval,
            failures: 0,
            probed: Vec::new(),
        }
    }

    /// The probes since the last call, as [`Gate::take_probed`].
    pub fn take_probed(&mut self) -> Vec<(bool, Duration)> {
        std::mem::take(&mut self.probed)
    }

    /// Whether the window is over with nothing wrong ([`Verdict::Healthy`]),
    /// still open, or failed: the process exited (`alive` false), or the
    /// check failed `retries` times in a row. Probes at the check's interval.
    pub fn poll(&mut self, alive: bool, exec: &mut Exec<'_>) -> Verdict {
        let length = self.until.saturating_duration_since(self.since);
        let after = || {
            format!(
                "{:.1} s after passing its health check, within the {} it must stay healthy \
                 (min_healthy)",
                self.since.elapsed().as_secs_f64(),
                crate::grammar::format_duration(length.as_millis() as u64)
            )
        };
        if !alive {
            return Verdict::Failed(format!("its process exited {}", after()));
        }
        let now = Instant::now();
        if let Some(check) = &self.check
            && now >= self.next_probe
        {
            let timeout = Duration::from_millis(check.timeout_ms);
            let t = Instant::now();
            let result = probe(&check.probe, self.port, timeout, exec);
            self.probed.push((result.is_ok(), t.elapsed()));
            self.next_probe = Instant::now() + Duration::from_millis(check.interval_ms.max(10));
            match result {
                Ok(()) => self.failures = 0,
                Err(e) => {
                    self.failures += 1;
                    if self.failures >= check.retries.max(1) {
                        return Verdict::Failed(format!(
                            "health check {} failed {} time(s) in a row {}: {e}",
                            describe(check, self.port),
                            self.failures,
                            after()
                        ));
                    }
                }
            }
        }
        if Instant::now() >= self.until && self.failures == 0 {
            Verdict::Healthy
        } else {
            Verdict::Pending
        }
    }

    /// How long until the window can end.
    pub fn remaining(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }
}

/// The [`Exec`] of instance `i` of the store at `store_root`: runs a
/// command inside it through its own driver.
pub fn exec_in(
    store_root: &Path,
    i: &Instance,
) -> impl FnMut(&[String], Duration) -> Result<i32, String> + use<> {
    let driver = runtime::driver(i.driver, &instance::runtime_root(store_root));
    let id = i.id.clone();
    move |args: &[String], timeout: Duration| {
        driver.exec(&id, args, timeout).map_err(|e| e.to_string())
    }
}

/// Probe instance `i` (of the store at `store_root`) once: `Ok` when
/// healthy; else what was seen.
pub fn probe_instance(
    store_root: &Path,
    i: &Instance,
    p: &Probe,
    timeout: Duration,
) -> Result<(), String> {
    probe(p, i.port.unwrap_or(0), timeout, &mut exec_in(store_root, i))
}

/// One probe. `Ok` when healthy; else what was seen.
pub fn probe(
    probe: &Probe,
    instance_port: u16,
    timeout: Duration,
    exec: &mut Exec<'_>,
) -> Result<(), String> {
    match probe {
        Probe::Tcp { port } => connect(port.unwrap_or(instance_port), timeout).map(drop),
        Probe::Http { port, path } => {
            let port = port.unwrap_or(instance_port);
            let mut s = connect(port, timeout)?;
            s.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: drover-health\r\nConnection: close\r\n\r\n"
            );
            s.write_all(request.as_bytes())
                .map_err(|e| format!("sending the request: {e}"))?;
            // The status line is all we need.
            let mut head = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                match s.read(&mut head[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return Err(format!("reading the response: {e}")),
                }
            }
            let line = String::from_utf8_lossy(&head[..n]);
            let code: Option<u16> = line
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|c| c.parse().ok());
            match code {
                Some(c) if (200..400).contains(&c) => Ok(()),
                Some(c) => Err(format!("HTTP {c}")),
                None => Err(format!(
                    "not an HTTP response: {:?}",
                    line.lines().next().unwrap_or("")
                )),
            }
        }
        Probe::Exec { command } => match exec(command, timeout)? {
            0 => Ok(()),
            code => Err(format!("exit code {code}")),
        },
    }
}

fn connect(port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect to :{port}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(probe: Probe, retries: u32) -> HealthCheck {
        HealthCheck {
            probe,
            interval_ms: 50,
            timeout_ms: 50,
            retries,
            start_period_ms: 0,
            deadline_ms: None,
        }
    }

    fn no_exec() -> impl FnMut(&[String], Duration) -> Result<i32, String> {
        |_, _| Err("no exec here".into())
    }

    /// A one-shot HTTP server answering `status` to every request.
    fn server(status: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        port
    }

    #[test]
    fn http_2xx_and_3xx_pass_others_fail_with_the_status() {
        let t = Duration::from_secs(1);
        let http = |port| Probe::Http {
            port: Some(port),
            path: "/".into(),
        };
        assert_eq!(probe(&http(server("200 OK")), 0, t, &mut no_exec()), Ok(()));
        assert_eq!(
            probe(&http(server("302 Found")), 0, t, &mut no_exec()),
            Ok(())
        );
        assert_eq!(
            probe(&http(server("404 Not Found")), 0, t, &mut no_exec()),
            Err("HTTP 404".into())
        );
        // Without a port of its own, the probe uses the instance's.
        let port = server("204 No Content");
        let own = Probe::Http {
            port: None,
            path: "/x".into(),
        };
        assert_eq!(probe(&own, port, t, &mut no_exec()), Ok(()));
    }

    #[test]
    fn tcp_and_exec_probes() {
        let t = Duration::from_millis(200);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            probe(&Probe::Tcp { port: None }, port, t, &mut no_exec()),
            Ok(())
        );
        drop(l);
        assert!(probe(&Probe::Tcp { port: None }, port, t, &mut no_exec()).is_err());
        let exec = Probe::Exec {
            command: vec!["check".into()],
        };
        assert_eq!(probe(&exec, 0, t, &mut |_, _| Ok(0)), Ok(()));
        assert_eq!(
            probe(&exec, 0, t, &mut |_, _| Ok(3)),
            Err("exit code 3".into())
        );
    }

    #[test]
    fn a_gate_fails_after_its_retries_and_names_the_check() {
        let port = server("500 Internal Server Error");
        let mut g = Gate::new(
            Some(check(
                Probe::Http {
                    port: None,
                    path: "/h".into(),
                },
                2,
            )),
            Duration::from_secs(10),
            port,
        );
        let started = Instant::now();
        let verdict = loop {
            match g.poll(true, &mut no_exec()) {
                Verdict::Pending => std::thread::sleep(Duration::from_millis(5)),
                v => break v,
            }
        };
        let Verdict::Failed(why) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(
            why.contains("http GET :") && why.contains("/h") && why.contains("HTTP 500"),
            "{why}"
        );
        // Two strikes an interval apart: at least one interval, well before the deadline.
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_dead_process_or_a_passed_deadline_fails_the_gate() {
        let mut g = Gate::new(
            Some(check(Probe::Tcp { port: Some(1) }, 1000)),
            Duration::ZERO,
            0,
        );
        assert!(
            matches!(g.poll(false, &mut no_exec()), Verdict::Failed(w) if w.contains("exited"))
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            matches!(g.poll(true, &mut no_exec()), Verdict::Failed(w) if w.contains("deadline"))
        );
        let port = server("200 OK");
        let mut g = Gate::new(
            Some(check(
                Probe::Http {
                    port: None,
                    path: "/".into(),
                },
                1,
            )),
            Duration::from_secs(5),
            port,
        );
        assert_eq!(g.poll(true, &mut no_exec()), Verdict::Healthy);
        let mut g = Gate::new(None, Duration::ZERO, 0);
        assert_eq!(g.poll(true, &mut no_exec()), Verdict::Healthy);
    }
}
