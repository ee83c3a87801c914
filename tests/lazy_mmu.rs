//! Lazy MMU mode: the generic layer's state machine and what each backend
//! emits, counted exactly; interrupts and context switches in the middle of
//! a section; the read hazard of `deferred-writes`.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};

use lazymmu::barrier::{self, BarrierCounts, cost};
use lazymmu::cpu::wait_until;
use lazymmu::exception::{ExceptionClass, FaultStatus};
use lazymmu::mm::{
    self, Access, Attributes, Descriptor, HwTranslation, Level, PAGE_SIZE, PhysAddr, VirtAddr, frame_alloc,
    hw_translate,
    lazy_mmu::{self, Backend, DEFERRED_QUEUE_LEN, LazyMmuStats, LazySnapshot, *},
    pgtable::{self, EntryRef, Walking},
    probe,
};
use lazymmu::{Scratch, cpu, sched, timer};
use spin::Mutex;

lazymmu::test_image!();

fn page(pa: PhysAddr) -> Descriptor {
    Descriptor::leaf(Level::L3, pa, Attributes::KERNEL_RW)
}

/// Writes an entry of the test's own [`Scratch`] area (reserved: nothing
/// else maps there; the frames are the test's own).
fn write(entry: &EntryRef<'_>, desc: Descriptor) {
    // SAFETY: a page of the test's Scratch area, which it reserved; what it
    // maps is a frame the test allocated.
    unsafe { pgtable::write_entry(entry, desc) };
}

/// The level-3 entry for `va`, whose tables exist (a [`Scratch`] made them).
fn slot(walk: &Walking, va: VirtAddr) -> EntryRef<'_> {
    let entry = walk.walk(va);
    assert_eq!(entry.level, Level::L3, "tables for {va} exist");
    entry
}

fn mapped(pa: PhysAddr) -> HwTranslation {
    HwTranslation::Mapped { pa, mair_attr: 0xff }
}

const UNMAPPED: HwTranslation = HwTranslation::Fault(FaultStatus::Translation { level: 3 });

/// What the current task's lazy state is: (enable_count, pause_count,
/// pending, queued stores).
fn lazy_state() -> LazySnapshot {
    lazymmu::sched::current().lazy_state()
}

fn pairs(c: BarrierCounts) -> (u64, u64) {
    (c.dsb_ishst, c.isb)
}

fn depth() -> (u8, u8) {
    let LazySnapshot { enable_count, pause_count, .. } = sched::current().lazy_state();
    (enable_count, pause_count)
}

#[test_case]
fn kunit_sequence_active_nested_paused_resumed() {
    assert!(!is_lazy_mmu_mode_active());
    lazy_mmu_mode_enable().unwrap();
    assert!(is_lazy_mmu_mode_active(), "active after enable");
    lazy_mmu_mode_enable().unwrap();
    lazy_mmu_mode_disable().unwrap();
    assert!(is_lazy_mmu_mode_active(), "still active after a nested enable/disable");
    lazy_mmu_mode_pause().unwrap();
    assert!(!is_lazy_mmu_mode_active(), "inactive after pause");
    lazy_mmu_mode_enable().unwrap();
    lazy_mmu_mode_disable().unwrap();
    lazy_mmu_mode_pause().unwrap();
    lazy_mmu_mode_resume().unwrap();
    assert!(!is_lazy_mmu_mode_active(), "calls while paused leave it inactive");
    assert_eq!(depth(), (1, 1));
    lazy_mmu_mode_resume().unwrap();
    assert!(is_lazy_mmu_mode_active(), "active after resume");
    lazy_mmu_mode_disable().unwrap();
    assert!(!is_lazy_mmu_mode_active(), "inactive after the last disable");
    assert_eq!(depth(), (0, 0));
}

