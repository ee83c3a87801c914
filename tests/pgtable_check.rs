//! The page-table rules checker: each rule broken on purpose (a planted
//! bug, or a store made by hand) is reported exactly once, with its rule
//! and the entry it is about; a clean run of every mapper under every
//! backend reports nothing.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use core::convert::Infallible;

use lazymmu::barrier;
use lazymmu::mm::{
    self, Attributes, BLOCK_2M, Descriptor, Entry, KernelStack, Level, MemoryType, PAGE_SIZE, PhysAddr, VirtAddr,
    apply_to_existing_page_range, apply_to_page_range, apply_to_page_range_by_table, apply_to_page_range_nolazy, audit,
    cache_type, flush_icache_range, frame_alloc, free_vm_area, get_vm_area,
    lazy_mmu::{Backend, enable, use_backend},
    pgtable::{self, EntryRef, LeafSizes, Ptes},
    pgtable_check::{self, Rule, Violations},
    phys_to_virt, probe, set_linear_map_ro, set_linear_map_rw, set_memory_nx, set_memory_ro, set_memory_rw,
    set_memory_x, vfree, vmalloc, vmap_contiguous, vmap_pages, vunmap, vunmap_range, vzalloc, write_instructions,
};
use lazymmu::{Bug, with_planted};
use lazymmu::{Scratch, cpu, sched};

lazymmu::test_image!();

fn page(pa: PhysAddr) -> Descriptor {
    Descriptor::leaf(Level::L3, pa, Attributes::KERNEL_RW)
}

/// Writes an entry of a test's own scratch or area; the rules it breaks on
/// purpose are the checker's business, not memory safety's (the frames
/// are the test's own).
fn write(entry: &EntryRef<'_>, desc: Descriptor) {
    // SAFETY: an entry of the test's own area, mapping the test's own
    // frames; each test flushes what it clears before the frame is freed
    // (or breaks exactly that rule, under the checker, on purpose).
    unsafe { pgtable::write_entry(entry, desc) };
}

/// Exactly one violation of `rule`, about the entry for `va` at `level`
/// (None: a violation that names no entry).
fn exactly_one(found: &Violations, rule: Rule, at: Option<(VirtAddr, Level)>) {
    assert_eq!(found.total(), 1, "one report: {}", found.summary());
    let v = &found.first[0];
    assert_eq!(v.rule, rule, "{v}");
    let reported = v.entry.and_then(|e| e.at).map(|(va, level)| (VirtAddr::new(va), level));
    assert_eq!(reported, at, "{v}");
    assert_eq!(v.cpu, 0, "{v}");
    assert!(v.backtrace[0] != 0, "a call chain: {v}");
}

// ---- each rule, broken on purpose ---------------------------------------

#[test_case]
fn publish_a_section_left_without_its_pair_is_reported() {
    let _b = use_backend(Backend::Batched);
    let scratch = Scratch::new(1);
    let (_, found) = pgtable_check::expecting(Rule::Publish, || {
        with_planted(Bug::SkipLeavePair, || {
            let _section = enable();
            scratch.map(0);
        })
    });
    exactly_one(&found, Rule::Publish, Some((scratch.va(0), Level::L3)));
    assert!(
        found.first[0].what.as_str().starts_with("lazy_mmu_mode_disable() with 1 valid entry stored"),
        "{}",
        found.first[0]
    );
    // The pair the planted bug skipped, so the scratch's teardown is clean.
    barrier::dsb_ishst();
    barrier::isb();
}

#[test_case]
fn publish_a_stack_handed_over_with_its_mapping_pending_is_reported() {
    // A stack mapped inside the caller's batched section, its pair not
    // paid when it is handed to another task (as before the fix): the
    // section's writes are made by hand here, with the same effect.
    let _b = use_backend(Backend::Batched);
    let scratch = Scratch::new(1);
    let (_, found) = pgtable_check::expecting(Rule::Publish, || {
        let _section = enable();
        scratch.map(0);
        pgtable_check::handed_over();
    });
    exactly_one(&found, Rule::Publish, Some((scratch.va(0), Level::L3)));
    assert!(found.first[0].what.as_str().starts_with("a mapping was handed to another task"), "{}", found.first[0]);
}

