//! The fleet file (`fleet.toml`): the services that should run. Every error
//! names the file, line, column and key (`service.web.replicas`), like
//! `drover.toml`'s.
//!
//! ```toml
//! [service.web]
//! image = "web:1.0"            # a tag (pinned at apply time) or a digest
//!                              # or a registry image by digest, pulled by
//!                              # apply if the store lacks it:
//!                              # "registry.example.com/team/web@sha256:…"
//! insecure_registry = false    # plain HTTP to that registry; loopback only
//! replicas = 3                 # default 1
//! strategy = "rolling"         # rolling (default) | recreate | blue-green
//! max_surge = 1                # rolling only; default 1
//! max_unavailable = 0          # rolling only; default 0; not both 0
//! env = { MODE = "prod" }
//! ports = [8080]              # `drover serve` proxies these to every instance's PORT
//! proxy = "http"               # http (HTTP/1.1 and HTTP/2; default) | tcp
//! drain = "10s"                # how long a stopping instance may finish its requests
//! min_healthy = "10s"          # a new instance must stay up and passing this long
//!                              # after its check first passes to count as healthy;
//!                              # one that exits or fails inside fails the release
//! crash_loop = { restarts = 3, within = "5m" }
//!                              # `serve` rolls a healthy release back to the last
//!                              # stable one when its instances restart this often;
//!                              # crash_loop = false: only back off
//! volumes = ["data-{replica}:/var/lib/web", "assets:/srv/assets:ro"]
//!                              # name:/path (read-write, one writer), name:/path:ro,
//!                              # name:/path:shared (read-write; the program
//!                              # coordinates its writers), or a table:
//!                              # { name = "cache", target = "/data", shared = true }
//!                              # (also read_only = true). A read-write volume has
//!                              # one writer: never mounted by two instances at
//!                              # once, so with replicas > 1 give each replica its
//!                              # own: {replica} in the name is the replica's slot
//!                              # (0, 1, …), kept across deploys, rollbacks and
//!                              # heals. Such a service rolls stop-before-start
//!                              # (no surge; blue-green is refused).
//! tmpfs = ["/var/cache/web", { path = "/var/log/web", size = "16m" }]
//!                              # added to the image's [config] tmpfs (a path
//!                              # both name takes the size given here); each
//!                              # must be a directory in the image, or lie in
//!                              # /tmp or /run; default size 64m
//! memory = "256m"              # also cpus = 0.5, pids = 100, nofile = 4096
//! cap_add = ["CHOWN"]          # NET_BIND_SERVICE only with userns = false
//! driver = "embedded"          # or "runc"
//! userns = false               # run without a user namespace (container root
//! userns_reason = "…"          # is host root): only with a reason, ledgered
//! init = true                  # a tiny init as PID 1 (reaps zombies, forwards
//!                              # signals); default: on when the entrypoint is a
//!                              # shell (sh, bash, busybox sh …), else off
//! logs = { max_size = "10m", max_files = 5, keep = "7d", keep_instances = 10 }
//!                              # rotate each instance's log at max_size (default
//!                              # 16m), keeping max_files rotated files (default 3);
//!                              # a removed instance's log is kept for `keep`
//!                              # (default 7d), at most the newest keep_instances
//!                              # (default 10) of the service, then `gc` collects it
//! constraints = { zone = ["eu-1a", "eu-1b"], disk = "ssd" }
//!                              # on a fleet, only hosts whose labels (`serve --join
//!                              # --label zone=eu-1a`) match every one: the value,
//!                              # or one of the list
//! spread_by = "zone"           # on a fleet, spread replicas evenly over this label's
//!                              # values, then over hosts; hosts without it take none
//!
//! [service.web.health]         # overrides the image's check; see `health`
//! kind = "http"
//! path = "/healthz"
//! deadline = "30s"             # how long a new instance has to become healthy
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use super::placement::Constraints;
use super::plan::Strategy;
use super::spec::{CrashLoop, DEFAULT_DEADLINE_MS, DEFAULT_MIN_HEALTHY_MS, ProxyMode, ServiceSpec};
use super::traffic::DEFAULT_DRAIN_MS;
use crate::error::Result;
use crate::grammar;
use crate::health::{self, Deadline};
use crate::instance::VolumeSpec;
use crate::instance::volume::Part;
use crate::runtime::DriverKind;
use crate::runtime::spec::{Limits, LogPolicy, capability};
use crate::store::registry::Remote;
use crate::toml_doc::{self, Checker, Node, Table, Value};

