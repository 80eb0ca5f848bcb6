//! Returning freed heap to the operating system.
//!
//! glibc's allocator keeps what a process frees for its next allocations: after the start-up probe
//! (forward passes at every batch size up to `--max-batch`) and after a burst of large batches,
//! tens of megabytes stay resident though nothing uses them. `malloc_trim` hands the free pages
//! back; a server calls it where it has just freed much and is about to idle.

/// Releases the free pages of every malloc arena (glibc); elsewhere a no-op.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe and takes
    // no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}
