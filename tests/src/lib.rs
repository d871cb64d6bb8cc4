//! Test harness: a real appliance (real kernel, services and brains, real
//! sockets) in a temporary state directory, and the reference fixtures that
//! `deploy/setup.sh` computed with Python's onnxruntime.
//!
//! The sios binaries are found next to the test executable's target
//! directory; `deploy/test.sh` builds them (`cargo build --workspace --bins`)
//! before running the tests.

use serde_json::Value;
use sios_ipc::{KernelClient, ProcessState, StatusReport, transport};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The source tree (where `build/` and `brains/catalog` live).
pub fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Directory holding the sios executables of this build profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_owned();
    for bin in [
        "sios",
        "sios-kernel",
        "sios-launch",
        "sios-brain",
        "sios-audit",
        "sios-memory",
    ] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: build the binaries first (`cargo build --workspace --bins`, which deploy/test.sh does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// Fails (in CI) or skips loudly (elsewhere) when `deploy/setup.sh` has not run.
pub fn require_setup() -> bool {
    required(
        source_tree().join("build/models").exists(),
        "build/models (made by deploy/setup.sh)",
        "run deploy/setup.sh to run the end-to-end tests",
    )
}

/// `met`, or else a failure in CI (which has everything a test needs) and a
/// loud skip elsewhere, naming what is `missing` and what to `do`.
fn required(met: bool, missing: &str, to_do: &str) -> bool {
    if !met {
        assert!(
            std::env::var_os("CI").is_none(),
            "{missing} is missing in CI, which must run every test: {to_do}"
        );
        eprintln!("SKIPPED: {missing} is missing; {to_do}");
    }
    met
}

/// The items of the export bundle at `bundle`, in order (OAR.md §7.1).
pub fn bundle_items(bundle: &Path) -> Vec<sios_audit::bundle::Item> {
    sios_audit::bundle::read_items(bundle).unwrap_or_else(|e| panic!("{}: {e}", bundle.display()))
}

/// Writes `items` as a bundle at `path`, the end item recounted, as a forger
/// would: tampering then shows in what the items say, not in their count.
pub fn write_bundle_items(path: &Path, items: &[sios_audit::bundle::Item]) {
    sios_audit::bundle::write_items(path, items)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The independent verifier, `services/audit/verifier-py/oar_verify.py`,
/// written in Python from OAR.md alone, run with the interpreter
/// deploy/setup.sh prepares for it (`build/verifier-venv`).
#[derive(Debug)]
pub struct IndependentVerifier {
    python: PathBuf,
    script: PathBuf,
}

/// What a verifier said of a bundle: its exit code, and its JSON verdict.
#[derive(Debug)]
pub struct Verdict {
    pub code: Option<i32>,
    pub json: Value,
    /// Everything it printed, for failure messages.
    pub said: String,
}

impl IndependentVerifier {
    /// `None` (a loud skip, or a failure in CI) when setup has not made its venv.
    pub fn find() -> Option<IndependentVerifier> {
        let python = source_tree().join("build/verifier-venv/bin/python");
        required(
            python.exists(),
            "build/verifier-venv (made by deploy/setup.sh)",
            "run deploy/setup.sh to check bundles with the independent verifier",
        )
        .then(|| IndependentVerifier {
            python,
            script: source_tree().join("services/audit/verifier-py/oar_verify.py"),
        })
    }

    /// `oar_verify.py bundle BUNDLE --pubkey PUBKEY --json`, then `extra`.
    pub fn bundle(&self, bundle: &Path, pubkey: &Path, extra: &[&str]) -> Verdict {
        let out = self.bundle_output(bundle, pubkey, extra);
        Verdict::of(&out, "the independent verifier")
    }

    /// The same, as it ran: on a usage error (exit 2) it prints no JSON.
    pub fn bundle_output(&self, bundle: &Path, pubkey: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        self.on_file("bundle", bundle, pubkey, &args)
    }

    /// `oar_verify.py proof PROOF --pubkey PUBKEY EXTRA...` (e.g. `--bundle
    /// FILE`), as it ran: exit 0 (the proof holds), 1 (it is false) or 3
    /// (the key cannot check it).
    pub fn proof_output(&self, proof: &Path, pubkey: &Path, extra: &[&str]) -> Output {
        self.on_file("proof", proof, pubkey, extra)
    }

    /// `oar_verify.py COMMAND FILE --pubkey PUBKEY EXTRA...`.
    fn on_file(&self, command: &str, file: &Path, pubkey: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            OsStr::new(command),
            file.as_os_str(),
            OsStr::new("--pubkey"),
            pubkey.as_os_str(),
        ];
        args.extend(extra.iter().map(OsStr::new));
        self.verifier(&args)
    }

    /// `oar_verify.py` with `args`.
    fn verifier(&self, args: &[&OsStr]) -> Output {
        let mut all = vec![self.script.as_os_str()];
        all.extend_from_slice(args);
        self.python(&all)
    }

    /// Runs a Python script of the verifier's own (with its venv).
    pub fn python(&self, args: &[&OsStr]) -> Output {
        Command::new(&self.python)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("running the independent verifier's Python")
    }
}

impl Verdict {
    /// A verifier's exit code and the JSON object it printed on stdout.
    fn of(out: &Output, who: &str) -> Verdict {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let said = stdout.clone() + &String::from_utf8_lossy(&out.stderr);
        let json = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{who}'s --json output ({e}): {said}"));
        Verdict {
            code: out.status.code(),
            json,
            said,
        }
    }
}

/// `sios memory put --namespace NS --subject SUBJECT KEY VALUE`, then `extra`:
/// the arguments, for whichever way a test runs the CLI.
pub fn memory_put_args<'a>(
    namespace: &'a str,
    subject: &'a str,
    key: &'a str,
    value: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "memory",
        "put",
        "--namespace",
        namespace,
        "--subject",
        subject,
        key,
        value,
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs `command` to its end with `stdin` as its input (or none), capturing
/// its output.
pub fn output_with_stdin(command: &mut Command, stdin: Option<&str>) -> Output {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{:?}: {e}", command.get_program()));
    if let Some(text) = stdin {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("output")
}

/// The options (`rw,…` or `ro,…`) of the mount in effect on `point`, from a
/// process's `/proc/<pid>/mountinfo` (the last mount on a point is the one
/// in effect).
pub fn mount_options(mountinfo: &str, point: &str) -> String {
    mountinfo
        .lines()
        .rev()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.len() > 5 && fields[4] == point)
        .map(|fields| fields[5].to_owned())
        .unwrap_or_else(|| panic!("{point} is not a mount point:\n{mountinfo}"))
}

/// `program` must exist (skips loudly elsewhere, fails in CI).
pub fn require_program(program: &str, what: &str) -> bool {
    required(
        Path::new(program).exists(),
        program,
        &format!("install {what}"),
    )
}

/// True when `pid` has exited (reaped, or a zombie waiting to be).
pub fn is_zombie_or_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// A tokio runtime with `workers` threads and every driver, for tests that
/// drive clients while the test thread does blocking work.
pub fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `pid` and every process below it (a sandboxed brain's launcher has the
/// brain itself as a child).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children = std::fs::read_to_string(task.path().join("children"));
                for c in children.unwrap_or_default().split_whitespace() {
                    out.extend(c.parse::<u32>().ok());
                }
            }
        }
        i += 1;
    }
    out
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// True when running as root; otherwise fails (in CI, which runs as root)
/// or skips loudly, saying what needs root.
pub fn require_root(what: &str) -> bool {
    required(
        nix::unistd::geteuid().is_root(),
        "root",
        &format!("{what} needs it; run the tests as root"),
    )
}