#[test_case]
fn link_order_a_table_linked_before_its_zeroing_is_ordered_is_reported() {
    // A fresh 2 MiB of address space: the walk links a new level-3 table.
    let va = get_vm_area(BLOCK_2M, BLOCK_2M).unwrap();
    let (result, found) = pgtable_check::expecting(Rule::LinkOrder, || {
        with_planted(Bug::SkipTableDmb, || apply_to_page_range(va, PAGE_SIZE, |_| Ok::<(), Infallible>(())))
    });
    // Every table the walk linked, the level-3 one under the area's level-2
    // entry among them.
    assert_eq!(found.total(), result.unwrap().tables_allocated as u64, "{}", found.summary());
    let at = |v: &lazymmu::mm::pgtable_check::Violation| v.entry.and_then(|e| e.at).map(|(a, l)| (VirtAddr::new(a), l));
    assert!(
        found.first.iter().any(|v| v.rule == Rule::LinkOrder && at(v) == Some((va, Level::L2))),
        "{:?}",
        found.first
    );
    vunmap_range(va, va.add(PAGE_SIZE)).unwrap();
    free_vm_area(va).unwrap();
}

#[test_case]
fn break_before_make_a_live_page_replaced_by_another_frame_is_reported() {
    let scratch = Scratch::new(1);
    let other = frame_alloc::alloc_frame().unwrap();
    scratch.map(0);
    let (_, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || write(&scratch.entry(0), page(other)));
    exactly_one(&found, Rule::BreakBeforeMake, Some((scratch.va(0), Level::L3)));
    scratch.clear(0);
    mm::flush_tlb_kernel_range(scratch.va(0), scratch.va(0).add(PAGE_SIZE));
    frame_alloc::free_frame(other).unwrap();
}

#[test_case]
fn break_before_make_a_not_global_page_made_global_is_reported() {
    // Global to not-global in place is allowed (Linux's
    // pgattr_change_is_safe()); back again needs break-before-make.
    let scratch = Scratch::new(1);
    scratch.map(0);
    let ng = Attributes { not_global: true, ..Attributes::KERNEL_RW };
    let (_, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || {
        write(&scratch.entry(0), Descriptor::leaf(Level::L3, scratch.frame(), ng))
    });
    assert_eq!(found.total(), 0, "global to not-global: {}", found.summary());
    let (_, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || scratch.map(0));
    exactly_one(&found, Rule::BreakBeforeMake, Some((scratch.va(0), Level::L3)));
    assert_eq!(
        found.first[0].what.as_str(),
        "a live not-global (nG) mapping was made global without break-before-make: a TLB may hold both entries, and both match (a TLB conflict)"
    );
    scratch.clear(0);
    mm::flush_tlb_kernel_range(scratch.va(0), scratch.va(0).add(PAGE_SIZE));
}

#[test_case]
fn invalidate_a_permission_upgrade_left_unflushed_is_reported() {
    // set_memory_rw without its flush: a TLB may still hold the read-only
    // entry, and a write through it would take a permission fault that
    // nothing forgives at EL1. Two entries: the page and its linear alias.
    let va = vmalloc(PAGE_SIZE).unwrap();
    set_memory_ro(va, 1).unwrap();
    let (result, found) =
        pgtable_check::expecting(Rule::Invalidate, || with_planted(Bug::UpgradeUnflushed, || set_memory_rw(va, 1)));
    result.unwrap();
    // The report names the first of the two: the alias.
    let Entry::Leaf { addr: frame, .. } = pgtable::lookup(va).entry else { panic!("{va} is mapped") };
    exactly_one(&found, Rule::Invalidate, Some((phys_to_virt(frame), Level::L3)));
    let v = &found.first[0];
    assert_eq!(
        v.what.as_str(),
        "an operation returned with 2 entries made more permissive and not invalidated in the TLB (TLBI + dsb ish): a TLB may still hold the old entry, and an EL1 permission fault is never fixed up"
    );
    let entry = v.entry.expect("the entry is reported");
    let read_only = |d: u64| match Descriptor(d).decode(Level::L3) {
        Entry::Leaf { attrs, .. } => !attrs.writable,
        other => panic!("a page: {other:?}"),
    };
    assert_eq!((read_only(entry.old), read_only(entry.new)), (true, false), "{v}");
    // The flush the bug skipped; with it, the same upgrade is clean.
    mm::flush_tlb_kernel_range(va, va.add(PAGE_SIZE));
    set_memory_ro(va, 1).unwrap();
    let (result, found) = pgtable_check::expecting(Rule::Invalidate, || set_memory_rw(va, 1));
    result.unwrap();
    assert_eq!(found.total(), 0, "{}", found.summary());
    vfree(va).unwrap();
}

