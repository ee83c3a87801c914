//! Huge and contiguous kernel mappings: `vmalloc_huge` in each shape Linux
//! chooses (2 MiB blocks, contiguous runs of 16 pages, pages), `vmap_range`
//! mixing them, each read back with `at s1e1r` and by access, freed with
//! every frame back; exact entries written, barrier pairs and TLBIs per
//! shape and backend; partial changes of a run or a block split in place
//! under BBML2_NOABORT and refused without it (run it with
//! `LAZYMMU_CPU=cortex-a72` too); a partial `vunmap_range` unmaps the whole
//! run or block with Linux's warnings; 1 GiB with `LAZYMMU_MEM=2G`.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use alloc::string::String;
use alloc::vec::Vec;

use lazymmu::barrier::{BarrierCounts, cost};
use lazymmu::cpu;
use lazymmu::exception::{ExceptionClass, FaultStatus};
use lazymmu::mm::{
    self, Access, ApplyMode, Attributes, BLOCK_1G, BLOCK_2M, CONT_PTE_SIZE, Entry, FlushStrategy, HugeShape,
    HwTranslation, Level, PAGE_SIZE, PhysAddr, REGIONS, VirtAddr, VmFlags, VmallocError, apply_mode, frame_alloc,
    hw_translate,
    lazy_mmu::{Backend, BackendSelection, use_backend},
    pgtable::{self, MapError},
    pgtable_check::{self, Rule, Violations},
    probe,
    ptdump::{self, RegionStats, region_stats},
    set_apply_mode, vfree, vmalloc, vmalloc_flags, vmalloc_huge,
};
use lazymmu::{Bug, with_planted};

lazymmu::test_image!();

/// Selects a backend and Linux's whole-call apply mode; puts both back.
struct Setting {
    _backend: BackendSelection,
    mode: ApplyMode,
}

impl Setting {
    fn new(backend: Backend) -> Setting {
        let previous = Setting { _backend: use_backend(backend), mode: apply_mode() };
        set_apply_mode(ApplyMode::WholeCall);
        previous
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        set_apply_mode(self.mode);
    }
}

/// Frames used, areas live, the vmalloc region's tables and leaves.
fn footprint() -> (usize, usize, RegionStats) {
    // Lazily freed areas give back their frames at the purge.
    mm::vm_unmap_aliases();
    mm::reclaim_page_tables();
    let region = region_stats()[REGIONS.iter().position(|r| r.0 == "vmalloc").expect("a vmalloc region")];
    // A linear-map block split by a permission change (of a frame's alias)
    // stays split, as in Linux: its tables are not counted.
    let linear_tables = region_stats()[0].table_pages();
    (frame_alloc::stats().used - linear_tables, mm::area_count(), region)
}

/// The leaf for `va`: its level, and whether it has the contiguous bit.
fn leaf(va: VirtAddr) -> (Level, bool) {
    match pgtable::lookup(va) {
        pgtable::Found { level, entry: Entry::Leaf { attrs, .. }, .. } => (level, attrs.contiguous),
        other => panic!("{va} is not mapped: {other:?}"),
    }
}

/// The shape of [va, va + size) as the tables hold it: one (level,
/// contiguous) per 4 KiB page, merged into (level, contiguous, bytes).
fn shape(va: VirtAddr, size: u64) -> Vec<(Level, bool, u64)> {
    let mut out: Vec<(Level, bool, u64)> = Vec::new();
    for off in (0..size).step_by(PAGE_SIZE as usize) {
        let (level, cont) = leaf(va.add(off));
        match out.last_mut() {
            Some(last) if (last.0, last.1) == (level, cont) => last.2 += PAGE_SIZE,
            _ => out.push((level, cont, PAGE_SIZE)),
        }
    }
    out
}

