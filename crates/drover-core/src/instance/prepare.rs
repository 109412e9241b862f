//! From an image and the user's options to a recorded instance with its
//! bundle on disk: the image's verified root, its runtime config (see
//! `runtime::spec`), its volumes and its port.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::volume::{self, Held, VolumeSpec};
use super::{Instance, State, bundle_dir, reload, userns, volume_dir};
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::grammar;
use crate::runtime::DriverKind;
use crate::runtime::spec::{self, BindMount, DEFAULT_TMPFS_BYTES, IdMap, Init, Launch, Limits};
use crate::runtime::tmpfs::{self, Tmpfs};
use crate::state::NewInstance;
use crate::store::{Store, unpack};

/// What `drover run` was asked for, beyond the image.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub name: Option<String>,
    /// Added to (and overriding) the image's environment.
    pub env: Vec<(String, String)>,
    pub volumes: Vec<VolumeSpec>,
    /// The port given to the instance in `PORT`; a free one when `None`.
    pub port: Option<u16>,
    pub limits: Limits,
    pub cap_add: Vec<String>,
    /// Replaces the image's entrypoint and command.
    pub command: Option<Vec<String>>,
    pub driver: DriverKind,
    /// Set by deploys: the service and release this instance serves.
    pub service: Option<String>,
    pub release: Option<i64>,
    pub tmpfs_bytes: u64,
    /// Tmpfs mounts added to the image's (`runtime::tmpfs::overlay`): a
    /// service's `tmpfs`, `drover run --tmpfs`.
    pub tmpfs: Vec<Tmpfs>,
    /// Run in a user namespace (the default). Only a service whose fleet
    /// entry gives a reason turns it off.
    pub userns: bool,
    /// The replica slot of a service's instance (0-based): `{replica}` in
    /// its volume names becomes this number.
    pub slot: Option<u32>,
    /// A tiny init as PID 1 (`--init`, a service's `init`): `None` decides
    /// by the command (on for a shell, see [`spec::is_shell`]).
    pub init: Option<bool>,
    /// The service's log rotation and retention, if it sets any.
    pub logs: Option<crate::runtime::spec::LogPolicy>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            name: None,
            env: vec![],
            volumes: vec![],
            port: None,
            limits: Limits::default(),
            cap_add: vec![],
            command: None,
            driver: DriverKind::Embedded,
            service: None,
            release: None,
            tmpfs_bytes: DEFAULT_TMPFS_BYTES,
            tmpfs: vec![],
            userns: true,
            slot: None,
            init: None,
            logs: None,
        }
    }
}

/// What [`create`] made on disk, so a failure can take it back.
#[derive(Debug, Default)]
pub(super) struct Made {
    /// Volumes that did not exist before (empty, so safe to remove).
    pub volumes: Vec<PathBuf>,
    pub bundle: Option<PathBuf>,
    /// The instance whose views were attached (`userns::attach`).
    pub views: Option<String>,
    /// The owner of an id range this call took (an ad-hoc instance's).
    pub range: Option<String>,
}

impl Made {
    /// Remove what was made: the views first (never delete through one),
    /// the bundle, each new volume still empty, the id range.
    pub(super) fn undo(&self, store: &mut Store) {
        if let Some(id) = &self.views {
            let _ = userns::detach(store.root(), id);
        }
        if let Some(b) = &self.bundle {
            let _ = fs::remove_dir_all(b);
        }
        // A volume another run found (and mounted) meanwhile stays.
        for v in &self.volumes {
            if !crate::sys::is_mount_source(v).unwrap_or(true) {
                let _ = fs::remove_dir(v);
            }
        }
        if let Some(owner) = &self.range {
            let _ = userns::release(store.db_mut(), owner);
        }
    }
}

