//! apply_to_page_range and the vmalloc-style mappers: every mapping checked
//! with `at s1e1r` and by access, every unmapping by an expected fault,
//! barrier and TLBI counts exact, errors typed and side-effect free.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

/// The KASAN shadow model of `demo kasan`, shared with the boot binary;
/// this image uses a part of it.
#[allow(dead_code)]
#[path = "../kernel/cmd/kasan_shadow.rs"]
mod kasan_shadow;

use alloc::vec::Vec;
use core::convert::Infallible;

use lazymmu::barrier::{BarrierCounts, cost};
use lazymmu::dtb;
use lazymmu::exception::{ExceptionClass, FaultStatus};
use lazymmu::mm::{
    self, Access, Applied, ApplyError, ApplyMode, AreaInfo, Attributes, BLOCK_1G, BLOCK_2M, Descriptor, Entry,
    FlushStrategy, GUARD_SIZE, HwTranslation, Level, PAGE_SIZE, PhysAddr, REGIONS, VMALLOC_END, VMALLOC_START,
    VirtAddr, VmallocError, apply_mode, apply_to_existing_page_range, apply_to_existing_page_range_by_table,
    apply_to_existing_page_range_nolazy, apply_to_page_range, apply_to_page_range_by_table, apply_to_page_range_nolazy,
    find_area, frame_alloc, free_vm_area, get_vm_area, hw_translate, lazy_max_pages,
    lazy_mmu::{Backend, BackendSelection, is_lazy_mmu_mode_active, use_backend},
    lazy_pages,
    pgtable::{self, EntryRef, MapError, Operand, Ptes},
    probe,
    ptdump::{RegionStats, region_stats},
    set_apply_mode, set_vmap_lazy_purge, vfree, vm_unmap_aliases, vmalloc, vmalloc_aligned, vmalloc_range,
    vmap_contiguous, vmap_pages, vmap_range, vunmap, vunmap_range, vzalloc,
};

lazymmu::test_image!();

fn pairs(c: BarrierCounts) -> (u64, u64) {
    (c.dsb_ishst, c.isb)
}

/// Selects a backend and an apply mode for a test; puts both back after.
struct Setting {
    _backend: BackendSelection,
    mode: ApplyMode,
}

impl Setting {
    fn new(backend: Backend, mode: ApplyMode) -> Setting {
        let previous = Setting { _backend: use_backend(backend), mode: apply_mode() };
        set_apply_mode(mode);
        previous
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        set_apply_mode(self.mode);
    }
}

/// The frame behind `va` as the MMU sees it (panics on a fault).
fn frame_of(va: VirtAddr) -> PhysAddr {
    match hw_translate(va, Access::Write) {
        HwTranslation::Mapped { pa, mair_attr: 0xff } => PhysAddr::new(pa.as_u64() & !(PAGE_SIZE - 1)),
        other => panic!("{va} is not mapped as normal RW memory: {other:?}"),
    }
}

/// Checks every page of [va, va + pages): mapped (at s1e1r/w), distinct
/// frames, and really readable and writable.
fn check_mapped(va: VirtAddr, pages: u64) {
    let mut frames = Vec::new();
    for i in 0..pages {
        let page = va.add(i * PAGE_SIZE);
        frames.push(frame_of(page));
        let value = 0x5eed_0000 + i;
        // SAFETY: the page was just mapped for us.
        unsafe { probe::write(page, value).unwrap() };
        assert_eq!(probe::read(page), Ok(value));
    }
    frames.sort();
    frames.dedup();
    assert_eq!(frames.len() as u64, pages, "every page has its own frame");
}

/// Checks that every page of [va, va + pages) takes a level-3 translation
/// fault, by `at s1e1r` and by a real read.
fn check_unmapped(va: VirtAddr, pages: u64) {
    for i in 0..pages {
        let page = va.add(i * PAGE_SIZE);
        assert!(matches!(hw_translate(page, Access::Read), HwTranslation::Fault(FaultStatus::Translation { .. })));
        let fault = probe::read(page).unwrap_err();
        assert_eq!(fault.class, ExceptionClass::DataAbortCurrentEl);
        assert!(matches!(fault.status, Some(FaultStatus::Translation { .. })), "{page}: {fault:?}");
    }
}

/// Purges what was freed lazily, then checks that [va, va + pages)
/// faults: `vfree` and `vunmap` leave their flush to the next purge, and
/// until then the TLB may still translate the pages (`at s1e1r` does).
fn check_purged(va: VirtAddr, pages: u64) {
    vm_unmap_aliases();
    check_unmapped(va, pages);
}

/// The lazy vfree purge on or off (`vmap_lazy_purge`) while a test runs;
/// put back after.
struct LazyPurge(bool);

impl LazyPurge {
    fn set(on: bool) -> LazyPurge {
        LazyPurge(set_vmap_lazy_purge(on))
    }
}

impl Drop for LazyPurge {
    fn drop(&mut self) {
        set_vmap_lazy_purge(self.0);
    }
}

/// Frames used, areas live, and the vmalloc region's table pages and
/// leaves: what every operation must give back, and no error may change.
fn footprint() -> (usize, usize, RegionStats) {
    let vmalloc_region = region_stats()[REGIONS.iter().position(|r| r.0 == "vmalloc").expect("a vmalloc region")];
    (frame_alloc::stats().used, mm::area_count(), vmalloc_region)
}

/// [`footprint`] once lazily freed areas are purged and the empty page
/// tables reclaimed: vmalloc's tables stay after an unmap, as Linux's do,
/// until an explicit reclaim.
fn footprint_reclaimed() -> (usize, usize, RegionStats) {
    vm_unmap_aliases();
    mm::reclaim_page_tables();
    footprint()
}

// ---- vmalloc barrier costs ---------------------------------------------------

#[test_case]
fn batched_vmalloc_of_n_pages_costs_one_pair() {
    let _s = Setting::new(Backend::Batched, ApplyMode::WholeCall);
    for n in [1, 512, 4096] {
        let before = footprint();
        let lazy_allocs = frame_alloc::allocations_in_lazy_mode();
        let mut va = VirtAddr::new(0);
        let c = cost(|| va = vmalloc(n * PAGE_SIZE).unwrap());
        assert_eq!(pairs(c), (1, 1), "N = {n}: one dsb ishst + isb for the whole vmalloc");
        assert_eq!(frame_alloc::allocations_in_lazy_mode(), lazy_allocs, "no frame allocated inside the section");
        check_mapped(va, n);
        vfree(va).unwrap();
        check_purged(va, n);
        assert_eq!(footprint_reclaimed(), before, "N = {n}: every frame and table came back");
    }
}

#[test_case]
fn batched_vmalloc_that_needs_new_tables_still_costs_one_pair() {
    let _s = Setting::new(Backend::Batched, ApplyMode::WholeCall);
    // 3 leaf tables' worth, starting 8 pages before a 2 MiB boundary, in a
    // fresh part of the region: new level-3 tables (and maybe level 2).
    let stretch = Stretch::new();
    let start = stretch.0.add(BLOCK_2M - 8 * PAGE_SIZE);
    let before = frame_alloc::stats().used;
    let mut applied = Applied::default();
    let c = cost(|| {
        applied = apply_to_page_range(start, 2 * BLOCK_2M, |entry: &EntryRef| {
            // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
            unsafe {
                pgtable::write_entry(
                    entry,
                    Descriptor::leaf(Level::L3, PhysAddr::new(0x4000_0000), Attributes::KERNEL_RO),
                )
            };
            Ok::<(), Infallible>(())
        })
        .unwrap()
    });
    assert!(applied.tables_allocated >= 3, "three leaf tables were made: {applied:?}");
    assert_eq!(applied.slots, 1024);
    assert_eq!(pairs(c), (1, 1), "tables and leaves in one section: one pair");
    assert_eq!(frame_alloc::stats().used - before, applied.tables_allocated);
    assert_eq!(applied.levels_modified & 0b1100, 0b1100, "level-2 table entries and level-3 leaves written");
    unmap_test_range(start, 2 * BLOCK_2M);
    assert_eq!(frame_alloc::stats().used - before, applied.tables_allocated, "the tables stay, as in Linux");
    assert_eq!(mm::reclaim_page_tables(), applied.tables_allocated, "until a reclaim takes them");
    assert_eq!(frame_alloc::stats().used, before);
}

/// Clears what the tests mapped by hand with apply_to_page_range.
fn unmap_test_range(start: VirtAddr, size: u64) {
    mm::vunmap_range(start, start.add(size)).unwrap();
}

fn map_with(mode: ApplyMode, backend: Backend, start: VirtAddr, size: u64) -> (Applied, BarrierCounts) {
    let _s = Setting::new(backend, mode);
    let mut applied = Applied::default();
    let c = cost(|| {
        applied = apply_to_page_range(start, size, |entry: &EntryRef| {
            // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
            unsafe {
                pgtable::write_entry(
                    entry,
                    Descriptor::leaf(Level::L3, PhysAddr::new(0x4000_0000), Attributes::KERNEL_RO),
                )
            };
            Ok::<(), Infallible>(())
        })
        .unwrap()
    });
    (applied, c)
}

/// The walk for `va` ends at level 0 or 1: no level-2 table covers it.
fn no_tables_below(va: VirtAddr) -> bool {
    let entry = pgtable::lookup(va);
    entry.level <= Level::L1 && entry.entry == Entry::Invalid
}