/// A reference request/response pair computed by Python onnxruntime.
#[derive(Debug)]
pub struct Fixture {
    pub request: Value,
    pub response: Value,
}

pub fn fixture(brain: &str) -> Fixture {
    let path = source_tree().join(format!("build/fixtures/{brain}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("fixture JSON");
    Fixture {
        request: doc["request"].clone(),
        response: doc["response"].clone(),
    }
}

/// Asserts two KServe responses carry the same outputs, FP32 values equal
/// bit for bit (after the JSON round trip, which is exact for f32).
pub fn assert_same_outputs(got: &Value, want: &Value) {
    let got_outputs = got["outputs"].as_array().expect("outputs in response");
    let want_outputs = want["outputs"].as_array().expect("outputs in fixture");
    assert_eq!(got_outputs.len(), want_outputs.len(), "number of outputs");
    for (g, w) in got_outputs.iter().zip(want_outputs) {
        assert_eq!(g["name"], w["name"]);
        assert_eq!(g["datatype"], w["datatype"], "datatype of {}", w["name"]);
        assert_eq!(g["shape"], w["shape"], "shape of {}", w["name"]);
        let gd = g["data"].as_array().expect("data");
        let wd = w["data"].as_array().expect("data");
        assert_eq!(gd.len(), wd.len(), "element count of {}", w["name"]);
        for (i, (a, b)) in gd.iter().zip(wd).enumerate() {
            match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) if w["datatype"] == "FP32" => assert_eq!(
                    (a as f32).to_bits(),
                    (b as f32).to_bits(),
                    "{}[{i}]: sios {a} vs onnxruntime {b}",
                    w["name"]
                ),
                _ => assert_eq!(a, b, "{}[{i}]", w["name"]),
            }
        }
    }
}

