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
use super::pgtable_check;
use crate::arch::cache;
use crate::planted::{Bug, planted};

/// What the line-by-line maintenance costs, and the CPU's cache geometry
/// (`CTR_EL0`), for tests that check the sequence.
pub use crate::arch::cache::{CacheCounts, cache_type, counts};

/// Cleans and invalidates what [start, end) needs for its bytes to be
/// fetched as instructions here: by line as CTR_EL0 says, `dsb ish`s and
/// the closing `isb`. The range must be mapped readable.
pub fn flush_icache_range(start: VirtAddr, end: VirtAddr) {
    if planted(Bug::SkipIcache) {
        return;
    }
    cache::caches_clean_inval_pou(start.as_u64(), end.as_u64());
}

/// Stores `insns` at `dst` through the data side, and tells the
/// page-table rules checker (its `icache` rule) that they are there: the
/// memory may then be made executable only after [`flush_icache_range`]
/// over them. The one way this kernel writes code, so that the checker,
/// which sees no data store, knows which frames hold some.
///
/// # Safety
/// [dst, dst + 4 * insns.len()) is mapped writable, 4-byte aligned, and
/// the caller's to overwrite.
pub unsafe fn write_instructions(dst: VirtAddr, insns: &[u32]) {
    for (i, &insn) in insns.iter().enumerate() {
        // SAFETY: inside the caller's writable range (the contract).
        unsafe { core::ptr::write_volatile(dst.as_mut_ptr::<u32>().add(i), insn) };
    }
    pgtable_check::code_written(dst, 4 * insns.len() as u64);
}
