//! Stable storage for every file sled writes.
//!
//! sled's own flush ends with `sync_file_range` (sled#1452), which does not
//! reach stable storage on every file system and never covers metadata. It
//! also writes pages larger than a quarter of a segment to separate files
//! under `blobs/` and never syncs those or the directories that name them.
//! [`DurableFiles::sync`] completes a flush: `fdatasync` of the data file,
//! of every blob file not synced before, and of the `blobs/` directory when
//! blob files appeared. Opening syncs everything once (the configuration
//! file, the data file, snapshots, blobs and both directories), so files
//! sled created before idemflow took over are covered too.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The files of one database directory and which blob files are synced.
pub(crate) struct DurableFiles {
    root: PathBuf,
    data_file: File,
    synced_blobs: HashSet<OsString>,
}

impl DurableFiles {
    /// Opens the data file of the database in `root` and syncs every file
    /// and directory there once.
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        let data_file = File::open(root.join("db"))?;
        let mut files = DurableFiles {
            root: root.to_owned(),
            data_file,
            synced_blobs: HashSet::new(),
        };
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                sync_file(&entry.path())?;
            }
        }
        files.sync_new_blobs()?;
        sync_directory(&root.join("blobs"))?;
        sync_directory(root)?;
        Ok(files)
    }

    /// Makes what sled flushed durable: the data file, new blob files and,
    /// when blob files appeared, their directory.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.data_file.sync_data()?;
        if self.sync_new_blobs()? {
            sync_directory(&self.root.join("blobs"))?;
        }
        Ok(())
    }

    /// Syncs blob files not synced before; returns whether there were any.
    /// Blob files are written once and never changed (sled names each after
    /// the log sequence number it replaces), so syncing each once suffices.
    fn sync_new_blobs(&mut self) -> io::Result<bool> {
        let directory = self.root.join("blobs");
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let mut present = HashSet::new();
        let mut synced_any = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                match sync_file(&entry.path()) {
                    Ok(()) => synced_any = true,
                    // sled removed it meanwhile (its page was rewritten).
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                }
            }
            present.insert(name);
        }
        // Forget removed blobs, so the set stays as small as the directory.
        self.synced_blobs = present;
        Ok(synced_any)
    }
}

fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub(crate) fn sync_directory(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        match File::open(path) {
            Ok(directory) => directory.sync_all(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// The segment size an existing database was created with (sled refuses to
/// open it with another), read from sled's `conf` file; `None` for a new one.
pub(crate) fn existing_segment_size(root: &Path) -> Option<usize> {
    let bytes = std::fs::read(root.join("conf")).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .find_map(|line| line.strip_prefix("segment_size: "))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_segment_size_of_an_existing_database() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(existing_segment_size(dir.path()), None);
        std::fs::write(
            dir.path().join("conf"),
            b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n\x01\x02\x03\x04",
        )
        .unwrap();
        assert_eq!(existing_segment_size(dir.path()), Some(524288));
    }
}
