//! `sios-hostile-brain <mode> [args]`: a test-only program that behaves like
//! a compromised brain. `tests/tests/sandbox.rs` starts it through the real
//! `sios-launch` with a full sandbox, fd 3 a listening socket, exactly as the
//! kernel starts a brain, and checks every attempt's real outcome.
//!
//! Modes:
//! - `brain` (or started by the kernel, whose first argument is `--manifest`):
//!   a brain for the kernel that attacks it over its fd-4 channel; see
//!   [`brain`].
//! - `serve`: accepts on fd 3 and answers each line `ping` with `pong`
//!   forever (proves a normal program still works in the sandbox).
//! - `probe key=value…`: attempts that fail without killing, one result line
//!   each on stdout: `RESULT <name> ok <detail>` or `RESULT <name> err <ERRNO>`.
//!   Keys: `tcp=IP:PORT` (connect and send), `udp=IP:PORT` (send),
//!   `read=PATH`, `write=PATH`, `unix=PATH` (connect). Always also tries:
//!   sockets of each non-Unix family, setuid(0), setgid(0), raising a
//!   capability, sethostname, kill(-1), and lists /proc and /.
//! - `fatal <what>`: one attempt the sandbox answers with SIGSYS: `execve`,
//!   `ptrace`, `mount`, `umount`, `unshare`, `setns`, `io_uring`, `clone_newuser`,
//!   `bpf`, `perf`, `x32`, `keyctl`. If the process survives, it prints
//!   `SURVIVED <what> <result>` and exits 0.
//! - `lockdown-exec`: calls `sios_launch::lock_down_exec()` as a brain does,
//!   prints `locked`, then execs /bin/true (which must kill it with SIGSYS).
//! - `forkbomb`: forks until refused; prints `RESULT forkbomb err <ERRNO> forks=N`.
//! - `allocate MIB`: maps and touches memory 1 MiB at a time up to MIB;
//!   prints `RESULT allocate err <ERRNO> after=N` if refused, or
//!   `RESULT allocate ok after=N`; killed by the OOM killer otherwise.

mod brain;

use nix::errno::Errno;
use std::ffi::CString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::fd::FromRawFd as _;

fn result(name: &str, outcome: Result<String, Errno>) {
    match outcome {
        Ok(detail) => println!("RESULT {name} ok {detail}"),
        Err(errno) => println!("RESULT {name} err {errno:?}"),
    }
    let _ = std::io::stdout().flush();
}

fn io_errno(err: std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("brain") => brain::run(&args[1..]),
        // The kernel starts a brain's program with its own arguments only.
        Some("--manifest") => brain::run(&args),
        Some("serve") => serve(),
        Some("probe") => probe(&args[1..]),
        Some("fatal") => fatal(args.get(1).map(String::as_str).unwrap_or("")),
        Some("forkbomb") => forkbomb(),
        Some("lockdown-exec") => lockdown_exec(),
        Some("allocate") => allocate(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024)),
        _ => {
            eprintln!(
                "usage: sios-hostile-brain brain --manifest <toml> [--allowed <brain>] [--forbidden <brain>]|serve|probe|fatal <what>|forkbomb|allocate <mib>"
            );
            std::process::exit(2);
        }
    }
}

fn serve() {
    #[allow(unsafe_code)]
    // SAFETY: the launcher hands a listening socket at fd 3, owned by nothing
    // else in this process.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
    println!("serving");
    let _ = std::io::stdout().flush();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let mut writer = match stream.try_clone() {
            Ok(w) => w,
            Err(_) => continue,
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let reply = if line == "ping" {
                "pong".to_owned()
            } else {
                format!("?{line}")
            };
            if writeln!(writer, "{reply}").is_err() {
                break;
            }
        }
    }
}