#[test_case]
fn batched_n_writes_in_one_section_cost_one_pair() {
    let _b = use_backend(Backend::Batched);
    for n in [1, 512, 4096] {
        let scratch = Scratch::new(n);
        let mut inside = BarrierCounts::default();
        let total = cost(|| {
            let _section = enable();
            inside = scratch.map_all();
        });
        assert_eq!(pairs(inside), (0, 0), "N = {n}: nothing emitted inside the section");
        assert_eq!(pairs(total), (1, 1), "N = {n}: one dsb ishst + one isb at leave");
        // The entries really are in memory, as the hardware walk shows.
        let last = scratch.va(n - 1);
        assert_eq!(hw_translate(last, Access::Read), HwTranslation::Mapped { pa: scratch.frame(), mair_attr: 0xff });
    }
}

#[test_case]
fn a_section_without_writes_costs_nothing() {
    let _b = use_backend(Backend::Batched);
    let c = cost(|| {
        let _outer = enable();
        let _inner = enable();
    });
    assert_eq!(pairs(c), (0, 0));
}

#[test_case]
fn a_nested_exit_with_pending_writes_flushes_and_stays_active() {
    let _b = use_backend(Backend::Batched);
    let scratch = Scratch::new(8);
    let _outer = enable();
    let inner = enable();
    assert_eq!(inner.kind(), SectionKind::Nested);
    scratch.map_all();
    assert!(lazy_state().pending, "pending");
    let c = cost(|| drop(inner));
    assert_eq!(pairs(c), (1, 1), "nested exit flushes");
    assert!(is_lazy_mmu_mode_active(), "and the mode stays on");
    assert!(!lazy_state().pending, "nothing pending");
    let nothing = cost(|| drop(enable()));
    assert_eq!(pairs(nothing), (0, 0), "a nested exit with nothing pending emits nothing");
}

#[test_case]
fn pause_flushes_pending_writes_and_writes_while_paused_are_eager() {
    let _b = use_backend(Backend::Batched);
    let scratch = Scratch::new(4);
    let _section = enable();
    scratch.map_all();
    let paused_cost = cost(|| {
        let _paused = pause();
        assert!(!is_lazy_mmu_mode_active());
        let eager = scratch.map_all();
        assert_eq!(pairs(eager), (4, 4), "while paused every write pays its pair");
    });
    // The pause flushed the 4 earlier writes (1 pair) + 4 eager pairs; resume emits nothing.
    assert_eq!(pairs(paused_cost), (5, 5));
}

#[test_case]
fn eager_costs_two_barriers_per_write_in_every_case() {
    let _b = use_backend(Backend::Eager);
    let scratch = Scratch::new(16);
    assert_eq!(pairs(scratch.map_all()), (16, 16), "outside a section");
    let total = cost(|| {
        let _outer = enable();
        assert_eq!(pairs(scratch.map_all()), (16, 16), "inside a section");
        let _inner = enable();
        assert_eq!(pairs(scratch.map_all()), (16, 16), "nested");
        let _paused = pause();
        assert_eq!(pairs(scratch.map_all()), (16, 16), "paused");
    });
    assert_eq!(pairs(total), (48, 48), "and nothing extra at the section ends");
}

#[test_case]
fn guards_record_outermost_nested_and_paused_sections() {
    let outer = enable();
    let inner = enable();
    let paused = pause();
    let while_paused = enable();
    assert_eq!(
        (outer.kind(), inner.kind(), while_paused.kind()),
        (SectionKind::Outermost, SectionKind::Nested, SectionKind::WhilePaused)
    );
    assert_eq!(depth(), (2, 1));
    drop(while_paused);
    drop(paused);
    drop(inner);
    assert_eq!(depth(), (1, 0));
    drop(outer);
    assert_eq!(depth(), (0, 0));
}