/// A fresh 1 GiB of the region, for mapping by hand: reserved while the
/// test runs, so no vmalloc lands in it, and no tables below it yet.
struct Stretch(VirtAddr);

impl Stretch {
    fn new() -> Stretch {
        let va = get_vm_area(BLOCK_1G, BLOCK_1G).expect("1 GiB of address space");
        assert!(no_tables_below(va), "no tables below {va}");
        Stretch(va)
    }
}

impl Drop for Stretch {
    fn drop(&mut self) {
        free_vm_area(self.0).unwrap();
    }
}

#[test_case]
fn linux_style_mode_costs_a_pair_per_leaf_table_and_per_new_table_entry() {
    let stretch = Stretch::new();
    let start = stretch.0.add(BLOCK_2M - 8 * PAGE_SIZE);
    let size = 2 * BLOCK_2M;
    let leaf_tables = 3;
    let (applied, c) = map_with(ApplyMode::PerLeafTable, Backend::Batched, start, size);
    assert_eq!(applied.slots, 1024);
    assert_eq!(
        pairs(c),
        (leaf_tables + applied.tables_allocated as u64, leaf_tables + applied.tables_allocated as u64),
        "{applied:?}"
    );
    unmap_test_range(start, size);

    // The tables stayed: mapping again writes leaves only.
    let (again, c) = map_with(ApplyMode::PerLeafTable, Backend::Batched, start, size);
    assert_eq!(again.tables_allocated, 0, "no table needed again");
    assert_eq!(pairs(c), (leaf_tables, leaf_tables), "a pair per leaf table, none for tables");
    unmap_test_range(start, size);
    mm::reclaim_page_tables();
    let (again, c) = map_with(ApplyMode::WholeCall, Backend::Batched, start, size);
    assert_eq!(again.tables_allocated, applied.tables_allocated, "after a reclaim, the same tables were needed");
    assert_eq!(pairs(c), (1, 1));
    unmap_test_range(start, size);
}

#[test_case]
fn eager_costs_a_pair_per_entry_written() {
    let stretch = Stretch::new();
    let start = stretch.0.add(BLOCK_2M - 8 * PAGE_SIZE);
    let size = 2 * BLOCK_2M;
    let (applied, c) = map_with(ApplyMode::WholeCall, Backend::Eager, start, size);
    let entries = applied.slots + applied.tables_allocated as u64;
    assert_eq!(pairs(c), (entries, entries), "{applied:?}");
    unmap_test_range(start, size);
}

#[test_case]
fn deferred_writes_vmalloc_maps_everything_by_the_end_of_the_call() {
    let _s = Setting::new(Backend::DeferredWrites, ApplyMode::WholeCall);
    let before = footprint();
    // Crosses leaf tables, so the walk links tables whose entries are still
    // queued when it needs them again: it must not read them back.
    let va = vmalloc_aligned(BLOCK_2M + 16 * PAGE_SIZE, BLOCK_2M).unwrap();
    check_mapped(va, 512 + 16);
    vfree(va).unwrap();
    check_purged(va, 512 + 16);
    assert_eq!(footprint_reclaimed(), before);
}

#[test_case]
fn deferred_writes_walk_never_reads_back_the_tables_it_linked() {
    // 16 pages across a 2 MiB boundary in an empty stretch: the walk links
    // new tables for both halves in one section, with far fewer than 64
    // stores, so nothing is applied early; reading its own links back would
    // find them still invalid.
    let stretch = Stretch::new();
    let start = stretch.0.add(BLOCK_2M - 8 * PAGE_SIZE);
    let frame = frame_alloc::alloc_frame().unwrap();
    let (applied, c) = {
        let _s = Setting::new(Backend::DeferredWrites, ApplyMode::WholeCall);
        let mut applied = Applied::default();
        let c = cost(|| {
            applied = apply_to_page_range(start, 16 * PAGE_SIZE, |entry: &EntryRef| {
                // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
                unsafe { pgtable::write_entry(entry, Descriptor::leaf(Level::L3, frame, Attributes::KERNEL_RO)) };
                Ok::<(), Infallible>(())
            })
            .unwrap()
        });
        (applied, c)
    };
    assert!(applied.tables_allocated >= 2, "{applied:?}");
    assert!(16 + applied.tables_allocated < 64, "the queue never filled");
    assert_eq!(pairs(c), (1, 1), "one flush of the queue, at the end");
    for i in 0..16 {
        assert_eq!(
            hw_translate(start.add(i * PAGE_SIZE), Access::Read),
            HwTranslation::Mapped { pa: frame, mair_attr: 0xff }
        );
    }
    unmap_test_range(start, 16 * PAGE_SIZE);
    frame_alloc::free_frame(frame).unwrap();
}

// ---- vfree: one TLB flush -----------------------------------------------------

#[test_case]
fn vfree_of_n_pages_is_one_tlb_flush_and_no_per_page_barriers() {
    // The counts of vmap_lazy_purge=off: each vfree flushes its own range
    // (with the purge on, see `vfree_of_a_page_issues_no_tlbi`).
    let _eager = LazyPurge::set(false);
    let _s = Setting::new(Backend::Batched, ApplyMode::WholeCall);
    for n in [1, 512, 4096] {
        let va = vmalloc(n * PAGE_SIZE).unwrap();
        check_mapped(va, n); // the TLB now holds every page
        let used = frame_alloc::stats().used;
        let c = cost(|| vfree(va).unwrap());
        assert_eq!(used - frame_alloc::stats().used, n as usize, "N = {n}: the pages went, the tables stay");
        // With range TLBI an odd page count leaves one page for a plain TLBI.
        let expected_tlbi = match mm::flush_strategy(n) {
            FlushStrategy::RangeTlbi => (n % 2, (n > 1) as u64, 0),
            FlushStrategy::PerPage => (n, 0, 0),
            FlushStrategy::All => (0, 0, 1),
        };
        assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), expected_tlbi, "N = {n}");
        // No table went, so no walk needs dropping: a leaf-only flush.
        assert_eq!(c.tlbi_walks, 0, "N = {n}: {c:?}");
        assert_eq!((c.dsb_ishst, c.dsb_ish, c.isb), (1, 1, 1), "N = {n}: the flush's own barriers, nothing per page");
        check_unmapped(va, n);
    }
}

#[test_case]
fn a_page_vmalloc_after_a_page_vfree_links_no_table() {
    // Linux keeps vmalloc's page tables: the second 1-page vmalloc in the
    // same place finds its level-3 table there and writes one leaf.
    let _s = Setting::new(Backend::Batched, ApplyMode::WholeCall);
    let va = vmalloc(PAGE_SIZE).unwrap();
    vfree(va).unwrap();
    vm_unmap_aliases();
    let (used, tables) = (frame_alloc::stats().used, footprint().2.tables);
    let mut again = VirtAddr::new(0);
    let c = cost(|| again = vmalloc(PAGE_SIZE).unwrap());
    assert_eq!(again, va, "the lowest free range, the same as before");
    assert_eq!(frame_alloc::stats().used, used + 1, "one frame: the page, no table");
    assert_eq!(footprint().2.tables, tables, "no table made");
    assert_eq!(pairs(c), (1, 1), "one leaf, one pair");
    check_mapped(again, 1);
    vfree(again).unwrap();
    vm_unmap_aliases();
    assert_eq!(frame_alloc::stats().used, used, "the page went back; its table stays");
    assert!(mm::reclaim_page_tables() >= 1, "until an explicit reclaim");
}

// ---- areas ---------------------------------------------------------------------

#[test_case]
fn areas_have_a_guard_page_and_can_be_looked_up() {
    let a = vmalloc(2 * PAGE_SIZE).unwrap();
    let b = vmalloc(PAGE_SIZE).unwrap();
    assert!(b.as_u64() >= a.as_u64() + 3 * PAGE_SIZE, "a guard page separates {a} and {b}");
    let guard = a.add(2 * PAGE_SIZE);
    check_unmapped(guard, 1);
    assert_eq!(find_area(a.add(PAGE_SIZE + 8)), Some(AreaInfo { start: a, size: 2 * PAGE_SIZE }));
    assert_eq!(find_area(guard), None);
    vfree(a).unwrap();
    vfree(b).unwrap();
    assert_eq!(find_area(a), None);
}

#[test_case]
fn vmalloc_aligned_and_vzalloc_do_what_they_say() {
    let va = vmalloc_aligned(16 * PAGE_SIZE, BLOCK_2M).unwrap();
    assert!(va.is_aligned(BLOCK_2M));
    vfree(va).unwrap();
    // Dirty some frames, free them, then vzalloc: its pages read as zero.
    let dirty = vmalloc(64 * PAGE_SIZE).unwrap();
    check_mapped(dirty, 64);
    vfree(dirty).unwrap();
    let zeroed = vzalloc(64 * PAGE_SIZE).unwrap();
    for i in 0..64 * PAGE_SIZE / 8 {
        assert_eq!(probe::read(zeroed.add(i * 8)), Ok(0));
    }
    vfree(zeroed).unwrap();
}

