//! Stable storage for every file sled writes.
//!
//! sled's own flush ends with `sync_file_range` (sled#1452), which does not
//! reach stable storage on every file system and never covers metadata. It
//! also writes pages larger than a quarter of a segment to separate files
//! under `blobs/` and never syncs those or the directories that name them.
//! [`DurableFiles::sync`] completes a flush: `fdatasync` of the data file,
//! of every blob file not synced before (or that grew since: sled may still
//! have been writing it), and of the `blobs/` directory when blob files
//! appeared. Opening syncs everything once (the configuration file, the data
//! file, snapshots, blobs, both directories and the parent of the database
//! directory, whose entry sled creates when the directory is new), so files
//! sled created before idemflow took over are covered too.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The files of one database directory and which blob files are synced.
pub(crate) struct DurableFiles {
    root: PathBuf,
    data_file: File,
    /// Blob files synced, with their length then.
    synced_blobs: HashMap<OsString, u64>,
}

impl DurableFiles {
    /// Opens the data file of the database in `root` and syncs every file
    /// and directory there once.
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        let data_file = File::open(root.join("db"))?;
        let mut files = DurableFiles {
            root: root.to_owned(),
            data_file,
            synced_blobs: HashMap::new(),
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
        sync_parent(root)?;
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

    /// Syncs blob files not synced before, and blob files that grew since
    /// they were synced; returns whether new blob files appeared.
    ///
    /// sled creates a blob file and then appends its content to it, on the
    /// thread that logs the page: the writer's, or a caller's or reader's
    /// whose tree traversal completes a node split. So the writer may find a
    /// blob file that is still being written (empty, or half written); its
    /// length is taken before syncing, and a file whose length changed is
    /// synced again. Once complete, a blob file never changes (sled names
    /// each after the log sequence number it replaces).
    fn sync_new_blobs(&mut self) -> io::Result<bool> {
        let directory = self.root.join("blobs");
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let mut present = HashMap::new();
        let mut new_files = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let length = match entry.metadata() {
                Ok(metadata) => metadata.len(),
                // sled removed it meanwhile (its page was rewritten).
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let synced = self.synced_blobs.get(&name).copied();
            if synced != Some(length) {
                match sync_file(&entry.path()) {
                    Ok(()) => new_files |= synced.is_none(),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                    Err(error) => return Err(error),
                }
            }
            present.insert(name, length);
        }
        // Forget removed blobs, so the map stays as small as the directory.
        self.synced_blobs = present;
        Ok(new_files)
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

/// Makes the database directory's own entry durable: sled creates the
/// directory when it does not exist, and that entry lives in the parent.
/// A parent this process may not read cannot be opened to sync it; that is
/// left as it is rather than refusing to open the database.
fn sync_parent(root: &Path) -> io::Result<()> {
    let root = root.canonicalize()?;
    let Some(parent) = root.parent() else {
        return Ok(());
    };
    match sync_directory(parent) {
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
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

    /// sled creates a blob file, then writes it, possibly on another thread
    /// while the writer syncs: a blob found half written is synced again
    /// once it grew (`tests/durable_files.rs` caught one synced empty and
    /// never again).
    #[test]
    fn a_blob_file_that_grew_since_its_sync_is_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        let blob = dir.path().join("blobs").join("4340576");
        let mut files = DurableFiles::open(dir.path()).unwrap();
        std::fs::write(&blob, b"").unwrap();
        assert!(files.sync_new_blobs().unwrap(), "a new blob file");
        assert_eq!(files.synced_blobs.get(blob.file_name().unwrap()), Some(&0));
        std::fs::write(&blob, b"crc, kind and the page").unwrap();
        assert!(
            !files.sync_new_blobs().unwrap(),
            "no new file: no directory sync"
        );
        assert_eq!(files.synced_blobs.get(blob.file_name().unwrap()), Some(&22));
        std::fs::remove_file(&blob).unwrap();
        files.sync().unwrap();
        assert!(files.synced_blobs.is_empty());
    }

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