const SERVICE_KEYS: &[&str] = &[
    "image",
    "insecure_registry",
    "replicas",
    "strategy",
    "max_surge",
    "max_unavailable",
    "env",
    "ports",
    "proxy",
    "drain",
    "min_healthy",
    "crash_loop",
    "volumes",
    "tmpfs",
    "memory",
    "cpus",
    "pids",
    "nofile",
    "cap_add",
    "driver",
    "userns",
    "userns_reason",
    "init",
    "logs",
    "constraints",
    "spread_by",
    "health",
];

/// Read and check the fleet file at `path`.
pub fn load(path: &Path) -> Result<Vec<ServiceSpec>> {
    let text = toml_doc::read(path, "a fleet file")?;
    parse(&text, path)
}

/// Check fleet `text` (from `file`, for messages). Services come sorted by name.
pub fn parse(text: &str, file: &Path) -> Result<Vec<ServiceSpec>> {
    let (root, c) = toml_doc::parse(text, file)?;
    let top = c.table(&root, "", &["service"])?;
    let node = c.required(&top, "service", "at least one [service.<name>] table")?;
    let services = c.as_table(node, "service")?;
    let mut out = Vec::new();
    let mut owner = std::collections::BTreeMap::new();
    // Every volume of the services read so far: (service, index, volume).
    let mut writers: Vec<(String, usize, VolumeSpec)> = Vec::new();
    for entry in services.entries {
        let path = services.key(&entry.key);
        if let Err(e) = grammar::name(&entry.key) {
            return Err(c.err(entry.key_at(), &path, format!("a service name: {e}")));
        }
        let svc = service(&c, &entry.key, &entry.node, &path)?;
        // A port claimed twice is named where the file claims it again.
        for (i, p) in svc.ports.iter().enumerate() {
            if let Some(other) = owner.insert(*p, svc.name.clone()) {
                return Err(c.err(
                    port_at(&entry.node, i),
                    &toml_doc::index_key(&toml_doc::child_key(&path, "ports"), i),
                    format!(
                        "port {p} is already claimed by service.{other} (a port routes to one service)"
                    ),
                ));
            }
        }
        // A volume written by one service is mounted by no other, unless
        // every writer says shared (templates compared as written: two
        // services with "data-{replica}" would share data-0).
        for (i, v) in svc.volumes.iter().enumerate() {
            let Some((other, j, w)) =
                writers
                    .iter()
                    .find(|(_, _, w): &&(String, usize, VolumeSpec)| {
                        w.name == v.name && w.access().conflicts(v.access())
                    })
            else {
                continue;
            };
            return Err(c.err(
                item_at(&entry.node, "volumes", i),
                &toml_doc::index_key(&toml_doc::child_key(&path, "volumes"), i),
                format!(
                    "volume {} is also mounted by service.{other} (volumes[{j}]) as {}, and \
                     here as {}: two instances never write a volume at once, unless every \
                     service that writes it declares it shared (\"{}:{}:shared\") because the \
                     programs coordinate their writers; or mount it :ro here",
                    v.name,
                    w.access().as_str(),
                    v.access().as_str(),
                    v.name,
                    v.target
                ),
            ));
        }
        for (i, v) in svc.volumes.iter().enumerate() {
            writers.push((svc.name.clone(), i, v.clone()));
        }
        out.push(svc);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Where the `i`th port of the service table `node` is written.
fn port_at(node: &Node, i: usize) -> usize {
    item_at(node, "ports", i)
}

/// Where the `i`th item of the array `key` of the service table `node` is
/// written (the table, if it cannot be found).
fn item_at(node: &Node, key: &str, i: usize) -> usize {
    let Value::Table(entries) = &node.value else {
        return node.at();
    };
    match entries.iter().find(|e| e.key == key).map(|e| &e.node.value) {
        Some(Value::Array(items)) => items.get(i).map_or(node.at(), Node::at),
        _ => node.at(),
    }
}

fn service(c: &Checker<'_>, name: &str, node: &Node, path: &str) -> Result<ServiceSpec> {
    let t = c.table(node, path, SERVICE_KEYS)?;
    let image = c
        .string(
            c.required(&t, "image", "the image to run, e.g. image = \"web:1.0\"")?,
            &t.key("image"),
        )?
        .to_string();
    let (registry, insecure_registry) = registry(c, &t, &image)?;
    let replicas = count(c, &t, "replicas", 1, 0)?;
    let strategy_name = match t.get("strategy") {
        Some(n) => c.string(n, &t.key("strategy"))?,
        None => "rolling",
    };
    let strategy = match strategy_name {
        "rolling" => {
            let max_surge = count(c, &t, "max_surge", 1, 0)?;
            let max_unavailable = count(c, &t, "max_unavailable", 0, 0)?;
            if max_surge == 0 && max_unavailable == 0 {
                let at = t
                    .get("max_surge")
                    .or(t.get("max_unavailable"))
                    .map_or(0, Node::at);
                return Err(c.err(
                    at,
                    &t.key("max_surge"),
                    "max_surge and max_unavailable are both 0: a rolling update could never start or stop anything",
                ));
            }
            Strategy::Rolling {
                max_surge,
                max_unavailable,
            }
        }
        "recreate" | "blue-green" => {
            for key in ["max_surge", "max_unavailable"] {
                if let Some(n) = t.get(key) {
                    return Err(c.err(
                        n.at(),
                        &t.key(key),
                        format!("only a \"rolling\" strategy takes {key}"),
                    ));
                }
            }
            if strategy_name == "recreate" {
                Strategy::Recreate
            } else {
                Strategy::BlueGreen
            }
        }
        other => {
            return Err(c.err(
                t.get("strategy").map_or(0, Node::at),
                &t.key("strategy"),
                format!("unknown strategy {other:?} (expected \"rolling\", \"recreate\" or \"blue-green\")"),
            ));
        }
    };
    let (env, secret_env) = match t.get("env") {
        Some(n) => env(c, n, &t.key("env"))?,
        None => Default::default(),
    };
    let mut ports = Vec::new();
    if let Some(n) = t.get("ports") {
        let key = t.key("ports");
        for (i, item) in c.array(n, &key, "an array of ports")?.iter().enumerate() {
            let k = toml_doc::index_key(&key, i);
            let Value::Integer(p) = item.value else {
                return Err(c.wrong_type(item, &k, "a port number"));
            };
            let p = u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                c.err(
                    item.at(),
                    &k,
                    format!("{p} is not a port (expected 1-65535)"),
                )
            })?;
            ports.push(p);
        }
    }
    let proxy = match t.get("proxy") {
        Some(n) => {
            let key = t.key("proxy");
            match c.string(n, &key)? {
                "http" => ProxyMode::Http,
                "tcp" => ProxyMode::Tcp,
                other => {
                    return Err(c.err(
                        n.at(),
                        &key,
                        format!("unknown proxy mode {other:?} (expected \"http\" or \"tcp\")"),
                    ));
                }
            }
        }
        None => ProxyMode::Http,
    };
    let drain_ms = match c.duration(&t, "drain")? {
        Some((ms, n)) if ms > 600_000 => {
            return Err(c.err(n.at(), &t.key("drain"), "at most \"10m\""));
        }
        Some((ms, _)) => ms,
        None => DEFAULT_DRAIN_MS,
    };
    let min_healthy_ms = match c.duration(&t, "min_healthy")? {
        Some((ms, n)) if ms > 3_600_000 => {
            return Err(c.err(n.at(), &t.key("min_healthy"), "at most \"1h\""));
        }
        Some((ms, _)) => ms,
        None => DEFAULT_MIN_HEALTHY_MS,
    };
    let crash_loop = crash_loop(c, &t)?;
    let logs = logs(c, &t)?;
    let constraints = constraints(c, &t)?;
    let spread_by = spread_by(c, &t)?;
    let volumes = volumes(c, &t, name, replicas, strategy)?;
    let tmpfs = match t.get("tmpfs") {
        Some(n) => crate::runtime::tmpfs::parse(c, n, &t.key("tmpfs"))?,
        None => Vec::new(),
    };
    let mut cap_add = Vec::new();
    if let Some(n) = t.get("cap_add") {
        let key = t.key("cap_add");
        for (i, item) in c
            .array(n, &key, "an array of capability names")?
            .iter()
            .enumerate()
        {
            let k = toml_doc::index_key(&key, i);
            let s = c.string(item, &k)?;
            let cap = capability(s)
                .ok_or_else(|| c.err(item.at(), &k, format!("unknown capability {s:?}")))?;
            cap_add.push(cap.to_string());
        }
    }
    let memory_bytes = match t.get("memory") {
        Some(n) => {
            let key = t.key("memory");
            let s = c.string(n, &key)?;
            Some(grammar::memory_limit(s).map_err(|e| c.err(n.at(), &key, e))?)
        }
        None => None,
    };
    let millicpus = match t.get("cpus") {
        Some(n) => {
            let key = t.key("cpus");
            let written = match n.value {
                Value::Float(f) => f.to_string(),
                Value::Integer(i) => i.to_string(),
                _ => return Err(c.wrong_type(n, &key, "a number of cores such as 0.5")),
            };
            Some(grammar::cpu_limit(&written).map_err(|e| c.err(n.at(), &key, e))?)
        }
        None => None,
    };
    let limits = Limits {
        memory_bytes,
        pids: limit(c, &t, "pids", grammar::pids_limit)?,
        millicpus,
        nofile: limit(c, &t, "nofile", grammar::nofile_limit)?,
    };
    let driver = match t.get("driver") {
        Some(n) => {
            let key = t.key("driver");
            match c.string(n, &key)? {
                "embedded" => DriverKind::Embedded,
                "runc" => DriverKind::Runc,
                other => {
                    return Err(c.err(
                        n.at(),
                        &key,
                        format!("unknown driver {other:?} (expected \"embedded\" or \"runc\")"),
                    ));
                }
            }
        }
        None => DriverKind::Embedded,
    };
    let userns_opt_out = userns_opt_out(c, &t)?;
    if userns_opt_out.is_none()
        && let Some(n) = t.get("cap_add")
        && cap_add.iter().any(|c| c == "CAP_NET_BIND_SERVICE")
    {
        return Err(c.err(
            n.at(),
            &t.key("cap_add"),
            "NET_BIND_SERVICE cannot work in a user namespace on the host network (the \
             host's network namespace checks host capabilities): listen on $PORT, or run \
             without one (userns = false, userns_reason = \"…\")",
        ));
    }
    let init = t
        .get("init")
        .map(|n| c.boolean(n, &t.key("init")))
        .transpose()?;
    let health = t
        .get("health")
        .map(|n| health::parse(c, n, &t.key("health"), Deadline::Allowed))
        .transpose()?;
    let deadline_ms = health
        .as_ref()
        .and_then(|h| h.deadline_ms)
        .unwrap_or(DEFAULT_DEADLINE_MS);
    Ok(ServiceSpec {
        name: name.to_string(),
        image,
        registry,
        insecure_registry,
        replicas,
        strategy,
        health,
        deadline_ms,
        env,
        secret_env,
        ports,
        proxy,
        drain_ms,
        min_healthy_ms,
        crash_loop,
        volumes,
        tmpfs,
        limits,
        cap_add,
        driver,
        userns_opt_out,
        init,
        logs,
        constraints,
        spread_by,
    })
}

