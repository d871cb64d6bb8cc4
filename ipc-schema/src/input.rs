//! Reading what an operator names as input (a file, or `-` for standard
//! input) without reading more than the command can use: a request file,
//! key or proof typed as `/dev/zero`, a disk, or a log of gigabytes is
//! refused once the bound is passed, instead of filling the process's
//! memory first.

use std::io::Read as _;
use std::path::Path;

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {what}: {source}")]
    Unreadable {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is larger than {}, more than {use_}", in_units(*limit))]
    TooLarge {
        what: String,
        limit: usize,
        use_: &'static str,
    },
}

/// "16 MiB", "64 KiB", "100 bytes".
fn in_units(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The bytes of `path` (standard input for `-`), at most `limit` of them;
/// past that, [`InputError::TooLarge`], which says it is more than `use_`
/// ("a request can carry").
pub fn read_at_most(path: &Path, limit: usize, use_: &'static str) -> Result<Vec<u8>, InputError> {
    let what = if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let unreadable = |source| InputError::Unreadable {
        what: what.clone(),
        source,
    };
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path)
            .map_err(unreadable)?
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
    };
    read.map_err(unreadable)?;
    if bytes.len() > limit {
        return Err(InputError::TooLarge { what, limit, use_ });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_input_is_refused_at_the_bound() {
        let err = read_at_most(Path::new("/dev/zero"), 1 << 20, "a request can carry").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero is larger than 1 MiB, more than a request can carry"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("exact");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
        assert_eq!(read_at_most(&file, 1 << 20, "x").unwrap().len(), 1 << 20);
        assert!(matches!(
            read_at_most(&dir.path().join("missing"), 1, "x"),
            Err(InputError::Unreadable { .. })
        ));
    }
}
