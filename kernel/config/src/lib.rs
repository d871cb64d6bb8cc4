//! The appliance's configuration and the layout of its state directory.
//!
//! `sios up` needs no configuration: every field has a default, and the
//! defaults point at the catalog in this source tree and at the models and
//! ONNX Runtime library that `deploy/setup.sh` builds under `build/`. An
//! operator overrides any of it with one TOML file (see `deploy/sios.toml`,
//! which documents every field), found at `--config`, `SIOS_CONFIG`, or
//! `<state-dir>/config.toml`, in that order.
//!
//! # State directory layout
//! ```text
//! <state-dir>/            0700  everything the appliance owns
//!   config.toml                 optional operator config
//!   run/                  0700  sockets and the kernel's lock; gone after `sios down`
//!     kernel.sock               the client socket (SO_PEERCRED-identified callers)
//!     kernel.lock               held (flock) by the running kernel
//!     audit.sock  memory.sock   service sockets, kernel-only
//!     brains/<name>.sock        one per brain, kernel-only
//!   kernel/               0700  operator choices (disabled-brains.json); no customer data
//!   audit/audit.redb      0700  owned by sios-audit alone
//!   memory/memory.redb    0700  owned by sios-memory alone
//! ```
//! With `[policy] client_gid` set, `<state-dir>/` and `run/` are 0710 and
//! `kernel.sock` 0660, group `client_gid`: its members reach the socket and
//! nothing else.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The environment variable naming the state directory (same as `--state-dir`).
pub const STATE_DIR_ENV: &str = "SIOS_STATE_DIR";
/// The environment variable naming the config file (same as `--config`).
pub const CONFIG_ENV: &str = "SIOS_CONFIG";

/// Where this source tree keeps what `deploy/setup.sh` builds.
const SOURCE_TREE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// The whole configuration file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub paths: PathsConfig,
    pub limits: LimitsConfig,
    pub supervisor: SupervisorConfig,
    pub brains: BrainsConfig,
    pub sandbox: SandboxConfig,
    /// Who is who (uids and gids → names, clearances, groups, operators),
    /// and where the policy lives. Documented in deploy/policy/README.md.
    pub policy: sios_policy::PolicyConfig,
    pub memory: MemoryConfig,
    pub performance: PerformanceConfig,
}

/// The `[performance]` section: trade-offs an operator may choose.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Keep every CPU polling when idle instead of halting, for as long as
    /// the appliance runs (Linux PM QoS: 0 µs held on
    /// `/dev/cpu_dma_latency`; needs root). Each hand-off between the
    /// appliance's processes then skips waking a sleeping CPU: on the
    /// 2-vCPU machine this project is measured on, one client's invoke took
    /// about a quarter less time (`sios_ipc::idle` has the numbers). The
    /// price: idle CPUs run at full power. Off by default.
    pub low_latency_idle: bool,
}

/// The `[memory]` section: how much customer memory may hold, and who may
/// use namespaces they do not own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// MiB one owner's namespaces may hold together (`client:alice/…` all
    /// count as `client:alice`'s; a namespace without an owner is its own).
    pub owner_quota_mib: u64,
    /// MiB the whole store may hold. The search index keeps every embedding
    /// in RAM: raise `[sandbox.services] memory_mib` with it.
    pub capacity_mib: u64,
    /// Items the whole store may hold.
    pub max_items: u64,
    /// `[[memory.namespaces]]`: grants on one namespace.
    pub namespaces: Vec<NamespaceGrant>,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            owner_quota_mib: sios_ipc::memory::DEFAULT_OWNER_QUOTA_MIB,
            capacity_mib: sios_ipc::memory::DEFAULT_CAPACITY_MIB,
            max_items: sios_ipc::memory::DEFAULT_MAX_ITEMS,
            namespaces: Vec::new(),
        }
    }
}

/// Grants on one memory namespace (its owner is the principal its name
/// starts with, e.g. `client:alice/notes`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceGrant {
    pub name: String,
    /// Principal ids granted read, e.g. `client:bob`, `brain:legal`.
    pub readers: Vec<String>,
    pub writers: Vec<String>,
    /// Client groups granted read or write.
    pub reader_groups: Vec<String>,
    pub writer_groups: Vec<String>,
}

/// Whether brains run in the per-brain sandbox (namespaces, read-only root,
/// unprivileged uid, no capabilities, Landlock, seccomp, cgroups).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Sandbox when the kernel runs as root (it needs to, to drop brains to
    /// their own uids); otherwise run unsandboxed and say so loudly.
    #[default]
    Auto,
    /// Refuse to start unless every brain can be sandboxed.
    Required,
    /// Never sandbox (development only; the kernel warns at start).
    Off,
}

/// The `[sandbox]` section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Extra read-only paths per brain, e.g. `legal = ["/srv/contracts"]`.
    pub extra_ro_paths: std::collections::BTreeMap<String, Vec<PathBuf>>,
    /// `[sandbox.services]`: limits of the audit and memory services, which
    /// are sandboxed whenever brains are (each with its own uid, seeing only
    /// its own state directory).
    pub services: ServiceSandboxConfig,
}