/// `constraints = { zone = "eu-1a", disk = ["ssd", "nvme"] }`: each key a
/// host label, each value the label's value or a list of the values a host
/// may have.
fn constraints(c: &Checker<'_>, t: &Table<'_>) -> Result<Constraints> {
    let Some(n) = t.get("constraints") else {
        return Ok(Constraints::new());
    };
    let key = t.key("constraints");
    let expected = "a table of host labels, each a value or a list of values, such as \
                    { zone = [\"eu-1a\", \"eu-1b\"], disk = \"ssd\" }";
    let Value::Table(entries) = &n.value else {
        return Err(c.wrong_type(n, &key, expected));
    };
    let mut out = Constraints::new();
    for entry in entries {
        let k = toml_doc::child_key(&key, &entry.key);
        grammar::host_label(&entry.key).map_err(|e| c.err(entry.key_at(), &k, e))?;
        let value = |node: &Node, k: &str| -> Result<String> {
            let Value::String(v) = &node.value else {
                let mut e = format!(
                    "expected a label value such as \"eu-1a\", found {}",
                    node.type_name()
                );
                if matches!(
                    node.value,
                    Value::Integer(_) | Value::Float(_) | Value::Boolean(_)
                ) {
                    e.push_str(" (quote it)");
                }
                return Err(c.err(node.at(), k, e));
            };
            grammar::host_label_value(v).map_err(|e| c.err(node.at(), k, e))?;
            Ok(v.clone())
        };
        let mut values = std::collections::BTreeSet::new();
        match &entry.node.value {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(c.err(
                        entry.node.at(),
                        &k,
                        format!(
                            "an empty list matches no host: name the values a host's {} may \
                             have, or remove the constraint",
                            entry.key
                        ),
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    let ik = toml_doc::index_key(&k, i);
                    let v = value(item, &ik)?;
                    if !values.insert(v.clone()) {
                        return Err(c.err(item.at(), &ik, format!("{v:?} is listed twice")));
                    }
                }
            }
            _ => {
                values.insert(value(&entry.node, &k)?);
            }
        }
        out.insert(entry.key.clone(), values);
    }
    Ok(out)
}

