use std::process::ExitCode;

use anyhow::{Context, bail};
use drover_core::grammar;
use drover_core::instance::{self, Exit, RunOptions, VolumeSpec};
use drover_core::runtime::DriverKind;
use drover_core::runtime::spec::{DEFAULT_TMPFS_BYTES, Limits};

use super::Ctx;

#[derive(clap::Args)]
pub struct Args {
    /// The image: name:tag, a digest, or a unique digest prefix.
    image: String,
    /// Replaces the image's entrypoint and command.
    #[arg(last = true)]
    command: Vec<String>,
    /// A name, unique among instances that are not removed.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Mount a named volume (repeatable): NAME:/path (read-write, the only
    /// writer), NAME:/path:ro, or NAME:/path:shared (read-write beside other
    /// shared writers).
    #[arg(short, long = "volume", value_name = "NAME:/PATH")]
    volume: Vec<String>,
    /// The port given to the instance in PORT (default: a free one).
    #[arg(short, long)]
    port: Option<u16>,
    /// Memory limit, e.g. 256m or 1g (at least 6m).
    #[arg(long, value_name = "SIZE", value_parser = grammar::memory_limit)]
    memory: Option<u64>,
    /// CPU limit in cores, e.g. 0.5 (0.01 to 1024).
    #[arg(long, value_name = "CORES", value_parser = grammar::cpu_limit)]
    cpus: Option<u64>,
    /// Limit on the number of processes (at least 1).
    #[arg(long, value_parser = grammar::pids_limit)]
    pids: Option<u64>,
    /// Limit on open files (8 to 1048576).
    #[arg(long, value_parser = grammar::nofile_limit)]
    nofile: Option<u64>,
    /// Size of the /tmp tmpfs (/run gets a quarter).
    #[arg(long, value_name = "SIZE", value_parser = grammar::size)]
    tmp_size: Option<u64>,
    /// Mount a tmpfs owned by the instance's user (repeatable), added to
    /// the image's: /path[:SIZE] (default size 64m).
    #[arg(long, value_name = "/PATH[:SIZE]", value_parser = drover_core::runtime::tmpfs::parse_flag)]
    tmpfs: Vec<drover_core::runtime::tmpfs::Tmpfs>,
    /// Keep a capability (all are dropped by default), e.g. NET_BIND_SERVICE.
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Run a tiny init as PID 1 that reaps zombies and forwards signals to
    /// the command (`--init`, `--init=false`). Default: on when the command
    /// is a shell (sh, bash, busybox sh, …), else off.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    init: Option<bool>,
    /// The runtime: embedded (libcontainer, built in) or runc.
    #[arg(long, env = "DROVER_DRIVER", default_value = "embedded")]
    driver: String,
    /// Run in the foreground: wait for the instance to exit, print its
    /// output, and exit with its exit code.
    #[arg(long)]
    wait: bool,
    /// With --wait: remove the instance once it has exited.
    #[arg(long, requires = "wait")]
    rm: bool,
}

pub fn run(ctx: &Ctx, a: &Args) -> anyhow::Result<ExitCode> {
    let mut env = Vec::new();
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!(drover_core::Error::Usage(format!(
                "--env {kv:?}: expected KEY=VALUE"
            )));
        };
        env.push((k.to_string(), v.to_string()));
    }
    let volumes = a
        .volume
        .iter()
        .map(|v| VolumeSpec::parse(v))
        .collect::<Result<_, _>>()?;
    let opts = RunOptions {
        name: a.name.clone(),
        env,
        volumes,
        port: a.port,
        limits: Limits {
            memory_bytes: a.memory,
            pids: a.pids,
            millicpus: a.cpus,
            nofile: a.nofile,
        },
        cap_add: a.cap_add.clone(),
        command: (!a.command.is_empty()).then(|| a.command.clone()),
        driver: DriverKind::parse(&a.driver)?,
        service: None,
        release: None,
        tmpfs_bytes: a.tmp_size.unwrap_or(DEFAULT_TMPFS_BYTES),
        tmpfs: a.tmpfs.clone(),
        userns: true,
        slot: None,
        init: a.init,
        logs: None,
    };
    let mut store = ctx.store()?;
    if !a.wait {
        let inst = instance::run(&mut store, &a.image, &opts)?;
        if ctx.json {
            ctx.emit("Instance", &inst)?;
        } else {
            outln!("{}", inst.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let inst = instance::run_wait(&mut store, &a.image, &opts)?;
    instance::logs(&mut store, &inst.id, false, &mut std::io::stdout().lock())?;
    if a.rm {
        instance::remove(&mut store, &inst.id, false)
            .with_context(|| format!("removing instance {}", inst.id))?;
    }
    Ok(match inst.exit {
        Some(Exit::Code(c)) => ExitCode::from(c.clamp(0, 255) as u8),
        Some(Exit::Signal(s)) => ExitCode::from((128 + s).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    })
}