#[test_case]
fn vmap_pages_maps_the_callers_frames_and_vunmap_leaves_them() {
    let before = footprint();
    let frames: Vec<PhysAddr> = (0..3).map(|_| frame_alloc::alloc_frame().unwrap()).collect();
    // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
    let va = unsafe { vmap_pages(&[frames[2], frames[0], frames[1]], Attributes::KERNEL_RW) }.unwrap();
    assert_eq!(
        [frame_of(va), frame_of(va.add(PAGE_SIZE)), frame_of(va.add(2 * PAGE_SIZE))],
        [frames[2], frames[0], frames[1]]
    );
    check_mapped(va, 3);
    vunmap(va).unwrap();
    check_purged(va, 3);
    mm::reclaim_page_tables();
    assert_eq!(frame_alloc::stats().used, before.0 + 3, "the frames are still the caller's");
    for pa in frames {
        frame_alloc::free_frame(pa).unwrap();
    }
    assert_eq!(footprint(), before);
}

#[test_case]
fn vmap_contiguous_uses_blocks_where_addresses_and_size_allow() {
    let before = footprint();
    // 1 GiB of RAM starting at its (1 GiB aligned) base: one level-1 block.
    let ram = dtb::info().ram_start;
    // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
    let va = unsafe { vmap_contiguous(ram, BLOCK_1G, Attributes::KERNEL_RO) }.unwrap();
    assert!(va.is_aligned(BLOCK_1G));
    assert_eq!(pgtable::lookup(va).level, Level::L1);
    for off in [0, 0x1234_5000, BLOCK_1G - PAGE_SIZE] {
        assert_eq!(
            hw_translate(va.add(off), Access::Read),
            HwTranslation::Mapped { pa: ram.add(off), mair_attr: 0xff }
        );
    }
    vunmap(va).unwrap();
    check_unmapped(va, 1);

    // 2 MiB + 4 KiB of contiguous frames: one level-2 block and one page.
    let pa = frame_alloc::alloc_contiguous(513, BLOCK_2M).unwrap();
    // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
    let va = unsafe { vmap_contiguous(pa, BLOCK_2M + PAGE_SIZE, Attributes::KERNEL_RW) }.unwrap();
    assert_eq!(pgtable::lookup(va).level, Level::L2);
    assert_eq!(pgtable::lookup(va.add(BLOCK_2M)).level, Level::L3);
    check_mapped(va, 1);
    assert_eq!(frame_of(va.add(BLOCK_2M)), pa.add(BLOCK_2M));
    vunmap(va).unwrap();
    check_purged(va, 1);
    check_unmapped(va.add(BLOCK_2M), 1);
    frame_alloc::free_frames(pa, 513).unwrap();
    assert_eq!(footprint_reclaimed(), before);
}

#[test_case]
fn mappers_called_inside_a_deferred_writes_section_read_back_nothing_stale() {
    // Found by the fuzzer: a caller's open section makes the mappers' own
    // table links wait in its queue, where walks that read them back (table
    // creation, block splitting, emptiness checks) would miss them.
    let _s = Setting::new(Backend::DeferredWrites, ApplyMode::WholeCall);
    let before = footprint();
    let pa = frame_alloc::alloc_contiguous(513, BLOCK_2M).unwrap();
    let outer = lazymmu::mm::lazy_mmu::enable();
    // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
    let va = unsafe { vmap_contiguous(pa, BLOCK_2M + PAGE_SIZE, Attributes::KERNEL_RW) }.unwrap();
    drop(outer);
    assert_eq!(pgtable::lookup(va).level, Level::L2, "one 2 MiB block");
    assert_eq!(frame_of(va.add(BLOCK_2M)), pa.add(BLOCK_2M));
    let outer = lazymmu::mm::lazy_mmu::enable();
    vunmap(va).unwrap();
    drop(outer);
    check_purged(va, 1);
    check_unmapped(va.add(BLOCK_2M), 1);
    frame_alloc::free_frames(pa, 513).unwrap();
    assert_eq!(footprint_reclaimed(), before, "no table duplicated or left behind");
}

#[test_case]
fn any_sequence_gives_back_every_frame() {
    let before = footprint();
    let a = vmalloc(5 * PAGE_SIZE).unwrap();
    let b = vzalloc(700 * PAGE_SIZE).unwrap();
    let frames: Vec<PhysAddr> = (0..4).map(|_| frame_alloc::alloc_frame().unwrap()).collect();
    // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
    let c = unsafe { vmap_pages(&frames, Attributes::KERNEL_RO) }.unwrap();
    vfree(a).unwrap();
    let d = vmalloc_aligned(3 * PAGE_SIZE, 64 * PAGE_SIZE).unwrap();
    vunmap(c).unwrap();
    vfree(b).unwrap();
    vfree(d).unwrap();
    vm_unmap_aliases();
    for pa in frames {
        frame_alloc::free_frame(pa).unwrap();
    }
    assert_eq!(footprint_reclaimed(), before);
}

// ---- errors: typed, and nothing changed ---------------------------------------

#[test_case]
fn mapper_errors_are_typed_and_change_nothing() {
    let live = vmalloc(2 * PAGE_SIZE).unwrap();
    let before = footprint();
    let lazy_allocs = frame_alloc::allocations_in_lazy_mode();
    let huge = VMALLOC_END.as_u64() - VMALLOC_START.as_u64();
    let cases: [(&str, Result<VirtAddr, VmallocError>, VmallocError); 7] = [
        ("vmalloc(0)", vmalloc(0), VmallocError::ZeroSize),
        ("vmalloc(whole region)", vmalloc(huge), VmallocError::NoVirtualSpace),
        ("vmalloc(u64::MAX)", vmalloc(u64::MAX), VmallocError::NoVirtualSpace),
        ("get_vm_area(0)", get_vm_area(0, PAGE_SIZE), VmallocError::ZeroSize),
        ("vmalloc_aligned(align 3000)", vmalloc_aligned(PAGE_SIZE, 3000), VmallocError::BadAlignment(3000)),
        // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
        ("vmap_pages(no pages)", unsafe { vmap_pages(&[], Attributes::KERNEL_RW) }, VmallocError::EmptyPageList),
        (
            "vmap_pages(unaligned frame)",
            // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
            unsafe { vmap_pages(&[PhysAddr::new(0x4000_0010)], Attributes::KERNEL_RW) },
            VmallocError::Misaligned { what: Operand::Page, value: 0x4000_0010 },
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, Err(want), "{what}");
    }
    assert_eq!(vfree(live.add(PAGE_SIZE)), Err(VmallocError::NotAnArea(live.add(PAGE_SIZE))), "not the start");
    assert_eq!(vunmap(live), Err(VmallocError::NotAnArea(live)), "a vmalloc area is not vunmap's");
    assert_eq!(free_vm_area(live), Err(VmallocError::NotAnArea(live)), "nor free_vm_area's");
    assert_eq!(
        // SAFETY: refused before anything is mapped.
        unsafe { vmap_range(live, live.add(PAGE_SIZE), PhysAddr::new(0x4000_0000), Attributes::KERNEL_RO) },
        Err(VmallocError::NotAnArea(live)),
        "vmap_range maps only into a get_vm_area area"
    );
    assert_eq!(
        vunmap_range(live, live.add(PAGE_SIZE)),
        Err(VmallocError::NotAnArea(live)),
        "and vunmap_range unmaps only there"
    );
    let area = get_vm_area(2 * PAGE_SIZE, PAGE_SIZE).unwrap();
    // SAFETY: RAM, read-only as the linear map has it, in the test's own area.
    unsafe { vmap_range(area, area.add(PAGE_SIZE), PhysAddr::new(0x4000_0000), Attributes::KERNEL_RO) }.unwrap();
    assert_eq!(
        // SAFETY: as above; refused (EBUSY) before anything is mapped.
        unsafe { vmap_range(area, area.add(2 * PAGE_SIZE), PhysAddr::new(0x4000_0000), Attributes::KERNEL_RO) },
        Err(VmallocError::AlreadyMapped(area)),
        "the EBUSY case"
    );
    vunmap_range(area, area.add(2 * PAGE_SIZE)).unwrap();
    free_vm_area(area).unwrap();
    assert_eq!(
        // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
        unsafe { vmap_range(live, live.add(100), PhysAddr::new(0x4000_0000), Attributes::KERNEL_RO) },
        Err(VmallocError::Misaligned { what: Operand::End, value: live.as_u64() + 100 })
    );
    assert_eq!(footprint(), before, "no frame, table or area changed");
    assert_eq!(frame_alloc::allocations_in_lazy_mode(), lazy_allocs);
    check_mapped(live, 2);
    vfree(live).unwrap();
    assert_eq!(vfree(live), Err(VmallocError::NotAnArea(live)), "already freed");
}

#[test_case]
fn vmalloc_out_of_frames_rolls_back_completely() {
    let before = footprint();
    let free = frame_alloc::stats().free as u64;
    // Address space is plentiful, frames are not.
    assert_eq!(vmalloc((free + 1) * PAGE_SIZE), Err(VmallocError::OutOfMemory));
    assert_eq!(footprint(), before);
}

#[test_case]
fn vmalloc_running_out_of_frames_half_way_rolls_back_completely() {
    let before = footprint();
    // Leave 40 frames: the area's tables and some of its 64 pages get
    // frames, then the allocator says no.
    let mut hoard = Vec::new();
    while frame_alloc::stats().free > 40 {
        hoard.push(frame_alloc::alloc_frame().unwrap());
    }
    let got = vmalloc(64 * PAGE_SIZE);
    let free_after = frame_alloc::stats().free;
    for pa in hoard {
        frame_alloc::free_frame(pa).unwrap();
    }
    assert_eq!(got, Err(VmallocError::OutOfMemory));
    assert_eq!(free_after, 40, "every frame it took came back");
    assert_eq!(footprint(), before, "no frame, area, table or entry left behind");
}