#[test_case]
fn icache_code_made_executable_without_its_cache_maintenance_is_reported() {
    // A `ret` written through the data side, then made executable with
    // flush_icache_range doing nothing: on a core with CTR_EL0.IDC or DIC
    // clear (Cortex-A72) instruction fetches may still see the old bytes.
    let va = vmalloc(PAGE_SIZE).unwrap();
    let Entry::Leaf { addr: frame, .. } = pgtable::lookup(va).entry else { panic!("{va} is mapped") };
    // SAFETY: the test's own page, writable.
    unsafe { write_instructions(va, &[probe::RET_INSTRUCTION]) };
    set_memory_ro(va, 1).unwrap();
    let (result, found) = pgtable_check::expecting(Rule::Icache, || {
        with_planted(Bug::SkipIcache, || {
            flush_icache_range(va, va.add(4));
            set_memory_x(va, 1)
        })
    });
    result.unwrap();
    exactly_one(&found, Rule::Icache, Some((va, Level::L3)));
    let v = &found.first[0];
    assert_eq!(v.frame, Some(frame), "{v}");
    let ctr = cache_type();
    let want = if ctr.idc() {
        "were not complete (no dsb since, on the CPU that wrote them)"
    } else {
        "were not cleaned to the point of unification (dc cvau, then dsb ish; flush_icache_range)"
    };
    let want = alloc::format!(
        "memory at {:#x} was made executable while the instructions written to it at {:#x} {want}",
        frame.as_u64(),
        va.as_u64()
    );
    assert!(v.what.as_str().starts_with(&want), "{v}");
    // With the maintenance, the same change is clean, and the code runs.
    set_memory_nx(va, 1).unwrap();
    set_memory_rw(va, 1).unwrap();
    // SAFETY: as above.
    unsafe { write_instructions(va, &[probe::RET_INSTRUCTION]) };
    flush_icache_range(va, va.add(4));
    set_memory_ro(va, 1).unwrap();
    let (result, found) = pgtable_check::expecting(Rule::Icache, || set_memory_x(va, 1));
    result.unwrap();
    assert_eq!(found.total(), 0, "{}", found.summary());
    // SAFETY: the page holds a `ret`, made executable.
    assert_eq!(unsafe { probe::exec(va) }, Ok(()));
    set_memory_nx(va, 1).unwrap();
    set_memory_rw(va, 1).unwrap();
    vfree(va).unwrap();
}

#[test_case]
fn mismatched_alias_ram_mapped_as_device_is_reported() {
    let frame = frame_alloc::alloc_frame().unwrap();
    let (va, found) = pgtable_check::expecting(Rule::MismatchedAlias, || {
        // SAFETY: the test's own frame (the planted bug lets RAM through).
        with_planted(Bug::DeviceAlias, || unsafe { vmap_contiguous(frame, PAGE_SIZE, Attributes::DEVICE) })
    });
    let va = va.unwrap();
    exactly_one(&found, Rule::MismatchedAlias, Some((va, Level::L3)));
    let v = &found.first[0];
    assert_eq!(v.frame, Some(frame), "{v}");
    let alias = phys_to_virt(frame).as_u64();
    let want = alloc::format!(
        "RAM at {:#x} was mapped Device while its linear-map alias at {alias:#x} maps it Normal write-back: a mismatched-attribute alias (Linux's ioremap refuses RAM)",
        frame.as_u64()
    );
    assert_eq!(v.what.as_str(), want);
    vunmap(va).unwrap();
    // The unmapped area waits for a purge: none may still reach the frame.
    lazymmu::mm::vm_unmap_aliases();
    frame_alloc::free_frame(frame).unwrap();
}

