//! Health checks: how the deployer decides an instance is healthy.
//!
//! [`HealthCheck`] is written as a `[...health]` table in more than one TOML
//! format (`drover.toml`'s `[config.health]`, a fleet file's services) and
//! stored as JSON in the image label `vnd.drover.health`, so its serde form is
//! an interface: a field added here must not change the JSON of checks that
//! do not use it. `parse` reads the table; the formats differ only in
//! whether `deadline` is allowed (`Deadline`).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::grammar::format_duration;
use crate::toml_doc::{Checker, Kinded, Node, Table, Value};

/// How the deployer decides an instance is healthy. Stored as JSON in an image
/// label and read back at deploy time, so its serde form is an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval_ms: u64,
    /// At most `interval_ms`.
    pub timeout_ms: u64,
    /// Consecutive failures before the instance counts as unhealthy; at least 1.
    pub retries: u32,
    /// Failures during this long after start do not count.
    pub start_period_ms: u64,
    /// How long after start the instance has to become healthy; more than 0.
    /// Set only by formats that allow `deadline` (a fleet file's services),
    /// never by an image's, so image labels never carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// `GET http://<instance>:<port><path>` answers 2xx or 3xx. Without a
    /// port, the instance's own (`PORT`).
    Http {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        path: String,
    },
    /// A TCP connection to the port (default: the instance's) succeeds.
    Tcp {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    /// The command, run inside the container, exits 0. Never empty.
    Exec { command: Vec<String> },
}

impl Probe {
    /// The port the probe names, when it names one rather than taking each
    /// instance's own.
    pub fn fixed_port(&self) -> Option<u16> {
        match self {
            Probe::Http { port, .. } | Probe::Tcp { port } => *port,
            Probe::Exec { .. } => None,
        }
    }
}

/// Whether a format's health table may say `deadline`. Where it may not, the
/// key is unknown like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// `drover.toml`: an image does not decide how long a deploy waits.
    Refused,
    /// A fleet file's services.
    Allowed,
}

const DEFAULT_INTERVAL_MS: u64 = 10_000;
const DEFAULT_TIMEOUT_MS: u64 = 3_000;
const DEFAULT_RETRIES: u32 = 3;

