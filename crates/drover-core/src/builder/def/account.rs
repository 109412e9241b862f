//! `[[account]]` (or `accounts = [...]`): users and groups with fixed ids,
//! checked here against each other; against the image's own
//! `/etc/passwd` and `/etc/group` they are checked by the build
//! (`builder::accounts`), which is the first to see those.

use std::collections::HashMap;

use super::parse::{Def, normalize_absolute};
use super::{Account, DEFAULT_SHELL};
use crate::error::Result;
use crate::grammar;
use crate::toml_doc::{Node, Table, Value, index_key};

const ACCOUNT_KEYS: &[&str] = &["name", "uid", "gid", "group", "home", "shell", "groups"];

impl Def<'_> {
    /// The accounts of the document `top`: `[[account]]` or its alias
    /// `accounts`, not both.
    pub(super) fn accounts(&self, top: &Table<'_>) -> Result<Vec<Account>> {
        let (key, node) = match (top.get("account"), top.get("accounts")) {
            (None, None) => return Ok(Vec::new()),
            (Some(_), Some(n)) => {
                return Err(self.err(
                    n.at(),
                    "accounts",
                    "an alias of [[account]]; use one of them, not both",
                ));
            }
            (Some(n), None) => ("account", n),
            (None, Some(n)) => ("accounts", n),
        };
        let items = self.array(node, key, "an array of tables ([[account]])")?;
        let mut out: Vec<Account> = Vec::with_capacity(items.len());
        // Group name → (gid, where); gid → group name.
        let mut groups: HashMap<String, u32> = HashMap::new();
        let mut gids: HashMap<u32, String> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let path = index_key(key, i);
            let t = self.table(item, &path, ACCOUNT_KEYS)?;
            let a = self.account(&t)?;
            let at = |k: &str| t.get(k).map_or(t.at, Node::at);
            if let Some(other) = out.iter().find(|o| o.name == a.name) {
                return Err(self.err(
                    at("name"),
                    &t.key("name"),
                    format!("{:?} is declared twice (uid {} before)", a.name, other.uid),
                ));
            }
            if let Some(other) = out.iter().find(|o| o.uid == a.uid) {
                return Err(self.err(
                    at("uid"),
                    &t.key("uid"),
                    format!("uid {} is {:?}'s already", a.uid, other.name),
                ));
            }
            let group_at = if t.get("gid").is_some() {
                "gid"
            } else {
                "group"
            };
            match (groups.get(&a.group), gids.get(&a.gid)) {
                (Some(gid), _) if *gid != a.gid => {
                    return Err(self.err(
                        at(group_at),
                        &t.key(group_at),
                        format!(
                            "group {:?} has gid {gid} in an earlier account, not {}",
                            a.group, a.gid
                        ),
                    ));
                }
                (_, Some(name)) if *name != a.group => {
                    return Err(self.err(
                        at(group_at),
                        &t.key(group_at),
                        format!(
                            "gid {} is group {name:?}'s in an earlier account, not {:?}'s \
                             (name the group: group = {name:?})",
                            a.gid, a.group
                        ),
                    ));
                }
                _ => {}
            }
            groups.insert(a.group.clone(), a.gid);
            gids.insert(a.gid, a.group.clone());
            out.push(a);
        }
        Ok(out)
    }

    fn account(&self, t: &Table<'_>) -> Result<Account> {
        let name_node = self.required(t, "name", "the user name, e.g. name = \"app\"")?;
        let name = self.account_name(name_node, &t.key("name"))?;
        let uid_node = self.required(t, "uid", "the user id, e.g. uid = 10001")?;
        let uid = self.id(uid_node, &t.key("uid"))?;
        let gid = match t.get("gid") {
            Some(n) => self.id(n, &t.key("gid"))?,
            None => uid,
        };
        let group = match t.get("group") {
            Some(n) => self.account_name(n, &t.key("group"))?,
            None => name.clone(),
        };
        let home = match t.get("home") {
            Some(n) => self.account_path(n, &t.key("home"))?,
            None => format!("/home/{name}"),
        };
        let shell = match t.get("shell") {
            Some(n) => self.account_path(n, &t.key("shell"))?,
            None => DEFAULT_SHELL.to_string(),
        };
        let mut groups: Vec<String> = Vec::new();
        if let Some(n) = t.get("groups") {
            let key = t.key("groups");
            for (i, item) in self
                .array(n, &key, "an array of group names")?
                .iter()
                .enumerate()
            {
                let k = index_key(&key, i);
                let g = self.account_name(item, &k)?;
                if groups.contains(&g) {
                    return Err(self.err(item.at(), &k, format!("{g:?} is listed twice")));
                }
                groups.push(g);
            }
        }
        Ok(Account {
            name,
            uid,
            gid,
            group,
            home,
            shell,
            groups,
        })
    }

    fn account_name(&self, node: &Node, key: &str) -> Result<String> {
        let s = self.string(node, key)?;
        grammar::account_name(s).map_err(|e| self.err(node.at(), key, e))?;
        Ok(s.to_string())
    }

    /// A user or group id: 0 to 4294967294 (-1 means "no id" to the kernel).
    fn id(&self, node: &Node, key: &str) -> Result<u32> {
        let n = match node.value {
            Value::Integer(n) => n,
            _ => return Err(self.wrong_type(node, key, "an integer id such as 10001")),
        };
        u32::try_from(n)
            .ok()
            .filter(|n| *n != u32::MAX)
            .ok_or_else(|| {
                self.err(
                    node.at(),
                    key,
                    format!("{n} is not an id (expected 0 to 4294967294)"),
                )
            })
    }

    /// A home or shell: absolute, normalized, and fit for a passwd field.
    fn account_path(&self, node: &Node, key: &str) -> Result<String> {
        let s = self.string(node, key)?;
        if s.contains(':') || s.chars().any(char::is_control) {
            return Err(self.err(
                node.at(),
                key,
                format!("{s:?} cannot be a passwd field (no ':' or control characters)"),
            ));
        }
        normalize_absolute(s).map_err(|e| self.err(node.at(), key, e))
    }
}
