//! CTR_EL0, the cache type register, and what it asks of code written
//! through the data side before it runs: the steps of Linux's
//! `caches_clean_inval_pou` (arch/arm64/mm/cache.S, with the
//! `dcache_by_line_op` and `invalidate_icache_by_line` macros of
//! arch/arm64/include/asm/assembler.h). Pure, so the host tests it with
//! made-up register values (tests/host/props/tests/cache_type.rs).
//!
//! The instruction side fetches from the point of unification (PoU), and
//! a store may still sit in a data cache closer to the core: clean the
//! data lines to the PoU (`dc cvau`, then `dsb ish` so the cleans are
//! done), invalidate the instruction lines that may hold the old bytes
//! (`ic ivau`, then `dsb ish` so the invalidations are done), and `isb` so
//! this CPU fetches afresh. CTR_EL0.IDC says the clean is not needed (a
//! `dsb ishst` orders the stores instead); CTR_EL0.DIC says the
//! invalidation is not needed (the `isb` stays).

use core::ops::Range;

/// A CTR_EL0 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheType(pub u64);

impl CacheType {
    /// Bytes in the smallest data cache line (DminLine, bits \[19:16\]: log2
    /// of the number of 4-byte words).
    pub fn d_line(self) -> u64 {
        4 << ((self.0 >> 16) & 0xf)
    }

    /// Bytes in the smallest instruction cache line (IminLine, bits \[3:0\]).
    pub fn i_line(self) -> u64 {
        4 << (self.0 & 0xf)
    }

    /// IDC (bit 28): cleaning the data cache to the PoU is not required for
    /// instruction-to-data coherence.
    pub fn idc(self) -> bool {
        (self.0 >> 28) & 1 == 1
    }

    /// DIC (bit 29): invalidating the instruction cache to the PoU is not
    /// required for instruction-to-data coherence.
    pub fn dic(self) -> bool {
        (self.0 >> 29) & 1 == 1
    }
}

/// One instruction of the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOp {
    /// `dc cvau` of the data line at this address.
    DcCvau(u64),
    /// `ic ivau` of the instruction line at this address.
    IcIvau(u64),
    DsbIshst,
    DsbIsh,
    Isb,
}

/// What `flush_icache_range(start, end)` issues, in order, on a CPU whose
/// CTR_EL0 is `ctr`: every line that [start, end) touches, from the line
/// holding `start` (Linux rounds `start` down to the line and loops while
/// below `end`).
pub fn icache_sync_ops(ctr: CacheType, start: u64, end: u64) -> impl Iterator<Item = CacheOp> {
    let lines = move |line: u64| (Range { start: start & !(line - 1), end }).step_by(line as usize);
    let clean = (!ctr.idc()).then(|| lines(ctr.d_line()).map(CacheOp::DcCvau).chain([CacheOp::DsbIsh]));
    let invalidate = (!ctr.dic()).then(|| lines(ctr.i_line()).map(CacheOp::IcIvau).chain([CacheOp::DsbIsh]));
    ctr.idc()
        .then_some(CacheOp::DsbIshst)
        .into_iter()
        .chain(clean.into_iter().flatten())
        .chain(invalidate.into_iter().flatten())
        .chain([CacheOp::Isb])
}
