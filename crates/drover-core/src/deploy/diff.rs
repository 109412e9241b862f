//! What differs, field by field: between two release contents (image and
//! [`ReleaseConfig`]) and between two rollout settings ([`Rollout`]). One
//! mechanism for everything that shows a difference to people — `plan`'s
//! changes, `status`'s out-of-sync report, and what a fallback release
//! differs in from the fleet — so they all name fields the same way:
//!
//! ```text
//! image: sha256:ab12cd34ef56… -> sha256:9f8e7d6c5b4a… (web:1.1)
//! env.MODE: "a" -> "b"
//! env.DEBUG: (unset) -> "1"
//! env.PASSWORD: (secret) changed
//! replicas: 2 -> 3
//! strategy: rolling (max_surge 1, max_unavailable 0) -> recreate
//! ```
//!
//! The comparison runs over the serde form of the two values, so a field
//! added to either type shows up here without a line of code. An env value
//! whose name either side marks secret (`secret_env`) is never printed:
//! the change says only that it changed (or appeared, or went).

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::release::Release;
use super::spec::{ReleaseConfig, Rollout};
use crate::digest::Digest;

/// What a secret value shows as.
pub const SECRET: &str = "(secret)";

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Dotted: `image`, `env.MODE`, `limits.memory_bytes`, `replicas`.
    pub field: String,
    /// The value before, rendered (strings quoted); `None`: unset. A secret
    /// value is [`SECRET`], never the value.
    pub old: Option<String>,
    pub new: Option<String>,
    /// The value is secret: `old` and `new` only say whether it is set.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        if self.secret && self.old.is_some() && self.new.is_some() {
            return write!(f, "{}: {SECRET} changed", self.field);
        }
        write!(
            f,
            "{}: {} -> {}",
            self.field,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// A release content: what runs.
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub image: &'a Digest,
    /// The image as the fleet file wrote it (`web:1.1`), for people.
    pub image_ref: &'a str,
    pub config: &'a ReleaseConfig,
}

impl<'a> Content<'a> {
    /// What release `r` runs.
    pub fn of(r: &'a Release) -> Self {
        Content {
            image: &r.image,
            image_ref: &r.image_ref,
            config: &r.config,
        }
    }
}

/// Every field in which release content `new` differs from `old`, image
/// first, then the config's fields by name.
pub fn content(old: &Content<'_>, new: &Content<'_>) -> Vec<Change> {
    let mut out = Vec::new();
    if old.image != new.image {
        out.push(Change {
            field: "image".into(),
            old: Some(short(old.image)),
            new: Some(format!("{} ({})", short(new.image), new.image_ref)),
            secret: false,
        });
    }
    let secret = |name: &str| {
        old.config.secret_env.iter().any(|s| s == name)
            || new.config.secret_env.iter().any(|s| s == name)
    };
    let (a, b) = (json(old.config), json(new.config));
    walk("", Some(&a), Some(&b), &|_| false, &mut out);
    for c in &mut out {
        if let Some(name) = c.field.strip_prefix("env.")
            && secret(name)
        {
            c.secret = true;
            c.old = c.old.as_ref().map(|_| SECRET.into());
            c.new = c.new.as_ref().map(|_| SECRET.into());
        }
    }
    out
}

/// Every rollout setting in which `new` differs from `old` (these change
/// without a new release).
pub fn rollout(old: &Rollout, new: &Rollout) -> Vec<Change> {
    let mut out = Vec::new();
    walk(
        "",
        Some(&json(old)),
        Some(&json(new)),
        &|field| field == "strategy",
        &mut out,
    );
    out
}

fn json(v: &impl Serialize) -> Value {
    serde_json::to_value(v).expect("deploy types serialize")
}

fn short(d: &Digest) -> String {
    format!("sha256:{}…", d.short())
}

/// Compare `a` and `b` at `field`: objects field by field (unless `whole`
/// says to take the field as one value), everything else as one value.
fn walk(
    field: &str,
    a: Option<&Value>,
    b: Option<&Value>,
    whole: &dyn Fn(&str) -> bool,
    out: &mut Vec<Change>,
) {
    // A null is an unset optional field.
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    if a == b {
        return;
    }
    let objects = (a.and_then(Value::as_object), b.and_then(Value::as_object));
    let recurse = !whole(field)
        && match objects {
            (Some(_), Some(_)) => true,
            (Some(_), None) => b.is_none(),
            (None, Some(_)) => a.is_none(),
            (None, None) => false,
        };
    if recurse {
        let mut keys: Vec<&String> = objects.0.into_iter().flat_map(|o| o.keys()).collect();
        keys.extend(objects.1.into_iter().flat_map(|o| o.keys()));
        keys.sort();
        keys.dedup();
        for k in keys {
            let sub = if field.is_empty() {
                k.clone()
            } else {
                format!("{field}.{k}")
            };
            walk(
                &sub,
                objects.0.and_then(|o| o.get(k)),
                objects.1.and_then(|o| o.get(k)),
                whole,
                out,
            );
        }
        return;
    }
    out.push(Change {
        field: field.to_string(),
        old: a.map(render),
        new: b.map(render),
        secret: false,
    });
}

/// A value for people: strings quoted, numbers and lists as JSON, a tagged
/// object (`{"kind": "rolling", "max_surge": 1}`) as `rolling (max_surge 1)`.
fn render(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let kind = o.get("kind").and_then(Value::as_str);
            let rest: Vec<String> = o
                .iter()
                .filter(|(k, _)| k.as_str() != "kind" || kind.is_none())
                .map(|(k, v)| format!("{k} {}", render(v)))
                .collect();
            match (kind, rest.is_empty()) {
                (Some(k), true) => k.to_string(),
                (Some(k), false) => format!("{k} ({})", rest.join(", ")),
                (None, _) => format!("{{{}}}", rest.join(", ")),
            }
        }
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests;
