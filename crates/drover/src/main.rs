//! drover's command line: parse arguments, open the store, call the library,
//! map errors to exit codes. Each subcommand lives in `cmd/`.

#[macro_use]
mod output;
mod admin;
mod api;
mod cmd;
mod dashboard;
mod filter;
mod logging;
mod progress;
mod timearg;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use drover_core::ErrorKind;
use drover_core::state::location::Choice;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Immutable infrastructure in one binary: build reproducible OCI images, run them as read-only instances, audit everything"
)]
pub struct Cli {
    /// drover's state directory: the OCI image store, database and caches.
    /// Defaults to /var/lib/drover as root, else ~/.local/share/drover.
    #[arg(long, global = true, env = "DROVER_STORE", value_name = "DIR")]
    store: Option<PathBuf>,

    /// Where the store's state (services, releases, instances, policy,
    /// the ledger) lives: `sqlite` (the default: DIR/drover.db) or a
    /// PostgreSQL URL, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (or
    /// `postgresql:///DB?host=/socket/dir`). Chosen once, by the first
    /// command on a new store, and recorded in DIR/state; later commands
    /// need not repeat it, and one naming another database is refused.
    #[arg(long, global = true, env = "DROVER_STATE", value_name = "URL")]
    state: Option<String>,

    /// Make a new store at the `--store` directory if it is not one yet
    /// (missing or empty). Without it, a named directory that is not a
    /// store is an error, so a typo never starts an empty store. (Before
    /// the subcommand: `drover --store DIR --init build …`.)
    #[arg(long)]
    init: bool,

    /// Output format: `table` (default), `wide` (more columns), `json` or
    /// `yaml` (versioned documents for programs; errors too, on stderr).
    #[arg(short = 'o', long, global = true, value_enum, value_name = "FORMAT")]
    output: Option<output::Format>,

