//! TLB maintenance for kernel mappings, as arm64 Linux does it
//! (`flush_tlb_kernel_range`, `flush_tlb_all`).
//!
//! After an entry is cleared or changed, CPUs may still hold the old
//! translation in their TLBs: under QEMU, too, a stale entry keeps being
//! used until it is invalidated. The sequence is always
//! `dsb ishst` (the table store is visible to every walker) -> `tlbi ...is`
//! (every CPU in the inner-shareable domain drops it) -> `dsb ish` (wait
//! until they all have) -> `isb` (this CPU's pipeline starts afresh).

use super::addr::{PAGE_SIZE, VirtAddr};
use super::lazy_mmu;
use super::span::{self, TlbiOp};
use super::tlb_policy;
use crate::arch::{barrier, sysreg, tlbi};
use crate::cpu;
use crate::planted::{Bug, planted};

pub(crate) use super::tlb_policy::{Changed, Walks};
pub use super::tlb_policy::{FlushStrategy, MAX_DVM_OPS, MAX_TLBI_RANGE_PAGES};

/// The strategy for `pages` pages on this CPU (see `tlb_policy`).
pub fn strategy(pages: u64) -> FlushStrategy {
    tlb_policy::choose_flush(pages, cpu::features().tlbi_range)
}

/// Invalidates the translations of [start, end) on every CPU: the leaf
/// entries only, as after leaves were changed or cleared.
pub fn flush_tlb_kernel_range(start: VirtAddr, end: VirtAddr) {
    flush(strategy(pages_in(start, end)), start, end, Walks::LeafOnly);
}

/// Invalidates the leaf translations of every range, as one flush: one
/// `dsb ishst`, the TLBIs of every range, one `dsb ish; isb` (the strategy
/// chosen for all their pages together). For a change that acts on a
/// vmalloc area and on its frames' linear alias (`pageattr.rs`). One range
/// is exactly [`flush_tlb_kernel_range`].
#[inline(never)]
pub fn flush_tlb_kernel_ranges(ranges: &[(VirtAddr, VirtAddr)]) {
    if let [(start, end)] = ranges {
        return flush_tlb_kernel_range(*start, *end);
    }
    lazy_mmu::sync_stores();
    if planted(Bug::SkipTlbFlush) {
        return;
    }
    let pages: u64 = ranges.iter().map(|&(start, end)| pages_in(start, end)).sum();
    if pages == 0 {
        return;
    }
    #[cfg(debug_assertions)]
    if planted(Bug::LocalTlbFlush) {
        for &(start, end) in ranges {
            flush_this_cpu_only(start.align_down(PAGE_SIZE).as_u64(), pages_in(start, end));
        }
        return;
    }
    let how = strategy(pages);
    if how == FlushStrategy::All {
        return flush_tlb_all();
    }
    barrier::dsb_ishst();
    for &(start, end) in ranges {
        let (va, pages) = (start.align_down(PAGE_SIZE).as_u64(), pages_in(start, end));
        match how {
            FlushStrategy::PerPage => (0..pages).for_each(|page| tlbi_page(va + page * PAGE_SIZE, Walks::LeafOnly)),
            _ => range_tlbi(va, pages, Walks::LeafOnly),
        }
    }
    barrier::dsb_ish();
    barrier::isb();
}

/// [`flush_tlb_kernel_range`] with the strategy chosen by the caller (the
/// bench compares them). `RangeTlbi` needs FEAT_TLBIRANGE.
pub fn flush_tlb_kernel_range_with(how: FlushStrategy, start: VirtAddr, end: VirtAddr) {
    flush(how, start, end, Walks::LeafOnly);
}

/// Invalidates [start, end) at every level of the walk, as needed once
/// page-table pages under the range were unlinked: a CPU may hold cached
/// walks through the table entries that pointed to them. The same count of
/// TLBIs as a leaf flush. (Linux's `__flush_tlb_kernel_pgtable(addr)` is
/// the per-table form: one `tlbi vaae1is` for each table it frees.)
pub fn flush_tlb_kernel_pgtables(start: VirtAddr, end: VirtAddr) {
    flush(strategy(pages_in(start, end)), start, end, Walks::AllLevels);
}

/// The flush `changed` needs over [start, end), if any (see
/// `tlb_policy::flush_for`).
pub(crate) fn flush_after(changed: Changed, start: VirtAddr, end: VirtAddr) {
    if let Some(walks) = tlb_policy::flush_for(changed) {
        flush(strategy(pages_in(start, end)), start, end, walks);
    }
}

fn pages_in(start: VirtAddr, end: VirtAddr) -> u64 {
    tlb_policy::pages_in(start.as_u64(), end.as_u64())
}

