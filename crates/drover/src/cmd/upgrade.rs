//! `drover upgrade NEW_BINARY`: replace the drover binary in place and have
//! the running `serve` hand over to one started from it.
//!
//! The new binary must run (`NEW --version` says `drover …`). It is copied
//! beside the installed one and renamed over it — never copied over it: a
//! running binary cannot be written (ETXTBSY), and a rename leaves every
//! process running the old file (serve until it hands over, the instances'
//! monitors until their instances end) on the old inode, intact. Then the
//! serve running for the store gets SIGHUP: it starts a successor from the
//! binary now on disk, hands it its listening sockets and stops (no
//! connection refused); this command waits until the successor holds the
//! store.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drover_core::store::Store;
use drover_core::supervisor;

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The new drover binary.
    new_binary: PathBuf,
    /// Where drover is installed (default: the binary running this command).
    #[arg(long, value_name = "PATH")]
    path: Option<PathBuf>,
    /// Replace the binary only; leave the running serve alone.
    #[arg(long)]
    no_serve: bool,
}

/// How long the running serve gets to hand over.
const HANDOVER: Duration = Duration::from_secs(60);

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let target = match &a.path {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding the installed drover")?,
    };
    if target.to_string_lossy().ends_with(" (deleted)") {
        bail!(
            "this drover binary was replaced while it ran; run `upgrade` with the installed one, \
             or name it with --path"
        );
    }
    let version = version_of(&a.new_binary)?;
    install(&a.new_binary, &target)?;
    outln!("installed {version} at {}", target.display());
    if a.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = ctx.store()?;
    let Some(old) = supervisor::serve_pid(&mut store)? else {
        outln!("no serve runs for {}", ctx.store_dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let runs = exe_of(old);
    if runs.as_deref() != Some(target.as_path()) {
        bail!(
            "the serve running for {} (pid {old}) runs {}, not {}: it would restart the same \
             binary. Upgrade that one (--path), or restart serve from {}",
            ctx.store_dir.display(),
            runs.map_or("an unknown binary".into(), |p| p.display().to_string()),
            target.display(),
            target.display()
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("signalling serve (pid {old})"))?;
    let new = wait_for_successor(&mut store, old, &target)?;
    outln!("serve: pid {old} handed over to pid {new}, running {version}");
    Ok(ExitCode::SUCCESS)
}

/// What `bin --version` says; an error unless it is a drover that runs.
fn version_of(bin: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !said.starts_with("drover ") {
        bail!(
            "{} is not a drover binary that runs here (`--version` said {said:?}, {})",
            bin.display(),
            out.status
        );
    }
    Ok(said)
}

/// Copy `new` beside `target`, make it durable, and rename it over `target`.
fn install(new: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.upgrade.{}", std::process::id()));
    let result = (|| {
        let mut from = std::fs::File::open(new)?;
        let mut to = std::fs::File::create(&tmp)?;
        std::io::copy(&mut from, &mut to)?;
        to.flush()?;
        let mode = std::fs::metadata(target).map_or(0o755, |m| m.mode() & 0o7777);
        to.set_permissions(std::fs::Permissions::from_mode(mode | 0o111))?;
        to.sync_all()?;
        std::fs::rename(&tmp, target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("installing {} as {}", new.display(), target.display()))
}

/// The binary process `pid` runs, as it was named when started.
fn exe_of(pid: u32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = link.to_string_lossy();
    Some(PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)))
}

/// Wait until a serve other than `old`, running `target` as it is now,
/// holds the store.
fn wait_for_successor(store: &mut Store, old: u32, target: &Path) -> anyhow::Result<u32> {
    let ino = std::fs::metadata(target)?.ino();
    let deadline = Instant::now() + HANDOVER;
    loop {
        if let Some(pid) = supervisor::serve_pid(store)?
            && pid != old
            && std::fs::metadata(format!("/proc/{pid}/exe")).is_ok_and(|m| m.ino() == ino)
        {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            bail!(
                "serve (pid {old}) did not hand over to a serve from {} within {} s; see its log",
                target.display(),
                HANDOVER.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
