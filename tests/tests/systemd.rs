//! The shipped unit, `deploy/sios.service`, under a real systemd, from
//! installation to a reboot.
//!
//! systemd runs as PID 1 of a throwaway container: its own PID, mount,
//! network and UTS namespaces and a cgroup under the test's own. Its
//! `/etc/systemd/system` and `/var/lib` are the test's [`Machine`], which
//! outlives a container as a disk outlives a boot; the unit path is that
//! directory alone, holding empty stand-ins for the targets the unit orders
//! itself after and a journal, so none of this machine's units start; the
//! container's `/var/log` is its own. `/var/lib` starts
//! empty, as on a new machine; the checkout's `deploy/` and this build's
//! executables are under `/opt/sios`, where the unit's header and ExecStart
//! look for them. The test does what an operator does, with `systemctl` and
//! the `sios` CLI inside the container, and reads the results from outside.
//!
//! Root only (namespaces, cgroups), as CI runs.

use sios_e2e::{catalog_names, fixture, json_text, require_root, require_setup};
use sios_ipc::{ProcessState, Role, StatusReport};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SYSTEMD: &str = "/usr/lib/systemd/systemd";
/// The operator's CLI, where the unit expects the executables.
const UNIT_SIOS: &str = "/opt/sios/target/release/sios";

/// `[policy] client_gid` in the second boot's config, and a member of it
/// (no such user exists: the kernel knows callers by number).
const CLIENT_GID: u32 = 61000;
const CLIENT_UID: u32 = 61009;

/// The targets the unit (and systemd's default dependencies of a service)
/// name; empty here, so that nothing but the unit under test starts.
const STAND_IN_TARGETS: [&str; 4] = ["basic", "local-fs", "shutdown", "multi-user"];

/// The machine's journal, which the unit's header tells operators to read:
/// the socket and the daemon, reduced to what a container needs (the Debian
/// units also make /dev/log, on this machine's /dev). A service's
/// `sysinit.target` dependency brings them up first.
const JOURNAL_UNITS: [(&str, &str); 3] = [
    (
        "systemd-journald.socket",
        "[Unit]\nDefaultDependencies=no\n\n[Socket]\n\
         ListenStream=/run/systemd/journal/stdout\nListenDatagram=/run/systemd/journal/socket\n\
         SocketMode=0666\nPassCredentials=yes\nService=systemd-journald.service\n",
    ),
    (
        "systemd-journald.service",
        "[Unit]\nDefaultDependencies=no\nRequires=systemd-journald.socket\n\
         After=systemd-journald.socket\n\n[Service]\nType=notify\n\
         ExecStart=/lib/systemd/systemd-journald\nSockets=systemd-journald.socket\n\
         RuntimeDirectory=systemd/journal\nRuntimeDirectoryPreserve=yes\nStandardOutput=null\n",
    ),
    (
        "sysinit.target",
        "[Unit]\nDescription=sysinit.target (the journal alone in this test)\n\
         Wants=systemd-journald.socket systemd-journald.service\n\
         After=systemd-journald.socket systemd-journald.service\n",
    ),
];

/// Runs in the new namespaces as their PID 1, then becomes systemd.
/// Arguments: the console, the machine's /etc/systemd/system and /var/lib,
/// the checkout's deploy/, the executables, then the cgroups to join.
const BOOT: &str = r#"set -e
console=$1 units=$2 var_lib=$3 deploy=$4 bin=$5
shift 5
for group in "$@"; do echo $$ > "$group/cgroup.procs"; done
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /run
# Nothing systemd sets up may reach the host. Its cgroup directory gets a
# tmpfs of its own holding the same hierarchies: systemd adds controller
# mounts there and then remounts it read-only, which on the host's tmpfs
# would be the host's. /proc/sys and /sys are read-only, as in any container.
mkdir /run/cgroup
mount -t tmpfs -o mode=0755 tmpfs /run/cgroup
for hierarchy in /sys/fs/cgroup/*; do
    name=${hierarchy##*/}
    if [ -L "$hierarchy" ]; then
        ln -s "$(readlink "$hierarchy")" "/run/cgroup/$name"
    elif mountpoint -q "$hierarchy"; then
        mkdir "/run/cgroup/$name"
        mount --bind "$hierarchy" "/run/cgroup/$name"
    fi
