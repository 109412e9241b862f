//! Every small value grammar drover reads, each written once: signals,
//! durations, sizes, names (instances, volumes, services, repositories,
//! tags), and the few `drover.toml` values (users, environment names,
//! modes, owners, ports).
//!
//! Every reader of such a value calls the function here — the definition
//! parser, the fleet parser, `drover run`, `drover serve`'s flags, the
//! instance launcher, the store's tag check and the registry reference
//! parser — so a value one of them accepts is never refused by another.
//! (That happened: the builder accepted `stop_signal = "SIGRTMAX"` and
//! `drover run` then refused the image's stop signal as unknown.)
//!
//! Each parser returns a message that names the value and says what is
//! expected; callers add where it came from (a key path and position, a
//! flag). This module is a leaf: it depends on nothing else of drover.

use std::fmt;

// ---------------------------------------------------------------------------
// Durations.

/// Parses a duration such as `"500ms"`, `"5s"`, `"1m30s"` or `"1h"` into
/// milliseconds: whole numbers, each with a unit (`h`, `m`, `s`, `ms`), largest
/// unit first, each unit at most once. `"0"` is also accepted.
pub fn duration_ms(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration (expected whole numbers with units h, m, s or ms, \
             largest first, e.g. \"500ms\", \"5s\", \"1m30s\")"
        )
    };
    let too_long = || format!("{s:?} is too long a duration");
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total: u64 = 0;
    let mut previous_rank = u8::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        // Check "ms" before "m".
        let (unit_ms, rank, unit_len) = if rest.starts_with("ms") {
            (1, 0, 2)
        } else if rest.starts_with('s') {
            (1_000, 1, 1)
        } else if rest.starts_with('m') {
            (60_000, 2, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 3, 1)
        } else {
            return Err(bad());
        };
        if rank >= previous_rank {
            return Err(bad());
        }
        previous_rank = rank;
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(too_long)?;
    }
    Ok(total)
}

/// An age, as retentions are given: whole days (`"14d"`), or anything
/// [`duration_ms`] reads (`"12h"`, `"0"`); in milliseconds.
pub fn age_ms(s: &str) -> Result<u64, String> {
    if let Some(days) = s.strip_suffix('d')
        && !days.is_empty()
        && days.bytes().all(|b| b.is_ascii_digit())
    {
        return days
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(86_400_000))
            .ok_or_else(|| format!("{s:?} is too long an age"));
    }
    duration_ms(s).map_err(|_| {
        format!("{s:?} is not an age (expected whole days like \"14d\", or a duration like \"12h\"; \"0\" for none)")
    })
}