#[test_case]
fn misuse_is_refused_and_leaves_the_state_usable() {
    let before = misuse_count();
    assert_eq!(lazy_mmu_mode_disable(), Err(LazyMmuMisuse::DisableWithoutEnable));
    assert_eq!(lazy_mmu_mode_resume(), Err(LazyMmuMisuse::ResumeWithoutPause));
    assert_eq!(depth(), (0, 0));

    for _ in 0..255 {
        lazy_mmu_mode_enable().unwrap();
    }
    assert_eq!(lazy_mmu_mode_enable(), Err(LazyMmuMisuse::EnableOverflow));
    assert_eq!(enable().kind(), SectionKind::Refused);
    assert_eq!(depth(), (255, 0));
    for _ in 0..255 {
        lazy_mmu_mode_pause().unwrap();
    }
    assert_eq!(lazy_mmu_mode_pause(), Err(LazyMmuMisuse::PauseOverflow));
    assert_eq!(depth(), (255, 255));
    for _ in 0..255 {
        lazy_mmu_mode_resume().unwrap();
    }
    for _ in 0..255 {
        lazy_mmu_mode_disable().unwrap();
    }
    assert_eq!(depth(), (0, 0));
    assert!(!is_lazy_mmu_mode_active());
    assert_eq!(misuse_count() - before, 5);
    // Still works normally.
    let section = enable();
    assert_eq!(section.kind(), SectionKind::Outermost);
    assert!(is_lazy_mmu_mode_active());
}

// ---- interrupt context ------------------------------------------------------

/// What the timer handler saw and did, for the task to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct InHandler {
    in_interrupt: bool,
    active: bool,
    kind: SectionKind,
    calls: [Result<(), LazyMmuMisuse>; 5],
    state_before: LazySnapshot,
    state_after: LazySnapshot,
    write_cost: (u64, u64),
    misuses: u64,
}

static IN_HANDLER: Mutex<Option<InHandler>> = Mutex::new(None);
static HANDLER_VA: Mutex<VirtAddr> = Mutex::new(VirtAddr::new(0));
static HANDLER_FRAME: Mutex<PhysAddr> = Mutex::new(PhysAddr::new(0));

/// Runs in interrupt context, on top of a task that is inside a section.
fn timer_handler_writes_an_entry() {
    let state_before = lazy_state();
    let misuses = misuse_count();
    let calls = [
        lazy_mmu_mode_enable(),
        lazy_mmu_mode_pause(),
        lazy_mmu_mode_resume(),
        lazy_mmu_mode_disable(),
        // With nothing to undo: a misuse in a task, nothing at all here.
        lazy_mmu_mode_disable(),
    ];
    let kind = enable().kind();
    let active = is_lazy_mmu_mode_active();
    let walk = pgtable::walking();
    let entry = slot(&walk, *HANDLER_VA.lock());
    let frame = *HANDLER_FRAME.lock();
    let c = cost(|| write(&entry, page(frame)));
    *IN_HANDLER.lock() = Some(InHandler {
        in_interrupt: cpu::in_interrupt(),
        active,
        kind,
        calls,
        state_before,
        state_after: lazy_state(),
        write_cost: pairs(c),
        misuses: misuse_count() - misuses,
    });
}

fn interrupt_inside_a_section(backend: Backend) {
    let _b = use_backend(backend);
    let scratch = Scratch::new(5);
    *HANDLER_VA.lock() = scratch.va(3);
    *HANDLER_FRAME.lock() = scratch.frame();
    *IN_HANDLER.lock() = None;

    let section = enable();
    for i in 0..3 {
        scratch.map(i);
    }
    let before = lazy_state();
    assert!(before.pending, "{backend}: three writes are pending");
    let interrupts = cpu::interrupt_count();
    timer::call_after(timer::ticks_from_us(200), timer_handler_writes_an_entry);
    wait_until(|| IN_HANDLER.lock().is_some());
    let seen = IN_HANDLER.lock().expect("the handler ran");
    assert!(cpu::interrupt_count() > interrupts);
    assert!(seen.in_interrupt && !seen.active, "{backend}: lazy mode does not exist in the handler: {seen:?}");
    assert_eq!(seen.kind, SectionKind::InInterrupt);
    assert_eq!(seen.calls, [Ok(()); 5], "{backend}: every lazy_mmu call is a no-op in the handler");
    assert_eq!(seen.misuses, 0, "{backend}: and none of them counts as misuse");
    assert_eq!(seen.write_cost, (1, 1), "{backend}: the handler's write pays its own dsb ishst + isb at once");
    assert_eq!(seen.state_before, before, "{backend}: the handler saw the task's state");
    assert_eq!(seen.state_after, before, "{backend}: and left it untouched");
    assert_eq!(lazy_state(), before, "{backend}: the task's depth, pending flag and queue are as they were");
    assert_eq!(
        hw_translate(scratch.va(3), Access::Read),
        mapped(scratch.frame()),
        "the handler's store is in memory now"
    );
    // Back in the task, its stores are deferred again: the interrupt's
    // return gave it back its store mode.
    let next = cost(|| scratch.map(4));
    assert_eq!(pairs(next), (0, 0), "{backend}: the task's store after the interrupt is deferred, as before it");

    let leave = cost(|| drop(section));
    assert_eq!(pairs(leave), (1, 1), "{backend}: the task's own leave still pays its deferred pair");
    for i in 0..5 {
        assert_eq!(hw_translate(scratch.va(i), Access::Read), mapped(scratch.frame()));
    }
}

