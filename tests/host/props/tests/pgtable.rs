//! The kernel's page tables (`mm/pgtable/*`: walks and their lock, map,
//! unmap, clear, table allocation and reclaim), TLB maintenance
//! (`mm/tlb.rs`) and apply (`mm/apply.rs`), on tables in host memory with
//! the kernel's frame allocator and lazy MMU layer, against a model of
//! what is mapped: after every call the tables map exactly the model's
//! pages (read back with `pgtable::visit`), every table page is the frame
//! allocator's and goes back once empty, a refused call changes nothing,
//! each store pays its pair (or one per section), and every unmap or clear
//! is followed by TLB maintenance that covers exactly the pages it took
//! away, every level of the walk if tables went with them.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use lazymmu_props::addr::{PhysAddr, VirtAddr};
use lazymmu_props::apply::{self, ApplyError};
use lazymmu_props::arch::sysreg;
use lazymmu_props::descriptor::{Attributes, Descriptor, Level};
use lazymmu_props::engine::{LeafSizes, MapError, Operand};
use lazymmu_props::frame_alloc;
use lazymmu_props::host;
use lazymmu_props::lazy_mmu;
use lazymmu_props::mm::internal as mm;
use lazymmu_props::pgtable::{self, Visitor};
use lazymmu_props::task;
use lazymmu_props::tlb::{self, FlushStrategy};
use proptest::prelude::*;

const PAGE: u64 = 4096;
/// The window the tests map in: 8 MiB of the vmalloc area, 1 GiB aligned.
const BASE: u64 = 0xffff_8000_4000_0000;
const WINDOW_PAGES: u64 = 2048;
/// What the window's pages map: physical addresses congruent to their
/// virtual ones modulo 1 GiB (blocks fit where the range allows). Never
/// read or written: only the tables are memory.
const PA_BASE: u64 = 0x40_0000_0000;

struct Tables {
    root: PhysAddr,
}

fn tables() -> (MutexGuard<'static, ()>, &'static Tables) {
    static TURN: Mutex<()> = Mutex::new(());
    static TABLES: OnceLock<Tables> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let tables = TABLES.get_or_init(|| {
        host::init_ram(256, 0, &|_| vec![]);
        let root = pgtable::alloc_table().unwrap();
        mm::set_kernel_root(root);
        Tables { root }
    });
    (turn, tables)
}

fn va(page: u64) -> VirtAddr {
    VirtAddr::new(BASE + page * PAGE)
}

fn pa(page: u64) -> PhysAddr {
    PhysAddr::new(PA_BASE + page * PAGE)
}

/// What the tables map, page by page (window page -> physical page), and
/// how many table pages and leaf entries they hold.
#[derive(Default)]
struct Mapped {
    pages: BTreeMap<u64, (u64, bool)>,
    /// (first page, level) of each block leaf.
    blocks: Vec<(u64, u8)>,
    /// First page of each contiguous run of 16 pages.
    cont_runs: Vec<u64>,
    leaves: usize,
    tables: usize,
}

impl Visitor for Mapped {
    fn table(&mut self, _va: VirtAddr, _level: Level) {
        self.tables += 1;
    }

    fn leaf(&mut self, va: VirtAddr, level: Level, pa: PhysAddr, attrs: Attributes) {
        assert!(va.as_u64() >= BASE && va.as_u64() < BASE + WINDOW_PAGES * PAGE, "a leaf outside the window: {va}");
        self.leaves += 1;
        let first = (va.as_u64() - BASE) / PAGE;
        if level.0 < 3 {
            self.blocks.push((first, level.0));
        } else if attrs.contiguous && first.is_multiple_of(16) {
            self.cont_runs.push(first);
        }
        for i in 0..level.entry_size() / PAGE {
            self.pages.insert(first + i, ((pa.as_u64() - PA_BASE) / PAGE + i, attrs.writable));
        }
    }
}

