//! `scripts = true`: a packages layer's maintainer scripts, run in the
//! build sandbox on the image so far, as dpkg runs them when it installs
//! the packages; what they change is one more layer right above the
//! packages layer (`scripts of layer[N]`).
//!
//! The files are already in place (the packages layer unpacked them and
//! wrote the dpkg database, scripts in `/var/lib/dpkg/info`), so a small
//! `/bin/sh` driver ([`DRIVER`]) does what is left of `dpkg --install`:
//! every package's `preinst install`, then every `postinst configure ""`,
//! each package after what it depends on ([`configure_order`]), then
//! `postinst triggered "<names>"` for each package interested in a trigger
//! the layer's packages activate ([`pending_triggers`]: file triggers on
//! the paths they install, and their `activate` directives), with the
//! environment dpkg gives its scripts (`DPKG_MAINTSCRIPT_PACKAGE`,
//! `DPKG_MAINTSCRIPT_NAME`, `DPKG_MAINTSCRIPT_ARCH`, `DPKG_ROOT=`,
//! `DPKG_ADMINDIR`) and debconf kept quiet (`DEBIAN_FRONTEND=noninteractive`,
//! `DEBCONF_NONINTERACTIVE_SEEN=true`, `SOURCE_DATE_EPOCH` the build's).
//! Afterwards it removes what only says when it ran (dpkg and
//! alternatives logs, `*-old` backups, ldconfig's aux cache, as mmdebstrap
//! does for reproducible images). When dpkg itself is in the image the
//! driver first makes the admin files its helpers expect
//! (`update-alternatives`, `dpkg-divert`, `dpkg-statoverride`); triggers
//! scripts activate themselves with `dpkg-trigger` are not processed.
//!
//! The step runs exactly like a run layer (`run::execute`: the image so
//! far as an overlay's lower directory, the upper directory becomes the
//! layer; no network, ten minutes, root of a user namespace). Its cache
//! key is the image so far (every diff id, the packages layer's last), the
//! ordered packages, the driver and what earlier layers configured. A
//! script that fails fails the build naming the package, the script and
//! its exit status, with the last lines of output; nothing is stored.
//!
//! Accounts: Debian scripts create system users with `adduser`/`addgroup`
//! (packages `adduser` and `passwd`, which a package that needs them
//! depends on); the users they add are in the image's `/etc/passwd`
//! before the definition's `[[account]]`s are merged in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::deb822;
use super::dpkg::Installed;
use super::relation;
use crate::builder::def::DEFAULT_RUN_TIMEOUT_MS;
use crate::builder::plan::{Plan, ScriptsStep};
use crate::builder::run::{self, Job, Parent, RunOutcome, RunStatus, Sandbox};
use crate::builder::{CacheUse, Progress, layer, provenance};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::Store;
use crate::store::baseline::{FileKind, Merger};

/// The driver `/bin/sh` runs. Its arguments come in fours: an action
/// (`preinst`, `configure`, `triggered`), the package's info name
/// (`pkg` or `pkg:arch`), its architecture, and the trigger names (or
/// `-`). Only shell builtins, but for `mkdir` where dpkg is installed.
pub const DRIVER: &str = r#"
info=/var/lib/dpkg/info
export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
export DPKG_ROOT= DPKG_ADMINDIR=/var/lib/dpkg DPKG_FORCE= DPKG_COLORS=never
if [ -e /usr/bin/dpkg ] && command -v mkdir >/dev/null 2>&1; then
  mkdir -p /var/lib/dpkg/alternatives /var/lib/dpkg/updates /var/lib/dpkg/triggers \
    /var/lib/dpkg/parts /etc/alternatives || exit 1
  for f in available diversions statoverride; do
    [ -e "/var/lib/dpkg/$f" ] || : > "/var/lib/dpkg/$f" || exit 1
  done
fi
run() {
  pkg=$1 arch=$2 script=$3
  shift 3
  [ -e "$info/$pkg.$script" ] || return 0
  echo "drover: $pkg: $script $*"
  DPKG_MAINTSCRIPT_PACKAGE=${pkg%%:*} DPKG_MAINTSCRIPT_NAME=$script \
    DPKG_MAINTSCRIPT_ARCH=$arch "$info/$pkg.$script" "$@" </dev/null
  status=$?
  if [ "$status" -ne 0 ]; then
    echo "drover: the $script script of ${pkg%%:*} ($script $1) failed with exit status $status"
    exit "$status"
  fi
}
while [ "$#" -ge 4 ]; do
  case $1 in
    preinst) run "$2" "$3" preinst install ;;
    configure) run "$2" "$3" postinst configure "" ;;
    triggered) run "$2" "$3" postinst triggered "$4" ;;
  esac
  shift 4
