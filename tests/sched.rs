//! Tasks and the scheduler: own stacks with guard pages, cooperative and
//! preemptive switches, failures that end only their task, and stacks that
//! are given back.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use lazymmu::cpu;
use lazymmu::exception::{Caught, ExceptionClass, FaultStatus};
use lazymmu::mm::{
    KSTACK_SLOTS, VirtAddr, frame_alloc,
    lazy_mmu::{Backend, LazySnapshot, enable, is_lazy_mmu_mode_active},
    probe,
};
use lazymmu::sched;
use spin::Mutex;

lazymmu::test_image!();

#[test_case]
fn a_spawned_task_runs_on_its_own_stack_above_a_guard_page() {
    /// What the task saw: a local's address, its stack's bottom and top,
    /// a read of its guard page, and its name.
    type Seen = (VirtAddr, VirtAddr, VirtAddr, Result<u64, FaultStatus>, &'static str);
    static SEEN: Mutex<Option<Seen>> = Mutex::new(None);
    let handle = sched::spawn("stacky", || {
        let local = 0u64;
        let me = sched::current();
        let stack = me.stack().expect("a spawned task has its own stack");
        let guard = stack.guard_page();
        let probe = probe::read(guard).map_err(|s| s.status.expect("an abort"));
        *SEEN.lock() = Some((VirtAddr::from_ptr(&local), stack.bottom(), stack.top(), probe, me.name));
    })
    .unwrap();
    handle.join().unwrap();
    let (local, bottom, top, guard, name) = SEEN.lock().expect("the task ran");
    assert_eq!(name, "stacky");
    assert!(bottom <= local && local < top, "a local at {local} lies in the task's stack {bottom}..{top}");
    assert_eq!(guard, Err(FaultStatus::Translation { level: 3 }), "the page below the stack is not mapped");
}

#[test_case]
fn yield_alternates_between_ready_tasks() {
    static LOG: Mutex<Vec<(char, u32)>> = Mutex::new(Vec::new());
    LOG.lock().clear();
    let worker = |name: char| {
        move || {
            for i in 0..3 {
                LOG.lock().push((name, i));
                sched::yield_now();
            }
        }
    };
    // Only the yields switch: a time slice ending on a loaded host (even
    // between the two spawns, while b's stack is mapped) would change the
    // order.
    let preemption = sched::set_preemption(false);
    let a = sched::spawn("a", worker('a')).unwrap();
    let b = sched::spawn("b", worker('b')).unwrap();
    a.join().unwrap();
    b.join().unwrap();
    sched::set_preemption(preemption);
    let log = LOG.lock().clone();
    assert_eq!(log, [('a', 0), ('b', 0), ('a', 1), ('b', 1), ('a', 2), ('b', 2)]);
}

#[test_case]
fn a_task_that_never_yields_is_preempted_by_the_timer() {
    static STOP: AtomicBool = AtomicBool::new(false);
    static SPINS: AtomicU64 = AtomicU64::new(0);
    STOP.store(false, SeqCst);
    let (interrupts, switches) = (cpu::interrupt_count(), sched::switch_count());
    let spinner = sched::spawn("spinner", || {
        while !STOP.load(SeqCst) {
            SPINS.fetch_add(1, SeqCst);
        }
    })
    .unwrap();
    // The spinner gets the CPU here and only a timer interrupt takes it back.
    sched::yield_now();
    let (spins, interrupts_now) = (SPINS.load(SeqCst), cpu::interrupt_count());
    // Stopped before anything is asserted: a spinner left behind would
    // take the CPU from the next tests.
    STOP.store(true, SeqCst);
    spinner.join().unwrap();
    assert!(spins > 0, "the spinner ran");
    assert!(interrupts_now > interrupts, "a timer interrupt ended its slice");
    assert!(sched::switch_count() - switches >= 3, "main -> spinner -> main -> spinner -> main");
}

#[test_case]
fn a_panic_or_fault_ends_only_its_own_task() {
    let panicker = sched::spawn("panicker", || panic!("boom from a task")).unwrap();
    match panicker.join() {
        Err(Caught::Panic(message)) => assert!(message.as_str().contains("boom from a task"), "{message:?}"),
        other => panic!("expected the task's panic, got {other:?}"),
    }
    let faulter = sched::spawn("faulter", || {
        let guard = sched::current().stack().unwrap().guard_page();
        // SAFETY: the guard page is never mapped: this read faults.
        unsafe { core::ptr::read_volatile(guard.as_ptr::<u64>()) };
    })
    .unwrap();
    match faulter.join() {
        Err(Caught::Fault(s)) => {
            assert_eq!(s.class, ExceptionClass::DataAbortCurrentEl);
            assert_eq!(s.status, Some(FaultStatus::Translation { level: 3 }));
        }
        other => panic!("expected the task's fault, got {other:?}"),
    }
}

#[test_case]
fn a_task_that_exits_inside_a_lazy_section_fails_and_its_section_is_closed() {
    let leaky = sched::spawn("leaky", || core::mem::forget(enable())).unwrap();
    match leaky.join() {
        Err(Caught::Panic(message)) => {
            assert!(message.as_str().contains("exited with lazy MMU mode open (enable count 1"), "{message:?}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(!is_lazy_mmu_mode_active(), "the joiner is not affected");
}

#[test_case]
fn joined_tasks_give_back_their_stacks_and_frames() {
    let before = frame_alloc::stats().used;
    // More tasks than there are stack slots, one after another.
    for _ in 0..KSTACK_SLOTS + 8 {
        sched::spawn("short", || {}).unwrap().join().unwrap();
    }
    assert_eq!(frame_alloc::stats().used, before, "every stack frame (and page-table page) came back");
}

#[test_case]
fn yield_with_nothing_else_ready_returns_with_interrupts_unmasked() {
    const IRQ_MASKED: u64 = 1 << 7;
    assert_eq!(cpu::irq_state() & IRQ_MASKED, 0, "IRQs are on in task context");
    sched::yield_now();
    assert_eq!(cpu::irq_state() & IRQ_MASKED, 0, "and still on after a yield that had nowhere to go");
    sched::spawn("quick", || {}).unwrap().join().unwrap();
    assert_eq!(cpu::irq_state() & IRQ_MASKED, 0, "and after switching away and back");
}

#[test_case]
fn a_task_spawned_inside_a_deferred_writes_section_runs_on_a_mapped_stack() {
    // Found by the fuzzer: the new stack's entries waited in the spawning
    // task's queue, and the new task faulted on its first push.
    let _b = lazymmu::mm::lazy_mmu::use_backend(Backend::DeferredWrites);
    let section = enable();
    let ran = sched::spawn("child", || assert!(!is_lazy_mmu_mode_active())).unwrap().join();
    drop(section);
    assert!(ran.is_ok(), "{ran:?}");
}

#[test_case]
fn a_stack_made_inside_a_batched_section_is_published_before_it_is_handed_over() {
    use lazymmu::barrier::cost;
    use lazymmu::mm::KernelStack;
    use lazymmu::mm::lazy_mmu::use_backend;
    let _b = use_backend(Backend::Batched);
    let section = enable();
    let mut stack = None;
    let c = cost(|| stack = Some(KernelStack::new().unwrap()));
    // A task on another CPU may run on the stack at once: its mapping's
    // pair is paid now, not at the caller's leave (Affinity::Any tasks
    // used to start on a stack their spawner still owed a dsb ishst; isb).
    assert_eq!((c.dsb_ishst, c.isb), (1, 1), "{c:?}");
    assert_eq!(
        sched::current().lazy_state(),
        LazySnapshot { enable_count: 1, pause_count: 0, pending: false, queued: 0 },
        "nothing pending, still in the section"
    );
    drop(section);
    drop(stack);
}

#[test_case]
fn a_task_that_panics_inside_a_walk_lets_its_guard_go_and_ends_with_a_report() {
    use lazymmu::mm::pgtable;
    let walker = sched::spawn("walker", || {
        let _walk = pgtable::walking();
        panic!("a panic inside a walk");
    })
    .unwrap();
    match walker.join() {
        Err(Caught::Panic(message)) => assert!(message.as_str().contains("a panic inside a walk"), "{message:?}"),
        other => panic!("expected the task's panic, got {other:?}"),
    }
    // Its guard would keep every later exclusive() spinning forever.
    assert!(pgtable::try_exclusive().is_some(), "no walk guard is left held by the dead task");
}

#[test_case]
fn a_task_that_panics_in_the_middle_of_a_store_run_still_pays_the_pair() {
    use lazymmu::barrier::cost;
    use lazymmu::mm::PAGE_SIZE;
    use lazymmu::mm::apply_to_existing_page_range_by_table;
    use lazymmu::mm::lazy_mmu::use_backend;
    use lazymmu::mm::pgtable;
    use lazymmu::mm::{Attributes, Descriptor, Level};
    let scratch = lazymmu::Scratch::new(2);
    let (va, page) = (scratch.va(0), Descriptor::leaf(Level::L3, scratch.frame(), Attributes::KERNEL_RW));
    let _b = use_backend(Backend::Batched);
    sched::set_preemption(false);
    let writer = sched::spawn("writer", move || {
        let _ = apply_to_existing_page_range_by_table(va, 2 * PAGE_SIZE, |ptes| {
            // SAFETY: the test's own scratch pages, mapping its own frame;
            // the panic comes before the second store.
            unsafe {
                pgtable::write_ptes(ptes, |slot| match slot.index() {
                    0 => Some(page),
                    _ => panic!("a panic in the store loop"),
                })
            };
            Ok::<(), ()>(())
        });
    })
    .unwrap();
    // The writer runs, stores page 0 in its batched section, panics at
    // page 1 and ends; its section is closed and pays the pair it owes.
    // (With the checker on, the panic comes as the checker asks for the
    // run's descriptors, before any store: the pair is owed all the same.)
    let c = cost(|| {
        while !writer.is_finished() {
            sched::yield_now();
        }
    });
    assert_eq!((c.dsb_ishst, c.isb), (1, 1), "{c:?}");
    assert!(matches!(writer.join(), Err(Caught::Panic(_))));
    drop(scratch);
}
