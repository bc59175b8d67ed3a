//! How long the services' allocator keeps memory that was freed.
//!
//! The services allocate with mimalloc (each binary declares it as its global allocator, and
//! librdkafka's `malloc` goes to it too). mimalloc gives a freed stretch of memory back to the
//! kernel once it has stayed free for `purge_delay` milliseconds, 1,000 by default; the next
//! allocation there faults every page in again and has it zeroed. A service frees much of what
//! it allocated at every turn of its loop, on periods near that second: the input's fetched
//! and decompressed batches, the records a tick publishes and their delivery reports. In
//! `target/release/e2e-throughput 1000000` the deals service took 287,000–319,000 page faults
//! with the default delay and 190,000–214,000 with ten seconds, about its peak RSS touched once
//! (docs/benchmarks.md, "Freed memory kept for ten seconds"). Ten seconds keeps what the loop
//! reuses and still gives back what a burst (a catch-up, a rebuild) left behind soon after.

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (`include/mimalloc.h`), which
/// `libmimalloc-sys` does not name.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds a freed stretch stays with the process before it goes back to the kernel.
pub const PURGE_DELAY_MS: i32 = 10_000;

/// Makes [`PURGE_DELAY_MS`] the allocator's default purge delay; the environment variable
/// `MIMALLOC_PURGE_DELAY`, read when the process started, still overrides it. Call it first
/// in `main`, before any other thread starts: mimalloc's options are plain variables.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set_default` stores one value in mimalloc's table of options, which
    // is initialized when the process loads; no other thread reads it yet.
    unsafe { libmimalloc_sys::mi_option_set_default(PURGE_DELAY, PURGE_DELAY_MS.into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_long;

    fn purge_delay() -> c_long {
        // SAFETY: reads one value of mimalloc's table of options.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_get(PURGE_DELAY)
        }
    }

    /// Option 15 is the purge delay: it holds mimalloc's documented default (1,000 ms; its
    /// neighbours default to 1 and 0) or the environment's value, and then the one set here
    /// unless the environment gave one.
    #[test]
    fn the_purge_delay_is_set() {
        let env = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse::<c_long>().ok());
        assert_eq!(purge_delay(), env.unwrap_or(1_000));
        keep_freed_memory();
        assert_eq!(purge_delay(), env.unwrap_or(PURGE_DELAY_MS.into()));
    }
}