/// Every page of [va, va + size): mapped as the MMU sees it (`at s1e1r`,
/// normal memory), really written and read back; returns the frames.
fn check_mapped(va: VirtAddr, size: u64) -> Vec<PhysAddr> {
    (0..size / PAGE_SIZE)
        .map(|i| {
            let page = va.add(i * PAGE_SIZE);
            let pa = match hw_translate(page, Access::Write) {
                HwTranslation::Mapped { pa, mair_attr: 0xff } => pa,
                other => panic!("{page} is not normal RW memory: {other:?}"),
            };
            // SAFETY: the page is the test's, just mapped.
            unsafe { probe::write(page, 0xc0de_0000 + i) }.unwrap();
            assert_eq!(probe::read(page), Ok(0xc0de_0000 + i));
            pa
        })
        .collect()
}

/// Every page of [va, va + size) takes a translation fault, by `at s1e1r`
/// and by a real read.
fn check_unmapped(va: VirtAddr, size: u64) {
    // A vfree leaves its flush to the lazy purge: until then a TLB may
    // still translate the range (QEMU's does), so purge first.
    mm::vm_unmap_aliases();
    for page in (0..size / PAGE_SIZE).map(|i| va.add(i * PAGE_SIZE)) {
        assert!(matches!(hw_translate(page, Access::Read), HwTranslation::Fault(FaultStatus::Translation { .. })));
        let fault = probe::read(page).unwrap_err();
        assert_eq!(fault.class, ExceptionClass::DataAbortCurrentEl);
    }
}

/// Entries written (all backends' statistics) and what `f` cost.
fn counted(f: impl FnOnce()) -> (u64, BarrierCounts) {
    let writes = || Backend::ALL.into_iter().map(|b| lazymmu::mm::lazy_mmu::stats(b).entry_writes).sum::<u64>();
    let before = writes();
    let c = cost(f);
    (writes() - before, c)
}

const KIB: u64 = 1024;

#[test_case]
fn vmalloc_huge_maps_each_size_in_the_shape_linux_chooses_and_vfree_gives_every_frame_back() {
    let before = footprint();
    let cont = |bytes| (Level::L3, true, bytes);
    for (size, mapped, expected) in [
        // Below 64 KiB: pages, as vmalloc.
        (16 * KIB, 16 * KIB, Vec::from([(Level::L3, false, 16 * KIB)])),
        // 64 KiB: one contiguous run; 100 KiB rounds up to two.
        (64 * KIB, 64 * KIB, Vec::from([cont(64 * KIB)])),
        (100 * KIB, 128 * KIB, Vec::from([cont(128 * KIB)])),
        // 2 MiB: one level-2 block; 3 MiB rounds up to two.
        (BLOCK_2M, BLOCK_2M, Vec::from([(Level::L2, false, BLOCK_2M)])),
        (3 * BLOCK_2M / 2, 2 * BLOCK_2M, Vec::from([(Level::L2, false, 2 * BLOCK_2M)])),
    ] {
        let va = vmalloc_huge(size).unwrap();
        let chunk = HugeShape::for_size(size).chunk_size();
        assert!(va.is_aligned(chunk), "{size:#x}: the area is aligned to its chunks");
        assert_eq!(mm::find_area(va).map(|a| a.size), Some(mapped), "{size:#x}");
        assert_eq!(shape(va, mapped), expected, "{size:#x}");
        let frames = check_mapped(va, mapped);
        // Each chunk is physically contiguous and aligned to its size.
        for chunk_frames in frames.chunks((chunk / PAGE_SIZE) as usize) {
            assert!(chunk_frames[0].is_aligned(chunk), "{size:#x}: {:?}", chunk_frames[0]);
            assert!(chunk_frames.windows(2).all(|w| w[1] == w[0].add(PAGE_SIZE)), "{size:#x}");
        }
        vfree(va).unwrap();
        check_unmapped(va, mapped);
        assert_eq!(footprint(), before, "{size:#x}: every frame and table back");
    }
}

#[test_case]
fn vmalloc_huge_refuses_what_vmalloc_refuses_and_changes_nothing() {
    let before = footprint();
    assert_eq!(vmalloc_huge(0), Err(VmallocError::ZeroSize));
    assert_eq!(
        vmalloc_flags(CONT_PTE_SIZE, 3 * PAGE_SIZE, VmFlags::ALLOW_HUGE_VMAP),
        Err(VmallocError::BadAlignment(3 * PAGE_SIZE))
    );
    // More than the machine: no chunks, and no pages either.
    let ram = frame_alloc::stats().total as u64 * PAGE_SIZE;
    assert_eq!(vmalloc_huge(ram + BLOCK_2M), Err(VmallocError::OutOfMemory));
    assert_eq!(footprint(), before);
}

