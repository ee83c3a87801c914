//! set_memory_ro/rw/x/nx: permission changes of vmalloc areas (and nothing
//! else) that the MMU enforces at once, in one lazy section and one TLB
//! flush; set_linear_map_ro/rw, with linear-map blocks split exactly where
//! a change cuts them; and flush_icache_range for code written as data.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use lazymmu::barrier::{cost, set_issue_hook};
use lazymmu::boot_args::qemu_param;
use lazymmu::exception::{ExceptionClass, FaultStatus};
use lazymmu::mm::{
    self, Access, BLOCK_2M, Entry, FlushStrategy, HwTranslation, KIMAGE_VADDR, Level, PAGE_SIZE, REGIONS, VirtAddr,
    audit, flush_icache_range, frame_alloc, hw_translate,
    lazy_mmu::{Backend, use_backend},
    pgtable::{self, MapError, Operand},
    phys_to_virt, probe,
    ptdump::region_stats,
    set_linear_map_ro, set_linear_map_rw, set_memory_nx, set_memory_ro, set_memory_rw, set_memory_x, vfree, vmalloc,
    write_instructions,
};
use lazymmu::sched;
use lazymmu::sched::Task;

lazymmu::test_image!();

/// Writing `va` faults with a level-3 permission fault, and reading works.
fn assert_read_only(va: VirtAddr) {
    assert_eq!(hw_translate(va, Access::Write), HwTranslation::Fault(FaultStatus::Permission { level: 3 }));
    assert!(matches!(hw_translate(va, Access::Read), HwTranslation::Mapped { .. }));
    let value = probe::read(va).expect("readable");
    // SAFETY: writes back the value it holds, if it succeeds at all.
    let fault = unsafe { probe::write(va, value) }.unwrap_err();
    assert_eq!(
        (fault.class, fault.status, fault.write),
        (ExceptionClass::DataAbortCurrentEl, Some(FaultStatus::Permission { level: 3 }), true)
    );
}

fn assert_writable(va: VirtAddr) {
    assert!(matches!(hw_translate(va, Access::Write), HwTranslation::Mapped { .. }));
    let value = probe::read(va).expect("readable");
    // SAFETY: writes back the value it holds.
    unsafe { probe::write(va, value) }.expect("writable");
}

/// The linear map's alias of the frame that maps page `va`.
fn alias_of(va: VirtAddr) -> VirtAddr {
    match pgtable::lookup(va) {
        pgtable::Found { entry: Entry::Leaf { addr, .. }, va: base, .. } => {
            phys_to_virt(addr.add(va.offset_from(base)))
        }
        other => panic!("{va:?} is not mapped: {other:?}"),
    }
}

/// The linear-map ranges aliasing `pages` pages from `va`, adjacent
/// frames merged (what a change flushes beside the area).
fn alias_runs(va: VirtAddr, pages: u64) -> Vec<(VirtAddr, VirtAddr)> {
    let mut runs: Vec<(VirtAddr, VirtAddr)> = Vec::new();
    for i in 0..pages {
        let alias = alias_of(va.add(i * PAGE_SIZE));
        match runs.last_mut() {
            Some(last) if last.1 == alias => last.1 = alias.add(PAGE_SIZE),
            _ => runs.push((alias, alias.add(PAGE_SIZE))),
        }
    }
    runs
}

#[test_case]
fn set_memory_ro_makes_writes_fault_and_rw_undoes_it_in_one_section_and_one_flush() {
    let _b = use_backend(Backend::Batched);
    let n = 64;
    let va = vmalloc(n * PAGE_SIZE).unwrap();
    // With BBML2_NOABORT the linear map is blocks: the first change of
    // the frames' alias splits them (and they stay split, as in Linux);
    // what is measured below is the change alone.
    set_memory_ro(va, n).unwrap();
    set_memory_rw(va, n).unwrap();
    for i in 0..n {
        assert_writable(va.add(i * PAGE_SIZE)); // and cached in the TLB
        assert_writable(alias_of(va.add(i * PAGE_SIZE)));
    }
    let mut ranges = Vec::from([(va, va.add(n * PAGE_SIZE))]);
    ranges.extend(alias_runs(va, n));
    // The flush of the area and its alias, alone: what the change must add
    // to its section's pair.
    let flush = cost(|| mm::flush_tlb_kernel_ranges(&ranges));
    let c = cost(|| set_memory_ro(va, n).unwrap());
    let tlbi = match mm::flush_strategy(2 * n) {
        FlushStrategy::RangeTlbi => (0, flush.tlbi_range),
        FlushStrategy::PerPage => (2 * n, 0),
        FlushStrategy::All => (0, 0),
    };
    assert_eq!((c.tlbi_page, c.tlbi_range), tlbi);
    assert_eq!((c.tlbi_page, c.tlbi_range, c.tlbi_all), (flush.tlbi_page, flush.tlbi_range, flush.tlbi_all));
    assert_eq!((c.dsb_ishst, c.isb), (2, 2), "one pair for the section, one dsb ishst + isb in the flush");
    for i in 0..n {
        assert_read_only(va.add(i * PAGE_SIZE));
        assert_read_only(alias_of(va.add(i * PAGE_SIZE)));
    }
    set_memory_rw(va, n).unwrap();
    for i in 0..n {
        assert_writable(va.add(i * PAGE_SIZE));
        assert_writable(alias_of(va.add(i * PAGE_SIZE)));
    }
    vfree(va).unwrap();
}

