//! Why a policy could not be loaded, in words an operator can act on.
//!
//! Every problem names the file, the line and the column it was found at (when
//! Cedar reports a place), what is wrong, and often what to do about it. A
//! policy with any problem is refused as a whole; the caller keeps whatever
//! policy it had.

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// How bad a problem is. sios refuses both: Cedar's validator only *warns*
/// about a policy that can never apply, which is almost always a mistake.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with a policy or schema file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file as it was named to the loader (a path, or a test's name).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
    pub severity: Severity,
    pub message: String,
    /// What to do about it, when there is something to say.
    pub help: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning (refused)",
        };
        write!(f, ": {sev}: {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n    help: {help}")?;
        }
        Ok(())
    }
}

/// Why loading a policy failed.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{dir} holds no policy files (*.cedar); an empty policy would deny everything, \
         operators included, so it is refused"
    )]
    NoPolicies { dir: PathBuf },
    /// A file was named where the policy's directory belongs: a policy is
    /// every `*.cedar` file of a directory, with its schema, loaded as one.
    #[error(
        "{path} is a file, not a policy directory: name the directory that holds every \
         *.cedar file of the policy (and its sios.cedarschema, if any), e.g. `{}`; the \
         policy is all of them together, so one file alone would replace the rest",
        .path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")).display()
    )]
    NotADirectory { path: PathBuf },
    #[error("{}", refused(.problems))]
    Refused { problems: Vec<Problem> },
    #[error(
        "the policy text hashes to {actual}, not to the recorded {expected}: \
         the stored policy or its schema is not the one that was activated"
    )]
    HashMismatch { expected: String, actual: String },
}

fn refused(problems: &[Problem]) -> String {
    let mut s = format!(
        "policy refused, {} problem{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  ");
        s.push_str(&p.to_string().replace('\n', "\n  "));
    }
    s
}

impl PolicyError {
    /// The individual problems, for a refused policy.
    pub fn problems(&self) -> &[Problem] {
        match self {
            PolicyError::Refused { problems } => problems,
            _ => &[],
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// A problem from a Cedar diagnostic, placed by its first label in `text`.
pub(crate) fn from_diagnostic(
    file: &str,
    text: &str,
    severity: Severity,
    diag: &dyn Diagnostic,
    message: String,
) -> Problem {
    let mut spans: Vec<(usize, Option<String>)> = diag
        .labels()
        .map(|labels| {
            labels
                .map(|l| (l.offset(), l.label().map(str::to_owned)))
                .collect()
        })
        .unwrap_or_default();
    spans.sort();
    let (line, column, label) = match spans.into_iter().next() {
        Some((offset, label)) => {
            let (l, c) = line_col(text, offset);
            (Some(l), Some(c), label)
        }
        None => (None, None, None),
    };
    let mut message = message;
    if let Some(label) = label.filter(|l| !l.is_empty() && !message.contains(l.as_str())) {
        message.push_str(&format!(" ({label})"));
    }
    Problem {
        file: file.to_owned(),
        line,
        column,
        severity,
        message,
        help: diag.help().map(|h| h.to_string()),
    }
}