/// Formats milliseconds the way [`duration_ms`] reads them (`"1m30s"`).
pub fn format_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, name) in [(3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Sizes.

/// `512k`, `256m`, `1g`, `1048576` (any case, an optional trailing `b`:
/// `256MB`) → bytes; binary units (k = 1024). Zero is not a size.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_shl(shift).filter(|b| b >> shift == n))
        .ok_or_else(|| {
            format!("{s:?} is not a size (expected a number of bytes with an optional k, m or g, e.g. \"512k\", \"256m\", \"1g\")")
        })
}

// ---------------------------------------------------------------------------
// Signals.

/// Linux signal names in number order (x86-64 and arm64 numbering), without
/// the `SIG` prefix.
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
/// glibc's SIGRTMIN and SIGRTMAX (32 and 33 are reserved by the C library).
/// Fixed rather than asked of the host's libc: an image names its signal
/// once, and it must mean the same number wherever it runs.
const SIGRTMIN: u8 = 34;
const SIGRTMAX: u8 = 64;

/// A signal an instance can be sent: 1–31 or a real-time signal 34–64.
/// Displays as its canonical name: `SIGTERM`, `SIGRTMIN`, `SIGRTMIN+3`,
/// `SIGRTMAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(u8);

impl Signal {
    pub fn number(self) -> i32 {
        i32::from(self.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n @ 1..=31 => write!(f, "SIG{}", SIGNALS[usize::from(n) - 1]),
            SIGRTMIN => f.write_str("SIGRTMIN"),
            SIGRTMAX => f.write_str("SIGRTMAX"),
            n => write!(f, "SIGRTMIN+{}", n - SIGRTMIN),
        }
    }
}

/// A signal name (any case, with or without `SIG`: `SIGTERM`, `term`),
/// `SIGRTMIN`, `SIGRTMAX`, `SIGRTMIN+n`, `SIGRTMAX-n`, or a number 1–31 or
/// 34–64.
pub fn signal(s: &str) -> Result<Signal, String> {
    parse_signal(s).map(Signal).ok_or_else(|| {
        format!(
            "{s:?} is not a signal (expected a name such as \"SIGTERM\" or \"SIGINT\", \
             \"SIGRTMIN+n\", \"SIGRTMAX-n\", or a number 1-31 or 34-64)"
        )
    })
}

fn parse_signal(s: &str) -> Option<u8> {
    if let Some(n) = decimal_u32(s) {
        return match n {
            1..=31 => Some(n as u8),
            n if (u32::from(SIGRTMIN)..=u32::from(SIGRTMAX)).contains(&n) => Some(n as u8),
            _ => None,
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let name = match name {
        "IOT" => "ABRT",
        "POLL" => "IO",
        "CLD" => "CHLD",
        other => other,
    };
    if let Some(i) = SIGNALS.iter().position(|n| *n == name) {
        return Some(i as u8 + 1);
    }
    let offset = |rest: &str| {
        decimal_u32(rest)
            .filter(|k| *k <= u32::from(SIGRTMAX - SIGRTMIN))
            .map(|k| k as u8)
    };
    match name {
        "RTMIN" => Some(SIGRTMIN),
        "RTMAX" => Some(SIGRTMAX),
        _ => {
            if let Some(rest) = name.strip_prefix("RTMIN+") {
                Some(SIGRTMIN + offset(rest)?)
            } else if let Some(rest) = name.strip_prefix("RTMAX-") {
                Some(SIGRTMAX - offset(rest)?)
            } else {
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Names.

/// A name for an instance, volume or service: letters, digits, '.', '_'
/// and '-', starting with a letter or digit, at most 128 characters.
pub fn name(s: &str) -> Result<(), String> {
    let ok = s.len() <= 128
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a name (expected letters, digits, '.', '_' and '-', starting with a \
             letter or digit, at most 128 characters)"
        ))
    }
}

/// A host label's name, as `drover serve --join --label NAME=VALUE` gives
/// it and a fleet's `constraints` and `spread_by` name it: letters, digits,
/// '.', '_', '-' and '/', starting and ending with a letter or digit, at
/// most 63 characters (`zone`, `disk`, `example.com/rack`).
pub fn host_label(s: &str) -> Result<(), String> {
    if label_word(s, true) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a host label name (expected letters, digits, '.', '_', '-' and '/', \
             starting and ending with a letter or digit, at most 63 characters, e.g. \"zone\")"
        ))
    }
}

/// A host label's value (`eu-west-1a`, `ssd`): letters, digits, '.', '_'
/// and '-', starting and ending with a letter or digit, at most 63
/// characters.
pub fn host_label_value(s: &str) -> Result<(), String> {
    if label_word(s, false) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a host label value (expected letters, digits, '.', '_' and '-', \
             starting and ending with a letter or digit, at most 63 characters, e.g. \"eu-1a\")"
        ))
    }
}

fn label_word(s: &str, slash: bool) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-') || (slash && *c == b'/')
        })
}

/// The OCI distribution spec's repository name:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn repository(s: &str) -> Result<(), String> {
    if is_repository(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a repository name (expected lowercase letters and digits, \
             separated by '.', '_', '__' or '-' and joined by '/', e.g. \"hello\" or \"team/web\")"
        ))
    }
}

fn is_repository(name: &str) -> bool {
    name.split('/').all(|component| {
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
            return false;
        };
        if !alnum(first) || !alnum(last) {
            return false;
        }
        // Between alphanumeric runs: ".", "_", "__" or any number of "-".
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
            if !ok {
                return false;
            }
        }
        true
    })
}

