//! `sios`: the operator's command line. Every command but `up` talks to a
//! running kernel over its client socket, `<state-dir>/run/kernel.sock`.

use clap::{Parser, Subcommand};
use sios_config::StateLayout;
use sios_ipc::{KernelClient, ProcessState, StatusReport, kserve, transport};
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  the appliance answered no: a refused or failed request, a process that failed
  2  usage or configuration error, or a timeout
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
    /// Show every process: pid, state, restarts, uptime, socket.
    ///
    /// States: starting, ready, restarting, failed (gave up; see its last
    /// error, then `sios restart NAME`), stopped, disabled.
    Status {
        /// Print JSON: {"processes": [{"name", "role", "pid", "state",
        /// "restarts", "uptime_s", "socket", "requests", "last_error"}, …]}.
        #[arg(long)]
        json: bool,
    },
    /// Wait until every process is ready or failed (for scripts).
    ///
    /// Exits 0 when all are ready, 1 when some failed, 2 on timeout, 3 when no
    /// appliance answers within the timeout.
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
    /// Use after updating a model and its manifest's sha256. The hash is
    /// checked before the running brain is touched: a mismatch leaves it serving.
    Reload { name: String },
}

/// A failure with the exit status it deserves.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Usage(String),
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
            CliError::NotRunning { .. } => 3,
        }
    }
}

fn usage(err: impl std::fmt::Display) -> CliError {
    CliError::Usage(err.to_string())
}

fn main() -> ExitCode {
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
    if let Command::Up = cli.command {
        return Err(up(&state_dir, cli.config.as_deref()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(usage)?;
    runtime.block_on(async {
        let layout = StateLayout::new(&state_dir);
        match cli.command {
            Command::Up => unreachable!("handled above"),
            Command::Status { json } => {
                let status = connect(&layout).await?.status(ctx()).await.map_err(rpc)?;
                print_status(&status, json);
                Ok(ExitCode::SUCCESS)
            }
            Command::Wait { timeout } => wait(&layout, Duration::from_secs(timeout)).await,
            Command::Invoke {
                brain,
                input,
                compact,
            } => invoke(&layout, &brain, &input, compact).await,
            Command::Ask { text, file, json } => ask(&layout, text, file, json).await,
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
    CliError::Refused(format!("the kernel did not answer: {err}"))
}

fn refused(err: impl std::fmt::Display) -> CliError {
    CliError::Refused(err.to_string())
}

async fn connect(layout: &StateLayout) -> Result<KernelClient, CliError> {
    let socket = layout.kernel_socket();
    let stream = transport::connect(&socket, Duration::ZERO)
        .await
        .map_err(|_| CliError::NotRunning {
            state_dir: layout.root.clone(),
            socket: socket.clone(),
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
    println!(
        "{:<18} {:<7} {:<11} {:>8} {:>8} {:>9} {:>9}  SOCKET",
        "NAME", "ROLE", "STATE", "PID", "RESTARTS", "UPTIME", "REQUESTS"
    );
    for p in &status.processes {
        println!(
            "{:<18} {:<7} {:<11} {:>8} {:>8} {:>9} {:>9}  {}",
            p.name,
            p.role.as_str(),
            p.state.as_str(),
            p.pid.map_or_else(|| "-".into(), |pid| pid.to_string()),
            p.restarts,
            p.uptime_s.map_or_else(|| "-".into(), human_duration),
            p.requests,
            p.socket.as_deref().unwrap_or("-"),
        );
        if let Some(err) = &p.last_error {
            println!("  └ {err}");
        }
    }
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
                Ok(status) => {
                    reached = true;
                    if let Some(outcome) = settled(&status) {
                        return outcome;
                    }
                }
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
    let failed: Vec<_> = status
        .processes
        .iter()
        .filter(|p| p.state == ProcessState::Failed)
        .map(|p| p.name.as_str())
        .collect();
    Some(if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Refused(format!(
            "settled, but failed: {} (`sios status` says why)",
            failed.join(", ")
        )))
    })
}

async fn invoke(
    layout: &StateLayout,
    brain: &str,
    input: &Path,
    compact: bool,
) -> Result<ExitCode, CliError> {
    let text = if input == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("cannot read the request from standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(input)
            .map_err(|e| usage(format!("cannot read {}: {e}", input.display())))?
    };
    let request = kserve::parse_request(&text).map_err(usage)?;
    let client = connect(layout).await?;
    let response = client
        .invoke(ctx(), brain.to_owned(), request)
        .await
        .map_err(rpc)?
        .map_err(refused)?;
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
            let brains = client.brains(ctx()).await.map_err(rpc)?;
            if json {
                let doc = serde_json::json!({ "brains": brains });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                println!(
                    "{:<24} {:<12} {:<11} {:>8} {:>9}  MODEL SHA256",
                    "NAME", "KIND", "STATE", "PID", "REQUESTS"
                );
                for b in &brains {
                    println!(
                        "{:<24} {:<12} {:<11} {:>8} {:>9}  {}",
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

fn read_text(path: &Path) -> Result<String, CliError> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("cannot read standard input as UTF-8 text: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read {} as UTF-8 text: {e}", path.display())))
    }
}

async fn ask(
    layout: &StateLayout,
    text: Option<String>,
    file: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let text = match (text, file) {
        (Some(text), _) => text,
        (None, Some(path)) => read_text(&path)?,
        (None, None) => return Err(usage("give a text, or --file")),
    };
    let client = connect(layout).await?;
    let answer = client
        .ask(ctx(), text)
        .await
        .map_err(rpc)?
        .map_err(refused)?;
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