#[test_case]
fn the_linear_alias_follows_ro_and_x_and_vfree_puts_it_back() {
    let _b = use_backend(Backend::Batched);
    let va = vmalloc(PAGE_SIZE).unwrap();
    let alias = alias_of(va);
    assert_writable(alias);
    // The first change splits the alias's block with BBML2_NOABORT (see
    // the test above); then one section and one flush of two pages.
    set_memory_ro(va, 1).unwrap();
    set_memory_rw(va, 1).unwrap();
    assert_eq!(pgtable::lookup(alias).level, Level::L3);
    let c = cost(|| set_memory_ro(va, 1).unwrap());
    assert_eq!((c.dsb_ishst, c.isb, c.tlbi(), c.tlbi_all), (2, 2, 2, 0), "the page and its alias: {c:?}");
    assert_read_only(va);
    assert_read_only(alias);
    // Executable: the alias stays read-only (Linux would leave it as it
    // is; here no executable page has a writable alias).
    let c = cost(|| set_memory_x(va, 1).unwrap());
    assert_eq!((c.dsb_ishst, c.isb, c.tlbi(), c.tlbi_all), (2, 2, 2, 0), "{c:?}");
    assert_read_only(alias);
    assert_eq!(audit::check_wx_aliases(), Ok(()));
    set_memory_nx(va, 1).unwrap();
    assert_read_only(alias);
    set_memory_rw(va, 1).unwrap();
    assert_writable(va);
    assert_writable(alias);
    // vfree of an area whose alias changed puts it back: the area cleared
    // and the alias made invalid (no pair: the flush's dsb ishst orders
    // them), one flush of both, the alias mapped read/write again (its
    // section's pair); at once, not at the purge.
    set_memory_ro(va, 1).unwrap();
    set_memory_x(va, 1).unwrap();
    let frames = frame_alloc::stats().used;
    let c = cost(|| vfree(va).unwrap());
    assert_eq!((c.dsb_ishst, c.dsb_ish, c.isb, c.tlbi(), c.tlbi_all), (2, 1, 2, 2, 0), "{c:?}");
    assert_eq!(frame_alloc::stats().used, frames - 1, "the frame went back with vfree, not at the purge");
    assert_eq!(pgtable::lookup(alias).level, Level::L3);
    // The frame's next owner can write it.
    assert_writable(alias);
}

#[test_case]
fn the_audit_finds_an_executable_page_with_a_writable_linear_alias() {
    let va = vmalloc(PAGE_SIZE).unwrap();
    let alias = alias_of(va);
    set_memory_ro(va, 1).unwrap();
    set_memory_x(va, 1).unwrap();
    assert_eq!(audit::check_wx_aliases(), Ok(()));
    // What set_memory_x used to leave: the alias writable beside it.
    // SAFETY: the area's frame; read-only again before the area is freed.
    unsafe { set_linear_map_rw(alias, 1) }.unwrap();
    let frame = lazymmu::mm::virt_to_phys(alias);
    assert_eq!(audit::check_wx_aliases(), Err(audit::WxAlias { frame, executable: va, writable: alias }));
    // SAFETY: as above.
    unsafe { set_linear_map_ro(alias, 1) }.unwrap();
    assert_eq!(audit::check_wx_aliases(), Ok(()));
    set_memory_nx(va, 1).unwrap();
    set_memory_rw(va, 1).unwrap();
    vfree(va).unwrap();
}

