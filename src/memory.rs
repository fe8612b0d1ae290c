//! Freed heap given back to the system after a burst of short-lived allocations (a
//! recovery's reading of the log, a compaction's copy of the namespace): glibc keeps the
//! pages otherwise, and at a million files that is hundreds of MiB resident for nothing.

/// Allocations at least this large get pages of their own, given back when freed.
const OWN_PAGES_FROM: i32 = 1 << 20;
/// Free heap past this at the top is given back at once.
const TRIM_PAST: i32 = 4 << 20;

/// Fixes the allocator's thresholds (glibc `mallopt`; nothing elsewhere). glibc raises them
/// on its own each time a large block is freed, up to 32 MiB and 64 MiB, after which the
/// large short-lived buffers of a mount (a snapshot read whole, an open directory's listing,
/// a file's bytes) come from the heap and stay resident once freed: two listings of a
/// million names left 31 MiB behind. Fixed, each of them is mapped apart and unmapped when
/// freed.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's parameters; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, OWN_PAGES_FROM);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_PAST);
    }
}

/// Gives the allocator's free pages back to the system (glibc's `malloc_trim`); nothing
/// elsewhere.
pub fn give_back_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns memory the allocator holds free; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
        let m = libc::mallinfo2();
        log::debug!(
            "heap: {} MiB in use, {} MiB free in {} MiB of arenas, {} MiB mapped apart",
            m.uordblks >> 20,
            m.fordblks >> 20,
            m.arena >> 20,
            m.hblkhd >> 20
        );
    }
}