fn socket(family: i32, kind: i32) -> Result<std::os::fd::OwnedFd, Errno> {
    #[allow(unsafe_code)]
    // SAFETY: socket(2) takes integers; a valid result is a new descriptor
    // that nothing else owns.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    #[allow(unsafe_code)]
    // SAFETY: as above.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

fn probe(args: &[String]) {
    for (name, family, kind) in [
        ("socket_inet_tcp", libc::AF_INET, libc::SOCK_STREAM),
        ("socket_inet_udp", libc::AF_INET, libc::SOCK_DGRAM),
        ("socket_inet6", libc::AF_INET6, libc::SOCK_STREAM),
        ("socket_netlink", libc::AF_NETLINK, libc::SOCK_RAW),
        ("socket_packet", libc::AF_PACKET, libc::SOCK_RAW),
        ("socket_unix", libc::AF_UNIX, libc::SOCK_STREAM),
    ] {
        result(name, socket(family, kind).map(|_| "created".into()));
    }
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            continue;
        };
        match key {
            "tcp" => result(
                &format!("tcp_connect {value}"),
                std::net::TcpStream::connect_timeout(
                    &value.parse().expect("tcp=IP:PORT"),
                    std::time::Duration::from_secs(2),
                )
                .and_then(|mut s| s.write_all(b"exfiltrated").map(|_| s))
                .map(|_| "connected and sent".into())
                .map_err(io_errno),
            ),
            "udp" => result(
                &format!("udp_send {value}"),
                std::net::UdpSocket::bind("0.0.0.0:0")
                    .and_then(|s| s.send_to(b"exfiltrated", value))
                    .map(|n| format!("sent {n}"))
                    .map_err(io_errno),
            ),
            "read" => result(
                &format!("read {value}"),
                std::fs::read_dir(value)
                    .map(|d| format!("listed {} entries", d.count()))
                    .or_else(|_| {
                        let mut buf = Vec::new();
                        std::fs::File::open(value)
                            .and_then(|mut f| f.read_to_end(&mut buf))
                            .map(|n| format!("read {n} bytes"))
                    })
                    .map_err(io_errno),
            ),
            "write" => result(
                &format!("write {value}"),
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(value)
                    .and_then(|mut f| f.write_all(b"planted"))
                    .map(|()| "written".into())
                    .map_err(io_errno),
            ),
            "unix" => result(
                &format!("unix_connect {value}"),
                std::os::unix::net::UnixStream::connect(value)
                    .map(|_| "connected".into())
                    .map_err(io_errno),
            ),
            _ => eprintln!("unknown probe {key}"),
        }
    }
    result(
        "setuid0",
        nix::unistd::setuid(nix::unistd::Uid::from_raw(0)).map(|()| "uid 0".into()),
    );
    result(
        "setgid0",
        nix::unistd::setgid(nix::unistd::Gid::from_raw(0)).map(|()| "gid 0".into()),
    );
    result("raise_cap_sys_admin", raise_capability());
    result(
        "sethostname",
        nix::unistd::sethostname("pwned").map(|()| "renamed".into()),
    );
    // kill(-1, 0): is there any other process this one could signal?
    result(
        "signal_everyone",
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), None).map(|()| "someone".into()),
    );
    result("list_proc", list("/proc"));
    result("list_root", list("/"));
    result(
        "uid",
        Ok(format!(
            "{} {}",
            nix::unistd::getuid(),
            nix::unistd::geteuid()
        )),
    );
}

fn list(path: &str) -> Result<String, Errno> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(io_errno)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names.join(","))
}

fn raise_capability() -> Result<String, Errno> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let all = Data {
        effective: u32::MAX,
        permitted: u32::MAX,
        inheritable: u32::MAX,
    };
    let data = [all, all];
    #[allow(unsafe_code)]
    // SAFETY: capset reads a header and two data structs, all live here.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc == 0 {
        Ok("raised".into())
    } else {
        Err(Errno::last())
    }
}

fn fatal(what: &str) {
    let Some(outcome) = try_fatal(what) else {
        eprintln!("unknown fatal attempt {what}");
        std::process::exit(2);
    };
    println!("SURVIVED {what} {}", shown(outcome));
}

/// `ok <detail>` or `err <ERRNO>`.
fn shown(outcome: Result<String, Errno>) -> String {
    match outcome {
        Ok(detail) => format!("ok {detail}"),
        Err(errno) => format!("err {errno:?}"),
    }
}