/// Options for a test appliance.
#[derive(Clone, Debug)]
pub struct Options {
    pub brains: Vec<String>,
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    /// Use this catalog instead of the source tree's.
    pub catalog_dir: Option<PathBuf>,
    /// Called with the (empty) state directory before anything is written
    /// to it, e.g. to mount a small filesystem there.
    pub prepare_state_dir: Option<fn(&Path)>,
    /// Start the kernel with this command line instead of
    /// `sios --state-dir DIR up`, with `SIOS_STATE_DIR=DIR` in its
    /// environment (e.g. a service manager's). It must end up exec'ing the
    /// kernel in the process it starts.
    pub kernel_command: Option<Vec<String>>,
}

impl Options {
    pub fn brains(names: &[&str]) -> Options {
        Options {
            brains: names.iter().map(|s| s.to_string()).collect(),
            extra_config: String::new(),
            catalog_dir: None,
            prepare_state_dir: None,
            kernel_command: None,
        }
    }
}

/// The three brains whose models the set-up step builds and fixtures cover.
pub const FIXTURE_BRAINS: [&str; 3] = ["text-embedding", "file-type", "voice-activity"];

/// Every brain of the default catalog (`brains/catalog`), by name.
pub fn catalog_names() -> Vec<String> {
    sios_manifest::load_catalog(&source_tree().join("brains/catalog"))
        .expect("catalog")
        .into_iter()
        .map(|m| m.name)
        .collect()
}

/// One cold start of the whole default catalog (benchmarks).
#[derive(Debug)]
pub struct ColdStart {
    pub app: TestAppliance,
    /// From `sios up` to every process ready or failed.
    pub took: Duration,
    pub brains: usize,
    pub ready: usize,
}

/// Starts every brain of the default catalog in a fresh state directory,
/// with `extra_config` appended to the config, and times it.
pub fn cold_start_catalog(extra_config: &str) -> ColdStart {
    let names = catalog_names();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut options = Options::brains(&refs);
    options.extra_config = extra_config.to_owned();
    let started = Instant::now();
    let app = TestAppliance::start(options);
    let took = started.elapsed();
    let status = app.status();
    let brains: Vec<_> = status
        .processes
        .iter()
        .filter(|p| p.role == sios_ipc::Role::Brain)
        .collect();
    let ready = brains
        .iter()
        .filter(|p| p.state == sios_ipc::ProcessState::Ready)
        .count();
    ColdStart {
        took,
        brains: brains.len(),
        ready,
        app,
    }
}

/// A running appliance, stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct TestAppliance {
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    bin: PathBuf,
    kernel: Option<Child>,
}