#[test_case]
fn apply_errors_are_typed_and_change_nothing() {
    let before = footprint();
    let nop = |_: &EntryRef| Ok::<(), Infallible>(());
    let top = VirtAddr::new(0xffff_ffff_ffff_f000);
    let cases = [
        (
            "empty range",
            apply_to_page_range(VMALLOC_START, 0, nop),
            MapError::BadRange { start: VMALLOC_START, size: 0 },
        ),
        (
            "wrapping range",
            apply_to_page_range(top, 2 * PAGE_SIZE, nop),
            MapError::BadRange { start: top, size: 2 * PAGE_SIZE },
        ),
        (
            "unaligned start",
            apply_to_page_range(VMALLOC_START.add(8), PAGE_SIZE, nop),
            MapError::Misaligned { what: Operand::VirtualAddress, value: VMALLOC_START.as_u64() + 8 },
        ),
        (
            "unaligned size",
            apply_to_page_range(VMALLOC_START, 100, nop),
            MapError::Misaligned { what: Operand::Size, value: 100 },
        ),
        (
            "user half",
            apply_to_page_range(VirtAddr::new(0x4000_0000), PAGE_SIZE, nop),
            MapError::NotKernelAddress(VirtAddr::new(0x4000_0000)),
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, Err(ApplyError::Map(want)), "{what}");
    }
    // Contiguous memory mapped with a 2 MiB block: a page walk is refused
    // there, by the existing variant too, before any callback.
    let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap();
    // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
    let block = unsafe { vmap_contiguous(run, BLOCK_2M, Attributes::KERNEL_RW) }.unwrap();
    let in_a_block = block.add(BLOCK_2M / 2);
    assert_eq!(pgtable::lookup(in_a_block).level, Level::L2);
    for existing in [false, true] {
        let mut calls = 0;
        let f = |_: &EntryRef| {
            calls += 1;
            Ok::<(), Infallible>(())
        };
        let got = if existing {
            apply_to_existing_page_range(in_a_block, PAGE_SIZE, f)
        } else {
            apply_to_page_range(in_a_block, PAGE_SIZE, f)
        };
        assert_eq!(got, Err(ApplyError::Map(MapError::BlockInTheWay { va: in_a_block, level: Level::L2 })));
        assert_eq!(calls, 0);
    }
    vunmap(block).unwrap();
    vm_unmap_aliases();
    frame_alloc::free_frames(run, 512).unwrap();
    assert_eq!(footprint_reclaimed(), before);
}

#[test_case]
fn apply_table_allocation_failure_changes_nothing() {
    let stretch = Stretch::new();
    let start = stretch.0;
    let before = footprint();
    // Take every free frame, so the tables the walk needs cannot be made.
    let mut hoard = Vec::new();
    while let Ok(pa) = frame_alloc::alloc_frame() {
        hoard.push(pa);
    }
    let mut calls = 0;
    let got = apply_to_page_range(start, PAGE_SIZE, |_: &EntryRef| {
        calls += 1;
        Ok::<(), Infallible>(())
    });
    let used_while_hoarding = frame_alloc::stats().used;
    for pa in hoard {
        frame_alloc::free_frame(pa).unwrap();
    }
    assert_eq!(got, Err(ApplyError::Map(MapError::OutOfMemory)));
    assert_eq!(calls, 0);
    assert_eq!(used_while_hoarding, frame_alloc::stats().total, "nothing was freed behind our back");
    assert_eq!(footprint(), before);
    assert!(no_tables_below(start), "no table was linked");
}

#[test_case]
fn a_failing_callback_stops_the_walk_and_its_error_is_returned() {
    let stretch = Stretch::new();
    let start = stretch.0;
    let before = footprint();
    let mut calls = 0;
    let got = apply_to_page_range(start, 8 * PAGE_SIZE, |entry: &EntryRef| {
        calls += 1;
        if entry.va == start.add(3 * PAGE_SIZE) { Err("stop here") } else { Ok(()) }
    });
    assert_eq!(got, Err(ApplyError::Callback("stop here")));
    assert_eq!(calls, 4);
    // SAFETY: the kernel's own root; the test's own range of the vmalloc region.
    unsafe { pgtable::free_empty_tables(pgtable::kernel_root(), start, 8 * PAGE_SIZE) };
    assert_eq!(footprint(), before);
}

/// A callback failing in the first of several new level-3 tables: the
/// tables planned for the rest (four of the five, more than the pool holds
/// inline) go back with the error, in either apply mode and by entry or by
/// table; only the two tables linked on the way to the failure stay.
#[test_case]
fn a_callback_failing_in_the_first_of_several_new_tables_gives_back_every_planned_table() {
    for mode in [ApplyMode::WholeCall, ApplyMode::PerLeafTable] {
        for by_table in [false, true] {
            let _s = Setting::new(Backend::Batched, mode);
            let stretch = Stretch::new();
            let start = stretch.0;
            let size = 4 * BLOCK_2M;
            let before = footprint();
            let got = if by_table {
                apply_to_page_range_by_table(start, size, |_: &Ptes| Err("first table"))
            } else {
                apply_to_page_range(start, size, |_: &EntryRef| Err("first table"))
            };
            assert_eq!(got, Err(ApplyError::Callback("first table")), "{mode:?}, by table {by_table}");
            // The tables on the way to the first level-3 one, and it, linked
            // before the callback ran, are every frame the call kept; nothing
            // below the other three 2 MiB.
            let (used, _, region) = footprint();
            let kept: Vec<usize> = (0..4).map(|l| region.tables[l] - before.2.tables[l]).collect();
            assert_eq!((kept[2], kept[3]), (1, 1), "{mode:?}, by table {by_table}: the tables linked, by level");
            assert_eq!(used, before.0 + kept.iter().sum::<usize>(), "{mode:?}, by table {by_table}: no frame leaked");
            assert_eq!(pgtable::lookup(start).level, Level::L3);
            for i in 1..4 {
                let entry = pgtable::lookup(start.add(i * BLOCK_2M));
                assert_eq!((entry.level, entry.entry), (Level::L2, Entry::Invalid), "2 MiB number {i}");
            }
            // SAFETY: the kernel's own root; the test's own range of the vmalloc region.
            unsafe { pgtable::free_empty_tables(pgtable::kernel_root(), start, size) };
            assert_eq!(footprint(), before, "{mode:?}, by table {by_table}: every frame back");
            assert!(no_tables_below(start), "no table left linked");
        }
    }
}

// ---- variants -------------------------------------------------------------------

#[test_case]
fn existing_variant_skips_holes_and_allocates_nothing() {
    let va = vmalloc(8 * PAGE_SIZE).unwrap();
    let before = footprint();
    let mut seen = Vec::new();
    let applied = apply_to_existing_page_range(
        VMALLOC_START,
        va.as_u64() - VMALLOC_START.as_u64() + 16 * PAGE_SIZE,
        |entry: &EntryRef| {
            if entry.va >= va && entry.va < va.add(8 * PAGE_SIZE) {
                seen.push(entry.va);
            }
            Ok::<(), Infallible>(())
        },
    )
    .unwrap();
    assert_eq!(seen.len(), 8, "every page of the area, once");
    assert_eq!(applied.tables_allocated, 0);
    assert_eq!(footprint(), before);
    vfree(va).unwrap();
}

#[test_case]
fn nolazy_variants_run_the_callback_outside_lazy_mode() {
    let va = vmalloc(2 * PAGE_SIZE).unwrap();
    let mut modes = Vec::new();
    let mut record = |_: &EntryRef| {
        modes.push(is_lazy_mmu_mode_active());
        Ok::<(), Infallible>(())
    };
    apply_to_existing_page_range(va, 2 * PAGE_SIZE, &mut record).unwrap();
    apply_to_existing_page_range_nolazy(va, 2 * PAGE_SIZE, &mut record).unwrap();
    apply_to_page_range(va, 2 * PAGE_SIZE, &mut record).unwrap();
    apply_to_page_range_nolazy(va, 2 * PAGE_SIZE, &mut record).unwrap();
    assert_eq!(modes, [true, true, false, false, true, true, false, false]);
    vfree(va).unwrap();
}

// ---- the KASAN shadow race (the generic lazy_mmu helpers review) ----------------

#[test_case]
fn kasan_shadow_race_double_maps_only_under_deferred_writes_without_pause() {
    use crate::kasan_shadow::{RaceOutcome, shadow_race};
    let before = footprint();
    for backend in Backend::ALL {
        let _s = Setting::new(backend, ApplyMode::WholeCall);
        for pause in [false, true] {
            let outcome = shadow_race(pause).unwrap();
            // The checker sees the double mapping for what it is on
            // hardware: a live page replaced by another frame, no BBM.
            let reported = lazymmu::mm::pgtable_check::enabled() as u64;
            let expected = if backend == Backend::DeferredWrites && !pause {
                RaceOutcome { installs: 2, double_mappings: 1, bbm_reports: reported }
            } else {
                RaceOutcome { installs: 1, double_mappings: 0, bbm_reports: 0 }
            };
            assert_eq!(outcome, expected, "{backend}, pause {pause}");
            assert_eq!(footprint_reclaimed(), before, "{backend}, pause {pause}: nothing left behind");
        }
    }
}

