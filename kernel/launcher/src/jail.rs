//! The launch: every restriction, in order, each failing with its own error.
//!
//! Without a sandbox ([`LaunchSpec::sandbox`] is `None`) the launcher
//! applies PDEATHSIG, NO_NEW_PRIVS and rlimits and execs the program in
//! place. With one (see `kernel/launcher/README.md` for the whole story),
//! the process tree is:
//!
//! ```text
//! sios-kernel
//!  └─ sios-launch  (pid P: the pid the kernel supervises; host namespaces, root)
//!      │  creates the cgroups, writes the child's uid/gid maps, keeps the
//!      │  record, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT, reaps, removes the
//!      │  cgroups, and exits as the child did (same code, or same signal)
//!      └─ the program  (pid 1 of its own pid namespace; every restriction)
//! ```
//!
//! The launcher stays as a parent because a pid namespace applies only to
//! children (someone must fork after `unshare(CLONE_NEWPID)`), because
//! somebody outside must write the uid map and remove the cgroups after the
//! program exits, and because the record of what was applied must outlive
//! the exec. It holds nothing the program could use: it closes its copies of
//! the listening socket and the kernel channel (fds 3 and 4), is invisible from the program's pid namespace, and dies with the
//! kernel (PDEATHSIG), which kills the program (its own PDEATHSIG).
//!
//! The child's steps, in order (each is one [`LaunchError`] variant):
//! parent-death signal; wait for the launcher to put it in its cgroups;
//! rlimits; `unshare` of the mount, network, IPC and UTS namespaces
//! (owned by the host's user namespace, so nothing inside can ever change
//! them); hostname; every descriptor above 4 close-on-exec; the minimal root: a tmpfs holding read-only, non-recursive binds
//! of exactly the paths needed, /proc, devices and /tmp if asked, remounted
//! read-only, `pivot_root` into it and the old root detached; supplementary
//! groups dropped; `unshare` of the user namespace and its uid/gid map
//! written by the launcher (one id each, never root); capability bounding,
//! ambient and inheritable sets cleared and securebits locked; setresgid /
//! setresuid; effective and permitted sets cleared and checked empty;
//! parent-death signal re-armed (the uid change cleared it); NO_NEW_PRIVS;
//! Landlock; the record sent to the launcher, which acknowledges; seccomp,
//! last; `execveat` with the seccomp token.

use crate::cgroup::{self, CgroupError, Cgroups};
use crate::record::{LandlockRecord, MountRecord, SandboxRecord, SeccompRecord};
use crate::seccomp::{self, SeccompError};
use crate::{ALLOWED_DEVICES, EXIT_CONFIG, LaunchSpec, NOTICE_PREFIX, ProcMount, SandboxSpec};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use std::convert::Infallible;
use std::ffi::CString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Why a launch failed. Every sandbox step has its own variant naming the
/// step, the path and the OS error; the launcher prints it as one line on
/// stderr and exits with [`EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    #[error("usage: sios-launch <spec-json> (sios-launch is started by sios-kernel, not by hand)")]
    Usage,
    #[error("the launch spec is not valid: {0}")]
    Spec(#[from] serde_json::Error),
    #[error("the sandbox spec is refused: {0}")]
    InvalidSpec(String),
    #[error("step `{step}` failed: {errno}")]
    Step { step: &'static str, errno: Errno },
    #[error(
        "the kernel (pid {0}) exited while this process was being launched; abandoning the launch"
    )]
    Orphaned(u32),
    #[error("{0} contains a NUL byte")]
    Nul(String),
    #[error("cannot use {path} in the sandbox: {errno}; it must exist and be readable by root")]
    Path { path: PathBuf, errno: Errno },
    #[error("cannot work out the libraries to mount: {0}")]
    Libraries(#[from] crate::elf::ElfError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("setrlimit({resource}, {value}): {errno}")]
    Rlimit {
        resource: &'static str,
        value: u64,
        errno: Errno,
    },
    #[error("unshare({namespaces}): {errno}; the sandbox needs a kernel with namespaces and root")]
    Unshare {
        namespaces: &'static str,
        errno: Errno,
    },
    #[error("building the sandbox's root: {what} {path}: {errno}")]
    Root {
        what: &'static str,
        path: PathBuf,
        errno: Errno,
    },
    #[error("writing {path} (the user namespace's id map): {source}")]
    IdMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("becoming uid {uid} gid {gid}: {step}: {errno}")]
    Identity {
        uid: u32,
        gid: u32,
        step: &'static str,
        errno: Errno,
    },
    #[error("dropping capabilities: {0}")]
    Capabilities(String),
    #[error("Landlock: {0}")]
    Landlock(String),
    #[error("seccomp: {0}")]
    Seccomp(#[from] SeccompError),
    #[error("launch handshake between the launcher and its child: {0}")]
    Handshake(String),
    #[error("execveat {program}: {errno}")]
    Exec { program: PathBuf, errno: Errno },
}

fn step<T>(step: &'static str, result: nix::Result<T>) -> Result<T, LaunchError> {
    result.map_err(|errno| LaunchError::Step { step, errno })
}

