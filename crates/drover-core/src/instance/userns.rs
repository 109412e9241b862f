//! User namespaces: container root is not host root.
//!
//! Every instance runs in its own user namespace whose ids `0..65536` are an
//! unprivileged host range: [`FIRST`] + index × [`SIZE`], an index held in
//! state per owner. A deployed instance's owner is its service, so the
//! service's volumes keep one owner across releases and heals; an ad-hoc
//! `drover run` owns a range for its lifetime.
//!
//! The image's shared, read-only root stays one copy on disk, owned as the
//! image says (root is uid 0). Each instance sees it through an **id-mapped
//! mount** (`mount_setattr(MOUNT_ATTR_IDMAP)`): a file owned by uid `n` on
//! disk is owned by host uid `base + n` in that view, which inside the
//! namespace is `n` again. Volumes are owned on disk by the mapped ids of
//! the range that created them; an instance of another range sees them
//! through an id-mapped mount too. Every such view is `nosuid,nodev`, and
//! lives in `/run/drover/views/<store>/<id>/` (`<store>`: a digest of the
//! store's path), a directory only the instance's root can enter; the store itself is closed to every other host user. So a
//! setuid file a container leaves in a volume is owned by an unprivileged
//! host id, and no other host user can reach it anyway.
//!
//! The views live outside the store because the runtime mounts them from
//! inside the namespace, as the instance's root: every directory on the
//! way must let that (unprivileged) id through, and a store may sit under a
//! private directory (a home, a test's temp dir).
//!
//! Host ids `0x70000000..` sit above the ranges systemd-nspawn picks from
//! and the `/etc/subuid` ranges `useradd` hands out, and below the ids that
//! tools reading uids as signed 32-bit numbers get wrong.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::clock;
use crate::error::{Error, IoContext, Result};
use crate::runtime::spec::IdMap;
use crate::state::Db;
use crate::sys::{self, IdMapLine};

/// The first host id of range 0.
pub const FIRST: u32 = 0x7000_0000;
/// Ids per range: every id an image may use (`nobody` is 65534).
pub const SIZE: u32 = 65536;
/// How many ranges there are (the last ends below `0x7FA00000`).
pub const RANGES: u32 = 4000;

// Above systemd-nspawn's pick range, below systemd's foreign-uid range.
const _: () = assert!(FIRST >= 0x7000_0000);
const _: () = assert!(FIRST as u64 + RANGES as u64 * SIZE as u64 <= 0x7FFE_0000);

/// Who holds the range an instance maps to.
pub fn owner(service: Option<&str>, instance: &str) -> String {
    match service {
        Some(s) => format!("service:{s}"),
        None => format!("instance:{instance}"),
    }
}

/// The map of `owner`'s range, taking a free range first if it holds none.
pub fn hold(db: &mut Db, owner: &str) -> Result<IdMap> {
    let time = clock::now_rfc3339();
    let idx = db.write(|tx| tx.hold_id_range(owner, RANGES, &time))?;
    Ok(IdMap {
        host: FIRST + idx * SIZE,
        size: SIZE,
    })
}

/// The owner of a build's `run` step's range.
pub fn build_owner(id: &str) -> String {
    format!("build:{id}")
}

/// Give back an ad-hoc instance's or a build step's range (a service
/// keeps its own).
pub fn release(db: &mut Db, owner: &str) -> Result<()> {
    if owner.starts_with("instance:") || owner.starts_with("build:") {
        db.write_freeing(|tx| tx.release_id_range(owner))?;
    }
    Ok(())
}

/// The range a volume's files belong to: the one its top directory's owner
/// falls in, or `None` for a volume made before user namespaces (owned by
/// raw container ids).
fn range_of(dir: &Path) -> Result<Option<u32>> {
    let uid = fs::metadata(dir).ctx("inspect volume", dir)?.uid();
    Ok((uid >= FIRST).then(|| FIRST + (uid - FIRST) / SIZE * SIZE))
}