#[test_case]
fn batched_interrupt_writes_pay_at_once_and_leave_the_task_alone() {
    interrupt_inside_a_section(Backend::Batched);
}

#[test_case]
fn deferred_writes_interrupt_stores_directly_and_leaves_the_queue_alone() {
    interrupt_inside_a_section(Backend::DeferredWrites);
}

// ---- context switches -------------------------------------------------------

/// What the task that ran while another was preempted mid-section saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bystander {
    active: bool,
    state: LazySnapshot,
    /// `dsb ish` issued between the preempted task's last write and now.
    dsb_ish_since: u64,
    /// Context switches in that time: one, unless a busy host let the
    /// timer switch tasks again before the bystander looked.
    switches_since: u64,
    /// What the walker finds at the preempted task's first slot.
    sees: HwTranslation,
}

/// What the preempted task found when it ran again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Preempted {
    state_before: LazySnapshot,
    state_after: LazySnapshot,
    leave_cost: (u64, u64),
    switches: u64,
}

static BYSTANDER_RAN: AtomicBool = AtomicBool::new(false);
/// The barrier counts and switch count when the writer finished writing.
static MARK: Mutex<Option<(BarrierCounts, u64)>> = Mutex::new(None);
static BYSTANDER: Mutex<Option<Bystander>> = Mutex::new(None);
static PREEMPTED: Mutex<Option<Preempted>> = Mutex::new(None);

/// The barrier counts and the switch count at one instant: with IRQs
/// masked, so that no preemption falls between the two reads (a switch in
/// between would count its `dsb ish` in one and not the other).
fn barriers_and_switches() -> (BarrierCounts, u64) {
    let daif = lazymmu::cpu::irq_save();
    let now = (barrier::counts(), sched::switch_count());
    lazymmu::cpu::irq_restore(daif);
    now
}