    /// The same as `-o json`.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a definition (drover.toml) and print its digest.
    Build(cmd::build::Args),
    /// Resolve a definition's Debian packages and write drover.lock beside it.
    Lock(cmd::lock::Args),
    /// List tagged images (-a: untagged ones too).
    Images(cmd::images::Args),
    /// Show an image's manifest, config and attached artifacts.
    Inspect(cmd::inspect::Args),
    /// Point a new tag at an image.
    Tag(cmd::tag::Args),
    /// Remove tags (the blobs go at the next `gc`).
    Rmi(cmd::rmi::Args),
    /// Send an image and its attached artifacts to an OCI registry; print its digest.
    Push(cmd::push::Args),
    /// Fetch an image and its attached artifacts from an OCI registry; print its digest.
    Pull(cmd::pull::Args),
    /// Delete blobs (and unpacked roots) no tag, instance or release reaches,
    /// and cached packages not used for a while.
    Gc(cmd::gc::Args),
    /// Re-hash every blob and name each corrupt or missing one and what uses
    /// it; or, given an image, check its signatures against trusted keys.
    Verify(cmd::verify::Args),
    /// Sign an image (attach a signature artifact) with a key, by default the host key.
    Sign(cmd::sign::Args),
    /// Walk instance → release → image → signatures → provenance → SBOM →
    /// baseline → drift, verifying each link; exit 3 if one does not hold.
    Trace(cmd::trace::Args),
    /// Generate and show Ed25519 signing keys.
    Key(cmd::key::Args),
    /// Show the deploy policy (policy.toml), check an image against it, or
    /// trust a signing key for the whole fleet (`policy trust KEY.pub`).
    Policy(cmd::policy::Args),
    /// Revoke an image: refused from now on by run, apply, rollback and
    /// build; `serve` moves services off it. `--list` lists revocations,
    /// `--lift` lifts one.
    Revoke(cmd::revoke::Args),
    /// Print an image's baseline (its file manifest).
    Baseline(cmd::baseline::Args),
    /// List or verify the audit ledger.
    Audit(cmd::audit::Args),
    /// What happened: releases created / healthy / failed / rolled back,
    /// instances started / exited / healed / condemned, drift, refusals,
    /// revocations — one line each, from the ledger; `-f` follows.
    Events(cmd::events::Args),
    /// Check instances against their releases (files, image, config,
    /// process), or an image's root against its baseline; exit 3 on drift.
    Drift(cmd::drift::Args),
    /// Start an instance of an image (detached) and print its id.
    Run(cmd::run::Args),
    /// List instances: id, image digest, release, state, pid, port, uptime.
    Ps(cmd::ps::Args),
    /// Print an instance's output.
    Logs(cmd::logs::Args),
    /// Refused: instances are immutable; says why and offers `debug`.
    Exec(cmd::exec::Args),
    /// Run a command (default /bin/sh) in an ephemeral instance mirroring
    /// a running one: same image, env and network, volumes read-only;
    /// ledgered, removed when it exits.
    Debug(cmd::debug::Args),
    /// Stop instances: their stop signal, then SIGKILL after a grace period.
    Stop(cmd::stop::Args),
    /// Remove stopped instances (their container, bundle and log).
    Rm(cmd::rm::Args),
    /// Show what `apply` would change: every changed field (old -> new),
    /// new releases, rollout steps, services out of sync and orphans.
    Plan(cmd::plan::Args),
    /// Deploy a fleet file: new releases for changed services, rolled out
    /// health-gated by each service's strategy; automatic rollback on failure.
    Apply(cmd::apply::Args),
    /// Services: current release, ready / desired, instances and their
    /// digests; one service when named.
    Status(cmd::status::Args),
    /// A service's releases, newest last.
    Releases(cmd::releases::Args),
    /// Roll a service back: a new release with an earlier one's content.
    Rollback(cmd::rollback::Args),
    /// Follow a rollout (`apply --detach`'s) to healthy or failed.
    Rollout(cmd::rollout::Args),
    /// Manage recorded services: `service rm NAME` removes one.
    Service(cmd::service::Args),
    /// API tokens (for the HTTP API): `create NAME --role read|deploy|admin`
    /// prints a secret once; `list`; `revoke NAME`.
    Token(cmd::token::Args),
    /// Back up the store into one file, or restore a new store from one.
    Store(cmd::store::Args),
    /// Keep services converged, forever: heal crashed instances, roll out
    /// what `apply --detach` records, proxy traffic to healthy instances,
    /// replace drifted ones. Stops on SIGTERM; instances keep running.
    Serve(cmd::serve::Args),
    /// The hosts that joined the fleet (`serve --join`): state, labels,
    /// address, last heartbeat, epoch, instances.
    Hosts(cmd::hosts::Args),
    /// Mark a host draining (`--undo`: up again): its instances are
    /// replaced on other hosts, then stopped; it gets no new ones.
    Drain(cmd::hosts::DrainArgs),
    /// Settings every host of the fleet shares, in the state database: the
    /// registry hosts pull release images from (`fleet registry set`).
    Fleet(cmd::fleet::Args),
    /// Replace the drover binary (rename, never copy over) with a new one
    /// that runs, and have the running serve hand over to it: no
    /// connection refused.
    Upgrade(cmd::upgrade::Args),
    /// Write (or print) the systemd unit of `drover serve` for this store.
    InstallService(cmd::install_service::Args),
    /// Print a shell completion script: bash, zsh or fish.
    Completion(cmd::completion::Args),
    /// Write man pages (drover.1 and one per subcommand) into a directory.
    Man(cmd::man::Args),
    /// The monitor process of one instance (started by `run`).
    #[command(name = "__monitor", hide = true)]
    Monitor { id: String },
    /// The reverse proxy of `serve` alone, with fixed backends (benchmarks).
    #[command(name = "__proxy", hide = true)]
    Proxy(cmd::proxy::Args),
}

impl Cli {
    /// `-o`, else `--json`, else a table.
    fn format(&self) -> output::Format {
        match (self.output, self.json) {
            (Some(f), _) => f,
            (None, true) => output::Format::Json,
            (None, false) => output::Format::Table,
        }
    }

