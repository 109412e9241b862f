//! Fuzz target: the fleet file parser (see `crate::fuzz`). It never
//! panics, every error is located (file:line:column), and a valid fleet
//! written out and read back is what was written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use proptest::strategy::Strategy;

use crate::deploy::plan::Strategy as Rollout;

use super::*;
use crate::error::Error;
use crate::fuzz::{apply, config, edits, quoted};

const FILE: &str = "fleet.toml";

/// Text every string value accepts: no control characters.
fn printable() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9 ._/:=-]{0,12}", 1 => "\\PC{0,12}"]
}

fn volume() -> impl Strategy<Value = VolumeSpec> {
    (
        "[a-z0-9][a-z0-9_.-]{0,6}",
        proptest::collection::vec("[a-z0-9_][a-z0-9_.-]{0,6}", 1..3),
        0..4u8,
    )
        .prop_filter("not a kernel filesystem", |(_, parts, _)| {
            !matches!(parts[0].as_str(), "proc" | "sys" | "dev")
                && !parts.iter().any(|p| p.starts_with(".."))
        })
        .prop_map(|(name, parts, mode)| VolumeSpec {
            // Mode 3: one volume per replica.
            name: if mode == 3 {
                format!("{name}-{{replica}}")
            } else {
                name
            },
            target: format!("/{}", parts.join("/")),
            read_only: mode == 0,
            shared: mode == 2,
        })
}

/// A single-writer volume made one the parser takes where it would not:
/// shared, or (one per replica, which cannot be shared) read-only.
fn unwrite(v: &mut VolumeSpec) {
    if v.is_per_replica() {
        v.read_only = true;
    } else {
        v.shared = true;
    }
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        proptest::option::of(6..=65_536u64),
        proptest::option::of(1..=100_000u64),
        proptest::option::of(10..=64_000u64),
        proptest::option::of(8..=1_048_576u64),
    )
        .prop_map(|(mib, pids, millicpus, nofile)| Limits {
            memory_bytes: mib.map(|m| m << 20),
            pids,
            millicpus,
            nofile,
        })
}

fn strategy() -> impl Strategy<Value = Rollout> {
    prop_oneof![
        Just(Rollout::Recreate),
        Just(Rollout::BlueGreen),
        (0..5u32, 0..5u32)
            .prop_filter("not both 0", |(s, u)| *s + *u > 0)
            .prop_map(|(max_surge, max_unavailable)| Rollout::Rolling {
                max_surge,
                max_unavailable
            }),
    ]
}

/// `constraints` and `spread_by`.
fn placement() -> impl Strategy<Value = (crate::deploy::placement::Constraints, Option<String>)> {
    let word = "[a-z0-9]([a-z0-9._-]{0,6}[a-z0-9])?";
    (
        proptest::collection::btree_map(
            "[a-z0-9]([a-z0-9._/-]{0,6}[a-z0-9])?",
            proptest::collection::btree_set(word, 1..3),
            0..3,
        ),
        proptest::option::of(word),
    )
}