impl TestAppliance {
    /// Starts `sios up` with the given options and waits until every process
    /// is ready or failed.
    pub fn start(options: Options) -> TestAppliance {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        if let Some(prepare) = options.prepare_state_dir {
            prepare(&state_dir);
        }
        let tree = source_tree();
        let catalog = options
            .catalog_dir
            .clone()
            .unwrap_or_else(|| tree.join("brains/catalog"));
        let brains = options
            .brains
            .iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        // The test runs as an operator, whatever its uid: tests that need
        // other principals configure them in `extra_config`.
        let operators = if options.extra_config.contains("[policy") {
            String::new()
        } else {
            format!(
                "[policy.operators]\nuids = [{}]\n",
                nix::unistd::geteuid().as_raw()
            )
        };
        let config = format!(
            "[paths]\ncatalog_dir = {:?}\nmodels_dir = {:?}\nonnxruntime_lib = {:?}\nbin_dir = {:?}\n\n[brains]\nenabled = [{brains}]\n\n{operators}\n{}",
            catalog.display().to_string(),
            tree.join("build/models").display().to_string(),
            tree.join("build/lib/libonnxruntime.so.1.32.0")
                .display()
                .to_string(),
            bin.display().to_string(),
            options.extra_config,
        );
        std::fs::write(state_dir.join("config.toml"), config).expect("config");
        let log = dir.path().join("kernel.log");
        let kernel = Self::spawn_kernel(&bin, &state_dir, &log, options.kernel_command.as_deref());
        let appliance = TestAppliance {
            dir,
            state_dir,
            log,
            bin,
            kernel: Some(kernel),
        };
        appliance.settle();
        appliance
    }

    /// Starts a new kernel on the state directory (and config) of a stopped one.
    pub fn restart_in(mut stopped: TestAppliance) -> TestAppliance {
        assert!(stopped.kernel.is_none(), "stop the appliance first");
        let kernel = Self::spawn_kernel(&stopped.bin, &stopped.state_dir, &stopped.log, None);
        stopped.kernel = Some(kernel);
        stopped.settle();
        stopped
    }

    /// `sios --state-dir DIR up`, or `command` (see [`Options::kernel_command`]).
    fn spawn_kernel(bin: &Path, state_dir: &Path, log: &Path, command: Option<&[String]>) -> Child {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        use std::os::unix::process::CommandExt as _;
        let mut kernel = match command {
            Some([program, args @ ..]) => {
                let mut kernel = Command::new(program);
                kernel.args(args);
                kernel
            }
            Some([]) => panic!("an empty kernel command"),
            None => {
                let mut kernel = Command::new(bin.join("sios"));
                kernel.arg("--state-dir").arg(state_dir).arg("up");
                kernel
            }
        };
        kernel
            .env(sios_config::STATE_DIR_ENV, state_dir)
            // What an operator's appliance logs, whatever the test runner's
            // environment says.
            .env("SIOS_LOG", sios_ipc::process::DEFAULT_LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            // A process group of its own, as a shell gives a foreground job:
            // `interrupt_group` signals it the way Ctrl-C does, and the test
            // runner stays out of it.
            .process_group(0)
            .spawn()
            .expect("start sios up")
    }

    /// Waits until every process is ready or failed.
    fn settle(&self) {
        let waited = self.sios(&["wait", "--timeout", "120"]);
        // `wait` exits 1 when something failed to start; tests that expect
        // that look at `status` themselves.
        assert!(
            matches!(waited.status.code(), Some(0 | 1)),
            "appliance did not settle: {}\n--- kernel log ---\n{}",
            String::from_utf8_lossy(&waited.stderr),
            self.log_text()
        );
    }

    /// Runs the `sios` CLI against this appliance.
    pub fn sios(&self, args: &[&str]) -> Output {
        self.sios_with_stdin(args, None)
    }

    pub fn sios_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        output_with_stdin(&mut self.sios_command(args), stdin)
    }