#[test_case]
fn vmap_range_takes_away_an_empty_table_where_a_block_goes() {
    let va = get_vm_area(BLOCK_2M, BLOCK_2M).unwrap();
    // An empty level-3 table under the area's level-2 entry, as an earlier
    // mapping there (or a walk that made tables) leaves it.
    apply_to_page_range(va, PAGE_SIZE, |_: &EntryRef| Ok::<(), Infallible>(())).unwrap();
    assert_eq!(pgtable::lookup(va).level, Level::L3);
    let vmalloc_region = REGIONS.iter().position(|r| r.0 == "vmalloc").unwrap();
    let l3_tables = region_stats()[vmalloc_region].tables[3];
    let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap();
    // It used to refuse with AlreadyMapped; Linux frees the empty table
    // (pmd_free_pte_page): unlink, flush its walks, free, then the block.
    // SAFETY: the test's own frames, or RAM read-only as the linear map has it, in the test's own area.
    let c = cost(|| unsafe { vmap_range(va, va.add(BLOCK_2M), run, Attributes::KERNEL_RW) }.unwrap());
    assert_eq!(pgtable::lookup(va).level, Level::L2, "a 2 MiB block now");
    assert_eq!(region_stats()[vmalloc_region].tables[3], l3_tables - 1, "the empty level-3 table was freed");
    match mm::flush_strategy(512) {
        FlushStrategy::RangeTlbi => assert_eq!((c.tlbi_range, c.tlbi_walks), (1, 1), "one flush of its walks: {c:?}"),
        _ => assert_eq!(c.tlbi_all, 1, "512 pages: a full flush, walks included: {c:?}"),
    }
    assert_eq!(
        hw_translate(va.add(5 * PAGE_SIZE), Access::Read),
        HwTranslation::Mapped { pa: run.add(5 * PAGE_SIZE), mair_attr: 0xff }
    );
    vunmap_range(va, va.add(BLOCK_2M)).unwrap();
    free_vm_area(va).unwrap();
    frame_alloc::free_frames(run, 512).unwrap();
}

/// A block over an empty table takes the table away (under `exclusive`)
/// before it maps, then plans again under a new walk. A reclaim on another
/// CPU in between may take tables the rest of the range needed, more than
/// the first plan counted: here the level-2 and level-3 tables of the
/// pages after the block, across a 1 GiB boundary. The mapping makes the
/// tables the second plan needs and succeeds; a link on the first plan
/// would run out of tables half way.
#[test_case]
fn a_reclaim_between_the_plan_and_the_link_is_planned_again() {
    let before = footprint_reclaimed();
    let area = get_vm_area(2 * BLOCK_1G, BLOCK_1G).unwrap();
    let boundary = area.add(BLOCK_1G);
    let (va, end) = (VirtAddr::new(boundary.as_u64() - BLOCK_2M), boundary.add(4 * PAGE_SIZE));
    // Empty tables at both ends, as earlier mappings leave them.
    for at in [va, boundary] {
        apply_to_page_range(at, PAGE_SIZE, |_: &EntryRef| Ok::<(), Infallible>(())).unwrap();
        assert_eq!(pgtable::lookup(at).level, Level::L3);
    }
    let run = frame_alloc::alloc_contiguous(512 + 4, BLOCK_2M).unwrap();
    fn another_cpus_reclaim() {
        assert!(mm::reclaim_page_tables() >= 3, "the tables of both ends");
    }
    pgtable::set_reclaim_race(Some(another_cpus_reclaim));
    // SAFETY: the test's own frames, in its own area.
    let mapped = unsafe { vmap_range(va, end, run, Attributes::KERNEL_RW) };
    pgtable::set_reclaim_race(None);
    assert_eq!(mapped, Ok(()));
    assert_eq!(pgtable::lookup(va).level, Level::L2, "a 2 MiB block");
    for i in 0..4 {
        assert_eq!(
            hw_translate(boundary.add(i * PAGE_SIZE), Access::Read),
            HwTranslation::Mapped { pa: run.add(BLOCK_2M + i * PAGE_SIZE), mair_attr: 0xff }
        );
    }
    vunmap_range(va, end).unwrap();
    free_vm_area(area).unwrap();
    frame_alloc::free_frames(run, 512 + 4).unwrap();
    assert_eq!(footprint_reclaimed(), before, "every frame and table back");
}

// ---- vmalloc at scale ---------------------------------------------------------

#[test_case]
fn requests_bigger_than_the_machine_or_the_region_are_refused_before_anything_is_taken() {
    let before = lazymmu::mm::audit::state();
    let ram = frame_alloc::stats().total as u64 * PAGE_SIZE;
    for (size, want) in [
        (64 << 30, VmallocError::OutOfMemory),
        (ram + PAGE_SIZE, VmallocError::OutOfMemory),
        (1 << 40, VmallocError::NoVirtualSpace),
        (u64::MAX, VmallocError::NoVirtualSpace),
    ] {
        assert_eq!(vmalloc(size), Err(want), "vmalloc({size:#x})");
        assert_eq!(vzalloc(size), Err(want), "vzalloc({size:#x})");
        assert_eq!(vmalloc_aligned(size, BLOCK_2M), Err(want), "vmalloc_aligned({size:#x})");
        assert_eq!(lazymmu::mm::audit::state(), before, "{size:#x}: nothing changed");
    }
    // Address space alone is not memory: 64 GiB of it is there to take.
    let big = get_vm_area(64 << 30, PAGE_SIZE).unwrap();
    free_vm_area(big).unwrap();
    assert_eq!(get_vm_area(1 << 40, PAGE_SIZE), Err(VmallocError::NoVirtualSpace));
    assert_eq!(lazymmu::mm::audit::state(), before);
}

/// vmalloc's bookkeeping comes from slab caches, not the heap: with every
/// byte of heap taken, areas are still reserved and given back. (A slab
/// that cannot have a frame is `OutOfMemory`:
/// `a_reservation_whose_slab_cannot_grow_fails_cleanly`.)
#[test_case]
fn with_the_heap_exhausted_areas_are_still_reserved_and_given_back() {
    let before = lazymmu::mm::audit::state();
    // Take every byte of heap the allocator will give, largest pieces first
    // (a reserved capacity holds its memory).
    let mut hoard: Vec<Vec<u8>> = Vec::with_capacity(8192);
    let mut piece = 1 << 20;
    while piece >= 8 && hoard.len() < hoard.capacity() {
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(piece).is_ok() {
            hoard.push(chunk);
        } else {
            piece /= 2;
        }
    }
    // Address space only: mapping is not bookkeeping (the checker, when
    // it watches, keeps its records on the heap).
    let areas = [get_vm_area(PAGE_SIZE, PAGE_SIZE), get_vm_area(3 * PAGE_SIZE, BLOCK_2M)];
    let freed = areas.map(|area| area.map(free_vm_area));
    drop(hoard);
    assert!(areas.iter().all(Result::is_ok), "{areas:?}");
    assert_eq!(freed, [Ok(Ok(())); 2]);
    assert_eq!(lazymmu::mm::audit::state(), before, "nothing changed");
}

#[test_case]
fn thirty_two_thousand_live_areas_are_placed_found_and_given_back() {
    let before = lazymmu::mm::audit::state();
    const N: usize = 32 * 1024;
    let mut live = Vec::with_capacity(N);
    for _ in 0..N {
        live.push(get_vm_area(PAGE_SIZE, PAGE_SIZE).unwrap());
    }
    assert_eq!(mm::area_count(), N);
    // First fit packs them: each area and its guard page, back to back.
    for pair in live.windows(2) {
        assert_eq!(pair[1].offset_from(pair[0]), PAGE_SIZE + GUARD_SIZE);
    }
    let last = live[N - 1];
    assert_eq!(find_area(last), Some(AreaInfo { start: last, size: PAGE_SIZE }));
    assert_eq!(find_area(last.add(PAGE_SIZE)), None, "a guard page belongs to no area");
    // A buffer among them works; freeing every other area leaves holes
    // the next small request fills, lowest first.
    let va = vmalloc(3 * PAGE_SIZE).unwrap();
    check_mapped(va, 3);
    vfree(va).unwrap();
    for &area in live.iter().step_by(2) {
        free_vm_area(area).unwrap();
    }
    assert_eq!(get_vm_area(PAGE_SIZE, PAGE_SIZE), Ok(live[0]), "the lowest hole");
    free_vm_area(live[0]).unwrap();
    for &area in live.iter().skip(1).step_by(2) {
        free_vm_area(area).unwrap();
    }
    vm_unmap_aliases();
    mm::reclaim_page_tables();
    assert_eq!(lazymmu::mm::audit::state(), before, "every area given back, the region free again");
}