#[test_case]
fn ram_is_refused_as_device_or_non_cacheable_memory_and_nothing_changes() {
    // Linux's ioremap refuses RAM; so do vmap_contiguous and vmap_range
    // for any memory type but the linear map's.
    let frames = frame_alloc::alloc_contiguous(2, PAGE_SIZE).unwrap();
    let area = get_vm_area(2 * PAGE_SIZE, PAGE_SIZE).unwrap();
    let non_cacheable = Attributes { memory: MemoryType::NormalNonCacheable, ..Attributes::KERNEL_RW };
    let before = audit::state();
    for attrs in [Attributes::DEVICE, non_cacheable] {
        // SAFETY: the test's own frames and area; refused before any store.
        let got = unsafe { vmap_contiguous(frames, 2 * PAGE_SIZE, attrs) };
        assert_eq!(got, Err(mm::VmallocError::RamNotDevice(frames)), "{attrs:?}");
        // SAFETY: as above.
        let got = unsafe { mm::vmap_range(area, area.add(2 * PAGE_SIZE), frames, attrs) };
        assert_eq!(got, Err(mm::VmallocError::RamNotDevice(frames)), "{attrs:?}");
    }
    assert_eq!(audit::state(), before);
    // Normal write-back, the linear map's own type, is mapped.
    // SAFETY: as above.
    let va = unsafe { vmap_contiguous(frames, 2 * PAGE_SIZE, Attributes::KERNEL_RW) }.unwrap();
    vunmap(va).unwrap();
    free_vm_area(area).unwrap();
    lazymmu::mm::vm_unmap_aliases();
    frame_alloc::free_frames(frames, 2).unwrap();
}

#[test_case]
fn break_before_make_set_ptes_over_live_pages_is_reported_store_by_store() {
    // A batched store is seen entry by entry: each live page replaced by
    // another frame is its own report, under every backend.
    for backend in Backend::ALL {
        let _b = use_backend(backend);
        let va = get_vm_area(4 * PAGE_SIZE, PAGE_SIZE).unwrap();
        let [old, new] = [(); 2].map(|()| frame_alloc::alloc_contiguous(4, PAGE_SIZE).unwrap());
        let set = |frames: PhysAddr| {
            apply_to_page_range_by_table(va, 4 * PAGE_SIZE, |ptes: &Ptes| {
                // SAFETY: the test's own frames, in its own area (breaking
                // break-before-make on purpose the second time).
                unsafe { pgtable::set_ptes(ptes, Descriptor::leaf(Level::L3, frames, Attributes::KERNEL_RW)) };
                Ok::<(), Infallible>(())
            })
            .unwrap()
        };
        set(old);
        let (_, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || set(new));
        assert_eq!(found.total(), 4, "{backend}: one report per page: {}", found.summary());
        let at: alloc::vec::Vec<_> = found.first.iter().filter_map(|v| v.entry.and_then(|e| e.at)).collect();
        let want: alloc::vec::Vec<_> = (0..4).map(|i| (va.add(i * PAGE_SIZE).as_u64(), Level::L3)).collect();
        assert_eq!(at, want[..at.len()], "{backend}: reported at each page in turn");
        // SAFETY: the kernel's own root and the test's own area.
        unsafe { pgtable::clear_range(pgtable::kernel_root(), va, 4 * PAGE_SIZE) }.unwrap();
        free_vm_area(va).unwrap();
        for frames in [old, new] {
            frame_alloc::free_frames(frames, 4).unwrap();
        }
    }
}