fn mapped() -> Mapped {
    let mut m = Mapped::default();
    pgtable::visit(&mut m);
    m
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        start: u64,
        count: u64,
        sizes: LeafSizes,
        writable: bool,
    },
    /// Unmaps the `which`-th live mapping (modulo their count), whole.
    Unmap {
        which: usize,
    },
    Clear {
        start: u64,
        count: u64,
    },
    /// A refused call: misaligned or empty ranges.
    Bad {
        start: u64,
        what: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let sizes = prop_oneof![Just(LeafSizes::PagesOnly), Just(LeafSizes::ContPtes), Just(LeafSizes::Blocks)];
    prop_oneof![
        4 => (0..WINDOW_PAGES, 1u64..1100, sizes, any::<bool>()).prop_map(|(start, count, sizes, writable)| Op::Map {
            start,
            count: count.min(WINDOW_PAGES - start),
            sizes,
            writable
        }),
        3 => any::<usize>().prop_map(|which| Op::Unmap { which }),
        2 => (0..WINDOW_PAGES, 1u64..1100)
            .prop_map(|(start, count)| Op::Clear { start, count: count.min(WINDOW_PAGES - start) }),
        1 => (0..WINDOW_PAGES, 0u8..3).prop_map(|(start, what)| Op::Bad { start, what }),
    ]
}

/// Pages the TLBIs since the last call invalidated, and whether they
/// were all of one kind (walks or leaves); None for a whole-TLB flush.
fn invalidated(issued: &[&str], tlbis: &[(&str, u64)]) -> Result<Option<(Vec<u64>, bool)>, TestCaseError> {
    prop_assert!(!tlbis.is_empty(), "no TLBI: {:?}", issued);
    prop_assert_eq!(issued.first(), Some(&"dsb ishst"), "{:?}", issued);
    prop_assert_eq!(&issued[issued.len() - 2..], &["dsb ish", "isb"], "{:?}", issued);
    if tlbis == [("tlbi vmalle1is", 0)] {
        return Ok(None);
    }
    let walks = tlbis[0].0.contains("vaae");
    let mut pages = Vec::new();
    for &(name, operand) in tlbis {
        prop_assert_eq!(name.contains("vaae"), walks, "one kind: {:?}", tlbis);
        if name.starts_with("tlbi r") {
            let (start, n) = sysreg::tlbi_range_of(operand);
            pages.extend((0..n).map(|i| (start - BASE) / PAGE + i));
        } else {
            pages.push((operand - BASE) / PAGE);
        }
    }
    pages.sort_unstable();
    Ok(Some((pages, walks)))
}

