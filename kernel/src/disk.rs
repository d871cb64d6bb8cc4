//! Room left for the state directory, for `sios status`: the audit log and
//! memory grow there, and when it is full every action is refused (sios
//! does not act unrecorded). Warning before that happens is the point.

use sios_ipc::{DiskSpace, human_bytes};
use std::path::Path;

/// Free space counts as low below this, or below a tenth of a small disk.
pub const LOW_BYTES: u64 = 1 << 30;

/// The room on the filesystem holding `dir`, with a warning when it is low;
/// `None` if it cannot be read.
pub fn space(dir: &Path) -> Option<DiskSpace> {
    let stats = nix::sys::statvfs::statvfs(dir).ok()?;
    let unit = stats.fragment_size();
    Some(assess(
        dir,
        stats.blocks_available().saturating_mul(unit),
        stats.blocks().saturating_mul(unit),
    ))
}

fn assess(dir: &Path, free_bytes: u64, total_bytes: u64) -> DiskSpace {
    let low = LOW_BYTES.min(total_bytes / 10);
    let warning = (free_bytes < low).then(|| {
        format!(
            "only {} free on the disk holding {}: when the audit log cannot grow, every \
             action is refused; free space there, or move the state directory to a larger disk",
            human_bytes(free_bytes),
            dir.display()
        )
    });
    DiskSpace {
        free_bytes,
        total_bytes,
        warning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_means_under_a_gibibyte_or_a_tenth_of_a_small_disk() {
        let dir = Path::new("/var/lib/sios");
        let big = 500 << 30;
        assert!(assess(dir, 2 << 30, big).warning.is_none());
        let warned = assess(dir, 512 << 20, big).warning.unwrap();
        assert!(
            warned.contains("512.0 MiB") && warned.contains("/var/lib/sios"),
            "{warned}"
        );
        // A 100 MiB disk: low under 10 MiB, not under 1 GiB.
        assert!(assess(dir, 20 << 20, 100 << 20).warning.is_none());
        assert!(assess(dir, 5 << 20, 100 << 20).warning.is_some());
    }

    #[test]
    fn the_state_directory_s_disk_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let room = space(dir.path()).unwrap();
        assert!(room.total_bytes > 0 && room.free_bytes <= room.total_bytes);
        assert!(space(&dir.path().join("missing")).is_none());
    }
}