    /// The `sios` CLI against this appliance, to spawn (for commands that
    /// keep running, such as `sios audit tail --follow`).
    pub fn sios_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin.join("sios"));
        command.arg("--state-dir").arg(&self.state_dir).args(args);
        command
    }

    /// `sios status --json`, parsed; its exit status checked against what
    /// it reports (1 exactly when a process is failed or degraded).
    /// `sios audit verify BUNDLE --pubkey PUBKEY` (offline: it needs no
    /// running appliance): the exit code and everything it printed.
    pub fn audit_verify(&self, bundle: &Path, pubkey: &Path) -> (Option<i32>, String) {
        let out = self.sios(&[
            "audit",
            "verify",
            &bundle.display().to_string(),
            "--pubkey",
            &pubkey.display().to_string(),
        ]);
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), said)
    }

    /// `sios audit verify BUNDLE --pubkey PUBKEY --json`, then `extra`.
    pub fn audit_verify_json(&self, bundle: &Path, pubkey: &Path, extra: &[&str]) -> Verdict {
        let (bundle, pubkey) = (bundle.display().to_string(), pubkey.display().to_string());
        let mut args = vec!["audit", "verify", &bundle, "--pubkey", &pubkey, "--json"];
        args.extend_from_slice(extra);
        Verdict::of(&self.sios(&args), "sios audit verify")
    }

    pub fn status(&self) -> StatusReport {
        let out = self.sios(&["status", "--json"]);
        let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "status printed no JSON ({err}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let unwell = report
            .processes
            .iter()
            .any(|p| matches!(p.state, ProcessState::Failed | ProcessState::Degraded));
        assert_eq!(
            out.status.code(),
            Some(if unwell { 1 } else { 0 }),
            "`sios status` exits 1 exactly when a process is failed or degraded: {report:?}"
        );
        report
    }

    /// The pid of one process, from `status`.
    /// The pid of every process `status` lists.
    pub fn pids(&self) -> Vec<u32> {
        self.status()
            .processes
            .iter()
            .filter_map(|p| p.pid)
            .collect()
    }

    pub fn pid(&self, name: &str) -> u32 {
        self.status()
            .processes
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.pid)
            .unwrap_or_else(|| panic!("no pid for {name}"))
    }

    /// Polls `status` until `check` holds for the named process.
    pub fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&sios_ipc::ProcessStatus) -> bool,
    ) {
        self.wait_for_status(&format!("{name} {what}"), |status| {
            status
                .processes
                .iter()
                .find(|p| p.name == name)
                .is_some_and(&check)
        });
    }

    /// Polls `status` until `check` holds for it, and returns that status;
    /// panics after 60 s, saying the appliance never got `what`.
    pub fn wait_for_status(
        &self,
        what: &str,
        check: impl Fn(&StatusReport) -> bool,
    ) -> StatusReport {
        let give_up = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.status();
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < give_up,
                "never {what}: {status:#?}\n--- kernel log ---\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A tarpc client on the kernel's client socket.
    pub async fn client(&self) -> KernelClient {
        let socket = sios_config::StateLayout::new(&self.state_dir).kernel_socket();
        let stream = transport::connect(&socket, Duration::from_secs(5))
            .await
            .expect("connect");
        KernelClient::new(
            transport::client_config(),
            transport::framed(stream, 64 << 20),
        )
        .spawn()
    }

    /// The kernel's own timing of the governed brain calls it ran.
    pub fn invoke_timings(&self) -> sios_ipc::InvokeTimings {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            self.client()
                .await
                .invoke_timings(ctx())
                .await
                .expect("invoke_timings")
                .expect("the policy lets the test's operator read timings")
        })
    }

    pub fn kernel_socket(&self) -> PathBuf {
        sios_config::StateLayout::new(&self.state_dir).kernel_socket()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The kernel's pid (`sios up` execs the kernel in its own process).
    pub fn kernel_pid(&self) -> u32 {
        self.kernel.as_ref().expect("kernel running").id()
    }

    /// Sends the kernel SIGKILL (no clean-up of any kind) from a shared
    /// reference, for tests whose clients are still running; reap it with
    /// [`TestAppliance::kill_kernel`] once they have stopped.
    pub fn kill_kernel_now(&self) {
        let kernel = self.kernel.as_ref().expect("kernel running");
        let pid = nix::unistd::Pid::from_raw(kernel.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL the kernel");
    }

    /// Kills the kernel with SIGKILL (if it is not dead already) and reaps
    /// it. Its children die with it (each is spawned with a parent-death
    /// signal); [`TestAppliance::restart_in`] starts a new kernel on the same
    /// state directory.
    pub fn kill_kernel(&mut self) {
        let mut kernel = self.kernel.take().expect("kernel running");
        kernel.kill().expect("SIGKILL the kernel");
        kernel.wait().expect("reap the kernel");
    }

    /// Stops the appliance with SIGTERM and returns the kernel's exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut kernel = self.kernel.take().expect("kernel running");
        let pid = nix::unistd::Pid::from_raw(kernel.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        kernel.wait().expect("kernel exit")
    }

    /// Sends SIGINT to the kernel's whole process group, as Ctrl-C in the
    /// terminal running `sios up` does (and `timeout` or a process manager
    /// signalling every process it started), and returns the kernel's exit
    /// status.
    pub fn interrupt_group(&mut self) -> std::process::ExitStatus {
        let mut kernel = self.kernel.take().expect("kernel running");
        let group = nix::unistd::Pid::from_raw(kernel.id() as i32);
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT)
            .expect("SIGINT the kernel's process group");
        kernel.wait().expect("kernel exit")
    }
}

