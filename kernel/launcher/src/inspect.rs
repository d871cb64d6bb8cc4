//! What is actually enforced on a running process, read back from /proc.
//!
//! [`report`] is what `sios sandbox show <brain>` prints (through
//! [`render`]): every fact is read from the live process, not from its spec,
//! so a step that silently did not happen shows as ✗. The kernel calls it
//! with the pid it supervises (the launcher, for a sandboxed brain); the
//! launcher's record (see [`crate::record`]) leads to the program itself.
//!
//! Read back from `/proc/<pid>`: namespaces (`ns/*` inodes against the
//! caller's own), ids, capability sets, `NoNewPrivs`, `Seccomp` and
//! `Seccomp_filters` (`status`), rlimits (`limits`), cgroup membership
//! (`cgroup`) and each group's limits from cgroupfs, the mount table
//! (`mountinfo`) and the root directory (`root/`), network interfaces and
//! addresses (`net/dev`, `net/fib_trie`, `net/if_inet6`). Not visible in
//! /proc and therefore taken from the launcher's record: whether Landlock
//! is enforced and with which rules, and which syscalls the seccomp filters
//! name. Reading another process's /proc entries needs root or the same uid
//! (the kernel runs as root).

use crate::record::SandboxRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why nothing could be reported.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum InspectError {
    #[error("no process {0} (it exited, or it was never started)")]
    NoSuchProcess(u32),
    #[error("cannot read {path}: {source}; reading another process's sandbox needs root")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything read back about one sandboxed process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SandboxReport {
    /// The program's pid (host view).
    pub pid: u32,
    /// Its pid in each pid namespace, outermost first (`NSpid`).
    pub nspid: Vec<u32>,
    /// The launcher supervising it, when sandboxed.
    pub launcher_pid: Option<u32>,
    /// The executable (`/proc/<pid>/exe`).
    pub program: Option<String>,
    pub namespaces: Vec<NamespaceFact>,
    /// Real, effective, saved, filesystem.
    pub uid: Vec<u32>,
    pub gid: Vec<u32>,
    pub groups: Vec<u32>,
    pub cap_inheritable: u64,
    pub cap_permitted: u64,
    pub cap_effective: u64,
    pub cap_bounding: u64,
    pub cap_ambient: u64,
    pub no_new_privs: bool,
    /// 0 none, 1 strict, 2 filter.
    pub seccomp_mode: u32,
    pub seccomp_filters: u32,
    pub threads: u32,
    pub limits: Vec<LimitFact>,
    pub cgroups: Vec<CgroupFact>,
    pub mounts: Vec<MountFact>,
    /// Names in its root directory.
    pub root_entries: Vec<String>,
    /// Network interfaces in its network namespace, and whether any
    /// address is configured at all.
    pub interfaces: Vec<String>,
    pub addresses: u32,
    /// What the launcher recorded (Landlock, seccomp rules, notices).
    pub record: Option<SandboxRecord>,
    /// The verdicts, in the order they are shown.
    pub checks: Vec<Check>,
}

/// One namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct NamespaceFact {
    /// `user`, `net`, `mnt`, `pid`, `ipc`, `uts`, `cgroup`.
    pub kind: String,
    /// e.g. `net:[4026532561]`.
    pub id: String,
    /// The caller's (the kernel's) for the same kind.
    pub caller_id: String,
    pub own: bool,
}

/// One rlimit; `None` = unlimited.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LimitFact {
    pub name: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
    pub unit: String,
}

/// One cgroup the process is in, with the limits read from it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CgroupFact {
    /// `memory`, `cpu`, `pids` (v1) or `unified` (v2).
    pub controller: String,
    pub path: String,
    /// File name → content, for the limit and usage files that exist.
    pub values: BTreeMap<String, String>,
}

/// One mount in its mount namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MountFact {
    pub path: String,
    pub fstype: String,
    /// Per-mount options (`ro,nosuid,nodev,noexec,…`).
    pub options: String,
}

/// One verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Stable identifier, e.g. `namespace.net`, `caps.bounding`.
    pub id: String,
    pub title: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// Why it matters, one line.
    pub why: String,
}

impl SandboxReport {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }
}

const NAMESPACES: [(&str, &str, &str); 7] = [
    (
        "user",
        "user namespace",
        "root inside is nobody outside; capabilities inside count for nothing on the host",
    ),
    (
        "net",
        "network namespace",
        "no interface, no route: nothing reachable, loopback included (zero egress)",
    ),
    (
        "mnt",
        "mount namespace",
        "its own minimal root: the host's files and the kernel's sockets are not there",
    ),
    ("pid", "pid namespace", "sees and signals no other process"),
    (
        "ipc",
        "IPC namespace",
        "no System V / POSIX IPC shared with the host",
    ),
    ("uts", "UTS namespace", "cannot rename the host"),
    (
        "cgroup",
        "cgroup namespace",
        "does not see the host's cgroup tree (informational)",
    ),
];

