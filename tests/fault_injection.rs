//! Fault injection: every public mapping operation is run once to count
//! the frame requests it makes, then once per request with exactly that
//! request failing. Each failing run must return the operation's
//! out-of-memory error and leave the frame count, the area list, every
//! page-table entry and the lazy MMU state exactly as they were.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use alloc::vec::Vec;
use core::cell::RefCell;
use core::convert::Infallible;
use core::fmt::Debug;

use lazymmu::mm::{
    self, ApplyError, Attributes, BLOCK_1G, BLOCK_2M, Descriptor, KernelStack, Level, PAGE_SIZE, PhysAddr, VMALLOC_END,
    VirtAddr, VmallocError, apply_to_page_range, audit, frame_alloc,
    lazy_mmu::{Backend, use_backend},
    pgtable::{self, EntryRef, MapError},
    phys_to_virt, set_linear_map_ro, set_linear_map_rw,
};
use lazymmu::println;

lazymmu::test_image!();

/// Runs `op` on a fresh `setup()` once to count its frame requests, then
/// once per request with that one failing. Returns the count.
fn every_failure_point<S, T, E: Debug + PartialEq>(
    name: &str,
    setup: impl Fn() -> S,
    op: impl Fn(&S) -> Result<T, E>,
    out_of_memory: E,
    undo: impl Fn(&S, T),
    teardown: impl Fn(S),
) -> u64 {
    let s = setup();
    frame_alloc::fail_request(None);
    let done = op(&s).unwrap_or_else(|e| panic!("{name}: fails without fault injection: {e:?}"));
    let requests = frame_alloc::requests();
    undo(&s, done);
    teardown(s);
    // The tables the run made stay after the undo (as vmalloc's do): take
    // them away, so that each failing run needs every allocation again.
    mm::reclaim_page_tables();
    for k in 1..=requests {
        let s = setup();
        let before = audit::state();
        frame_alloc::fail_request(Some(k));
        let got = op(&s);
        frame_alloc::fail_request(None);
        match got {
            Err(e) => assert_eq!(e, out_of_memory, "{name}: request {k} of {requests} failed"),
            Ok(_) => panic!("{name}: request {k} of {requests} failed, but the operation succeeded"),
        }
        assert_eq!(audit::state(), before, "{name}: request {k} of {requests} failed and something changed");
        teardown(s);
    }
    println!("  {name}: {requests} allocation points, each failed once, nothing changed");
    requests
}

fn no_setup() {}
fn no_teardown(_: ()) {}

#[test_case]
fn vmalloc_fails_cleanly_at_every_allocation_point() {
    for backend in Backend::ALL {
        let _b = use_backend(backend);
        // A fresh GiB and a range across a 2 MiB boundary: the pages' frames
        // and new level-2 and level-3 tables.
        let n = every_failure_point(
            "vmalloc_aligned",
            no_setup,
            |_| mm::vmalloc_aligned(BLOCK_2M + 4 * PAGE_SIZE, BLOCK_1G),
            VmallocError::OutOfMemory,
            |_, va| mm::vfree(va).unwrap(),
            no_teardown,
        );
        // The 516 frames are one bulk request (alloc_frames_bulk), then one
        // request per table the walk links (from a cold region: levels 1
        // and 2, and two of level 3).
        assert_eq!(n, 5, "{backend}: one bulk request for the frames and one per table");
        let top = VirtAddr::new(VMALLOC_END.as_u64() - BLOCK_1G);
        every_failure_point(
            "vmalloc_range (the region's last GiB)",
            no_setup,
            |_| mm::vmalloc_range(BLOCK_2M + 4 * PAGE_SIZE, BLOCK_2M, top, VMALLOC_END),
            VmallocError::OutOfMemory,
            |_, va| mm::vfree(va).unwrap(),
            no_teardown,
        );
        every_failure_point(
            "vzalloc",
            no_setup,
            |_| mm::vzalloc(3 * PAGE_SIZE),
            VmallocError::OutOfMemory,
            |_, va| mm::vfree(va).unwrap(),
            no_teardown,
        );
    }
}