/// Record a new instance of the image `image` (state `created`) and write
/// its bundle. Nothing runs yet. `image_ref` is what the user asked for,
/// recorded and named in messages; it is never resolved again, so a tag
/// moved meanwhile cannot change what runs. Returns it with what was made
/// for it on disk; on failure (a full disk included) nothing is left: no
/// bundle, no row, no volume this call created.
pub(super) fn create(
    store: &mut Store,
    image: &Digest,
    image_ref: &str,
    opts: &RunOptions,
) -> Result<(Instance, Made)> {
    let mut made = Made::default();
    // From the root's unpack to the row, which then keeps image and root
    // from gc (see `store`'s header: leases).
    let _lease = store.lease(&format!("start of an instance of {image_ref}"))?;
    match create_in(store, image, image_ref, opts, &mut made) {
        Ok(inst) => Ok((inst, made)),
        Err(e) => {
            made.undo(store);
            if crate::state::is_disk_full(&e) {
                return Err(Error::Failed(format!(
                    "{e}; the disk holding the store {} is full: nothing of the instance was \
                     kept; remove instances that have exited (drover rm) or unused images \
                     (drover gc), then run it again",
                    store.root().display()
                )));
            }
            Err(e)
        }
    }
}

fn create_in(
    store: &mut Store,
    image: &Digest,
    image_ref: &str,
    opts: &RunOptions,
    made: &mut Made,
) -> Result<Instance> {
    let manifest = store.manifest(image)?;
    let config = store.image_config(&manifest)?.config;
    let rootfs = unpack::materialize(store, image)?;
    let root = &rootfs.path;

    if let Some(name) = &opts.name {
        grammar::name(name).map_err(|e| Error::Usage(format!("instance name: {e}")))?;
    }

    let args = match &opts.command {
        Some(c) if !c.is_empty() => c.clone(),
        _ => {
            let mut a = config.entrypoint.clone().unwrap_or_default();
            a.extend(config.cmd.clone().unwrap_or_default());
            a
        }
    };
    if args.is_empty() {
        return Err(Error::Usage(format!(
            "image {image_ref} has no entrypoint or command; give one after --"
        )));
    }

    let cwd = config
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or("/".into());
    if !is_dir_in_root(root, &cwd) {
        return Err(Error::Usage(format!(
            "image {image_ref}: working directory {cwd} is not a directory in the image"
        )));
    }

    let tmpfs = instance_tmpfs(root, &config.labels, &opts.tmpfs, image_ref)?;
    let volumes: Vec<VolumeSpec> = opts
        .volumes
        .iter()
        .map(|v| v.for_slot(opts.slot))
        .collect::<Result<_>>()?;
    let held: Vec<Held> = volumes.iter().map(VolumeSpec::held).collect();

    let (uid, gid, additional_gids) = resolve_user(root, config.user.as_deref().unwrap_or(""))
        .map_err(|why| Error::Usage(format!("image {image_ref}: user: {why}")))?;

    let mut capabilities = Vec::new();
    for c in &opts.cap_add {
        let cap =
            spec::capability(c).ok_or_else(|| Error::Usage(format!("unknown capability {c:?}")))?;
        if !capabilities.iter().any(|x| x == cap) {
            capabilities.push(cap.to_string());
        }
    }

    let id = new_id()?;
    // The fake driver runs nothing, so it needs no namespace and no views.
    let map = if opts.userns && opts.driver != DriverKind::Fake {
        if capabilities.iter().any(|c| c == "CAP_NET_BIND_SERVICE") {
            return Err(Error::Usage(format!(
                "image {image_ref}: CAP_NET_BIND_SERVICE cannot work in a user namespace on the \
                 host network (the host's network namespace checks the host's capabilities); \
                 listen on $PORT (above 1023) instead"
            )));
        }
        let owner = userns::owner(opts.service.as_deref(), &id);
        let map = userns::hold(store.db_mut(), &owner)?;
        if opts.service.is_none() {
            made.range = Some(owner);
        }
        Some(map)
    } else {
        None
    };
    if let Some(m) = map
        && let Some(id) = [uid, gid]
            .iter()
            .chain(&additional_gids)
            .find(|i| **i >= m.size)
    {
        return Err(Error::Usage(format!(
            "image {image_ref}: user or group id {id} is outside the instance's user namespace \
             (ids 0 to {}); use an id below that",
            m.size - 1
        )));
    }
    let bundle = bundle_dir(store.root(), &id);
    fs::create_dir_all(&bundle).ctx("create instance directory", &bundle)?;
    made.bundle = Some(bundle.clone());
    let (root_view, mounts) = views(store, &id, root, map, &volumes, image_ref, (uid, gid), made)?;

    let port = match opts.port {
        Some(p) => p,
        None => free_port(store)?,
    };
    let mut env: Vec<(String, String)> = config
        .env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in opts
        .env
        .iter()
        .chain([&("PORT".to_string(), port.to_string())])
    {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        // As Docker does for an image that sets none: the embedded runtime
        // refuses to start without one (runc would use it to find a
        // relative command too). Here, not in the image: digests stay.
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    let stop_signal = stop_signal(config.stop_signal.as_deref())
        .map_err(|e| Error::Usage(format!("image {image_ref}: stop signal: {e}")))?;

    let launch = Launch {
        id: id.clone(),
        rootfs: root.clone(),
        args: args.clone(),
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd,
        uid,
        gid,
        additional_gids,
        capabilities,
        mounts,
        limits: Limits {
            // Every instance gets a pids limit: a fork bomb stops there.
            pids: opts.limits.pids.or(Some(store.limits().pids)),
            ..opts.limits.clone()
        },
        tmpfs_bytes: opts.tmpfs_bytes,
        tmpfs,
        userns: map,
        root_view,
        writable_root: false,
        own_network: false,
        init: init(
            opts.driver,
            opts.init.or(config
                .labels
                .get(spec::INIT_LABEL)
                .and_then(|v| v.parse().ok())),
            &args,
            image_ref,
        )?,
        logs: opts.logs,
    };
    let config_json =
        serde_json::to_vec_pretty(&spec::generate(&launch)).expect("JSON values serialize");
    let config_digest = crate::Digest::of(&config_json);
    fs::write(bundle.join("config.json"), config_json).ctx("write runtime config", &bundle)?;

    let launch_json = serde_json::to_string(&launch).expect("launch serializes");
    let volumes_json = serde_json::to_string(&held).expect("volumes serialize");
    let inserted = store.db_mut().write(|tx| {
        if let Some(name) = &opts.name
            && tx.read().instance_name_taken(name)?
        {
            return Ok(false);
        }
        // In the transaction that records it: two instances created at
        // once cannot both miss each other.
        refuse_conflicts(tx.read(), &held, opts)?;
        tx.insert_instance(&NewInstance {
            id: &id,
            name: opts.name.as_deref(),
            image,
            image_ref,
            release: opts.release,
            driver: opts.driver.as_str(),
            state: State::Created.as_str(),
            port: Some(port),
            stop_signal,
            launch: &launch_json,
            service: opts.service.as_deref(),
            config_digest: &config_digest,
            slot: opts.slot,
            volumes: &volumes_json,
        })?;
        Ok(true)
    })?;
    if !inserted {
        return Err(Error::Usage(format!(
            "an instance named {:?} already exists; remove it or pick another name",
            opts.name.as_deref().unwrap_or_default()
        )));
    }
    reload(store.db(), &id)
}

/// The init an instance gets: `asked` (`None`: on when `args` run a
/// shell), in the form its driver runs. runc has no hook for one, so it
/// gets Debian's static `tini` (`DROVER_TINI` names another); without it,
/// an init asked for is refused and a shell's default one is left out.
fn init(
    driver: DriverKind,
    asked: Option<bool>,
    args: &[String],
    image_ref: &str,
) -> Result<Option<Init>> {
    if !asked.unwrap_or_else(|| spec::is_shell(args)) {
        return Ok(None);
    }
    if driver != DriverKind::Runc {
        return Ok(Some(Init::Embedded));
    }
    let tini =
        std::env::var_os("DROVER_TINI").map_or_else(|| spec::TINI_STATIC.into(), PathBuf::from);
    if tini.is_file() {
        return Ok(Some(Init::Tini { path: tini }));
    }
    if asked == Some(true) {
        return Err(Error::Usage(format!(
            "image {image_ref}: an init on the runc driver needs a static tini at {} (Debian's \
             `tini` package; DROVER_TINI names another); install it, use the embedded driver, \
             or run without one (--init=false, init = false)",
            tini.display()
        )));
    }
    Ok(None)
}

/// Refuse an instance that would mount a volume beside a live instance
/// (created, running or stopping) in a conflicting way
/// ([`volume::Access::conflicts`]), naming both and what to do.
fn refuse_conflicts(r: crate::state::Reader<'_>, held: &[Held], opts: &RunOptions) -> Result<()> {
    if !held.iter().any(|h| h.access != volume::Access::ReadOnly) {
        return Ok(());
    }
    for other in r.volume_holders()? {
        let theirs: Vec<Held> = serde_json::from_str(&other.volumes).map_err(|e| {
            Error::corrupt(
                format!("instance {} in the state database", other.id),
                format!("volumes: {e}"),
            )
        })?;
        let Some((mine, access)) = volume::conflict(held, &theirs) else {
            continue;
        };
        let who = match (&other.service, other.release) {
            (Some(s), Some(n)) => format!("instance {} of service {s} (release {n})", other.id),
            _ => match &other.name {
                Some(name) => format!("instance {} ({name})", other.id),
                None => format!("instance {}", other.id),
            },
        };
        let todo = if opts.service.is_some() {
            "a volume one instance writes is mounted by no other at the same time: stop that \
             instance first (`drover stop`), give each replica its own volume \
             (\"data-{replica}:/data\"), mount it :ro, or declare it shared in every service \
             that writes it if the programs coordinate their writers"
        } else {
            "stop that instance first (`drover stop`), mount the volume :ro, or mount it \
             name:/path:shared if the programs coordinate their writers (and every other \
             writer mounts it shared too)"
        };
        return Err(Error::Busy {
            what: format!("volume {}", mine.name),
            reason: format!(
                "{who} mounts it {}, and this instance would mount it {}; {todo}",
                access.as_str(),
                mine.access.as_str()
            ),
        });
    }
    Ok(())
}

/// The instance's volumes (made on first use) and, in a user namespace,
/// its views (`userns::attach`): the root the runtime mounts, if not the
/// shared one, and the volume mounts.
#[allow(clippy::too_many_arguments)]
fn views(
    store: &Store,
    id: &str,
    root: &Path,
    map: Option<IdMap>,
    volumes: &[VolumeSpec],
    image_ref: &str,
    (uid, gid): (u32, u32),
    made: &mut Made,
) -> Result<(Option<PathBuf>, Vec<BindMount>)> {
    let mut sources = Vec::new();
    for v in volumes {
        if !is_dir_in_root(root, &v.target) {
            return Err(Error::Usage(format!(
                "volume {}: {} is not a directory in image {image_ref}; the image must provide \
                 its mount points (the root is read-only and shared)",
                v.name, v.target
            )));
        }
        let dir = volume_dir(store.root(), &v.name);
        if !dir.exists() {
            // Owned by the instance's user (mapped, in a user namespace).
            let ids = map.unwrap_or(IdMap { host: 0, size: 0 });
            if userns::create_volume(&dir, ids, uid, gid)? {
                made.volumes.push(dir.clone());
            }
        }
        sources.push((dir, v.read_only));
    }
    let (root_view, sources) = match map {
        Some(map) => {
            made.views = Some(id.to_string());
            let (view, vols) = userns::attach(store.root(), id, root, map, &sources)?;
            (Some(view), vols)
        }
        None => (None, sources.into_iter().map(|(d, _)| d).collect()),
    };
    let mounts = volumes
        .iter()
        .zip(sources)
        .map(|(v, source)| BindMount {
            source,
            target: v.target.clone(),
            read_only: v.read_only,
        })
        .collect();
    Ok((root_view, mounts))
}

/// The `PATH` an instance gets when neither its image nor its options set
/// one: Docker's default.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The image's tmpfs list (its label) with `extra` over it. Each mount
/// point must be a directory in the image (the root is read-only and
/// shared: the runtime may not make it there), unless it lies in /tmp or
/// /run, where the runtime makes it in the tmpfs.
fn instance_tmpfs(
    root: &Path,
    labels: &std::collections::BTreeMap<String, String>,
    extra: &[Tmpfs],
    image_ref: &str,
) -> Result<Vec<Tmpfs>> {
    let list = tmpfs::overlay(&tmpfs::of_labels(labels, image_ref)?, extra);
    for t in &list {
        if !t.inside_built_in()
            && !list
                .iter()
                .any(|o| t.path.starts_with(&format!("{}/", o.path)))
            && !is_dir_in_root(root, &t.path)
        {
            return Err(Error::Usage(format!(
                "tmpfs {}: not a directory in image {image_ref}; the image must provide its \
                 mount points (the root is read-only and shared): list it in the image's \
                 [config] tmpfs, which makes it, or add the directory to the image",
                t.path
            )));
        }
    }
    Ok(list)
}

/// The signal number of an image's stop signal (default SIGTERM), read by
/// the grammar the builder wrote it with.
fn stop_signal(configured: Option<&str>) -> std::result::Result<i32, String> {
    match configured {
        Some(s) => grammar::signal(s).map(grammar::Signal::number),
        None => Ok(libc::SIGTERM),
    }
}

/// Twelve random hex digits.
pub(super) fn new_id() -> Result<String> {
    let mut bytes = [0u8; 6];
    let path = Path::new("/dev/urandom");
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .ctx("read", path)?;
    Ok(hex::encode(bytes))
}

/// A port nothing listens on now and no live instance was given.
fn free_port(store: &Store) -> Result<u16> {
    let taken: BTreeSet<u16> = super::list(store.db(), false)?
        .iter()
        .filter_map(|i| i.port)
        .collect();
    for _ in 0..64 {
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0))
            .map_err(|e| Error::io("find a free port", "0.0.0.0:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("find a free port", "0.0.0.0:0", e))?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(Error::Busy {
        what: "ports".into(),
        reason: "no free port found in 64 tries".into(),
    })
}