done
mount --move /run/cgroup /sys/fs/cgroup
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,bind,ro /sys
# The machine's disk; the checkout's deploy/ and this build's executables
# where the unit's header and ExecStart look for them.
mount --bind "$units" /etc/systemd/system
mount --bind "$var_lib" /var/lib
# The journal's files, the container's own (the host's /var/log/journal
# exists).
mount -t tmpfs -o mode=0755 tmpfs /var/log
mount -t tmpfs -o mode=0755 tmpfs /opt
mkdir -p /opt/sios/deploy /opt/sios/target/release
mount --bind "$deploy" /opt/sios/deploy
mount -o remount,bind,ro /opt/sios/deploy
mount --bind "$bin" /opt/sios/target/release
mount --bind "$console" /dev/console
exec env -i container=sios-test SYSTEMD_UNIT_PATH=/etc/systemd/system \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /usr/lib/systemd/systemd --unit=multi-user.target --default-standard-output=journal+console \
    --log-target=console
"#;

/// This process's own cgroup directory in every mounted hierarchy.
fn own_cgroups() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mount_point = mounts.lines().find_map(|mount| {
            let (before, after) = mount.split_once(" - ")?;
            let mut after = after.split(' ');
            let (fs, _source, options) = (after.next()?, after.next()?, after.next()?);
            let matches = if controllers.is_empty() {
                fs == "cgroup2"
            } else {
                fs == "cgroup"
                    && controllers
                        .split(',')
                        .all(|c| options.split(',').any(|o| o == c))
            };
            matches.then(|| before.split(' ').nth(4).map(str::to_owned))?
        });
        if let Some(point) = mount_point {
            dirs.push(Path::new(&point).join(path.trim_start_matches('/')));
        }
    }
    dirs
}

/// Where the appliance in the container puts its sandboxes' groups, in every
/// hierarchy: the kernel names them after its state directory
/// (`sios/<hash of /var/lib/sios>/<name>`) from each hierarchy's root, which
/// is the host's. A stopped appliance removes them; after a failure they are
/// removed here (those still holding a process, e.g. a real appliance's on
/// this machine, are left alone: rmdir refuses them).
fn sandbox_cgroups_on_host() -> Vec<PathBuf> {
    let own = sios_launch::cgroup_path(Path::new("/var/lib/sios"), "any");
    let parent = Path::new(&own).parent().expect("sios/<hash>").to_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|mount| {
            let (before, after) = mount.split_once(" - ")?;
            let fs = after.split(' ').next()?;
            let point = before.split(' ').nth(4)?;
            (fs == "cgroup" || fs == "cgroup2").then(|| Path::new(point).join(&parent))
        })
        .collect()
}

/// Empties and removes a cgroup directory and every group under it.
fn remove_cgroup(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The container's /dev/console: a pseudo-terminal (systemd writes to a
/// console only if it is a terminal) whose output is copied to a file, so a
/// failure can show what systemd and the appliance said.
struct Console {
    /// The terminal's path, bound over /dev/console in the container.
    terminal: PathBuf,
    /// Held open so that the copy never sees the terminal closed (and never
    /// stops reading, which would block every writer) until the end.
    _terminal: std::os::fd::OwnedFd,
}

impl Console {
    fn open(log: &Path) -> Console {
        use nix::sys::termios;
        let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
        let terminal = nix::unistd::ttyname(&pty.slave).expect("its path");
        // Bytes as written: no "\r\n" for "\n".
        let mut mode = termios::tcgetattr(&pty.slave).unwrap();
        termios::cfmakeraw(&mut mode);
        termios::tcsetattr(&pty.slave, termios::SetArg::TCSANOW, &mode).unwrap();
        let mut from = std::fs::File::from(pty.master);
        let mut to = std::fs::File::create(log).unwrap();
        // Ends when the last holder of the terminal closes it.
        std::thread::spawn(move || std::io::copy(&mut from, &mut to));
        Console {
            terminal,
            _terminal: pty.slave,
        }
    }
}

/// What outlives a container, as a machine's disk outlives a boot: its
/// `/etc/systemd/system` (holding the stand-in targets, then whatever is
/// installed and enabled there) and its `/var/lib`.
struct Machine {
    disk: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let disk = tempfile::tempdir().unwrap();
        let machine = Machine { disk };
        std::fs::create_dir_all(machine.unit_dir()).unwrap();
        std::fs::create_dir_all(machine.var_lib()).unwrap();
        for target in STAND_IN_TARGETS {
            std::fs::write(
                machine.unit_dir().join(format!("{target}.target")),
                format!("[Unit]\nDescription={target}.target (empty in this test)\n"),
            )
            .unwrap();
        }
        for (name, text) in JOURNAL_UNITS {
            std::fs::write(machine.unit_dir().join(name), text).unwrap();
        }
        machine
    }

    /// Its /etc/systemd/system.
    fn unit_dir(&self) -> PathBuf {
        self.disk.path().join("etc-systemd-system")
    }

    /// Its /var/lib.
    fn var_lib(&self) -> PathBuf {
        self.disk.path().join("var-lib")
    }

    /// Its /var/lib/sios, as seen from here.
    fn state_dir(&self) -> PathBuf {
        self.var_lib().join("sios")
    }
}

