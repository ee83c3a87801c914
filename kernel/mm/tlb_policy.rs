//! Which TLB flush covers a range of kernel pages, and why: the decision
//! arm64 Linux makes in `flush_tlb_kernel_range`
//! (`__flush_tlb_range_limit_excess`, arch/arm64/include/asm/tlbflush.h),
//! as pure functions. `tlb.rs` carries it out; the same file is
//! property-tested on the host (tests/host/props).

/// Without range TLBI, a range of this many pages or more is flushed with
/// one `tlbi vmalle1is` instead of page by page (Linux's `MAX_DVM_OPS`,
/// `PTRS_PER_PTE`). Not because a full flush is cheaper: each TLBI is a
/// broadcast DVM message to every CPU, and a long loop of them can stall
/// the interconnect and the CPU issuing them (soft lock-ups). Linux named
/// it after DVM in ec1c3b9ff160 ("arm64: tlbflush: Rename MAX_TLBI_OPS"),
/// as I-cache maintenance has the same problem.
pub const MAX_DVM_OPS: u64 = 512;

/// The most pages one range-TLBI sequence can cover: NUM = 31 at SCALE = 3
/// is (31 + 1) << (5 * 3 + 1) pages.
pub const MAX_TLBI_RANGE_PAGES: u64 = 32 << 16;

const PAGE_SIZE: u64 = 4096;

/// How a flush covers a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushStrategy {
    /// A few range TLBIs (FEAT_TLBIRANGE), each covering up to
    /// 2^(5 * SCALE + 1) * (NUM + 1) pages.
    RangeTlbi,
    /// One TLBI per page.
    PerPage,
    /// One `tlbi vmalle1is`: everything, on every CPU.
    All,
}

/// The flush for `pages` pages, on a CPU with range TLBI or without: the
/// whole TLB once the range is too long for range TLBIs, or, without
/// them, from [`MAX_DVM_OPS`] pages up (at 512, not above, as Linux).
pub fn choose_flush(pages: u64, range_tlbi: bool) -> FlushStrategy {
    if pages > MAX_TLBI_RANGE_PAGES || (!range_tlbi && pages >= MAX_DVM_OPS) {
        FlushStrategy::All
    } else if range_tlbi {
        FlushStrategy::RangeTlbi
    } else {
        FlushStrategy::PerPage
    }
}

/// The pages [start, end) touches: from `start` rounded down to a page
/// to `end` rounded up. `end` may be 0, the top of the address space (the
/// difference wraps).
pub fn pages_in(start: u64, end: u64) -> u64 {
    end.wrapping_sub(start & !(PAGE_SIZE - 1)).div_ceil(PAGE_SIZE)
}
