//! Brain manifests and the catalog they form.
//!
//! A manifest is one TOML file in the catalog directory (`brains/catalog/`),
//! named after the brain. It says what the brain is for, which ONNX model it
//! runs (pinned by sha256), what tensors it accepts and returns, and the
//! sandbox limits and capabilities it needs. The format is documented in
//! `brains/catalog/README.md`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sios_ipc::{DataType, TensorSpec};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Whether a brain is a subject-matter specialist or a piece of machinery.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum BrainKind {
    /// A subject-matter specialist (legal, clinical, finance, …).
    Domain,
    /// Machinery other brains rely on (embedding, routing, screening, …).
    Operational,
}

/// How sensitive a brain's subject matter is, on the same four levels as a
/// client's clearance in the policy (0 public … 3 restricted): the default
/// policy forbids a domain brain above the caller's clearance.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    Public,
    #[default]
    Internal,
    Confidential,
    Restricted,
}

impl Sensitivity {
    /// The level as the policy sees it.
    pub fn level(self) -> u8 {
        match self {
            Sensitivity::Public => 0,
            Sensitivity::Internal => 1,
            Sensitivity::Confidential => 2,
            Sensitivity::Restricted => 3,
        }
    }
}

/// One brain, as its manifest declares it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Unique name: lowercase letters, digits and dashes; equals the file stem.
    pub name: String,
    pub kind: BrainKind,
    /// One paragraph: what the brain is for.
    pub purpose: String,
    pub model: ModelFile,
    /// How client tensors become model tensors, if not one-to-one.
    #[serde(default)]
    pub preprocess: Option<Preprocess>,
    /// What clients send.
    pub inputs: Vec<TensorSpecToml>,
    /// What the brain returns.
    pub outputs: Vec<TensorSpecToml>,
    /// How sensitive the brain's subject matter is; the policy compares it
    /// with a client's clearance.
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// Names for the positions of classifier outputs: output name → one
    /// label per position of its last axis, in order.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub sandbox: SandboxLimits,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The program that runs this brain: a plain file name in the kernel's
    /// bin directory (never a path), `sios-brain` when absent. Whatever it
    /// names is started through the same launcher and sandbox as every brain;
    /// the field exists so that a test program can stand in for a brain.
    #[serde(default)]
    pub program: Option<String>,
}

/// The program that runs a brain whose manifest names none.
pub const DEFAULT_PROGRAM: &str = "sios-brain";

/// A file pinned by content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Path relative to the models directory.
    pub file: String,
    /// Lowercase hex sha256 of the file's bytes.
    pub sha256: String,
}

/// Pre-processing done inside the brain before the model runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocess {
    /// The single BYTES input is UTF-8 text, tokenised with a Hugging Face
    /// `tokenizer.json` into `input_ids`, `attention_mask` and
    /// `token_type_ids` (INT64, `[batch, sequence]`): truncated to
    /// `max_length` tokens, padded with id 0 to the longest text in the batch.
    Tokenize {
        tokenizer: ModelFile,
        max_length: usize,
    },
    /// The single BYTES input is text that another brain turns into this
    /// brain's model input: the brain host asks `brain` — through the kernel,
    /// so policy and audit apply, and only if `capabilities.calls` names it —
    /// to run on the text, and feeds that brain's output `output` to the
    /// model's only input. Domain specialists use it to stand on the shared
    /// embedding brain instead of carrying an encoder each.
    EmbedVia { brain: String, output: String },
}

/// A tensor declaration as written in TOML (`datatype` as a protocol name).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TensorSpecToml {
    pub name: String,
    /// `FP32`, `INT64`, `BYTES`, …
    pub datatype: String,
    /// Dimensions; `-1` accepts any size.
    pub shape: Vec<i64>,
}

/// Resource limits for the brain's process. Enforced by the launcher.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxLimits {
    /// Memory ceiling in MiB.
    pub memory_mib: u64,
    /// Relative CPU weight (100 = a fair share).
    pub cpu_weight: u32,
    /// Most processes/threads the brain may have.
    pub max_pids: u32,
    /// Most open file descriptors.
    pub max_open_files: u64,
    /// Most rows (the first dimension of its batch inputs) one request may
    /// hold, for a model whose working memory grows with its rows faster
    /// than the kernel's byte bound on a request allows for; the kernel
    /// refuses more. Absent: only that byte bound applies.
    pub max_rows: Option<u64>,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_mib: 512,
            cpu_weight: 100,
            max_pids: 32,
            max_open_files: 64,
            max_rows: None,
        }
    }
}