done
# What only says when the scripts ran (as mmdebstrap leaves out of a
# reproducible image).
if command -v rm >/dev/null 2>&1; then
  for f in /var/log/dpkg.log /var/log/alternatives.log /var/cache/ldconfig/aux-cache \
    /var/cache/debconf/config.dat-old /var/cache/debconf/templates.dat-old \
    /var/cache/debconf/passwords.dat-old /var/lib/dpkg/status-old \
    /var/lib/dpkg/diversions-old /var/lib/dpkg/statoverride-old \
    /etc/passwd- /etc/group- /etc/shadow- /etc/gshadow- /etc/subuid- /etc/subgid-; do
    if [ -e "$f" ]; then rm -f "$f" || exit 1; fi
  done
fi
"#;

/// How the line the driver prints when a script fails starts.
const FAILED: &str = "drover: ";

/// A scripts layer, built or reused.
pub(in crate::builder) struct Built {
    pub rec: layer::LayerRecord,
    pub cache: CacheUse,
    pub files: usize,
    pub input: provenance::Dependency,
    /// The info names of the packages it configured.
    pub configured: Vec<String>,
}

/// Run (or reuse) the scripts of a packages layer that installed `layer`,
/// on `parent` (the image so far, that layer included, whose files are
/// `image`); `configured` are the packages earlier scripts layers
/// configured (they hear this layer's triggers too).
#[allow(clippy::too_many_arguments)]
pub(in crate::builder) fn build(
    store: &mut Store,
    plan: &Plan,
    step: &ScriptsStep,
    layer: &[Installed],
    configured: &[String],
    parent: Parent,
    image: &Merger,
    sandbox: Option<&Arc<dyn Sandbox>>,
    progress: &dyn Progress,
) -> Result<Built> {
    let order: Vec<&Installed> = configure_order(layer)
        .into_iter()
        .map(|i| &layer[i])
        .collect();
    let names: Vec<String> = order.iter().map(|p| p.info_name()).collect();
    // Tools that stamp dates (useradd's last password change) take it from here.
    let over = BTreeMap::from([("SOURCE_DATE_EPOCH".to_string(), plan.epoch.to_string())]);
    let env = run::environment(&parent.config.config.env, &over);
    let diff_ids: Vec<Digest> = parent.layers.iter().map(|(_, d)| *d).collect();
    let key = Digest::of(
        json!({
            "format": "drover-package-scripts-v1",
            "parent": diff_ids,
            "packages": names,
            "configured": configured,
            "driver": DRIVER,
            "env": env,
            "media_type": layer::media_type(plan.settings.compression),
            "level": plan.settings.level,
            "mtime": plan.settings.mtime,
        })
        .to_string()
        .as_bytes(),
    );
    let mut input = provenance::Dependency::new(step.source.clone(), None, &key);
    input.annotations.insert("packages".into(), json!(names));
    input.annotations.insert("network".into(), json!(false));
    input.annotations.insert("hermetic".into(), json!(true));
    let mut configured_now = configured.to_vec();
    configured_now.extend(names.iter().cloned());

    if plan.settings.use_cache
        && let Some(rec) = run::cached(store, &key)
    {
        input
            .annotations
            .insert("diffId".into(), json!(rec.diff_id));
        let files = rec.files.len();
        return Ok(Built {
            rec,
            cache: CacheUse::Hit,
            files,
            input,
            configured: configured_now,
        });
    }
    if !resolves_to_file(image, "/bin/sh") {
        return Err(Error::Usage(format!(
            "{}: scripts = true needs a shell in the image (/bin/sh): add dash to the \
             packages, or essential = true",
            step.source
        )));
    }
    let Some(sandbox) = sandbox else {
        return Err(Error::Usage(format!(
            "{}: maintainer scripts need a sandbox to run in, and this build has none",
            step.source
        )));
    };
    let lower = run::materialize_parent(store, &parent)?;
    let triggers = pending_triggers(&lower, layer, &configured_now)?;
    let mut args: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        DRIVER.into(),
        "drover".into(),
    ];
    let mut action = |what: &str, name: &str, arch: &str, extra: &str| {
        args.extend([what, name, arch, extra].map(str::to_string));
    };
    for p in &order {
        action("preinst", &p.info_name(), &p.architecture, "-");
    }
    for p in &order {
        action("configure", &p.info_name(), &p.architecture, "-");
    }
    for (name, arch, names) in &triggers {
        action("triggered", name, arch, &names.join(" "));
    }
    let job = Job {
        args: &args,
        env: &env,
        cwd: "/",
        user: (0, 0),
        mounts: &[],
        network: false,
        timeout_ms: DEFAULT_RUN_TIMEOUT_MS,
    };
    let check = |o: &RunOutcome| check(&step.source, o);
    let previous = layer::previous(store.layout(), &step.slot, &plan.settings);
    let ran = run::execute(
        store,
        plan,
        (&step.slot, &key),
        previous,
        &**sandbox,
        &lower,
        &job,
        &check,
        progress,
    )?;
    input
        .annotations
        .insert("diffId".into(), json!(ran.rec.diff_id));
    Ok(Built {
        rec: ran.rec,
        cache: ran.cache,
        files: ran.files,
        input,
        configured: configured_now,
    })
}