/// Make a new volume directory at `dir` owned by `uid:gid` of `map` (the
/// instance's user): it holds the service's state, and the service runs
/// without capabilities. `false` if another run made it meanwhile.
pub fn create_volume(dir: &Path, map: IdMap, uid: u32, gid: u32) -> Result<bool> {
    let parent = dir.parent().expect("volumes live in a directory");
    fs::create_dir_all(parent).ctx("create volume", parent)?;
    fs::set_permissions(parent, fs::Permissions::from_mode(0o700)).ctx("create volume", parent)?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".new-{name}-{}", std::process::id()));
    fs::create_dir(&tmp).ctx("create volume", &tmp)?;
    std::os::unix::fs::chown(&tmp, Some(map.host + uid), Some(map.host + gid))
        .ctx("create volume", &tmp)?;
    match fs::rename(&tmp, dir) {
        Ok(()) => Ok(true),
        // Another run created it meanwhile: theirs stands.
        Err(_) if dir.is_dir() => fs::remove_dir(&tmp)
            .ctx("create volume", &tmp)
            .map(|()| false),
        Err(e) => Err(Error::io("create volume", dir, e)),
    }
}

/// Where instances' views live.
pub const VIEWS: &str = "/run/drover/views";

/// Where the views of a store's instances live.
fn store_views(store_root: &Path) -> PathBuf {
    // However the store was named (a symlink, `..`), the same key.
    let real = fs::canonicalize(store_root).unwrap_or_else(|_| store_root.to_path_buf());
    let key = crate::Digest::of(real.as_os_str().as_encoded_bytes());
    Path::new(VIEWS).join(&key.hex()[..16])
}

/// Where instance `id`'s views live: `root` and `vol/<n>`.
fn views(store_root: &Path, id: &str) -> PathBuf {
    store_views(store_root).join(id)
}

/// Attach instance `id`'s views: its root (read-only,
/// id-mapped from the image's ids) and each volume in `volumes` (id-mapped
/// from the range its files belong to, if not `map`'s). Returns the root's
/// path and each volume's, in order, for the runtime config. On error,
/// whatever was attached is detached again.
pub fn attach(
    store_root: &Path,
    id: &str,
    rootfs: &Path,
    map: IdMap,
    volumes: &[(PathBuf, bool)],
) -> Result<(PathBuf, Vec<PathBuf>)> {
    let result = attach_all(store_root, id, rootfs, map, volumes);
    if result.is_err() {
        let _ = detach(store_root, id);
    }
    result
}

/// Make instance `id`'s views directory, which only its root (host id
/// `map.host`) may enter; every host user may pass through its parents.
fn views_dir(store_root: &Path, id: &str, map: IdMap) -> Result<PathBuf> {
    // Every host user may pass through (not list) the parents, as the
    // instance's root must.
    let mine = store_views(store_root);
    let parents = [
        Path::new(VIEWS).parent().expect("VIEWS has a parent"),
        Path::new(VIEWS),
        &mine,
    ];
    for dir in parents {
        fs::create_dir_all(dir).ctx("create views directory", dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
            .ctx("create views directory", dir)?;
    }
    let mnt = views(store_root, id);
    fs::create_dir_all(&mnt).ctx("create instance root", &mnt)?;
    // Only the instance's root (host id `map.host`) may enter: the views
    // hold the image and the volumes, and nobody else on the host needs them.
    std::os::unix::fs::chown(&mnt, Some(map.host), Some(map.host))
        .ctx("create instance root", &mnt)?;
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o700))
        .ctx("create instance root", &mnt)?;
    Ok(mnt)
}

/// A user namespace in which host ids `inside..` are `map`'s, for an
/// id-mapped mount.
fn mapped(map: IdMap, inside: u32) -> Result<std::os::fd::OwnedFd> {
    sys::userns_with_map(IdMapLine {
        inside,
        outside: map.host,
        count: map.size,
    })
    .map_err(|e| Error::Failed(format!("user namespace for an id-mapped mount: {e}")))
}

/// Attach `rootfs` at `at`, read-only and id-mapped from the image's ids
/// (root's files by uid 0) into `map`.
fn attach_image(rootfs: &Path, at: &Path, map: IdMap) -> Result<()> {
    fs::create_dir_all(at).ctx("create instance root", at)?;
    let image_ns = mapped(map, 0)?;
    sys::attach_copy(rootfs, at, true, Some(image_ns.as_fd())).map_err(|e| {
        Error::Failed(format!(
            "id-mapped mount of {} at {}: {e} (drover needs Linux 5.12 or later and a filesystem \
             that supports id-mapped mounts, such as ext4, xfs, btrfs or tmpfs)",
            rootfs.display(),
            at.display()
        ))
    })
}