/// Issue 25's stress case, at its size: 200,000 1-page areas live (200,000
/// frames, 781 MiB of the test machine's 1 GiB, and their bookkeeping,
/// about 180 bytes an area, in slabs), every other one freed, the holes
/// refilled. With the bookkeeping on the heap the frees alone took about
/// 6 minutes (each deallocation walked the heap's list of holes), beyond
/// the per-test time limit; from slab caches each call costs the same
/// however many areas are live, and the whole test takes about half a
/// minute. What it asserts is exact: the refill order and the state
/// after (the time limit is the harness's, not a measurement).
#[test_case]
fn two_hundred_thousand_live_areas_free_every_other_and_refill_within_the_time_limit() {
    const N: usize = 200_000;
    let before = lazymmu::mm::audit::state();
    let live: Vec<VirtAddr> = (0..N).map(|_| vmalloc(PAGE_SIZE).unwrap()).collect();
    assert_eq!(mm::area_count(), N);
    live.iter().step_by(2).for_each(|&va| vfree(va).unwrap());
    // The holes are free once purged (many purges ran on the way: 100,000
    // pages is more than lazy_max_pages).
    vm_unmap_aliases();
    let refilled: Vec<VirtAddr> = (0..N / 2).map(|_| vmalloc(PAGE_SIZE).unwrap()).collect();
    // Each hole is one area and its guard: refilled lowest first, exactly.
    assert!(refilled.iter().eq(live.iter().step_by(2)), "every hole refilled, in address order");
    for &va in live.iter().skip(1).step_by(2).chain(&refilled) {
        vfree(va).unwrap();
    }
    vm_unmap_aliases();
    mm::reclaim_page_tables();
    assert_eq!(lazymmu::mm::audit::state(), before, "every area given back, the region free again");
}

/// An alignment as large as the region: the region's first range is
/// shorter than `size + guard + align - page`, but it starts aligned, so
/// the slot is there, and found (Linux's search tests each range it
/// visits exactly: `is_within_this_va`).
#[test_case]
fn vmalloc_aligned_to_the_region_size_fits_at_its_start() {
    assert_eq!(mm::area_count(), 0, "an empty region");
    let region = VMALLOC_END.offset_from(VMALLOC_START);
    assert_eq!(region, 1 << 40);
    let va = vmalloc_aligned(PAGE_SIZE, 1 << 40).unwrap();
    assert_eq!(va, VMALLOC_START);
    check_mapped(va, 1);
    // The slot is taken: no other 1 TiB-aligned one is in the region.
    assert_eq!(vmalloc_aligned(PAGE_SIZE, 1 << 40), Err(VmallocError::NoVirtualSpace));
    assert_eq!(get_vm_area(PAGE_SIZE, 1 << 39), Ok(VMALLOC_START.add(1 << 39)), "the half-way slot");
    free_vm_area(VMALLOC_START.add(1 << 39)).unwrap();
    vfree(va).unwrap();
}

/// A reservation whose slab cache needs a new frame, and cannot have it,
/// is `OutOfMemory` with nothing changed (the frame request is a fault
/// injection point like any other).
#[test_case]
fn a_reservation_whose_slab_cannot_grow_fails_cleanly() {
    let mut live = Vec::new();
    let failed = loop {
        let before = lazymmu::mm::audit::state();
        // get_vm_area takes no frame but a new slab's.
        frame_alloc::fail_request(Some(1));
        let got = get_vm_area(PAGE_SIZE, PAGE_SIZE);
        let requests = frame_alloc::requests();
        frame_alloc::fail_request(None);
        match got {
            Ok(va) => {
                assert_eq!(requests, 0, "area {}: a slab with room costs no frame request", live.len());
                live.push(va);
            }
            Err(e) => {
                assert_eq!(e, VmallocError::OutOfMemory);
                assert_eq!(requests, 1, "the new slab's frame request, refused");
                assert_eq!(lazymmu::mm::audit::state(), before, "nothing changed");
                break live.len();
            }
        }
        assert!(live.len() < 1000, "no slab filled up in 1000 areas");
    };
    assert!(failed > 0, "the first slabs had room");
    live.push(get_vm_area(PAGE_SIZE, PAGE_SIZE).unwrap());
    for va in live {
        free_vm_area(va).unwrap();
    }
}

#[test_case]
fn vmalloc_range_places_an_area_inside_its_window_only() {
    let lo = VMALLOC_START.add(BLOCK_1G);
    let hi = lo.add(BLOCK_2M);
    let va = vmalloc_range(4 * PAGE_SIZE, PAGE_SIZE, lo, hi).unwrap();
    assert_eq!(va, lo, "the lowest fit in the window");
    check_mapped(va, 4);
    assert_eq!(vmalloc_range(BLOCK_2M, PAGE_SIZE, lo, hi), Err(VmallocError::NoVirtualSpace), "no room left in it");
    let outside = VirtAddr::new(0xffff_0000_0000_0000);
    assert!(
        matches!(vmalloc_range(PAGE_SIZE, PAGE_SIZE, outside, hi), Err(VmallocError::Map(_))),
        "not the vmalloc region"
    );
    vfree(va).unwrap();
}

#[test_case]
fn vfree_next_to_a_live_neighbour_unmaps_its_range_with_one_flush() {
    // Two buffers in one level-3 table: freeing one keeps the table (the
    // neighbour lives in it) and still unmaps every page of the freed one.
    // The counts of vmap_lazy_purge=off.
    let _eager = LazyPurge::set(false);
    let a = vmalloc(2 * PAGE_SIZE).unwrap();
    let b = vmalloc(2 * PAGE_SIZE).unwrap();
    assert_eq!(a.align_down(BLOCK_2M), b.align_down(BLOCK_2M), "one level-3 table holds both");
    check_mapped(a, 2);
    check_mapped(b, 2);
    let c = cost(|| vfree(a).unwrap());
    assert_eq!((c.dsb_ish, c.tlbi_walks), (1, 0), "one flush, of the leaves only: {c:?}");
    // As `mm::strategy` says for 2 pages (one range TLBI, two page TLBIs,
    // or everything if the per-page limit is below 2).
    let expected = match mm::flush_strategy(2) {
        FlushStrategy::RangeTlbi => (0, 1, 0),
        FlushStrategy::PerPage => (2, 0, 0),
        FlushStrategy::All => (0, 0, 1),
    };
    assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), expected, "{c:?}");
    check_unmapped(a, 2);
    check_mapped(b, 2);
    vfree(b).unwrap();
}

// ---- batched stores: a level-3 table at a time ------------------------------------
//
// `set_ptes`, `modify_ptes`, `clear_ptes` (through the `_by_table` apply
// variants) and `clear_range` must cost exactly what the same stores made
// one at a time cost, under every backend: the same entries written, the
// same pairs (one under `batched`, one per valid entry under `eager`, one
// per 64 queued under `deferred-writes`). This image runs twice, with the
// checker watching every store and with `pgtable_check=off`, where a
// `batched` run is a plain loop: both must give the same counts.

/// Entries written (all backends' statistics) and the pairs paid by `f`.
fn counted(f: impl FnOnce()) -> (u64, (u64, u64)) {
    let writes = || Backend::ALL.into_iter().map(|b| lazymmu::mm::lazy_mmu::stats(b).entry_writes).sum::<u64>();
    let before = writes();
    let c = cost(f);
    (writes() - before, pairs(c))
}

/// A fresh 2 MiB-aligned area of 2 MiB + 88 pages and 600 contiguous
/// frames: mapped from 88 pages before the area's second 2 MiB, a run of
/// 88 slots in one level-3 table and 512 in the next. Given back after.
struct Runs {
    area: VirtAddr,
    frames: PhysAddr,
}

const RUN_PAGES: u64 = 600;

impl Runs {
    fn new() -> Runs {
        let frames = frame_alloc::alloc_contiguous(RUN_PAGES as usize, PAGE_SIZE).unwrap();
        let area = get_vm_area(2 * BLOCK_2M, BLOCK_2M).unwrap();
        Runs { area, frames }
    }

    fn start(&self) -> VirtAddr {
        self.area.add(BLOCK_2M - 88 * PAGE_SIZE)
    }

    fn size(&self) -> u64 {
        RUN_PAGES * PAGE_SIZE
    }

    /// The descriptor of page `i` (read-write), for the page at `va`.
    fn page(&self, va: VirtAddr) -> Descriptor {
        Descriptor::leaf(Level::L3, self.frames.add(va.offset_from(self.start())), Attributes::KERNEL_RW)
    }

    /// Maps every page but `hole` (if any) one store at a time.
    fn map_one_at_a_time(&self, hole: Option<u64>) -> Applied {
        let skip = hole.map(|h| self.start().add(h * PAGE_SIZE));
        apply_to_page_range(self.start(), self.size(), |e: &EntryRef| {
            if Some(e.va) != skip {
                // SAFETY: the test's own frames, in its own area.
                unsafe { pgtable::write_entry(e, self.page(e.va)) };
            }
            Ok::<(), Infallible>(())
        })
        .unwrap()
    }

    /// Maps every page a level-3 table at a time (`set_ptes`), telling
    /// `each_run` of every run first.
    fn map_by_table(&self, mut each_run: impl FnMut(&Ptes)) -> Applied {
        apply_to_page_range_by_table(self.start(), self.size(), |ptes: &Ptes| {
            each_run(ptes);
            // SAFETY: the test's own frames, in its own area.
            unsafe { pgtable::set_ptes(ptes, self.page(ptes.va())) };
            Ok::<(), Infallible>(())
        })
        .unwrap()
    }