fn check(tables: &Tables, ops: &[Op]) -> Result<(), TestCaseError> {
    let root = tables.root;
    let baseline = frame_alloc::stats().used;
    let mut model: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
    let mut live: Vec<(u64, u64)> = Vec::new();
    host::take_issued();
    host::take_tlbis();
    for op in ops {
        let before = frame_alloc::stats().used;
        let was = mapped();
        match *op {
            Op::Map { start, count, sizes, writable } => {
                if (start..start + count).any(|p| model.contains_key(&p)) {
                    continue;
                }
                let attrs = if writable { Attributes::KERNEL_RW } else { Attributes::KERNEL_RO };
                // SAFETY: the window is ours, and its "memory" is never touched.
                let r = unsafe { pgtable::map_range(root, va(start), pa(start), count * PAGE, attrs, sizes) };
                prop_assert_eq!(r, Ok(()));
                model.extend((start..start + count).map(|p| (p, (p, writable))));
                live.push((start, count));
                let now = mapped();
                let new_tables = frame_alloc::stats().used - before;
                prop_assert_eq!(now.tables - was.tables, new_tables, "every new table is linked");
                // Outside a section: a pair after every valid store, each
                // new table's link and each leaf; a new table's zeroes are
                // ordered before its link.
                let issued = host::take_issued();
                let pairs = now.leaves - was.leaves + new_tables;
                prop_assert_eq!(issued.iter().filter(|&&i| i == "dsb ishst").count(), pairs, "{:?}", issued);
                prop_assert_eq!(issued.iter().filter(|&&i| i == "isb").count(), pairs);
                prop_assert_eq!(issued.iter().filter(|&&i| i == "dmb ishst").count(), new_tables);
                prop_assert_eq!(host::take_tlbis(), vec![], "mapping flushes nothing");
            }
            Op::Unmap { which } => {
                if live.is_empty() {
                    continue;
                }
                let (start, count) = live.swap_remove(which % live.len());
                // SAFETY: a range this test mapped.
                let r = unsafe { pgtable::unmap_range(root, va(start), count * PAGE) };
                prop_assert_eq!(r, Ok(()));
                for p in start..start + count {
                    model.remove(&p);
                }
                let freed = before - frame_alloc::stats().used;
                let (issued, tlbis) = (host::take_issued(), host::take_tlbis());
                if let Some((pages, walks)) = invalidated(&issued, &tlbis)? {
                    prop_assert_eq!(pages, (start..start + count).collect::<Vec<_>>());
                    prop_assert_eq!(walks, freed > 0, "walks flushed iff tables went ({} freed)", freed);
                }
            }
            Op::Clear { start, count } => {
                let end = start + count;
                // A block or contiguous run that sticks out of the range
                // is refused whole.
                let out = |first: u64, n: u64| first < end && first + n > start && (first < start || first + n > end);
                let sticks = was
                    .blocks
                    .iter()
                    .map(|&(first, level)| (first, level))
                    .chain(was.cont_runs.iter().map(|&first| (first, 4)))
                    .find(|&(first, level)| out(first, if level == 4 { 16 } else { Level(level).entry_size() / PAGE }));
                // SAFETY: the window is ours.
                let r = unsafe { pgtable::clear_range(root, va(start), count * PAGE) };
                let (issued, tlbis) = (host::take_issued(), host::take_tlbis());
                if let Some((first, level)) = sticks {
                    prop_assert!(
                        matches!(r, Err(MapError::SplitsBlock { .. } | MapError::SplitsContiguousRun(_))),
                        "{:?}: the block at page {} (L{}, 4: a contiguous run) sticks out",
                        r,
                        first,
                        level
                    );
                    prop_assert_eq!(frame_alloc::stats().used, before);
                    prop_assert_eq!(&tlbis, &vec![]);
                } else {
                    prop_assert_eq!(r, Ok(()));
                    let cleared: Vec<u64> = (start..end).filter(|p| model.contains_key(p)).collect();
                    for p in &cleared {
                        model.remove(p);
                    }
                    // Mappings cut by the clear live on in pieces.
                    live = live
                        .into_iter()
                        .flat_map(|(s, c)| {
                            let mut pieces = vec![];
                            if s < start {
                                pieces.push((s, (s + c).min(start) - s));
                            }
                            if s + c > end {
                                pieces.push((end.max(s), s + c - end.max(s)));
                            }
                            pieces
                        })
                        .filter(|&(_, c)| c > 0)
                        .collect();
                    let freed = before - frame_alloc::stats().used;
                    if !tlbis.is_empty() {
                        if let Some((pages, walks)) = invalidated(&issued, &tlbis)? {
                            prop_assert!(
                                cleared.iter().all(|p| pages.binary_search(p).is_ok()),
                                "every cleared page invalidated"
                            );
                            prop_assert!(pages.iter().all(|&p| p >= start && p < end), "only the range's");
                            prop_assert_eq!(walks, freed > 0);
                        }
                    } else {
                        prop_assert!(cleared.is_empty() && freed == 0, "a clear that took pages away flushed nothing");
                    }
                }
            }
            Op::Bad { start, what } => {
                // SAFETY: refused before anything is touched.
                let (r, want) = unsafe {
                    match what {
                        0 => (
                            pgtable::map_range(
                                root,
                                va(start).add(8),
                                pa(start),
                                PAGE,
                                Attributes::KERNEL_RW,
                                LeafSizes::PagesOnly,
                            ),
                            MapError::Misaligned { what: Operand::VirtualAddress, value: va(start).as_u64() + 8 },
                        ),
                        1 => (
                            pgtable::map_range(
                                root,
                                va(start),
                                pa(start).add(16),
                                PAGE,
                                Attributes::KERNEL_RW,
                                LeafSizes::PagesOnly,
                            ),
                            MapError::Misaligned { what: Operand::PhysicalAddress, value: pa(start).as_u64() + 16 },
                        ),
                        _ => (
                            pgtable::unmap_range(root, va(start), PAGE + 1),
                            MapError::Misaligned { what: Operand::Size, value: PAGE + 1 },
                        ),
                    }
                };
                prop_assert_eq!(r, Err(want));
                prop_assert_eq!(frame_alloc::stats().used, before);
                prop_assert_eq!(host::take_issued(), Vec::<&str>::new());
            }
        }
        let now = mapped();
        prop_assert_eq!(&now.pages, &model, "after {:?}", op);
        prop_assert_eq!(now.tables, frame_alloc::stats().used - baseline + 1, "table pages are the allocator's");
        prop_assert_eq!(task::current().walks(), 0, "a walk guard left held");
    }
    // Everything away: every table but the root goes back.
    // SAFETY: the window is ours.
    unsafe { pgtable::clear_range(root, va(0), WINDOW_PAGES * PAGE) }.unwrap();
    prop_assert_eq!(frame_alloc::stats().used, baseline);
    prop_assert_eq!(mapped().tables, 1);
    host::take_issued();
    host::take_tlbis();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tables_match_the_model(ops in prop::collection::vec(op(), 1..24), range: bool) {
        let (_turn, tables) = tables();
        host::set_tlbi_range(range);
        // What a failed case left (the shrinking runs it again): cleared.
        mm::recover_abandoned_walks();
        // SAFETY: the window is ours.
        unsafe { pgtable::clear_range(tables.root, va(0), WINDOW_PAGES * PAGE) }.unwrap();
        let result = check(tables, &ops);
        host::set_tlbi_range(true);
        result?;
    }
}

