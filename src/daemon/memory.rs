//! Hands memory the allocator holds but no longer uses back to the system.
//!
//! glibc keeps freed heap memory in its arenas (one per thread that allocated)
//! for reuse and only returns the very top of each heap by itself. After a
//! burst (100 KB messages over 100 sessions, or a 100,000-message queue read at
//! start and then drained) the resident size would stay at the burst's peak for
//! the life of the process, which on a small server is memory the web apps next
//! to us do not get back. `malloc_trim(0)` releases every free page of every
//! arena (with `madvise`, keeping the address space); it takes well under a
//! millisecond on our heaps, so once every few seconds costs nothing measurable.

use std::time::Duration;

/// How often [`trim_periodically`] trims.
pub const EVERY: Duration = Duration::from_secs(5);

/// Makes every thread allocate from glibc's one main arena.
///
/// By default glibc gives each thread that meets a locked arena its own, up to
/// eight per core, and each keeps its own free memory. Our threads are the
/// runtime's workers, the committer and sled's I/O pool, and they hand buffers
/// to each other, so memory freed on one thread sat unusable in another's
/// arena: draining 100,000 queued messages peaked at 182 MiB with the default,
/// 140 MiB with two arenas and 122 MiB with one. Small allocations are served
/// from each thread's cache without the arena lock, and the 2 KB / 20-session
/// benchmark measured no slower (3373–3934 msg/s default, 3563–4112 one
/// arena). An operator's own `MALLOC_ARENA_MAX` is left to rule.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called before the process starts any thread of its own;
        // mallopt only sets glibc's tuning and may be called at any time.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Returns the free pages of every malloc arena to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it
    // has no preconditions and may be called from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every [`EVERY`], off the runtime's worker threads.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}