/// Makes the attempt `fatal <what>` names and returns its outcome if the
/// process survives it; `None` for a name it does not know. Also brain
/// mode's `fatal:<what>` phase.
fn try_fatal(what: &str) -> Option<Result<String, Errno>> {
    let outcome: Result<String, Errno> =
        match what {
            "execve" => {
                let sh = CString::new("/bin/sh").unwrap_or_default();
                nix::unistd::execv(&sh, &[&sh]).map(|_| "exec'd".into())
            }
            "ptrace" => nix::sys::ptrace::traceme().map(|()| "traced".into()),
            "mount" => nix::mount::mount(
                Some("tmpfs"),
                "/",
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map(|()| "mounted".into()),
            "umount" => nix::mount::umount2("/", nix::mount::MntFlags::MNT_DETACH)
                .map(|()| "unmounted".into()),
            "unshare" => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)
                .map(|()| "unshared".into()),
            "setns" => std::fs::File::open("/proc/self/ns/net")
                .map_err(io_errno)
                .and_then(|f| {
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map(|()| "entered".into())
                }),
            "io_uring" => raw(libc::SYS_io_uring_setup, [8, 0, 0, 0, 0, 0]),
            "clone_newuser" => raw(
                libc::SYS_clone,
                [(libc::CLONE_NEWUSER | libc::SIGCHLD) as i64, 0, 0, 0, 0, 0],
            ),
            "bpf" => raw(libc::SYS_bpf, [0, 0, 0, 0, 0, 0]),
            "perf" => raw(libc::SYS_perf_event_open, [0, 0, -1, -1, 0, 0]),
            "keyctl" => raw(libc::SYS_keyctl, [0, 0, 0, 0, 0, 0]),
            // getpid in the x32 ABI's numbering.
            "x32" => raw(0x4000_0000 + libc::SYS_getpid, [0; 6]),
            _ => return None,
        };
    Some(outcome)
}

fn raw(nr: i64, a: [i64; 6]) -> Result<String, Errno> {
    #[allow(unsafe_code)]
    // SAFETY: every call made here passes only integers or null pointers;
    // the sandbox is expected to kill the process before the kernel runs it.
    let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if rc < 0 {
        Err(Errno::last())
    } else {
        if rc == 0 && nr == libc::SYS_clone {
            // The child of a clone that got through.
            std::process::exit(0);
        }
        Ok(format!("returned {rc}"))
    }
}

fn lockdown_exec() {
    if let Err(err) = sios_launch::lock_down_exec() {
        println!("RESULT lockdown err {err}");
        return;
    }
    println!("locked");
    let _ = std::io::stdout().flush();
    let program = CString::new("/bin/true").unwrap_or_default();
    let outcome = nix::unistd::execv(&program, &[&program]);
    println!("SURVIVED lockdown-exec {outcome:?}");
}

fn forkbomb() {
    let mut forks = 0u32;
    let errno = loop {
        #[allow(unsafe_code)]
        // SAFETY: the children only call pause(), which is async-signal-safe.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => loop {
                nix::unistd::pause();
            },
            Ok(nix::unistd::ForkResult::Parent { .. }) => forks += 1,
            Err(errno) => break errno,
        }
        if forks >= 10_000 {
            break Errno::UnknownErrno;
        }
    };
    println!("RESULT forkbomb err {errno:?} forks={forks}");
    let _ = std::io::stdout().flush();
}

fn allocate(mib: usize) {
    println!("RESULT allocate {}", try_allocate(mib));
}

/// Maps and touches `mib` MiB, 1 MiB at a time (progress on stdout):
/// `ok after=N`, or `err <ERRNO> after=N` if a mapping is refused. Killed by
/// the OOM killer when over the memory limit. Also brain mode's
/// `allocate:<mib>` phase.
fn try_allocate(mib: usize) -> String {
    use std::num::NonZeroUsize;
    let chunk = NonZeroUsize::new(1 << 20).unwrap_or(NonZeroUsize::MIN);
    let mut kept = Vec::new();
    for n in 0..mib {
        #[allow(unsafe_code)]
        // SAFETY: a fresh anonymous private mapping, written only through the
        // pointer returned, never freed while this loop runs.
        let mapped = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                chunk,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        };
        match mapped {
            Ok(ptr) => {
                #[allow(unsafe_code)]
                // SAFETY: the mapping is chunk bytes long and writable.
                unsafe {
                    std::ptr::write_bytes(ptr.as_ptr().cast::<u8>(), 0xa5, chunk.get())
                };
                kept.push(ptr);
            }
            Err(errno) => return format!("err {errno:?} after={n}"),
        }
        if n % 16 == 0 {
            println!("allocated {n}");
            let _ = std::io::stdout().flush();
        }
    }
    format!("ok after={mib}")
}