fn cstring(value: &[u8]) -> Result<CString, LaunchError> {
    CString::new(value).map_err(|_| LaunchError::Nul(String::from_utf8_lossy(value).into_owned()))
}

/// Applies `spec` and runs the program. Without a sandbox this execs in
/// place; with one, the calling process becomes the program's supervising
/// parent and, once the program has exited, exits the same way (never
/// returning). Returns only on a failure before the program runs.
pub fn launch(spec: &LaunchSpec) -> Result<Infallible, LaunchError> {
    // Die with the kernel. Set before checking the parent, so there is no gap.
    step(
        "prctl(PR_SET_PDEATHSIG)",
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
    )?;
    if nix::unistd::getppid().as_raw() as u32 != spec.parent_pid {
        return Err(LaunchError::Orphaned(spec.parent_pid));
    }
    // Neither this program nor anything it execs can gain privileges (setuid
    // binaries, file capabilities) from here on.
    step(
        "prctl(PR_SET_NO_NEW_PRIVS)",
        nix::sys::prctl::set_no_new_privs(),
    )?;
    // No core dumps: a dump of a brain could hold customer content.
    step(
        "setrlimit(RLIMIT_CORE)",
        setrlimit(Resource::RLIMIT_CORE, 0, 0),
    )?;
    step(
        "setrlimit(RLIMIT_NOFILE)",
        setrlimit(
            Resource::RLIMIT_NOFILE,
            spec.limits.max_open_files,
            spec.limits.max_open_files,
        ),
    )?;
    let command = Command::new(spec)?;
    match &spec.sandbox {
        None => step(
            "execve",
            nix::unistd::execve(&command.program, &command.argv, &command.envp),
        ),
        Some(sandbox) => sandboxed(spec, sandbox, command),
    }
}

/// The program, its argv and envp as C strings.
struct Command {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Command {
    fn new(spec: &LaunchSpec) -> Result<Command, LaunchError> {
        let program = cstring(spec.program.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for arg in &spec.args {
            argv.push(cstring(arg.as_bytes())?);
        }
        let envp = spec
            .env
            .iter()
            .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Command {
            program,
            argv,
            envp,
        })
    }
}

/// One path of the sandbox's root.
#[derive(Debug)]
struct Bind {
    /// Inside = outside.
    path: PathBuf,
    is_dir: bool,
    writable: bool,
    exec: bool,
    device: bool,
}

/// Everything worked out before the fork.
struct Plan<'a> {
    spec: &'a LaunchSpec,
    sandbox: &'a SandboxSpec,
    command: Command,
    binds: Vec<Bind>,
}

impl<'a> Plan<'a> {
    fn new(
        spec: &'a LaunchSpec,
        sandbox: &'a SandboxSpec,
        command: Command,
    ) -> Result<Plan<'a>, LaunchError> {
        let invalid = |why: String| Err(LaunchError::InvalidSpec(why));
        if sandbox.uid == 0 || sandbox.gid == 0 {
            return invalid("uid and gid must not be 0 (root)".into());
        }
        let ns = sandbox.namespaces;
        if sandbox.proc != ProcMount::None && !(ns.pid && ns.mount) {
            return invalid(
                "/proc needs the pid and mount namespaces (it would show the host's processes)"
                    .into(),
            );
        }
        if (sandbox.tmp_mib.is_some() || !sandbox.devices.is_empty() || sandbox.cpu_info)
            && !ns.mount
        {
            return invalid("tmp_mib, devices and cpu_info need the mount namespace".into());
        }
        if sandbox.hostname.is_some() && !ns.uts {
            return invalid("a hostname needs the UTS namespace".into());
        }
        for device in &sandbox.devices {
            if !ALLOWED_DEVICES.iter().any(|d| Path::new(d) == device) {
                return invalid(format!(
                    "device {} is not one of {ALLOWED_DEVICES:?}",
                    device.display()
                ));
            }
        }
        let all = std::iter::once(&spec.program)
            .chain(&sandbox.ro_paths)
            .chain(&sandbox.libraries)
            .chain(&sandbox.rw_paths);
        for path in all {
            if !path.is_absolute() {
                return invalid(format!("{} is not an absolute path", path.display()));
            }
        }

        // (path, writable, exec, device)
        let mut wanted: Vec<(PathBuf, bool, bool, bool)> = Vec::new();
        let mut code = vec![spec.program.clone()];
        code.extend(sandbox.libraries.iter().cloned());
        let deps = crate::elf::dependencies(&code)?;
        wanted.extend(code.into_iter().map(|p| (p, false, true, false)));
        wanted.extend(deps.into_iter().map(|p| (p, false, true, false)));
        wanted.extend(
            sandbox
                .ro_paths
                .iter()
                .map(|p| (p.clone(), false, false, false)),
        );
        wanted.extend(
            sandbox
                .rw_paths
                .iter()
                .map(|p| (p.clone(), true, false, false)),
        );
        wanted.extend(
            sandbox
                .devices
                .iter()
                .map(|p| (p.clone(), true, false, true)),
        );
        wanted.sort_by(|a, b| a.0.cmp(&b.0));

