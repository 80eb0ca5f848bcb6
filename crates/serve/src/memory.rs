//! How the server's heap is kept and returned to the operating system.
//!
//! glibc's allocator keeps what a process frees for its next allocations: after the start-up probe
//! (forward passes at every batch size up to `--max-batch`) and after a burst of large batches,
//! tens of megabytes stay resident though nothing uses them. `malloc_trim` hands the free pages
//! back; a server calls it where it has just freed much and is about to idle.
//!
//! Between those points the opposite is wanted: a forward pass allocates and frees the same
//! activations (megabytes each) on every request. With glibc's default, adaptive thresholds, a
//! process could settle either way: most activations reused from the heap, or mapped, touched and
//! unmapped afresh on every pass. Measured on 2 cores with EfficientNet-Lite0 under 8 clients,
//! the second costs 1.5–1.9 million page faults in 6 s and a third of the throughput (100–107
//! against 157–176 requests/s), and which one a process got varied from start to start.
//! [`keep_freed_heap`] fixes the choice.

/// Allocations up to this size come from the heap and are reused (glibc's largest allowed value).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the top of the heap beyond this is returned at once; below it is kept for the
/// next pass.
pub const TRIM_THRESHOLD: usize = 256 << 20;

/// Makes the allocator keep freed activations for reuse ([`MMAP_THRESHOLD`], [`TRIM_THRESHOLD`])
/// instead of unmapping them after every pass (glibc); elsewhere a no-op. Process-wide: a server
/// calls it once, before loading its models. Peak memory is unchanged (a pass's activations are
/// resident while it runs either way); [`release_free_heap`] still returns what a burst left.
/// glibc's own variables (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) win when set.
pub fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (var, param, value) in
        [("MALLOC_MMAP_THRESHOLD_", libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD), ("MALLOC_TRIM_THRESHOLD_", libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    {
        if std::env::var_os(var).is_none() {
            // SAFETY: mallopt only sets one of the allocator's tuning parameters; glibc allows it
            // at any time.
            unsafe {
                libc::mallopt(param, value as libc::c_int);
            }
        }
    }
}

/// Releases the free pages of every malloc arena (glibc); elsewhere a no-op.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe and takes
    // no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}