#[test_case]
fn plain_vmalloc_keeps_pages_as_linux_does_without_vm_allow_huge_vmap() {
    let before = footprint();
    let va = vmalloc_flags(BLOCK_2M, BLOCK_2M, VmFlags::NONE).unwrap();
    assert_eq!(shape(va, BLOCK_2M), [(Level::L3, false, BLOCK_2M)]);
    vfree(va).unwrap();
    let va = vmalloc(BLOCK_2M).unwrap();
    assert!(shape(va, BLOCK_2M).iter().all(|&(level, cont, _)| (level, cont) == (Level::L3, false)));
    vfree(va).unwrap();
    assert_eq!(footprint(), before);
}

#[test_case]
fn without_contiguous_frames_vmalloc_huge_falls_back_to_pages() {
    let before = footprint();
    for size in [64 * KIB, BLOCK_2M] {
        // The first chunk request fails: Linux's `fail:` path, pages.
        frame_alloc::fail_request(Some(1));
        let va = vmalloc_huge(size).unwrap();
        frame_alloc::fail_request(None);
        assert_eq!(shape(va, size), [(Level::L3, false, size)], "{size:#x}");
        check_mapped(va, size);
        vfree(va).unwrap();
        assert_eq!(footprint(), before, "{size:#x}: the chunk taken before the failure went back");
    }
}

/// What mapping and freeing `size` bytes of vmalloc_huge costs under
/// `backend`, the tables already there: (entries written, barrier pairs)
/// of the map, and the vfree's cost.
/// The lazy purge off while it lives (vfree then pays its own flush, the
/// count these tests compare), and back as it was when it goes.
struct EagerVfree(bool);

impl EagerVfree {
    fn new() -> EagerVfree {
        EagerVfree(mm::set_vmap_lazy_purge(false))
    }
}

impl Drop for EagerVfree {
    fn drop(&mut self) {
        mm::set_vmap_lazy_purge(self.0);
    }
}

fn huge_costs(backend: Backend, size: u64) -> ((u64, (u64, u64)), BarrierCounts) {
    let _s = Setting::new(backend);
    let _eager = EagerVfree::new();
    // Once to link the tables (they stay after the vfree), then measured.
    vfree(vmalloc_huge(size).unwrap()).unwrap();
    let mut va = VirtAddr::new(0);
    let (written, c) = counted(|| va = vmalloc_huge(size).unwrap());
    // In the tables the first call left, the shape is the same: a 64 KiB
    // run keeps its bit, a 2 MiB chunk is a block.
    let expected = if size < BLOCK_2M { (Level::L3, true, size) } else { (Level::L2, false, size) };
    assert_eq!(shape(va, size), [expected], "{backend} {size:#x}: the shape with the tables already there");
    check_mapped(va, size);
    let freed = cost(|| vfree(va).unwrap());
    ((written, (c.dsb_ishst, c.isb)), freed)
}

#[test_case]
fn each_shape_writes_one_entry_per_leaf_and_pays_what_its_backend_owes() {
    for (size, entries) in [(64 * KIB, 16), (BLOCK_2M, 1), (4 * BLOCK_2M, 4)] {
        for backend in Backend::ALL {
            let ((written, pairs), freed) = huge_costs(backend, size);
            assert_eq!(written, entries, "{backend} {size:#x}: one store per leaf");
            let expected = match backend {
                Backend::Eager => (entries, entries),
                // One pair per 64 queued stores, and one at the end.
                Backend::DeferredWrites => (entries.div_ceil(64), entries.div_ceil(64)),
                Backend::Batched => (1, 1),
            };
            assert_eq!(pairs, expected, "{backend} {size:#x}");
            // The vfree: one flush of the whole area, nothing per entry.
            let pages = size / PAGE_SIZE;
            let tlbi = match mm::flush_strategy(pages) {
                FlushStrategy::RangeTlbi => (pages % 2, (pages > 1) as u64, 0),
                FlushStrategy::PerPage => (pages, 0, 0),
                FlushStrategy::All => (0, 0, 1),
            };
            assert_eq!((freed.tlbi_page, freed.tlbi_range, freed.tlbi_all), tlbi, "{backend} {size:#x}: {freed:?}");
            assert_eq!(freed.dsb_ish, 1, "{backend} {size:#x}: one flush: {freed:?}");
        }
    }
}

