//! The vmalloc region's free ranges against a brute-force model: a small
//! address space kept as one bit per unit. Random reservations (with
//! alignments and [lo, hi) windows) and releases keep the two in step: the
//! tree finds what the model finds, and holds exactly the model's free runs.

use lazymmu_props::area_alloc::{Free, FreeRanges, Node, Tree, Weight};
use proptest::prelude::*;

const UNITS: u64 = 256;

/// The lowest start, aligned to `align`, of `span` free units inside
/// [lo, hi), among free runs of at least `min_run` units: unit by unit.
fn lowest_slot(free: &[bool], span: u64, align: u64, lo: u64, hi: u64, min_run: u64) -> Option<u64> {
    let run_around = |x: u64| {
        let start = (0..=x).rev().take_while(|&u| free[u as usize]).last()?;
        let end = (x..UNITS).take_while(|&u| free[u as usize]).last()? + 1;
        Some((start, end))
    };
    (lo.next_multiple_of(align)..hi)
        .step_by(align as usize)
        .find(|&x| run_around(x).is_some_and(|(start, end)| end - start >= min_run && x + span <= end.min(hi)))
}

/// The model's answer: the lowest slot in a run long enough to fit
/// wherever it starts (`span + align - 1` units), else the lowest slot at
/// all.
fn model_find(free: &[bool], span: u64, align: u64, lo: u64, hi: u64) -> Option<u64> {
    lowest_slot(free, span, align, lo, hi, span + align - 1).or_else(|| lowest_slot(free, span, align, lo, hi, span))
}

fn runs(free: &[bool]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < UNITS {
        if free[at as usize] {
            let start = at;
            while at < UNITS && free[at as usize] {
                at += 1;
            }
            out.push((start, at));
        } else {
            at += 1;
        }
    }
    out
}

fn spare() -> Box<Node<Free>> {
    Node::new(0, Free { len: 0 }).unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    Reserve { span: u64, align_shift: u32, lo: u64, hi: u64 },
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..24, 0u32..8, 0u64..64, 128u64..=UNITS)
            .prop_map(|(span, align_shift, lo, hi)| Op::Reserve { span, align_shift, lo, hi }),
        2 => (0usize..64).prop_map(Op::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn free_ranges_find_what_the_model_finds_and_stay_merged(ops in prop::collection::vec(op(), 1..60)) {
        let mut tree: FreeRanges = FreeRanges::new();
        tree.give_back(0, UNITS, spare());
        let mut free = vec![true; UNITS as usize];
        let mut taken: Vec<(u64, u64, Box<Node<Free>>)> = Vec::new();
        for op in ops {
            match op {
                Op::Reserve { span, align_shift, lo, hi } => {
                    let align = 1 << align_shift;
                    let got = tree.find(span, align, 1, lo, hi);
                    prop_assert_eq!(got, model_find(&free, span, align, lo, hi), "find({}, {}, [{}, {}))", span, align, lo, hi);
                    // Every slot that exists is found.
                    prop_assert_eq!(got.is_some(), lowest_slot(&free, span, align, lo, hi, span).is_some());
                    if let Some(start) = got {
                        drop(tree.take(start, span, spare()));
                        for u in start..start + span {
                            prop_assert!(free[u as usize]);
                            free[u as usize] = false;
                        }
                        taken.push((start, span, spare()));
                    }
                }
                Op::Release(i) if !taken.is_empty() => {
                    let (start, span, node) = taken.remove(i % taken.len());
                    tree.give_back(start, start + span, node);
                    for u in start..start + span {
                        free[u as usize] = true;
                    }
                }
                Op::Release(_) => {}
            }
            prop_assert_eq!(tree.iter().collect::<Vec<_>>(), runs(&free));
            prop_assert_eq!(tree.ranges(), runs(&free).len());
        }
    }

    #[test]
    fn a_tree_looks_up_what_was_put_in(keys in prop::collection::btree_set(0u64..10_000, 0..200), probe in 0u64..10_100) {
        struct Unit;
        impl Weight for Unit {
            fn weight(&self) -> u64 {
                0
            }
        }
        let mut tree: Tree<Unit> = Tree::new();
        for &k in &keys {
            tree.insert(Node::new(k, Unit).unwrap());
        }
        prop_assert_eq!(tree.len(), keys.len());
        prop_assert_eq!(tree.iter().map(|(k, _)| k).collect::<Vec<_>>(), keys.iter().copied().collect::<Vec<_>>());
        prop_assert_eq!(tree.at_or_below(probe).map(|(k, _)| k), keys.range(..=probe).next_back().copied());
        let removed = keys.iter().step_by(3).copied().collect::<Vec<_>>();
        for &k in &removed {
            prop_assert!(tree.remove(k).is_some());
        }
        prop_assert_eq!(tree.len(), keys.len() - removed.len());
        prop_assert!(removed.iter().all(|&k| tree.get(k).is_none()));
    }
}

/// An alignment as large as the space: only a range shorter than `span +
/// align - 1` is there, and its start is aligned (the vmalloc region's
/// first range for `vmalloc_aligned(PAGE_SIZE, 1 << 40)`).
#[test]
fn an_alignment_as_large_as_the_space_fits_at_its_aligned_start() {
    let mut tree: FreeRanges = FreeRanges::new();
    tree.give_back(0, UNITS, spare());
    assert_eq!(tree.find(2, UNITS, 1, 0, UNITS), Some(0));
    // A range that starts off the alignment cannot hold it.
    drop(tree.take(0, 1, spare()));
    assert_eq!(tree.find(2, UNITS, 1, 0, UNITS), None);
    assert_eq!(tree.find(2, 128, 1, 0, UNITS), Some(128));
}