    fn store_dir(&self) -> PathBuf {
        if let Some(s) = &self.store {
            return s.clone();
        }
        let is_root = std::fs::metadata("/proc/self")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        if is_root {
            return PathBuf::from("/var/lib/drover");
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("."));
        data.join("drover")
    }
}

impl Command {
    /// Whether the command opens the store named by `--store` (the hidden
    /// ones are started by drover on a store it opened).
    fn opens_store(&self) -> bool {
        !matches!(
            self,
            Command::Monitor { .. }
                | Command::Proxy(_)
                | Command::Completion(_)
                | Command::Man(_)
                | Command::Exec(_)
                | Command::InstallService(_)
        ) && !matches!(self, Command::Store(a) if !a.opens_store())
    }
}

fn main() -> ExitCode {
    let cli = parse_args();
    let format = cli.format();
    output::color::init(format);
    let ctx = cmd::Ctx {
        store_dir: cli.store_dir(),
        format,
        json: format.machine(),
    };
    let result = logs(&cli.command, &ctx)
        .map_err(|e| anyhow::Error::from(drover_core::Error::Usage(e)))
        .and_then(|()| {
            let state = cli.state.as_deref().map(Choice::parse).transpose()?;
            if matches!(state, Some(Choice::Postgres(_)))
                && matches!(&cli.command, Command::Store(a) if !a.opens_store())
            {
                return Err(drover_core::Error::Usage(
                    "`store restore` makes a store with its state in SQLite (a backup holds \
                     SQLite's state): drop --state (and DROVER_STATE); PostgreSQL is restored \
                     with pg_restore"
                        .into(),
                )
                .into());
            }
            if cli.command.opens_store() {
                cmd::check_store(&ctx.store_dir, cli.store.is_some(), cli.init)?;
                // Chosen (and recorded) before anything opens the store:
                // every later open, in this process or another, reads it.
                if let Some(state) = &state {
                    let root = std::path::absolute(&ctx.store_dir)
                        .unwrap_or_else(|_| ctx.store_dir.clone());
                    drover_core::state::location::resolve(&root, Some(state))?;
                }
            }
            Ok(())
        });
    let result = result.and_then(|()| match &cli.command {
        Command::Build(a) => cmd::build::run(&ctx, a),
        Command::Lock(a) => cmd::lock::run(&ctx, a),
        Command::Images(a) => cmd::images::run(&ctx, a),
        Command::Inspect(a) => cmd::inspect::run(&ctx, a),
        Command::Tag(a) => cmd::tag::run(&ctx, a),
        Command::Push(a) => cmd::push::run(&ctx, a),
        Command::Pull(a) => cmd::pull::run(&ctx, a),
        Command::Rmi(a) => cmd::rmi::run(&ctx, a),
        Command::Gc(a) => cmd::gc::run(&ctx, a),
        Command::Verify(a) => cmd::verify::run(&ctx, a),
        Command::Sign(a) => cmd::sign::run(&ctx, a),
        Command::Key(a) => cmd::key::run(&ctx, a),
        Command::Trace(a) => cmd::trace::run(&ctx, a),
        Command::Policy(a) => cmd::policy::run(&ctx, a),
        Command::Revoke(a) => cmd::revoke::run(&ctx, a),
        Command::Baseline(a) => cmd::baseline::run(&ctx, a),
        Command::Audit(a) => cmd::audit::run(&ctx, a),
        Command::Drift(a) => cmd::drift::run(&ctx, a),
        Command::Events(a) => cmd::events::run(&ctx, a),
        Command::Run(a) => cmd::run::run(&ctx, a),
        Command::Ps(a) => cmd::ps::run(&ctx, a),
        Command::Logs(a) => cmd::logs::run(&ctx, a),
        Command::Exec(a) => cmd::exec::run(a),
        Command::Debug(a) => cmd::debug::run(&ctx, a),
        Command::Stop(a) => cmd::stop::run(&ctx, a),
        Command::Rm(a) => cmd::rm::run(&ctx, a),
        Command::Plan(a) => cmd::plan::run(&ctx, a),
        Command::Apply(a) => cmd::apply::run(&ctx, a),
        Command::Status(a) => cmd::status::run(&ctx, a),
        Command::Releases(a) => cmd::releases::run(&ctx, a),
        Command::Rollback(a) => cmd::rollback::run(&ctx, a),
        Command::Rollout(a) => cmd::rollout::run(&ctx, a),
        Command::Service(a) => cmd::service::run(&ctx, a),
        Command::Token(a) => cmd::token::run(&ctx, a),
        Command::Serve(a) => cmd::serve::run(&ctx, a),
        Command::Hosts(a) => cmd::hosts::run(&ctx, a),
        Command::Drain(a) => cmd::hosts::drain(&ctx, a),
        Command::Fleet(a) => cmd::fleet::run(&ctx, a),
        Command::Store(a) => cmd::store::run(&ctx, a),
        Command::Upgrade(a) => cmd::upgrade::run(&ctx, a),
        Command::InstallService(a) => cmd::install_service::run(&ctx, a),
        Command::Completion(a) => cmd::completion::run(a),
        Command::Man(a) => cmd::man::run(a),
        Command::Monitor { id } => drover_core::instance::monitor::main(&ctx.store_dir, id)
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
        Command::Proxy(a) => cmd::proxy::run(a),
    });
    // `plan --detailed-exitcode` keeps 2 for "changes": every error is 1.
    let collapse = matches!(&cli.command, Command::Plan(a) if a.detailed_exitcode);
    match result {
        Ok(code) => code,
        // The reader went away (`drover audit export | head`): it has what
        // it wanted, so nothing to say and nothing failed.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            report(format, &e);
            ExitCode::from(if collapse { 1 } else { exit_code(&e) })
        }
    }
}