/// Reads what is enforced on `pid`: a launcher's pid (what the kernel
/// supervises) or the sandboxed program's own.
pub fn report(pid: u32) -> Result<SandboxReport, InspectError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    if !proc.exists() {
        return Err(InspectError::NoSuchProcess(pid));
    }
    // The launcher's record names its child; or `pid` is the child and its
    // parent holds the record.
    let (target, launcher, record) = match crate::record::find(pid) {
        Some(record) if parent_of(record.child_pid) == Some(pid) => {
            (record.child_pid, Some(pid), Some(record))
        }
        _ => match parent_of(pid).and_then(|p| crate::record::find(p).map(|r| (p, r))) {
            Some((parent, record)) if record.child_pid == pid => (pid, Some(parent), Some(record)),
            _ => (pid, None, None),
        },
    };
    let proc = PathBuf::from(format!("/proc/{target}"));
    let status_path = proc.join("status");
    let status_text =
        std::fs::read_to_string(&status_path).map_err(|source| InspectError::Read {
            path: status_path,
            source,
        })?;
    let status: BTreeMap<&str, &str> = status_text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let numbers = |key: &str| -> Vec<u32> {
        status
            .get(key)
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let hex = |key: &str| -> u64 {
        status
            .get(key)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(u64::MAX)
    };
    let number = |key: &str| -> u32 { status.get(key).and_then(|v| v.parse().ok()).unwrap_or(0) };

    let namespaces = NAMESPACES
        .iter()
        .map(|(kind, _, _)| {
            let id = read_link(&proc.join("ns").join(kind));
            let caller_id = read_link(&Path::new("/proc/self/ns").join(kind));
            NamespaceFact {
                kind: kind.to_string(),
                own: !id.is_empty() && id != caller_id,
                id,
                caller_id,
            }
        })
        .collect();

    let mut report = SandboxReport {
        pid: target,
        nspid: numbers("NSpid"),
        launcher_pid: launcher,
        program: std::fs::read_link(proc.join("exe"))
            .ok()
            .map(|p| p.display().to_string()),
        namespaces,
        uid: numbers("Uid"),
        gid: numbers("Gid"),
        groups: numbers("Groups"),
        cap_inheritable: hex("CapInh"),
        cap_permitted: hex("CapPrm"),
        cap_effective: hex("CapEff"),
        cap_bounding: hex("CapBnd"),
        cap_ambient: hex("CapAmb"),
        no_new_privs: number("NoNewPrivs") == 1,
        seccomp_mode: number("Seccomp"),
        seccomp_filters: number("Seccomp_filters"),
        threads: number("Threads"),
        limits: limits(&proc),
        cgroups: cgroups(&proc),
        mounts: mounts(&proc),
        root_entries: root_entries(&proc),
        interfaces: interfaces(&proc),
        addresses: addresses(&proc),
        record,
        checks: Vec::new(),
    };
    report.checks = checks(&report);
    Ok(report)
}