#[test_case]
fn vmap_range_mixes_a_block_a_run_and_a_page_as_alignment_allows() {
    let before = footprint();
    let size = BLOCK_2M + CONT_PTE_SIZE + PAGE_SIZE;
    let pa = frame_alloc::alloc_contiguous((size / PAGE_SIZE) as usize, BLOCK_2M).unwrap();
    let va = mm::get_vm_area(size, BLOCK_2M).unwrap();
    // SAFETY: the test's own frames, in the test's own area.
    let map = || unsafe { mm::vmap_range(va, va.add(size), pa, Attributes::KERNEL_RW) }.unwrap();
    // Once to link the tables (they stay after the unmap), then counted.
    map();
    mm::vunmap_range(va, va.add(size)).unwrap();
    let (written, c) = counted(map);
    assert_eq!(written, 1 + 16 + 1, "a block, a run of 16, a page");
    assert_eq!((c.dsb_ishst, c.isb), (1, 1), "one lazy section: {c:?}");
    assert_eq!(
        shape(va, size),
        [(Level::L2, false, BLOCK_2M), (Level::L3, true, CONT_PTE_SIZE), (Level::L3, false, PAGE_SIZE)]
    );
    let frames = check_mapped(va, size);
    assert!(frames.iter().enumerate().all(|(i, &f)| f == pa.add(i as u64 * PAGE_SIZE)));
    mm::vunmap_range(va, va.add(size)).unwrap();
    check_unmapped(va, size);
    mm::free_vm_area(va).unwrap();
    frame_alloc::free_frames(pa, (size / PAGE_SIZE) as usize).unwrap();
    assert_eq!(footprint(), before);
}

/// The TLBIs (by page, by range, all) of one flush of `pages` pages.
fn one_flush(pages: u64) -> (u64, u64, u64) {
    match mm::flush_strategy(pages) {
        FlushStrategy::RangeTlbi => (pages % 2, (pages > 1) as u64, 0),
        FlushStrategy::PerPage => (pages, 0, 0),
        FlushStrategy::All => (0, 0, 1),
    }
}

/// `vunmap_range(from, to)` under `backend`: the warnings it printed,
/// the entries it wrote, what it cost.
fn partial_vunmap(backend: Backend, from: VirtAddr, to: VirtAddr) -> (u64, u64, BarrierCounts) {
    let _s = Setting::new(backend);
    let warnings = mm::vunmap_warnings();
    let (written, c) = counted(|| mm::vunmap_range(from, to).unwrap());
    (mm::vunmap_warnings() - warnings, written, c)
}

