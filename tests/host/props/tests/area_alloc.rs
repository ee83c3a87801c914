//! First fit against a brute-force search over a small address space.

use lazymmu_props::area_alloc::first_fit;
use proptest::prelude::*;

/// Sorted, non-overlapping busy ranges (start, length) below 160.
fn busy() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0u64..8, 1u64..12), 0..10).prop_map(|gaps_and_lengths| {
        let mut at = 0;
        gaps_and_lengths
            .into_iter()
            .map(|(gap, len)| {
                let start = at + gap;
                at = start + len;
                (start, len)
            })
            .collect()
    })
}

fn brute_force(busy: &[(u64, u64)], span: u64, align: u64, base: u64, limit: u64) -> Option<u64> {
    (base..limit)
        .find(|&a| a % align == 0 && a + span <= limit && busy.iter().all(|&(s, len)| a + span <= s || a >= s + len))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn first_fit_is_the_lowest_aligned_free_range(
        busy in busy(),
        span in 1u64..24,
        align_shift in 0u32..5,
        base in 0u64..16,
        limit in 0u64..200,
    ) {
        let align = 1 << align_shift;
        let got = first_fit(busy.iter().copied(), span, align, base, limit);
        prop_assert_eq!(got, brute_force(&busy, span, align, base, limit), "busy {:?}", busy);
    }

    #[test]
    fn first_fit_never_overflows(start in any::<u64>(), len in any::<u64>(), span in any::<u64>(), align_shift in 0u32..63) {
        // Huge inputs give None, never a wrapped-around answer.
        if let Some(a) = first_fit([(start, len)], span, 1 << align_shift, 0, u64::MAX) {
            prop_assert!(a.checked_add(span).is_some());
            prop_assert!(a + span <= start || start.checked_add(len).is_some_and(|end| a >= end));
        }
    }
}