fn parent_of(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

fn read_link(path: &Path) -> String {
    std::fs::read_link(path)
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn limits(proc: &Path) -> Vec<LimitFact> {
    let text = std::fs::read_to_string(proc.join("limits")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| l.len() > 26)
        .map(|line| {
            let (name, rest) = line.split_at(26);
            let mut fields = rest.split_whitespace();
            let value = |v: Option<&str>| v.and_then(|v| v.parse().ok());
            let soft = value(fields.next());
            let hard = value(fields.next());
            LimitFact {
                name: name.trim().to_owned(),
                soft,
                hard,
                unit: fields.next().unwrap_or("").to_owned(),
            }
        })
        .collect()
}

fn cgroups(proc: &Path) -> Vec<CgroupFact> {
    let text = std::fs::read_to_string(proc.join("cgroup")).unwrap_or_default();
    let root = Path::new(crate::cgroup::DEFAULT_ROOT);
    let unified_root = if root.join("cgroup.controllers").exists() {
        root.to_owned()
    } else {
        root.join("unified")
    };
    let mut facts = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        let (controller, dir, files): (&str, PathBuf, &[&str]) = match controllers {
            "" => (
                "unified",
                unified_root.join(path.trim_start_matches('/')),
                &[
                    "memory.max",
                    "memory.current",
                    "memory.swap.max",
                    "cpu.weight",
                    "pids.max",
                    "pids.current",
                ],
            ),
            c if c.split(',').any(|c| c == "memory") => (
                "memory",
                root.join("memory").join(path.trim_start_matches('/')),
                &[
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                    "memory.max_usage_in_bytes",
                    "memory.failcnt",
                ],
            ),
            c if c.split(',').any(|c| c == "cpu") => (
                "cpu",
                root.join("cpu").join(path.trim_start_matches('/')),
                &["cpu.shares"],
            ),
            c if c.split(',').any(|c| c == "pids") => (
                "pids",
                root.join("pids").join(path.trim_start_matches('/')),
                &["pids.max", "pids.current"],
            ),
            _ => continue,
        };
        let values = files
            .iter()
            .filter_map(|f| {
                std::fs::read_to_string(dir.join(f))
                    .ok()
                    .map(|v| (f.to_string(), v.trim().to_owned()))
            })
            .collect();
        facts.push(CgroupFact {
            controller: controller.to_owned(),
            path: path.to_owned(),
            values,
        });
    }
    facts
}

fn mounts(proc: &Path) -> Vec<MountFact> {
    let text = std::fs::read_to_string(proc.join("mountinfo")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(MountFact {
                path: fields.get(4)?.replace("\\040", " "),
                options: fields.get(5)?.to_string(),
                fstype: fields.get(dash + 1)?.to_string(),
            })
        })
        .collect()
}