impl Drop for TestAppliance {
    fn drop(&mut self) {
        if self.kernel.is_some() {
            self.stop();
        }
    }
}

/// Every record of a stopped appliance's audit log, decoded.
pub fn audit_records(state_dir: &Path) -> Vec<sios_audit::record::Record> {
    let log = sios_audit::AuditLog::open(&state_dir.join("audit")).expect("open the audit log");
    let page = log
        .read(0, u64::MAX, usize::MAX)
        .expect("read the audit log");
    let records = page
        .records
        .iter()
        .map(|bytes| sios_audit::record::Record::decode(bytes).expect("a valid record"))
        .collect();
    log.close();
    records
}

/// A request as a KServe JSON string.
pub fn json_text(value: &Value) -> String {
    serde_json::to_string(value).expect("json")
}

/// The fixture request, parsed to the wire type.
pub fn fixture_request(brain: &str) -> sios_ipc::InferRequest {
    sios_ipc::kserve::parse_request(&json_text(&fixture(brain).request)).expect("fixture request")
}

/// A tarpc context with a long deadline.
pub fn ctx() -> tarpc::context::Context {
    transport::context_with_timeout(Duration::from_secs(60))
}

/// A hostile brain in a test catalog: `sios-hostile-brain` in brain mode
/// (manifest `program = "sios-hostile-brain"`), started by the real kernel
/// through the real launcher and sandbox like any brain.
#[derive(Clone, Copy, Debug)]
pub struct HostileBrain<'a> {
    pub name: &'a str,
    pub purpose: &'a str,
    pub memory_mib: u64,
    /// The brains its manifest declares it may call.
    pub calls: &'a [&'a str],
}

/// Writes a test catalog into `dir`: copies of the source tree's manifests
/// `real`, and `hostile`'s. Every manifest pins a model file, which the
/// sandbox mounts; the hostile program loads none, so it pins the model of
/// `real[0]` (a file that exists).
pub fn hostile_catalog(dir: &Path, real: &[&str], hostile: &HostileBrain) {
    let catalog = source_tree().join("brains/catalog");
    for name in real {
        let file = format!("{name}.toml");
        std::fs::copy(catalog.join(&file), dir.join(&file))
            .unwrap_or_else(|e| panic!("copy the {name} manifest: {e}"));
    }
    let first = real.first().expect("at least one real brain");
    let pinned = sios_manifest::Manifest::load(&catalog.join(format!("{first}.toml")))
        .expect("the pinned brain's manifest");
    let HostileBrain {
        name,
        purpose,
        memory_mib,
        calls,
    } = hostile;
    let manifest = format!(
        r#"name = "{name}"
kind = "operational"
sensitivity = "public"
purpose = "{purpose}"
program = "sios-hostile-brain"

[model]
file = "{}"
sha256 = "{}"

[[inputs]]
name = "text"
datatype = "BYTES"
shape = [-1]

[[outputs]]
name = "report"
datatype = "BYTES"
shape = [-1]

[sandbox]
memory_mib = {memory_mib}
cpu_weight = 100
max_pids = 8
max_open_files = 32

[capabilities]
calls = {calls:?}
memory_namespaces = []
"#,
        pinned.model.file, pinned.model.sha256
    );
    std::fs::write(dir.join(format!("{name}.toml")), manifest).expect("the hostile manifest");
}

/// The standard output of a `sios` run that must succeed; on failure, the
/// panic shows its status, standard error and output.
pub fn expect_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
