//! cgroup limits for one sandboxed program: memory, CPU weight, pids.
//!
//! cgroup v1 (one hierarchy per controller, as on this machine kind) and v2
//! (unified, where the host delegates controllers) are both handled. The
//! launcher runs as root in the host's namespaces when it does this, before
//! the program's process exists in the group's eyes: [`Cgroups::join`] moves
//! the forked child in before it execs, so every thread and process the
//! program ever makes is counted.
//!
//! "Unavailable" (the controller is not mounted, or the launcher may not
//! create a group: not root, v2 controllers not delegated, read-only
//! cgroupfs) is not an error: it becomes a notice and the launch carries on
//! with the rlimits alone. A limit the kernel refuses for a group that could
//! be created is an error (the spec asks for something impossible).

use crate::CgroupSpec;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Why a cgroup could not be set up although cgroups are there.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum CgroupError {
    #[error("cgroup path {0:?} must be relative, without `.` or `..`")]
    BadPath(String),
    #[error("cgroup {controller}: cannot write {value:?} to {path}: {source}")]
    Write {
        controller: &'static str,
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {controller}: cannot move pid {pid} into {path}: {source}")]
    Join {
        controller: &'static str,
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The groups one launch made, one per controller (v1) or one for all (v2).
#[derive(Debug, Default)]
pub struct Cgroups {
    /// (controller, directory). On v2 the controller is "unified".
    pub dirs: Vec<(&'static str, PathBuf)>,
    /// Notices for the operator: what could not be limited, and why.
    pub notices: Vec<String>,
    /// The hierarchy's root for each dir, to clean up empty parents.
    roots: Vec<PathBuf>,
}

/// The default mount point.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// v1 memory, cpu and pids, or v2 `memory.max`, `cpu.weight`, `pids.max`.
pub fn setup(spec: &CgroupSpec) -> Result<Cgroups, CgroupError> {
    let relative = Path::new(&spec.path);
    if spec.path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(CgroupError::BadPath(spec.path.clone()));
    }
    let root = spec
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    if root.join("cgroup.controllers").exists() {
        setup_v2(&root, relative, spec)
    } else {
        setup_v1(&root, relative, spec)
    }
}

/// (file, value) pairs to write in one group.
type LimitFiles = Vec<(&'static str, String)>;

fn setup_v1(root: &Path, relative: &Path, spec: &CgroupSpec) -> Result<Cgroups, CgroupError> {
    let mut groups = Cgroups::default();
    let wanted: [(&'static str, Option<LimitFiles>); 3] = [
        (
            "memory",
            spec.memory_mib.map(|mib| {
                let bytes = (mib << 20).to_string();
                // memsw must be ≥ the memory limit: equal means no swap on top.
                vec![
                    ("memory.limit_in_bytes", bytes.clone()),
                    ("memory.memsw.limit_in_bytes", bytes),
                ]
            }),
        ),
        (
            "cpu",
            spec.cpu_weight
                .map(|w| vec![("cpu.shares", cpu_shares(w).to_string())]),
        ),
        (
            "pids",
            spec.max_pids.map(|n| vec![("pids.max", n.to_string())]),
        ),
    ];
    for (controller, files) in wanted {
        let Some(files) = files else { continue };
        let hierarchy = root.join(controller);
        if !hierarchy.join("cgroup.procs").exists() {
            groups.notices.push(format!(
                "cgroup v1 controller `{controller}` is not mounted at {}: no {controller} cgroup limit for this process (its rlimits still apply)",
                hierarchy.display()
            ));
            continue;
        }
        let dir = hierarchy.join(relative);
        if let Err(err) = make_dir(&dir) {
            groups.notices.push(format!(
                "cannot create cgroup {} ({err}): no {controller} cgroup limit for this process (its rlimits still apply); cgroups need root",
                dir.display()
            ));
            continue;
        }
        evict_stale(&dir);
        for (file, value) in files {
            let path = dir.join(file);
            // memsw only exists where swap is accounted for.
            if file == "memory.memsw.limit_in_bytes" && !path.exists() {
                continue;
            }
            write(controller, &path, &value)?;
        }
        groups.dirs.push((controller, dir));
        groups.roots.push(hierarchy);
    }
    Ok(groups)
}

fn setup_v2(root: &Path, relative: &Path, spec: &CgroupSpec) -> Result<Cgroups, CgroupError> {
    let mut groups = Cgroups::default();
    let mut controllers = Vec::new();
    let mut files = Vec::new();
    if let Some(mib) = spec.memory_mib {
        controllers.push("memory");
        files.push(("memory.max", (mib << 20).to_string()));
        files.push(("memory.swap.max", "0".to_owned()));
    }
    if let Some(weight) = spec.cpu_weight {
        controllers.push("cpu");
        files.push(("cpu.weight", weight.clamp(1, 10_000).to_string()));
    }
    if let Some(n) = spec.max_pids {
        controllers.push("pids");
        files.push(("pids.max", n.to_string()));
    }
    if controllers.is_empty() {
        return Ok(groups);
    }
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = controllers
        .iter()
        .copied()
        .filter(|c| !available.split_whitespace().any(|a| a == *c))
        .collect();
    if !missing.is_empty() {
        groups.notices.push(format!(
            "cgroup v2 at {} does not offer the {} controller(s) (not delegated): no cgroup limits for this process (its rlimits still apply)",
            root.display(),
            missing.join(", ")
        ));
        return Ok(groups);
    }
    // Enable the controllers down the path: root, each parent, not the leaf
    // (a group with processes may not have controllers enabled for children).
    let enable: String = controllers.iter().map(|c| format!("+{c} ")).collect();
    let mut dir = root.to_owned();
    for component in relative.components() {
        if let Err(err) = std::fs::write(dir.join("cgroup.subtree_control"), enable.trim_end()) {
            groups.notices.push(format!(
                "cannot enable {} in {} ({err}): no cgroup limits for this process (its rlimits still apply)",
                controllers.join(", "),
                dir.display()
            ));
            return Ok(groups);
        }
        dir = dir.join(component);
        if let Err(err) = make_dir(&dir) {
            groups.notices.push(format!(
                "cannot create cgroup {} ({err}): no cgroup limits for this process (its rlimits still apply); cgroups need root",
                dir.display()
            ));
            return Ok(groups);
        }
    }
    evict_stale(&dir);
    for (file, value) in files {
        let path = dir.join(file);
        if file == "memory.swap.max" && !path.exists() {
            continue;
        }
        write("unified", &path, &value)?;
    }
    groups.dirs.push(("unified", dir));
    groups.roots.push(root.to_owned());
    Ok(groups)
}

/// v2 weight (1–10000, default 100) to v1 shares (2–262144, default 1024).
pub fn cpu_shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).clamp(2, 262_144)
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    // A sibling launcher's clean-up may remove a shared parent between our
    // mkdirs: try again.
    let mut last = None;
    for _ in 0..3 {
        match std::fs::create_dir_all(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| ErrorKind::NotFound.into()))
}

fn write(controller: &'static str, path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        controller,
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Processes left in a group by a previous incarnation of the same program
/// (its launcher was SIGKILLed and could not clean up): kill them, they must
/// not share the new incarnation's limits.
fn evict_stale(dir: &Path) {
    for pid in procs(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes the groups of `spec` left behind by a launcher that was killed
/// before it could clean up (SIGKILL after the kernel's stop timeout): kills
/// what is left in them, removes them and their empty parents. For the
/// kernel, after such a stop; the next launch of the same program also
/// reuses (and empties) the groups, so calling this is tidiness, not safety.
pub fn remove_stale(spec: &CgroupSpec) {
    let relative = Path::new(&spec.path);
    if spec.path.is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return;
    }
    let root = spec
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    let mut groups = Cgroups::default();
    if root.join("cgroup.controllers").exists() {
        groups.dirs.push(("unified", root.join(relative)));
        groups.roots.push(root);
    } else {
        for controller in ["memory", "cpu", "pids"] {
            groups
                .dirs
                .push((controller, root.join(controller).join(relative)));
            groups.roots.push(root.join(controller));
        }
    }
    groups.remove();
}

impl Cgroups {
    /// Moves `pid` into every group. Called by the launcher for its forked
    /// child before that child may exec.
    pub fn join(&self, pid: u32) -> Result<(), CgroupError> {
        for (controller, dir) in &self.dirs {
            let path = dir.join("cgroup.procs");
            std::fs::write(&path, pid.to_string()).map_err(|source| CgroupError::Join {
                controller,
                pid,
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Whether the program is in a memory-limiting group (v1's memory
    /// controller, or v2's unified hierarchy) — with a limit if the spec had one.
    pub fn limits_memory(&self) -> bool {
        self.dirs
            .iter()
            .any(|(controller, _)| *controller == "memory" || *controller == "unified")
    }

    /// The memory limit was hit at least once (v1 `memory.failcnt`, v2
    /// `memory.events` oom_kill), for the exit report.
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().any(|(controller, dir)| match *controller {
            "memory" => std::fs::read_to_string(dir.join("memory.oom_control"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("oom_kill ") && l.trim_end() != "oom_kill 0"),
            "unified" => std::fs::read_to_string(dir.join("memory.events"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("oom_kill ") && l.trim_end() != "oom_kill 0"),
            _ => false,
        })
    }

    /// Removes the groups once the program has exited: kills anything left
    /// in them (without a pid namespace, orphans may outlive the program),
    /// then removes the directories, and the shared parents if empty.
    pub fn remove(&self) {
        for (i, (_, dir)) in self.dirs.iter().enumerate() {
            for attempt in 0..100 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(err) if err.kind() == ErrorKind::NotFound => break,
                    Err(_) if attempt < 99 => {
                        evict_stale(dir);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => {}
                }
            }
            // Parents shared with the appliance's other processes: only if
            // empty (rmdir refuses otherwise), never the hierarchy's root.
            if let Some(root) = self.roots.get(i) {
                let mut parent = dir.parent();
                while let Some(p) = parent {
                    if p == root || !p.starts_with(root) || std::fs::remove_dir(p).is_err() {
                        break;
                    }
                    parent = p.parent();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_v1(root: &Path, controllers: &[&str]) {
        for c in controllers {
            std::fs::create_dir_all(root.join(c)).unwrap();
            std::fs::write(root.join(c).join("cgroup.procs"), "").unwrap();
        }
    }

    fn spec(root: &Path) -> CgroupSpec {
        CgroupSpec {
            path: "sios/abc/brain".into(),
            memory_mib: Some(256),
            cpu_weight: Some(50),
            max_pids: Some(16),
            root: Some(root.to_owned()),
        }
    }

    #[test]
    fn v1_writes_each_limit_in_its_own_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        fake_v1(root.path(), &["memory", "cpu", "pids"]);
        let groups = setup(&spec(root.path())).unwrap();
        assert!(groups.notices.is_empty(), "{:?}", groups.notices);
        assert_eq!(groups.dirs.len(), 3);
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/sios/abc/brain/memory.limit_in_bytes"),
            (256u64 << 20).to_string()
        );
        assert_eq!(read("cpu/sios/abc/brain/cpu.shares"), "512");
        assert_eq!(read("pids/sios/abc/brain/pids.max"), "16");
        groups.join(4242).unwrap();
        assert_eq!(read("pids/sios/abc/brain/cgroup.procs"), "4242");
    }

    #[test]
    fn a_missing_controller_is_a_notice_not_an_error() {
        let root = tempfile::tempdir().unwrap();
        fake_v1(root.path(), &["pids"]);
        let groups = setup(&spec(root.path())).unwrap();
        assert_eq!(groups.dirs.len(), 1);
        assert_eq!(groups.notices.len(), 2, "{:?}", groups.notices);
        assert!(groups.notices[0].contains("`memory` is not mounted"));
    }

    #[test]
    fn v2_without_delegated_controllers_is_a_notice() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset io\n").unwrap();
        let groups = setup(&spec(root.path())).unwrap();
        assert!(groups.dirs.is_empty());
        assert!(
            groups.notices[0].contains("memory, cpu, pids"),
            "{:?}",
            groups.notices
        );
    }

    #[test]
    fn v2_enables_controllers_down_the_path_and_writes_the_leaf() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let groups = setup(&spec(root.path())).unwrap();
        assert!(groups.notices.is_empty(), "{:?}", groups.notices);
        let read = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(
            read("sios/abc/cgroup.subtree_control"),
            "+memory +cpu +pids"
        );
        assert_eq!(
            read("sios/abc/brain/memory.max"),
            (256u64 << 20).to_string()
        );
        assert_eq!(read("sios/abc/brain/cpu.weight"), "50");
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["", "/abs", "a/../b", "./a"] {
            let mut s = spec(root.path());
            s.path = bad.into();
            assert!(matches!(setup(&s), Err(CgroupError::BadPath(_))), "{bad:?}");
        }
    }

    #[test]
    fn weights_map_to_shares() {
        assert_eq!(cpu_shares(100), 1024);
        assert_eq!(cpu_shares(1), 10);
        assert_eq!(cpu_shares(0), 2);
        assert_eq!(cpu_shares(10_000), 102_400);
    }
}
