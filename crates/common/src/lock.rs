//! Advisory file locks (the operating system's `flock`/`LockFileEx` through `std::fs::File`):
//! released by the OS when the holder exits or is killed, so a crash never leaves a stale lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::IoError;

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is in use by another petal process{}; wait for it to finish or choose another name", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Busy {
        /// The folder (or file) that is locked.
        path: PathBuf,
        /// The holder's process id, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Exclusive use of a run folder, held until dropped: `<dir>/.lock` holds the holder's pid.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Name of the lock file inside a locked folder.
    pub const FILE: &'static str = ".lock";

    /// Takes the lock on `dir` (creating the folder), or fails at once with [`LockError::Busy`]
    /// naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|e| IoError::new(dir, "creating folder", e))?;
        let path = dir.join(Self::FILE);
        let mut file = open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Busy { path: dir.to_path_buf(), pid: text.trim().parse().ok() });
            }
            Err(TryLockError::Error(e)) => return Err(IoError::new(&path, "locking", e).into()),
        }
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.flush()
        };
        write(&mut file).map_err(|e| IoError::new(&path, "writing the pid", e))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An exclusive lock on `<file>.lock`, held until dropped; [`FileLock::exclusive`] waits for it.
/// Writers of a shared cache file take it, check whether another process finished the file
/// meanwhile, and only then compute: the file is computed once, and written atomically.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits until the lock beside `file` (`<file>.lock`) is free, then holds it. Creates the
    /// folder of `file` when it does not exist yet.
    pub fn exclusive(file: &Path) -> Result<FileLock, IoError> {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| IoError::new(dir, "creating the folder", e))?;
        }
        let mut name = file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        let path = file.with_file_name(name);
        let f = open(&path)?;
        f.lock().map_err(|e| IoError::new(&path, "locking", e))?;
        Ok(FileLock { _file: f })
    }
}

fn open(path: &Path) -> Result<File, IoError> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|e| IoError::new(path, "opening lock file", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid_until_the_first_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = dir.path().join("run");
        let first = RunLock::acquire(&run).expect("first");
        // A second open file description conflicts even within one process.
        let err = RunLock::acquire(&run).expect_err("busy");
        match &err {
            LockError::Busy { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(first);
        RunLock::acquire(&run).expect("free again");
    }

    #[test]
    fn file_locks_serialise_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("cache.bin");
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (t, c) = (target.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _l = FileLock::exclusive(&t).expect("lock");
                    if !t.exists() {
                        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        crate::write_atomic(&t, b"computed once").expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