#[test]
fn a_section_pays_one_pair_for_a_whole_mapping() {
    let (_turn, tables) = tables();
    let _b = lazy_mmu::use_backend(lazy_mmu::Backend::Batched);
    host::take_issued();
    {
        let _s = lazy_mmu::enable();
        // SAFETY: the window is ours.
        unsafe {
            pgtable::map_range(tables.root, va(3), pa(3), 40 * PAGE, Attributes::KERNEL_RW, LeafSizes::PagesOnly)
        }
        .unwrap();
        // Two tables linked (level 2 and 3 below the existing ones?) and
        // 40 leaves: no pair yet; each new table's zeroes ordered.
        let issued = host::take_issued();
        assert!(issued.iter().all(|&i| i == "dmb ishst"), "{issued:?}");
    }
    assert_eq!(host::take_issued(), ["dsb ishst", "isb"]);
    // SAFETY: as above.
    unsafe { pgtable::unmap_range(tables.root, va(3), 40 * PAGE) }.unwrap();
    host::take_issued();
    host::take_tlbis();
}

#[test]
fn the_flush_strategy_follows_the_page_count_and_the_cpu() {
    let (_turn, _tables) = tables();
    host::take_issued();
    host::take_tlbis();
    // A few pages, with range TLBIs: one range operation per power of two
    // run (span::tlbi_range_ops), or pages; a huge range: everything.
    for (pages, range) in [(1u64, true), (3, true), (3, false), (100, true), (100, false), (1 << 20, true)] {
        host::set_tlbi_range(range);
        let want = tlb::strategy(pages);
        tlb::flush_tlb_kernel_range(va(0), VirtAddr::new(va(0).as_u64() + pages * PAGE));
        let (issued, tlbis) = (host::take_issued(), host::take_tlbis());
        assert_eq!(issued.first(), Some(&"dsb ishst"));
        assert_eq!(issued[issued.len() - 2..], ["dsb ish", "isb"]);
        match want {
            FlushStrategy::All => assert_eq!(tlbis, [("tlbi vmalle1is", 0)]),
            FlushStrategy::PerPage => {
                assert_eq!(tlbis, (0..pages).map(|p| ("tlbi vaale1is", va(p).as_u64())).collect::<Vec<_>>())
            }
            FlushStrategy::RangeTlbi => {
                assert!(range, "range TLBIs only where the CPU has them");
                let mut covered = 0;
                for (name, operand) in tlbis {
                    if name == "tlbi rvaale1is" {
                        let (start, n) = sysreg::tlbi_range_of(operand);
                        assert_eq!(start, va(covered).as_u64());
                        covered += n;
                    } else {
                        assert_eq!((name, operand), ("tlbi vaale1is", va(covered).as_u64()));
                        covered += 1;
                    }
                }
                assert_eq!(covered, pages);
            }
        }
    }
    host::set_tlbi_range(true);
    // Nothing to flush: nothing issued at all.
    tlb::flush_tlb_kernel_range(va(5), va(5));
    assert_eq!(host::take_issued(), Vec::<&str>::new());
    // Two ranges, one flush: one dsb ishst, both ranges, one dsb ish; isb.
    tlb::flush_tlb_kernel_ranges(&[(va(0), va(1)), (va(10), va(11))]);
    assert_eq!(host::take_issued(), ["dsb ishst", "tlbi vaale1is", "tlbi vaale1is", "dsb ish", "isb"]);
    assert_eq!(host::take_tlbis(), [("tlbi vaale1is", va(0).as_u64()), ("tlbi vaale1is", va(10).as_u64())]);
}