#[test_case]
fn break_before_make_a_block_split_in_place_needs_bbml2_noabort_and_the_same_memory() {
    let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap();
    // SAFETY: the test's own frames.
    let va = unsafe { vmap_contiguous(run, BLOCK_2M, Attributes::KERNEL_RW) }.unwrap();
    let walk = pgtable::walking();
    let block = walk.walk(va);
    assert_eq!(block.level, Level::L2);
    // A table of 512 pages, filled and ordered before it replaces the block.
    let table_of = |offset: u64| {
        let table = pgtable::alloc_table().unwrap();
        for i in 0..512 {
            // SAFETY: a table this test allocated and has not linked.
            let child = unsafe { walk.table_entry(table, Level::L3, va.add(i * PAGE_SIZE)) };
            write(&child, Descriptor::leaf(Level::L3, run.add((i + offset) % 512 * PAGE_SIZE), Attributes::KERNEL_RW));
        }
        barrier::dsb_ishst();
        table
    };
    let same = table_of(0);
    let (_, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || write(&block, Descriptor::table(same)));
    if cpu::features().bbml2_noabort {
        assert_eq!(found.total(), 0, "an equivalent split is allowed in place: {}", found.summary());
        // Another table over the live one, mapping the pages shuffled.
        let shuffled = table_of(1);
        let (_, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || write(&block, Descriptor::table(shuffled)));
        exactly_one(&found, Rule::BreakBeforeMake, Some((va, Level::L2)));
        // The first table is off the tables now: its walks go, then it does.
        mm::flush_tlb_kernel_pgtables(va, va.add(BLOCK_2M));
        frame_alloc::free_frame(same).unwrap();
    } else {
        exactly_one(&found, Rule::BreakBeforeMake, Some((va, Level::L2)));
        assert!(found.first[0].what.as_str().contains("without BBML2_NOABORT"), "{}", found.first[0]);
    }
    mm::flush_tlb_kernel_range(va, va.add(BLOCK_2M));
    drop(walk);
    vunmap(va).unwrap();
    mm::vm_unmap_aliases();
    frame_alloc::free_frames(run, 512).unwrap();
}

#[test_case]
fn break_before_make_a_live_linear_map_block_broken_is_reported() {
    // Only a CPU with BBML2_NOABORT has linear-map blocks to break.
    if !cpu::features().bbml2_noabort {
        return;
    }
    let run = lazymmu::linear_map_block();
    let va = phys_to_virt(run);
    // SAFETY: the test's own frames, writable again before they are freed.
    let change = || unsafe { set_linear_map_ro(va, 1) };
    let (result, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || with_planted(Bug::BreakLiveBlock, change));
    result.unwrap();
    exactly_one(&found, Rule::BreakBeforeMake, Some((va, Level::L2)));
    assert!(found.first[0].what.as_str().starts_with("a live linear-map block was broken"), "{}", found.first[0]);
    // SAFETY: the test's own frames.
    unsafe { set_linear_map_rw(va, 1) }.unwrap();
    frame_alloc::free_frames(run, 512).unwrap();
}

#[test_case]
fn invalidate_an_operation_that_clears_without_a_tlb_flush_is_reported() {
    let scratch = Scratch::new(1);
    scratch.map(0);
    let (_, found) = pgtable_check::expecting(Rule::Invalidate, || {
        let _op = pgtable_check::operation();
        scratch.clear(0);
    });
    exactly_one(&found, Rule::Invalidate, Some((scratch.va(0), Level::L3)));
    assert!(
        found.first[0].what.as_str().starts_with("an operation returned with 1 entry cleared"),
        "{}",
        found.first[0]
    );
}

#[test_case]
fn invalidate_a_frame_freed_before_its_flush_is_reported() {
    let scratch = Scratch::new(1);
    let frame = frame_alloc::alloc_frame().unwrap();
    write(&scratch.entry(0), page(frame));
    scratch.clear(0);
    let (_, found) = pgtable_check::expecting(Rule::Invalidate, || frame_alloc::free_frame(frame).unwrap());
    exactly_one(&found, Rule::Invalidate, Some((scratch.va(0), Level::L3)));
    assert_eq!(found.first[0].frame, Some(frame));
    mm::flush_tlb_kernel_range(scratch.va(0), scratch.va(0).add(PAGE_SIZE));
}

#[test_case]
fn invalidate_tables_freed_before_the_walk_flush_are_reported() {
    let va = mm::vmalloc_aligned(PAGE_SIZE, BLOCK_2M).unwrap();
    vfree(va).unwrap();
    let (_, found) =
        pgtable_check::expecting(Rule::Invalidate, || with_planted(Bug::FreeBeforeFlush, mm::reclaim_page_tables));
    // The level-3 table the area's 2 MiB had, taken away by the reclaim:
    // freed while a walk through the cleared level-2 entry may still be
    // cached.
    assert!(found.total() >= 1, "{}", found.summary());
    let v = &found.first[0];
    assert!(v.what.as_str().starts_with("a frame was freed while"), "{v}");
    assert_eq!(v.entry.and_then(|e| e.at).map(|(a, l)| (VirtAddr::new(a), l)), Some((va, Level::L2)), "{v}");
}