/// What the brain may ask the kernel for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// Brains it may call (through the kernel).
    pub calls: Vec<String>,
    /// Memory namespaces it may read and write (through the kernel).
    pub memory_namespaces: Vec<String>,
}

/// Why a manifest or catalog could not be used. Each names the file.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid brain manifest: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("brain name `{name}` appears in both {first} and {second}; names must be unique")]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "{path} has sha256 {actual}, but the manifest pins {expected}: the file is not the one this brain was \
         built and reviewed with. Refusing to load it. Rebuild the models (deploy/setup.sh) or, if the new model is \
         intended, update the manifest's sha256"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "no brain manifests (*.toml) in {0}; point catalog_dir at the brains/catalog directory"
    )]
    EmptyCatalog(PathBuf),
    #[error(
        "brain `{brain}` names program `{program}`, but {path} is not a file: install the program in the \
         kernel's bin directory (next to sios-kernel) or remove `program` from the manifest to run sios-brain"
    )]
    MissingProgram {
        brain: String,
        program: String,
        path: PathBuf,
    },
}

impl Manifest {
    /// Reads and checks one manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        manifest.check(path)?;
        Ok(manifest)
    }

    fn check(&self, path: &Path) -> Result<(), ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            path: path.to_owned(),
            message,
        };
        if !is_valid_name(&self.name) {
            return Err(invalid(format!(
                "brain name `{}` must be 1-64 characters of a-z, 0-9 and '-'",
                self.name
            )));
        }
        if path.file_stem().and_then(|s| s.to_str()) != Some(self.name.as_str()) {
            return Err(invalid(format!(
                "the file must be named after the brain: {}.toml",
                self.name
            )));
        }
        for pinned in std::iter::once(&self.model).chain(self.tokenizer()) {
            if pinned.sha256.len() != 64
                || !pinned
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(invalid(format!(
                    "sha256 of {} must be 64 lowercase hex digits",
                    pinned.file
                )));
            }
            if Path::new(&pinned.file)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(invalid(format!(
                    "model file `{}` must be a plain relative path inside the models directory",
                    pinned.file
                )));
            }
        }
        for spec in self.inputs.iter().chain(&self.outputs) {
            if DataType::from_protocol_name(&spec.datatype).is_none() {
                return Err(invalid(format!(
                    "tensor `{}` has unknown datatype `{}`; use BOOL, UINT8, INT8, INT32, INT64, FP32, FP64 or BYTES",
                    spec.name, spec.datatype
                )));
            }
            if spec.shape.iter().any(|&d| d < -1) {
                return Err(invalid(format!(
                    "tensor `{}` has a dimension below -1",
                    spec.name
                )));
            }
        }
        if let Some(program) = &self.program
            && !is_plain_file_name(program)
        {
            return Err(invalid(format!(
                "program `{program}` must be a plain file name (letters, digits, '.', '_', '-'; no '/', \
                 not starting with '.'): it is looked up only in the kernel's bin directory"
            )));
        }
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err(invalid(
                "a brain declares at least one input and one output".into(),
            ));
        }
        for (output, labels) in &self.labels {
            let Some(spec) = self.outputs.iter().find(|o| &o.name == output) else {
                return Err(invalid(format!(
                    "[labels] names `{output}`, which is not a declared output"
                )));
            };
            match spec.shape.last() {
                Some(&n) if n >= 0 && n as usize != labels.len() => {
                    return Err(invalid(format!(
                        "[labels] gives {} labels for `{output}`, whose last axis has {n} positions",
                        labels.len()
                    )));
                }
                None => return Err(invalid(format!("[labels] names `{output}`, a scalar"))),
                _ => {}
            }
        }
        if let Some(Preprocess::Tokenize { max_length, .. }) = &self.preprocess {
            let one_text_input =
                self.inputs.len() == 1 && self.inputs[0].datatype.eq_ignore_ascii_case("BYTES");
            if !one_text_input {
                return Err(invalid(
                    "a tokenising brain declares exactly one BYTES input".into(),
                ));
            }
            if *max_length == 0 {
                return Err(invalid("preprocess.max_length must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// The name of the program that runs this brain.
    pub fn program_name(&self) -> &str {
        self.program.as_deref().unwrap_or(DEFAULT_PROGRAM)
    }

    /// The program that runs this brain, resolved in the kernel's bin
    /// directory `bin_dir` and nowhere else; refused unless it is a file there.
    pub fn program_path(&self, bin_dir: &Path) -> Result<PathBuf, ManifestError> {
        let program = self.program_name();
        // `check` refuses anything else for a loaded manifest; this guards a
        // manifest built in code, which never went through it.
        let path = bin_dir.join(program);
        if !is_plain_file_name(program) || !path.is_file() {
            return Err(ManifestError::MissingProgram {
                brain: self.name.clone(),
                program: program.to_owned(),
                path,
            });
        }
        Ok(path)
    }

    /// The brain whose output feeds this one, if any (`EmbedVia`).
    pub fn upstream(&self) -> Option<(&str, &str)> {
        match &self.preprocess {
            Some(Preprocess::EmbedVia { brain, output }) => Some((brain, output)),
            _ => None,
        }
    }

    /// The tokenizer file, if this brain tokenises.
    pub fn tokenizer(&self) -> Option<&ModelFile> {
        match &self.preprocess {
            Some(Preprocess::Tokenize { tokenizer, .. }) => Some(tokenizer),
            _ => None,
        }
    }

    /// Declared inputs as wire specs.
    pub fn input_specs(&self) -> Vec<TensorSpec> {
        to_specs(&self.inputs)
    }

    /// Declared outputs as wire specs.
    pub fn output_specs(&self) -> Vec<TensorSpec> {
        to_specs(&self.outputs)
    }
}

fn to_specs(specs: &[TensorSpecToml]) -> Vec<TensorSpec> {
    specs
        .iter()
        .map(|s| TensorSpec {
            name: s.name.clone(),
            // Checked in `Manifest::check`.
            datatype: DataType::from_protocol_name(&s.datatype).unwrap_or(DataType::Bytes),
            shape: s.shape.clone(),
        })
        .collect()
}

/// True for names of 1-64 characters of `a-z`, `0-9` and `-`, not starting with `-`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// True for a file name that cannot leave the directory it is joined to:
/// 1-64 characters of ASCII letters, digits, `.`, `_` and `-`, not starting
/// with `.` (which also rules out `.` and `..`).
fn is_plain_file_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Loads every `*.toml` manifest in `dir`, sorted by brain name.
pub fn load_catalog(dir: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut manifests: Vec<(Manifest, PathBuf)> = Vec::new();
    for path in paths {
        let manifest = Manifest::load(&path)?;
        if let Some((_, first)) = manifests.iter().find(|(m, _)| m.name == manifest.name) {
            return Err(ManifestError::DuplicateName {
                name: manifest.name,
                first: first.clone(),
                second: path,
            });
        }
        manifests.push((manifest, path));
    }
    if manifests.is_empty() {
        return Err(ManifestError::EmptyCatalog(dir.to_owned()));
    }
    manifests.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(manifests.into_iter().map(|(m, _)| m).collect())
}

/// The sha256 of a file's bytes, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Reads the pinned file under `dir` and refuses it unless its sha256 matches.
/// Returns the bytes that were checked, so the caller loads exactly those
/// (no window for the file to change between check and use).
pub fn read_verified(dir: &Path, pinned: &ModelFile) -> Result<Vec<u8>, ManifestError> {
    let path = dir.join(&pinned.file);
    let bytes = fs::read(&path).map_err(|source| ManifestError::Read {
        path: path.clone(),
        source,
    })?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != pinned.sha256 {
        return Err(ManifestError::HashMismatch {
            path,
            expected: pinned.sha256.clone(),
            actual,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name = "echo"
kind = "operational"
purpose = "test"
[model]
file = "echo.onnx"
sha256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
[[inputs]]
name = "x"
datatype = "FP32"
shape = [-1, 4]
[[outputs]]
name = "y"
datatype = "FP32"
shape = [-1, 4]
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_a_catalog_and_exposes_specs() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "echo", EXAMPLE);
        let catalog = load_catalog(dir.path()).unwrap();
        assert_eq!(catalog.len(), 1);
        assert_eq!(catalog[0].input_specs()[0].datatype, DataType::Fp32);
        assert_eq!(catalog[0].sandbox, SandboxLimits::default());
    }

    #[test]
    fn refuses_bad_manifests_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "other", EXAMPLE);
        let err = Manifest::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("other.toml") && err.contains("echo.toml"),
            "{err}"
        );

        let bad_type = EXAMPLE.replace(
            "datatype = \"FP32\"\nshape = [-1, 4]\n[[outputs]]",
            "datatype = \"FLOAT\"\nshape = [-1, 4]\n[[outputs]]",
        );
        let path = write(dir.path(), "echo", &bad_type);
        assert!(
            Manifest::load(&path)
                .unwrap_err()
                .to_string()
                .contains("unknown datatype `FLOAT`")
        );

        let escape = EXAMPLE.replace("echo.onnx", "../../etc/passwd");
        let path = write(dir.path(), "echo", &escape);
        assert!(
            Manifest::load(&path)
                .unwrap_err()
                .to_string()
                .contains("plain relative path")
        );

        let unknown_field = format!("{EXAMPLE}\nsurprise = 1\n");
        let path = write(dir.path(), "echo", &unknown_field);
        assert!(matches!(
            Manifest::load(&path),
            Err(ManifestError::Parse { .. })
        ));
    }

    #[test]
    fn labels_must_name_a_declared_output_and_fit_its_last_axis() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!("{EXAMPLE}[labels]\ny = [\"a\", \"b\", \"c\", \"d\"]\n").replace(
            "purpose = \"test\"",
            "purpose = \"test\"\nsensitivity = \"restricted\"",
        );
        let manifest = Manifest::load(&write(dir.path(), "echo", &good)).unwrap();
        assert_eq!(manifest.sensitivity, Sensitivity::Restricted);
        assert_eq!(manifest.labels["y"].len(), 4);
        let short = format!("{EXAMPLE}[labels]\ny = [\"a\"]\n");
        let err = Manifest::load(&write(dir.path(), "echo", &short))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gives 1 labels for `y`, whose last axis has 4"),
            "{err}"
        );
        let unknown = format!("{EXAMPLE}[labels]\nz = [\"a\"]\n");
        let err = Manifest::load(&write(dir.path(), "echo", &unknown))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a declared output"), "{err}");
    }

    #[test]
    fn program_is_a_plain_name_resolved_only_in_the_bin_dir() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("sios-brain"), b"").unwrap();
        fs::write(bin.join("sios-hostile-brain"), b"").unwrap();

        let default = Manifest::load(&write(dir.path(), "echo", EXAMPLE)).unwrap();
        assert_eq!(default.program_name(), "sios-brain");
        assert_eq!(default.program_path(&bin).unwrap(), bin.join("sios-brain"));

        let named = EXAMPLE.replace(
            "purpose = \"test\"",
            "purpose = \"test\"\nprogram = \"sios-hostile-brain\"",
        );
        let manifest = Manifest::load(&write(dir.path(), "echo", &named)).unwrap();
        assert_eq!(
            manifest.program_path(&bin).unwrap(),
            bin.join("sios-hostile-brain")
        );

        for bad in [
            "/bin/sh",
            "../sios-brain",
            "..",
            ".",
            "sub/sios-brain",
            ".hidden",
            "",
        ] {
            let text = EXAMPLE.replace(
                "purpose = \"test\"",
                &format!("purpose = \"test\"\nprogram = {bad:?}"),
            );
            let err = Manifest::load(&write(dir.path(), "echo", &text))
                .unwrap_err()
                .to_string();
            assert!(err.contains("must be a plain file name"), "{bad}: {err}");
        }

        let absent = EXAMPLE.replace(
            "purpose = \"test\"",
            "purpose = \"test\"\nprogram = \"sios-nothing\"",
        );
        let manifest = Manifest::load(&write(dir.path(), "echo", &absent)).unwrap();
        let err = manifest.program_path(&bin).unwrap_err();
        assert!(matches!(err, ManifestError::MissingProgram { .. }), "{err}");
        assert!(err.to_string().contains("sios-nothing"), "{err}");
        // A directory of that name is not a program either.
        fs::create_dir(bin.join("sios-nothing")).unwrap();
        assert!(manifest.program_path(&bin).is_err());
    }

    #[test]
    fn hash_mismatch_is_refused_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("echo.onnx"), b"hello").unwrap();
        let good = ModelFile {
            file: "echo.onnx".into(),
            sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into(),
        };
        assert_eq!(read_verified(dir.path(), &good).unwrap(), b"hello");
        fs::write(dir.path().join("echo.onnx"), b"hellO").unwrap();
        let err = read_verified(dir.path(), &good).unwrap_err();
        assert!(matches!(err, ManifestError::HashMismatch { .. }));
        assert!(err.to_string().contains("Refusing to load it"));
    }
}