#[test_case]
fn vunmap_range_of_part_of_a_run_or_a_block_warns_and_unmaps_all_of_it_as_linux_does() {
    let before = footprint();
    // A block, a run, a page: the run's two neighbours show what stays.
    let size = BLOCK_2M + CONT_PTE_SIZE + PAGE_SIZE;
    let pa = frame_alloc::alloc_contiguous((size / PAGE_SIZE) as usize, BLOCK_2M).unwrap();
    let va = mm::get_vm_area(size, BLOCK_2M).unwrap();
    let run = va.add(BLOCK_2M);
    let tail = run.add(CONT_PTE_SIZE);
    let map = |from: VirtAddr, to: VirtAddr| {
        // SAFETY: the test's own frames, in the test's own area.
        unsafe { mm::vmap_range(from, to, pa.add(from.offset_from(va)), Attributes::KERNEL_RW) }.unwrap()
    };
    map(va, va.add(size));
    for backend in Backend::ALL {
        // One page in the middle of the run: Linux warns twice (the start
        // inside the run, then its end), clears the 16 entries; the flush
        // covers the run (Linux's covers the page).
        let (warned, written, c) = partial_vunmap(backend, run.add(PAGE_SIZE), run.add(2 * PAGE_SIZE));
        assert_eq!((warned, written), (2, 16), "{backend}");
        assert_eq!((c.dsb_ishst, c.dsb_ish, c.isb), (1, 1, 1), "{backend}: one flush, no pair per entry: {c:?}");
        assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), one_flush(16), "{backend}: the whole run: {c:?}");
        check_unmapped(run, CONT_PTE_SIZE);
        assert_eq!(shape(va, BLOCK_2M), [(Level::L2, false, BLOCK_2M)], "{backend}: the block stays");
        check_mapped(va, PAGE_SIZE);
        check_mapped(tail, PAGE_SIZE);
        map(run, tail);
        assert_eq!(shape(run, CONT_PTE_SIZE), [(Level::L3, true, CONT_PTE_SIZE)], "{backend}");
    }
    // From the last page of the block to the run's first page: the block
    // (one warning) and the run (one: the end inside it), 17 entries, one
    // flush of all 528 pages.
    let (warned, written, c) =
        partial_vunmap(Backend::Batched, VirtAddr::new(run.as_u64() - PAGE_SIZE), run.add(PAGE_SIZE));
    assert_eq!((warned, written), (2, 1 + 16));
    assert_eq!((c.dsb_ishst, c.dsb_ish, c.isb), (1, 1, 1), "{c:?}");
    let pages = (BLOCK_2M + CONT_PTE_SIZE) / PAGE_SIZE;
    let tlbi = match mm::flush_strategy(pages) {
        // Two range operations: 512 pages and 16 (`__flush_tlb_range_op`).
        FlushStrategy::RangeTlbi => (0, 2, 0),
        _ => one_flush(pages),
    };
    assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), tlbi, "{c:?}");
    check_unmapped(va, BLOCK_2M + CONT_PTE_SIZE);
    check_mapped(tail, PAGE_SIZE);
    // One page inside the block: one warning (Linux's vunmap_pmd_range
    // warns once per block), one entry, a flush of the block.
    map(va, tail);
    let (warned, written, c) = partial_vunmap(Backend::Batched, va.add(PAGE_SIZE), va.add(2 * PAGE_SIZE));
    assert_eq!((warned, written), (1, 1));
    assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), one_flush(BLOCK_2M / PAGE_SIZE), "{c:?}");
    check_unmapped(va, BLOCK_2M);
    assert_eq!(shape(run, CONT_PTE_SIZE), [(Level::L3, true, CONT_PTE_SIZE)]);
    // Whole leaves: no warning, nothing widened.
    let (warned, written, c) = partial_vunmap(Backend::Batched, run, tail.add(PAGE_SIZE));
    assert_eq!((warned, written), (0, 17));
    assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), one_flush(17), "{c:?}");
    check_unmapped(va, size);
    mm::free_vm_area(va).unwrap();
    frame_alloc::free_frames(pa, (size / PAGE_SIZE) as usize).unwrap();
    assert_eq!(footprint(), before);
}

/// Splits the linear-map block or run around the alias of `va`'s frame,
/// as the first permission change of that alias does (it stays split):
/// what a test measures next is its own change.
fn split_alias(va: VirtAddr) {
    let Entry::Leaf { addr, .. } = pgtable::lookup(va).entry else { panic!("{va:?} is mapped") };
    let base = pgtable::lookup(va).va;
    let alias = lazymmu::mm::phys_to_virt(addr.add(va.offset_from(base)));
    // SAFETY: the alias of the test's own frame, writable again at once.
    unsafe { mm::set_linear_map_ro(alias, 1).and_then(|()| mm::set_linear_map_rw(alias, 1)) }.unwrap();
}

/// Writing `va` faults with a level-3 permission fault.
fn assert_read_only(va: VirtAddr) {
    assert_eq!(hw_translate(va, Access::Write), HwTranslation::Fault(FaultStatus::Permission { level: 3 }));
    assert!(matches!(hw_translate(va, Access::Read), HwTranslation::Mapped { .. }));
}

