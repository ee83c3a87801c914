//! `debug_pagealloc=on`, built into this image's command line: free frames
//! are out of the linear map, allocation maps them back, a use after free
//! faults, and an allocation inside a lazy section nests one (Ryan Roberts'
//! RFC "mm: Avoid calling page allocator from apply_to_page_range()",
//! <20250530140446.2387131-4-ryan.roberts@arm.com>), counted under every backend against the `_nolazy` cure.

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

use kasan_shadow::{Populate, Populated, populate_shadow};
use lazymmu::barrier::{BarrierCounts, cost};
use lazymmu::exception::{ExceptionClass, FaultStatus};
use lazymmu::mm::{
    self, Access, BLOCK_1G, BLOCK_2M, FlushStrategy, HwTranslation, PAGE_SIZE, PhysAddr, VirtAddr,
    debug_pagealloc::{self, MapBack},
    frame_alloc, hw_translate, image_phys,
    lazy_mmu::{self, Backend, is_lazy_mmu_mode_active, use_backend},
    pgtable::LeafSizes,
    pgtable_check::{self, Rule},
    phys_to_virt, probe,
    ptdump::region_stats,
    vfree, vmalloc,
};
use lazymmu::{cpu, dtb, init};

lazymmu::test_image!("debug_pagealloc=on");

fn pairs(c: BarrierCounts) -> (u64, u64) {
    (c.dsb_ishst, c.isb)
}

/// `va` takes a level-3 translation fault, by `at s1e1r` and by a real read.
fn assert_unmapped(va: VirtAddr) {
    assert_eq!(hw_translate(va, Access::Read), HwTranslation::Fault(FaultStatus::Translation { level: 3 }), "{va}");
    let fault = probe::read(va).unwrap_err();
    assert_eq!(
        (fault.class, fault.status),
        (ExceptionClass::DataAbortCurrentEl, Some(FaultStatus::Translation { level: 3 }))
    );
}

/// `pa`'s linear-map alias translates to it, and takes a write.
fn assert_mapped(pa: PhysAddr) {
    let va = phys_to_virt(pa);
    assert_eq!(hw_translate(va, Access::Write), HwTranslation::Mapped { pa, mair_attr: 0xff });
    // SAFETY: the caller owns the frame.
    unsafe { probe::write(va, 0x0dd_ba11).unwrap() };
    assert_eq!(probe::read(va), Ok(0x0dd_ba11));
}

/// The linear map's invariant: exactly the frames in use are mapped, as pages.
fn assert_linear_map_is_the_used_frames() {
    let linear = region_stats()[0];
    assert_eq!((linear.blocks_1g, linear.blocks_2m), (0, 0), "only pages in the linear map");
    assert_eq!(linear.pages, frame_alloc::stats().used, "one page mapped per frame in use");
}

/// How many blocks a linear map of [start, end) is built with (1 GiB and
/// 2 MiB where aligned): the boot split's expected work.
fn blocks_in(start: PhysAddr, end: PhysAddr) -> usize {
    let (mut at, end, mut blocks) = (start.as_u64(), end.as_u64(), 0);
    while at < end {
        let step = [BLOCK_1G, BLOCK_2M].into_iter().find(|&size| at % size == 0 && at + size <= end);
        blocks += step.is_some() as usize;
        at += step.unwrap_or(PAGE_SIZE);
    }
    blocks
}

#[test_case]
fn a_refused_bulk_free_leaves_every_frame_mapped() {
    let mut frames = Vec::new();
    frame_alloc::alloc_frames_bulk(4, &mut frames).unwrap();
    let used = frame_alloc::stats().used;
    // One frame listed twice: the whole list is refused, before any frame
    // leaves the linear map.
    let twice = [frames[0], frames[1], frames[0]];
    assert_eq!(frame_alloc::free_frames_bulk(&twice), Err(frame_alloc::FrameError::NotAllocated(frames[0])));
    assert_eq!(frame_alloc::stats().used, used);
    for &pa in &frames {
        assert_mapped(pa);
    }
    assert_linear_map_is_the_used_frames();
    frame_alloc::free_frames_bulk(&frames).unwrap();
    for &pa in &frames {
        assert_unmapped(phys_to_virt(pa));
    }
}

#[test_case]
fn the_boot_option_unmaps_every_free_frame() {
    assert!(debug_pagealloc::requested() && debug_pagealloc::enabled());
    assert_linear_map_is_the_used_frames();
    let boot = debug_pagealloc::boot_stats();
    assert!(boot.frames_unmapped > frame_alloc::stats().total / 2, "{boot:?}");
}

