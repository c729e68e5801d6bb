//! Memory allocation tuned for model inference.
//!
//! A model's forward pass allocates and frees the same large activation buffers (tens of MB)
//! again and again. With glibc's defaults each of them is a fresh `mmap` whose pages fault in
//! zero-filled on first touch and go back to the system on free: a fifth of FastViTHD's time
//! here. Keeping freed memory in the process for the next buffer removes that cost.

/// Largest block served from the heap rather than by its own `mmap` (glibc's maximum).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;
/// Extra memory requested whenever the heap grows.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 256 << 20;

/// Tells the C allocator (glibc) to serve large blocks from the heap and keep freed memory
/// for reuse instead of returning it to the system. Call once, first thing in `main`; a
/// no-op on other C libraries.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
    }
}

/// Hands the free memory that [`reuse_freed_memory`] makes the C allocator keep back to the
/// system (glibc's `malloc_trim`, which also releases free pages inside the heap). A process
/// that runs for hours (`keyscribe watch`) calls it between units of work, so that its
/// resident memory stays flat instead of creeping up as the heap fragments. A no-op on other
/// C libraries.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory to the system; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