/// The OCI tag grammar: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn tag(s: &str) -> Result<(), String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-';
    let bytes = s.as_bytes();
    if (1..=128).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|b| ok(*b))
    {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a tag (expected 1 to 128 of A-Z a-z 0-9 _ . -, \
             not starting with '.' or '-', e.g. \"1.0\")"
        ))
    }
}

/// `repository:tag`, as the store names an image (both parts required).
pub fn tagged_name(s: &str) -> Result<(), String> {
    let ok = s
        .rsplit_once(':')
        .is_some_and(|(r, t)| is_repository(r) && tag(t).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid tag (expected name:tag, e.g. \"team/web:1.0\": a repository \
             name of lowercase letters and digits separated by '.', '_', '__' or '-' and joined \
             by '/', and a tag of 1 to 128 of A-Z a-z 0-9 _ . -, not starting with '.' or '-')"
        ))
    }
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn env_name(s: &str) -> Result<(), String> {
    let mut bytes = s.bytes();
    let ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not an environment variable name \
             (expected letters, digits and '_', not starting with a digit)"
        ))
    }
}

/// `uid`, `uid:gid`, `name`, `name:group` (and mixes): numbers fit a u32,
/// names are `[A-Za-z_][A-Za-z0-9_.-]*`, at most 32 characters.
pub fn user(s: &str) -> Result<(), String> {
    let part = |p: &str| {
        if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            return p.parse::<u32>().is_ok();
        }
        is_account_name(p)
    };
    let ok = match s.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(s),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a user (expected \"uid\", \"uid:gid\", \"name\" or \
             \"name:group\", e.g. \"1000:1000\" or \"nobody\")"
        ))
    }
}

/// A user or group name as `/etc/passwd` and `/etc/group` hold it and a
/// `user = "name"` names it: `[A-Za-z_][A-Za-z0-9_.-]{0,31}` (POSIX's
/// portable characters, not starting with a digit, so it never reads as
/// an id, nor with `-` or `.`).
pub fn account_name(s: &str) -> Result<(), String> {
    if is_account_name(s) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a user or group name (expected a letter or '_', then at most 31 \
             letters, digits, '_', '.' or '-', e.g. \"app\" or \"www-data\")"
        ))
    }
}

fn is_account_name(p: &str) -> bool {
    let mut bytes = p.bytes();
    p.len() <= 32
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

// ---------------------------------------------------------------------------
// Numbers: modes, owners, ports.

/// Digits only: `u32::from_str` accepts a leading '+', which a mode, id or
/// signal number never has.
fn decimal_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An octal mode string (`"644"`, `"0644"`, `"4755"`), at most `0o7777`.
pub fn mode(s: &str) -> Result<u32, String> {
    let ok = !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
    ok.then(|| u32::from_str_radix(s, 8).ok())
        .flatten()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            format!("{s:?} is not an octal mode (expected e.g. \"0644\", at most 0o7777)")
        })
}

/// `"uid:gid"`, both decimal.
pub fn owner(s: &str) -> Result<(u32, u32), String> {
    s.split_once(':')
        .and_then(|(u, g)| Some((decimal_u32(u)?, decimal_u32(g)?)))
        .ok_or_else(|| {
            format!("{s:?} is not a numeric owner (expected \"uid:gid\", e.g. \"1000:1000\")")
        })
}

