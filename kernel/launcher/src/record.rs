//! What the launcher applied, kept where [`crate::inspect`] can find it.
//!
//! Most of a sandbox can be read back from /proc (namespaces, ids,
//! capabilities, seccomp mode, limits, cgroups, mounts). Some cannot: Linux
//! shows no Landlock domain anywhere in /proc, and the seccomp rules
//! themselves are readable only with CAP_SYS_ADMIN through ptrace. For these
//! the launcher keeps a record: the sandboxed child sends it, just before
//! its final exec, to the launcher process that stays outside as its parent,
//! which keeps it in a sealed memfd named [`MEMFD_NAME`] for as long as the
//! program runs. `inspect` finds it through `/proc/<launcher>/fd`. The
//! sandboxed program cannot reach it (it is not in its pid namespace, and the
//! memfd is sealed against writes).

use serde::{Deserialize, Serialize};
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The memfd's name; it shows as `/memfd:sios-sandbox-record (deleted)`.
pub const MEMFD_NAME: &str = "sios-sandbox-record";

/// What one launch applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SandboxRecord {
    pub name: String,
    /// The launcher that stays outside as the program's parent.
    pub launcher_pid: u32,
    /// The program's pid in the host's pid namespace.
    pub child_pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Namespaces requested (what /proc shows is in the report).
    pub namespaces: crate::Namespaces,
    /// The root it was given.
    pub mounts: Vec<MountRecord>,
    pub landlock: LandlockRecord,
    pub seccomp: SeccompRecord,
    /// (controller, group directory) of each cgroup joined.
    pub cgroups: Vec<(String, PathBuf)>,
    /// Everything the launcher could not enforce and said so.
    pub notices: Vec<String>,
}

/// One mount of the sandbox's root.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MountRecord {
    /// Path inside the sandbox (= on the host, for binds).
    pub path: PathBuf,
    /// `bind`, `tmpfs`, `proc` or `device`.
    pub kind: String,
    pub writable: bool,
    pub exec: bool,
}

/// The Landlock ruleset applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LandlockRecord {
    /// Whether the spec asked for Landlock.
    pub requested: bool,
    /// The ABI the launcher asked for, and what the kernel offers.
    pub requested_abi: u32,
    pub kernel_abi: Option<i32>,
    /// `fully_enforced`, `partially_enforced`, `not_enforced` or `disabled`.
    pub status: String,
    /// The paths it allows, and with what.
    pub rules: Vec<(PathBuf, String)>,
    pub scoped: Vec<String>,
}

/// The seccomp filters installed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SeccompRecord {
    pub filters: u32,
    pub killed: Vec<String>,
    pub refused: Vec<String>,
    /// `execveat` allowed once, with the launch's token.
    pub exec_once: bool,
}

/// Keeps `record` in a sealed memfd; the caller keeps the fd open as long as
/// the program runs.
pub fn keep(record: &SandboxRecord) -> std::io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(
        MEMFD_NAME,
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

/// The record kept by the launcher `pid`, if `pid` is one.
pub fn find(pid: u32) -> Option<SandboxRecord> {
    let fds = Path::new("/proc").join(pid.to_string()).join("fd");
    for entry in std::fs::read_dir(&fds).ok()?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if !target
            .to_string_lossy()
            .starts_with(&format!("/memfd:{MEMFD_NAME}"))
        {
            continue;
        }
        let mut text = String::new();
        std::fs::File::open(entry.path())
            .ok()?
            .read_to_string(&mut text)
            .ok()?;
        return serde_json::from_str(&text).ok();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_record_is_found_and_sealed() {
        let record = SandboxRecord {
            name: "x".into(),
            launcher_pid: std::process::id(),
            child_pid: 7,
            ..Default::default()
        };
        let fd = keep(&record).unwrap();
        assert_eq!(find(std::process::id()), Some(record));
        let mut file = std::fs::File::from(fd);
        assert!(
            file.write_all(b"more").is_err(),
            "the record must be sealed"
        );
    }
}
