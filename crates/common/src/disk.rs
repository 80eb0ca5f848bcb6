//! The free space of a file system: what the caches check before they write, so that a job that
//! cannot fit is refused before any work ("no space left in …").

use std::path::Path;

/// Free bytes for an unprivileged user on the file system holding `dir` (`None` when unknown).
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `s` a writable statvfs that statvfs fills on success.
    let rc = unsafe { libc::statvfs(c.as_ptr(), s.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `s`.
    let s = unsafe { s.assume_init() };
    #[allow(clippy::unnecessary_cast)] // u64 here; other platforms use narrower types
    let bytes = s.f_bavail as u64 * s.f_frsize as u64;
    Some(bytes)
}

/// Free bytes on the file system holding `dir` (unknown on this platform).
#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_temp_folder_has_free_space_and_a_missing_one_is_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(super::free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(super::free_bytes(&dir.path().join("missing")), None);
    }
}
