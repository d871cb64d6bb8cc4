//! Which shared libraries a program needs, so that the sandbox's root holds
//! those and nothing else of the host's /lib.
//!
//! Reads the ELF program headers of each object (no code runs, unlike
//! `ldd`): the interpreter (`PT_INTERP`), the `DT_NEEDED` names, `DT_RUNPATH`
//! / `DT_RPATH` (with `$ORIGIN`), then searches the same directories, in the
//! same order, as the dynamic loader does without `/etc/ld.so.cache` (which
//! the sandbox does not have): run path, then the multiarch and classic
//! system directories. Each library is reported at the path where it was
//! found, which is where the loader inside the sandbox will look first. Only
//! 64-bit little-endian ELF (x86_64, aarch64) is understood.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Why an object's dependencies could not be worked out.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ElfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a 64-bit little-endian ELF file ({why}); the sandbox can only run ELF programs"
    )]
    NotElf { path: PathBuf, why: &'static str },
    #[error(
        "{path} needs {name}, which is in none of {searched:?}; install it or add its directory to the library's run path"
    )]
    NotFound {
        path: PathBuf,
        name: String,
        searched: Vec<PathBuf>,
    },
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
const DT_STRTAB: i64 = 5;
const DT_STRSZ: i64 = 10;
const DT_RPATH: i64 = 15;
const DT_RUNPATH: i64 = 29;

/// What one object declares.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Object {
    pub interpreter: Option<PathBuf>,
    pub needed: Vec<String>,
    /// `DT_RUNPATH`, or `DT_RPATH` when there is no run path, split on `:`.
    pub run_path: Vec<String>,
}