#[test]
fn apply_visits_every_slot_and_existing_skips_holes() {
    let (_turn, _tables) = tables();
    let before = frame_alloc::stats().used;
    // Fill pages 510..515 (across a table boundary) with apply.
    let applied = apply::apply_to_page_range::<()>(va(510), 5 * PAGE, |entry| {
        let page = (entry.va.as_u64() - BASE) / PAGE;
        // SAFETY: the window is ours.
        unsafe { pgtable::write_entry(entry, Descriptor(pa(page).as_u64() | 0x403)) };
        Ok(())
    })
    .unwrap();
    assert_eq!(applied.slots, 5);
    assert_eq!(frame_alloc::stats().used - before, applied.tables_allocated);
    let m = mapped();
    assert_eq!(m.pages.keys().copied().collect::<Vec<_>>(), (510..515).collect::<Vec<_>>());
    // The existing walk visits the 5, not the holes around them.
    let mut seen = vec![];
    apply::apply_to_existing_page_range::<()>(va(500), 30 * PAGE, |entry| {
        seen.push((entry.va.as_u64() - BASE) / PAGE);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, (510..515).collect::<Vec<_>>());
    // A callback's error stops the walk where it failed.
    let mut calls = 0;
    let r = apply::apply_to_existing_page_range(va(500), 30 * PAGE, |_| {
        calls += 1;
        if calls == 3 { Err("stop") } else { Ok(()) }
    });
    assert_eq!(r.map(|_| ()), Err(ApplyError::Callback("stop")));
    assert_eq!(calls, 3);
    // A misaligned range: refused, nothing visited.
    let r = apply::apply_to_page_range::<()>(va(1).add(1), PAGE, |_| panic!("visited"));
    assert!(matches!(r, Err(ApplyError::Map(MapError::Misaligned { what: Operand::VirtualAddress, .. }))));
    // SAFETY: the window is ours.
    unsafe { pgtable::clear_range(_tables.root, va(0), WINDOW_PAGES * PAGE) }.unwrap();
    assert_eq!(frame_alloc::stats().used, before);
    host::take_issued();
    host::take_tlbis();
}

#[test]
fn lookup_finds_the_deepest_entry() {
    let (_turn, tables) = tables();
    // SAFETY: the window is ours.
    unsafe { pgtable::map_range(tables.root, va(512), pa(512), 512 * PAGE, Attributes::KERNEL_RO, LeafSizes::Blocks) }
        .unwrap();
    let found = pgtable::lookup(va(700));
    assert_eq!((found.level, found.va), (Level::L2, va(512)));
    assert!(matches!(found.entry, lazymmu_props::descriptor::Entry::Leaf { addr, .. } if addr == pa(512)));
    let hole = pgtable::lookup(va(100));
    assert_eq!(hole.entry, lazymmu_props::descriptor::Entry::Invalid);
    assert_eq!(task::current().walks(), 0);
    // SAFETY: as above.
    unsafe { pgtable::unmap_range(tables.root, va(512), 512 * PAGE) }.unwrap();
    // A single block went: one TLBI for its pages... and the tables.
    host::take_issued();
    host::take_tlbis();
}

#[test]
fn exclusive_waits_for_no_walk_and_masks_irqs() {
    let (_turn, _tables) = tables();
    assert!(!mm::exclusive_held());
    {
        let _e = pgtable::exclusive();
        assert!(mm::exclusive_held());
        assert!(task::current().holds_exclusive());
        assert!(host::irqs_masked(), "exclusive() masks IRQs while held");
    }
    assert!(!mm::exclusive_held());
    assert!(!host::irqs_masked());
    {
        let walk = pgtable::walking();
        assert_eq!(task::current().walks(), 1);
        // A walk in progress: tables cannot be taken away now.
        assert!(pgtable::try_exclusive().is_none());
        assert!(!host::irqs_masked(), "a refused try_exclusive() leaves IRQs as they were");
        // exclusive() inside the task's own walk would wait for itself.
        let own = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(pgtable::exclusive())));
        assert!(own.is_err());
        drop(walk);
    }
    assert_eq!(task::current().walks(), 0);
    assert!(pgtable::try_exclusive().is_some());
}