        let mut binds: Vec<Bind> = Vec::new();
        for (path, writable, exec, device) in wanted {
            if let Some(last) = binds.last_mut()
                && last.path == path
            {
                last.writable |= writable;
                last.exec |= exec;
                last.device |= device;
                continue;
            }
            let source =
                open(&path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| {
                    LaunchError::Path {
                        path: path.clone(),
                        errno,
                    }
                })?;
            let stat = nix::sys::stat::fstat(&source).map_err(|errno| LaunchError::Path {
                path: path.clone(),
                errno,
            })?;
            let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
            drop(source);
            binds.push(Bind {
                path,
                is_dir,
                writable,
                exec,
                device,
            });
        }
        Ok(Plan {
            spec,
            sandbox,
            command,
            binds,
        })
    }
}

/// The signals the launcher passes on to the program.
const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

fn sandboxed(
    spec: &LaunchSpec,
    sandbox: &SandboxSpec,
    command: Command,
) -> Result<Infallible, LaunchError> {
    // unshare(CLONE_NEWUSER) refuses a multi-threaded caller; so does sanity.
    let threads = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_owned()));
    if threads.as_deref().is_some_and(|t| t != "1") {
        return Err(LaunchError::Handshake(format!(
            "the launcher has {} threads, it must have one",
            threads.unwrap_or_default()
        )));
    }
    // Which of the descriptors the kernel hands over are there (the
    // supervisor closes its copies after the fork, and must not close a
    // descriptor of its own that took a free number).
    let inherited: Vec<i32> = INHERITED_FDS
        .into_iter()
        .filter(|fd| Path::new(&format!("/proc/self/fd/{fd}")).exists())
        .collect();
    let plan = Plan::new(spec, sandbox, command)?;
    let cgroups = match &sandbox.cgroup {
        Some(c) => cgroup::setup(c)?,
        None => Cgroups::default(),
    };
    for notice in &cgroups.notices {
        eprintln!("{NOTICE_PREFIX}{}: {notice}", spec.name);
    }
    let fail = |cgroups: &Cgroups, err: LaunchError| -> Result<Infallible, LaunchError> {
        cgroups.remove();
        Err(err)
    };

    // Signals wait (blocked, taken with sigwait) until the child is running:
    // nothing is lost between the fork and the supervision loop.
    let mut waited = SigSet::empty();
    for signal in FORWARDED {
        waited.add(signal);
    }
    waited.add(Signal::SIGCHLD);
    if let Err(errno) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), None) {
        return fail(
            &cgroups,
            LaunchError::Step {
                step: "sigprocmask",
                errno,
            },
        );
    }
    let (ours, theirs) = match nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(pair) => pair,
        Err(errno) => {
            return fail(
                &cgroups,
                LaunchError::Step {
                    step: "socketpair",
                    errno,
                },
            );
        }
    };
    if sandbox.namespaces.pid
        && let Err(errno) = unshare(CloneFlags::CLONE_NEWPID)
    {
        return fail(
            &cgroups,
            LaunchError::Unshare {
                namespaces: "CLONE_NEWPID",
                errno,
            },
        );
    }
    #[allow(unsafe_code)]
    // SAFETY: the launcher is single-threaded (checked above), so the child
    // may do anything a fresh process may.
    let forked = unsafe { nix::unistd::fork() };
    match forked {
        Err(errno) => fail(
            &cgroups,
            LaunchError::Step {
                step: "fork",
                errno,
            },
        ),
        Ok(ForkResult::Child) => {
            drop(ours);
            // Returns only on failure; `main` prints it and exits 78, which
            // the launcher outside passes on.
            let memory_cgroup = sandbox
                .cgroup
                .as_ref()
                .is_some_and(|c| c.memory_mib.is_some())
                && cgroups.limits_memory();
            child::run(&plan, UnixStream::from(theirs), memory_cgroup)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(theirs);
            // The listening socket and the kernel channel are the program's,
            // not the supervisor's: the kernel must see the channel close
            // when the program dies.
            for fd in inherited {
                let _ = nix::unistd::close(fd);
            }
            let name = spec.name.clone();
            let pid_ns = sandbox.namespaces.pid;
            let user_ns = sandbox.namespaces.user;
            let (uid, gid) = (sandbox.uid, sandbox.gid);
            drop(plan);
            match supervise(
                &name,
                child,
                UnixStream::from(ours),
                &cgroups,
                &waited,
                pid_ns,
                user_ns.then_some((uid, gid)),
            ) {
                Ok((status, substituted)) => {
                    cgroups.remove();
                    mirror(status, substituted)
                }
                Err(err) => {
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    fail(&cgroups, err)
                }
            }
        }
    }
}

/// RLIMIT_DATA is `data_mib` times this when a cgroup memory limit is in
/// force. The cgroup then decides: it counts the pages really used, and ends
/// an excess with the OOM killer, which the launcher names and the kernel
/// reports and restarts under its policy. RLIMIT_DATA counts reserved private
/// address space (thread stacks, malloc arenas), well above what is used, so
/// at the same number it would always bite first, as an allocation failing
/// somewhere inside the program. It stays, above the cgroup, as a backstop.
pub const DATA_HEADROOM: u64 = 2;