/// The lazy vfree purge on (whatever the command line says), nothing
/// pending; put back after.
struct LazyPurge(bool);

impl LazyPurge {
    fn on() -> LazyPurge {
        let was = LazyPurge(mm::set_vmap_lazy_purge(true));
        mm::vm_unmap_aliases();
        was
    }
}

impl Drop for LazyPurge {
    fn drop(&mut self) {
        mm::set_vmap_lazy_purge(self.0);
    }
}

#[test_case]
fn break_before_make_a_range_handed_out_before_its_purge_is_reported() {
    let _lazy = LazyPurge::on();
    let a = vmalloc(PAGE_SIZE).unwrap();
    let (b, found) = pgtable_check::expecting(Rule::BreakBeforeMake, || {
        with_planted(Bug::ReuseBeforePurge, || {
            vfree(a).unwrap();
            vmalloc(PAGE_SIZE).unwrap()
        })
    });
    assert_eq!(b, a, "the unpurged range, handed out again");
    exactly_one(&found, Rule::BreakBeforeMake, Some((a, Level::L3)));
    assert!(
        found.first[0]
            .what
            .as_str()
            .starts_with("an address freed lazily (vfree, vunmap) was mapped again before a purge flushed it"),
        "{}",
        found.first[0]
    );
    // The purge gives back the first area's frame (its range went early).
    mm::vm_unmap_aliases();
    vfree(b).unwrap();
}

#[test_case]
fn invalidate_a_frame_freed_before_the_purge_of_its_lazy_unmap_is_reported() {
    let _lazy = LazyPurge::on();
    let frame = frame_alloc::alloc_frame().unwrap();
    // SAFETY: the test's own frame, in its own area.
    let va = unsafe { vmap_pages(&[frame], Attributes::KERNEL_RW) }.unwrap();
    vunmap(va).unwrap();
    let (_, found) = pgtable_check::expecting(Rule::Invalidate, || frame_alloc::free_frame(frame).unwrap());
    exactly_one(&found, Rule::Invalidate, Some((va, Level::L3)));
    assert!(
        found.first[0].what.as_str().starts_with("a frame was freed while an area freed lazily"),
        "{}",
        found.first[0]
    );
    assert_eq!(found.first[0].frame, Some(frame));
    mm::vm_unmap_aliases();
}

#[test_case]
fn freed_while_mapped_a_frame_freed_under_its_live_page_is_reported() {
    let scratch = Scratch::new(1);
    let frame = frame_alloc::alloc_frame().unwrap();
    write(&scratch.entry(0), page(frame));
    let (_, found) = pgtable_check::expecting(Rule::FreedWhileMapped, || frame_alloc::free_frame(frame).unwrap());
    exactly_one(&found, Rule::FreedWhileMapped, Some((scratch.va(0), Level::L3)));
    assert_eq!(found.first[0].frame, Some(frame));
    assert_eq!(found.first[0].entry.map(|e| e.old), Some(page(frame).0), "{}", found.first[0]);
    assert!(
        found.first[0].what.as_str().starts_with("a frame was freed while 1 valid entry still mapped it"),
        "{}",
        found.first[0]
    );
    scratch.clear(0);
    mm::flush_tlb_kernel_range(scratch.va(0), scratch.va(0).add(PAGE_SIZE));
}

#[test_case]
fn freed_while_mapped_vfree_freeing_its_frames_before_unmapping_is_reported() {
    let va = vmalloc(3 * PAGE_SIZE).unwrap();
    let (_, found) =
        pgtable_check::expecting(Rule::FreedWhileMapped, || with_planted(Bug::VfreeFreesEarly, || vfree(va).unwrap()));
    // One report per frame, each about the page that still mapped it.
    assert_eq!(found.of(Rule::FreedWhileMapped), 3, "{}", found.summary());
    assert_eq!(found.total(), 3, "{}", found.summary());
    for (i, v) in found.first.iter().enumerate() {
        assert_eq!(v.rule, Rule::FreedWhileMapped, "{v}");
        assert_eq!(v.va(), Some(va.add(i as u64 * PAGE_SIZE).as_u64()), "{v}");
        let Some(Entry::Leaf { addr, .. }) = v.entry.map(|e| Descriptor(e.old).decode(Level::L3)) else {
            panic!("a page: {v}")
        };
        assert_eq!(v.frame, Some(addr), "{v}");
    }
    mm::vm_unmap_aliases();
}