#[test]
fn ptdump_merges_runs_of_one_size_and_attributes_per_region() {
    use lazymmu_props::layout::{MMIO_BASE, REGIONS};
    use lazymmu_props::ptdump;
    let (_turn, tables) = tables();
    let root = tables.root;
    let mmio = MMIO_BASE.as_u64();
    // SAFETY: the window and the MMIO slot are the test's; nothing is touched.
    unsafe {
        // 3 pages RW, then 2 pages RO (a new line), then a 2 MiB block and
        // 32 pages in contiguous runs, all in vmalloc; 1 device page.
        pgtable::map_range(root, va(1), pa(1), 3 * PAGE, Attributes::KERNEL_RW, LeafSizes::PagesOnly).unwrap();
        pgtable::map_range(root, va(4), pa(4), 2 * PAGE, Attributes::KERNEL_RO, LeafSizes::PagesOnly).unwrap();
        pgtable::map_range(root, va(512), pa(512), 512 * PAGE, Attributes::KERNEL_RW, LeafSizes::Blocks).unwrap();
        pgtable::map_range(root, va(1024), pa(1024), 32 * PAGE, Attributes::KERNEL_RW, LeafSizes::ContPtes).unwrap();
        pgtable::map_range(
            root,
            VirtAddr::new(mmio),
            PhysAddr::new(0x0900_0000),
            PAGE,
            Attributes::DEVICE,
            LeafSizes::PagesOnly,
        )
        .unwrap();
    }
    let mut out = String::new();
    ptdump::dump(&mut out).unwrap();
    assert_eq!(
        out,
        format!(
            "---[ vmalloc ]---\n\
             {:#018x}-{:#018x}     12K    4K RW NX normal\n\
             {:#018x}-{:#018x}      8K    4K ro NX normal\n\
             {:#018x}-{:#018x}      2M    2M RW NX normal\n\
             {:#018x}-{:#018x}    128K    4K RW NX normal CONT\n\
             ---[ mmio ]---\n\
             {:#018x}-{:#018x}      4K    4K RW NX device\n",
            BASE + PAGE,
            BASE + 4 * PAGE,
            BASE + 4 * PAGE,
            BASE + 6 * PAGE,
            BASE + 512 * PAGE,
            BASE + 1024 * PAGE,
            BASE + 1024 * PAGE,
            BASE + 1056 * PAGE,
            mmio,
            mmio + PAGE,
        )
    );
    let stats = ptdump::region_stats();
    let vmalloc = REGIONS.iter().position(|r| r.0 == "vmalloc").unwrap();
    let mmio_region = REGIONS.iter().position(|r| r.0 == "mmio").unwrap();
    // vmalloc: one table at levels 1 and 2, two level-3 tables (pages
    // 0..512 and 1024..1536); the block and 37 pages.
    assert_eq!(stats[vmalloc].tables, [0, 1, 1, 2]);
    assert_eq!((stats[vmalloc].blocks_1g, stats[vmalloc].blocks_2m, stats[vmalloc].pages), (0, 1, 37));
    assert_eq!(stats[mmio_region].table_pages(), 3);
    assert_eq!(stats[mmio_region].pages, 1);
    // SAFETY: as above.
    unsafe {
        pgtable::clear_range(root, va(0), WINDOW_PAGES * PAGE).unwrap();
        pgtable::unmap_range(root, VirtAddr::new(mmio), PAGE).unwrap();
    }
    host::take_issued();
    host::take_tlbis();
}