/// The descriptors the kernel hands a child besides stdio: its listening
/// socket (3) and, for a brain, its private channel to the kernel (4); see
/// `sios_ipc::activation`. Every other descriptor is closed at the exec.
pub const INHERITED_FDS: [i32; 2] = [3, 4];

/// The launcher's side: put the child in its cgroups, write its id maps,
/// keep its record, then forward signals until it exits.
fn supervise(
    name: &str,
    child: Pid,
    channel: UnixStream,
    cgroups: &Cgroups,
    waited: &SigSet,
    pid_ns: bool,
    id_map: Option<(u32, u32)>,
) -> Result<(WaitStatus, Option<Signal>), LaunchError> {
    cgroups.join(child.as_raw() as u32)?;
    let mut writer = channel
        .try_clone()
        .map_err(|e| LaunchError::Handshake(format!("channel: {e}")))?;
    // The child waits for this before anything else: it is in its cgroups.
    let _ = writer.write_all(b"G");
    let mut record_fd = None;
    for line in BufReader::new(channel).lines() {
        // An error or EOF: the child exec'd (the channel is close-on-exec)
        // or died; its exit status tells which.
        let Ok(line) = line else { break };
        if line == "U" {
            let Some((uid, gid)) = id_map else {
                return Err(LaunchError::Handshake(
                    "asked for an id map it was not given".into(),
                ));
            };
            write_id_maps(child, uid, gid)?;
            let _ = writer.write_all(b"M");
        } else if let Some(json) = line.strip_prefix("R ") {
            if let Ok(mut record) = serde_json::from_str::<SandboxRecord>(json) {
                record.launcher_pid = std::process::id();
                record.child_pid = child.as_raw() as u32;
                record.notices.extend(cgroups.notices.iter().cloned());
                record.cgroups = cgroups
                    .dirs
                    .iter()
                    .map(|(c, d)| (c.to_string(), d.clone()))
                    .collect();
                // Best effort: `inspect` says so when it finds no record.
                record_fd = crate::record::keep(&record).ok();
            }
            // Tells the child the launcher is still alive after it re-armed
            // its parent-death signal (see `child::run`).
            let _ = writer.write_all(b"A");
        }
    }
    let mut substituted = None;
    let status = loop {
        let Ok(signal) = waited.wait() else { continue };
        if signal == Signal::SIGCHLD {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => continue,
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => break status,
                Ok(_) => continue,
                Err(errno) => {
                    return Err(LaunchError::Step {
                        step: "waitpid",
                        errno,
                    });
                }
            }
        }
        // The program is pid 1 of its namespace: the kernel drops a signal
        // sent to it from outside unless it has a handler. Without one, the
        // signal's default action (terminate) is what the sender meant.
        if pid_ns && !catches(child, signal) {
            substituted = Some(signal);
            let _ = kill(child, Signal::SIGKILL);
        } else {
            let _ = kill(child, signal);
        }
    };
    drop(record_fd);
    if let WaitStatus::Signaled(_, signal, _) = status {
        let why = match signal {
            Signal::SIGSYS => Some(
                "killed by seccomp (SIGSYS): the program made a system call the sandbox forbids"
                    .to_owned(),
            ),
            Signal::SIGKILL if substituted.is_none() && cgroups.oom_killed() => Some(
                "killed by the out-of-memory killer: it reached its cgroup memory limit".to_owned(),
            ),
            _ => None,
        };
        if let Some(why) = why {
            eprintln!("sios-launch: {name}: {why}");
        }
    }
    Ok((status, substituted))
}

/// Whether `pid` has a handler for `signal` (SigCgt in /proc/<pid>/status).
fn catches(pid: Pid, signal: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal as i32 - 1)) != 0)
}

/// Maps exactly `uid` and `gid` (host) to the same numbers inside, and
/// forbids setgroups inside. Root is not mapped: it does not exist there.
fn write_id_maps(child: Pid, uid: u32, gid: u32) -> Result<(), LaunchError> {
    let proc = PathBuf::from(format!("/proc/{child}"));
    for (file, content) in [
        ("setgroups", "deny".to_owned()),
        ("uid_map", format!("{uid} {uid} 1\n")),
        ("gid_map", format!("{gid} {gid} 1\n")),
    ] {
        let path = proc.join(file);
        std::fs::write(&path, content).map_err(|source| LaunchError::IdMap { path, source })?;
    }
    Ok(())
}

