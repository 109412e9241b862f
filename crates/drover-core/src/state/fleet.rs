//! Fleet-wide settings (`fleet_settings`): one row per key, each with who
//! set it and when, and a ledger entry for every change.
//!
//! | key | value | set by |
//! |-----|-------|--------|
//! | [`POLICY`] | the fleet's deploy policy, as a `policy.toml` text | `drover policy set FILE` |
//! | [`REGISTRY`] | the fleet's registry, `<registry>/<repository>` | `drover fleet registry set` |
//!
//! A setting is the fleet's when the state is shared (PostgreSQL); on a
//! store of its own (SQLite) it is that store's, and means the same.

use serde::Serialize;
use serde_json::json;

use super::sql::{OptionalExtension, params};
use super::{Db, DbContext, Reader};
use crate::clock;
use crate::error::Result;
use crate::ledger::NewEntry;

/// The key of the fleet's deploy policy.
pub const POLICY: &str = "policy";
/// The key of the fleet's registry.
pub const REGISTRY: &str = "registry";

/// One fleet-wide setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetSetting {
    pub key: String,
    pub value: String,
    /// When it was set (RFC 3339).
    pub updated: String,
    /// Who set it (`ledger::actor`).
    pub actor: String,
}

impl Reader<'_> {
    /// The fleet-wide setting `key`, if it is set.
    pub fn fleet_setting(&self, key: &str) -> Result<Option<FleetSetting>> {
        self.sql()
            .query_row(
                "SELECT key, value, updated, actor FROM fleet_settings WHERE key = ?1",
                [key],
                |r| {
                    Ok(FleetSetting {
                        key: r.get(0)?,
                        value: r.get(1)?,
                        updated: r.get(2)?,
                        actor: r.get(3)?,
                    })
                },
            )
            .optional()
            .db_ctx(self.path())
    }
}

impl Db {
    /// Set (`Some`) or clear (`None`) the fleet-wide setting `key`,
    /// recording `action` in the ledger with `details` (the setting's key
    /// and new value are added to them). Returns whether anything changed.
    pub fn set_fleet_setting(
        &mut self,
        key: &str,
        value: Option<&str>,
        action: &str,
        details: serde_json::Value,
    ) -> Result<bool> {
        self.write(|tx| {
            let was = tx.read().fleet_setting(key)?;
            if was.as_ref().map(|s| s.value.as_str()) == value {
                return Ok(false);
            }
            match value {
                Some(v) => tx
                    .sql()
                    .execute(
                        "INSERT INTO fleet_settings (key, value, updated, actor) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO UPDATE SET \
                         value = excluded.value, updated = excluded.updated, \
                         actor = excluded.actor",
                        params![key, v, clock::now_rfc3339(), crate::ledger::actor()],
                    )
                    .db_ctx(tx.path())?,
                None => tx
                    .sql()
                    .execute("DELETE FROM fleet_settings WHERE key = ?1", [key])
                    .db_ctx(tx.path())?,
            };
            let mut d = json!({"key": key, "value": value});
            if let (Some(m), serde_json::Value::Object(extra)) = (d.as_object_mut(), details) {
                m.extend(extra);
            }
            tx.record(NewEntry::new(action, [key], d))?;
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::state::FILE_NAME;
    use crate::state::pgtest::{self, backends};

    backends! {
        fn settings_are_set_read_cleared_and_ledgered() {
            let dir = tempfile::tempdir().unwrap();
            let mut db = pgtest::open(&dir.path().join(FILE_NAME)).unwrap();
            assert_eq!(db.read().fleet_setting("registry").unwrap(), None);
            let d = serde_json::json!({});
            let set = |db: &mut crate::state::Db, v: Option<&str>, a: &str| {
                db.set_fleet_setting("registry", v, a, d.clone()).unwrap()
            };
            assert!(set(&mut db, Some("r.example/fleet"), "fleet.set"));
            assert!(!set(&mut db, Some("r.example/fleet"), "fleet.set"), "unchanged");
            let s = db.read().fleet_setting("registry").unwrap().unwrap();
            assert_eq!(s.value, "r.example/fleet");
            assert!(set(&mut db, None, "fleet.unset"));
            assert_eq!(db.read().fleet_setting("registry").unwrap(), None);
            let actions: Vec<String> = db
                .read()
                .ledger(&crate::ledger::Filter::default())
                .unwrap()
                .into_iter()
                .map(|e| e.action)
                .collect();
            assert!(actions.ends_with(&["fleet.set".into(), "fleet.unset".into()]), "{actions:?}");
        }
    }
}