fn flush(how: FlushStrategy, start: VirtAddr, end: VirtAddr, walks: Walks) {
    lazy_mmu::sync_stores();
    if planted(Bug::SkipTlbFlush) {
        return;
    }
    let pages = pages_in(start, end);
    let start = start.align_down(PAGE_SIZE);
    if pages == 0 {
        return;
    }
    #[cfg(debug_assertions)]
    if planted(Bug::LocalTlbFlush) {
        return flush_this_cpu_only(start.as_u64(), pages);
    }
    match how {
        FlushStrategy::All => return flush_tlb_all(),
        FlushStrategy::PerPage => {
            barrier::dsb_ishst();
            for page in 0..pages {
                tlbi_page(start.as_u64() + page * PAGE_SIZE, walks);
            }
        }
        FlushStrategy::RangeTlbi => {
            barrier::dsb_ishst();
            range_tlbi(start.as_u64(), pages, walks);
        }
    }
    barrier::dsb_ish();
    barrier::isb();
}

fn tlbi_page(va: u64, walks: Walks) {
    match walks {
        Walks::LeafOnly => tlbi::tlbi_vaale1is(va),
        Walks::AllLevels => tlbi::tlbi_vaae1is(va),
    }
}

/// Invalidates every EL1 translation on every CPU.
pub(crate) fn flush_tlb_all() {
    lazy_mmu::sync_stores();
    if planted(Bug::SkipTlbFlush) {
        return;
    }
    if planted(Bug::LocalTlbFlush) {
        barrier::dsb_ishst();
        barrier::raw::tlbi_vmalle1();
        barrier::dsb_ish();
        barrier::isb();
        return;
    }
    barrier::dsb_ishst();
    tlbi::tlbi_vmalle1is();
    barrier::dsb_ish();
    barrier::isb();
}

/// The planted `local-tlb-flush`: each page invalidated on this CPU only
/// (`tlbi vaale1`, no `is`; a whole flush is `tlbi vmalle1`); every other
/// CPU keeps what it cached.
#[cfg(debug_assertions)]
fn flush_this_cpu_only(start: u64, pages: u64) {
    barrier::dsb_ishst();
    for page in 0..pages {
        tlbi::tlbi_vaale1_this_cpu(start + page * PAGE_SIZE);
    }
    barrier::dsb_ish();
    barrier::isb();
}

/// Covers `pages` pages from `va` with as few range operations as
/// possible (see `span::tlbi_range_ops`).
fn range_tlbi(va: u64, pages: u64, walks: Walks) {
    for op in span::tlbi_range_ops(va, pages) {
        match (op, walks) {
            (TlbiOp::Page(va), _) => tlbi_page(va, walks),
            (TlbiOp::Range { va, scale, num }, Walks::LeafOnly) => {
                tlbi::tlbi_rvaale1is(sysreg::tlbi_range_operand(va, scale, num))
            }
            (TlbiOp::Range { va, scale, num }, Walks::AllLevels) => {
                tlbi::tlbi_rvaae1is(sysreg::tlbi_range_operand(va, scale, num))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_case]
    fn range_operand_encodes_granule_scale_num_and_base() {
        let va = 0xffff_8000_0020_0000u64;
        let op = sysreg::tlbi_range_operand(va, 1, 7);
        assert_eq!(op >> 46 & 0b11, 0b01, "TG: 4 KiB");
        assert_eq!(op >> 44 & 0b11, 1, "SCALE");
        assert_eq!(op >> 39 & 0x1f, 7, "NUM");
        assert_eq!(op >> 37 & 0b11, 0, "TTL: any level");
        // BaseADDR holds VA[48:12]; sign-extending bit 36 gives the VA back.
        let base = ((op & ((1 << 37) - 1)) << 27) as i64 >> 27;
        assert_eq!((base << 12) as u64, va);
        // And the decoder the observer uses reads the same range back.
        assert_eq!(sysreg::tlbi_range_of(op), (va, 8 << 6));
    }

    #[test_case]
    fn the_largest_range_flush_issues_one_range_tlbi() {
        // 32 << 16 pages is exactly NUM + 1 = 32 at SCALE 3 (found by the
        // host property test: a 5-bit mask once made this cover nothing).
        let start = VirtAddr::new(0xffff_8000_0000_0000);
        let c = barrier::cost(|| flush_tlb_kernel_range(start, start.add(MAX_TLBI_RANGE_PAGES * PAGE_SIZE)));
        let expected = if cpu::features().tlbi_range { (0, 1, 0) } else { (0, 0, 1) };
        assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), expected, "{c:?}");
    }

    #[test_case]
    fn strategy_follows_the_cpu_and_the_thresholds() {
        if cpu::features().tlbi_range {
            assert_eq!(strategy(1), FlushStrategy::RangeTlbi);
            assert_eq!(strategy(MAX_TLBI_RANGE_PAGES), FlushStrategy::RangeTlbi);
            assert_eq!(strategy(MAX_TLBI_RANGE_PAGES + 1), FlushStrategy::All);
        } else {
            assert_eq!(strategy(1), FlushStrategy::PerPage);
            assert_eq!(strategy(MAX_DVM_OPS - 1), FlushStrategy::PerPage);
            assert_eq!(
                strategy(MAX_DVM_OPS),
                FlushStrategy::All,
                "Linux flushes everything at MAX_DVM_OPS pages, not above"
            );
        }
    }
}
