//! What the run measures of the system: the directory's allocated bytes,
//! the live bytes of a closed database (read with sled), sled's segment
//! size, and the process's memory.

use std::path::Path;
use std::time::{Duration, Instant};

/// Allocated bytes of every file under `dir` (what `du` counts).
pub fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// The segment size recorded in an existing database's `conf` file.
pub(super) fn existing_segment_size(dir: &Path) -> Option<usize> {
    // The file ends with a binary checksum: not valid UTF-8 as a whole.
    let bytes = std::fs::read(dir.join("conf")).ok()?;
    String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|value| value.trim().parse().ok())
}

/// Keys + values of every tree of the (closed) database in `dir`.
pub(super) fn live_bytes(dir: &Path) -> u64 {
    let mut config = sled::Config::new().path(dir);
    if let Some(segment) = existing_segment_size(dir) {
        config = config.segment_size(segment);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match config.open() {
            Ok(db) => break db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => {
                eprintln!(
                    "soak: could not reopen {} with sled: {error}",
                    dir.display()
                );
                return 0;
            }
        }
    };
    let mut bytes = 0u64;
    for name in db.tree_names() {
        let Ok(tree) = db.open_tree(&name) else {
            continue;
        };
        for (key, value) in tree.iter().flatten() {
            bytes += (key.len() + value.len()) as u64;
        }
    }
    bytes
}

/// A `/proc/self/status` field in kB (`VmRSS:`, `VmHWM:`), in bytes.
pub(super) fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .map_or(0, |kib: u64| kib * 1024)
}