#[test_case]
fn freed_while_mapped_a_clean_vfree_frees_nothing_still_mapped() {
    for lazy in [false, true] {
        let was = mm::set_vmap_lazy_purge(lazy);
        let va = vmalloc(3 * PAGE_SIZE).unwrap();
        let (_, found) = pgtable_check::expecting(Rule::FreedWhileMapped, || {
            vfree(va).unwrap();
            mm::vm_unmap_aliases();
        });
        assert_eq!(found.total(), 0, "lazy {lazy}: {}", found.summary());
        mm::set_vmap_lazy_purge(was);
    }
}

#[test_case]
fn table_lifetime_a_walk_guard_dropped_with_stores_queued_is_reported() {
    let _b = use_backend(Backend::DeferredWrites);
    let va = get_vm_area(PAGE_SIZE, PAGE_SIZE).unwrap();
    let frame = frame_alloc::alloc_frame().unwrap();
    let (_, found) = pgtable_check::expecting(Rule::TableLifetime, || {
        with_planted(Bug::EarlyGuardDrop, || {
            let _section = enable();
            // SAFETY: the test's own frame, in its own area.
            unsafe {
                pgtable::map_range(
                    pgtable::kernel_root(),
                    va,
                    frame,
                    PAGE_SIZE,
                    Attributes::KERNEL_RW,
                    LeafSizes::PagesOnly,
                )
            }
            .unwrap();
        })
    });
    exactly_one(&found, Rule::TableLifetime, None);
    assert!(
        found.first[0].what.as_str().starts_with("a walk guard was dropped with 1 deferred store still queued"),
        "{}",
        found.first[0]
    );
    vunmap_range(va, va.add(PAGE_SIZE)).unwrap();
    free_vm_area(va).unwrap();
    frame_alloc::free_frame(frame).unwrap();
}

#[test_case]
fn table_lifetime_a_store_into_a_freed_table_is_reported() {
    let va = mm::vmalloc_aligned(PAGE_SIZE, BLOCK_2M).unwrap();
    let table = {
        let walk = pgtable::walking();
        let Entry::Table(table) = walk.walk_create(va, Level::L2).unwrap().entry() else { panic!("a level-3 table") };
        table
    };
    vfree(va).unwrap();
    mm::reclaim_page_tables();
    // The entry's table went in the reclaim (it was empty). Safe code can
    // not keep a handle past that (an `EntryRef` borrows its walk, and a
    // reclaim waits for every walk to end); unsafe code that breaks
    // `table_entry`'s contract can, and the checker catches the store. It
    // writes the zero the freed page already holds.
    let walk = pgtable::walking();
    // SAFETY: not sound, on purpose: `table` was freed with the area. The
    // store writes zero into a zeroed free page, under the checker.
    let entry = unsafe { walk.table_entry(table, Level::L3, va) };
    let (_, found) = pgtable_check::expecting(Rule::TableLifetime, || write(&entry, Descriptor::INVALID));
    exactly_one(&found, Rule::TableLifetime, None);
    assert!(
        found.first[0].what.as_str().starts_with("a descriptor was stored into a page that is not a live page table"),
        "{}",
        found.first[0]
    );
}

#[test_case]
fn barrier_order_an_isb_before_the_dsb_is_reported() {
    let _b = use_backend(Backend::Eager);
    let scratch = Scratch::new(1);
    let (_, found) = pgtable_check::expecting(Rule::BarrierOrder, || with_planted(Bug::SwapPair, || scratch.map(0)));
    exactly_one(&found, Rule::BarrierOrder, Some((scratch.va(0), Level::L3)));
    barrier::isb();
}

#[test_case]
fn barrier_order_a_tlbi_before_the_dsb_ishst_is_reported() {
    let scratch = Scratch::new(1);
    scratch.map(0);
    let (_, found) = pgtable_check::expecting(Rule::BarrierOrder, || {
        let _op = pgtable_check::operation();
        scratch.clear(0);
        // The TLBI may run before the walker sees the clear, and refill.
        lazymmu::barrier::tlbi_vaale1is(scratch.va(0).as_u64());
        barrier::dsb_ish();
        barrier::isb();
    });
    exactly_one(&found, Rule::BarrierOrder, Some((scratch.va(0), Level::L3)));
}