#[test_case]
fn vmap_fails_cleanly_at_every_allocation_point() {
    let frames: Vec<PhysAddr> = (0..600).map(|_| frame_alloc::alloc_frame().unwrap()).collect();
    for backend in Backend::ALL {
        let _b = use_backend(backend);
        // 600 pages span two level-3 tables, at least one of them new.
        let n = every_failure_point(
            "vmap_pages",
            no_setup,
            // SAFETY: the test's own frames, in an area of its own.
            |_| unsafe { mm::vmap_pages(&frames, Attributes::KERNEL_RW) },
            VmallocError::OutOfMemory,
            |_, va| mm::vunmap(va).unwrap(),
            no_teardown,
        );
        assert!(n >= 1, "{backend}: vmap_pages needs a table");
        let contiguous = frame_alloc::alloc_contiguous(513, BLOCK_2M).unwrap();
        let n = every_failure_point(
            "vmap_contiguous",
            no_setup,
            // SAFETY: the test's own frames, in an area of its own.
            |_| unsafe { mm::vmap_contiguous(contiguous, BLOCK_2M + PAGE_SIZE, Attributes::KERNEL_RW) },
            VmallocError::OutOfMemory,
            |_, va| mm::vunmap(va).unwrap(),
            no_teardown,
        );
        assert!(n >= 1, "{backend}: the page after the block needs a level-3 table");
        // Into an area of the caller's: where a block goes, an empty table
        // left by an earlier mapping is taken away, and the tables it may
        // take with it are allocated up front.
        let n = every_failure_point(
            "vmap_range (over an empty table)",
            || {
                let area = mm::get_vm_area(2 * BLOCK_2M, BLOCK_2M).unwrap();
                apply_to_page_range(area, PAGE_SIZE, |_: &EntryRef| Ok::<(), Infallible>(())).unwrap();
                area
            },
            // SAFETY: the test's own frames, in its own area.
            |&area| unsafe { mm::vmap_range(area, area.add(BLOCK_2M + PAGE_SIZE), contiguous, Attributes::KERNEL_RW) },
            VmallocError::OutOfMemory,
            |&area, ()| mm::vunmap_range(area, area.add(BLOCK_2M + PAGE_SIZE)).unwrap(),
            |area| {
                mm::free_vm_area(area).unwrap();
                mm::reclaim_page_tables();
            },
        );
        assert!(n >= 1, "{backend}: the tables are allocated before anything changes: {n}");
        frame_alloc::free_frames(contiguous, 513).unwrap();
    }
    for pa in frames {
        frame_alloc::free_frame(pa).unwrap();
    }
}

#[test_case]
fn apply_to_page_range_fails_cleanly_at_every_allocation_point() {
    for backend in Backend::ALL {
        let _b = use_backend(backend);
        let n = every_failure_point(
            "apply_to_page_range",
            || mm::get_vm_area(BLOCK_1G, BLOCK_1G).unwrap(),
            |&va| {
                apply_to_page_range(va.add(BLOCK_2M - 4 * PAGE_SIZE), 8 * PAGE_SIZE, |e: &EntryRef| {
                    // SAFETY: RAM, read-only (the linear map has it so), in
                    // the test's own area.
                    unsafe {
                        pgtable::write_entry(
                            e,
                            Descriptor::leaf(Level::L3, PhysAddr::new(0x4000_0000), Attributes::KERNEL_RO),
                        )
                    };
                    Ok::<(), Infallible>(())
                })
            },
            ApplyError::Map(MapError::OutOfMemory),
            |&va, _| mm::vunmap_range(va, va.add(BLOCK_1G)).unwrap(),
            |va| mm::free_vm_area(va).unwrap(),
        );
        assert!(n >= 3, "{backend}: a level-2 and two level-3 tables: {n}");
    }
}

#[test_case]
fn set_linear_map_splitting_a_block_fails_cleanly_at_every_allocation_point() {
    // A fresh 2 MiB run of frames is one block of the linear map (with
    // BBML2_NOABORT); changing one page inside it needs split tables. Each run is kept until the end
    // (a split block stays split, so a freed run would not be fresh again).
    let runs = RefCell::new(Vec::new());
    let n = every_failure_point(
        "set_linear_map_ro inside a 2 MiB block",
        || frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap(),
        // SAFETY: the test's own frames, writable again before they are freed.
        |&pa| unsafe { set_linear_map_ro(phys_to_virt(pa).add(8 * PAGE_SIZE), 1) },
        MapError::OutOfMemory,
        // SAFETY: the test's own frames.
        |&pa, ()| unsafe { set_linear_map_rw(phys_to_virt(pa).add(8 * PAGE_SIZE), 1) }.unwrap(),
        |pa| runs.borrow_mut().push(pa),
    );
    if lazymmu::cpu::features().bbml2_noabort {
        assert_eq!(n, 2, "one table per boundary of the change");
    } else {
        assert_eq!(n, 0, "the linear map is made of pages: nothing to split, nothing to allocate");
    }
    for pa in runs.into_inner() {
        frame_alloc::free_frames(pa, 512).unwrap();
    }
}

#[test_case]
fn kernel_stacks_fail_cleanly_at_every_allocation_point() {
    let n = every_failure_point(
        "KernelStack::new",
        no_setup,
        |_| KernelStack::new(),
        MapError::OutOfMemory,
        |_, stack| drop(stack),
        no_teardown,
    );
    assert!(n >= 16, "a frame per stack page: {n}");
}

#[test_case]
fn an_injected_failure_fires_once_and_counts_requests() {
    frame_alloc::fail_request(Some(2));
    let first = frame_alloc::alloc_frame().unwrap();
    assert_eq!(frame_alloc::alloc_frame(), Err(frame_alloc::FrameError::OutOfMemory));
    let third = frame_alloc::alloc_frame().unwrap();
    assert_eq!(frame_alloc::requests(), 3);
    frame_alloc::fail_request(None);
    frame_alloc::free_frame(first).unwrap();
    frame_alloc::free_frame(third).unwrap();
}