fn preempted_in_a_section(backend: Backend, yield_explicitly: bool) {
    let _b = use_backend(backend);
    let scratch = Scratch::new(8);
    let (first, frame) = (scratch.va(0), scratch.frame());
    BYSTANDER_RAN.store(false, SeqCst);
    *BYSTANDER.lock() = None;
    *PREEMPTED.lock() = None;
    *MARK.lock() = None;

    let writer = sched::spawn("writer", move || {
        let walk = pgtable::walking();
        let section = enable();
        for i in 0..8 {
            write(&slot(&walk, first.add(i * PAGE_SIZE)), page(frame));
        }
        let state_before = lazy_state();
        let switches = sched::switch_count();
        *MARK.lock() = Some(barriers_and_switches());
        if yield_explicitly {
            sched::yield_now();
        }
        // Never yields otherwise: only the timer can let the bystander in.
        while !BYSTANDER_RAN.load(SeqCst) {
            core::hint::spin_loop();
        }
        let state_after = lazy_state();
        let leave_cost = pairs(cost(|| drop(section)));
        *PREEMPTED.lock() =
            Some(Preempted { state_before, state_after, leave_cost, switches: sched::switch_count() - switches });
    })
    .unwrap();
    let bystander = sched::spawn("bystander", move || {
        // A slow host can end the writer's slice before it has written.
        let mark = loop {
            if let Some(mark) = *MARK.lock() {
                break mark;
            }
            sched::yield_now();
        };
        let (barriers, switches) = barriers_and_switches();
        *BYSTANDER.lock() = Some(Bystander {
            active: is_lazy_mmu_mode_active(),
            state: lazy_state(),
            dsb_ish_since: barriers.dsb_ish - mark.0.dsb_ish,
            switches_since: switches - mark.1,
            sees: hw_translate(first, Access::Read),
        });
        BYSTANDER_RAN.store(true, SeqCst);
    })
    .unwrap();
    writer.join().unwrap();
    bystander.join().unwrap();

    let b = BYSTANDER.lock().expect("the bystander ran");
    let p = PREEMPTED.lock().expect("the writer finished");
    assert!(!b.active && b.state == LazySnapshot::default(), "{backend}: the other task is not in lazy mode: {b:?}");
    assert!(b.switches_since >= 1, "{backend}: the bystander ran after the writer's last write: {b:?}");
    assert_eq!(
        b.dsb_ish_since, b.switches_since,
        "{backend}: each switch since the writer's last write issued one dsb ish, and nothing else did"
    );
    let queued = if backend == Backend::DeferredWrites { 8 } else { 0 };
    assert_eq!(p.state_before, LazySnapshot { enable_count: 1, pause_count: 0, pending: true, queued });
    assert_eq!(p.state_after, p.state_before, "{backend}: depth, pending flag and queue came back with the task");
    assert!(p.switches >= 2, "{backend}: the writer was switched out and back in ({} switches)", p.switches);
    assert_eq!(p.leave_cost, (1, 1), "{backend}: its own leave emits the deferred pair");
    let expected_view = if backend == Backend::DeferredWrites { UNMAPPED } else { mapped(frame) };
    assert_eq!(b.sees, expected_view, "{backend}: what the bystander's walk found at the writer's entry");
    assert_eq!(hw_translate(first, Access::Read), mapped(frame));
}

#[test_case]
fn batched_task_preempted_mid_section_keeps_its_state_and_pays_at_leave() {
    preempted_in_a_section(Backend::Batched, false);
}

#[test_case]
fn deferred_writes_task_preempted_mid_section_keeps_its_queue() {
    preempted_in_a_section(Backend::DeferredWrites, false);
}

#[test_case]
fn batched_task_that_yields_mid_section_keeps_its_state() {
    preempted_in_a_section(Backend::Batched, true);
}

// ---- deferred-writes: the read hazard ---------------------------------------

#[test_case]
fn deferred_writes_a_read_in_the_section_sees_the_old_entry() {
    let _b = use_backend(Backend::DeferredWrites);
    let scratch = Scratch::new(1);
    let entry = &scratch.entry(0);
    let section = enable();
    let inside = cost(|| write(entry, page(scratch.frame())));
    assert_eq!(pairs(inside), (0, 0));
    assert_eq!(entry.read(), Descriptor::INVALID, "memory still holds the old entry");
    assert_eq!(hw_translate(scratch.va(0), Access::Read), UNMAPPED, "and so does the walker");
    assert_eq!(pairs(cost(|| drop(section))), (1, 1));
    assert_eq!(entry.read(), page(scratch.frame()));
    assert_eq!(hw_translate(scratch.va(0), Access::Read), mapped(scratch.frame()));
}

#[test_case]
fn deferred_writes_pause_makes_the_queued_entry_readable() {
    let _b = use_backend(Backend::DeferredWrites);
    let scratch = Scratch::new(1);
    let entry = &scratch.entry(0);
    let _section = enable();
    write(entry, page(scratch.frame()));
    let paused = pause();
    assert_eq!(entry.read(), page(scratch.frame()), "pause applied the queue");
    assert_eq!(hw_translate(scratch.va(0), Access::Read), mapped(scratch.frame()));
    assert_eq!(lazy_state(), LazySnapshot { enable_count: 1, pause_count: 1, pending: false, queued: 0 });
    drop(paused);
    assert!(is_lazy_mmu_mode_active());
}