#[test_case]
fn set_memory_ro_on_part_of_a_run_splits_it_in_place_with_bbml2_and_is_refused_without() {
    let before = footprint();
    let va = vmalloc_huge(CONT_PTE_SIZE).unwrap();
    let page = va.add(3 * PAGE_SIZE);
    if cpu::features().bbml2_noabort {
        split_alias(page);
        let (written, c) = counted(|| mm::set_memory_ro(page, 1).unwrap());
        // The run rewritten without the bit (16), then the page (1) and its
        // linear alias (1).
        assert_eq!(written, 16 + 1 + 1);
        assert_eq!((c.dsb_ishst, c.isb), (2, 2), "one section's pair, and the flush's: {c:?}");
        assert_eq!(shape(va, CONT_PTE_SIZE), [(Level::L3, false, CONT_PTE_SIZE)]);
        assert_read_only(page);
        check_mapped(va, 3 * PAGE_SIZE);
        check_mapped(page.add(PAGE_SIZE), CONT_PTE_SIZE - 4 * PAGE_SIZE);
        mm::set_memory_rw(page, 1).unwrap();
    } else {
        let (written, _) = counted(|| {
            assert_eq!(mm::set_memory_ro(page, 1), Err(MapError::BreakBeforeMakeUnsafe(va)));
        });
        assert_eq!(written, 0, "refused before anything changed");
        assert_eq!(shape(va, CONT_PTE_SIZE), [(Level::L3, true, CONT_PTE_SIZE)]);
        check_mapped(va, CONT_PTE_SIZE);
    }
    // The whole run changes together, the bit kept, under either CPU.
    mm::set_memory_ro(va, CONT_PTE_SIZE / PAGE_SIZE).unwrap();
    let whole = !cpu::features().bbml2_noabort;
    assert_eq!(shape(va, CONT_PTE_SIZE), [(Level::L3, whole, CONT_PTE_SIZE)]);
    assert_read_only(va.add(15 * PAGE_SIZE));
    mm::set_memory_rw(va, CONT_PTE_SIZE / PAGE_SIZE).unwrap();
    vfree(va).unwrap();
    assert_eq!(footprint(), before);
}

#[test_case]
fn set_memory_ro_on_part_of_a_block_splits_it_in_place_with_bbml2_and_is_refused_without() {
    let before = footprint();
    let va = vmalloc_huge(BLOCK_2M).unwrap();
    let page = va.add(PAGE_SIZE);
    if cpu::features().bbml2_noabort {
        split_alias(page);
        let (written, c) = counted(|| mm::set_memory_ro(page, 1).unwrap());
        // The table's 512 entries, the table over the block, then the page
        // and its linear alias.
        assert_eq!(written, 512 + 1 + 1 + 1);
        // The table's entries ordered before its link (a dsb ishst, as
        // Linux's split_pmd), the section's pair, and one flush of the
        // whole block and the alias's page.
        assert_eq!((c.dsb_ishst, c.dsb_ish, c.isb), (3, 1, 2), "{c:?}");
        let want = match mm::flush_strategy(BLOCK_2M / PAGE_SIZE + 1) {
            FlushStrategy::RangeTlbi => (1, 1, 0),
            FlushStrategy::PerPage => (BLOCK_2M / PAGE_SIZE + 1, 0, 0),
            FlushStrategy::All => (0, 0, 1),
        };
        assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), want, "{c:?}");
        assert_eq!(shape(va, BLOCK_2M), [(Level::L3, false, BLOCK_2M)]);
        assert_read_only(page);
        check_mapped(va, PAGE_SIZE);
        check_mapped(page.add(PAGE_SIZE), BLOCK_2M - 2 * PAGE_SIZE);
        mm::set_memory_rw(page, 1).unwrap();
    } else {
        let state = lazymmu::mm::audit::state();
        let (written, c) = counted(|| {
            assert_eq!(mm::set_memory_ro(page, 1), Err(MapError::BreakBeforeMakeUnsafe(va)));
        });
        assert_eq!((written, c), (0, BarrierCounts::default()), "refused first");
        assert_eq!(lazymmu::mm::audit::state(), state, "nothing changed");
        assert_eq!(shape(va, BLOCK_2M), [(Level::L2, false, BLOCK_2M)]);
        check_mapped(va, BLOCK_2M);
    }
    vfree(va).unwrap();
    assert_eq!(footprint(), before);
}