/// Exits the way the program did: the same code, or the same fatal signal
/// (so the kernel reports "killed by SIGSYS", not "exited").
fn mirror(status: WaitStatus, substituted: Option<Signal>) -> Result<Infallible, LaunchError> {
    match status {
        WaitStatus::Exited(_, code) => std::process::exit(code),
        WaitStatus::Signaled(_, signal, _) => {
            let signal = match (signal, substituted) {
                (Signal::SIGKILL, Some(meant)) => meant,
                _ => signal,
            };
            // No core dump of the launcher for a re-raised SIGSYS/SIGQUIT.
            let _ = nix::sys::prctl::set_dumpable(false);
            let mut set = SigSet::empty();
            set.add(signal);
            let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
            let _ = nix::sys::signal::raise(signal);
            // A signal whose default is not to terminate: say so by code.
            std::process::exit(128 + signal as i32)
        }
        _ => std::process::exit(EXIT_CONFIG),
    }
}

/// The child's side: every restriction, then exec.
mod child {
    use super::*;

    /// `memory_cgroup`: a cgroup memory limit is in force (see `DATA_HEADROOM`).
    pub(super) fn run(
        plan: &Plan,
        mut channel: UnixStream,
        memory_cgroup: bool,
    ) -> Result<Infallible, LaunchError> {
        let sandbox = plan.sandbox;
        // Cleared by fork: set again, and then make sure the launcher is
        // still there (the "G" byte), so the child never outlives it.
        step(
            "prctl(PR_SET_PDEATHSIG) in the child",
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
        )?;
        expect(
            &mut channel,
            b'G',
            "the launcher exited before the child joined its cgroups",
        )?;
        // Mount points must be traversable by the program's uid whatever the
        // kernel's umask; the program gets the kernel's back before exec.
        let umask = nix::sys::stat::umask(Mode::from_bits_truncate(0o022));

        rlimit(
            "RLIMIT_NPROC",
            Resource::RLIMIT_NPROC,
            Some(sandbox.limits.max_processes),
        )?;
        rlimit(
            "RLIMIT_AS",
            Resource::RLIMIT_AS,
            sandbox.limits.address_space_mib.map(|m| m << 20),
        )?;
        let headroom = if memory_cgroup { DATA_HEADROOM } else { 1 };
        rlimit(
            "RLIMIT_DATA",
            Resource::RLIMIT_DATA,
            sandbox.limits.data_mib.map(|m| (m * headroom) << 20),
        )?;

        // Drawn while /dev/urandom is still reachable; never leaves this
        // address space except inside the filter and the exec's registers.
        let token = exec_token()?;
        let filters = seccomp::launcher_filters(token)?;

        let ns = sandbox.namespaces;
        let mut flags = CloneFlags::empty();
        flags.set(CloneFlags::CLONE_NEWNS, ns.mount);
        flags.set(CloneFlags::CLONE_NEWNET, ns.net);
        flags.set(CloneFlags::CLONE_NEWIPC, ns.ipc);
        flags.set(CloneFlags::CLONE_NEWUTS, ns.uts);
        if !flags.is_empty() {
            unshare(flags).map_err(|errno| LaunchError::Unshare {
                namespaces: "CLONE_NEWNS|CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWUTS",
                errno,
            })?;
        }
        if ns.uts {
            let name = sandbox.hostname.as_deref().unwrap_or(&plan.spec.name);
            let name: String = name.chars().take(64).collect();
            step("sethostname", nix::unistd::sethostname(name))?;
        }
        // Before anything is mounted: nothing else may stay open across the
        // exec (the channel and the bind sources are close-on-exec already).
        close_range_cloexec()?;
        let mounts = if ns.mount {
            build_root(plan)?
        } else {
            Vec::new()
        };

        step("setgroups([])", nix::unistd::setgroups(&[]))?;
        if ns.user {
            unshare(CloneFlags::CLONE_NEWUSER).map_err(|errno| LaunchError::Unshare {
                namespaces: "CLONE_NEWUSER",
                errno,
            })?;
            channel
                .write_all(b"U\n")
                .map_err(|e| LaunchError::Handshake(format!("cannot ask for its id map: {e}")))?;
            expect(&mut channel, b'M', "the launcher did not write the id map")?;
        }
        drop_capabilities(sandbox.uid, sandbox.gid)?;
        // Changing the effective ids cleared the parent-death signal: arm it
        // again; the launcher's "A" below proves it was still alive after.
        step(
            "prctl(PR_SET_PDEATHSIG) after setresuid",
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL),
        )?;
        step(
            "prctl(PR_SET_NO_NEW_PRIVS) in the child",
            nix::sys::prctl::set_no_new_privs(),
        )?;
        let landlock = landlock(plan)?;

        let record = SandboxRecord {
            name: plan.spec.name.clone(),
            uid: sandbox.uid,
            gid: sandbox.gid,
            namespaces: ns,
            mounts,
            landlock,
            seccomp: SeccompRecord {
                filters: filters.len() as u32,
                killed: seccomp::KILLED
                    .iter()
                    .map(|(n, _, _)| n.to_string())
                    .chain([
                        "clone(CLONE_NEW*)".to_owned(),
                        "execveat (without the launch token)".to_owned(),
                    ])
                    .collect(),
                refused: seccomp::REFUSED
                    .iter()
                    .map(|(n, _)| n.to_string())
                    .collect(),
                exec_once: true,
            },
            ..Default::default()
        };
        let line = format!("R {}\n", serde_json::to_string(&record).unwrap_or_default());
        channel
            .write_all(line.as_bytes())
            .map_err(|e| LaunchError::Handshake(format!("cannot send its record: {e}")))?;
        expect(&mut channel, b'A', "the launcher exited before the exec")?;