/// The `[sandbox.services]` section: limits each service (audit, memory)
/// gets. Their manifests-equivalent: services have no manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSandboxConfig {
    /// cgroup memory limit of each service, in MiB. redb keeps up to 1 GiB
    /// of cache on the heap, so leave room above that.
    pub memory_mib: u64,
    /// Threads and processes of each service (RLIMIT_NPROC and pids.max):
    /// tokio's blocking pool may grow to 512 threads under load.
    pub max_processes: u32,
}

impl Default for ServiceSandboxConfig {
    fn default() -> Self {
        ServiceSandboxConfig {
            memory_mib: 4096,
            max_processes: 1024,
        }
    }
}

/// Where the appliance finds its brains and ONNX Runtime.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Directory of brain manifests (`*.toml`).
    pub catalog_dir: PathBuf,
    /// Directory the manifests' model files are relative to.
    pub models_dir: PathBuf,
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.32.0`).
    pub onnxruntime_lib: PathBuf,
    /// Directory holding the sios-* executables; default: next to the running one.
    pub bin_dir: Option<PathBuf>,
}

impl Default for PathsConfig {
    fn default() -> Self {
        let tree = Path::new(SOURCE_TREE);
        PathsConfig {
            catalog_dir: tree.join("brains/catalog"),
            models_dir: tree.join("build/models"),
            onnxruntime_lib: tree.join("build/lib/libonnxruntime.so.1.32.0"),
            bin_dir: None,
        }
    }
}

/// Default bound on the bytes of one uid's requests in the kernel: sixteen
/// of the largest frames, or sixty-four requests of the most (8 MiB) that a
/// brain of 64 MiB accepts.
pub const DEFAULT_MAX_REQUEST_BYTES_PER_UID: u64 = 256 * 1024 * 1024;

/// Limits on what crosses a socket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame any sios socket accepts, in bytes.
    pub max_frame_bytes: usize,
    /// How long the kernel waits for a brain's answer.
    pub request_timeout_ms: u64,
    /// Largest number of elements in one tensor.
    pub max_tensor_elements: u64,
    /// Client connections one uid may hold open at once.
    pub max_connections_per_uid: usize,
    /// Bytes of one uid's requests the kernel holds at once, over all its
    /// connections: as many for frames being read (a uid over it is read no
    /// further until some are served) and again for requests being served
    /// (one more is refused with the reason). At least `max_frame_bytes`.
    pub max_request_bytes_per_uid: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: sios_ipc::transport::DEFAULT_MAX_FRAME_BYTES,
            request_timeout_ms: 30_000,
            max_tensor_elements: sios_ipc::TensorLimits::default().max_elements,
            max_connections_per_uid: 256,
            max_request_bytes_per_uid: DEFAULT_MAX_REQUEST_BYTES_PER_UID,
        }
    }
}

impl LimitsConfig {
    /// Whether the limits can work together; if not, why, in a sentence
    /// that ends with a space (the parse error's layout).
    fn check(&self) -> Result<(), String> {
        if self.max_request_bytes_per_uid < self.max_frame_bytes as u64 {
            return Err(format!(
                "limits.max_request_bytes_per_uid ({}) is smaller than limits.max_frame_bytes \
                 ({}), so a request of the largest size could never be read; raise the first \
                 or lower the second ",
                self.max_request_bytes_per_uid, self.max_frame_bytes
            ));
        }
        Ok(())
    }
}

/// How the kernel supervises its children (OTP one_for_one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorConfig {
    /// More than this many restarts of one process within `restart_period_s`
    /// marks it failed; the rest of the appliance keeps serving.
    pub max_restarts: u32,
    pub restart_period_s: u64,
    /// First back-off before a restart; doubles per consecutive crash.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a process may take from spawn to answering its readiness probe.
    pub ready_timeout_ms: u64,
    /// How long a process gets between SIGTERM and SIGKILL.
    pub stop_timeout_ms: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            max_restarts: 5,
            restart_period_s: 60,
            backoff_initial_ms: 20,
            backoff_max_ms: 5_000,
            ready_timeout_ms: 30_000,
            stop_timeout_ms: 5_000,
        }
    }
}

/// Which brains of the catalog run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BrainsConfig {
    /// Names of the brains to run; empty means every brain in the catalog.
    pub enabled: Vec<String>,
}

/// Why the configuration could not be used.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "config file {path} is invalid: {message}(every field is documented in deploy/sios.toml)"
    )]
    Parse { path: PathBuf, message: String },
    #[error("no state directory: set --state-dir or {STATE_DIR_ENV}, or HOME")]
    NoStateDir,
}

impl Config {
    /// Loads the config: `explicit` if given, else `<state-dir>/config.toml`
    /// if present, else the defaults. Relative paths in the file are taken
    /// relative to the file's directory.
    pub fn load(explicit: Option<&Path>, state_dir: &Path) -> Result<Config, ConfigError> {
        let implicit = state_dir.join("config.toml");
        let path = match explicit {
            Some(path) => path.to_owned(),
            None if implicit.exists() => implicit,
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        config
            .limits
            .check()
            .map_err(|message| ConfigError::Parse {
                path: path.clone(),
                message,
            })?;
        if let Some(base) = path.parent() {
            config.paths.resolve_relative_to(base);
        }
        Ok(config)
    }
}

impl PathsConfig {
    fn resolve_relative_to(&mut self, base: &Path) {
        for path in [
            &mut self.catalog_dir,
            &mut self.models_dir,
            &mut self.onnxruntime_lib,
        ] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if let Some(bin) = &mut self.bin_dir
            && bin.is_relative()
        {
            *bin = base.join(&*bin);
        }
    }

    /// Where the sios-* executables live.
    pub fn bin_dir(&self) -> PathBuf {
        self.bin_dir.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_owned))
                .unwrap_or_else(|| PathBuf::from("."))
        })
    }
}

/// The state directory: `--state-dir`/`SIOS_STATE_DIR` if given, else
/// `/var/lib/sios` for root, else `$XDG_STATE_HOME/sios` or
/// `~/.local/state/sios`.
pub fn resolve_state_dir(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(dir) = explicit {
        return Ok(absolute(dir));
    }
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(absolute(Path::new(&dir)));
    }
    // Root runs an appliance install: it gets the FHS path.
    if is_root() {
        return Ok(PathBuf::from("/var/lib/sios"));
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("sios"));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::NoStateDir)?;
    Ok(PathBuf::from(home).join(".local/state/sios"))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Every path inside a state directory, in one place.
#[derive(Clone, Debug)]
pub struct StateLayout {
    pub root: PathBuf,
}

impl StateLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateLayout { root: root.into() }
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn kernel_socket(&self) -> PathBuf {
        self.run_dir().join("kernel.sock")
    }
    pub fn kernel_lock(&self) -> PathBuf {
        self.run_dir().join("kernel.lock")
    }
    pub fn service_socket(&self, service: &str) -> PathBuf {
        self.run_dir().join(format!("{service}.sock"))
    }
    pub fn brain_socket_dir(&self) -> PathBuf {
        self.run_dir().join("brains")
    }
    pub fn brain_socket(&self, brain: &str) -> PathBuf {
        self.brain_socket_dir().join(format!("{brain}.sock"))
    }
    /// The kernel's own small state (operator choices, never customer data).
    pub fn kernel_dir(&self) -> PathBuf {
        self.root.join("kernel")
    }
    /// The policy last activated with `sios policy load` (a policy bundle).
    pub fn active_policy(&self) -> PathBuf {
        self.kernel_dir().join("active-policy.json")
    }
    /// Brains an operator disabled, kept across restarts.
    pub fn disabled_brains(&self) -> PathBuf {
        self.kernel_dir().join("disabled-brains.json")
    }
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.root.join(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(None, dir.path()).unwrap(), Config::default());
    }

    #[test]
    fn the_shipped_example_config_parses_and_matches_the_defaults() {
        let shipped = Path::new(SOURCE_TREE).join("deploy/sios.toml");
        let text = std::fs::read_to_string(&shipped).unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        let defaults = Config::default();
        assert_eq!(parsed.limits, defaults.limits);
        assert_eq!(parsed.supervisor, defaults.supervisor);
        assert_eq!(parsed.brains, defaults.brains);
        assert_eq!(parsed.sandbox, defaults.sandbox);
        assert_eq!(parsed.performance, defaults.performance);
        assert_eq!(parsed.memory, defaults.memory);
    }

    #[test]
    fn unknown_fields_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[supervisor]\nmax_restart = 3\n").unwrap();
        let err = Config::load(Some(&path), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.toml") && err.contains("max_restart"),
            "{err}"
        );
    }

    #[test]
    fn a_uid_budget_below_the_frame_limit_is_refused_with_the_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[limits]\nmax_request_bytes_per_uid = 1048576\n").unwrap();
        let err = Config::load(Some(&path), dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.toml")
                && err.contains("max_request_bytes_per_uid (1048576) is smaller than")
                && err.contains("max_frame_bytes (16777216)")
                && err.contains("raise the first or lower the second"),
            "{err}"
        );
        std::fs::write(
            &path,
            "[limits]\nmax_request_bytes_per_uid = 1048576\nmax_frame_bytes = 1048576\n",
        )
        .unwrap();
        assert!(Config::load(Some(&path), dir.path()).is_ok());
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[paths]\nmodels_dir = \"models\"\n").unwrap();
        let config = Config::load(Some(&path), dir.path()).unwrap();
        assert_eq!(config.paths.models_dir, dir.path().join("models"));
    }
}