const PROBE_KINDS: &[&str] = &["http", "tcp", "exec"];
const HTTP_KEYS: &[&str] = &[
    "kind",
    "port",
    "path",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
const TCP_KEYS: &[&str] = &[
    "kind",
    "port",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
const EXEC_KEYS: &[&str] = &[
    "kind",
    "command",
    "interval",
    "timeout",
    "retries",
    "start_period",
];
const DEADLINE: &str = "deadline";

/// Reads the health-check table `node`, whose dotted key path is `path`
/// (`config.health`). `kind` comes first and decides which other keys are
/// allowed; everything missing gets its default (10s interval, 3s timeout,
/// 3 retries, no start period, no deadline).
pub(crate) fn parse(
    c: &Checker<'_>,
    node: &Node,
    path: &str,
    deadline: Deadline,
) -> Result<HealthCheck> {
    let t = c.as_table(node, path)?;
    let kind = c.kind(&t, PROBE_KINDS, "health check")?;
    let with_deadline = |keys: &[&'static str]| -> Vec<&'static str> {
        let mut keys = keys.to_vec();
        if deadline == Deadline::Allowed {
            keys.push(DEADLINE);
        }
        keys
    };
    let all = with_deadline(&[HTTP_KEYS, EXEC_KEYS].concat());
    let kinded = Kinded {
        all: &all,
        what: format!("{kind:?} health check"),
    };
    let allowed = with_deadline(match kind {
        "http" => HTTP_KEYS,
        "tcp" => TCP_KEYS,
        _ => EXEC_KEYS,
    });
    c.check_keys(&t, &allowed, Some(&kinded))?;

    let probe = match kind {
        "http" | "tcp" => {
            let port = probe_port(c, &t)?;
            if kind == "tcp" {
                Probe::Tcp { port }
            } else {
                let path = match t.get("path") {
                    None => "/".to_string(),
                    Some(node) => {
                        let key = t.key("path");
                        let p = c.string(node, &key)?;
                        if !p.starts_with('/')
                            || p.chars().any(|ch| ch.is_whitespace() || ch.is_control())
                        {
                            return Err(c.err(
                                node.at(),
                                &key,
                                format!("{p:?} is not an HTTP path (expected a path starting with '/', without spaces, e.g. \"/healthz\")"),
                            ));
                        }
                        p.to_string()
                    }
                };
                Probe::Http { port, path }
            }
        }
        _ => {
            let node = c.required(
                &t,
                "command",
                "the command to run in the container, e.g. command = [\"/bin/check\"]",
            )?;
            let key = t.key("command");
            let command = c.strings(node, &key)?;
            if command.is_empty() {
                return Err(c.err(
                    node.at(),
                    &key,
                    "empty (expected the program and its arguments, e.g. [\"/bin/check\"])",
                ));
            }
            Probe::Exec { command }
        }
    };

    let interval = c.duration(&t, "interval")?;
    let timeout = c.duration(&t, "timeout")?;
    let start_period = c.duration(&t, "start_period")?;
    // Where `deadline` is refused, `check_keys` has already said so.
    let deadline = c.duration(&t, DEADLINE)?;
    for (name, d) in [
        ("interval", &interval),
        ("timeout", &timeout),
        (DEADLINE, &deadline),
    ] {
        if let Some((0, node)) = d {
            return Err(c.err(node.at(), &t.key(name), "must be longer than 0s"));
        }
    }
    let interval_ms = interval.map_or(DEFAULT_INTERVAL_MS, |(ms, _)| ms);
    // The default timeout fits what the user set: a probe ends before the
    // next one starts, so it is at most the interval.
    let timeout_ms = timeout.map_or(DEFAULT_TIMEOUT_MS.min(interval_ms), |(ms, _)| ms);
    if let Some((_, node)) = timeout
        && timeout_ms > interval_ms
    {
        let (interval_s, timeout_s) = (format_duration(interval_ms), format_duration(timeout_ms));
        return Err(c.err(
            node.at(),
            &t.key("timeout"),
            format!(
                "{timeout_s} is longer than the interval, {interval_s} (a probe must end before \
                 the next one starts)"
            ),
        ));
    }

    let retries = match t.get("retries") {
        None => DEFAULT_RETRIES,
        Some(node) => {
            let key = t.key("retries");
            let n = c.integer(node, &key)?;
            u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                c.err(
                    node.at(),
                    &key,
                    format!("{n} is not a retry count (expected at least 1)"),
                )
            })?
        }
    };

    Ok(HealthCheck {
        probe,
        interval_ms,
        timeout_ms,
        retries,
        start_period_ms: start_period.map_or(0, |(ms, _)| ms),
        deadline_ms: deadline.map(|(ms, _)| ms),
    })
}

/// `port`: 1-65535, or `None` for the instance's own.
fn probe_port(c: &Checker<'_>, t: &Table<'_>) -> Result<Option<u16>> {
    let Some(node) = t.get("port") else {
        return Ok(None);
    };
    let key = t.key("port");
    let Value::Integer(n) = node.value else {
        return Err(c.wrong_type(node, &key, "an integer port"));
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p >= 1)
        .map(Some)
        .ok_or_else(|| {
            c.err(
                node.at(),
                &key,
                format!("{n} is not a port (expected 1-65535)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::error::Error;
    use crate::toml_doc;

    /// A one-table document, `[svc.health]`, read the way a format would.
    fn health_of(text: &str, deadline: Deadline) -> Result<HealthCheck> {
        let (root, c) = toml_doc::parse(text, Path::new("fleet.toml"))?;
        let top = c.table(&root, "", &["svc"])?;
        let svc = c.table(c.required(&top, "svc", "a service")?, "svc", &["health"])?;
        let node = c.required(&svc, "health", "a health check")?;
        parse(&c, node, &svc.key("health"), deadline)
    }

    #[track_caller]
    fn fails(text: &str, deadline: Deadline, at: (usize, usize), key: &str, needle: &str) {
        match health_of(text, deadline) {
            Err(Error::Definition {
                line,
                column,
                key: Some(k),
                message,
                ..
            }) => {
                assert_eq!((line, column, k.as_str()), (at.0, at.1, key), "{message}");
                assert!(message.contains(needle), "{message:?} lacks {needle:?}");
            }
            other => panic!("expected a definition error, got {other:?}"),
        }
    }

    #[test]
    fn deadline_is_read_only_where_allowed() {
        let text = "[svc.health]\nkind = \"tcp\"\ndeadline = \"1m30s\"\n";
        let check = health_of(text, Deadline::Allowed).unwrap();
        assert_eq!(check.deadline_ms, Some(90_000));
        assert_eq!(check.probe, Probe::Tcp { port: None });
        fails(
            text,
            Deadline::Refused,
            (3, 1),
            "svc.health.deadline",
            "unknown key (expected one of: kind, port, interval, timeout, retries, start_period)",
        );
        let without = "[svc.health]\nkind = \"exec\"\ncommand = [\"/bin/true\"]\n";
        assert_eq!(
            health_of(without, Deadline::Allowed).unwrap().deadline_ms,
            None
        );
        assert_eq!(
            health_of(without, Deadline::Refused).unwrap().deadline_ms,
            None
        );
    }

    /// Regression (issue 19): `interval = "2s"` alone was refused as
    /// "shorter than the default timeout, 3s". The default fits it.
    #[test]
    fn the_default_timeout_fits_a_short_interval() {
        let check = |lines: &str| {
            health_of(
                &format!("[svc.health]\nkind = \"tcp\"\n{lines}\n"),
                Deadline::Allowed,
            )
        };
        let c = check("interval = \"2s\"").unwrap();
        assert_eq!((c.interval_ms, c.timeout_ms), (2_000, 2_000));
        let c = check("interval = \"20s\"").unwrap();
        assert_eq!((c.interval_ms, c.timeout_ms), (20_000, DEFAULT_TIMEOUT_MS));
        let c = check("").unwrap();
        assert_eq!(
            (c.interval_ms, c.timeout_ms),
            (DEFAULT_INTERVAL_MS, DEFAULT_TIMEOUT_MS)
        );
        // A timeout the user set longer than the interval is still refused.
        fails(
            "[svc.health]\nkind = \"tcp\"\ninterval = \"2s\"\ntimeout = \"3s\"\n",
            Deadline::Allowed,
            (4, 11),
            "svc.health.timeout",
            "3s is longer than the interval, 2s",
        );
    }

    #[test]
    fn bad_deadlines() {
        let with = |line: &str| format!("[svc.health]\nkind = \"http\"\n{line}\n");
        fails(
            &with("deadline = \"0s\""),
            Deadline::Allowed,
            (3, 12),
            "svc.health.deadline",
            "must be longer than 0s",
        );
        fails(
            &with("deadline = 30"),
            Deadline::Allowed,
            (3, 12),
            "svc.health.deadline",
            "add a unit",
        );
        fails(
            &with("deadline = \"soon\""),
            Deadline::Allowed,
            (3, 12),
            "svc.health.deadline",
            "is not a duration",
        );
        // Allowed, it is listed among the keys, and another kind's keys still
        // say so.
        fails(
            &with("dedline = \"1m\""),
            Deadline::Allowed,
            (3, 1),
            "svc.health.dedline",
            "unknown key (expected one of: kind, port, path, interval, timeout, retries, start_period, deadline)",
        );
        fails(
            "[svc.health]\nkind = \"tcp\"\npath = \"/\"\n",
            Deadline::Allowed,
            (3, 1),
            "svc.health.path",
            "not used by a \"tcp\" health check (expected one of: kind, port, interval, timeout, retries, start_period, deadline)",
        );
    }

    #[test]
    fn health_check_json_round_trips() {
        let check = HealthCheck {
            probe: Probe::Http {
                port: Some(8080),
                path: "/healthz".into(),
            },
            interval_ms: 5_000,
            timeout_ms: 2_000,
            retries: 3,
            start_period_ms: 0,
            deadline_ms: None,
        };
        let json = serde_json::to_string(&check).unwrap();
        assert_eq!(
            json,
            r#"{"probe":{"kind":"http","port":8080,"path":"/healthz"},"interval_ms":5000,"timeout_ms":2000,"retries":3,"start_period_ms":0}"#
        );
        assert_eq!(serde_json::from_str::<HealthCheck>(&json).unwrap(), check);
        let exec = Probe::Exec {
            command: vec!["/bin/true".into()],
        };
        let json = serde_json::to_string(&exec).unwrap();
        assert_eq!(json, r#"{"kind":"exec","command":["/bin/true"]}"#);
        assert_eq!(serde_json::from_str::<Probe>(&json).unwrap(), exec);
    }

    #[test]
    fn a_deadline_is_serialized_only_when_set() {
        let mut check = HealthCheck {
            probe: Probe::Tcp { port: None },
            interval_ms: 1_000,
            timeout_ms: 1_000,
            retries: 1,
            start_period_ms: 0,
            deadline_ms: None,
        };
        let without = serde_json::to_string(&check).unwrap();
        assert!(!without.contains("deadline"), "{without}");
        check.deadline_ms = Some(60_000);
        let json = serde_json::to_string(&check).unwrap();
        assert!(
            json.ends_with(r#","start_period_ms":0,"deadline_ms":60000}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<HealthCheck>(&json).unwrap(), check);
    }
}
