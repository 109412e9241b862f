//! Every bound drover puts on what it reads, unpacks or keeps, in one place.
//!
//! Untrusted input (a registry's answers, a layer's tar stream, an
//! instance's output) never gets to decide how much memory, disk or time
//! drover spends on it. Each bound has a default that a real image or
//! service never reaches, a name that its error carries, and an environment
//! variable (`DROVER_LIMIT_<NAME>`, sizes as `grammar::size`, durations as
//! `grammar::duration_ms`) to raise or lower it. A value that does not parse
//! is refused when the store opens, naming the variable.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::grammar;

/// The bounds in force for one store (see [`Limits::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// A manifest or index read from a registry or the store (containerd
    /// caps these at 4 MiB too).
    pub manifest_bytes: u64,
    /// An image config.
    pub config_bytes: u64,
    /// The bytes one layer unpacks to.
    pub layer_bytes: u64,
    /// The entries (files, directories, links) in one layer.
    pub layer_entries: u64,
    /// The body of one tar extension header in a layer: a GNU long name
    /// (`L`) or long link (`K`), a PAX header (`x`, `g`). The tar reader
    /// holds these in memory whole, so they are refused past this before
    /// they are read (Go's archive/tar caps them at 1 MiB too).
    pub tar_header_bytes: u64,
    /// The sizes an image's manifest declares for its config and layers,
    /// added up; checked before any of them is fetched.
    pub image_bytes: u64,
    /// One blob of a referrer (a signature, an attestation): these are
    /// small documents, not images.
    pub artifact_bytes: u64,
    /// The referrers a pull fetches for one image.
    pub referrers: u64,
    /// How many times larger than its compressed size a layer may unpack,
    /// once it is past [`Limits::RATIO_FLOOR`] (a compression bomb: 9 MB of
    /// gzip inflating to 8 GiB).
    pub inflate_ratio: u64,
    /// Connecting to a registry. The `registry_*` time-outs bound the
    /// requests to package repositories too.
    pub registry_connect: Duration,
    /// No byte from a registry for this long: the request is given up.
    pub registry_idle: Duration,
    /// The slowest transfer tolerated: a request's total time-out is
    /// `registry_floor` plus its declared size at this rate.
    pub registry_min_rate: u64,
    /// The total time-out of a request whose size is small or unknown.
    pub registry_floor: Duration,
    /// The longest total time-out of any request, whatever size it declares.
    pub registry_max: Duration,
    /// A package repository's index: an `InRelease`, or a `Packages`
    /// index compressed or decompressed (Debian's largest, main/amd64,
    /// decompresses to about 50 MB).
    pub index_bytes: u64,
    /// One `.deb` file, as its signed index declares it (the largest in
    /// Debian are a few hundred MB of game data).
    pub deb_bytes: u64,
    /// One instance log file; past it the log is rotated.
    pub log_bytes: u64,
    /// Rotated log files kept beside the current one.
    pub log_files: u64,
    /// Processes (tasks) per instance, unless its service or `run` sets one.
    pub pids: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            manifest_bytes: 4 << 20,
            config_bytes: 8 << 20,
            layer_bytes: 32 << 30,
            layer_entries: 2_000_000,
            tar_header_bytes: 1 << 20,
            image_bytes: 64 << 30,
            artifact_bytes: 16 << 20,
            referrers: 256,
            inflate_ratio: 200,
            registry_connect: Duration::from_secs(15),
            registry_idle: Duration::from_secs(60),
            registry_min_rate: 32 << 10,
            registry_floor: Duration::from_secs(300),
            registry_max: Duration::from_secs(6 * 3600),
            index_bytes: 512 << 20,
            deb_bytes: 4 << 30,
            log_bytes: 16 << 20,
            log_files: 3,
            pids: 1024,
        }
    }
}