/// systemd as PID 1 of its own namespaces, booted on `machine` to
/// multi-user.target; killed (with everything in them) when dropped.
struct Container {
    work: tempfile::TempDir,
    _console: Console,
    unshare: Child,
    /// systemd's pid, as this process sees it.
    init: u32,
    cgroups: Vec<PathBuf>,
}

impl Container {
    fn boot(machine: &Machine) -> Container {
        let work = tempfile::tempdir().unwrap();
        let console = Console::open(&work.path().join("console.log"));
        let name = format!("sios-systemd-test-{}", std::process::id());
        let cgroups: Vec<PathBuf> = own_cgroups()
            .into_iter()
            .map(|own| {
                let group = own.join(&name);
                std::fs::create_dir_all(&group).unwrap();
                // A v1 cpuset group takes no process before it has CPUs and
                // memory nodes: its parent's.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if let Ok(value) = std::fs::read_to_string(own.join(file)) {
                        std::fs::write(group.join(file), value).unwrap();
                    }
                }
                group
            })
            .collect();
        let log = std::fs::File::create(work.path().join("unshare.log")).unwrap();
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--net",
                "--uts",
            ])
            .args(["--propagation", "private", "sh", "-c", BOOT, "boot"])
            .arg(&console.terminal)
            .arg(machine.unit_dir())
            .arg(machine.var_lib())
            .arg(sios_e2e::source_tree().join("deploy"))
            .arg(sios_e2e::bin_dir())
            .args(&cgroups)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux)");
        let mut container = Container {
            work,
            _console: console,
            init: 0,
            unshare,
            cgroups,
        };
        container.init = container.wait_for_init();
        container
    }

    /// unshare's child, once it is systemd answering `systemctl`.
    fn wait_for_init(&mut self) -> u32 {
        let children = format!("/proc/{0}/task/{0}/children", self.unshare.id());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let init = std::fs::read_to_string(&children)
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok());
            if let Some(pid) = init {
                self.init = pid;
                let booted = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe == Path::new(SYSTEMD))
                    && self.systemctl(&["show", "-P", "Version"]).status.success();
                if booted {
                    return pid;
                }
            }
            if let Ok(Some(status)) = self.unshare.try_wait() {
                panic!(
                    "the container ended ({status}) before systemd answered:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "systemd did not come up:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `argv` run inside the container (its mount and PID namespaces).
    fn run(&self, argv: &[&str], stdin: Option<&str>) -> Output {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.init.to_string(), "--mount", "--pid", "--"])
            .args(argv)
            .env_remove(sios_config::STATE_DIR_ENV)
            .env_remove("SIOS_CONFIG");
        sios_e2e::output_with_stdin(&mut command, stdin)
    }

    /// `argv` inside the container, which must succeed.
    fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv, None);
        assert!(
            out.status.success(),
            "{argv:?}: {}{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.logs()
        );
        text(&out.stdout)
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        let mut argv = vec!["systemctl", "--no-pager"];
        argv.extend_from_slice(args);
        self.run(&argv, None)
    }

    /// One property of the unit (`systemctl show -P`).
    fn property(&self, name: &str) -> String {
        let out = self.systemctl(&["show", "-P", name, "sios"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }

    /// `sios <args>` as an operator runs it there: the unit's executable, no
    /// state directory named (root's default is the unit's).
    fn sios(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut argv = vec![UNIT_SIOS];
        argv.extend_from_slice(args);
        self.run(&argv, stdin)
    }

    /// `sios status`, which must show every process of the default catalog
    /// ready.
    fn all_ready(&self) -> StatusReport {
        let out = self.sios(&["status", "--json"], None);
        assert!(
            out.status.success(),
            "sios status: {}\n{}",
            text(&out.stderr),
            self.logs()
        );
        let report: StatusReport = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert_eq!(report.state_dir, "/var/lib/sios");
        assert_eq!(
            report.processes.len(),
            3 + catalog_names().len(),
            "{report:?}"
        );
        for p in &report.processes {
            assert_eq!(
                p.state,
                ProcessState::Ready,
                "{}: {:?}",
                p.name,
                p.last_error
            );
        }
        report
    }

    fn invoke(&self) {
        let out = self.sios(
            &["invoke", "file-type", "--input", "-"],
            Some(&json_text(&fixture("file-type").request)),
        );
        assert!(out.status.success(), "sios invoke: {}", text(&out.stderr));
    }

    /// For each process the kernel started, its program's cpu, memory and
    /// pids groups, each checked to be the sandbox's own
    /// (`…/sios/<state dir hash>/<name>`, see `sios_launch::cgroup_path`).
    fn sandbox_cgroups(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let report = self.all_ready();
        let read = |inside: String| std::fs::read_to_string(self.path(&inside)).unwrap();
        let mut groups = std::collections::BTreeMap::new();
        for p in report.processes.iter().filter(|p| p.role != Role::Kernel) {
            // status names the sandbox's launcher; the program is its child.
            let launcher = p.pid.expect("a pid");
            let program = read(format!("/proc/{launcher}/task/{launcher}/children"));
            let program = program.split_whitespace().next().expect("the program");
            let limited: Vec<String> = read(format!("/proc/{program}/cgroup"))
                .lines()
                .filter(|l| ["cpu", "memory", "pids"].contains(&l.split(':').nth(1).unwrap_or("")))
                .map(str::to_owned)
                .collect();
            assert_eq!(limited.len(), 3, "{}: {limited:?}", p.name);
            for line in &limited {
                let path = line.rsplit(':').next().unwrap();
                let (parent, leaf) = path.rsplit_once('/').unwrap();
                assert!(
                    leaf == p.name && parent.rsplit('/').nth(1) == Some("sios"),
                    "{} is not in its sandbox's group: {line}",
                    p.name
                );
            }
            groups.insert(p.name.clone(), limited);
        }
        groups
    }

    /// A path inside the container, as seen from here.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.init))
    }

    /// What systemd and the services printed.
    fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.work.path().join(name)).unwrap_or_default();
        format!(
            "--- console ---\n{}\n--- unshare ---\n{}",
            read("console.log"),
            read("unshare.log")
        )
    }

    /// Waits until the unit is `active` (the kernel said READY=1) after
    /// `restarts` automatic restarts.
    fn wait_active(&self, restarts: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.property("NRestarts") != restarts || self.property("ActiveState") != "active" {
            assert!(
                Instant::now() < deadline,
                "the unit is not active after {restarts} restart(s): {}\n{}",
                text(&self.systemctl(&["status", "sios"]).stdout),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `systemctl stop sios` (what a shutdown does to the unit): SIGTERM to
    /// the kernel alone, which stops and records every other process; nothing
    /// may be left for the SIGKILL after it.
    fn stop(&self) {
        self.ok(&["systemctl", "stop", "sios"]);
        assert_eq!(self.property("ActiveState"), "inactive");
        assert_eq!(
            self.property("Result"),
            "success",
            "the kernel exited 0 on SIGTERM"
        );
        assert_eq!(
            self.processes(),
            ["systemd", "systemd-journal"],
            "only systemd and its journal are left in the container"
        );
    }

    /// The names (`comm`) of the processes in the container's PID namespace.
    fn processes(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("/proc"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| std::fs::read_to_string(self.path(&format!("/proc/{pid}/comm"))).ok())
            .map(|comm| comm.trim_end().to_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killing a PID namespace's init kills everything in it.
        if self.init != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        let sandboxes = sandbox_cgroups_on_host();
        for group in self.cgroups.iter().chain(&sandboxes) {
            while group.exists() && Instant::now() < deadline {
                remove_cgroup(group);
                if group.exists() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        for group in &sandboxes {
            // `sios/`, if no other appliance has groups there.
            let _ = std::fs::remove_dir(group.parent().expect("sios/"));
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_shipped_unit_installs_starts_restarts_survives_a_reboot_and_stops_under_a_real_systemd() {
    if !require_setup()
        || !require_root("running systemd in a container (namespaces, cgroups)")
        || !sios_e2e::require_program(SYSTEMD, "systemd, to run the shipped unit")
    {
        return;
    }
    let host_before = host_cgroup_mount();
    let machine = Machine::new();
    let first = Container::boot(&machine);
    assert!(
        !machine.state_dir().exists(),
        "the machine has no state directory yet"
    );

    // Installed exactly as the unit's header says.
    let shipped =
        std::fs::read_to_string(sios_e2e::source_tree().join("deploy/sios.service")).unwrap();
    let install: Vec<&str> = shipped
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .take_while(|l| !l.contains("sios status"))
        .collect();
    assert_eq!(
        install,
        [
            "install -m 0644 deploy/sios.service /etc/systemd/system/sios.service",
            "systemctl daemon-reload",
            "systemctl enable --now sios",
        ],
        "the header's install steps, which this test carries out"
    );
    first.ok(&[
        "install",
        "-m",
        "0644",
        "/opt/sios/deploy/sios.service",
        "/etc/systemd/system/sios.service",
    ]);
    first.ok(&["systemctl", "daemon-reload"]);
    // `enable --now` returns once the kernel has said every process is ready.
    first.ok(&["systemctl", "enable", "--now", "sios"]);
    assert_eq!(first.property("ActiveState"), "active");
    assert_eq!(first.property("UnitFileState"), "enabled");
    let processes = 3 + catalog_names().len();
    assert_eq!(
        first.property("StatusText"),
        format!("{processes} of {processes} processes ready")
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(machine.state_dir())
        .expect("systemd made the state directory")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the state directory is private");
    // Every process of the default catalog, with no config given.
    first.all_ready();

    // The unit's settings are in force for the kernel systemd started.
    let kernel = first.property("MainPID");
    let of_kernel = |file: &str| {
        std::fs::read_to_string(first.path(&format!("/proc/{kernel}/{file}"))).unwrap()
    };
    assert!(
        of_kernel("status").contains("NoNewPrivs:\t1"),
        "NoNewPrivileges=yes"
    );
    let interfaces: Vec<String> = of_kernel("net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split(':').next()?.trim().to_owned()))
        .collect();
    assert_eq!(interfaces, ["lo"], "PrivateNetwork=yes: loopback alone");
    let mounts = of_kernel("mountinfo");
    let options_of = |point: &str| sios_e2e::mount_options(&mounts, point);
    assert!(options_of("/").starts_with("ro"), "ProtectSystem=strict");
    assert!(
        options_of("/var/lib/sios").starts_with("rw"),
        "ReadWritePaths=/var/lib/sios"
    );
    first.invoke();

    // `journalctl -u sios`, as the unit's header says: the kernel's log and
    // every child's, each child's line tagged with its name.
    let journal = first.ok(&["journalctl", "-u", "sios", "--no-pager", "-o", "cat"]);
    for expected in [
        "kernel listening",
        "[audit]",
        "audit service ready",
        "[memory]",
        "appliance up in",
    ] {
        assert!(
            journal.contains(expected),
            "{expected:?} is not in the journal:\n{journal}"
        );
    }

    // Each sandboxed process keeps its own cgroups when systemd applies the
    // unit's resource settings again (Delegate=yes; without it, systemd moves
    // them into the unit's groups, and their limits are gone).
    let before = first.sandbox_cgroups();
    assert_eq!(before.len(), 2 + catalog_names().len(), "{before:?}");
    first.ok(&[
        "systemctl",
        "set-property",
        "--runtime",
        "sios",
        "CPUAccounting=yes",
        "MemoryAccounting=yes",
        "TasksAccounting=yes",
    ]);
    first.ok(&["systemctl", "daemon-reload"]);
    assert_eq!(first.sandbox_cgroups(), before);

    // A kernel killed outright: systemd kills what is left of the unit and,
    // RestartSec later, starts it again on the same log.
    first.ok(&["kill", "-KILL", &kernel]);
    first.wait_active("1", Duration::from_secs(120));
    assert_ne!(first.property("MainPID"), kernel, "a new kernel");
    first.all_ready();
    first.invoke();

    // A shutdown stops the unit; the next boot starts it (enabled), on the
    // same state.
    first.stop();
    drop(first);
    // A client group, as deploy/sios.toml documents it: the kernel opens the
    // state directory to it, and nothing in the unit may undo that (systemd
    // sets up StateDirectory= for every command a unit runs: when the unit
    // still had an ExecStartPost, that reset it to 0700 root:root, racing
    // the kernel: 2 runs of this test in 10 failed here).
    std::fs::write(
        machine.state_dir().join("config.toml"),
        format!("[policy]\nclient_gid = {CLIENT_GID}\n"),
    )
    .unwrap();
    let second = Container::boot(&machine);
    second.wait_active("0", Duration::from_secs(120));
    second.all_ready();
    second.invoke();
    use std::os::unix::fs::MetadataExt as _;
    let state = std::fs::metadata(machine.state_dir()).unwrap();
    assert_eq!((state.mode() & 0o777, state.gid()), (0o710, CLIENT_GID));
    let member = second.run(
        &[
            "setpriv",
            &format!("--reuid={CLIENT_UID}"),
            &format!("--regid={CLIENT_GID}"),
            "--clear-groups",
            UNIT_SIOS,
            "--state-dir",
            "/var/lib/sios",
            "status",
        ],
        None,
    );
    assert!(
        member.status.success(),
        "a member of the client group runs `sios status`: {}",
        text(&member.stderr)
    );

    // The log continues across the crash and the reboot, and verifies
    // offline.
    second.ok(&[
        UNIT_SIOS,
        "keys",
        "export-public",
        "/var/lib/sios/operator.pub",
    ]);
    second.ok(&[UNIT_SIOS, "audit", "export", "/var/lib/sios/log.oar"]);
    second.stop();
    drop(second);
    let verified = Command::new(sios_e2e::bin_dir().join("sios"))
        .args(["audit", "verify"])
        .arg(machine.state_dir().join("log.oar"))
        .arg("--pubkey")
        .arg(machine.state_dir().join("operator.pub"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "audit verify: {}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );

    // Three runs on one log: killed, stopped, stopped. Each stop recorded
    // every brain's and memory's (the audit service stops last, its own stop
    // recorded by no one).
    let records = sios_e2e::audit_records(&machine.state_dir());
    let runs: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.action == "process.ready" && r.resource == "process:memory")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(runs.len(), 3, "three runs of the appliance on one log");
    let stops_in = |from: usize, to: usize| -> Vec<String> {
        let mut stopped: Vec<String> = records[from..to]
            .iter()
            .filter(|r| r.action == "process.stopped")
            .map(|r| r.resource.trim_start_matches("process:").to_owned())
            .collect();
        stopped.sort();
        stopped
    };
    let mut every: Vec<String> = catalog_names();
    every.push("memory".into());
    every.sort();
    assert_eq!(
        stops_in(runs[0], runs[1]),
        Vec::<String>::new(),
        "the killed run"
    );
    assert_eq!(
        stops_in(runs[1], runs[2]),
        every,
        "stopped before the reboot"
    );
    assert_eq!(
        stops_in(runs[2], records.len()),
        every,
        "stopped at the end"
    );

    assert_eq!(
        host_cgroup_mount(),
        host_before,
        "the containers left this machine's /sys/fs/cgroup as they found it"
    );
}

/// This machine's /sys/fs/cgroup: its entries, and its file system's options
/// (read-only or not).
fn host_cgroup_mount() -> (Vec<String>, String) {
    let mut entries: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let options = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup"))
        .and_then(|l| l.split(" - ").nth(1))
        .unwrap_or_default()
        .to_owned();
    (entries, options)
}