/// A script that failed names itself (the driver's last `drover: the …`
/// line); the build's error says which, with the last lines of output.
fn check(source: &str, outcome: &RunOutcome) -> Result<()> {
    let failed = outcome
        .tail
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(FAILED))
        .filter(|l| l.contains(" failed with exit status "));
    let how = match (outcome.status, failed) {
        (RunStatus::Exited(0), _) => return Ok(()),
        (RunStatus::Exited(_), Some(line)) => line.to_string(),
        (RunStatus::Exited(n), None) => format!("the maintainer scripts exited with status {n}"),
        (RunStatus::Signaled(s), _) => format!("the maintainer scripts were killed by signal {s}"),
        (RunStatus::TimedOut, _) => format!(
            "the maintainer scripts were killed after {} (their timeout)",
            crate::grammar::format_duration(DEFAULT_RUN_TIMEOUT_MS)
        ),
    };
    Err(Error::Failed(format!(
        "{source}: {how}{}",
        run::tail_text(outcome)
    )))
}

/// The order dpkg configures `layer`'s packages in: each after the
/// packages of the layer it `Pre-Depends` or `Depends` on (directly or
/// through `Provides`), ties and cycles broken by name. Indexes into `layer`.
pub fn configure_order(layer: &[Installed]) -> Vec<usize> {
    // name (or provided name) -> the packages that are it.
    let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); layer.len()];
    let fields: Vec<Vec<(String, String)>> = layer.iter().map(control_fields).collect();
    for (i, p) in layer.iter().enumerate() {
        by_name.entry(p.name.clone()).or_default().push(i);
        for (k, v) in &fields[i] {
            if k.eq_ignore_ascii_case("Provides") {
                for r in relation::parse_flat(v, &p.architecture).unwrap_or_default() {
                    by_name.entry(r.name).or_default().push(i);
                }
            }
        }
    }
    for (i, p) in layer.iter().enumerate() {
        for (k, v) in &fields[i] {
            if !(k.eq_ignore_ascii_case("Depends") || k.eq_ignore_ascii_case("Pre-Depends")) {
                continue;
            }
            for alts in relation::parse_relations(v, &p.architecture).unwrap_or_default() {
                // The first alternative the layer has is the one that holds.
                if let Some(found) = alts.iter().find_map(|r| by_name.get(&r.name)) {
                    deps[i].extend(found.iter().copied().filter(|&d| d != i));
                }
            }
        }
    }
    let key = |i: usize| (layer[i].name.as_str(), layer[i].architecture.as_str(), i);
    let mut done = vec![false; layer.len()];
    let mut out = Vec::with_capacity(layer.len());
    while out.len() < layer.len() {
        let ready = (0..layer.len())
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by_key(|&i| key(i));
        let next = ready.unwrap_or_else(|| {
            // Only cycles are left: walk from the first remaining package
            // by name along each one's first unmet dependency until a
            // package comes round again; that cycle's first by name goes first.
            let mut path: Vec<usize> = Vec::new();
            let mut at = (0..layer.len())
                .filter(|&i| !done[i])
                .min_by_key(|&i| key(i))
                .expect("a package is left");
            while !path.contains(&at) {
                path.push(at);
                at = deps[at]
                    .iter()
                    .copied()
                    .filter(|&d| !done[d])
                    .min_by_key(|&d| key(d))
                    .expect("a blocked package has an unmet dependency");
            }
            let start = path.iter().position(|&i| i == at).unwrap_or(0);
            path[start..]
                .iter()
                .copied()
                .min_by_key(|&i| key(i))
                .expect("a cycle is not empty")
        });
        done[next] = true;
        out.push(next);
    }
    out
}