/// Install the log subscriber ([`logging`]): serve logs to stderr, as
/// `--log-format` (or `DROVER_LOG_FORMAT`; under `-o json`, JSON) says;
/// a monitor to its instance's `monitor.log`; other commands say what they
/// did themselves, and log to stderr only when `DROVER_LOG` is set.
fn logs(command: &Command, ctx: &cmd::Ctx) -> Result<(), String> {
    use logging::LogFormat;
    match command {
        Command::Serve(a) => {
            let format = a.log_format().unwrap_or(if ctx.json {
                LogFormat::Json
            } else {
                LogFormat::Text
            });
            logging::to_stderr(format, logging::filter()?);
        }
        // A monitor makes do with defaults rather than fail.
        Command::Monitor { id } => logging::to_file(
            logging::env_format().ok().flatten().unwrap_or_default(),
            logging::filter().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            &drover_core::instance::monitor::log_path(&ctx.store_dir, id),
        ),
        _ if std::env::var_os(logging::FILTER_ENV).is_some() => {
            let format = logging::env_format()?.unwrap_or_default();
            logging::to_stderr(format, logging::filter()?);
        }
        _ => {}
    }
    Ok(())
}

/// Parse the command line; clap's own refusals (exit 2) are documents too
/// when the arguments ask for machine output.
fn parse_args() -> Cli {
    let e = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    use clap::error::ErrorKind as Clap;
    let machine = machine_format_requested(std::env::args().skip(1));
    if matches!(e.kind(), Clap::DisplayHelp | Clap::DisplayVersion) || machine.is_none() {
        e.exit();
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    let doc = output::error_document("invalid", message, Some("see `drover --help`"));
    print_error_document(machine.unwrap_or_default(), &doc);
    std::process::exit(2);
}

/// `--json`, `-o json|yaml`, `--output=json|yaml` among raw arguments (for
/// errors clap raises before the options are known).
fn machine_format_requested(args: impl Iterator<Item = String>) -> Option<output::Format> {
    let args: Vec<String> = args.collect();
    let mut found = None;
    for (i, a) in args.iter().enumerate() {
        let value = match a.as_str() {
            "--json" => Some("json"),
            "-o" | "--output" => args.get(i + 1).map(String::as_str),
            a => a
                .strip_prefix("--output=")
                .or_else(|| a.strip_prefix("-o").filter(|v| !v.is_empty())),
        };
        match value {
            Some("json") => found = Some(output::Format::Json),
            Some("yaml") => found = Some(output::Format::Yaml),
            _ => {}
        }
    }
    found
}

/// Say what went wrong on stderr: a sentence, or under `-o json|yaml` an
/// error document (`{apiVersion, kind: Error, error: {kind, message,
/// hint}}`).
fn report(format: output::Format, e: &anyhow::Error) {
    if !format.machine() {
        eprintln!("drover: error: {}", output::message(e));
        return;
    }
    let core = e
        .chain()
        .find_map(|c| c.downcast_ref::<drover_core::Error>());
    let hint = match core {
        Some(drover_core::Error::NotFound { hint, .. }) => hint.as_deref(),
        _ => None,
    };
    let kind = output::kind_name(core.map(|c| c.kind()));
    let doc = output::error_document(kind, &output::message(e), hint);
    print_error_document(format, &doc);
}

fn print_error_document(format: output::Format, doc: &serde_json::Value) {
    let text = match format {
        output::Format::Yaml => output::yaml::to_string(doc),
        _ => format!("{doc}\n"),
    };
    eprint!("{text}");
}

/// The one place an exit code is decided (besides clap's 2 for arguments it
/// rejects, `run --wait` passing on its instance's, and `plan
/// --detailed-exitcode`'s 2 for "changes", under which every error is 1): 1 internal, 2 bad
/// input, 3 corrupt data or a failed check (drift, verification, trace), 4
/// not found, 5 busy, 6 refused by policy (or a token not accepted).
fn exit_code(e: &anyhow::Error) -> u8 {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<drover_core::Error>())
        .map(|e| e.kind())
    {
        Some(ErrorKind::Invalid) => 2,
        Some(ErrorKind::Corrupt | ErrorKind::CheckFailed) => 3,
        Some(ErrorKind::NotFound) => 4,
        Some(ErrorKind::Busy) => 5,
        Some(ErrorKind::Refused | ErrorKind::Unauthenticated) => 6,
        Some(ErrorKind::Internal) | None => 1,
    }
}