/// `spread_by = "zone"`: the host label whose values the replicas spread
/// over.
fn spread_by(c: &Checker<'_>, t: &Table<'_>) -> Result<Option<String>> {
    let Some(n) = t.get("spread_by") else {
        return Ok(None);
    };
    let key = t.key("spread_by");
    let label = c.string(n, &key)?;
    grammar::host_label(label).map_err(|e| c.err(n.at(), &key, e))?;
    Ok(Some(label.to_string()))
}

/// `logs = { max_size = "10m", max_files = 5, keep = "7d", keep_instances = 10 }`,
/// each optional.
fn logs(c: &Checker<'_>, t: &Table<'_>) -> Result<LogPolicy> {
    let Some(n) = t.get("logs") else {
        return Ok(LogPolicy::default());
    };
    let key = t.key("logs");
    if !matches!(n.value, Value::Table(_)) {
        return Err(c.wrong_type(
            n,
            &key,
            "a table such as { max_size = \"10m\", max_files = 5, keep = \"7d\" }",
        ));
    }
    let lt = c.table(
        n,
        &key,
        &["max_size", "max_files", "keep", "keep_instances"],
    )?;
    let max_size = match lt.get("max_size") {
        Some(n) => {
            let k = lt.key("max_size");
            let s = c.string(n, &k)?;
            let v = grammar::size(s).map_err(|e| c.err(n.at(), &k, e))?;
            if !(4 << 10..=1 << 30).contains(&v) {
                return Err(c.err(n.at(), &k, "between \"4k\" and \"1g\""));
            }
            Some(v)
        }
        None => None,
    };
    let max_files = match lt.get("max_files") {
        Some(_) => Some(u64::from(count(c, &lt, "max_files", 0, 1)?)),
        None => None,
    };
    if let (Some(v), Some(n)) = (max_files, lt.get("max_files"))
        && v > 100
    {
        return Err(c.err(n.at(), &lt.key("max_files"), "at most 100"));
    }
    let keep_ms = match lt.get("keep") {
        Some(n) => {
            let k = lt.key("keep");
            let s = c.string(n, &k)?;
            Some(grammar::age_ms(s).map_err(|e| c.err(n.at(), &k, e))?)
        }
        None => None,
    };
    let keep_instances = match lt.get("keep_instances") {
        Some(_) => Some(count(c, &lt, "keep_instances", 0, 0)?),
        None => None,
    };
    Ok(LogPolicy {
        max_size,
        max_files,
        keep_ms,
        keep_instances,
    })
}

