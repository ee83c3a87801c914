//! Code written as data, then run: `flush_icache_range` (Linux's
//! arch/arm64/include/asm/cacheflush.h). On a core whose CTR_EL0 has IDC
//! and DIC clear (Cortex-A53, A72) the instruction side may still fetch
//! the old bytes from its own cache, or miss the new ones in the data
//! cache, without it; QEMU keeps no such caches, so only the sequence can
//! be checked there (`tests/pageattr.rs`).
//!
//! Linux's `flush_icache_range` then calls `kick_all_cpus_sync()`, an IPI
//! so every other CPU takes an exception (a context synchronization event)
//! and fetches afresh. This kernel has no IPI: the code is run on the CPU
//! that flushed it, and another CPU may run it only after its own context
//! synchronization (an exception entry or return with SCTLR_EL1.EIS/EOS
//! set, or an `isb`).

use super::addr::VirtAddr;
use crate::arch::cache;

/// What the line-by-line maintenance costs, and the CPU's cache geometry
/// (`CTR_EL0`), for tests that check the sequence.
pub use crate::arch::cache::{CacheCounts, cache_type, counts};

/// Cleans and invalidates what [start, end) needs for its bytes to be
/// fetched as instructions here: by line as CTR_EL0 says, `dsb ish`s and
/// the closing `isb`. The range must be mapped readable.
pub fn flush_icache_range(start: VirtAddr, end: VirtAddr) {
    cache::caches_clean_inval_pou(start.as_u64(), end.as_u64());
}