#[cfg(test)]
mod tests {
    use drover_core::Error;
    use drover_core::ErrorKind::{Busy, Refused};

    use super::exit_code;

    /// The exit-code table users and scripts rely on, kind by kind (context
    /// added on the way up does not change it).
    /// Regression: `build -f nope.toml` said "read nope.toml: No such file
    /// or directory (os error 2): No such file or directory (os error 2)".
    #[test]
    fn an_error_names_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::from(Error::io("read", "nope.toml", io)).context("building");
        let m = crate::output::message(&e);
        assert_eq!(m.matches("not found").count(), 1, "{m}");
        assert!(m.starts_with("building: read nope.toml: "), "{m}");
    }

    #[test]
    fn each_error_kind_has_its_exit_code() {
        let code = |e: Error| exit_code(&anyhow::Error::from(e).context("while testing"));
        assert_eq!(code(Error::Failed("x".into())), 1);
        assert_eq!(code(Error::Usage("x".into())), 2);
        assert_eq!(code(Error::corrupt("blob", "x")), 3);
        assert_eq!(code(Error::Check("drift".into())), 3);
        assert_eq!(code(Error::not_found("x")), 4);
        let busy = Error::Busy {
            what: "x".into(),
            reason: "y".into(),
        };
        assert_eq!(code(busy), 5);
        let refused = Error::Refused {
            image: "x".into(),
            rule: "revoked".into(),
            reason: "y".into(),
        };
        assert_eq!(code(refused), 6);
        let deploy = |kind| Error::Deploy {
            kind,
            messages: vec!["x".into()],
        };
        assert_eq!(code(deploy(Busy)), 5);
        assert_eq!(code(deploy(Refused)), 6);
        assert_eq!(exit_code(&anyhow::anyhow!("not ours")), 1);
    }
}