/// `crash_loop = { restarts = N, within = "5m" }`, `crash_loop = false`
/// (never roll back by itself), or the default.
fn crash_loop(c: &Checker<'_>, t: &Table<'_>) -> Result<CrashLoop> {
    let Some(n) = t.get("crash_loop") else {
        return Ok(CrashLoop::default());
    };
    let key = t.key("crash_loop");
    if let Value::Boolean(on) = n.value {
        return Ok(if on {
            CrashLoop::default()
        } else {
            CrashLoop {
                restarts: 0,
                ..CrashLoop::default()
            }
        });
    }
    if !matches!(n.value, Value::Table(_)) {
        return Err(c.wrong_type(
            n,
            &key,
            "a table such as { restarts = 3, within = \"5m\" }, or false",
        ));
    }
    let ct = c.table(n, &key, &["restarts", "within"])?;
    let restarts = count(c, &ct, "restarts", CrashLoop::default().restarts, 1)?;
    if restarts > 100 {
        let at = ct.get("restarts").map_or(n.at(), Node::at);
        return Err(c.err(at, &ct.key("restarts"), "at most 100"));
    }
    let within_ms = match c.duration(&ct, "within")? {
        Some((ms, w)) if !(1_000..=86_400_000).contains(&ms) => {
            return Err(c.err(w.at(), &ct.key("within"), "between \"1s\" and \"24h\""));
        }
        Some((ms, _)) => ms,
        None => CrashLoop::default().within_ms,
    };
    Ok(CrashLoop {
        restarts,
        within_ms,
    })
}