/// The loader's default directories, in its order, for this architecture.
pub fn system_dirs() -> Vec<PathBuf> {
    let triple = format!("{}-linux-gnu", std::env::consts::ARCH);
    [
        format!("/lib/{triple}"),
        format!("/usr/lib/{triple}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// Every file the loader will open to run `objects` (the program and the
/// libraries it dlopens): their interpreters and all their libraries,
/// transitively, each at the path where the loader will find it. Does not
/// include `objects` themselves.
pub fn dependencies(objects: &[PathBuf]) -> Result<BTreeSet<PathBuf>, ElfError> {
    let defaults = system_dirs();
    let mut found = BTreeSet::new();
    let mut seen_names = BTreeSet::new();
    let mut queue: Vec<PathBuf> = objects.to_vec();
    while let Some(path) = queue.pop() {
        let object = read(&path)?;
        if let Some(interp) = object.interpreter
            && found.insert(interp.clone())
        {
            // The loader itself needs nothing, but read it to be sure it exists.
            read(&interp)?;
        }
        let origin = path.parent().unwrap_or(Path::new("/")).to_owned();
        for name in object.needed {
            if name.contains('/') {
                let lib = PathBuf::from(&name);
                if found.insert(lib.clone()) {
                    queue.push(lib);
                }
                continue;
            }
            let mut searched: Vec<PathBuf> = object
                .run_path
                .iter()
                .map(|dir| {
                    PathBuf::from(
                        dir.replace("${ORIGIN}", "$ORIGIN")
                            .replace("$ORIGIN", &origin.to_string_lossy()),
                    )
                })
                .collect();
            searched.extend(defaults.iter().cloned());
            let Some(lib) = searched.iter().map(|d| d.join(&name)).find(|p| p.is_file()) else {
                return Err(ElfError::NotFound {
                    path,
                    name,
                    searched,
                });
            };
            if seen_names.insert(name) && found.insert(lib.clone()) {
                queue.push(lib);
            }
        }
    }
    Ok(found)
}

/// Reads the dynamic section of one object.
pub fn read(path: &Path) -> Result<Object, ElfError> {
    let err = |source| ElfError::Read {
        path: path.to_owned(),
        source,
    };
    let not_elf = |why| ElfError::NotElf {
        path: path.to_owned(),
        why,
    };
    let file = File::open(path).map_err(err)?;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            not_elf("too short")
        } else {
            err(e)
        }
    })?;
    if header[..4] != *b"\x7fELF" {
        return Err(not_elf("no ELF magic"));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(not_elf("not ELFCLASS64/ELFDATA2LSB"));
    }
    let phoff = u64_at(&header, 0x20);
    let phentsize = u64::from(u16_at(&header, 0x36));
    let phnum = u64::from(u16_at(&header, 0x38));
    if phentsize < 56 || phnum > 4096 {
        return Err(not_elf("bad program header table"));
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    file.read_exact_at(&mut table, phoff).map_err(err)?;

    // (vaddr, offset, filesz) of each PT_LOAD, to turn addresses into offsets.
    let mut loads = Vec::new();
    let mut dynamic = None;
    let mut object = Object::default();
    for i in 0..phnum as usize {
        let ph = &table[i * phentsize as usize..][..56];
        let kind = u32_at(ph, 0);
        let offset = u64_at(ph, 8);
        let vaddr = u64_at(ph, 16);
        let filesz = u64_at(ph, 32);
        match kind {
            PT_LOAD => loads.push((vaddr, offset, filesz)),
            PT_DYNAMIC => dynamic = Some((offset, filesz)),
            PT_INTERP => {
                if filesz > 4096 {
                    return Err(not_elf("oversized PT_INTERP"));
                }
                let mut buf = vec![0u8; filesz as usize];
                file.read_exact_at(&mut buf, offset).map_err(err)?;
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                object.interpreter = Some(PathBuf::from(
                    String::from_utf8_lossy(&buf[..end]).into_owned(),
                ));
            }
            _ => {}
        }
    }
    // A static executable: nothing more to load.
    let Some((dyn_offset, dyn_size)) = dynamic else {
        return Ok(object);
    };
    if dyn_size > 1 << 20 {
        return Err(not_elf("oversized PT_DYNAMIC"));
    }
    let mut entries = vec![0u8; dyn_size as usize];
    file.read_exact_at(&mut entries, dyn_offset).map_err(err)?;
    let (mut strtab, mut strsz) = (None, 0u64);
    let mut needed = Vec::new();
    let (mut rpath, mut runpath) = (None, None);
    for entry in entries.chunks_exact(16) {
        let tag = u64_at(entry, 0) as i64;
        let value = u64_at(entry, 8);
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed.push(value),
            DT_STRTAB => strtab = Some(value),
            DT_STRSZ => strsz = value,
            DT_RPATH => rpath = Some(value),
            DT_RUNPATH => runpath = Some(value),
            _ => {}
        }
    }
    let Some(strtab) = strtab else {
        return Ok(object);
    };
    let strtab_offset = loads
        .iter()
        .find(|(vaddr, _, size)| strtab >= *vaddr && strtab < vaddr + size)
        .map(|(vaddr, offset, _)| strtab - vaddr + offset)
        .ok_or_else(|| not_elf("DT_STRTAB outside every PT_LOAD"))?;
    if strsz == 0 || strsz > 64 << 20 {
        return Err(not_elf("bad DT_STRSZ"));
    }
    let mut strings = vec![0u8; strsz as usize];
    file.read_exact_at(&mut strings, strtab_offset)
        .map_err(err)?;
    let string = |at: u64| -> Result<String, ElfError> {
        let tail = strings
            .get(at as usize..)
            .ok_or_else(|| not_elf("string outside DT_STRTAB"))?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
    };
    for at in needed {
        object.needed.push(string(at)?);
    }
    // The loader ignores DT_RPATH when DT_RUNPATH is present.
    if let Some(at) = runpath.or(rpath) {
        object.run_path = string(at)?
            .split(':')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
    }
    Ok(object)
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_needs_libc_and_the_loader() {
        let me = std::env::current_exe().unwrap();
        let object = read(&me).unwrap();
        assert!(object.interpreter.is_some(), "{object:?}");
        assert!(object.needed.iter().any(|n| n == "libc.so.6"), "{object:?}");
        let deps = dependencies(&[me]).unwrap();
        assert!(deps.iter().any(|p| p.ends_with("libc.so.6")), "{deps:?}");
        assert!(deps.contains(&object.interpreter.unwrap()));
    }

    #[test]
    fn a_text_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let err = read(&script).unwrap_err().to_string();
        assert!(
            err.contains("run.sh") && err.contains("not a 64-bit"),
            "{err}"
        );
    }

    #[test]
    fn onnx_runtime_needs_libstdcxx_when_it_is_built() {
        let ort =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../build/lib/libonnxruntime.so.1.32.0");
        if !ort.exists() {
            eprintln!("SKIPPED: {} missing (deploy/setup.sh)", ort.display());
            return;
        }
        let object = read(&ort).unwrap();
        assert_eq!(object.run_path, vec!["$ORIGIN".to_string()]);
        let deps = dependencies(&[ort]).unwrap();
        assert!(
            deps.iter().any(|p| p.ends_with("libstdc++.so.6")),
            "{deps:?}"
        );
    }
}
