//! `sios-kernel`: runs the appliance in the foreground until SIGTERM, SIGINT
//! or `sios down`. Usually started by `sios up`.

use anyhow::{Context as _, bail};
use clap::Parser;
use nix::fcntl::{Flock, FlockArg};
use sios_config::{Config, StateLayout};
use sios_kernel::appliance::{self, Appliance};
use sios_kernel::service_manager;
use std::path::PathBuf;
use std::time::Instant;

// mimalloc, as sios-audit (see the workspace's Cargo.toml): every request the
// kernel routes allocates its messages, decisions and audit drafts.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The sios supervisor. Prefer `sios up`, which runs this.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// State directory (default: /var/lib/sios for root, else ~/.local/state/sios).
    #[arg(long, env = sios_config::STATE_DIR_ENV)]
    state_dir: Option<PathBuf>,
    /// Config file (default: <state-dir>/config.toml if present, else built-in defaults).
    #[arg(long, env = sios_config::CONFIG_ENV)]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    sios_ipc::process::finish("sios-kernel", try_main())
}

fn try_main() -> anyhow::Result<()> {
    let args = Args::parse();
    sios_ipc::process::init_tracing("kernel");
    // Everything the kernel creates (directories, sockets, files) is private
    // unless it says otherwise.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let state_dir = sios_config::resolve_state_dir(args.state_dir.as_deref())?;
    let config = Config::load(args.config.as_deref(), &state_dir)?;
    let layout = StateLayout::new(&state_dir);
    appliance::create_private_dir(&layout.root)?;
    appliance::create_private_dir(&layout.run_dir())?;
    if let Some(gid) = config.policy.client_gid {
        // Members of the client group may reach the socket: they can pass
        // through (never list) the two directories above it; everything else
        // in them stays the kernel's alone.
        for dir in [&layout.root, &layout.run_dir()] {
            share_with_group(dir, gid, 0o710)?;
        }
    }

    // One kernel per state directory.
    let lock_path = layout.kernel_lock();
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => bail!(
            "another sios kernel is already running on {}; use `sios status`, or pick another --state-dir",
            state_dir.display()
        ),
        Err((_, errno)) => bail!("cannot lock {}: {errno}", lock_path.display()),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(config, layout.clone()));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Sockets are meaningless once the kernel is gone. The client socket goes
    // last, after the lock is released: `sios down` returns when it vanishes,
    // and a `sios up` right after must find the state directory free.
    let _ = std::fs::remove_dir_all(layout.brain_socket_dir());
    for name in ["audit", "memory"] {
        let _ = std::fs::remove_file(layout.service_socket(name));
    }
    drop(lock);
    let _ = std::fs::remove_file(layout.kernel_socket());
    result
}

/// Tells systemd (if it started the kernel) how the appliance is doing; a
/// failure is logged, never fatal: the appliance serves without it.
fn tell_service_manager(assignments: &str) {
    if let Err(err) = service_manager::notify(assignments) {
        tracing::warn!(
            "could not tell the service manager ({}={:?}): {err}",
            service_manager::NOTIFY_SOCKET_ENV,
            std::env::var_os(service_manager::NOTIFY_SOCKET_ENV).unwrap_or_default()
        );
    }
}

/// Gives group `gid` the `mode` permissions on `path` (the kernel stays its owner).
fn share_with_group(path: &std::path::Path, gid: u32, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid))).with_context(|| {
        format!(
            "cannot give group {gid} ([policy] client_gid) access to {}; the kernel must run as root \
             or be a member of that group",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

async fn run(config: Config, layout: StateLayout) -> anyhow::Result<()> {
    let started = Instant::now();
    let max_frame = config.limits.max_frame_bytes;
    let client_gid = config.policy.client_gid;
    let (appliance, pending) = Appliance::prepare(config, layout.clone())?;

    // Clients can ask for `status` while the rest is still starting.
    let client_listener = appliance::bind(&layout.kernel_socket())?;
    if let Some(gid) = client_gid {
        // Connecting to a Unix socket needs write permission on it.
        share_with_group(&layout.kernel_socket(), gid, 0o660)?;
    }
    let client_listener = tokio::net::UnixListener::from_std(client_listener)?;
    let serving = tokio::spawn(sios_kernel::api::serve_clients(
        client_listener,
        std::sync::Arc::clone(&appliance),
        max_frame,
    ));
    tracing::info!(socket = %layout.kernel_socket().display(), state_dir = %layout.root.display(), "kernel listening");

    let starting = appliance.start(pending);
    tokio::select! {
        () = starting => {
            let status = appliance.status().await;
            let is_ready = |p: &&sios_ipc::ProcessStatus| p.state == sios_ipc::ProcessState::Ready;
            let brains: Vec<_> = status.processes.iter().filter(|p| p.role == sios_ipc::Role::Brain).collect();
            let ready = brains.iter().copied().filter(is_ready).count();
            tracing::info!(
                "appliance up in {} ms: {ready}/{} brains ready; `sios status` for details",
                started.elapsed().as_millis(),
                brains.len()
            );
            let all_ready = status.processes.iter().filter(is_ready).count();
            tell_service_manager(&service_manager::ready(all_ready, status.processes.len()));
        }
        signal = sios_ipc::process::shutdown_signal() => {
            let signal = signal?;
            tracing::info!("{signal} received during start-up");
            tell_service_manager(&service_manager::stopping(signal));
            appliance.stop().await;
            return Ok(());
        }
    }

    let reason = tokio::select! {
        signal = sios_ipc::process::shutdown_signal() => signal?.to_owned(),
        () = appliance.shutdown_requested() => "shutdown requested by client".to_owned(),
        result = serving => format!("client socket failed: {result:?}"),
    };
    tracing::info!("{reason}; stopping in reverse start order");
    tell_service_manager(&service_manager::stopping(&reason));
    appliance.stop().await;
    tracing::info!("appliance stopped");
    Ok(())
}