/// `"8080"`, `"8080/tcp"`, `"53/udp"`, `"9/sctp"` into `"<port>/<proto>"`;
/// `None` if it is not one (the caller words the message: it may have
/// been written as an integer).
pub fn exposed_port(s: &str) -> Option<String> {
    let (number, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    if !matches!(proto, "tcp" | "udp" | "sctp") {
        return None;
    }
    let port = decimal_u32(number)?;
    (1..=65535)
        .contains(&port)
        .then(|| format!("{port}/{proto}"))
}

// ---------------------------------------------------------------------------
// Instance limits: `drover run --memory/--cpus/--pids/--nofile` and a fleet
// service's `memory`, `cpus`, `pids`, `nofile`. Each takes the value as
// written and refuses what no instance could run under, or what can only
// be a slip of the keyboard, before anything is created.

/// The least memory an instance may be given: 6 MiB, Docker's minimum too.
/// Below a few MiB the runtime's own init (runc's, or libcontainer's, which
/// runs inside the instance's cgroup before the process does) is killed by
/// the OOM killer, and all the user sees is a cgroup error.
pub const MIN_MEMORY_BYTES: u64 = 6 << 20;
/// The most memory an instance may be given: 16 TiB. More is a typo.
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// The most processes: the kernel's `PID_MAX_LIMIT` (4Mi); no host can
/// have more.
pub const MAX_PIDS: u64 = 4 << 20;
/// The least CPU: a hundredth of a core, the smallest quota the kernel
/// takes (1 ms per default 100 ms period).
pub const MIN_MILLICPUS: u64 = 10;
/// The most CPU: 1024 cores.
pub const MAX_MILLICPUS: u64 = 1_024_000;
/// The fewest open files: 8. A process needs 3 for its standard streams and
/// its loader a few more; below that nothing starts.
pub const MIN_NOFILE: u64 = 8;
/// The most open files: 2^20, the kernel's default `fs.nr_open`; a higher
/// limit fails in `setrlimit` inside the runtime, at start.
pub const MAX_NOFILE: u64 = 1 << 20;

/// A memory limit as [`size`] reads it, within
/// [`MIN_MEMORY_BYTES`]..=[`MAX_MEMORY_BYTES`].
pub fn memory_limit(s: &str) -> Result<u64, String> {
    let bytes = size(s)?;
    if bytes < MIN_MEMORY_BYTES {
        return Err(format!(
            "{s:?} is too little memory for an instance (at least \"6m\": below a few MiB the \
             runtime's own init is killed before the instance's process starts)"
        ));
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(format!(
            "{s:?} is not a plausible memory limit (at most 16 TiB, \"16384g\")"
        ));
    }
    Ok(bytes)
}

/// A CPU limit in cores (`"0.5"`, `"2"`), as thousandths of a core, within
/// [`MIN_MILLICPUS`]..=[`MAX_MILLICPUS`].
pub fn cpu_limit(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{s:?} is not a CPU limit (expected a number of cores from 0.01 to 1024, e.g. \"0.5\")"
        )
    };
    let t = s.trim();
    // Digits and one point only: no "inf", "nan", exponents or signs.
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let cores: f64 = t.parse().map_err(|_| bad())?;
    let milli = (cores * 1000.0).round();
    if !(MIN_MILLICPUS as f64..=MAX_MILLICPUS as f64).contains(&milli) {
        return Err(bad());
    }
    Ok(milli as u64)
}

/// A limit on an instance's processes, `1..=`[`MAX_PIDS`].
pub fn pids_limit(s: &str) -> Result<u64, String> {
    count_in(s, 1, MAX_PIDS).ok_or_else(|| {
        format!(
            "{s:?} is not a process limit (expected 1 to {MAX_PIDS}: 0 would let the instance \
             start nothing, and no kernel allows more)"
        )
    })
}

/// A limit on an instance's open files,
/// [`MIN_NOFILE`]..=[`MAX_NOFILE`].
pub fn nofile_limit(s: &str) -> Result<u64, String> {
    count_in(s, MIN_NOFILE, MAX_NOFILE).ok_or_else(|| {
        format!(
            "{s:?} is not an open-file limit (expected {MIN_NOFILE} to {MAX_NOFILE}: fewer \
             cannot hold a process's standard streams and loader, more fails in setrlimit)"
        )
    })
}

fn count_in(s: &str, min: u64, max: u64) -> Option<u64> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

// ---------------------------------------------------------------------------
// Text that reaches the kernel or the image config.