    /// Every page but `hole` maps its own frame, writable or not, as the
    /// MMU sees it (`at s1e1r` and `at s1e1w`); the hole faults.
    fn check(&self, writable: bool, hole: Option<u64>) {
        for i in 0..RUN_PAGES {
            let va = self.start().add(i * PAGE_SIZE);
            let read = hw_translate(va, Access::Read);
            if Some(i) == hole {
                assert!(matches!(read, HwTranslation::Fault(FaultStatus::Translation { .. })), "{va}: {read:?}");
                continue;
            }
            let want = self.frames.add(i * PAGE_SIZE);
            assert!(matches!(read, HwTranslation::Mapped { pa, mair_attr: 0xff } if pa == want), "{va}: {read:?}");
            let write = hw_translate(va, Access::Write);
            match writable {
                true => assert!(matches!(write, HwTranslation::Mapped { pa, .. } if pa == want), "{va}: {write:?}"),
                false => {
                    assert!(matches!(write, HwTranslation::Fault(FaultStatus::Permission { .. })), "{va}: {write:?}")
                }
            }
        }
    }

    /// Unmaps the range and takes its tables away.
    fn clear(&self) {
        unmap_test_range(self.start(), self.size());
        mm::reclaim_page_tables();
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        free_vm_area(self.area).unwrap();
        frame_alloc::free_frames(self.frames, RUN_PAGES as usize).unwrap();
    }
}

/// What the stores of a call owe under `backend`, from the entries it
/// wrote and how many of them were valid.
fn pairs_owed(backend: Backend, valid: u64) -> Option<(u64, u64)> {
    match backend {
        Backend::Eager => Some((valid, valid)),
        Backend::Batched => Some((valid.min(1), valid.min(1))),
        // A pair per 64 queued and one at the end: compared with the
        // stores made one at a time instead.
        Backend::DeferredWrites => None,
    }
}

#[test_case]
fn set_ptes_costs_what_one_store_at_a_time_costs_under_every_backend() {
    let runs = Runs::new();
    let before = footprint();
    for backend in Backend::ALL {
        let _s = Setting::new(backend, ApplyMode::WholeCall);
        let mut applied = Applied::default();
        let one_at_a_time = counted(|| applied = runs.map_one_at_a_time(None));
        runs.clear();
        let mut seen = Vec::new();
        let batched = counted(|| {
            let again = runs.map_by_table(|ptes| seen.push((ptes.va(), ptes.len())));
            assert_eq!((again.tables_allocated, again.slots), (applied.tables_allocated, RUN_PAGES));
        });
        assert_eq!(seen, [(runs.start(), 88), (runs.area.add(BLOCK_2M), 512)], "one run per level-3 table");
        let entries = RUN_PAGES + applied.tables_allocated as u64;
        assert_eq!(batched, one_at_a_time, "{backend}: the same writes and pairs as one store at a time");
        assert_eq!(batched.0, entries, "{backend}: every page and table written once");
        if let Some(owed) = pairs_owed(backend, entries) {
            assert_eq!(batched.1, owed, "{backend}");
        }
        runs.check(true, None);
        // Again over the tables that stayed: the leaves alone owe the pair.
        unmap_test_range(runs.start(), runs.size());
        let leaves_only = counted(|| _ = runs.map_by_table(|_| {}));
        assert_eq!(leaves_only.0, RUN_PAGES, "{backend}: no table linked this time");
        if let Some(owed) = pairs_owed(backend, RUN_PAGES) {
            assert_eq!(leaves_only.1, owed, "{backend}: the pages' own pairs");
        }
        runs.check(true, None);
        runs.clear();
    }
    assert_eq!(footprint(), before);
}

#[test_case]
fn modify_ptes_changes_the_valid_entries_only_at_the_cost_of_one_store_at_a_time() {
    let runs = Runs::new();
    let before = footprint();
    let hole = Some(100);
    let read_only = |e: &EntryRef| {
        // SAFETY: the test's own pages: write taken away, flushed below.
        unsafe { pgtable::write_entry(e, e.read().read_only()) };
        Ok::<(), Infallible>(())
    };
    for backend in Backend::ALL {
        let _s = Setting::new(backend, ApplyMode::WholeCall);
        runs.map_one_at_a_time(hole);
        let one_at_a_time = counted(|| _ = apply_to_existing_page_range(runs.start(), runs.size(), read_only).unwrap());
        runs.clear();
        runs.map_one_at_a_time(hole);
        let mut changed = 0;
        let batched = counted(|| {
            apply_to_existing_page_range_by_table(runs.start(), runs.size(), |ptes: &Ptes| {
                // SAFETY: the test's own pages: write taken away, flushed below.
                changed += unsafe { pgtable::modify_ptes(ptes, Descriptor::read_only) };
                Ok::<(), Infallible>(())
            })
            .unwrap();
        });
        mm::flush_tlb_kernel_range(runs.start(), runs.start().add(runs.size()));
        assert_eq!(changed as u64, RUN_PAGES - 1, "{backend}: every page but the hole");
        assert_eq!(batched, one_at_a_time, "{backend}: the same writes and pairs as one store at a time");
        assert_eq!(batched.0, RUN_PAGES - 1, "{backend}");
        if let Some(owed) = pairs_owed(backend, RUN_PAGES - 1) {
            assert_eq!(batched.1, owed, "{backend}");
        }
        runs.check(false, hole);
        runs.clear();
    }
    assert_eq!(footprint(), before);
}

#[test_case]
fn clear_range_unmaps_around_holes_and_frees_its_tables_with_one_flush() {
    let runs = Runs::new();
    let before = footprint_reclaimed();
    let hole = Some(100);
    for backend in Backend::ALL {
        let _s = Setting::new(backend, ApplyMode::WholeCall);
        let applied = runs.map_one_at_a_time(hole);
        // One store at a time: the leaves cleared in a section, then the
        // tables taken away, one flush.
        let one_at_a_time = counted(|| {
            apply_to_existing_page_range(runs.start(), runs.size(), |e: &EntryRef| {
                // SAFETY: the test's own pages; flushed below.
                unsafe { pgtable::write_entry(e, Descriptor::INVALID) };
                Ok::<(), Infallible>(())
            })
            .unwrap();
            // SAFETY: the kernel's own root; the test's own range.
            unsafe { pgtable::free_empty_tables(pgtable::kernel_root(), runs.start(), runs.size()) };
        });
        assert_eq!(footprint(), before, "{backend}: the tables went");
        runs.map_one_at_a_time(hole);
        let mut c = BarrierCounts::ZERO;
        let batched = counted(|| {
            // SAFETY: the kernel's own root; the test's own range.
            c = cost(|| unsafe { pgtable::clear_range(pgtable::kernel_root(), runs.start(), runs.size()) }.unwrap());
        });
        assert_eq!(batched, one_at_a_time, "{backend}: the same writes and barriers as one store at a time");
        // The leaves, and the two level-3 tables and whatever above them
        // this call had made.
        assert_eq!(batched.0, RUN_PAGES - 1 + applied.tables_allocated as u64, "{backend}");
        assert_eq!((c.dsb_ishst, c.dsb_ish, c.isb), (1, 1, 1), "{backend}: one flush, nothing per page: {c:?}");
        assert!(c.tlbi_walks > 0 || c.tlbi_all > 0, "{backend}: the walks are flushed too: {c:?}");
        check_unmapped(runs.start(), RUN_PAGES);
        assert_eq!(footprint(), before, "{backend}: every table came back");
    }
}

#[test_case]
fn clear_range_refuses_to_split_a_block_and_changes_nothing() {
    let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap();
    // SAFETY: the test's own frames.
    let block = unsafe { vmap_contiguous(run, BLOCK_2M, Attributes::KERNEL_RW) }.unwrap();
    let state = lazymmu::mm::audit::state();
    let half = block.add(BLOCK_2M / 2);
    // SAFETY: the kernel's own root; refused before anything changes.
    let got = unsafe { pgtable::clear_range(pgtable::kernel_root(), half, BLOCK_2M / 2) };
    assert_eq!(got, Err(MapError::SplitsBlock { va: block, level: Level::L2 }));
    assert_eq!(lazymmu::mm::audit::state(), state, "nothing changed");
    check_mapped(block, 512);
    vunmap(block).unwrap();
    vm_unmap_aliases();
    frame_alloc::free_frames(run, 512).unwrap();
}

#[test_case]
fn set_ptes_under_deferred_writes_queues_its_stores_until_the_section_ends() {
    let runs = Runs::new();
    let start = runs.area;
    for (backend, lands_at_once) in [(Backend::Batched, true), (Backend::DeferredWrites, false), (Backend::Eager, true)]
    {
        let _s = Setting::new(backend, ApplyMode::WholeCall);
        let mut inside = None;
        apply_to_page_range_by_table(start, 8 * PAGE_SIZE, |ptes: &Ptes| {
            // SAFETY: the test's own frames, in its own area.
            unsafe { pgtable::set_ptes(ptes, Descriptor::leaf(Level::L3, runs.frames, Attributes::KERNEL_RW)) };
            let queued = lazymmu::sched::current().lazy_state().queued;
            inside = Some(((0..8).filter(|&i| ptes.read(i).is_valid()).count(), queued));
            Ok::<(), Infallible>(())
        })
        .unwrap();
        let want = if lands_at_once { (8, 0) } else { (0, 8) };
        assert_eq!(inside, Some(want), "{backend}: (entries in memory, stores queued) inside the section");
        for i in 0..8 {
            assert_eq!(
                frame_of(start.add(i * PAGE_SIZE)),
                runs.frames.add(i * PAGE_SIZE),
                "{backend}: made by the end"
            );
        }
        unmap_test_range(start, 8 * PAGE_SIZE);
        mm::reclaim_page_tables();
    }
}

