//! Which machine, and which boot of it, a process belongs to.
//!
//! A pid and its start time name a process only on one boot of one
//! machine: after a reboot, or in a store restored on another host (or
//! copied by hand), the same numbers may name an unrelated process. Every
//! instance therefore records the host identity its monitor and process
//! were started under ([`HostId`]: `/etc/machine-id`, else
//! `/var/lib/dbus/machine-id`, and `/proc/sys/kernel/random/boot_id`), and
//! an instance recorded under another identity is never alive here,
//! whatever its pid says: it is *lost* (see `super::refresh`).
//!
//! A machine without a machine id (a minimal container) records none, and
//! the comparison then rests on the boot id alone; rows from before this
//! was recorded carry no identity and fall back to pid and start time.

use std::sync::OnceLock;

use serde::Serialize;

/// The identity of this boot of this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostId {
    /// `/etc/machine-id` (or `/var/lib/dbus/machine-id`), if the host has one.
    pub machine_id: Option<String>,
    /// `/proc/sys/kernel/random/boot_id`: new at every boot.
    pub boot_id: Option<String>,
}

impl HostId {
    /// Whether an instance recorded under `machine_id`/`boot_id` may have
    /// a process on this boot of this machine. Unrecorded values (rows from
    /// before identities were kept, a host without a machine id) do not
    /// count against it.
    pub fn admits(&self, machine_id: Option<&str>, boot_id: Option<&str>) -> bool {
        let same = |recorded: Option<&str>, here: &Option<String>| match (recorded, here) {
            (Some(r), Some(h)) => r == h,
            _ => true,
        };
        same(machine_id, &self.machine_id) && same(boot_id, &self.boot_id)
    }

    /// `machine <id>, boot <id>` for messages (ids shortened).
    pub fn describe(machine_id: Option<&str>, boot_id: Option<&str>) -> String {
        let short =
            |v: Option<&str>| v.map_or("unknown".to_string(), |v| v.chars().take(12).collect());
        format!("machine {}, boot {}", short(machine_id), short(boot_id))
    }
}

/// This host's identity, read once per process.
pub fn current() -> &'static HostId {
    static HOST: OnceLock<HostId> = OnceLock::new();
    HOST.get_or_init(|| HostId {
        machine_id: ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|p| read_id(p)),
        boot_id: read_id("/proc/sys/kernel/random/boot_id"),
    })
}

fn read_id(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let id = text.trim();
    (!id.is_empty() && id.len() <= 128).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_boot_has_a_boot_id_and_admits_itself() {
        let here = current();
        assert!(here.boot_id.is_some(), "no boot id on this Linux host?");
        assert!(here.admits(here.machine_id.as_deref(), here.boot_id.as_deref()));
    }

    #[test]
    fn another_boot_or_machine_is_refused_and_unrecorded_values_are_not() {
        let here = HostId {
            machine_id: Some("m1".into()),
            boot_id: Some("b1".into()),
        };
        assert!(!here.admits(Some("m1"), Some("b2")), "an earlier boot");
        assert!(!here.admits(Some("m2"), Some("b1")), "another machine");
        assert!(here.admits(None, None), "a row from before identities");
        assert!(here.admits(None, Some("b1")));
        let no_machine = HostId {
            machine_id: None,
            boot_id: Some("b1".into()),
        };
        assert!(no_machine.admits(Some("m2"), Some("b1")));
        assert!(!no_machine.admits(Some("m2"), Some("b2")));
    }
}
