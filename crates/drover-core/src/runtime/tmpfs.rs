//! Writable scratch paths an image or a service declares (`tmpfs = [...]`
//! in `drover.toml`'s `[config]` and in a fleet file's service): what they
//! are, the one reader of their TOML form, their image label and how a
//! service's list goes over its image's.
//!
//! The root is read-only, so a program that writes under `/var/lib/nginx`
//! or `/var/log/nginx` needs a mount there. Each is a size-limited tmpfs
//! (`nosuid,nodev`, mode 0755) owned by the instance's user, mounted by
//! the runtime after `/tmp` and `/run` (see `spec::generate`); nothing in
//! it outlives the instance. The OCI image config has no tmpfs field, so
//! an image carries its list as the label [`LABEL`] (JSON), as it carries
//! its health check.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grammar;
use crate::toml_doc::{Checker, Node, Value, index_key};

/// The image label that carries the image's tmpfs list, as JSON.
pub const LABEL: &str = "vnd.drover.tmpfs";

/// The size of a tmpfs that does not give one.
pub const DEFAULT_BYTES: u64 = 64 << 20;

/// Paths drover mounts a tmpfs on already (their size is `--tmp-size`).
const BUILT_IN: [&str; 2] = ["/tmp", "/run"];

/// One tmpfs mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    /// Absolute and normalized; never `/`, nor on `/proc`, `/sys` or `/dev`.
    pub path: String,
    /// Its size limit in bytes.
    pub size: u64,
}

impl Tmpfs {
    /// Whether its mount point lies in another tmpfs drover mounts first
    /// (`/run/nginx`): the runtime makes it there, so the image need not
    /// have it.
    pub fn inside_built_in(&self) -> bool {
        BUILT_IN
            .iter()
            .any(|b| self.path.starts_with(&format!("{b}/")))
    }
}

/// A tmpfs path: absolute, normalized, not `/`, not on the kernel's
/// filesystems (`/proc`, `/sys`, `/dev`) and not `/tmp` or `/run`
/// themselves, which are tmpfs already.
pub fn check_path(s: &str) -> std::result::Result<String, String> {
    let path = grammar::volume_target(s).map_err(|e| {
        if e.contains("where the runtime mounts") {
            format!(
                "{s:?} is on a kernel filesystem (/proc, /sys, /dev), which the runtime mounts \
                 itself"
            )
        } else {
            e
        }
    })?;
    if BUILT_IN.contains(&path.as_str()) {
        return Err(format!(
            "{path} is a tmpfs in every instance already (its size is `drover run --tmp-size`)"
        ));
    }
    Ok(path)
}