fn control_fields(p: &Installed) -> Vec<(String, String)> {
    deb822::paragraphs(&p.control)
        .next()
        .and_then(|r| r.ok())
        .map(|para| {
            para.fields
                .iter()
                .map(|f| (f.name.to_string(), f.value.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a package's `triggers` control file says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TriggerFile {
    /// `interest*` names (a path for a file trigger).
    pub interests: Vec<String>,
    /// `activate*` names.
    pub activates: Vec<String>,
}

impl TriggerFile {
    pub fn parse(text: &str) -> TriggerFile {
        let mut out = TriggerFile::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            let (Some(directive), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            match directive {
                "interest" | "interest-await" | "interest-noawait" => {
                    out.interests.push(name.to_string())
                }
                "activate" | "activate-await" | "activate-noawait" => {
                    out.activates.push(name.to_string())
                }
                _ => {}
            }
        }
        out
    }
}

/// Which packages hear which triggers, given each candidate's `triggers`
/// file (by info name), the names `layer`'s packages activate and the
/// paths they install: `(info name, trigger names)`, by info name.
pub fn activated(
    interested: &BTreeMap<String, TriggerFile>,
    activates: &BTreeSet<String>,
    files: &[&str],
) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (pkg, t) in interested {
        let names: Vec<String> = t
            .interests
            .iter()
            .filter(|name| {
                if name.starts_with('/') {
                    let dir = name.trim_end_matches('/');
                    files.iter().any(|f| {
                        f.strip_prefix(dir)
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    })
                } else {
                    activates.contains(*name)
                }
            })
            .cloned()
            .collect();
        if !names.is_empty() {
            out.push((pkg.clone(), names));
        }
    }
    out
}

/// The `postinst triggered` calls this layer's packages cause among the
/// packages configured so far (`configured`, this layer's included), read
/// from the image's dpkg database under `root`: `(info name, arch, names)`.
fn pending_triggers(
    root: &Path,
    layer: &[Installed],
    configured: &[String],
) -> Result<Vec<(String, String, Vec<String>)>> {
    let info = root.join("var/lib/dpkg/info");
    let read = |name: &str, ext: &str| -> Result<Option<String>> {
        let path = info.join(format!("{name}.{ext}"));
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("read", &path),
        }
    };
    let mut interested = BTreeMap::new();
    for name in configured {
        if let Some(t) = read(name, "triggers")? {
            let t = TriggerFile::parse(&t);
            if !t.interests.is_empty() {
                interested.insert(name.clone(), t);
            }
        }
    }
    let mut activates = BTreeSet::new();
    let mut lists = Vec::new();
    for p in layer {
        if let Some(t) = read(&p.info_name(), "triggers")? {
            activates.extend(TriggerFile::parse(&t).activates);
        }
        lists.extend(read(&p.info_name(), "list")?);
    }
    let files: Vec<&str> = lists.iter().flat_map(|l| l.lines()).collect();
    let arch_of = |name: &str| {
        name.split_once(':')
            .map(|(_, a)| a.to_string())
            .or_else(|| {
                layer
                    .iter()
                    .find(|p| p.info_name() == name)
                    .map(|p| p.architecture.clone())
            })
            .unwrap_or_else(|| "all".into())
    };
    Ok(activated(&interested, &activates, &files)
        .into_iter()
        .map(|(name, names)| {
            let arch = arch_of(&name);
            (name, arch, names)
        })
        .collect())
}

/// Whether `path` names something other than a directory in `image`,
/// following symlinks (relative and absolute, inside the image).
fn resolves_to_file(image: &Merger, path: &str) -> bool {
    let mut todo: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => {}
        }
        at.push(c);
        let Some(rec) = image.get(&format!("/{}", at.join("/"))) else {
            return false;
        };
        if rec.kind == FileKind::Symlink {
            hops += 1;
            if hops > 40 {
                return false;
            }
            let target = rec.link.clone().unwrap_or_default();
            at.pop();
            if target.starts_with('/') {
                at.clear();
            }
            todo.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty())
                    .rev()
                    .map(str::to_string),
            );
        } else if todo.is_empty() {
            return rec.kind != FileKind::Dir;
        }
    }
    false
}

#[cfg(test)]
mod tests;