        nix::sys::stat::umask(umask);
        // Signals were blocked for the launcher's sigwait; the mask survives
        // exec, so give the program a clean one.
        step(
            "sigprocmask(SIG_SETMASK, {})",
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None),
        )?;
        // Last: from here on only the exec below is allowed.
        seccomp::install(&filters)?;
        Err(LaunchError::Exec {
            program: plan.spec.program.clone(),
            errno: exec(&plan.command, token),
        })
    }

    fn expect(channel: &mut UnixStream, byte: u8, why: &str) -> Result<(), LaunchError> {
        let mut got = [0u8; 1];
        match channel.read_exact(&mut got) {
            Ok(()) if got[0] == byte => Ok(()),
            _ => Err(LaunchError::Handshake(why.to_owned())),
        }
    }

    fn rlimit(
        name: &'static str,
        resource: Resource,
        value: Option<u64>,
    ) -> Result<(), LaunchError> {
        let Some(value) = value else { return Ok(()) };
        setrlimit(resource, value, value).map_err(|errno| LaunchError::Rlimit {
            resource: name,
            value,
            errno,
        })
    }

    fn exec_token() -> Result<u64, LaunchError> {
        let mut bytes = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| {
                LaunchError::Seccomp(SeccompError::from_io(
                    "reading /dev/urandom for the exec token",
                    e,
                ))
            })?;
        Ok(u64::from_ne_bytes(bytes))
    }

    fn close_range_cloexec() -> Result<(), LaunchError> {
        let first = INHERITED_FDS[INHERITED_FDS.len() - 1] as u32 + 1;
        #[allow(unsafe_code)]
        // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing now; it
        // only marks descriptors above the inherited ones close-on-exec,
        // which no Rust object here relies on staying open across exec.
        let rc = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
        if rc != 0 {
            return Err(LaunchError::Step {
                step: "close_range(5.., CLOSE_RANGE_CLOEXEC)",
                errno: Errno::last(),
            });
        }
        Ok(())
    }

    /// The new root is a tmpfs mounted over /tmp (of this mount namespace
    /// only): every source was opened before, so nothing it hides matters.
    const NEW_ROOT: &str = "/tmp";

    fn build_root(plan: &Plan) -> Result<Vec<MountRecord>, LaunchError> {
        let sandbox = plan.sandbox;
        let root_err = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |errno| LaunchError::Root { what, path, errno }
        };
        let new_root = Path::new(NEW_ROOT);
        // Nothing mounted here propagates back to the host.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(root_err("make private", Path::new("/")))?;
        // Every source is opened before anything is mounted, so no mount can
        // hide one; and in this mount namespace, since bind mounts may only
        // be made from mounts of the caller's own namespace.
        let sources = plan
            .binds
            .iter()
            .map(|bind| {
                open(&bind.path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| {
                    LaunchError::Path {
                        path: bind.path.clone(),
                        errno,
                    }
                })
            })
            .collect::<Result<Vec<OwnedFd>, _>>()?;
        // Read while the host's /proc and /sys are still in view.
        let cpu_files = if sandbox.cpu_info {
            cpu_snapshot(sandbox.proc)
        } else {
            Vec::new()
        };
        mount(
            Some("tmpfs"),
            new_root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755,size=1m,nr_inodes=4096"),
        )
        .map_err(root_err("mount tmpfs at", new_root))?;
        let mut records = Vec::new();
        for (bind, source) in plan.binds.iter().zip(&sources) {
            let target = inside(new_root, &bind.path);
            make_mount_point(&target, bind.is_dir)
                .map_err(root_err("create mount point", &target))?;
            let source = format!("/proc/self/fd/{}", source.as_raw_fd());
            mount(
                Some(source.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(root_err("bind", &bind.path))?;
            let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID;
            flags.set(MsFlags::MS_RDONLY, !bind.writable);
            flags.set(MsFlags::MS_NOEXEC, !bind.exec);
            flags.set(MsFlags::MS_NODEV, !bind.device);
            mount(None::<&str>, &target, None::<&str>, flags, None::<&str>)
                .map_err(root_err("remount read-only", &bind.path))?;
            records.push(MountRecord {
                path: bind.path.clone(),
                kind: if bind.device { "device" } else { "bind" }.into(),
                writable: bind.writable,
                exec: bind.exec,
            });
        }
        if let Some(mib) = sandbox.tmp_mib {
            let tmp = new_root.join("tmp");
            make_mount_point(&tmp, true).map_err(root_err("create mount point", &tmp))?;
            mount(
                Some("tmpfs"),
                &tmp,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(format!("mode=1777,size={mib}m").as_str()),
            )
            .map_err(root_err("mount tmpfs at", Path::new("/tmp")))?;
            records.push(MountRecord {
                path: "/tmp".into(),
                kind: "tmpfs".into(),
                writable: true,
                exec: false,
            });
        }
        if sandbox.cpu_info {
            for (path, content) in &cpu_files {
                let target = inside(new_root, path);
                make_mount_point(&target, false).map_err(root_err("create", &target))?;
                std::fs::write(&target, content)
                    .and_then(|()| {
                        std::fs::set_permissions(
                            &target,
                            std::os::unix::fs::PermissionsExt::from_mode(0o444),
                        )
                    })
                    .map_err(|e| LaunchError::Root {
                        what: "write a copy of",
                        path: path.clone(),
                        errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    })?;
                records.push(MountRecord {
                    path: path.clone(),
                    kind: "copy".into(),
                    writable: false,
                    exec: false,
                });
            }
        }
        if sandbox.proc != ProcMount::None {
            let proc = new_root.join("proc");
            make_mount_point(&proc, true).map_err(root_err("create mount point", &proc))?;
            let options = match sandbox.proc {
                ProcMount::Pids => Some("subset=pid,hidepid=invisible"),
                _ => None,
            };
            mount(
                Some("proc"),
                &proc,
                Some("proc"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                options,
            )
            .map_err(root_err("mount proc at", Path::new("/proc")))?;
            records.push(MountRecord {
                path: "/proc".into(),
                kind: "proc".into(),
                writable: false,
                exec: false,
            });
        }
        mount(
            None::<&str>,
            new_root,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(root_err("remount read-only", Path::new("/")))?;
        // pivot_root(".", "."): the old root ends up stacked on the new one
        // and is detached at once; no directory for it is needed.
        step("chdir(new root)", nix::unistd::chdir(new_root))?;
        nix::unistd::pivot_root(".", ".").map_err(root_err("pivot_root into", new_root))?;
        umount2(".", MntFlags::MNT_DETACH)
            .map_err(root_err("detach the old root at", Path::new("/")))?;
        step("chdir(/)", nix::unistd::chdir("/"))?;
        Ok(records)
    }

    /// The files ONNX Runtime's cpuinfo reads to learn the CPU (without
    /// them it warns and guesses), copied as they are now. /proc/cpuinfo only
    /// when no /proc is mounted (a proc mount has a real one, or with
    /// `subset=pid` cannot hold one).
    fn cpu_snapshot(proc: ProcMount) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<PathBuf> = ["possible", "present", "online", "kernel_max"]
            .iter()
            .map(|f| Path::new("/sys/devices/system/cpu").join(f))
            .collect();
        if proc == ProcMount::None {
            files.push("/proc/cpuinfo".into());
        }
        files
            .into_iter()
            .filter_map(|path| std::fs::read(&path).ok().map(|content| (path, content)))
            .collect()
    }

    fn inside(root: &Path, path: &Path) -> PathBuf {
        root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn make_mount_point(target: &Path, is_dir: bool) -> nix::Result<()> {
        let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        if is_dir {
            std::fs::create_dir_all(target).map_err(io)?;
        } else if !target.exists() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::File::create(target).map_err(io)?;
        }
        Ok(())
    }

    /// Clears the bounding, ambient and inheritable sets and locks
    /// securebits (needs CAP_SETPCAP, so before the ids change), becomes
    /// `uid`/`gid`, then clears the rest and checks that nothing is left.
    fn drop_capabilities(uid: u32, gid: u32) -> Result<(), LaunchError> {
        use caps::CapSet;
        let caps_err = |what: &str, e: caps::errors::CapsError| {
            LaunchError::Capabilities(format!("{what}: {e}"))
        };
        caps::clear(None, CapSet::Bounding).map_err(|e| caps_err("bounding set", e))?;
        caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("ambient set", e))?;
        caps::clear(None, CapSet::Inheritable).map_err(|e| caps_err("inheritable set", e))?;
        // Root gets no capabilities from exec (NOROOT), nobody may raise an
        // ambient capability, KEEP_CAPS stays off; all locked.
        const SECURE_BITS: libc::c_ulong = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7);
        #[allow(unsafe_code)]
        // SAFETY: PR_SET_SECUREBITS takes an integer and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECURE_BITS, 0, 0, 0) };
        if rc != 0 {
            return Err(LaunchError::Capabilities(format!(
                "prctl(PR_SET_SECUREBITS): {}",
                Errno::last()
            )));
        }
        let identity = |step: &'static str| {
            move |errno| LaunchError::Identity {
                uid,
                gid,
                step,
                errno,
            }
        };
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
        nix::unistd::setresgid(g, g, g).map_err(identity("setresgid"))?;
        nix::unistd::setresuid(u, u, u).map_err(identity("setresuid"))?;
        caps::clear(None, CapSet::Effective).map_err(|e| caps_err("effective set", e))?;
        caps::clear(None, CapSet::Permitted).map_err(|e| caps_err("permitted set", e))?;
        // Check, not trust: capabilities this crate does not know of would
        // survive the clears above.
        for set in [
            CapSet::Bounding,
            CapSet::Ambient,
            CapSet::Inheritable,
            CapSet::Permitted,
            CapSet::Effective,
        ] {
            let left = caps::read(None, set).map_err(|e| caps_err("reading back", e))?;
            if !left.is_empty() {
                return Err(LaunchError::Capabilities(format!(
                    "{set:?} set still holds {left:?}"
                )));
            }
        }
        for cap in 0..64 {
            #[allow(unsafe_code)]
            // SAFETY: PR_CAPBSET_READ takes an integer and touches no memory.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
            if rc == 1 {
                return Err(LaunchError::Capabilities(format!(
                    "capability {cap} is still in the bounding set (unknown to this launcher)"
                )));
            }
        }
        Ok(())
    }

    fn landlock(plan: &Plan) -> Result<LandlockRecord, LaunchError> {
        use landlock::{
            ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus,
            PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
        };
        let sandbox = plan.sandbox;
        // ABI 6: every filesystem right, TCP bind/connect, and scoping of
        // abstract Unix sockets and signals to the sandbox. Verified here.
        const ABI_USED: ABI = ABI::V6;
        let mut record = LandlockRecord {
            requested: sandbox.landlock,
            requested_abi: ABI_USED as u32,
            kernel_abi: None,
            status: "disabled".into(),
            ..Default::default()
        };
        if !sandbox.landlock {
            return Ok(record);
        }
        let err = |e: landlock::RulesetError| LaunchError::Landlock(e.to_string());
        let read_file: BitFlags<AccessFs> = AccessFs::ReadFile.into();
        let read_dir = AccessFs::ReadFile | AccessFs::ReadDir;
        let all = AccessFs::from_all(ABI_USED);
        let mut rules: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
        for bind in &plan.binds {
            let mut access = if bind.is_dir { read_dir } else { read_file };
            if bind.exec {
                access |= AccessFs::Execute;
            }
            if bind.writable {
                access = if bind.is_dir {
                    all
                } else {
                    access | AccessFs::WriteFile | AccessFs::Truncate
                };
            }
            if bind.device {
                access = AccessFs::ReadFile | AccessFs::WriteFile;
            }
            rules.push((bind.path.clone(), access));
        }
        if sandbox.tmp_mib.is_some() {
            rules.push(("/tmp".into(), all & !AccessFs::Execute));
        }
        if sandbox.proc != ProcMount::None {
            rules.push(("/proc".into(), read_dir));
        }
        if sandbox.cpu_info {
            for copy in plan_copies(sandbox) {
                rules.push((copy, read_file));
            }
        }
        let mut created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)
            .map_err(err)?
            .handle_access(AccessNet::from_all(ABI_USED))
            .map_err(err)?
            .scope(Scope::from_all(ABI_USED))
            .map_err(err)?
            .create()
            .map_err(err)?;
        for (path, access) in &rules {
            let fd = PathFd::new(path)
                .map_err(|e| LaunchError::Landlock(format!("{}: {e}", path.display())))?;
            created = created
                .add_rule(PathBeneath::new(fd, *access))
                .map_err(err)?;
            record.rules.push((path.clone(), format!("{access:?}")));
        }
        let status = created.restrict_self().map_err(err)?;
        record.kernel_abi = match status.landlock {
            LandlockStatus::Available {
                effective_abi,
                kernel_abi,
            } => Some(kernel_abi.unwrap_or(effective_abi as i32)),
            _ => None,
        };
        record.status = match status.ruleset {
            RulesetStatus::FullyEnforced => "fully_enforced",
            RulesetStatus::PartiallyEnforced => "partially_enforced",
            RulesetStatus::NotEnforced => "not_enforced",
        }
        .into();
        if status.ruleset == RulesetStatus::NotEnforced {
            return Err(LaunchError::Landlock(
                "this kernel does not enforce Landlock (not built in, or not in the `lsm=` list); turn `landlock` off in this brain's sandbox to run without it".into(),
            ));
        }
        record.scoped = ["abstract unix sockets", "signals"]
            .map(String::from)
            .to_vec();
        Ok(record)
    }

    /// The CPU description copies present in the root (see `cpu_snapshot`);
    /// called after pivot_root, so `exists` looks inside.
    fn plan_copies(sandbox: &SandboxSpec) -> Vec<PathBuf> {
        let mut copies: Vec<PathBuf> = ["possible", "present", "online", "kernel_max"]
            .iter()
            .map(|f| Path::new("/sys/devices/system/cpu").join(f))
            .collect();
        if sandbox.proc == ProcMount::None {
            copies.push("/proc/cpuinfo".into());
        }
        copies.retain(|p| p.exists());
        copies
    }

    /// `execveat(AT_FDCWD, program, argv, envp, 0, token)`: the only exec the
    /// seccomp filter lets through. Returns only on failure.
    fn exec(command: &Command, token: u64) -> Errno {
        let mut argv: Vec<*const libc::c_char> = command.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = command.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        #[allow(unsafe_code)]
        // SAFETY: every pointer is to a NUL-terminated string owned by
        // `command`, alive for the call; both arrays end with NULL. The sixth
        // argument is ignored by the kernel and only read by our filter.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                libc::AT_FDCWD,
                command.program.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                0,
                token,
            )
        };
        Errno::last()
    }
}