/// The views of a build's `run` step `id`: the image so far, read-only and
/// id-mapped (`lower`, an overlay's lower directory), an empty directory
/// to mount the overlay on (`root`), and each build-context directory in
/// `mounts`, read-only, its host owners shifted into `map` as the image's
/// are (so the context's root-owned files are root's in the sandbox) — or,
/// on a filesystem without id-mapped mounts, as they are. Returns
/// `(lower, root, mounts)`; on error, whatever was attached is detached.
pub fn attach_build(
    store_root: &Path,
    id: &str,
    lower: &Path,
    map: IdMap,
    mounts: &[PathBuf],
) -> Result<(PathBuf, PathBuf, Vec<PathBuf>)> {
    let result = (|| {
        let mnt = views_dir(store_root, id, map)?;
        let lower_view = mnt.join("lower");
        attach_image(lower, &lower_view, map)?;
        let root = mnt.join("root");
        fs::create_dir_all(&root).ctx("create build root", &root)?;
        let mut out = Vec::new();
        for (i, source) in mounts.iter().enumerate() {
            let at = mnt.join("vol").join(i.to_string());
            fs::create_dir_all(&at).ctx("create mount point", &at)?;
            let ns = mapped(map, 0)?;
            if sys::attach_copy(source, &at, true, Some(ns.as_fd())).is_err() {
                sys::attach_copy(source, &at, true, None).map_err(|e| {
                    Error::Failed(format!(
                        "mount {} at {}: {e}",
                        source.display(),
                        at.display()
                    ))
                })?;
            }
            out.push(at);
        }
        Ok((lower_view, root, out))
    })();
    if result.is_err() {
        let _ = detach(store_root, id);
    }
    result
}

fn attach_all(
    store_root: &Path,
    id: &str,
    rootfs: &Path,
    map: IdMap,
    volumes: &[(PathBuf, bool)],
) -> Result<(PathBuf, Vec<PathBuf>)> {
    let mnt = views_dir(store_root, id, map)?;
    let root = mnt.join("root");
    attach_image(rootfs, &root, map)?;
    let mapped = |inside: u32| mapped(map, inside);
    let mut out = Vec::new();
    for (i, (source, read_only)) in volumes.iter().enumerate() {
        let at = mnt.join("vol").join(i.to_string());
        fs::create_dir_all(&at).ctx("create volume mount point", &at)?;
        let range = match range_of(source)? {
            Some(r) => r,
            None => {
                // Made before user namespaces, owned by raw container ids
                // (root's files by host root): moved into this range once.
                shift(source, map.host)?;
                map.host
            }
        };
        let ns = if range == map.host {
            None
        } else {
            Some(mapped(range)?)
        };
        sys::attach_copy(source, &at, *read_only, ns.as_ref().map(|n| n.as_fd())).map_err(|e| {
            Error::Failed(format!(
                "mount volume {} at {}: {e}",
                source.display(),
                at.display()
            ))
        })?;
        out.push(at);
    }
    Ok((root, out))
}

/// Add `base` to the owner and group of everything in `dir` (a volume made
/// before user namespaces). chown clears setuid and setgid bits, as it should.
///
/// Through directory descriptors, never following a symlink, so a link
/// swapped in meanwhile (by an older instance still using the volume)
/// cannot lead it out of the volume. The top directory goes last: its owner
/// is what says "moved" ([`range_of`]), so a walk cut short is walked again,
/// and what it already moved is above `SIZE` and stays as it is.
fn shift(dir: &Path, base: u32) -> Result<()> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let top = nix::dir::Dir::open(dir, flags, Mode::empty())
        .map_err(std::io::Error::from)
        .ctx("shift volume owner", dir)?;
    shift_in(top, dir, base)?;
    let fail = |e: nix::Error| Error::io("shift volume owner", dir, e.into());
    let st = nix::sys::stat::lstat(dir).map_err(fail)?;
    chown_shifted(None, dir, st.st_uid, st.st_gid, base).map_err(fail)?;
    Ok(())
}