#[test_case]
fn safe_code_cannot_make_a_page_table_the_heap_or_a_task_control_block_read_only() {
    // What the kernel writes through the linear map at any moment: a page
    // table (the root), the heap (a Box), a spawned task's control block
    // (a boot task's is a static of the image). Each used to be accepted:
    // the page turned read-only, and the kernel's next write to it faulted.
    fn refused(what: &str, va: VirtAddr) {
        assert_eq!(set_memory_ro(va, 1), Err(MapError::NotVmallocArea(va)), "set_memory_ro of {what}");
        assert_eq!(set_memory_x(va, 1), Err(MapError::NotVmallocArea(va)), "set_memory_x of {what}");
        assert!(matches!(hw_translate(va, Access::Write), HwTranslation::Mapped { .. }), "{what} stays writable");
    }
    let linear = REGIONS.iter().position(|r| r.0 == "linear map").unwrap();
    let before = region_stats()[linear];
    refused("a page table", phys_to_virt(pgtable::kernel_root()));
    let boxed = alloc::boxed::Box::new(0u64);
    refused("the heap", VirtAddr::from_ptr(&*boxed as *const u64).align_down(PAGE_SIZE));
    sched::spawn("tcb", || {
        let tcb = VirtAddr::from_ptr(lazymmu::sched::current() as *const Task).align_down(PAGE_SIZE);
        refused("a task control block", tcb);
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(region_stats()[linear], before, "nothing split, nothing changed in the linear map");
    // A vmalloc area is what set_memory_* is for, and it still works.
    let va = vmalloc(2 * PAGE_SIZE).unwrap();
    set_memory_ro(va.add(PAGE_SIZE), 1).unwrap();
    assert_read_only(va.add(PAGE_SIZE));
    assert_writable(va);
    set_memory_rw(va.add(PAGE_SIZE), 1).unwrap();
    vfree(va).unwrap();
}

#[test_case]
fn w_xor_x_is_kept_and_x_really_executes() {
    let va = vmalloc(PAGE_SIZE).unwrap();
    // SAFETY: our own page, writable: a `ret` instruction at its start.
    unsafe { write_instructions(va, &[probe::RET_INSTRUCTION]) };
    // Written through the data side: cleaned to where instructions are
    // fetched from, and any stale instruction line dropped.
    flush_icache_range(va, va.add(4));
    // SAFETY: the page holds only a `ret`.
    let fault = unsafe { probe::exec(va) }.unwrap_err();
    assert_eq!(fault.class, ExceptionClass::InstructionAbortCurrentEl, "vmalloc memory is not executable");
    assert_eq!(set_memory_x(va, 1), Err(MapError::WritableAndExecutable(va)), "RW + X refused");
    set_memory_ro(va, 1).unwrap();
    set_memory_x(va, 1).unwrap();
    // SAFETY: the page holds only a `ret`.
    assert_eq!(unsafe { probe::exec(va) }, Ok(()), "read-only and executable: it runs");
    assert_eq!(set_memory_rw(va, 1), Err(MapError::WritableAndExecutable(va)), "RX + W refused");
    set_memory_nx(va, 1).unwrap();
    // SAFETY: the page holds only a `ret`.
    assert_eq!(unsafe { probe::exec(va) }.unwrap_err().class, ExceptionClass::InstructionAbortCurrentEl);
    set_memory_rw(va, 1).unwrap();
    assert_writable(va);
    vfree(va).unwrap();
}

/// The barriers, TLBIs and cache maintenance issued on `cpu` (its MPIDR
/// plus one; 0: nobody) while a test records them.
static RECORDING: AtomicU64 = AtomicU64::new(0);
static SEEN: spin::Mutex<Vec<&'static str>> = spin::Mutex::new(Vec::new());

fn record(name: &'static str) {
    if RECORDING.load(Relaxed) == lazymmu::cpu::mpidr() + 1 {
        SEEN.lock().push(name);
    }
}

/// What `f` issued on this CPU, in order, with interrupts masked.
fn issued_by(f: impl FnOnce()) -> Vec<&'static str> {
    SEEN.lock().clear();
    let daif = lazymmu::cpu::irq_save();
    RECORDING.store(lazymmu::cpu::mpidr() + 1, Relaxed);
    set_issue_hook(Some(record));
    f();
    set_issue_hook(None);
    RECORDING.store(0, Relaxed);
    lazymmu::cpu::irq_restore(daif);
    core::mem::take(&mut *SEEN.lock())
}

#[test_case]
fn flush_icache_range_issues_exactly_what_ctr_el0_asks_for() {
    // The CPU's own CTR_EL0, decoded here by hand (bits from the Arm ARM).
    let ctr = mm::cache_type().0;
    let (idc, dic) = ((ctr >> 28) & 1 == 1, (ctr >> 29) & 1 == 1);
    let (d_line, i_line) = (4u64 << ((ctr >> 16) & 0xf), 4u64 << (ctr & 0xf));
    // The A72 needs both steps, and QEMU's `max` (7.2) reports the same
    // CTR_EL0, 0x8444c004: IDC and DIC clear, 64-byte lines. What IDC and
    // DIC leave out is host-tested with made-up values.
    if matches!(qemu_param("cpu"), Some("cortex-a72" | "max")) {
        assert_eq!((idc, dic, d_line, i_line), (false, false, 64, 64), "CTR_EL0 {ctr:#x}");
    }
    let va = vmalloc(PAGE_SIZE).unwrap();
    // Linux's caches_clean_inval_pou: clean by data line then dsb ish,
    // unless IDC (then dsb ishst); invalidate by instruction line then
    // dsb ish, unless DIC; isb. A range that starts and ends inside a
    // line still covers every line of the page.
    let mut want = Vec::new();
    if idc {
        want.push("dsb ishst");
    } else {
        want.extend(core::iter::repeat_n("dc cvau", (PAGE_SIZE / d_line) as usize));
        want.push("dsb ish");
    }
    if !dic {
        want.extend(core::iter::repeat_n("ic ivau", (PAGE_SIZE / i_line) as usize));
        want.push("dsb ish");
    }
    want.push("isb");
    let before = mm::cache_counts();
    let seen = issued_by(|| flush_icache_range(va.add(8), va.add(PAGE_SIZE - 8)));
    let after = mm::cache_counts();
    assert_eq!(seen, want, "CTR_EL0 {ctr:#x}");
    assert_eq!(
        (after.dc_cvau - before.dc_cvau, after.ic_ivau - before.ic_ivau),
        (if idc { 0 } else { PAGE_SIZE / d_line }, if dic { 0 } else { PAGE_SIZE / i_line })
    );
    vfree(va).unwrap();
}

#[test_case]
fn a_page_inside_a_linear_map_block_splits_exactly_that_block() {
    // Only a CPU with BBML2_NOABORT has linear-map blocks (see the next test).
    if !lazymmu::cpu::features().bbml2_noabort {
        return;
    }
    let pa = frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap();
    let va = phys_to_virt(pa);
    let linear = REGIONS.iter().position(|r| r.0 == "linear map").unwrap();
    assert_eq!(pgtable::lookup(va).level, Level::L2, "a 2 MiB block maps it");
    let before = region_stats();
    let frames_before = frame_alloc::stats().used;
    let page = va.add(3 * PAGE_SIZE);

    // SAFETY: the test's own frames, writable again before they are freed.
    let c = cost(|| unsafe { set_linear_map_ro(page, 1) }.unwrap());
    let after = region_stats();
    assert_eq!(after[linear].tables[3], before[linear].tables[3] + 1, "one new level-3 table");
    assert_eq!(after[linear].blocks_2m, before[linear].blocks_2m - 1, "one block fewer");
    assert_eq!(after[linear].pages, before[linear].pages + 512, "512 pages instead");
    assert_eq!(after[linear].blocks_1g, before[linear].blocks_1g);
    for (i, (a, b)) in after.iter().zip(before.iter()).enumerate() {
        if i != linear {
            assert_eq!(a, b, "region {} untouched", REGIONS[i].0);
        }
    }
    assert_eq!(frame_alloc::stats().used, frames_before + 1, "the split took one table page");
    assert_read_only(page);
    assert_writable(va.add(2 * PAGE_SIZE));
    assert_writable(va.add(4 * PAGE_SIZE));
    assert_eq!(pgtable::lookup(va.add(BLOCK_2M)).level, Level::L2, "the next block stays a block");
    // Split in place and change in one section, one flush of the block.
    // The split's own dsb ishst orders the 512 new entries before the link
    // that replaces the live block (Linux's split_pmd): without it the
    // page-table rules checker reports link-order and this test fails.
    // (Both ends of the page fall in the block: two tables are taken for
    // the splits, each zeroed and ordered by its dmb; one goes back.)
    assert_eq!((c.dsb_ishst, c.dmb_ishst, c.isb, c.tlbi()), (3, 2, 2, 1), "{c:?}");

    // SAFETY: the test's own frames.
    unsafe { set_linear_map_rw(page, 1) }.unwrap();
    assert_writable(page);
    assert_eq!(pgtable::lookup(page).level, Level::L3, "a split stays split, as in Linux");
    frame_alloc::free_frames(pa, 512).unwrap();
}

#[test_case]
fn a_split_under_deferred_writes_finds_its_own_link_and_splits_once() {
    if !lazymmu::cpu::features().bbml2_noabort {
        return;
    }
    let _b = use_backend(Backend::DeferredWrites);
    let pa = lazymmu::linear_map_block();
    let va = phys_to_virt(pa);
    let linear = REGIONS.iter().position(|r| r.0 == "linear map").unwrap();
    let before = region_stats()[linear];
    // The split's link waited in the queue while the change walked on: it
    // found the block again, split it a second time and linked a second
    // table over the first (break-before-make, reported by the checker).
    // SAFETY: the test's own frames, writable again before they are freed.
    unsafe { set_linear_map_ro(va.add(3 * PAGE_SIZE), 1) }.unwrap();
    assert_eq!(region_stats()[linear].tables[3], before.tables[3] + 1, "one split, one new table");
    assert_read_only(va.add(3 * PAGE_SIZE));
    // SAFETY: the test's own frames.
    unsafe { set_linear_map_rw(va.add(3 * PAGE_SIZE), 1) }.unwrap();
    frame_alloc::free_frames(pa, 512).unwrap();
}

#[test_case]
fn without_bbml2_noabort_the_linear_map_is_pages_and_no_live_block_is_broken() {
    let linear = REGIONS.iter().position(|r| r.0 == "linear map").unwrap();
    let stats = region_stats()[linear];
    let pa = frame_alloc::alloc_frame().unwrap();
    let page = phys_to_virt(pa);
    if lazymmu::cpu::features().bbml2_noabort {
        assert!(
            stats.blocks_2m + stats.blocks_1g > 0,
            "BBML2_NOABORT: the linear map has blocks, split in place when needed"
        );
        frame_alloc::free_frame(pa).unwrap();
        return;
    }
    // Without BBML2_NOABORT, Linux never breaks a live kernel block: the
    // linear map is made of pages from boot, so a change of one page needs
    // no split at all (it used to break the 2 MiB block around it live).
    assert_eq!((stats.blocks_1g, stats.blocks_2m), (0, 0), "pages only: {stats:?}");
    let before = region_stats();
    // SAFETY: the test's own frame, writable again before it is freed.
    let c = cost(|| unsafe { set_linear_map_ro(page, 1) }.unwrap());
    assert_eq!(region_stats(), before, "no table added, no block broken");
    assert_eq!((c.dsb_ishst, c.isb, c.tlbi_page, c.tlbi_all), (2, 2, 1, 0), "one section, one page flushed: {c:?}");
    assert_read_only(page);
    // SAFETY: the test's own frame.
    unsafe { set_linear_map_rw(page, 1) }.unwrap();
    assert_writable(page);
    // A block elsewhere (a vmap_range of contiguous memory) that a change
    // would have to split is refused, and nothing changes.
    let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap();
    // SAFETY: the test's own frames, in an area of its own.
    let va = unsafe { mm::vmap_contiguous(run, BLOCK_2M, lazymmu::mm::Attributes::KERNEL_RW) }.unwrap();
    assert_eq!(pgtable::lookup(va).level, Level::L2);
    let state = (frame_alloc::stats().used, region_stats());
    assert_eq!(set_memory_ro(va.add(PAGE_SIZE), 1), Err(MapError::BreakBeforeMakeUnsafe(va)));
    assert_eq!((frame_alloc::stats().used, region_stats()), state, "nothing changed");
    mm::vunmap(va).unwrap();
    // Its flush is the purge's: no TLB may still map the frames when they go.
    mm::vm_unmap_aliases();
    frame_alloc::free_frames(run, 512).unwrap();
    frame_alloc::free_frame(pa).unwrap();
}

#[test_case]
fn set_memory_errors_are_typed_and_change_nothing() {
    let va = vmalloc(2 * PAGE_SIZE).unwrap();
    let before = (frame_alloc::stats().used, mm::area_count(), region_stats());
    assert_eq!(set_memory_ro(va, 0), Err(MapError::BadRange { start: va, size: 0 }));
    assert_eq!(set_memory_ro(va, 3), Err(MapError::NotMapped(va)), "runs past the area into its guard page");
    assert_eq!(
        set_memory_ro(va.add(8), 1),
        Err(MapError::Misaligned { what: Operand::VirtualAddress, value: va.as_u64() + 8 })
    );
    assert_eq!(set_memory_ro(va, u64::MAX), Err(MapError::BadRange { start: va, size: u64::MAX }));
    assert_eq!(set_memory_ro(KIMAGE_VADDR, 1), Err(MapError::NotVmallocArea(KIMAGE_VADDR)), "not the image");
    let low = VirtAddr::new(0x4000_0000);
    assert_eq!(set_memory_ro(low, 1), Err(MapError::NotKernelAddress(low)));
    assert_eq!((frame_alloc::stats().used, mm::area_count(), region_stats()), before);
    assert_writable(va);
    vfree(va).unwrap();
}