#[test_case]
fn deferred_writes_are_applied_in_order_at_leave() {
    let _b = use_backend(Backend::DeferredWrites);
    let scratch = Scratch::new(3);
    let other = frame_alloc::alloc_frame().unwrap();
    let e: Vec<EntryRef<'_>> = (0..3).map(|i| scratch.entry(i)).collect();
    let section = enable();
    // Two writes to slot 0: the second takes write permission away (a
    // valid-to-valid change of another frame would break break-before-make).
    let read_only = Descriptor::leaf(Level::L3, scratch.frame(), Attributes::KERNEL_RO);
    let inside = cost(|| {
        write(&e[0], page(scratch.frame()));
        write(&e[1], page(other));
        write(&e[0], read_only);
        write(&e[2], page(other));
        write(&e[1], Descriptor::INVALID);
    });
    assert_eq!(pairs(inside), (0, 0));
    assert_eq!(lazy_state(), LazySnapshot { enable_count: 1, pause_count: 0, pending: true, queued: 5 });
    for i in 0..3 {
        assert_eq!(hw_translate(scratch.va(i), Access::Read), UNMAPPED, "nothing stored yet");
    }
    assert_eq!(pairs(cost(|| drop(section))), (1, 1));
    assert_eq!(hw_translate(scratch.va(0), Access::Read), mapped(scratch.frame()));
    assert_eq!(
        hw_translate(scratch.va(0), Access::Write),
        HwTranslation::Fault(FaultStatus::Permission { level: 3 }),
        "the later write to slot 0 won"
    );
    assert_eq!(hw_translate(scratch.va(1), Access::Read), UNMAPPED, "slot 1 was mapped, then cleared");
    assert_eq!(hw_translate(scratch.va(2), Access::Read), mapped(other));
    // Unmapped (and flushed) before it goes back: nothing may map a free frame.
    scratch.clear(2);
    mm::flush_tlb_kernel_range(scratch.va(0), scratch.va(3));
    frame_alloc::free_frame(other).unwrap();
}

#[test_case]
fn deferred_writes_a_full_queue_is_applied_early() {
    let _b = use_backend(Backend::DeferredWrites);
    for n in [DEFERRED_QUEUE_LEN as u64, DEFERRED_QUEUE_LEN as u64 + 1, 4096] {
        let scratch = Scratch::new(n);
        let total = cost(|| {
            let _section = enable();
            scratch.map_all();
        });
        let batches = n.div_ceil(DEFERRED_QUEUE_LEN as u64);
        assert_eq!(pairs(total), (batches, batches), "N = {n}: one pair per queue-full of stores");
        assert_eq!(hw_translate(scratch.va(n - 1), Access::Read), mapped(scratch.frame()));
    }
}

#[test_case]
fn deferred_writes_tlb_maintenance_in_a_section_applies_the_queue_first() {
    let _b = use_backend(Backend::DeferredWrites);
    let scratch = Scratch::new(1);
    let va = scratch.va(0);
    scratch.map(0);
    assert!(probe::read(va).is_ok(), "mapped, and now in the TLB");
    let _section = enable();
    scratch.clear(0);
    assert_eq!(lazy_state().queued, 1, "the clear is queued");
    mm::flush_tlb_kernel_range(va, va.add(PAGE_SIZE));
    assert_eq!(lazy_state().queued, 0, "the flush made the queued store first");
    let fault = probe::read(va).unwrap_err();
    assert_eq!(fault.class, ExceptionClass::DataAbortCurrentEl);
    assert_eq!(fault.status, Some(FaultStatus::Translation { level: 3 }));
}

// ---- accounting ---------------------------------------------------------------