/// An argument, environment value or label value: anything but NUL, which
/// ends a C string (execve, the environment block), so the process would
/// see the value cut short, or the runtime would fail to start it.
pub fn c_string(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        Err(format!(
            "{s:?} contains a NUL byte, which would cut the value short where it reaches the \
             kernel (remove it)"
        ))
    } else {
        Ok(())
    }
}

/// A label key: not empty, and no control characters (a key is one line of
/// metadata that `docker inspect`, `drover trace` and JSON consumers print).
pub fn label_key(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("a label key must not be empty".into())
    } else if s.chars().any(char::is_control) {
        Err(format!(
            "{s:?} is not a label key (control characters such as NUL, tab or newline are not \
             allowed)"
        ))
    } else {
        Ok(())
    }
}

/// One component of a path in an image: never an overlay whiteout
/// (`.wh.<name>`, `.wh..wh..opq`), which a layer's tar stream reads as
/// "delete", so a file written under such a name would vanish or make the
/// image unreadable as its own.
pub fn image_path_component(c: &str) -> Result<(), String> {
    if c.starts_with(".wh.") {
        Err(format!(
            "{c:?} is a whiteout name (a layer reads \".wh.\" names as deletions; rename it)"
        ))
    } else {
        Ok(())
    }
}

/// Where the runtime mounts the kernel's own filesystems, which a volume
/// must never cover: over `/proc` the instance would see (and could fake)
/// its own process table; over `/dev`, device nodes the runtime makes would
/// land in the volume, on the host.
pub const KERNEL_MOUNTS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A volume's mount target in an instance: absolute, normalized (no empty
/// or `.` components, no trailing `/`), without `..`, NUL or control
/// characters, not `/` and not [`KERNEL_MOUNTS`] or below them.
pub fn volume_target(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} is not an absolute path"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{s:?} contains a control character"));
    }
    let mut parts = Vec::new();
    for part in s.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{s:?} contains \"..\"")),
            part => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(format!("{s:?} would cover the whole root"));
    }
    let target = format!("/{}", parts.join("/"));
    for kernel in KERNEL_MOUNTS {
        if target == kernel || target.starts_with(&format!("{kernel}/")) {
            return Err(format!(
                "{s:?} is on {kernel}, where the runtime mounts the kernel's own filesystem \
                 (a volume there would hide it or fill the volume with device nodes)"
            ));
        }
    }
    Ok(target)
}

/// A Debian package name (policy 5.6.7): lowercase letters, digits, `+`,
/// `-` and `.`, at least two long, starting with a letter or digit.
pub fn deb_name(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_lowercase() | b[0].is_ascii_digit()
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a Debian package name (lowercase letters, digits, '+', '-' and '.', \
             at least two characters, starting with a letter or digit)"
        ))
    }
}

/// A Debian version (policy 5.6.12): `[epoch:]upstream[-revision]`, the
/// epoch digits, the upstream starting with a digit, only the characters
/// `A-Za-z0-9.+~-` (and `:` after an epoch).
pub fn deb_version(s: &str) -> Result<(), String> {
    let (epoch, rest) = match s.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, s),
    };
    let epoch_ok = epoch.is_none_or(|e| !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()));
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    let chars = |t: &str, extra: &[u8]| {
        t.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".+~".contains(&c) || extra.contains(&c))
    };
    let ok = epoch_ok
        && upstream.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && chars(upstream, b"-:")
        && revision.is_none_or(|r| !r.is_empty() && chars(r, b""));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a Debian version (expected [epoch:]upstream[-revision], e.g. \"1.22.1-9\" or \"1:2.36-9+deb12u4\")"
        ))
    }
}

/// A version constraint of a package request: (operator, version).
pub type DebConstraint<'a> = (&'a str, &'a str);

