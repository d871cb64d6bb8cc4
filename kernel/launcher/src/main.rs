//! `sios-launch <spec-json>`: applies the process restrictions in the spec,
//! then execs the child. Started only by sios-kernel.
//!
//! Order matters and is fixed: parent-death signal first (so a launch never
//! outlives the kernel), then no-new-privileges and resource limits, then the
//! environment is replaced wholesale, then exec. A step that fails aborts the
//! launch with exit status 78 and a message naming the step.

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use sios_launch::{EXIT_CONFIG, LaunchSpec};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("usage: sios-launch <spec-json> (sios-launch is started by sios-kernel, not by hand)")]
    Usage,
    #[error("the launch spec is not valid: {0}")]
    Spec(#[from] serde_json::Error),
    #[error("step `{step}` failed: {errno}")]
    Step {
        step: &'static str,
        errno: nix::Error,
    },
    #[error(
        "the kernel (pid {0}) exited while this process was being launched; abandoning the launch"
    )]
    Orphaned(u32),
    #[error("{0} contains a NUL byte")]
    Nul(String),
}

fn step<T>(step: &'static str, result: nix::Result<T>) -> Result<T, LaunchError> {
    result.map_err(|errno| LaunchError::Step { step, errno })
}

fn cstring(value: &[u8]) -> Result<CString, LaunchError> {
    CString::new(value).map_err(|_| LaunchError::Nul(String::from_utf8_lossy(value).into_owned()))
}

fn launch(spec: &LaunchSpec) -> Result<std::convert::Infallible, LaunchError> {
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
    // The sandbox (namespaces, pivot_root, uid drop, capabilities, Landlock,
    // seccomp) is applied here, in this single-threaded process, before exec.

    let program = cstring(spec.program.as_os_str().as_bytes())?;
    let mut argv = vec![program.clone()];
    for arg in &spec.args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let env = spec
        .env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    step("execve", nix::unistd::execve(&program, &argv, &env))
}

fn run() -> Result<std::convert::Infallible, (String, LaunchError)> {
    let mut args = std::env::args().skip(1);
    let (Some(arg), None) = (args.next(), args.next()) else {
        return Err(("sios-launch".into(), LaunchError::Usage));
    };
    let spec = LaunchSpec::from_arg(&arg).map_err(|e| ("sios-launch".to_owned(), e.into()))?;
    launch(&spec).map_err(|e| (spec.name.clone(), e))
}

fn main() {
    // `run` only returns on failure: success is an exec that never comes back.
    let Err((name, err)) = run();
    eprintln!("sios-launch: {name}: {err}");
    std::process::exit(EXIT_CONFIG);
}
