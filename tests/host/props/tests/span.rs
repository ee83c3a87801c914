//! The walker's chunks and the range-TLBI plan cover exactly what they must.

use lazymmu_props::span::{TlbiOp, chunks, tlbi_range_ops};
use proptest::prelude::*;

const PAGE: u64 = 4096;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn chunks_partition_the_range_one_block_each(
        start_page in any::<u64>(),
        pages in 1u64..4096,
        block_shift in 12u32..31,
        to_the_top in any::<bool>(),
    ) {
        let block = 1u64 << block_shift;
        // `pages` pages: anywhere, or the last ones of the address space
        // (then `end` is 0).
        let start = if to_the_top { 0u64.wrapping_sub(pages * PAGE) } else { (start_page % (u64::MAX / PAGE)) * PAGE };
        let end = start.wrapping_add(pages * PAGE);
        prop_assume!(end == 0 || end > start);
        let pieces: Vec<(u64, u64)> = chunks(start, end, block).collect();
        prop_assert!(!pieces.is_empty());
        prop_assert_eq!(pieces[0].0, start);
        prop_assert_eq!(pieces[pieces.len() - 1].1, end);
        for w in pieces.windows(2) {
            prop_assert_eq!(w[0].1, w[1].0, "contiguous");
        }
        for &(a, b) in &pieces {
            let last = b.wrapping_sub(1);
            prop_assert!(b.wrapping_sub(a) > 0 && b.wrapping_sub(a) <= block);
            prop_assert_eq!(a & !(block - 1), last & !(block - 1), "({:#x}, {:#x}) is inside one block", a, b);
        }
    }

    #[test]
    fn range_tlbi_ops_cover_exactly_the_pages(va_page in 0u64..(1 << 36), pages in 0u64..=(32 << 16)) {
        let va = va_page * PAGE;
        let mut at = va;
        let mut ops = 0;
        for op in tlbi_range_ops(va, pages) {
            ops += 1;
            match op {
                TlbiOp::Page(a) => {
                    prop_assert_eq!(a, at);
                    at += PAGE;
                }
                TlbiOp::Range { va: a, scale, num } => {
                    prop_assert_eq!(a, at);
                    prop_assert!(scale <= 3 && num <= 31, "encodable: scale {}, num {}", scale, num);
                    at += ((num + 1) << (5 * scale + 1)) * PAGE;
                }
            }
        }
        prop_assert_eq!(at, va + pages * PAGE, "covers {} pages, no more, no less", pages);
        prop_assert!(ops <= 5, "at most one page and one range per scale: {}", ops);
    }
}

#[test]
fn the_largest_range_one_flush_may_cover_is_covered() {
    // 32 << 16 pages: NUM + 1 = 32 at SCALE 3, the edge a 5-bit mask misses.
    let ops: Vec<TlbiOp> = tlbi_range_ops(0, 32 << 16).collect();
    assert_eq!(ops, [TlbiOp::Range { va: 0, scale: 3, num: 31 }]);
}