/// The `env` table: each value a string, or `{ value = "…", secret = true }`
/// (a value `plan`, `status` and `releases` never show). Returns the
/// variables and the names of the secret ones.
fn env(
    c: &Checker<'_>,
    node: &Node,
    path: &str,
) -> Result<(BTreeMap<String, String>, Vec<String>)> {
    let Value::Table(entries) = &node.value else {
        return Err(c.wrong_type(node, path, "a table of strings"));
    };
    let mut vars = BTreeMap::new();
    let mut secret = Vec::new();
    for entry in entries {
        let key = toml_doc::child_key(path, &entry.key);
        let k = entry.key.as_str();
        if k.is_empty() || k.contains('=') || k.chars().any(char::is_control) {
            return Err(c.err(
                entry.key_at(),
                &key,
                "not an environment variable name (no '=' or control characters)",
            ));
        }
        if k == "PORT" {
            return Err(c.err(
                entry.key_at(),
                &key,
                "PORT is set by drover for each instance",
            ));
        }
        let t = match &entry.node.value {
            Value::String(value) => {
                grammar::c_string(value).map_err(|e| c.err(entry.node.at(), &key, e))?;
                vars.insert(k.to_string(), value.clone());
                continue;
            }
            Value::Table(_) => c.table(&entry.node, &key, &["value", "secret"])?,
            other => {
                let mut e = format!(
                    "expected a string or {{ value = \"…\", secret = true }}, found {}",
                    entry.node.type_name()
                );
                if matches!(
                    other,
                    Value::Integer(_) | Value::Float(_) | Value::Boolean(_)
                ) {
                    e.push_str(" (quote it)");
                }
                return Err(c.err(entry.node.at(), &key, e));
            }
        };
        let v = c.required(&t, "value", "the variable's value, e.g. value = \"…\"")?;
        let value = c.string(v, &t.key("value"))?;
        grammar::c_string(value).map_err(|e| c.err(v.at(), &t.key("value"), e))?;
        if let Some(s) = t.get("secret")
            && c.boolean(s, &t.key("secret"))?
        {
            secret.push(k.to_string());
        }
        vars.insert(k.to_string(), value.to_string());
    }
    secret.sort();
    Ok((vars, secret))
}

