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

/// What a change under a range did, as far as the TLB is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Valid leaf entries were cleared or made stricter.
    pub leaves: bool,
    /// Page-table pages were unlinked (to be freed once no CPU can hold a
    /// walk through them).
    pub tables: bool,
}

impl Changed {
    pub const NOTHING: Changed = Changed { leaves: false, tables: false };
    pub const LEAVES: Changed = Changed { leaves: true, tables: false };
}

/// What a flush drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walks {
    /// Last-level entries (`tlbi vaale1is`, `rvaale1is`): enough when only
    /// leaves changed.
    LeafOnly,
    /// Cached table walks as well (`tlbi vaae1is`, `rvaae1is`, the forms of
    /// Linux's `__flush_tlb_kernel_pgtable`), once page-table pages were
    /// unlinked.
    AllLevels,
}

/// The flush a change needs before what it took away is reused: none if
/// nothing changed; every level of the walk if a table was unlinked (that
/// flush drops the leaves too, so one is enough); else the leaves'.
pub fn flush_for(changed: Changed) -> Option<Walks> {
    match changed {
        Changed { tables: true, .. } => Some(Walks::AllLevels),
        Changed { leaves: true, tables: false } => Some(Walks::LeafOnly),
        Changed { leaves: false, tables: false } => None,
    }
}

/// The pages [start, end) touches: from `start` rounded down to a page
/// to `end` rounded up. `end` may be 0, the top of the address space (the
/// difference wraps).
pub fn pages_in(start: u64, end: u64) -> u64 {
    end.wrapping_sub(start & !(PAGE_SIZE - 1)).div_ceil(PAGE_SIZE)
}
