//! `drover store info`: where the store and its state are;
//! `drover store backup FILE` and `drover store restore FILE`: the whole
//! store in one file, and a new store from it (see `drover_core::backup`).

use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::backup::{self, BackupOptions};

use super::Ctx;
use crate::output;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Where the store is and where its state lives (SQLite's file, or the
    /// PostgreSQL URL without its password).
    Info,
    /// Write a consistent copy of the store (database, ledger head, keys,
    /// policy, every blob re-hashed, kept logs; volumes with --volumes)
    /// into one file, while everything runs. Unpacked roots, caches,
    /// runtime state and instance bundles are left out: they are re-made.
    Backup(BackupArgs),
    /// Make a new store (at --store: a missing or empty directory) from a
    /// backup, checking every member; its instances come back lost, and
    /// `apply` starts new ones.
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
struct BackupArgs {
    /// The file to write (replaced atomically if it exists).
    file: PathBuf,
    /// Include volumes. They are copied live: a file a service writes
    /// meanwhile may be torn (the report names those whose size changed);
    /// stop the service first for a consistent copy.
    #[arg(long)]
    volumes: bool,
    /// zstd-compress the file (the default when it ends in .zst or .tzst).
    #[arg(long)]
    zstd: bool,
}

#[derive(clap::Args)]
struct RestoreArgs {
    /// The backup file (compressed or not).
    file: PathBuf,
}

impl Args {
    /// Whether the command opens the store named by `--store` (a restore
    /// makes one instead).
    pub fn opens_store(&self) -> bool {
        !matches!(self.command, Command::Restore(_))
    }
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let progress = crate::progress::Bar::new(ctx.json);
    match &a.command {
        Command::Info => {
            let store = ctx.store()?;
            let loc = store.db().location();
            if ctx.json {
                ctx.emit(
                    "StoreInfo",
                    &serde_json::json!({
                        "root": store.root(),
                        "state": super::status::state_doc(loc),
                    }),
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            outln!("store: {}", store.root().display());
            outln!("state: {} {}", loc.backend(), loc.describe());
            if matches!(loc, drover_core::state::Location::Postgres { .. }) {
                outln!(
                    "  kept in the store directory: blobs, unpacked roots, keys, policy.toml, the signed ledger head"
                );
            }
        }
        Command::Backup(b) => {
            let store = ctx.store()?;
            let ext = b.file.extension().and_then(|e| e.to_str());
            let opts = BackupOptions {
                volumes: b.volumes,
                compress: b.zstd || matches!(ext, Some("zst" | "tzst")),
            };
            let report = backup::backup(&store, &b.file, &opts, &progress);
            progress.finish();
            let report = report?;
            if ctx.json {
                ctx.emit("StoreBackup", &report)?;
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "{}: {} blobs ({}), {} logs{}; {} in {:.1} s",
                report.file.display(),
                report.counts.blobs,
                output::size(report.counts.blob_bytes),
                report.counts.logs,
                if report.counts.volumes {
                    format!(", {} volume files", report.counts.volume_files)
                } else {
                    ", no volumes (--volumes)".into()
                },
                output::size(report.bytes),
                report.seconds
            );
            for t in &report.torn {
                outln!("  changed while copied (may be torn): {t}");
            }
            outln!(
                "  not in the backup (re-made when needed): rootfs/, cache/, tmp/, run/, instances/, index.json"
            );
        }
        Command::Restore(r) => {
            let report = backup::restore(&r.file, &ctx.store_dir, &progress);
            progress.finish();
            let report = report?;
            if ctx.json {
                ctx.emit("StoreRestore", &report)?;
                return Ok(ExitCode::SUCCESS);
            }
            outln!(
                "{}: restored from {} (taken {} on {}): {} blobs, verified",
                report.store.display(),
                report.file.display(),
                report.created,
                report
                    .source
                    .hostname
                    .as_deref()
                    .unwrap_or("an unnamed host"),
                report.counts.blobs
            );
            if !report.lost.is_empty() {
                outln!(
                    "  {} instances recorded lost (their processes are not this store's); `drover apply` starts new ones",
                    report.lost.len()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
