//! `sios`: the operator's command line. Every command but `up` talks to a
//! running kernel over its client socket, `<state-dir>/run/kernel.sock`.

mod audit_cmd;
mod memory_cmd;
mod policy_cmd;
mod progress;

use audit_cmd::{AuditCommand, AuditSource, KeysCommand};
use clap::{Parser, Subcommand};
use memory_cmd::{MemoryCommand, MemoryTarget};
use policy_cmd::PolicyCommand;
use sios_config::StateLayout;
use sios_ipc::{KernelClient, ProcessState, StatusReport, kserve, transport};
use std::cell::RefCell;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  the appliance answered no (a refused or failed request, a process that failed),
     or a good request failed here (e.g. an export could not be written)
  2  usage or configuration error, a request the appliance found malformed or too
     large (sent again unchanged it cannot succeed), or a timeout
  3  the appliance is not running on this state directory

Several appliances can run side by side, each with its own --state-dir.";

/// Operate a sios appliance: a governed, audited, air-gapped AI server.
///
/// `sios up` starts the kernel, which starts the audit and memory services
/// and every brain of the catalog, each in its own process. The other
/// commands talk to that running kernel.
#[derive(Parser, Debug)]
#[command(version, after_help = AFTER_HELP, propagate_version = true)]
struct Cli {
    /// The appliance's state directory [default: /var/lib/sios for root, else
    /// $XDG_STATE_HOME/sios or ~/.local/state/sios].
    #[arg(long, global = true, env = sios_config::STATE_DIR_ENV, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Config file for `up` [default: <state-dir>/config.toml if it exists,
    /// else built-in defaults; deploy/sios.toml documents every field].
    #[arg(long, global = true, env = sios_config::CONFIG_ENV, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start the appliance in the foreground (Ctrl-C or `sios down` stops it).
    ///
    /// Starts, in order, the audit service, the memory service and every brain
    /// in the catalog, then serves clients on <state-dir>/run/kernel.sock.
    /// Needs no configuration.
    Up,
    /// Show every process (pid, state, restarts, uptime, socket), the
    /// free space on the state directory's disk, with a warning when low,
    /// and each client uid's connections and bytes of requests held.
    /// Under each service, what it holds: the audit log's records; memory's
    /// items and bytes against its `[memory]` limits. Under a brain or the
    /// memory service with requests in flight, the bytes they take of its
    /// share (an eighth of its memory limit; more requests wait their turn
    /// in the kernel, the first in line collecting what is left).
    ///
    /// States: starting, ready, restarting, failed (gave up; see its last
    /// error, then `sios restart NAME`), stopped, disabled, degraded (a
    /// service that runs but cannot do its job, e.g. its disk is full, or
    /// memory is at its store-wide limit; the line under it says why and
    /// what to do). Exits 1 if any process is
    /// failed or degraded.
    Status {
        /// Print JSON: {"state_dir", "version", "processes": [{"name", "role",
        /// "pid", "state", "restarts", "uptime_s", "socket", "requests",
        /// "last_error", "holds", "in_flight": null or {"bytes", "limit_bytes"}}, …],
        /// "disk": {"free_bytes", "total_bytes", "warning"},
        /// "cpu_idle": null or what `[performance] low_latency_idle` holds,
        /// "clients": [{"uid", "connections", "connection_limit",
        /// "reading_bytes", "serving_bytes", "limit_bytes"}, …]}.
        #[arg(long)]
        json: bool,
    },
    /// Wait until every process is ready or failed (for scripts).
    ///
    /// Exits 0 when all are ready, 1 when some failed or are degraded, 2 on
    /// timeout, 3 when no appliance answers within the timeout.
    Wait {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run one inference on one brain.
    ///
    /// Input and output are Open Inference Protocol (KServe v2) JSON:
    ///
    ///   {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hello"]}]}
    ///
    /// Datatypes: BOOL UINT8 INT8 INT32 INT64 FP32 FP64 BYTES. Text for brains
    /// that tokenise goes in as BYTES. `data` is row-major, flat or nested.
    /// `sios brain list` lists the brains; each manifest in brains/catalog
    /// declares the inputs and outputs of its brain.
    ///
    /// Example:
    ///
    ///   echo '{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["hi"]}]}' \
    ///     | sios invoke text-embedding --input -
    #[command(verbatim_doc_comment)]
    Invoke {
        /// The brain to run.
        brain: String,
        /// The request: a file, or - for standard input.
        #[arg(long, short, value_name = "FILE|-")]
        input: PathBuf,
        /// Print the response on one line instead of indented.
        #[arg(long)]
        compact: bool,
    },
    /// Ask the appliance about a text: screening, routing, specialists.
    ///
    /// The kernel runs a fixed pipeline: the screening brains read the text
    /// (safety-screen can stop it there), the router ranks the domain
    /// specialists, and the best one or few answer. The same input always
    /// takes the same path. Every step is decided by the policy and recorded
    /// in the audit log; the answer names the brains that contributed.
    #[command(verbatim_doc_comment)]
    Ask {
        /// The text to ask about (or use --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Read the text from this UTF-8 file, or - for standard input.
        #[arg(long, value_name = "FILE|-")]
        file: Option<PathBuf>,
        /// Also recall the nearest items from this memory namespace
        /// (repeatable; items stored with `sios memory put --embed`).
        #[arg(long, value_name = "NAMESPACE")]
        recall: Vec<String>,
        /// How many memory items to recall (1–20).
        #[arg(long, default_value_t = 3, requires = "recall")]
        recall_k: u32,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Restart one process (a brain, `audit` or `memory`); all others keep their pid.
    ///
    /// Also brings a failed process back: its restart count is kept, its
    /// failure cleared. Returns when the new process is ready or has failed.
    Restart {
        /// The process, as `sios status` names it.
        name: String,
    },
    /// Manage brains one by one: list, disable, enable, reload.
    #[command(subcommand)]
    Brain(BrainCommand),
    /// The audit log: tail, export, verify offline, proofs, replay, timings.
    #[command(subcommand)]
    Audit(AuditCli),
    /// The operator's signing key: init, export-public, rotate.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Customer memory through the kernel: put, get, ls, search, rm, erase-subject, export, import.
    #[command(subcommand)]
    Memory(MemoryCommand),
    /// The governance policy: check, load, show, explain.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// What the sandbox actually enforces on a running brain or service.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Stop the appliance gracefully: brains first, then memory, then audit.
    Down {
        /// Seconds to wait for the kernel to finish stopping.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Subcommand, Debug)]
enum BrainCommand {
    /// Every brain: name, kind, state, model hash, requests served.
    List {
        /// Print JSON: {"brains": [{"name", "kind", "state", "model_sha256", "requests", "pid"}, …]}.
        #[arg(long)]
        json: bool,
    },
    /// Stop a brain and keep it stopped, across appliance restarts too.
    ///
    /// Requests that need it are refused with a message naming it. Recorded
    /// in the audit log.
    Disable { name: String },
    /// Start a disabled brain again; returns once it is ready or failed.
    Enable { name: String },
    /// Re-read a brain's manifest and restart it on the model it pins.
    ///
    /// Use after updating a model and its manifest's sha256, or its program
    /// or sandbox limits. The hash and the program are checked before the
    /// running brain is touched: a mismatch or a missing program leaves it
    /// serving.
    Reload { name: String },
}

/// `sios audit …`
#[derive(Subcommand, Debug)]
enum AuditCli {
    /// Re-decide every recorded decision of a bundle offline and report any divergence.
    ///
    /// For every intent record that carries a decision, loads the policy text
    /// the record names (stored in the bundle when it was activated),
    /// re-decides the request recorded in its detail, and compares the
    /// verdict and the deciding policy ids. Needs no appliance. Exits 1
    /// naming the first divergent record. Verify the bundle first
    /// (`sios audit verify`): replay trusts its records.
    Replay {
        /// The bundle (`sios audit export`).
        bundle: PathBuf,
        /// Print {"records", "decisions", "replayed", "policies", "divergent": [{"seq", "action", "reason"}]}.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Log(AuditCommand),
}

/// `sios sandbox …`
#[derive(Subcommand, Debug)]
enum SandboxCommand {
    /// Read back from /proc what is enforced on a running process:
    /// namespaces, uid/gid, capabilities, Seccomp, NoNewPrivs, Landlock,
    /// limits. Exit 1 if anything expected is not enforced.
    ///
    /// Example: sios sandbox show legal; sios sandbox show audit --json
    Show {
        /// A brain, or `audit` or `memory`, as `sios status` names it.
        #[arg(value_name = "PROCESS")]
        brain: String,
        /// Print the sios_launch::inspect::SandboxReport as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A failure with the exit status it deserves.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
    #[error("{message}")]
    Code { code: u8, message: String },
    #[error(
        "sios is not running on {state_dir} (no kernel answers at {socket}); start it with `sios up`"
    )]
    NotRunning { state_dir: PathBuf, socket: PathBuf },
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Code { code, .. } => *code,
            CliError::NotRunning { .. } => 3,
        }
    }
}

/// `sios brain list | head -3` must end quietly once `head` has read enough,
/// as any Unix tool does: with SIGPIPE's default action. Rust starts programs
/// with SIGPIPE ignored, which turns the next `println!` into a panic.
fn die_quietly_on_a_closed_pipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    #[allow(unsafe_code)]
    // SAFETY: runs first in `main`, before any other thread exists, and
    // installs the default disposition, not a handler.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

fn usage(err: impl std::fmt::Display) -> CliError {
    CliError::Usage(err.to_string())
}

fn main() -> ExitCode {
    die_quietly_on_a_closed_pipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sios: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let state_dir = sios_config::resolve_state_dir(cli.state_dir.as_deref()).map_err(usage)?;
    let config_path = cli.config.clone();
    let command = match cli.command {
        Command::Up => return Err(up(&state_dir, cli.config.as_deref())),
        Command::Policy(PolicyCommand::Check { dir, json }) => {
            policy_cmd::check(&dir, json).map_err(code)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Audit(AuditCli::Replay { bundle, json }) => return replay(&bundle, json),
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(usage)?;
    runtime.block_on(async {
        let layout = StateLayout::new(&state_dir);
        match command {
            Command::Up
            | Command::Policy(PolicyCommand::Check { .. })
            | Command::Audit(AuditCli::Replay { .. }) => unreachable!("handled above"),
            Command::Audit(AuditCli::Log(cmd)) => audit(&layout, cmd).await,
            Command::Keys(cmd) => keys(&layout, cmd).await,
            Command::Memory(cmd) => {
                let kernel = Kernel::new(connect(&layout).await?);
                memory_cmd::run(cmd, &kernel)
                    .await
                    .map_err(|e| kernel.memory_failure(e))
            }
            Command::Policy(cmd) => policy(&layout, &state_dir, config_path.as_deref(), cmd).await,
            Command::Sandbox(SandboxCommand::Show { brain, json }) => {
                sandbox_show(&layout, brain, json).await
            }
            Command::Status { json } => {
                let status = connect(&layout)
                    .await?
                    .status(ctx())
                    .await
                    .map_err(rpc)?
                    .map_err(refused)?;
                print_status(&status, json);
                Ok(if unwell(&status).is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Command::Wait { timeout } => wait(&layout, Duration::from_secs(timeout)).await,
            Command::Invoke {
                brain,
                input,
                compact,
            } => invoke(&layout, &brain, &input, compact).await,
            Command::Ask {
                text,
                file,
                recall,
                recall_k,
                json,
            } => {
                let text = match (text, file) {
                    (Some(text), _) => text,
                    (None, Some(path)) => read_text(&path)?,
                    (None, None) => return Err(usage("give a text, or --file")),
                };
                let request = sios_ipc::AskRequest {
                    text,
                    recall,
                    recall_k,
                };
                ask(&layout, request, json).await
            }
            Command::Restart { name } => {
                let client = connect(&layout).await?;
                let report = client
                    .restart(ctx(), name)
                    .await
                    .map_err(rpc)?
                    .map_err(refused)?;
                let pid = |p: Option<u32>| p.map_or_else(|| "-".to_owned(), |p| p.to_string());
                println!(
                    "{}: restarted (pid {} -> {}), now {}",
                    report.name,
                    pid(report.old_pid),
                    pid(report.new_pid),
                    report.state.as_str()
                );
                Ok(if report.state == ProcessState::Ready {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            Command::Down { timeout } => down(&layout, Duration::from_secs(timeout)).await,
            Command::Brain(command) => brain(&layout, command).await,
        }
    })
}

/// Replaces this process with the kernel, so signals reach it directly.
fn up(state_dir: &Path, config: Option<&Path>) -> CliError {
    let kernel = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("sios-kernel")))
        .unwrap_or_else(|| PathBuf::from("sios-kernel"));
    let mut command = std::process::Command::new(&kernel);
    command.arg("--state-dir").arg(state_dir);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let err = command.exec();
    usage(format!("cannot run {}: {err}", kernel.display()))
}

/// Requests use a generous deadline: a cold brain may be loading.
fn ctx() -> tarpc::context::Context {
    transport::context_with_timeout(Duration::from_secs(120))
}

fn rpc(err: tarpc::client::RpcError) -> CliError {
    CliError::Refused(rpc_failure(&err))
}

/// A call that got no answer from the service, in an operator's words. The
/// kernel's own refusals of a connection or a request (too many open) come
/// as server errors, whose text says what to do.
fn rpc_failure(err: &tarpc::client::RpcError) -> String {
    if let Some(text) = unreadable_answer(err) {
        return format!("the kernel's answer could not be read: {text}");
    }
    match err {
        tarpc::client::RpcError::Server(refusal) => match transport::connection_refusal(refusal) {
            Some(reason) => format!("the kernel refused the connection: {reason}"),
            None => format!("the kernel refused the request: {}", refusal.detail),
        },
        // A connection closed before any answer: the kernel stopped, or it
        // refused the connection without saying why, which it does once a
        // user already has several refused connections waiting for an answer.
        tarpc::client::RpcError::Shutdown | tarpc::client::RpcError::Channel(_) => {
            "the kernel closed the connection without answering; if it is running, this user \
             may hold more connections than its limit ([limits] max_connections_per_uid), which \
             the kernel's log says"
                .to_owned()
        }
        other => format!("the kernel did not answer: {other}"),
    }
}

/// What was wrong with bytes that came back and could not be decoded (a
/// frame over the limit, or not a sios message), as opposed to a
/// connection that ended.
fn unreadable_answer(err: &tarpc::client::RpcError) -> Option<String> {
    let tarpc::client::RpcError::Channel(tarpc::ChannelError::Read(cause)) = err else {
        return None;
    };
    let io = cause.downcast_ref::<std::io::Error>()?;
    transport::is_garbled(io)
        .then(|| transport::describe_error(io, transport::DEFAULT_MAX_FRAME_BYTES))
}

fn refused(err: impl std::fmt::Display) -> CliError {
    CliError::Refused(err.to_string())
}

/// A refused `invoke` or `ask`: exit 2 if the request itself was at fault
/// (as for memory commands), else 1.
fn invoke_refused(err: sios_ipc::InvokeError) -> CliError {
    if err.is_bad_request() {
        usage(err)
    } else {
        refused(err)
    }
}

async fn connect(layout: &StateLayout) -> Result<KernelClient, CliError> {
    let socket = layout.kernel_socket();
    let stream = transport::connect(&socket, Duration::ZERO)
        .await
        .map_err(|err| match err.kind() {
            // It runs, but this user may not reach it.
            std::io::ErrorKind::PermissionDenied => CliError::Refused(format!(
                "cannot reach the kernel at {}: permission denied; only the members of the group \
                 that the appliance's config names in [policy] client_gid may connect (deploy/sios.toml)",
                socket.display()
            )),
            _ => CliError::NotRunning {
                state_dir: layout.root.clone(),
                socket: socket.clone(),
            },
        })?;
    let framed = transport::framed(stream, transport::DEFAULT_MAX_FRAME_BYTES);
    Ok(KernelClient::new(transport::client_config(), framed).spawn())
}

fn print_status(status: &StatusReport, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(status).unwrap_or_default()
        );
        return;
    }
    println!("sios {} on {}", status.version, status.state_dir);
    if let Some(disk) = &status.disk {
        println!(
            "disk: {} free of {}",
            sios_ipc::human_bytes(disk.free_bytes),
            sios_ipc::human_bytes(disk.total_bytes)
        );
        if let Some(warning) = &disk.warning {
            println!("  └ {warning}");
        }
    }
    if let Some(idle) = &status.cpu_idle {
        println!("cpu idle: {idle}");
    }
    for line in client_lines(&status.clients) {
        println!("{line}");
    }
    for line in process_table(&status.processes) {
        println!("{line}");
    }
}

/// `sios status`'s lines on clients: per uid, its connections and the
/// bytes of its requests in the kernel, against their limits, so that an
/// operator told of a refusal can see who holds what.
fn client_lines(clients: &[sios_ipc::ClientLoad]) -> Vec<String> {
    clients
        .iter()
        .map(|c| {
            format!(
                "client uid {}: {} of {} connections; requests {} being served, {} being read \
                 (at most {} each)",
                c.uid,
                c.connections,
                c.connection_limit,
                sios_ipc::human_bytes(c.serving_bytes),
                sios_ipc::human_bytes(c.reading_bytes),
                sios_ipc::human_bytes(c.limit_bytes)
            )
        })
        .collect()
}

/// `sios status`'s table: a header, a row per process, and under a process
/// that stopped or failed, why. The NAME column is as wide as the longest name.
fn process_table(processes: &[sios_ipc::ProcessStatus]) -> Vec<String> {
    let w = name_column(processes.iter().map(|p| p.name.as_str()), 18);
    let mut lines = vec![format!(
        "{:<w$} {:<7} {:<11} {:>8} {:>8} {:>9} {:>9}  SOCKET",
        "NAME", "ROLE", "STATE", "PID", "RESTARTS", "UPTIME", "REQUESTS"
    )];
    for p in processes {
        lines.push(format!(
            "{:<w$} {:<7} {:<11} {:>8} {:>8} {:>9} {:>9}  {}",
            p.name,
            p.role.as_str(),
            p.state.as_str(),
            p.pid.map_or_else(|| "-".into(), |pid| pid.to_string()),
            p.restarts,
            p.uptime_s.map_or_else(|| "-".into(), human_duration),
            p.requests,
            p.socket.as_deref().unwrap_or("-"),
        ));
        if let Some(holds) = &p.holds {
            lines.push(format!("  · holds {holds}"));
        }
        if let Some(load) = p.in_flight.filter(|load| load.bytes > 0) {
            lines.push(format!(
                "  · in flight to it: {} of its {} share (requests past it wait in the kernel)",
                sios_ipc::human_bytes(load.bytes),
                sios_ipc::human_bytes(load.limit_bytes)
            ));
        }
        if let Some(err) = &p.last_error {
            lines.push(format!("  └ {err}"));
        }
    }
    lines
}

/// The width of a table's NAME column: the longest name, and at least `min`.
fn name_column<'a>(names: impl Iterator<Item = &'a str>, min: usize) -> usize {
    names.map(|n| n.chars().count()).max().unwrap_or(0).max(min)
}

fn human_duration(seconds: f64) -> String {
    let s = seconds as u64;
    match s {
        0..60 => format!("{seconds:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

async fn wait(layout: &StateLayout, timeout: Duration) -> Result<ExitCode, CliError> {
    let give_up = Instant::now() + timeout;
    let mut client = None;
    let mut reached = false;
    loop {
        if client.is_none() {
            client = connect(layout).await.ok();
        }
        if let Some(kernel) = &client {
            match kernel.status(ctx()).await {
                Ok(Ok(status)) => {
                    reached = true;
                    if let Some(outcome) = settled(&status) {
                        return outcome;
                    }
                }
                Ok(Err(refusal)) => return Err(refused(refusal)),
                // The kernel went away (or is restarting): connect afresh.
                Err(_) => client = None,
            }
        }
        if Instant::now() >= give_up {
            return Err(if reached {
                usage(format!("still starting after {} s", timeout.as_secs()))
            } else {
                CliError::NotRunning {
                    state_dir: layout.root.clone(),
                    socket: layout.kernel_socket(),
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `None` while any process is starting or restarting; then success if none
/// failed.
fn settled(status: &StatusReport) -> Option<Result<ExitCode, CliError>> {
    let settling = status
        .processes
        .iter()
        .any(|p| matches!(p.state, ProcessState::Starting | ProcessState::Restarting));
    if settling {
        return None;
    }
    let unwell = unwell(status);
    Some(if unwell.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Refused(format!(
            "settled, but {} (`sios status` says why)",
            unwell.join(", ")
        )))
    })
}

/// "NAME is STATE" for every process that needs an operator: failed, or
/// degraded.
fn unwell(status: &StatusReport) -> Vec<String> {
    status
        .processes
        .iter()
        .filter(|p| matches!(p.state, ProcessState::Failed | ProcessState::Degraded))
        .map(|p| format!("{} is {}", p.name, p.state.as_str()))
        .collect()
}

async fn invoke(
    layout: &StateLayout,
    brain: &str,
    input: &Path,
    compact: bool,
) -> Result<ExitCode, CliError> {
    // JSON spells a number in up to about ten bytes where a frame packs
    // it in four, and may escape a string's bytes: eight frames' worth of
    // JSON is more than any request that fits one.
    let bytes = sios_ipc::input::read_at_most(
        input,
        8 * transport::DEFAULT_MAX_FRAME_BYTES,
        "any request that fits a frame could take as JSON",
    )
    .map_err(usage)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| usage(format!("{}: not UTF-8 text ({e})", input.display())))?;
    let request = kserve::parse_request(&text).map_err(usage)?;
    let client = connect(layout).await?;
    let response = client
        .invoke(ctx(), brain.to_owned(), request)
        .await
        .map_err(rpc)?
        .map_err(invoke_refused)?;
    // Said on standard error as well as in the response's parameters: a
    // person reading the outputs must not take them for a reading of the
    // whole text.
    for cut in &response.truncated {
        eprintln!(
            "note: brain `{}` {cut}; its outputs are about that part only",
            response.model_name
        );
    }
    let json = kserve::response_to_json(&response).map_err(refused)?;
    let out = if compact {
        serde_json::to_string(&json)
    } else {
        serde_json::to_string_pretty(&json)
    };
    println!("{}", out.unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

async fn brain(layout: &StateLayout, command: BrainCommand) -> Result<ExitCode, CliError> {
    let client = connect(layout).await?;
    let (verb, result) = match command {
        BrainCommand::List { json } => {
            let brains = client.brains(ctx()).await.map_err(rpc)?.map_err(refused)?;
            if json {
                let doc = serde_json::json!({ "brains": brains });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                let w = name_column(brains.iter().map(|b| b.name.as_str()), 24);
                println!(
                    "{:<w$} {:<12} {:<11} {:>8} {:>9}  MODEL SHA256",
                    "NAME", "KIND", "STATE", "PID", "REQUESTS"
                );
                for b in &brains {
                    println!(
                        "{:<w$} {:<12} {:<11} {:>8} {:>9}  {}",
                        b.name,
                        b.kind,
                        b.state.as_str(),
                        b.pid.map_or_else(|| "-".into(), |p| p.to_string()),
                        b.requests,
                        b.model_sha256
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        BrainCommand::Disable { name } => ("disabled", client.brain_disable(ctx(), name).await),
        BrainCommand::Enable { name } => ("enabled", client.brain_enable(ctx(), name).await),
        BrainCommand::Reload { name } => ("reloaded", client.brain_reload(ctx(), name).await),
    };
    let status = result.map_err(rpc)?.map_err(refused)?;
    println!("{}: {verb}, now {}", status.name, status.state.as_str());
    let wanted = if verb == "disabled" {
        ProcessState::Disabled
    } else {
        ProcessState::Ready
    };
    Ok(if status.state == wanted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The text of `ask --file`: no more than one frame can carry.
fn read_text(path: &Path) -> Result<String, CliError> {
    let bytes = sios_ipc::input::read_at_most(
        path,
        transport::DEFAULT_MAX_FRAME_BYTES,
        "one request can carry; ask about a part of it (the brains read its first page)",
    )
    .map_err(usage)?;
    String::from_utf8(bytes)
        .map_err(|e| usage(format!("cannot read {} as UTF-8 text: {e}", path.display())))
}

async fn ask(
    layout: &StateLayout,
    request: sios_ipc::AskRequest,
    json: bool,
) -> Result<ExitCode, CliError> {
    let client = connect(layout).await?;
    let answer = client
        .ask(ctx(), request)
        .await
        .map_err(rpc)?
        .map_err(invoke_refused)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        let reading =
            |f: &sios_ipc::Finding| format!("{} → {} ({:.2})", f.brain, f.label, f.confidence);
        if !answer.screening.is_empty() {
            let screens: Vec<String> = answer.screening.iter().map(reading).collect();
            println!("screening:  {}", screens.join("; "));
        }
        if let Some(why) = &answer.refused {
            println!("refused:    {why}");
        }
        if !answer.route.is_empty() {
            let route: Vec<String> = answer
                .route
                .iter()
                .map(|(b, p)| format!("{b} {p:.2}"))
                .collect();
            println!("routed:     {}", route.join(", "));
        }
        for finding in &answer.answers {
            let others: Vec<String> = finding
                .top
                .iter()
                .skip(1)
                .map(|(l, p)| format!("{l} {p:.2}"))
                .collect();
            println!(
                "answer:     {}   (then: {})",
                reading(finding),
                others.join(", ")
            );
        }
        for hit in &answer.recalled {
            let value = match &hit.value {
                Some(sios_ipc::memory::Value::Text(text)) => format!(": {text}"),
                Some(sios_ipc::memory::Value::Bytes(bytes)) => format!(": ({} bytes)", bytes.len()),
                None => String::new(),
            };
            println!(
                "recalled:   {}/{} ({:.2}){value}",
                hit.namespace, hit.key, hit.score
            );
        }
        for note in &answer.notes {
            println!("note:       {note}");
        }
        println!("brains:     {}", answer.plan.join(" → "));
        if !answer.audit_seqs.is_empty() {
            let seqs: Vec<String> = answer.audit_seqs.iter().map(u64::to_string).collect();
            println!("audit:      records {}", seqs.join(", "));
        }
    }
    Ok(if answer.refused.is_some() || answer.answers.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn down(layout: &StateLayout, timeout: Duration) -> Result<ExitCode, CliError> {
    let client = connect(layout).await?;
    client
        .shutdown(ctx())
        .await
        .map_err(rpc)?
        .map_err(refused)?;
    // The kernel removes its socket as the very last thing it does.
    let give_up = Instant::now() + timeout;
    while layout.kernel_socket().exists() {
        if Instant::now() >= give_up {
            return Err(usage(format!(
                "the kernel is still stopping after {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("sios stopped");
    Ok(ExitCode::SUCCESS)
}

fn code(failure: policy_cmd::Failure) -> CliError {
    CliError::Code {
        code: failure.code,
        message: failure.message,
    }
}

/// The running kernel as the audit and memory commands see it. The kernel's
/// refusals are strings inside a [`sios_ipc::ControlError`]; the last one is
/// kept so the CLI can print it as the kernel said it.
struct Kernel {
    client: KernelClient,
    refusal: RefCell<Option<sios_ipc::ControlError>>,
    /// The kernel turned the connection itself away (e.g. the uid's
    /// connection limit): reported as that, not as a service unavailable.
    turned_away: RefCell<Option<String>>,
}

impl Kernel {
    fn new(client: KernelClient) -> Kernel {
        Kernel {
            client,
            refusal: RefCell::new(None),
            turned_away: RefCell::new(None),
        }
    }

    /// The words for a failed call, noting a refusal of the connection
    /// (the kernel's other server errors, a failed handler or a stop, are
    /// failures of the call, reported as such).
    fn rpc_failure(&self, err: &tarpc::client::RpcError) -> String {
        let text = rpc_failure(err);
        if let tarpc::client::RpcError::Server(refusal) = err
            && transport::connection_refusal(refusal).is_some()
        {
            *self.turned_away.borrow_mut() = Some(text.clone());
        }
        text
    }

    fn audit<T>(
        &self,
        result: Result<Result<T, sios_ipc::ControlError>, tarpc::client::RpcError>,
    ) -> Result<T, sios_ipc::AuditError> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                let text = err.to_string();
                *self.refusal.borrow_mut() = Some(err);
                Err(sios_ipc::AuditError::Unavailable(text))
            }
            Err(err) => Err(sios_ipc::AuditError::Unavailable(self.rpc_failure(&err))),
        }
    }

    fn memory<T>(
        &self,
        result: Result<Result<T, sios_ipc::MemoryError>, tarpc::client::RpcError>,
    ) -> Result<T, sios_ipc::MemoryError> {
        result.map_err(|err| sios_ipc::MemoryError::Unavailable(self.rpc_failure(&err)))?
    }

    /// The error to report for a failed memory command.
    fn memory_failure(&self, err: memory_cmd::MemoryCliError) -> CliError {
        match self.turned_away.borrow_mut().take() {
            Some(refusal) => CliError::Refused(refusal),
            None => CliError::Code {
                code: err.exit_code(),
                message: err.to_string(),
            },
        }
    }

    /// The error to report for a failed audit command.
    fn audit_failure(&self, err: audit_cmd::AuditCliError) -> CliError {
        if let Some(refusal) = self.turned_away.borrow_mut().take() {
            return CliError::Refused(refusal);
        }
        match self.refusal.borrow_mut().take() {
            Some(refusal) => CliError::Refused(refusal.to_string()),
            None => CliError::Code {
                code: err.exit_code(),
                message: err.to_string(),
            },
        }
    }
}

/// Methods that forward to the kernel method of the same arguments, their
/// result mapped by `$map` into the error type the command modules use.
/// One line per method: `name(args) -> reply => kernel_method;`.
macro_rules! forward_to_kernel {
    ($map:ident -> $err:ty; $($method:ident($($arg:ident: $ty:ty),*) -> $out:ty => $call:ident;)*) => {
        $(
            async fn $method(&self, $($arg: $ty),*) -> Result<$out, $err> {
                self.$map(self.client.$call(ctx(), $($arg),*).await)
            }
        )*
    };
}

impl AuditSource for Kernel {
    forward_to_kernel! { audit -> sios_ipc::AuditError;
        tail(n: u64) -> sios_ipc::RecordPage => audit_tail;
        read(from_seq: u64, max: u64) -> sios_ipc::RecordPage => audit_read;
        checkpoint() -> sios_ipc::SignedCheckpoint => audit_checkpoint;
        checkpoints(after_size: u64, max: u64) -> sios_ipc::CheckpointPage => audit_checkpoints;
        prove_inclusion(seq: u64, tree_size: Option<u64>) -> sios_ipc::InclusionProof => audit_prove_inclusion;
        prove_consistency(old_size: u64, new_size: u64) -> sios_ipc::ConsistencyProof => audit_prove_consistency;
        public_keys() -> Vec<sios_ipc::PublicKeyInfo> => audit_public_keys;
        policy_text(hash: sios_ipc::Digest) -> String => audit_policy_text;
        rotate_key() -> sios_ipc::RotationReport => key_rotate;
        record_timings() -> sios_ipc::RecordTimings => audit_record_timings;
    }
}

impl audit_cmd::FollowSource for Kernel {
    forward_to_kernel! { audit -> sios_ipc::AuditError;
        follow_start(back: u64) -> sios_ipc::FollowSession => audit_follow_start;
        follow_next(session: u64, max: u64, wait_ms: u64) -> sios_ipc::RecordPage => audit_follow_next;
        follow_stop(session: u64) -> sios_ipc::FollowSummary => audit_follow_stop;
    }
}

impl MemoryTarget for Kernel {
    forward_to_kernel! { memory -> sios_ipc::MemoryError;
        put(request: sios_ipc::PutRequest) -> sios_ipc::PutResponse => memory_put;
        get(namespace: String, key: String) -> sios_ipc::Item => memory_get;
        list(request: sios_ipc::ListRequest) -> sios_ipc::ListPage => memory_list;
        delete(namespace: String, key: String) -> () => memory_delete;
        search(request: sios_ipc::SearchRequest) -> sios_ipc::SearchResponse => memory_search;
        erase_subject(subject: String) -> sios_ipc::EraseReport => memory_erase_subject;
        export(request: sios_ipc::ExportRequest) -> sios_ipc::ExportPage => memory_export;
        import(request: sios_ipc::ImportRequest) -> sios_ipc::ImportReport => memory_import;
        compact() -> sios_ipc::CompactReport => memory_compact;
    }
    async fn embed(&self, text: String) -> Result<sios_ipc::Embedding, sios_ipc::MemoryError> {
        use sios_ipc::ask::{
            EMBEDDER, PartlyRead, embedding_of, embedding_request, partly_read_note,
        };
        let failed = |reason: String| {
            sios_ipc::MemoryError::Unavailable(format!(
                "the text could not be embedded by the `{EMBEDDER}` brain: {reason}"
            ))
        };
        let response = self
            .client
            .invoke(ctx(), EMBEDDER.into(), embedding_request(&text))
            .await
            .map_err(|err| failed(rpc_failure(&err)))?
            .map_err(|err| match err {
                sios_ipc::InvokeError::Denied { .. } => sios_ipc::MemoryError::Denied {
                    reason: err.to_string(),
                },
                other => failed(other.to_string()),
            })?;
        let partly: Vec<PartlyRead> = PartlyRead::of(EMBEDDER, &text, &response)
            .into_iter()
            .collect();
        if let Some(note) = partly_read_note(&text, &partly) {
            eprintln!("note: {note}; the embedding stands for that part only");
        }
        embedding_of(&response).map_err(failed)
    }
}

async fn audit(layout: &StateLayout, cmd: AuditCommand) -> Result<ExitCode, CliError> {
    let kernel = if cmd.needs_appliance() {
        Some(Kernel::new(connect(layout).await?))
    } else {
        None
    };
    let result = match (cmd, &kernel) {
        (
            AuditCommand::Tail {
                n,
                json,
                follow: true,
            },
            Some(kernel),
        ) => audit_cmd::follow(kernel, n, json).await,
        (cmd, kernel) => audit_cmd::run_audit(cmd, kernel.as_ref()).await,
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => Err(match &kernel {
            Some(kernel) => kernel.audit_failure(err),
            None => CliError::Code {
                code: err.exit_code(),
                message: err.to_string(),
            },
        }),
    }
}

async fn keys(layout: &StateLayout, cmd: KeysCommand) -> Result<ExitCode, CliError> {
    let kernel = if cmd.needs_appliance() {
        Some(Kernel::new(connect(layout).await?))
    } else {
        None
    };
    let data_dir = layout.service_dir("audit");
    match audit_cmd::run_keys(cmd, &data_dir, kernel.as_ref()).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => Err(match &kernel {
            Some(kernel) => kernel.audit_failure(err),
            None => CliError::Code {
                code: err.exit_code(),
                message: err.to_string(),
            },
        }),
    }
}

fn replay(bundle: &Path, json: bool) -> Result<ExitCode, CliError> {
    let report = policy_cmd::replay(bundle).map_err(code)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "{} records, {} decisions, {} re-decided against {} stored policies, {} divergent",
            report.records,
            report.decisions,
            report.replayed,
            report.policies,
            report.divergent.len()
        );
    }
    match report.divergent.first() {
        None => Ok(ExitCode::SUCCESS),
        Some(first) => Err(CliError::Refused(format!(
            "record {} ({}) diverges: {}",
            first.seq, first.action, first.reason
        ))),
    }
}

async fn policy(
    layout: &StateLayout,
    state_dir: &Path,
    config: Option<&Path>,
    cmd: PolicyCommand,
) -> Result<ExitCode, CliError> {
    match cmd {
        PolicyCommand::Check { .. } => unreachable!("handled offline"),
        PolicyCommand::Load { dir } => {
            let files = policy_cmd::policy_files(&dir).map_err(code)?;
            let info = connect(layout)
                .await?
                .policy_load(ctx(), files)
                .await
                .map_err(rpc)?
                .map_err(refused)?;
            println!("active: {}", info.content_hash);
            println!("stored text: sha256 {}", info.record_hash);
            for id in &info.policy_ids {
                println!("  {id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Show { json } => {
            let info = connect(layout)
                .await?
                .policy_show(ctx())
                .await
                .map_err(rpc)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                println!("active policy {}", info.content_hash);
                println!("stored text sha256 {}", info.record_hash);
                println!("policies: {}", info.policy_ids.join(", "));
                println!();
                print!("{}", info.text);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain {
            principal,
            action,
            resource,
            dir,
            json,
        } => {
            let config = sios_config::Config::load(config, state_dir).map_err(usage)?;
            let principal = policy_cmd::parse_principal(&principal, &config).map_err(code)?;
            let resource = policy_cmd::parse_resource(&resource, &config).map_err(code)?;
            let policy = match dir {
                Some(dir) => {
                    sios_policy::LoadedPolicy::load_dir(&dir).map_err(|e| CliError::Code {
                        code: 1,
                        message: e.to_string(),
                    })?
                }
                None => active_policy(layout).await?,
            };
            let allowed =
                policy_cmd::explain(&policy, principal, &action, resource, json).map_err(code)?;
            Ok(if allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// The running appliance's active policy, with the schema it was loaded
/// against (from the stored text in the audit log when readable).
async fn active_policy(layout: &StateLayout) -> Result<sios_policy::LoadedPolicy, CliError> {
    let client = connect(layout).await?;
    let info = client.policy_show(ctx()).await.map_err(rpc)?;
    let digest = parse_digest(&info.record_hash);
    if let Some(digest) = digest
        && let Ok(Ok(text)) = client.audit_policy_text(ctx(), digest).await
    {
        let policy = policy_cmd::policy_from_stored(&text).map_err(refused)?;
        return Ok(policy);
    }
    policy_cmd::policy_from_canonical(&info.text).map_err(refused)
}

fn parse_digest(hex: &str) -> Option<sios_ipc::Digest> {
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(sios_ipc::Digest(out))
}

async fn sandbox_show(
    layout: &StateLayout,
    brain: String,
    json: bool,
) -> Result<ExitCode, CliError> {
    let text = connect(layout)
        .await?
        .sandbox_report(ctx(), brain)
        .await
        .map_err(rpc)?
        .map_err(refused)?;
    let report: sios_launch::inspect::SandboxReport = serde_json::from_str(&text)
        .map_err(|e| refused(format!("the kernel sent an unreadable sandbox report: {e}")))?;
    if json {
        println!("{text}");
    } else {
        print!("{}", sios_launch::inspect::render(&report));
    }
    // A script (or a monitoring check) learns from the status alone whether
    // everything expected is enforced.
    Ok(if report.failures().next().is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sios_ipc::{ProcessState, ProcessStatus, Role};

    fn process(name: &str, last_error: Option<&str>) -> ProcessStatus {
        ProcessStatus {
            name: name.into(),
            role: Role::Brain,
            pid: Some(4242),
            state: ProcessState::Ready,
            restarts: 0,
            uptime_s: Some(75.0),
            socket: Some(format!("/run/sios/brains/{name}.sock")),
            requests: 3,
            last_error: last_error.map(Into::into),
            holds: None,
            in_flight: None,
        }
    }

    #[test]
    fn the_status_table_stays_aligned_whatever_the_names() {
        let processes = [
            process("echo", None),
            process("defence-supply-chain", Some("exited with status 1")),
            process("a-brain-with-a-name-longer-than-any-in-the-catalog", None),
        ];
        let lines = process_table(&processes);
        let rows: Vec<&String> = lines.iter().filter(|l| !l.starts_with("  ")).collect();
        assert_eq!(rows.len(), 4, "{lines:#?}");
        // Every row's ROLE column (the header's "ROLE", each row's "brain")
        // starts where the header's does.
        let role_at = rows[0].find("ROLE").unwrap();
        for row in &rows[1..] {
            assert_eq!(
                row.find(" brain ").map(|i| i + 1),
                Some(role_at),
                "{lines:#?}"
            );
        }
        assert_eq!(lines[3], "  └ exited with status 1");
        assert!(lines[2].contains("1m15s"), "{}", lines[2]);
    }
}