#[test_case]
fn blocks_are_split_at_boot_with_bbml2_noabort_and_never_made_without() {
    let boot = debug_pagealloc::boot_stats();
    if cpu::features().bbml2_noabort {
        let m = dtb::info();
        let image = init::image();
        let (ro_start, ro_end) = (image_phys(image, image.text.0), image_phys(image, image.rodata.1));
        let ram_end = m.ram_start.add(m.ram_size);
        let expected = blocks_in(m.ram_start, ro_start) + blocks_in(ro_start, ro_end) + blocks_in(ro_end, ram_end);
        assert_eq!(mm::linear_map_leaves(), LeafSizes::Blocks);
        assert_eq!(boot.blocks_split, expected);
    } else {
        assert_eq!(mm::linear_map_leaves(), LeafSizes::PagesOnly);
        assert_eq!(boot.blocks_split, 0);
    }
}

#[test_case]
fn a_freed_frame_faults_through_the_linear_map() {
    let pa = frame_alloc::alloc_frame().unwrap();
    assert_mapped(pa);
    frame_alloc::free_frame(pa).unwrap();
    // The use after free that debug_pagealloc exists to catch.
    assert_unmapped(phys_to_virt(pa));
    assert_linear_map_is_the_used_frames();
}

#[test_case]
fn allocating_costs_one_pair_and_freeing_one_tlb_flush() {
    let _b = use_backend(Backend::Batched);
    let mut pa = PhysAddr::new(0);
    let alloc = cost(|| pa = frame_alloc::alloc_contiguous(4, PAGE_SIZE).unwrap());
    assert_eq!((pairs(alloc), alloc.tlbi()), ((1, 1), 0), "a map-back is one section: {alloc:?}");
    let free = cost(|| frame_alloc::free_frames(pa, 4).unwrap());
    let tlbis = match mm::flush_strategy(4) {
        FlushStrategy::RangeTlbi => (0, 1),
        FlushStrategy::PerPage => (4, 0),
        FlushStrategy::All => unreachable!("4 pages"),
    };
    assert_eq!((free.tlbi_page, free.tlbi_range), tlbis, "one flush: {free:?}");
    assert_eq!((free.dsb_ishst, free.dsb_ish, free.isb), (1, 1, 1), "clearing is free, the flush is not: {free:?}");
    for i in 0..4 {
        assert_unmapped(phys_to_virt(pa.add(i * PAGE_SIZE)));
    }
}

#[test_case]
fn bad_frees_unmap_nothing() {
    let pa = frame_alloc::alloc_contiguous(2, PAGE_SIZE).unwrap();
    frame_alloc::free_frame(pa.add(PAGE_SIZE)).unwrap();
    let before = frame_alloc::stats();
    assert_eq!(frame_alloc::free_frames(pa, 2), Err(frame_alloc::FrameError::NotAllocated(pa.add(PAGE_SIZE))));
    assert_eq!(frame_alloc::stats(), before);
    assert_mapped(pa);
    frame_alloc::free_frame(pa).unwrap();
    assert_linear_map_is_the_used_frames();
}

#[test_case]
fn an_allocation_in_a_section_nests_and_the_outer_batch_goes_on() {
    for backend in Backend::ALL {
        let _b = use_backend(backend);
        let section = lazy_mmu::enable();
        let mut pa = PhysAddr::new(0);
        let alloc = cost(|| pa = frame_alloc::alloc_frame().unwrap());
        // Eager pays for the map-back's write; the others pay at its nested exit.
        assert_eq!(pairs(alloc), (1, 1), "{backend}: {alloc:?}");
        assert!(is_lazy_mmu_mode_active(), "{backend}: the caller is still in lazy mode");
        // Reachable before the caller's section ends.
        assert_mapped(pa);
        let leave = cost(|| drop(section));
        assert_eq!(pairs(leave), (0, 0), "{backend}: nothing was left pending");
        frame_alloc::free_frame(pa).unwrap();
    }
}

const PAGES: u64 = 8;

fn populate(backend: Backend, how: Populate, map_back: MapBack) -> Populated {
    let _b = use_backend(backend);
    let before = frame_alloc::stats().used;
    let areas = mm::area_count();
    let previous = debug_pagealloc::set_map_back(map_back);
    let outcome = populate_shadow(PAGES, how);
    debug_pagealloc::set_map_back(previous);
    // The shadow area's tables stay after its unmap, as vmalloc's do.
    mm::reclaim_page_tables();
    assert_eq!((frame_alloc::stats().used, mm::area_count()), (before, areas), "{backend}: nothing leaked");
    outcome.unwrap()
}