/// A bound: its name (as errors and the environment spell it) and whether
/// it is a size, a count or a duration.
enum Field {
    Size(&'static str, fn(&mut Limits) -> &mut u64),
    Count(&'static str, fn(&mut Limits) -> &mut u64),
    Time(&'static str, fn(&mut Limits) -> &mut Duration),
}

const FIELDS: &[Field] = &[
    Field::Size("manifest_bytes", |l| &mut l.manifest_bytes),
    Field::Size("config_bytes", |l| &mut l.config_bytes),
    Field::Size("layer_bytes", |l| &mut l.layer_bytes),
    Field::Count("layer_entries", |l| &mut l.layer_entries),
    Field::Size("tar_header_bytes", |l| &mut l.tar_header_bytes),
    Field::Size("image_bytes", |l| &mut l.image_bytes),
    Field::Size("artifact_bytes", |l| &mut l.artifact_bytes),
    Field::Count("referrers", |l| &mut l.referrers),
    Field::Count("inflate_ratio", |l| &mut l.inflate_ratio),
    Field::Time("registry_connect", |l| &mut l.registry_connect),
    Field::Time("registry_idle", |l| &mut l.registry_idle),
    Field::Size("registry_min_rate", |l| &mut l.registry_min_rate),
    Field::Time("registry_floor", |l| &mut l.registry_floor),
    Field::Time("registry_max", |l| &mut l.registry_max),
    Field::Size("index_bytes", |l| &mut l.index_bytes),
    Field::Size("deb_bytes", |l| &mut l.deb_bytes),
    Field::Size("log_bytes", |l| &mut l.log_bytes),
    Field::Count("log_files", |l| &mut l.log_files),
    Field::Count("pids", |l| &mut l.pids),
];

impl Limits {
    /// Below this many unpacked bytes a layer's inflation ratio is not
    /// checked: small, highly compressible layers are normal.
    pub const RATIO_FLOOR: u64 = 256 << 20;

    /// The defaults, with every `DROVER_LIMIT_<NAME>` that is set applied.
    pub fn from_env() -> Result<Limits> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`Limits::from_env`], reading variables through `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Limits> {
        let mut limits = Limits::default();
        for field in FIELDS {
            let name = field.name();
            let var = env_var(name);
            let Some(value) = get(&var) else { continue };
            let bad = |why: String| Error::Usage(format!("{var}={value:?}: {why}"));
            match field {
                Field::Size(_, f) => *f(&mut limits) = grammar::size(&value).map_err(bad)?,
                Field::Count(_, f) => {
                    *f(&mut limits) = match value.trim().parse::<u64>() {
                        Ok(n) if n > 0 => n,
                        _ => return Err(bad("expected a whole number above 0".into())),
                    }
                }
                Field::Time(_, f) => {
                    let ms = grammar::duration_ms(&value).map_err(bad)?;
                    if ms == 0 {
                        return Err(bad("a time-out of 0 would fail every request".into()));
                    }
                    *f(&mut limits) = Duration::from_millis(ms);
                }
            }
        }
        Ok(limits)
    }

    /// The total time-out of a registry request that moves `declared` bytes:
    /// `registry_floor` plus `declared` at `registry_min_rate`, never more
    /// than `registry_max` (a declared size is the registry's word).
    pub fn registry_total(&self, declared: u64) -> Duration {
        let scaled = Duration::from_secs(declared / self.registry_min_rate.max(1));
        self.registry_floor
            .saturating_add(scaled)
            .min(self.registry_max)
    }

    /// The error for input that went past the bound `name`: `what` says
    /// what it was ("manifest of 127.0.0.1:5000/app:1", "layer sha256:…").
    pub fn exceeded(
        name: &'static str,
        what: impl Into<String>,
        detail: impl Into<String>,
    ) -> Error {
        Error::LimitExceeded {
            what: what.into(),
            limit: name,
            detail: detail.into(),
            var: env_var(name),
        }
    }
}

impl Field {
    fn name(&self) -> &'static str {
        match self {
            Field::Size(n, _) | Field::Count(n, _) | Field::Time(n, _) => n,
        }
    }
}

/// `layer_bytes` → `DROVER_LIMIT_LAYER_BYTES`.
pub fn env_var(name: &str) -> String {
    format!("DROVER_LIMIT_{}", name.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_without_variables() {
        assert_eq!(Limits::from_vars(|_| None).unwrap(), Limits::default());
    }

    #[test]
    fn variables_override_and_bad_values_name_the_variable() {
        let l = Limits::from_vars(|v| match v {
            "DROVER_LIMIT_MANIFEST_BYTES" => Some("1m".into()),
            "DROVER_LIMIT_REGISTRY_IDLE" => Some("5s".into()),
            "DROVER_LIMIT_PIDS" => Some("64".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(l.manifest_bytes, 1 << 20);
        assert_eq!(l.registry_idle, Duration::from_secs(5));
        assert_eq!(l.pids, 64);
        for (var, value) in [
            ("DROVER_LIMIT_LAYER_BYTES", "lots"),
            ("DROVER_LIMIT_PIDS", "0"),
            ("DROVER_LIMIT_REGISTRY_IDLE", "0"),
        ] {
            let e = Limits::from_vars(|v| (v == var).then(|| value.to_string())).unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
            assert_eq!(e.kind(), crate::ErrorKind::Invalid);
        }
    }

    #[test]
    fn an_exceeded_limit_names_itself_and_its_variable() {
        let e = Limits::exceeded("manifest_bytes", "manifest of r/a:1", "more than 4 MiB");
        let s = e.to_string();
        assert!(
            s.contains("manifest_bytes") && s.contains("DROVER_LIMIT_MANIFEST_BYTES"),
            "{s}"
        );
    }

    #[test]
    fn total_time_scales_with_the_declared_size() {
        let l = Limits::default();
        assert_eq!(l.registry_total(0), l.registry_floor);
        assert!(l.registry_total(10 << 30) > l.registry_total(1 << 20));
        assert_eq!(l.registry_total(1_000_000_000_000), l.registry_max);
        assert_eq!(l.registry_total(u64::MAX), l.registry_max);
    }
}