/// Shift everything below the open directory `d` (at `path`, for messages).
fn shift_in(mut d: nix::dir::Dir, path: &Path, base: u32) -> Result<()> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{Mode, SFlag, fstatat};
    use std::os::fd::AsRawFd;
    let fail = |e: nix::Error| Error::io("shift volume owner", path, e.into());
    let names: Vec<std::ffi::CString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    let fd = d.as_raw_fd();
    for name in names {
        let st = match fstatat(Some(fd), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Gone meanwhile: nothing to move.
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(fail(e)),
        };
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            match nix::dir::Dir::openat(Some(fd), name.as_c_str(), flags, Mode::empty()) {
                Ok(child) => {
                    let sub = path.join(std::ffi::OsStr::from_bytes(name.as_bytes()));
                    shift_in(child, &sub, base)?;
                }
                Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) | Err(nix::Error::ELOOP) => {
                    continue;
                }
                Err(e) => return Err(fail(e)),
            }
        }
        match chown_shifted(
            Some((fd, name.as_c_str())),
            path,
            st.st_uid,
            st.st_gid,
            base,
        ) {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(())
}

/// chown one entry (relative to a directory descriptor, not following a
/// symlink; or `path` itself) from raw container ids into the range.
fn chown_shifted(
    at: Option<(std::os::fd::RawFd, &std::ffi::CStr)>,
    path: &Path,
    uid: u32,
    gid: u32,
    base: u32,
) -> nix::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::unistd::{Gid, Uid, fchownat};
    if uid >= SIZE || gid >= SIZE {
        return Ok(());
    }
    let (owner, group) = (
        Some(Uid::from_raw(base + uid)),
        Some(Gid::from_raw(base + gid)),
    );
    match at {
        Some((fd, name)) => fchownat(Some(fd), name, owner, group, AtFlags::AT_SYMLINK_NOFOLLOW),
        None => fchownat(None, path, owner, group, AtFlags::AT_SYMLINK_NOFOLLOW),
    }
}

/// Detach instance `id`'s views and remove their directory. Fails, naming
/// what stays mounted, if any mount remains: the directory is then left
/// alone, as deleting it would delete a volume's files through it.
pub fn detach(store_root: &Path, id: &str) -> Result<()> {
    let dir = views(store_root, id);
    let list = |what: &'static str| {
        sys::mounts_under(&dir).map_err(|e| Error::io(what, "/proc/self/mountinfo", e))
    };
    for m in list("read the mount table")? {
        let _ = sys::detach(&m);
    }
    let left = list("read the mount table")?;
    if left.is_empty() {
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove instance views", dir, e))
            }
            _ => Ok(()),
        }
    } else {
        Err(Error::Busy {
            what: format!("the views of instance {id} ({})", dir.display()),
            reason: format!(
                "still mounted: {}; unmount them before removing it",
                left.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

/// Detach the views of every instance of the store that `live` does not
/// name, and give back the ranges of ad-hoc instances it does not name:
/// what a `run` killed between its first mount and its database row left.
/// Only safe while no instance is being created (under `gc`'s exclusive
/// lock). Returns how many views were detached.
pub fn sweep(db: &mut Db, store_root: &Path, live: &[String]) -> Result<usize> {
    let mut detached = 0;
    let dir = store_views(store_root);
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&id) {
                detach(store_root, &id)?;
                detached += 1;
            }
        }
    }
    let held = db.read().id_ranges()?;
    for (_, owner) in held {
        if let Some(id) = owner.strip_prefix("instance:")
            && !live.iter().any(|l| l == id)
        {
            release(db, &owner)?;
        }
        // Builds hold the store shared, gc exclusive: none runs now.
        if owner.starts_with("build:") {
            release(db, &owner)?;
        }
    }
    Ok(detached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_per_service_or_per_instance() {
        assert_eq!(owner(Some("web"), "abc"), "service:web");
        assert_eq!(owner(None, "abc"), "instance:abc");
    }

    #[test]
    fn a_volume_range_is_read_from_its_owner() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("v");
        create_volume(
            &v,
            IdMap {
                host: FIRST + 3 * SIZE,
                size: SIZE,
            },
            10,
            10,
        )
        .unwrap();
        assert_eq!(range_of(&v).unwrap(), Some(FIRST + 3 * SIZE));
        let legacy = d.path().join("legacy");
        fs::create_dir(&legacy).unwrap();
        fs::write(legacy.join("f"), b"x").unwrap();
        assert_eq!(range_of(&legacy).unwrap(), None);
        shift(&legacy, FIRST).unwrap();
        assert_eq!(fs::metadata(legacy.join("f")).unwrap().uid(), FIRST);
    }
}