#[test_case]
fn ptdump_shows_contiguous_runs_as_cont() {
    let va = vmalloc_huge(2 * CONT_PTE_SIZE).unwrap();
    let mut out = String::new();
    ptdump::dump(&mut out).unwrap();
    let line = alloc::format!(
        "{:#018x}-{:#018x}    128K    4K RW NX normal CONT",
        va.as_u64(),
        va.as_u64() + 2 * CONT_PTE_SIZE
    );
    assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    vfree(va).unwrap();
}

// ---- the contiguous-bit rules, each broken on purpose ----------------------

/// The violations' messages, in order, each cut to its first `n` bytes.
fn messages(found: &Violations, n: usize) -> Vec<String> {
    found.first.iter().map(|v| String::from(&v.what.as_str()[..n.min(v.what.as_str().len())])).collect()
}

#[test_case]
fn cont_partial_write_a_run_without_the_bit_on_one_entry_is_reported() {
    if !pgtable_check::enabled() {
        return; // pgtable_check=off: nothing would report it
    }
    let before = footprint();
    let (va, found) = pgtable_check::expecting(Rule::Contiguous, || {
        with_planted(Bug::ContPartialWrite, || vmalloc_huge(CONT_PTE_SIZE))
    });
    let va = va.unwrap();
    assert_eq!(found.total(), 1, "{}", found.summary());
    assert_eq!(messages(&found, 34), ["a contiguous run is partial: 15 of"]);
    assert_eq!(found.first[0].entry.and_then(|e| e.at), Some((va.as_u64(), Level::L3)));
    assert_eq!(leaf(va.add(15 * PAGE_SIZE)), (Level::L3, false));
    vfree(va).unwrap();
    assert_eq!(footprint(), before);
}

#[test_case]
fn cont_misaligned_the_bit_on_sixteen_pages_that_are_not_one_aligned_range_is_reported() {
    if !pgtable_check::enabled() {
        return; // pgtable_check=off: nothing would report it
    }
    let before = footprint();
    // 16 contiguous frames a page off a 64 KiB boundary, at a 64 KiB
    // aligned address: pages, no run, unless the bug sets the bit anyway.
    let pa = frame_alloc::alloc_contiguous(17, CONT_PTE_SIZE).unwrap().add(PAGE_SIZE);
    let va = mm::get_vm_area(CONT_PTE_SIZE, CONT_PTE_SIZE).unwrap();
    // SAFETY: the test's own frames, in the test's own area.
    let map = || unsafe { mm::vmap_range(va, va.add(CONT_PTE_SIZE), pa, Attributes::KERNEL_RW) }.unwrap();
    let ((), found) = pgtable_check::expecting(Rule::Contiguous, || with_planted(Bug::ContMisaligned, map));
    assert_eq!(found.total(), 1, "{}", found.summary());
    assert_eq!(messages(&found, 60), ["the contiguous bit is on 16 entries that do not map one 64 K"]);
    assert_eq!(found.first[0].entry.and_then(|e| e.at), Some((va.as_u64(), Level::L3)));
    mm::vunmap_range(va, va.add(CONT_PTE_SIZE)).unwrap();
    // Without the bug: plain pages, nothing reported.
    let ((), found) = pgtable_check::expecting(Rule::Contiguous, map);
    assert_eq!(found.total(), 0, "{}", found.summary());
    assert_eq!(shape(va, CONT_PTE_SIZE), [(Level::L3, false, CONT_PTE_SIZE)]);
    mm::vunmap_range(va, va.add(CONT_PTE_SIZE)).unwrap();
    mm::free_vm_area(va).unwrap();
    frame_alloc::free_frames(PhysAddr::new(pa.as_u64() - PAGE_SIZE), 17).unwrap();
    assert_eq!(footprint(), before);
}