const VOLUME_KEYS: &[&str] = &["name", "target", "read_only", "shared"];

/// The service's `volumes`, each a string (`name:/path[:ro|:shared]`) or a
/// table (`{ name, target, read_only, shared }`), checked against its
/// replicas and strategy: a volume with one writer is never mounted by two
/// of its instances at once.
fn volumes(
    c: &Checker<'_>,
    t: &Table<'_>,
    service: &str,
    replicas: u32,
    strategy: Strategy,
) -> Result<Vec<VolumeSpec>> {
    let Some(n) = t.get("volumes") else {
        return Ok(Vec::new());
    };
    let key = t.key("volumes");
    let mut out: Vec<VolumeSpec> = Vec::new();
    let items = c.array(
        n,
        &key,
        "an array of \"name:/path\" or { name = \"…\", target = \"/path\" }",
    )?;
    for (i, item) in items.iter().enumerate() {
        let k = toml_doc::index_key(&key, i);
        let v = match &item.value {
            Value::String(s) => {
                VolumeSpec::parse_template(s).map_err(|e| c.err(item.at(), &k, e))?
            }
            Value::Table(_) => {
                let vt = c.table(item, &k, VOLUME_KEYS)?;
                let name_node =
                    c.required(&vt, "name", "the volume's name, e.g. name = \"data\"")?;
                let name = c.string(name_node, &vt.key("name"))?;
                let target_node = c.required(
                    &vt,
                    "target",
                    "where it is mounted, e.g. target = \"/var/lib/app\"",
                )?;
                let target = c.string(target_node, &vt.key("target"))?;
                let flag = |f: &str| -> Result<bool> {
                    vt.get(f).map_or(Ok(false), |n| c.boolean(n, &vt.key(f)))
                };
                let (read_only, shared) = (flag("read_only")?, flag("shared")?);
                VolumeSpec::new(name, target, read_only, shared).map_err(|(part, e)| {
                    let (at, k) = match part {
                        Part::Name => (name_node.at(), vt.key("name")),
                        Part::Target => (target_node.at(), vt.key("target")),
                        Part::Mode => (vt.get("shared").unwrap_or(item).at(), vt.key("shared")),
                    };
                    c.err(at, &k, e)
                })?
            }
            _ => return Err(c.wrong_type(item, &k, "\"name:/path\" or a table")),
        };
        if v.single_writer() && !v.is_per_replica() && replicas > 1 {
            return Err(c.err(
                item.at(),
                &k,
                format!(
                    "service {service} runs {replicas} replicas, and volume {} is read-write with \
                     one writer: they would all write it at once. Give each replica its own \
                     (\"{}-{{replica}}:{}\"), declare it shared (\"{}:{}:shared\", or \
                     shared = true) if the program coordinates its writers, or mount it :ro",
                    v.name, v.name, v.target, v.name, v.target
                ),
            ));
        }
        if v.single_writer() && strategy == Strategy::BlueGreen {
            return Err(c.err(
                item.at(),
                &k,
                format!(
                    "service {service} mounts volume {} read-write with one writer, and \
                     blue-green starts a full new set of instances before it stops the old \
                     one: use strategy = \"rolling\" (each old instance is then stopped before \
                     its replacement starts) or \"recreate\"",
                    v.name
                ),
            ));
        }
        out.push(v);
    }
    Ok(out)
}