/// One service: its spec (as parsing must give it back), ports aside.
fn service() -> impl Strategy<Value = ServiceSpec> {
    (
        "[a-z0-9][a-z0-9_.-]{0,8}",
        "[a-z0-9]{1,6}:[a-z0-9.]{1,6}",
        0..20u32,
        strategy(),
        proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,6}", printable(), 0..3)
            .prop_filter("PORT is drover's", |m| !m.contains_key("PORT")),
        proptest::collection::vec(volume(), 0..3),
        limits(),
        proptest::sample::subsequence(vec!["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"], 0..=3),
        prop_oneof![Just(DriverKind::Embedded), Just(DriverKind::Runc)],
        0..600u64,
        placement(),
    )
        .prop_map(
            |(
                name,
                image,
                replicas,
                strategy,
                env,
                mut volumes,
                limits,
                caps,
                driver,
                drain_s,
                (constraints, spread_by),
            )| {
                // A volume with one writer: not beside another replica, not
                // under blue-green (the parser refuses both).
                for v in &mut volumes {
                    if v.single_writer()
                        && (strategy == Rollout::BlueGreen || (replicas > 1 && !v.is_per_replica()))
                    {
                        unwrite(v);
                    }
                }
                ServiceSpec {
                    name,
                    image,
                    registry: None,
                    insecure_registry: false,
                    replicas,
                    strategy,
                    health: None,
                    deadline_ms: DEFAULT_DEADLINE_MS,
                    env,
                    secret_env: Vec::new(),
                    ports: Vec::new(),
                    proxy: ProxyMode::Http,
                    drain_ms: drain_s * 1000,
                    min_healthy_ms: DEFAULT_MIN_HEALTHY_MS,
                    crash_loop: CrashLoop::default(),
                    volumes,
                    tmpfs: Vec::new(),
                    limits,
                    // NET_BIND_SERVICE cannot work in a user namespace: a
                    // service that asks for it opts out, with its reason.
                    userns_opt_out: caps
                        .contains(&"CAP_NET_BIND_SERVICE")
                        .then(|| "binds a port below 1024".to_string()),
                    cap_add: caps.into_iter().map(str::to_string).collect(),
                    driver,
                    init: None,
                    logs: Default::default(),
                    constraints,
                    spread_by,
                }
            },
        )
}

/// Services with distinct names and distinct ports, sorted by name (as
/// `parse` returns them).
fn fleet() -> impl Strategy<Value = Vec<ServiceSpec>> {
    (
        proptest::collection::vec(service(), 1..4),
        proptest::collection::btree_set(1..=65535u16, 0..6),
    )
        .prop_map(|(services, ports)| {
            let mut by_name = BTreeMap::new();
            for s in services {
                by_name.entry(s.name.clone()).or_insert(s);
            }
            let mut out: Vec<ServiceSpec> = by_name.into_values().collect();
            // A volume two services mount is shared by its writers.
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for (i, s) in out.iter().enumerate() {
                for v in &s.volumes {
                    if *seen.entry(v.name.clone()).or_insert(i) != i {
                        seen.insert(v.name.clone(), usize::MAX);
                    }
                }
            }
            for s in &mut out {
                for v in &mut s.volumes {
                    if seen[&v.name] == usize::MAX && v.single_writer() {
                        unwrite(v);
                    }
                }
            }
            let n = out.len();
            for (i, p) in ports.into_iter().enumerate() {
                out[i % n].ports.push(p);
            }
            out
        })
}