/// Is `path` (absolute, inside the image) a directory reached without
/// following any symlink? Mount targets and the working directory must be:
/// a symlink could point the runtime anywhere on the host.
fn is_dir_in_root(root: &Path, path: &str) -> bool {
    let mut at = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return false;
        }
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    true
}

/// A regular file inside the image, read without following symlinks.
fn read_in_root(root: &Path, path: &str) -> Option<String> {
    let (dir, _) = path.rsplit_once('/')?;
    if !is_dir_in_root(root, dir) {
        return None;
    }
    let file = root.join(path.trim_start_matches('/'));
    match fs::symlink_metadata(&file) {
        Ok(m) if m.is_file() => fs::read_to_string(&file).ok(),
        _ => None,
    }
}

/// The image's `User` (`uid`, `uid:gid`, `name`, `name:group`, empty for
/// root) as numbers, with the user's supplementary groups, read from the
/// image's own `/etc/passwd` and `/etc/group`.
fn resolve_user(root: &Path, user: &str) -> std::result::Result<(u32, u32, Vec<u32>), String> {
    if user.is_empty() {
        return Ok((0, 0, vec![]));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(root, "/etc/passwd").unwrap_or_default();
    let group = read_in_root(root, "/etc/group").unwrap_or_default();
    let fields = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()
    };
    let users = fields(&passwd);
    let groups = fields(&group);
    let (uid, name, primary) = match u.parse::<u32>() {
        Ok(uid) => {
            let entry = users
                .iter()
                .find(|f| f.get(2).and_then(|s| s.parse().ok()) == Some(uid));
            (
                uid,
                entry.and_then(|f| f.first().cloned()),
                entry.and_then(|f| f.get(3)?.parse().ok()),
            )
        }
        Err(_) => {
            let f = users
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(u))
                .ok_or_else(|| format!("no user {u:?} in the image's /etc/passwd"))?;
            let uid = f
                .get(2)
                .and_then(|s| s.parse().ok())
                .ok_or("bad /etc/passwd line")?;
            (
                uid,
                Some(u.to_string()),
                f.get(3).and_then(|s| s.parse().ok()),
            )
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| format!("no group {g:?} in the image's /etc/group"))?,
        },
        None => primary.unwrap_or(uid),
    };
    let mut extra: Vec<u32> = match &name {
        Some(name) => groups
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == name)))
            .filter_map(|f| f.get(2)?.parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        None => vec![],
    };
    extra.sort_unstable();
    extra.dedup();
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_are_read_by_the_one_grammar() {
        assert_eq!(stop_signal(None), Ok(libc::SIGTERM));
        assert_eq!(stop_signal(Some("quit")), Ok(libc::SIGQUIT));
        assert_eq!(stop_signal(Some("9")), Ok(9));
        assert_eq!(stop_signal(Some("SIGRTMIN+2")), Ok(libc::SIGRTMIN() + 2));
        assert!(stop_signal(Some("SIGNOPE")).is_err());
        assert!(stop_signal(Some("0")).is_err());
    }

    /// Regression (issue 15): the builder accepted `stop_signal = "SIGRTMAX"`
    /// (its own grammar) and `run` then refused the image, "unknown stop
    /// signal", because it parsed signals with another.
    #[test]
    fn an_image_with_stop_signal_sigrtmax_builds_and_runs() {
        use crate::builder::{self, BuildOptions, NoProgress};
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store")).unwrap();
        let text = "[image]\nname = \"app\"\ntag = \"1\"\n\
                    [[layer]]\nkind = \"file\"\ndest = \"/bin/app\"\ncontent = \"x\"\nmode = \"0755\"\n\
                    [config]\nentrypoint = [\"/bin/app\"]\nstop_signal = \"SIGRTMAX\"\n";
        let def = builder::def::parse(text, Path::new("drover.toml")).unwrap();
        assert_eq!(def.config.stop_signal.as_deref(), Some("SIGRTMAX"));
        builder::build(&mut store, &def, &BuildOptions::default(), &NoProgress).unwrap();
        let image = store.resolve("app:1").unwrap().digest;
        let opts = RunOptions {
            driver: DriverKind::Fake,
            ..RunOptions::default()
        };
        let (inst, _) = create(&mut store, &image, "app:1", &opts).unwrap();
        assert_eq!(inst.stop_signal, 64);
    }

    #[test]
    fn users_resolve_from_the_images_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("etc")).unwrap();
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/group"),
            "root:x:0:\napp:x:1000:\nwww:x:33:app\n",
        )
        .unwrap();
        assert_eq!(resolve_user(root, "").unwrap(), (0, 0, vec![]));
        assert_eq!(resolve_user(root, "app").unwrap(), (1000, 1000, vec![33]));
        assert_eq!(resolve_user(root, "1000").unwrap(), (1000, 1000, vec![33]));
        assert_eq!(
            resolve_user(root, "65534:65534").unwrap(),
            (65534, 65534, vec![])
        );
        assert_eq!(resolve_user(root, "app:www").unwrap(), (1000, 33, vec![]));
        assert!(resolve_user(root, "nobody").is_err());
        assert!(resolve_user(root, "app:nogroup").is_err());
    }

    #[test]
    fn mount_targets_must_be_real_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("var/data")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        fs::write(root.join("file"), "").unwrap();
        assert!(is_dir_in_root(root, "/var/data"));
        assert!(is_dir_in_root(root, "/"));
        assert!(!is_dir_in_root(root, "/link"));
        assert!(!is_dir_in_root(root, "/link/ssl"));
        assert!(!is_dir_in_root(root, "/file"));
        assert!(!is_dir_in_root(root, "/var/../etc"));
        assert!(!is_dir_in_root(root, "/missing"));
    }
}
