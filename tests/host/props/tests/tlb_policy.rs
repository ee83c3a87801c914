//! The TLB flush decisions: which flush a change needs, Linux's rules for
//! how `flush_tlb_kernel_range` covers a range
//! (`__flush_tlb_range_limit_excess`), and the page count they are made on.

use lazymmu_props::tlb_policy::{
    Changed, FlushStrategy, MAX_DVM_OPS, MAX_TLBI_RANGE_PAGES, Walks, choose_flush, flush_for, pages_in,
};
use proptest::prelude::*;

const PAGE: u64 = 4096;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]

    #[test]
    fn the_flush_is_linuxs_choice(pages in 1u64..(4 * MAX_TLBI_RANGE_PAGES), range_tlbi in any::<bool>()) {
        // Linux flushes everything when the range is too long for range
        // TLBIs, or, without them, at MAX_DVM_OPS pages or more.
        let excess = (!range_tlbi && pages >= MAX_DVM_OPS) || pages > MAX_TLBI_RANGE_PAGES;
        let expected = match (excess, range_tlbi) {
            (true, _) => FlushStrategy::All,
            (false, true) => FlushStrategy::RangeTlbi,
            (false, false) => FlushStrategy::PerPage,
        };
        prop_assert_eq!(choose_flush(pages, range_tlbi), expected);
        // A longer range never gets a finer flush.
        if choose_flush(pages, range_tlbi) == FlushStrategy::All {
            prop_assert_eq!(choose_flush(pages + 1, range_tlbi), FlushStrategy::All);
        }
    }

    #[test]
    fn pages_in_counts_every_page_the_range_touches(start in 0u64..(1 << 48), len in 1u64..(1 << 30)) {
        let end = start + len;
        let first = start / PAGE;
        let last = (end - 1) / PAGE;
        prop_assert_eq!(pages_in(start, end), last - first + 1);
    }

    #[test]
    fn a_range_to_the_top_of_the_address_space_counts_its_pages(pages in 1u64..(1 << 20)) {
        prop_assert_eq!(pages_in(0u64.wrapping_sub(pages * PAGE), 0), pages);
    }
}

#[test]
fn the_thresholds_are_linuxs() {
    // Without range TLBI: one page short of PTRS_PER_PTE still goes page by
    // page; PTRS_PER_PTE pages flush everything.
    assert_eq!(choose_flush(511, false), FlushStrategy::PerPage);
    assert_eq!(choose_flush(512, false), FlushStrategy::All);
    // With range TLBI: up to (31 + 1) << 16 pages in range operations.
    assert_eq!(choose_flush(512, true), FlushStrategy::RangeTlbi);
    assert_eq!(choose_flush(32 << 16, true), FlushStrategy::RangeTlbi);
    assert_eq!(choose_flush((32 << 16) + 1, true), FlushStrategy::All);
    assert_eq!(pages_in(0x1000, 0x1001), 1);
    assert_eq!(pages_in(0x1fff, 0x2001), 2);
}

#[test]
fn a_change_gets_the_flush_it_needs_and_no_more() {
    assert_eq!(flush_for(Changed::NOTHING), None, "nothing changed: no flush");
    assert_eq!(flush_for(Changed::LEAVES), Some(Walks::LeafOnly), "leaves only: the leaves");
    // A table unlinked: a CPU may hold a walk through it, whatever else changed.
    for leaves in [false, true] {
        assert_eq!(flush_for(Changed { leaves, tables: true }), Some(Walks::AllLevels));
    }
}