/// `userns = false` with its `userns_reason`: the reason, or `None` when
/// the service keeps its user namespace (the default). Turning it off
/// makes container root host root, so it takes a reason, which the release
/// records and the ledger keeps.
fn userns_opt_out(c: &Checker<'_>, t: &Table<'_>) -> Result<Option<String>> {
    let on = match t.get("userns") {
        Some(n) => c.boolean(n, &t.key("userns"))?,
        None => true,
    };
    let reason = match t.get("userns_reason") {
        Some(n) => {
            let key = t.key("userns_reason");
            let s = c.string(n, &key)?.trim();
            if s.is_empty() {
                return Err(c.err(n.at(), &key, "say why, in words"));
            }
            if on {
                return Err(c.err(
                    n.at(),
                    &key,
                    "only with userns = false (the user namespace is on by default)",
                ));
            }
            Some(s.to_string())
        }
        None => None,
    };
    match (on, reason) {
        (true, _) => Ok(None),
        (false, Some(r)) => Ok(Some(r)),
        (false, None) => Err(c.err(
            t.get("userns").map_or(0, Node::at),
            &t.key("userns"),
            "userns = false makes container root host root; it needs userns_reason = \"why\" \
             beside it (the release records it and the ledger keeps it)",
        )),
    }
}

/// The registry `image` names, if any, and whether to reach it over plain
/// HTTP. A registry image must be pinned by digest: a deploy runs exactly
/// what was reviewed, and a registry tag can move under it.
fn registry(c: &Checker<'_>, t: &Table<'_>, image: &str) -> Result<(Option<Remote>, bool)> {
    let image_at = t.get("image").map_or(0, Node::at);
    let remote = if Remote::is_remote(image) {
        let r =
            Remote::parse(image).map_err(|e| c.err(image_at, &t.key("image"), e.to_string()))?;
        if r.digest.is_none() {
            return Err(c.err(
                image_at,
                &t.key("image"),
                format!(
                    "deploys pin registry images by digest: write {}/{}@sha256:… \
                     (`drover pull {image}` prints the digest)",
                    r.registry, r.repository
                ),
            ));
        }
        Some(r)
    } else {
        None
    };
    let insecure = match t.get("insecure_registry") {
        None => false,
        Some(n) => {
            let key = t.key("insecure_registry");
            let b = c.boolean(n, &key)?;
            match &remote {
                None if b => {
                    return Err(c.err(
                        n.at(),
                        &key,
                        "only for a registry image (image = \"<registry>/<repository>@sha256:…\")",
                    ));
                }
                Some(r) if b && !r.is_loopback() => {
                    return Err(c.err(
                        n.at(),
                        &key,
                        format!(
                            "plain HTTP is only allowed for loopback registries, not {}; use TLS",
                            r.registry
                        ),
                    ));
                }
                _ => b,
            }
        }
    };
    Ok((remote, insecure))
}

/// A non-negative integer at `t[key]`, or `default`.
fn count(c: &Checker<'_>, t: &Table<'_>, key: &str, default: u32, min: u32) -> Result<u32> {
    let Some(n) = t.get(key) else {
        return Ok(default);
    };
    let k = t.key(key);
    let v = c.integer(n, &k)?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v >= min && *v <= 10_000)
        .ok_or_else(|| {
            c.err(
                n.at(),
                &k,
                format!("{v} is out of range (expected {min} to 10000)"),
            )
        })
}

/// The whole number at `t[key]`, if any, checked by `rule` (a
/// `grammar::*_limit`, shared with `drover run`'s flags).
fn limit(
    c: &Checker<'_>,
    t: &Table<'_>,
    key: &str,
    rule: fn(&str) -> std::result::Result<u64, String>,
) -> Result<Option<u64>> {
    let Some(n) = t.get(key) else {
        return Ok(None);
    };
    let k = t.key(key);
    let v = c.integer(n, &k)?;
    rule(&v.to_string())
        .map(Some)
        .map_err(|e| c.err(n.at(), &k, e))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