#[test_case]
fn populating_in_lazy_mode_nests_one_section_per_allocation() {
    // 8 map-backs + 8 shadow entries; each nested exit pays one pair, the
    // outermost leave one more: N + 1.
    assert_eq!(populate(Backend::Eager, Populate::Lazy, MapBack::NestedSection).row(), (16, 16, 16, 8, 8, 0));
    assert_eq!(populate(Backend::Batched, Populate::Lazy, MapBack::NestedSection).row(), (16, 9, 9, 8, 8, 0));
    assert_eq!(populate(Backend::DeferredWrites, Populate::Lazy, MapBack::NestedSection).row(), (16, 9, 9, 8, 8, 0));
}

#[test_case]
fn the_nolazy_variant_never_allocates_in_lazy_mode_and_pays_per_write() {
    for backend in Backend::ALL {
        assert_eq!(
            populate(backend, Populate::NoLazy, MapBack::NestedSection).row(),
            (16, 16, 16, 0, 0, 0),
            "{backend}"
        );
    }
}

#[test_case]
fn a_map_back_in_the_callers_section_faults_under_deferred_writes() {
    // The allocator hands out each frame with its map-back unpublished: the
    // page-table rules checker reports it (publish) once per frame, under
    // every backend that defers, though only deferred-writes faults here.
    let bug = |backend| {
        pgtable_check::expecting(Rule::Publish, || populate(backend, Populate::Lazy, MapBack::CallersSection).row())
    };
    let reported = if pgtable_check::enabled() { 8 } else { 0 };
    let (eager, reports) = bug(Backend::Eager);
    assert_eq!((eager, reports.total()), ((16, 16, 16, 0, 8, 0), 0));
    // One pair for everything, paid after the frames were touched.
    let (batched, reports) = bug(Backend::Batched);
    assert_eq!((batched, reports.total()), ((16, 1, 1, 0, 8, 0), reported));
    // The map-back is still queued when the frame is poisoned.
    let (deferred, reports) = bug(Backend::DeferredWrites);
    assert_eq!((deferred, reports.total()), ((16, 1, 1, 0, 8, 8), reported));
    if let Some(first) = reports.first.first() {
        assert!(first.what.as_str().contains("1 deferred store not made"), "{first}");
    }
}

#[test_case]
fn vfree_takes_every_frame_out_of_the_linear_map() {
    let before = frame_alloc::stats().used;
    let pages = 64;
    let va = vmalloc(pages * PAGE_SIZE).unwrap();
    let frames: Vec<PhysAddr> = (0..pages)
        .map(|i| match hw_translate(va.add(i * PAGE_SIZE), Access::Write) {
            HwTranslation::Mapped { pa, .. } => pa,
            other => panic!("page {i}: {other:?}"),
        })
        .collect();
    for &pa in &frames {
        assert_mapped(pa);
    }
    vfree(va).unwrap();
    // A lazily freed area's frames go back (and out of the linear map)
    // at its purge.
    mm::vm_unmap_aliases();
    for &pa in &frames {
        assert_unmapped(phys_to_virt(pa));
    }
    mm::reclaim_page_tables();
    assert_eq!(frame_alloc::stats().used, before, "with the area's tables, once reclaimed");
    assert_linear_map_is_the_used_frames();
}

#[test_case]
fn vfree_flushes_at_once_under_debug_pagealloc_and_still_waits_for_the_purge() {
    // Linux's free_unmap_vmap_area: with debug_pagealloc on, the area's
    // range is flushed at once, so that a use after free faults; the area
    // still waits on the purge list (its frames and range come back then).
    let was = mm::set_vmap_lazy_purge(true);
    mm::vm_unmap_aliases();
    let va = vmalloc(PAGE_SIZE).unwrap();
    // SAFETY: our own fresh mapping.
    unsafe { probe::write(va, 1) }.unwrap();
    let used = frame_alloc::stats().used;
    let c = cost(|| vfree(va).unwrap());
    let one_flush = cost(|| mm::flush_tlb_kernel_range(va, va.add(PAGE_SIZE)));
    assert_eq!(c, one_flush, "the area's own flush, at once");
    assert_unmapped(va);
    assert_eq!((mm::lazy_pages(), frame_alloc::stats().used), (1, used), "on the purge list all the same");
    mm::vm_unmap_aliases();
    assert_eq!((mm::lazy_pages(), frame_alloc::stats().used), (0, used - 1));
    mm::set_vmap_lazy_purge(was);
}