/// A package request: `name`, `name=version`, or a name with one of
/// Debian's relation operators (`=`, `<<`, `<=`, `>=`, `>>`) and a version,
/// as `name (>= 1.22)` or `name>=1.22`. Returns the name and the
/// constraint (operator, version); [`deb_request_text`] writes it back in
/// one spelling, so requests that mean the same are the same text.
pub fn deb_request(s: &str) -> Result<(&str, Option<DebConstraint<'_>>), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| c.is_ascii_whitespace() || matches!(c, '(' | '<' | '>' | '='))
        .unwrap_or(s.len());
    let name = &s[..end];
    deb_name(name)?;
    let mut rest = s[end..].trim();
    if rest.is_empty() {
        return Ok((name, None));
    }
    if let Some(inner) = rest.strip_prefix('(') {
        rest = inner
            .strip_suffix(')')
            .ok_or_else(|| format!("{s:?}: missing `)` after the version"))?
            .trim();
    }
    let op_len = rest
        .find(|c: char| !matches!(c, '<' | '>' | '='))
        .unwrap_or(rest.len());
    let op = &rest[..op_len];
    if !["=", "<<", "<=", ">=", ">>"].contains(&op) {
        return Err(format!(
            "{s:?}: expected the name, then maybe one of = << <= >= >> and a version \
             (\"nginx\", \"nginx=1.22.1-9\", \"nginx (>= 1.22)\")"
        ));
    }
    let version = rest[op_len..].trim();
    deb_version(version)?;
    Ok((name, Some((op, version))))
}

/// A request in its one spelling: `name`, `name=version`, `name (op version)`.
pub fn deb_request_text(name: &str, constraint: Option<DebConstraint<'_>>) -> String {
    match constraint {
        None => name.to_string(),
        Some(("=", v)) => format!("{name}={v}"),
        Some((op, v)) => format!("{name} ({op} {v})"),
    }
}

/// A word of a Debian archive: suite, component or architecture names
/// (`bookworm`, `bookworm-security`, `main`, `non-free-firmware`, `amd64`).
pub fn deb_word(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a suite, component or architecture name (lowercase letters, digits, '-', '_' and '.')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_short_words() {
        for ok in [
            "zone",
            "disk",
            "example.com/rack",
            "a",
            "Z9",
            &"x".repeat(63),
        ] {
            assert!(host_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-zone",
            "zone-",
            "zo ne",
            "zone=a",
            "/x",
            "x/",
            &"x".repeat(64),
            "zöne",
        ] {
            assert!(host_label(bad).is_err(), "{bad}");
        }
        for ok in ["eu-west-1a", "ssd", "1", "a.b_c"] {
            assert!(host_label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", " a", "a\n", "-a", &"v".repeat(64)] {
            assert!(host_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debian_names_and_versions() {
        for ok in ["libc6", "g++", "nginx-light", "python3.11", "0ad"] {
            assert!(deb_name(ok).is_ok(), "{ok}");
        }
        for bad in ["a", "Nginx", "-x", "foo bar", "x/y", "", "foo_bar"] {
            assert!(deb_name(bad).is_err(), "{bad}");
        }
        for ok in [
            "1.0",
            "1:2.36-9+deb12u4",
            "1.0~rc1-1",
            "2.0-1-2",
            "0",
            "20230311",
        ] {
            assert!(deb_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a1.0", "1.0-", ":1", "x:1.0", "1.0 2", "1.0/2", "1.0-r_1",
        ] {
            assert!(deb_version(bad).is_err(), "{bad}");
        }
        assert_eq!(
            deb_request("nginx=1.22.1-9"),
            Ok(("nginx", Some(("=", "1.22.1-9"))))
        );
        assert_eq!(deb_request("libc6"), Ok(("libc6", None)));
        assert!(deb_request("nginx=").is_err());
        // Regression (issue 17): the definition refused version constraints
        // other than `=` that the resolver understands.
        for (text, shown) in [
            ("libc6 (<< 2.34)", "libc6 (<< 2.34)"),
            ("libc6<<2.34", "libc6 (<< 2.34)"),
            (" nginx >= 1.22 ", "nginx (>= 1.22)"),
            ("nginx = 1.22.1-9", "nginx=1.22.1-9"),
            ("nginx(>>1:1.0)", "nginx (>> 1:1.0)"),
        ] {
            let (name, c) = deb_request(text).unwrap();
            assert_eq!(deb_request_text(name, c), shown, "{text}");
        }
        for bad in [
            "nginx (>= 1.22",
            "nginx < 1.0",
            "nginx >=",
            "nginx ~ 1",
            "nginx (>= 1) x",
        ] {
            assert!(deb_request(bad).is_err(), "{bad}");
        }
        assert!(deb_word("bookworm-security").is_ok());
        assert!(deb_word("Main").is_err());
    }

    #[test]
    fn instance_limits_refuse_nonsense() {
        assert_eq!(memory_limit("6m"), Ok(6 << 20));
        assert_eq!(memory_limit("1g"), Ok(1 << 30));
        for bad in ["1", "5m", "0", "17000g", "lots"] {
            assert!(memory_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(cpu_limit("0.5"), Ok(500));
        assert_eq!(cpu_limit("2"), Ok(2000));
        assert_eq!(cpu_limit("0.01"), Ok(10));
        for bad in ["0", "0.001", "-1", "nan", "inf", "1e3", "1025", "", "1..2"] {
            assert!(cpu_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(pids_limit("1"), Ok(1));
        assert_eq!(nofile_limit("65536"), Ok(65536));
        for bad in ["0", "-1", "+5", "4194305", "x"] {
            assert!(pids_limit(bad).is_err(), "{bad}");
        }
        for bad in ["0", "7", "1048577"] {
            assert!(nofile_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_targets_are_normalized_and_stay_off_kernel_filesystems() {
        assert_eq!(volume_target("/var//lib/./x/"), Ok("/var/lib/x".into()));
        assert_eq!(volume_target("/procfs"), Ok("/procfs".into()));
        for bad in [
            "/",
            "//",
            "rel",
            "/a/../b",
            "/proc",
            "//proc/",
            "/./dev/shm",
            "/sys/fs",
            "/a\0b",
        ] {
            assert!(volume_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_rules() {
        assert!(c_string("a\nb").is_ok());
        assert!(c_string("a\0b").is_err());
        assert!(label_key("org.example").is_ok());
        for bad in ["", "a\nb", "a\0"] {
            assert!(label_key(bad).is_err(), "{bad:?}");
        }
        assert!(image_path_component(".whx").is_ok());
        assert!(image_path_component(".wh.passwd").is_err());
        assert!(image_path_component(".wh..wh..opq").is_err());
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("0", 0),
            ("0s", 0),
            ("500ms", 500),
            ("5s", 5_000),
            ("1m", 60_000),
            ("1m30s", 90_000),
            ("1h2m3s4ms", 3_723_004),
            ("90s", 90_000),
        ] {
            assert_eq!(duration_ms(text), Ok(ms), "{text}");
            if ms > 0 {
                assert_eq!(duration_ms(&format_duration(ms)), Ok(ms));
            }
        }
        for bad in [
            "", "5", "s", "1.5s", "-1s", "1s1m", "1s1s", "5 s", "1d", "+5s",
        ] {
            assert!(duration_ms(bad).is_err(), "{bad:?} parsed");
        }
        assert!(
            duration_ms("99999999999999999999h")
                .unwrap_err()
                .contains("too long")
        );
        assert_eq!(format_duration(90_000), "1m30s");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn ages() {
        assert_eq!(age_ms("14d"), Ok(14 * 86_400_000));
        assert_eq!(age_ms("0"), Ok(0));
        assert_eq!(age_ms("12h"), Ok(12 * 3_600_000));
        for bad in ["d", "-1d", "1.5d", "14 d", "soon", "99999999999999999999d"] {
            assert!(age_ms(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("1", 1),
            ("1048576", 1 << 20),
            ("512k", 512 << 10),
            ("256m", 256 << 20),
            ("256M", 256 << 20),
            ("256MB", 256 << 20),
            ("1g", 1 << 30),
            (" 2G ", 2 << 30),
        ] {
            assert_eq!(size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "0",
            "0m",
            "k",
            "1.5g",
            "-1",
            "1t",
            "1GiB",
            "99999999999999999g",
        ] {
            let e = size(bad).unwrap_err();
            assert!(e.contains("is not a size"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn signals_normalize() {
        for (input, canonical, number) in [
            ("SIGTERM", "SIGTERM", 15),
            ("term", "SIGTERM", 15),
            ("Sigint", "SIGINT", 2),
            ("9", "SIGKILL", 9),
            ("SIGIOT", "SIGABRT", 6),
            ("poll", "SIGIO", 29),
            ("SIGRTMIN", "SIGRTMIN", 34),
            ("34", "SIGRTMIN", 34),
            ("SIGRTMIN+3", "SIGRTMIN+3", 37),
            ("37", "SIGRTMIN+3", 37),
            ("SIGRTMAX-1", "SIGRTMIN+29", 63),
            ("64", "SIGRTMAX", 64),
            ("SIGRTMAX", "SIGRTMAX", 64),
            ("RTMIN+30", "SIGRTMAX", 64),
        ] {
            let s = signal(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!((s.to_string().as_str(), s.number()), (canonical, number));
            // The canonical name reads back as the same signal.
            assert_eq!(signal(&s.to_string()), Ok(s), "{input}");
        }
        for bad in [
            "",
            "SIG",
            "SIGNOPE",
            "0",
            "32",
            "33",
            "65",
            "+9",
            "SIGRTMIN+31",
            "SIGRTMAX-31",
            "SIGRTMIN+-1",
        ] {
            let e = signal(bad).unwrap_err();
            assert!(e.contains("is not a signal"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn names() {
        for good in ["a", "web-1", "A.b_c", &"x".repeat(128)] {
            assert_eq!(name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "a b",
            "a/b",
            "a:b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "a", "a1", "a.b", "a_b", "a__b", "a---b", "team/web", "x/y/z9",
        ] {
            assert_eq!(repository(good), Ok(()), "{good}");
        }
        for bad in [
            "A", "a___b", "a._b", "/a", "a//b", "a.", "é", "a..b", "-a", "a/", "a_-b", "",
        ] {
            assert!(repository(bad).is_err(), "{bad}");
        }
        assert_eq!(tag(&"a".repeat(128)), Ok(()));
        assert_eq!(tag("_x"), Ok(()));
        for bad in [".v1", "-v1", "v1+build", "", "ta/g", &"a".repeat(129)] {
            assert!(tag(bad).is_err(), "{bad:?}");
        }
        for good in ["app:1", "team/web:1.0", "a:_x"] {
            assert_eq!(tagged_name(good), Ok(()), "{good}");
        }
        for bad in [
            "app", "Bad:1", "a b:1", "x:", "_x:1", "x:.1", "x:ta/g", ":1",
        ] {
            assert!(tagged_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn users_env_names_modes_owners_ports() {
        for good in [
            "0",
            "1000:1000",
            "nobody",
            "www-data:www-data",
            "app:0",
            "_x",
        ] {
            assert_eq!(user(good), Ok(()), "{good}");
        }
        for bad in ["", ":", "1000:", ":1000", "a:b:c", "4294967296", "1x", "-a"] {
            assert!(user(bad).is_err(), "{bad}");
        }
        assert!(env_name("_A1").is_ok() && env_name("").is_err() && env_name("A-B").is_err());
        assert_eq!(mode("0644"), Ok(0o644));
        assert_eq!(mode("4755"), Ok(0o4755));
        for bad in ["", "0999", "17777", "+644", "0x1"] {
            assert!(mode(bad).is_err(), "{bad}");
        }
        assert_eq!(owner("1000:100"), Ok((1000, 100)));
        for bad in ["1000", "a:b", "+1:1", "1:", "4294967296:0"] {
            assert!(owner(bad).is_err(), "{bad}");
        }
        assert_eq!(exposed_port("8080").as_deref(), Some("8080/tcp"));
        assert_eq!(exposed_port("53/udp").as_deref(), Some("53/udp"));
        for bad in ["0", "65536", "80/http", "", "+80"] {
            assert_eq!(exposed_port(bad), None, "{bad}");
        }
    }
}