#[test_case]
fn cont_split_live_part_of_a_live_run_changed_without_a_split_is_reported() {
    if !pgtable_check::enabled() {
        return; // pgtable_check=off: nothing would report it
    }
    let before = footprint();
    let va = vmalloc_huge(CONT_PTE_SIZE).unwrap();
    let page = va.add(3 * PAGE_SIZE);
    let (done, found) =
        pgtable_check::expecting(Rule::Contiguous, || with_planted(Bug::ContSplitLive, || mm::set_memory_ro(page, 1)));
    assert_eq!(done, Ok(()));
    // The flush of one page does not cover the run the TLB may hold whole,
    // and the run's entries no longer agree.
    assert_eq!(
        messages(&found, 40),
        ["a TLB flush covered only part of the con", "the entries of a contiguous run differ i"],
        "{}",
        found.summary()
    );
    mm::set_memory_rw(va, CONT_PTE_SIZE / PAGE_SIZE).unwrap();
    vfree(va).unwrap();
    assert_eq!(footprint(), before);
}

#[test_case]
fn a_run_split_under_every_backend_leaves_sixteen_plain_pages_and_one_changed() {
    if !cpu::features().bbml2_noabort {
        return; // refused: the test above
    }
    let before = footprint();
    for backend in Backend::ALL {
        let _s = Setting::new(backend);
        let va = vmalloc_huge(CONT_PTE_SIZE).unwrap();
        // Inside a caller's section too: the change reads the split back.
        {
            let _section = lazymmu::mm::lazy_mmu::enable();
            mm::set_memory_ro(va.add(PAGE_SIZE), 1).unwrap();
        }
        assert_eq!(shape(va, CONT_PTE_SIZE), [(Level::L3, false, CONT_PTE_SIZE)], "{backend}");
        assert_read_only(va.add(PAGE_SIZE));
        check_mapped(va, PAGE_SIZE);
        check_mapped(va.add(2 * PAGE_SIZE), CONT_PTE_SIZE - 2 * PAGE_SIZE);
        vfree(va).unwrap();
    }
    assert_eq!(footprint(), before);
}

#[test_case]
fn a_gibibyte_of_vmalloc_huge_is_512_blocks_where_the_machine_has_the_memory() {
    let before = footprint();
    let free = (frame_alloc::stats().total - frame_alloc::stats().used) as u64 * PAGE_SIZE;
    if free < BLOCK_1G + 64 * BLOCK_2M {
        // The default 1 GiB machine: neither 512 chunks nor 262144 pages.
        assert_eq!(vmalloc_huge(BLOCK_1G), Err(VmallocError::OutOfMemory));
        assert_eq!(footprint(), before);
        return;
    }
    // LAZYMMU_MEM=2G: 512 blocks, under every backend.
    let _eager = EagerVfree::new();
    for backend in Backend::ALL {
        let _s = Setting::new(backend);
        vfree(vmalloc_huge(BLOCK_1G).unwrap()).unwrap();
        let mut va = VirtAddr::new(0);
        let (written, c) = counted(|| va = vmalloc_huge(BLOCK_1G).unwrap());
        assert_eq!(written, 512, "{backend}: one entry per 2 MiB block");
        let pairs = match backend {
            Backend::Eager => 512,
            Backend::DeferredWrites => 512 / 64,
            Backend::Batched => 1,
        };
        assert_eq!((c.dsb_ishst, c.isb), (pairs, pairs), "{backend}: {c:?}");
        assert_eq!(shape(va, BLOCK_1G)[..], [(Level::L2, false, BLOCK_1G)], "{backend}");
        for off in [0, BLOCK_1G / 2 + PAGE_SIZE, BLOCK_1G - PAGE_SIZE] {
            check_mapped(va.add(off), PAGE_SIZE);
        }
        let freed = cost(|| vfree(va).unwrap());
        // One range TLBI (FEAT_TLBIRANGE), or one full flush without it.
        let one = match mm::flush_strategy(BLOCK_1G / PAGE_SIZE) {
            FlushStrategy::RangeTlbi => (0, 1, 0),
            _ => (0, 0, 1),
        };
        assert_eq!((freed.tlbi_page, freed.tlbi_range, freed.tlbi_all), one, "{backend}: {freed:?}");
        assert_eq!(freed.dsb_ish, 1, "{backend}: one flush: {freed:?}");
        check_unmapped(va, PAGE_SIZE);
        assert_eq!(footprint(), before, "{backend}: every frame back");
    }
}