/// Reads a `tmpfs` array at `node` (`key` is its dotted path): each item
/// `"/path"` or `{ path = "/path", size = "64m" }`. Paths are checked by
/// [`check_path`], sizes by [`grammar::size`]; a path listed twice is an
/// error. Sorted by path, so a mount inside another comes after it.
pub(crate) fn parse(c: &Checker<'_>, node: &Node, key: &str) -> Result<Vec<Tmpfs>> {
    let items = c.array(
        node,
        key,
        "an array of paths or { path = \"...\", size = \"64m\" } tables",
    )?;
    let mut out: Vec<Tmpfs> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let k = index_key(key, i);
        let (path_node, size) = match &item.value {
            Value::String(_) => (item, DEFAULT_BYTES),
            Value::Table(_) => {
                let t = c.table(item, &k, &["path", "size"])?;
                let p = c.required(
                    &t,
                    "path",
                    "the mount point, e.g. path = \"/var/cache/app\"",
                )?;
                let size = match t.get("size") {
                    None => DEFAULT_BYTES,
                    Some(n) => {
                        let sk = t.key("size");
                        let s = match &n.value {
                            Value::String(s) => s,
                            Value::Integer(_) => {
                                return Err(c.err(
                                    n.at(),
                                    &sk,
                                    "expected a size string such as \"64m\", found an integer \
                                     (add a unit, or quote a number of bytes)",
                                ));
                            }
                            _ => return Err(c.wrong_type(n, &sk, "a size such as \"64m\"")),
                        };
                        grammar::size(s).map_err(|e| c.err(n.at(), &sk, e))?
                    }
                };
                (p, size)
            }
            _ => {
                return Err(c.wrong_type(
                    item,
                    &k,
                    "a path or a { path = \"...\", size = \"64m\" } table",
                ));
            }
        };
        let pk = if matches!(item.value, Value::Table(_)) {
            format!("{k}.path")
        } else {
            k.clone()
        };
        let raw = c.string(path_node, &pk)?;
        let path = check_path(raw).map_err(|e| c.err(path_node.at(), &pk, e))?;
        if out.iter().any(|t| t.path == path) {
            return Err(c.err(path_node.at(), &pk, format!("{path} is listed twice")));
        }
        out.push(Tmpfs { path, size });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The label value for `list` (canonical JSON: sorted, compact).
pub fn to_label(list: &[Tmpfs]) -> String {
    serde_json::to_string(list).expect("tmpfs entries serialize")
}

/// The tmpfs list an image's `labels` declare (none without [`LABEL`]).
/// An image is untrusted input: every path is checked as the builder
/// checks it, and the image is named in the error.
pub fn of_labels(labels: &BTreeMap<String, String>, image: &str) -> Result<Vec<Tmpfs>> {
    let Some(json) = labels.get(LABEL) else {
        return Ok(Vec::new());
    };
    let bad =
        |why: String| Error::corrupt(format!("image {image}"), format!("label {LABEL}: {why}"));
    let list: Vec<Tmpfs> = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut out: Vec<Tmpfs> = Vec::with_capacity(list.len());
    for t in list {
        let path = check_path(&t.path).map_err(bad)?;
        if t.size == 0 {
            return Err(bad(format!("{path}: size 0")));
        }
        if out.iter().any(|o| o.path == path) {
            return Err(bad(format!("{path} is listed twice")));
        }
        out.push(Tmpfs { path, size: t.size });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A service's tmpfs list over its image's: the union, the service's size
/// winning where both name a path. Sorted by path.
pub fn overlay(image: &[Tmpfs], service: &[Tmpfs]) -> Vec<Tmpfs> {
    let mut by_path: BTreeMap<&str, &Tmpfs> = image.iter().map(|t| (t.path.as_str(), t)).collect();
    for t in service {
        by_path.insert(&t.path, t);
    }
    by_path.into_values().cloned().collect()
}

/// `"/var/cache/app"` or `"/var/cache/app:128m"` (`drover run --tmpfs`).
pub fn parse_flag(s: &str) -> std::result::Result<Tmpfs, String> {
    let (path, size) = match s.rsplit_once(':') {
        Some((p, size)) => (p, grammar::size(size)?),
        None => (s, DEFAULT_BYTES),
    };
    Ok(Tmpfs {
        path: check_path(path)?,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str, size: u64) -> Tmpfs {
        Tmpfs {
            path: path.into(),
            size,
        }
    }

    #[test]
    fn paths_that_are_not_ours_to_cover_are_refused() {
        assert_eq!(check_path("/var/lib//nginx/").unwrap(), "/var/lib/nginx");
        assert_eq!(check_path("/run/nginx").unwrap(), "/run/nginx");
        for bad in [
            "/", "var/x", "/proc", "/proc/x", "/sys/fs", "/dev", "/dev/shm", "/a/../b", "/tmp",
            "/run", "/run/",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(
            check_path("/dev/x")
                .unwrap_err()
                .contains("kernel filesystem")
        );
        assert!(t("/run/nginx", 1).inside_built_in());
        assert!(!t("/running", 1).inside_built_in());
    }

    fn parse_text(text: &str) -> Result<Vec<Tmpfs>> {
        let file = std::path::Path::new("x.toml");
        let (root, c) = crate::toml_doc::parse(text, file)?;
        let top = c.table(&root, "", &["tmpfs"])?;
        parse(&c, top.get("tmpfs").unwrap(), "tmpfs")
    }

    #[test]
    fn the_toml_form_takes_paths_and_tables_and_says_what_is_wrong() {
        let got = parse_text(
            "tmpfs = [\"/var/log/nginx\", { path = \"/var/cache/nginx\", size = \"8m\" }]",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                t("/var/cache/nginx", 8 << 20),
                t("/var/log/nginx", DEFAULT_BYTES)
            ]
        );
        for (text, want) in [
            ("tmpfs = [\"/a\", \"/a/\"]", "tmpfs[1]: /a is listed twice"),
            (
                "tmpfs = [\"/proc/x\"]",
                "tmpfs[0]: \"/proc/x\" is on a kernel",
            ),
            (
                "tmpfs = [{ path = \"/a\", size = 5 }]",
                "tmpfs[0].size: expected a size string",
            ),
            (
                "tmpfs = [{ path = \"/a\", size = \"lots\" }]",
                "is not a size",
            ),
            (
                "tmpfs = [{ size = \"1m\" }]",
                "tmpfs[0].path: missing required key",
            ),
            (
                "tmpfs = [{ path = \"/a\", mode = \"1777\" }]",
                "tmpfs[0].mode: unknown key",
            ),
            ("tmpfs = [3]", "tmpfs[0]: expected a path"),
            ("tmpfs = \"/a\"", "tmpfs: expected an array"),
        ] {
            let e = parse_text(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_label_round_trips_and_a_hostile_one_is_refused() {
        let list = vec![t("/a", 1), t("/b/c", 2 << 20)];
        let mut labels = BTreeMap::new();
        labels.insert(LABEL.to_string(), to_label(&list));
        assert_eq!(of_labels(&labels, "x").unwrap(), list);
        assert_eq!(of_labels(&BTreeMap::new(), "x").unwrap(), vec![]);
        for bad in [
            r#"[{"path":"/","size":1}]"#,
            r#"[{"path":"/proc","size":1}]"#,
            r#"[{"path":"/a","size":0}]"#,
            r#"[{"path":"/a","size":1},{"path":"/a/","size":1}]"#,
            r#"{"path":"/a"}"#,
        ] {
            labels.insert(LABEL.to_string(), bad.to_string());
            let e = of_labels(&labels, "x").unwrap_err().to_string();
            assert!(e.contains(LABEL), "{bad}: {e}");
        }
    }

    #[test]
    fn a_service_adds_to_and_resizes_its_images_list() {
        let image = [t("/a", 1), t("/b", 1)];
        let service = [t("/b", 9), t("/0", 2)];
        assert_eq!(
            overlay(&image, &service),
            [t("/0", 2), t("/a", 1), t("/b", 9)]
        );
    }

    #[test]
    fn the_run_flag_takes_an_optional_size() {
        assert_eq!(parse_flag("/a").unwrap(), t("/a", DEFAULT_BYTES));
        assert_eq!(parse_flag("/a:1m").unwrap(), t("/a", 1 << 20));
        assert!(parse_flag("/a:x").is_err());
        assert!(parse_flag("/dev").is_err());
    }
}