fn render(fleet: &[ServiceSpec]) -> String {
    let mut t = String::new();
    for s in fleet {
        t += &format!(
            "[service.{}]\nimage = {}\n",
            quoted(&s.name),
            quoted(&s.image)
        );
        t += &format!("replicas = {}\n", s.replicas);
        match s.strategy {
            Rollout::Recreate => t += "strategy = \"recreate\"\n",
            Rollout::BlueGreen => t += "strategy = \"blue-green\"\n",
            Rollout::Rolling {
                max_surge,
                max_unavailable,
            } => {
                t += &format!(
                    "strategy = \"rolling\"\nmax_surge = {max_surge}\nmax_unavailable = {max_unavailable}\n"
                )
            }
        }
        let env: Vec<String> = s
            .env
            .iter()
            .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
            .collect();
        t += &format!("env = {{ {} }}\n", env.join(", "));
        let ports: Vec<String> = s.ports.iter().map(u16::to_string).collect();
        t += &format!("ports = [{}]\n", ports.join(", "));
        t += &format!("drain = \"{}s\"\n", s.drain_ms / 1000);
        // Both forms: a string, and (every other one) a table.
        let volumes: Vec<String> = s
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i % 2 == 0 {
                    quoted(&v.canonical())
                } else {
                    format!(
                        "{{ name = {}, target = {}, read_only = {}, shared = {} }}",
                        quoted(&v.name),
                        quoted(&v.target),
                        v.read_only,
                        v.shared
                    )
                }
            })
            .collect();
        t += &format!("volumes = [{}]\n", volumes.join(", "));
        if let Some(m) = s.limits.memory_bytes {
            t += &format!("memory = \"{}m\"\n", m >> 20);
        }
        if let Some(c) = s.limits.millicpus {
            t += &format!("cpus = {}.{:03}\n", c / 1000, c % 1000);
        }
        if let Some(p) = s.limits.pids {
            t += &format!("pids = {p}\n");
        }
        if let Some(n) = s.limits.nofile {
            t += &format!("nofile = {n}\n");
        }
        let caps: Vec<String> = s.cap_add.iter().map(|c| quoted(c)).collect();
        t += &format!("cap_add = [{}]\n", caps.join(", "));
        if let Some(why) = &s.userns_opt_out {
            t += &format!("userns = false\nuserns_reason = {}\n", quoted(why));
        }
        // A value alone when there is one (either form reads the same).
        let constraints: Vec<String> = s
            .constraints
            .iter()
            .map(|(label, values)| {
                let v: Vec<String> = values.iter().map(|v| quoted(v)).collect();
                match &v[..] {
                    [one] if label.len() % 2 == 0 => format!("{} = {one}", quoted(label)),
                    _ => format!("{} = [{}]", quoted(label), v.join(", ")),
                }
            })
            .collect();
        t += &format!("constraints = {{ {} }}\n", constraints.join(", "));
        if let Some(l) = &s.spread_by {
            t += &format!("spread_by = {}\n", quoted(l));
        }
        t += &format!("driver = \"{}\"\n\n", s.driver.as_str());
    }
    t
}

fn check_outcome(text: &str) -> std::result::Result<Option<Vec<ServiceSpec>>, TestCaseError> {
    match parse(text, Path::new(FILE)) {
        Ok(services) => Ok(Some(services)),
        Err(Error::Definition {
            file, line, column, ..
        }) => {
            prop_assert_eq!(file, Path::new(FILE));
            prop_assert!(
                line >= 1 && line <= text.lines().count() + 1,
                "line {}",
                line
            );
            prop_assert!(column >= 1, "column {}", column);
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "not a located fleet error: {other:?}"
        ))),
    }
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn a_valid_fleet_round_trips(fleet in fleet()) {
        let text = render(&fleet);
        let parsed = parse(&text, Path::new(FILE))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed, fleet);
    }

    #[test]
    fn a_mutated_fleet_never_panics_and_errors_are_located(
        fleet in fleet(),
        edits in edits(6),
    ) {
        let bytes = apply(render(&fleet).as_bytes(), &edits);
        let text = String::from_utf8_lossy(&bytes);
        if let Some(services) = check_outcome(&text)? {
            let mut ports = BTreeSet::new();
            for s in &services {
                for (k, v) in &s.env {
                    prop_assert!(!k.chars().any(char::is_control) && !v.contains('\0'), "{:?}={:?}", k, v);
                }
                for v in &s.volumes {
                    prop_assert!(v.target.starts_with('/') && !v.target.split('/').any(|c| c == ".."));
                    for kernel in ["/proc", "/sys", "/dev"] {
                        prop_assert!(v.target != kernel && !v.target.starts_with(&format!("{kernel}/")), "{}", v.target);
                    }
                }
                if let Some(m) = s.limits.memory_bytes {
                    prop_assert!(m >= crate::grammar::MIN_MEMORY_BYTES, "memory {}", m);
                }
                prop_assert!(s.limits.pids != Some(0) && s.limits.nofile != Some(0) && s.limits.millicpus != Some(0));
                for p in &s.ports {
                    prop_assert!(ports.insert(*p), "port {} twice", p);
                }
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}|[\\[\\]{}=\".a-z\n ]{0,200}") {
        check_outcome(&text)?;
    }
}