fn root_entries(proc: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(proc.join("root"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn interfaces(proc: &Path) -> Vec<String> {
    std::fs::read_to_string(proc.join("net/dev"))
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim().to_owned()))
        .collect()
}

/// Local IPv4 addresses (`/32 host LOCAL` in the fib) and IPv6 addresses.
fn addresses(proc: &Path) -> u32 {
    let v4 = std::fs::read_to_string(proc.join("net/fib_trie"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/32 host LOCAL"))
        .count();
    let v6 = std::fs::read_to_string(proc.join("net/if_inet6"))
        .unwrap_or_default()
        .lines()
        .count();
    (v4 + v6) as u32
}

fn check(id: &str, title: &str, ok: bool, detail: String, why: &str) -> Check {
    Check {
        id: id.to_owned(),
        title: title.to_owned(),
        ok,
        detail,
        why: why.to_owned(),
    }
}

fn checks(r: &SandboxReport) -> Vec<Check> {
    let mut out = Vec::new();
    for (fact, (_, title, why)) in r.namespaces.iter().zip(NAMESPACES) {
        if fact.kind == "cgroup" {
            continue;
        }
        let detail = if fact.own {
            format!("own ({}; kernel's {})", fact.id, fact.caller_id)
        } else {
            format!("shared with the kernel ({})", fact.id)
        };
        out.push(check(
            &format!("namespace.{}", fact.kind),
            title,
            fact.own,
            detail,
            why,
        ));
    }
    let net_own = r.namespaces.iter().any(|n| n.kind == "net" && n.own);
    out.push(check(
        "network.empty",
        "no network",
        net_own && r.addresses == 0 && r.interfaces.iter().all(|i| i == "lo"),
        format!("interfaces {:?}, {} address(es)", r.interfaces, r.addresses),
        "nothing to connect to or listen on, 127.0.0.1 included",
    ));
    out.push(check(
        "root.minimal",
        "minimal root",
        r.namespaces.iter().any(|n| n.kind == "mnt" && n.own)
            && !r.root_entries.iter().any(|e| {
                e == "etc" || e == "root" || e == "home" || e == "var" || e == "run" || e == "boot"
            }),
        format!("/ holds {:?}", r.root_entries),
        "no /etc, /home, /root, /run, /var: no secrets and no sockets to find",
    ));
    let writable: Vec<&MountFact> = r
        .mounts
        .iter()
        .filter(|m| !m.options.split(',').any(|o| o == "ro"))
        .filter(|m| {
            // A private tmpfs, a service's own state dir and device nodes are
            // writable by design: the record says which.
            !r.record.as_ref().is_some_and(|rec| {
                rec.mounts
                    .iter()
                    .any(|rm| rm.writable && Path::new(&m.path) == rm.path)
            })
        })
        .collect();
    out.push(check(
        "root.read_only",
        "read-only filesystem",
        r.namespaces.iter().any(|n| n.kind == "mnt" && n.own) && writable.is_empty(),
        if writable.is_empty() {
            format!(
                "{} mounts, all read-only (but those the spec makes writable)",
                r.mounts.len()
            )
        } else {
            format!(
                "writable: {:?}",
                writable.iter().map(|m| m.path.as_str()).collect::<Vec<_>>()
            )
        },
        "a compromised program cannot plant or alter files",
    ));
    let root_ids = r.uid.contains(&0) || r.gid.contains(&0) || r.uid.is_empty();
    out.push(check(
        "identity",
        "unprivileged uid/gid",
        !root_ids,
        format!("uid {:?} gid {:?} groups {:?}", r.uid, r.gid, r.groups),
        "not root on the host: ordinary file permissions hold against it",
    ));
    let sets = [
        r.cap_effective,
        r.cap_permitted,
        r.cap_inheritable,
        r.cap_ambient,
    ];
    out.push(check(
        "caps.none",
        "no capabilities",
        sets.iter().all(|c| *c == 0),
        format!(
            "CapEff {:016x} CapPrm {:016x} CapInh {:016x} CapAmb {:016x}",
            r.cap_effective, r.cap_permitted, r.cap_inheritable, r.cap_ambient
        ),
        "no privileged operation is possible",
    ));
    out.push(check(
        "caps.bounding",
        "empty bounding set",
        r.cap_bounding == 0,
        format!("CapBnd {:016x}", r.cap_bounding),
        "nothing it executes can ever gain a capability",
    ));
    out.push(check(
        "no_new_privs",
        "no new privileges",
        r.no_new_privs,
        format!("NoNewPrivs {}", u8::from(r.no_new_privs)),
        "setuid binaries and file capabilities grant nothing",
    ));
    let seccomp_detail = match &r.record {
        Some(rec) => format!(
            "Seccomp {} with {} filter(s); kills on {} syscalls incl. execve, ptrace, mount, io_uring_*; refuses {}",
            r.seccomp_mode,
            r.seccomp_filters,
            rec.seccomp.killed.len(),
            rec.seccomp.refused.join(", ")
        ),
        None => format!(
            "Seccomp {} with {} filter(s)",
            r.seccomp_mode, r.seccomp_filters
        ),
    };
    out.push(check(
        "seccomp",
        "seccomp filter",
        r.seccomp_mode == 2 && r.seccomp_filters >= 1,
        seccomp_detail,
        "io_uring, ptrace, mount, new namespaces, exec and non-Unix sockets are out of reach",
    ));
    let (landlock_ok, landlock_detail) = match &r.record {
        Some(rec) if rec.landlock.requested => (
            rec.landlock.status == "fully_enforced" || rec.landlock.status == "partially_enforced",
            format!(
                "{} (ABI {} asked, kernel {}), {} rule(s), scoped: {} [recorded by the launcher: not visible in /proc]",
                rec.landlock.status,
                rec.landlock.requested_abi,
                rec.landlock
                    .kernel_abi
                    .map_or("none".to_owned(), |a| a.to_string()),
                rec.landlock.rules.len(),
                rec.landlock.scoped.join(", ")
            ),
        ),
        Some(_) => (false, "turned off in this sandbox's spec".to_owned()),
        None => (
            false,
            "no launcher record: not started through a sandbox".to_owned(),
        ),
    };
    out.push(check(
        "landlock",
        "Landlock",
        landlock_ok,
        landlock_detail,
        "file access limited to the listed paths even if a mount were wrong",
    ));
    let limit = |name: &str| r.limits.iter().find(|l| l.name == name);
    let core = limit("Max core file size");
    out.push(check(
        "rlimit.core",
        "no core dumps",
        core.is_some_and(|l| l.soft == Some(0) && l.hard == Some(0)),
        format!("RLIMIT_CORE {}", shown(core.and_then(|l| l.hard), "bytes")),
        "a dump would hold customer data",
    ));
    let bounded = |name: &str| limit(name).is_some_and(|l| l.hard.is_some());
    let memory_cgroup = r.cgroups.iter().find(|c| {
        (c.controller == "memory"
            && c.values
                .get("memory.limit_in_bytes")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v < 1 << 50))
            || (c.controller == "unified" && c.values.get("memory.max").is_some_and(|v| v != "max"))
    });
    out.push(check(
        "limit.memory",
        "memory limit",
        memory_cgroup.is_some() || bounded("Max data size") || bounded("Max address space"),
        format!(
            "cgroup {}; RLIMIT_DATA {}; RLIMIT_AS {}",
            memory_cgroup
                .and_then(|c| c
                    .values
                    .get("memory.limit_in_bytes")
                    .or(c.values.get("memory.max"))
                    .and_then(|v| v.parse().ok()))
                .map_or_else(|| "none".into(), |v| shown(Some(v), "bytes")),
            shown(limit("Max data size").and_then(|l| l.hard), "bytes"),
            shown(limit("Max address space").and_then(|l| l.hard), "bytes"),
        ),
        "cannot starve the host or the other brains of memory",
    ));
    let pids_cgroup = r.cgroups.iter().find(|c| {
        (c.controller == "pids" || c.controller == "unified")
            && c.values.get("pids.max").is_some_and(|v| v != "max")
    });
    out.push(check(
        "limit.processes",
        "process limit",
        pids_cgroup.is_some() || bounded("Max processes"),
        format!(
            "pids.max {}; RLIMIT_NPROC {}; RLIMIT_NOFILE {}",
            pids_cgroup
                .and_then(|c| c.values.get("pids.max").cloned())
                .unwrap_or_else(|| "none".into()),
            shown(limit("Max processes").and_then(|l| l.hard), ""),
            shown(limit("Max open files").and_then(|l| l.hard), ""),
        ),
        "a fork bomb stops at its limit",
    ));
    let cpu = r.cgroups.iter().find(|c| {
        (c.controller == "cpu"
            && c.values.contains_key("cpu.shares")
            && !c.path.trim_start_matches('/').is_empty())
            || (c.controller == "unified" && c.values.contains_key("cpu.weight"))
    });
    out.push(check(
        "limit.cpu",
        "CPU share",
        cpu.is_some(),
        cpu.map(|c| {
            format!(
                "{} {}",
                c.path,
                c.values
                    .get("cpu.shares")
                    .map(|v| format!("cpu.shares {v}"))
                    .or(c
                        .values
                        .get("cpu.weight")
                        .map(|v| format!("cpu.weight {v}")))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "no CPU cgroup of its own".into()),
        "a busy brain gets its fair share, not the machine",
    ));
    out
}

/// A limit for a person: `unlimited`, a count, or bytes in MiB.
fn shown(value: Option<u64>, unit: &str) -> String {
    match value {
        None => "unlimited".into(),
        Some(v) if unit == "bytes" && v >= 1 << 20 && v % (1 << 20) == 0 => {
            format!("{} MiB", v >> 20)
        }
        Some(v) => v.to_string(),
    }
}

/// The report as a table for a person, in the spirit of
/// `systemd-analyze security`: one line per check, ✓ or ✗, what was found,
/// and below it why it matters; notices and a score at the end.
pub fn render(report: &SandboxReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let name = report
        .record
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_else(|| "?".into());
    let inside = report
        .nspid
        .last()
        .filter(|_| report.nspid.len() > 1)
        .map(|p| format!(", pid {p} inside"))
        .unwrap_or_default();
    let launcher = report
        .launcher_pid
        .map(|p| format!(", supervised by sios-launch pid {p}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "sandbox of `{name}`: pid {}{inside}{launcher}",
        report.pid
    );
    if let Some(program) = &report.program {
        let _ = writeln!(out, "program {program}, {} thread(s)", report.threads);
    }
    let _ = writeln!(out);
    let width = report
        .checks
        .iter()
        .map(|c| c.title.chars().count())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let mark = if check.ok { "✓" } else { "✗" };
        let _ = writeln!(out, "{mark} {:<width$}  {}", check.title, check.detail);
        let _ = writeln!(out, "  {:<width$}  ↳ {}", "", check.why);
    }
    if let Some(record) = &report.record {
        for notice in &record.notices {
            let _ = writeln!(out, "\nnotice: {notice}");
        }
    }
    let ok = report.checks.iter().filter(|c| c.ok).count();
    let _ = writeln!(out, "\n{ok}/{} enforced", report.checks.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsandboxed_process_fails_the_checks_that_matter() {
        // This test process: host namespaces, no seccomp, no record.
        let report = report(std::process::id()).unwrap();
        assert_eq!(report.pid, std::process::id());
        assert!(report.record.is_none());
        for id in [
            "namespace.net",
            "namespace.user",
            "seccomp",
            "landlock",
            "caps.bounding",
        ] {
            let check = report.check(id).unwrap_or_else(|| panic!("no check {id}"));
            assert!(!check.ok, "{id} should fail here: {check:?}");
        }
        let text = render(&report);
        assert!(text.contains("✗ network namespace"), "{text}");
        assert!(text.contains("enforced"), "{text}");
    }

    #[test]
    fn a_missing_process_is_named() {
        let err = report(u32::MAX - 1).unwrap_err().to_string();
        assert!(err.contains("no process"), "{err}");
    }
}