// ---- and nothing when nothing is broken ----------------------------------

#[test_case]
fn a_clean_run_of_every_mapper_under_every_backend_reports_nothing() {
    let before = (pgtable_check::stats(), audit::state());
    for backend in Backend::ALL {
        let _b = use_backend(backend);
        for pages in [1, 512, 600] {
            let va = vmalloc(pages * PAGE_SIZE).unwrap();
            set_memory_ro(va, pages).unwrap();
            set_memory_x(va, 1).unwrap();
            set_memory_nx(va, 1).unwrap();
            set_memory_rw(va, pages).unwrap();
            vfree(va).unwrap();
        }
        vfree(vzalloc(3 * PAGE_SIZE).unwrap()).unwrap();
        let frames = [frame_alloc::alloc_frame().unwrap(), frame_alloc::alloc_frame().unwrap()];
        // SAFETY: the test's own frames.
        vunmap(unsafe { vmap_pages(&frames, Attributes::KERNEL_RO) }.unwrap()).unwrap();
        let run = frame_alloc::alloc_contiguous(513, BLOCK_2M).unwrap();
        // SAFETY: the test's own frames.
        vunmap(unsafe { vmap_contiguous(run, 513 * PAGE_SIZE, Attributes::KERNEL_RW) }.unwrap()).unwrap();
        let area = get_vm_area(4 * PAGE_SIZE, PAGE_SIZE).unwrap();
        let mut next = 0;
        apply_to_page_range(area, 2 * PAGE_SIZE, |e| {
            next += 1;
            write(e, Descriptor::leaf(Level::L3, frames[next % 2], Attributes::KERNEL_RW));
            Ok::<(), Infallible>(())
        })
        .unwrap();
        apply_to_page_range_nolazy(area.add(2 * PAGE_SIZE), 2 * PAGE_SIZE, |e| {
            write(e, Descriptor::leaf(Level::L3, frames[0], Attributes::KERNEL_RO));
            Ok::<(), Infallible>(())
        })
        .unwrap();
        apply_to_existing_page_range(area, 4 * PAGE_SIZE, |e| {
            write(e, Descriptor::INVALID);
            Ok::<(), Infallible>(())
        })
        .unwrap();
        mm::flush_tlb_kernel_range(area, area.add(4 * PAGE_SIZE));
        vunmap_range(area, area.add(4 * PAGE_SIZE)).unwrap();
        free_vm_area(area).unwrap();
        // The linear map: split in place with BBML2_NOABORT, pages without.
        let page = phys_to_virt(run.add(8 * PAGE_SIZE));
        // SAFETY: the test's own frame, writable again before it is freed.
        unsafe { set_linear_map_ro(page, 1) }.unwrap();
        // SAFETY: the test's own frame.
        unsafe { set_linear_map_rw(page, 1) }.unwrap();
        frame_alloc::free_frames(run, 513).unwrap();
        frames.into_iter().for_each(|pa| frame_alloc::free_frame(pa).unwrap());
        drop(KernelStack::new().unwrap());
        sched::spawn("worker", || vfree(vmalloc(PAGE_SIZE).unwrap()).unwrap()).unwrap().join().unwrap();
        // The same inside a caller's section.
        let _section = enable();
        vfree(vmalloc(5 * PAGE_SIZE).unwrap()).unwrap();
        drop(KernelStack::new().unwrap());
    }
    // What was freed lazily comes back at its purge.
    mm::vm_unmap_aliases();
    pgtable_check::quiescent();
    let found = pgtable_check::take_violations();
    assert_eq!(found.total(), 0, "{}", found.summary());
    let after = pgtable_check::stats();
    assert!(after.checks > before.0.checks + 10_000, "the run was checked: {} checks", after.checks - before.0.checks);
    assert_eq!(after.violations, before.0.violations);
    let state = audit::state();
    assert_eq!(
        (state.frames_used - linear_split_tables(&before.1, &state), state.areas),
        (before.1.frames_used, before.1.areas)
    );
}

/// Tables the linear map gained (a split block stays split).
fn linear_split_tables(before: &audit::MmState, after: &audit::MmState) -> usize {
    after.table_pages - before.table_pages
}