// ---- the lazy vfree purge: TLB flushes batched ------------------------------------
//
// vfree and vunmap clear the entries and flush nothing; the freed areas
// wait on the purge list, and one flush of their union covers them all
// when they are purged (`vm_unmap_aliases`, past `lazy_max_pages`, or when
// an allocation finds no room). Until then a freed range is not handed out
// again and its frames stay taken.

/// Starts a test of the lazy purge: on (whatever the command line says),
/// nothing pending.
fn lazy_purge() -> LazyPurge {
    let on = LazyPurge::set(true);
    vm_unmap_aliases();
    assert_eq!(lazy_pages(), 0);
    on
}

/// What one flush of [start, end) costs on this CPU (range TLBIs, page
/// TLBIs or everything, as `mm::strategy` says for its size).
fn one_flush(start: VirtAddr, end: VirtAddr) -> BarrierCounts {
    cost(|| mm::flush_tlb_kernel_range(start, end))
}

#[test_case]
fn vfree_of_a_page_issues_no_tlbi() {
    let _lazy = lazy_purge();
    let va = vmalloc(PAGE_SIZE).unwrap();
    check_mapped(va, 1);
    let (used, areas) = (frame_alloc::stats().used, mm::area_count());
    let c = cost(|| vfree(va).unwrap());
    assert_eq!(c, BarrierCounts::default(), "no TLBI and no barrier: a clear owes none, the flush is the purge's");
    assert_eq!(lazy_pages(), 1);
    assert_eq!((find_area(va), mm::area_count()), (None, areas - 1), "no longer an area");
    assert_eq!(frame_alloc::stats().used, used, "its frame waits for the purge");
    vm_unmap_aliases();
    assert_eq!(frame_alloc::stats().used, used - 1, "and goes back with it");
}

#[test_case]
fn a_thousand_page_vmalloc_vfree_cycles_flush_once_at_the_purge() {
    let _lazy = lazy_purge();
    let _s = Setting::new(Backend::Batched, ApplyMode::WholeCall);
    let mut freed = Vec::with_capacity(1000);
    let c = cost(|| {
        for _ in 0..1000 {
            let va = vmalloc(PAGE_SIZE).unwrap();
            vfree(va).unwrap();
            freed.push(va);
        }
    });
    assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all, c.dsb_ish), (0, 0, 0, 0), "no flush in the loop: {c:?}");
    assert_eq!(pairs(c), (1000, 1000), "each vmalloc's own pair, nothing else");
    assert_eq!(lazy_pages(), 1000);
    // No range was handed out twice: each next to the one before.
    for pair in freed.windows(2) {
        assert_eq!(pair[1], pair[0].add(PAGE_SIZE + GUARD_SIZE));
    }
    let (start, end) = (freed[0], freed[999].add(PAGE_SIZE));
    let purge = cost(vm_unmap_aliases);
    assert_eq!(purge.dsb_ish, 1, "one flush for the thousand: {purge:?}");
    assert_eq!(purge, one_flush(start, end), "of their union");
    assert_eq!(lazy_pages(), 0);
}

#[test_case]
fn a_freed_range_and_its_frames_are_not_reused_before_the_purge() {
    let _lazy = lazy_purge();
    let a = vmalloc(PAGE_SIZE).unwrap();
    let frame = frame_of(a);
    let used = frame_alloc::stats().used;
    vfree(a).unwrap();
    let b = vmalloc(PAGE_SIZE).unwrap();
    assert_eq!(b, a.add(PAGE_SIZE + GUARD_SIZE), "the next range, not the freed one");
    assert_ne!(frame_of(b), frame, "a fresh frame, not the freed one");
    assert_eq!(frame_alloc::stats().used, used + 1, "the freed frame is still taken");
    vm_unmap_aliases();
    assert_eq!(frame_alloc::stats().used, used, "given back by the purge");
    let c = vmalloc(PAGE_SIZE).unwrap();
    assert_eq!(c, a, "after the purge the lowest free range is the freed one again");
    vfree(b).unwrap();
    vfree(c).unwrap();
}

#[test_case]
fn one_purge_flushes_many_areas_once() {
    let _lazy = lazy_purge();
    let areas: Vec<VirtAddr> = (1..=16).map(|n| vmalloc(n * PAGE_SIZE).unwrap()).collect();
    let c = cost(|| areas.iter().for_each(|&va| vfree(va).unwrap()));
    assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all, c.dsb_ish), (0, 0, 0, 0), "{c:?}");
    assert_eq!(lazy_pages(), (1..=16).sum::<u64>());
    let (start, end) = (areas[0], areas[15].add(16 * PAGE_SIZE));
    let purge = cost(vm_unmap_aliases);
    assert_eq!(purge.dsb_ish, 1, "one flush for sixteen areas: {purge:?}");
    assert_eq!(purge, one_flush(start, end), "of their union");
    assert_eq!(cost(vm_unmap_aliases), BarrierCounts::default(), "nothing pending: nothing flushed");
}

#[test_case]
fn vm_unmap_aliases_leaves_no_stale_entry() {
    let _lazy = lazy_purge();
    let va = vmalloc(PAGE_SIZE).unwrap();
    // SAFETY: our own fresh mapping.
    unsafe { probe::write(va, 0x5eed) }.unwrap();
    check_mapped(va, 1); // the TLB holds it
    vfree(va).unwrap();
    // The tables say unmapped (`at s1e1r` walks them); the checker knows
    // the TLB may still say otherwise until the purge.
    assert!(matches!(hw_translate(va, Access::Read), HwTranslation::Fault(FaultStatus::Translation { .. })));
    if lazymmu::mm::pgtable_check::enabled() {
        assert_eq!(lazymmu::mm::pgtable_check::awaiting_purge(), 1);
    }
    vm_unmap_aliases();
    assert_eq!(lazymmu::mm::pgtable_check::awaiting_purge(), 0, "the checker: nothing stale");
    check_unmapped(va, 1); // `at s1e1r` and a real read through the TLB: both fault
}

#[test_case]
fn lazily_freed_pages_past_lazy_max_pages_trigger_a_purge() {
    let _lazy = lazy_purge();
    // Linux's lazy_max_pages(): 32 MiB worth times fls(CPUs online).
    let fls = u64::from(usize::BITS - lazymmu::smp::online_cpus().leading_zeros());
    let max = lazy_max_pages();
    assert_eq!(max, fls * (32 << 20) / PAGE_SIZE);
    // One frame mapped many times: the pages cost tables, not frames.
    let frame = frame_alloc::alloc_frame().unwrap();
    let half = alloc::vec![frame; (max / 2) as usize];
    // SAFETY: the test's own frame, read-only, in the test's own areas.
    let (a, b, c) = unsafe {
        (
            vmap_pages(&half, Attributes::KERNEL_RO).unwrap(),
            vmap_pages(&half, Attributes::KERNEL_RO).unwrap(),
            vmap_pages(&[frame], Attributes::KERNEL_RO).unwrap(),
        )
    };
    let no_flush = |c: BarrierCounts| (c.tlbi_page, c.tlbi_range, c.tlbi_all, c.dsb_ish) == (0, 0, 0, 0);
    assert!(no_flush(cost(|| vunmap(a).unwrap())));
    assert_eq!(lazy_pages(), max / 2);
    assert!(no_flush(cost(|| vunmap(b).unwrap())));
    assert_eq!(lazy_pages(), max, "at lazy_max_pages, not past it: no purge yet");
    let past = cost(|| vunmap(c).unwrap());
    assert_eq!(lazy_pages(), 0, "one page past: purged");
    assert_eq!(past.dsb_ish, 1, "one flush: {past:?}");
    assert_eq!(past, one_flush(a, c.add(PAGE_SIZE)), "of the three areas' union");
    frame_alloc::free_frame(frame).unwrap();
}

#[test_case]
fn an_allocation_that_finds_no_room_purges_and_tries_once_more() {
    let _lazy = lazy_purge();
    let a = vmalloc(PAGE_SIZE).unwrap();
    vfree(a).unwrap();
    // A window that holds exactly the freed area and its guard page.
    let end = a.add(PAGE_SIZE + GUARD_SIZE);
    let mut b = Err(VmallocError::ZeroSize);
    let c = cost(|| b = vmalloc_range(PAGE_SIZE, PAGE_SIZE, a, end));
    assert_eq!(b, Ok(a), "the freed range, once purged");
    assert_eq!(c.dsb_ish, 1, "the purge's one flush: {c:?}");
    assert_eq!(lazy_pages(), 0);
    // No room, and nothing to purge: refused, and nothing flushed.
    let c = cost(|| assert_eq!(vmalloc_range(PAGE_SIZE, PAGE_SIZE, a, end), Err(VmallocError::NoVirtualSpace)));
    assert_eq!((c.dsb_ish, c.tlbi_page + c.tlbi_range + c.tlbi_all), (0, 0), "{c:?}");
    vfree(a).unwrap();
}