#[test_case]
fn accounting_counts_writes_sections_flushes_and_nesting_per_backend() {
    let _b = use_backend(Backend::Batched);
    let scratch = Scratch::new(5);
    lazy_mmu::reset_stats();
    {
        let _outer = enable();
        let inner = enable();
        let innermost = enable();
        scratch.map_all();
        drop(innermost); // flushes the 5 pending writes: 1 pair
        drop(inner); // nothing pending: a flush that emits nothing
        drop(pause()); // nothing pending either
    }
    scratch.clear(0);
    let s = lazy_mmu::stats(Backend::Batched);
    let expected = LazyMmuStats {
        entry_writes: 6,
        lazy_writes: 5,
        sections: 1,
        flushes: 2,
        pauses: 1,
        max_nesting: 3,
        barriers: BarrierCounts { dsb_ishst: 1, isb: 1, ..BarrierCounts::ZERO },
    };
    assert_eq!(s, expected);
    assert_eq!(lazy_mmu::stats(Backend::Eager), LazyMmuStats::default(), "nothing ran under eager");

    // The same work under eager lands in eager's column.
    drop(_b);
    let _e = use_backend(Backend::Eager);
    scratch.map_all();
    let e = lazy_mmu::stats(Backend::Eager);
    assert_eq!((e.entry_writes, e.lazy_writes, e.barriers.dsb_ishst, e.barriers.isb), (5, 0, 5, 5));
    assert_eq!(lazy_mmu::stats(Backend::Batched), expected, "batched's column did not move");
}

#[test_case]
fn a_backend_is_named_by_its_name_alone() {
    for backend in Backend::ALL {
        assert_eq!(Backend::from_name(backend.name()), Some(backend));
    }
    assert_eq!(Backend::from_name("no-such-backend"), None);
    assert_eq!(Backend::from_name("Batched"), None, "names are exact");
}

#[test_case]
fn deferred_writes_a_walk_makes_its_stores_before_it_lets_the_tables_go() {
    use lazymmu::mm::BLOCK_2M;
    use lazymmu::mm::pgtable::LeafSizes;
    use lazymmu::mm::{free_vm_area, get_vm_area, vunmap_range};
    let _b = use_backend(Backend::DeferredWrites);
    let root = pgtable::kernel_root();
    // A fresh 2 MiB: map_range links a new level-3 table for the page.
    let va = get_vm_area(BLOCK_2M, BLOCK_2M).unwrap();
    let frame = frame_alloc::alloc_frame().unwrap();
    static GO: AtomicBool = AtomicBool::new(false);
    GO.store(false, SeqCst);
    let preemption = sched::set_preemption(false);
    // Another task takes empty tables away, as any CPU may at any time.
    let reclaimer = sched::spawn("reclaimer", move || {
        while !GO.load(SeqCst) {
            sched::yield_now();
        }
        // SAFETY: the kernel's own root; the range is the test's scratch in the vmalloc region.
        unsafe { pgtable::free_empty_tables(root, va, BLOCK_2M) };
    })
    .unwrap();
    let after_map = {
        let _section = enable();
        // SAFETY: the test's own frame, in its own area.
        unsafe { pgtable::map_range(root, va, frame, PAGE_SIZE, Attributes::KERNEL_RW, LeafSizes::PagesOnly) }.unwrap();
        let after_map = lazy_state();
        GO.store(true, SeqCst);
        reclaimer.join().unwrap();
        after_map
    };
    sched::set_preemption(preemption);
    // The walk's stores were made before its guard went (they used to wait
    // in the queue, the new table looked empty, was freed, and the leave
    // stored into a freed page).
    assert_eq!(after_map, LazySnapshot { enable_count: 1, pause_count: 0, pending: true, queued: 0 });
    assert_eq!(hw_translate(va, Access::Read), mapped(frame), "the table was not taken away under the mapping");
    vunmap_range(va, va.add(PAGE_SIZE)).unwrap();
    free_vm_area(va).unwrap();
    frame_alloc::free_frame(frame).unwrap();
}
