//! Several CPUs (run with -smp 2 and -smp 4): every CPU the device tree
//! lists comes up on its own stack and runs work sent to it; a fault there
//! comes back as a value; and an unmap on one CPU reaches the others' TLBs
//! only through the broadcast flush: until then they keep reading the page.

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
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use lazymmu::boot_args::qemu_param;
use lazymmu::cpu;
use lazymmu::exception::{Caught, ExceptionClass, FaultStatus};
use lazymmu::mm::{
    self, Descriptor, KSTACK_SLOT_SIZE, KSTACK_START, PAGE_SIZE, VirtAddr,
    lazy_mmu::{Backend, LazySnapshot},
    pgtable, probe, vfree, vmalloc,
};
use lazymmu::{dtb, smp};
use spin::Mutex;

lazymmu::test_image!();

fn cpus() -> usize {
    let n: usize = qemu_param("smp").and_then(|s| s.parse().ok()).expect("the runner passes qemu.smp");
    assert!(n >= 2, "this image needs at least two CPUs (LAZYMMU_SMP >= 2), not {n}");
    n
}

#[test_case]
fn every_cpu_comes_up_on_its_own_stack_and_reports() {
    let n = cpus();
    assert_eq!(dtb::info().cpus, n);
    assert_eq!(smp::online_cpus(), n, "every CPU the device tree lists is online");
    static REPORTS: Mutex<Vec<(usize, u64, u64, u64)>> = Mutex::new(Vec::new());
    REPORTS.lock().clear();
    for other in 1..n {
        smp::run_on(other, || {
            let me = smp::smp_processor_id();
            REPORTS.lock().push((me, cpu::mpidr(), cpu::current_el(), cpu::stack_pointer()));
        })
        .expect("online and idle")
        .wait()
        .unwrap();
    }
    let reports = REPORTS.lock().clone();
    for (i, &(me, mpidr, el, sp)) in reports.iter().enumerate() {
        let want = i + 1;
        assert_eq!((me, mpidr, el), (want, dtb::info().cpu_ids[want], 1), "cpu {want}");
        assert!(
            sp >= KSTACK_START.as_u64() && sp < KSTACK_START.as_u64() + 64 * KSTACK_SLOT_SIZE,
            "cpu {want} runs on a kernel stack: {sp:#x}"
        );
    }
    let sps: Vec<u64> = reports.iter().map(|r| r.3 / KSTACK_SLOT_SIZE).collect();
    assert!((1..sps.len()).all(|i| !sps[..i].contains(&sps[i])), "each its own stack: {sps:x?}");
}

#[test_case]
fn every_secondary_cpu_writes_sctlr_el1_whole_as_the_boot_cpu_does() {
    // tests/boot.rs pins the boot CPU's value, bit by bit.
    const EXPECTED: u64 = 0x30d0_198d;
    static SEEN: Mutex<Vec<(usize, u64)>> = Mutex::new(Vec::new());
    SEEN.lock().clear();
    for other in 1..cpus() {
        smp::run_on(other, move || SEEN.lock().push((other, cpu::sctlr_el1())))
            .expect("online and idle")
            .wait()
            .unwrap();
    }
    for &(c, sctlr) in SEEN.lock().iter() {
        assert_eq!(sctlr, EXPECTED, "cpu {c}: SCTLR_EL1 is {sctlr:#x}, differing in bits {:#x}", sctlr ^ EXPECTED);
    }
    assert_eq!(cpu::sctlr_el1(), EXPECTED, "boot CPU");
}

#[test_case]
fn every_cpu_takes_its_own_timer_interrupt() {
    let n = cpus();
    static FIRED_ON: AtomicU64 = AtomicU64::new(u64::MAX);
    fn handler() {
        FIRED_ON.store(smp::smp_processor_id() as u64, SeqCst);
    }
    for other in 1..n {
        FIRED_ON.store(u64::MAX, SeqCst);
        let interrupts = lazymmu::cpu::interrupt_count();
        smp::run_on(other, || {
            lazymmu::timer::call_after(lazymmu::timer::ticks_from_us(100), handler);
            cpu::wait_until(|| FIRED_ON.load(SeqCst) != u64::MAX);
        })
        .expect("online and idle")
        .wait()
        .unwrap();
        assert_eq!(FIRED_ON.load(SeqCst), other as u64, "the handler ran on cpu {other}");
        assert!(lazymmu::cpu::interrupt_count() > interrupts);
    }
}

#[test_case]
fn work_runs_on_every_cpu_at_once_and_each_finishes() {
    let n = cpus();
    static SUMS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    let pending: Vec<smp::Pending> = (1..n)
        .map(|c| {
            smp::run_on(c, move || {
                let sum: u64 = (0..100_000u64).map(|i| i * c as u64).sum();
                SUMS[c].store(sum, SeqCst);
            })
            .expect("online and idle")
        })
        .collect();
    for p in pending {
        p.wait().unwrap();
    }
    for (c, sum) in SUMS.iter().enumerate().take(n).skip(1) {
        assert_eq!(sum.load(SeqCst), c as u64 * (100_000 * 99_999 / 2), "cpu {c}");
    }
}

#[test_case]
fn a_fault_on_another_cpu_comes_back_as_a_value() {
    // The guard page after a vmalloc area: unmapped, its tables present.
    let va = vmalloc(PAGE_SIZE).unwrap();
    let guard = va.add(PAGE_SIZE).as_u64();
    let outcome = smp::run_on(1, move || {
        // SAFETY: a read of an unmapped address, expected to fault.
        let _ = unsafe { core::ptr::read_volatile(guard as *const u64) };
    })
    .expect("online and idle")
    .wait();
    vfree(va).unwrap();
    match outcome {
        Err(Caught::Fault(s)) => {
            assert_eq!(
                (s.class, s.status, s.far),
                (ExceptionClass::DataAbortCurrentEl, Some(FaultStatus::Translation { level: 3 }), guard)
            )
        }
        other => panic!("expected a translation fault, got {other:?}"),
    }
    assert!(smp::run_on(1, || {}).expect("still online").wait().is_ok(), "the CPU goes on after a fault");
}

/// What a reading CPU saw of the page.
static READS_BEFORE: AtomicU64 = AtomicU64::new(0);
static STALE_READS: AtomicU64 = AtomicU64::new(0);
static CLEARED: AtomicBool = AtomicBool::new(false);
static FLUSHED: AtomicBool = AtomicBool::new(false);
static WRONG_VALUE: AtomicBool = AtomicBool::new(false);

#[test_case]
fn an_unmap_reaches_another_cpus_tlb_only_through_the_broadcast_flush() {
    let _ = cpus();
    let va = vmalloc(PAGE_SIZE).unwrap();
    // SAFETY: our own page.
    unsafe { probe::write(va, 0x5eed_cafe).unwrap() };
    for flag in [&CLEARED, &FLUSHED, &WRONG_VALUE] {
        flag.store(false, SeqCst);
    }
    READS_BEFORE.store(0, SeqCst);
    STALE_READS.store(0, SeqCst);
    let addr = va.as_u64();
    // CPU 1 reads the page until a read faults.
    let reader = smp::run_on(1, move || {
        loop {
            let cleared = CLEARED.load(SeqCst);
            let flushed = FLUSHED.load(SeqCst);
            match probe::read(VirtAddr::new(addr)) {
                Ok(v) => {
                    if v != 0x5eed_cafe {
                        WRONG_VALUE.store(true, SeqCst);
                    }
                    if flushed {
                        panic!("read the page after the flush was done");
                    }
                    if cleared {
                        STALE_READS.fetch_add(1, SeqCst);
                    } else {
                        READS_BEFORE.fetch_add(1, SeqCst);
                    }
                }
                Err(fault) => {
                    assert!(cleared, "faulted before the entry was cleared: {fault:?}");
                    assert_eq!(fault.status, Some(FaultStatus::Translation { level: 3 }));
                    return;
                }
            }
        }
    })
    .expect("online and idle");

    while READS_BEFORE.load(SeqCst) < 100 {
        core::hint::spin_loop();
    }
    // Clear the entry in memory, with its barriers but without a TLB flush:
    // CPU 1's TLB still holds the translation, and it keeps being used.
    {
        let walk = pgtable::walking();
        // SAFETY: the test's own mapping; the stale TLB entry is the point.
        unsafe { pgtable::write_entry(&walk.walk(va), Descriptor::INVALID) };
    }
    lazymmu::barrier::dsb_ish();
    CLEARED.store(true, SeqCst);
    while STALE_READS.load(SeqCst) < 1000 && !reader.is_done() {
        core::hint::spin_loop();
    }
    assert!(!reader.is_done(), "CPU 1 stopped reading before the flush: QEMU did not keep its stale translation");
    // The broadcast flush (tlbi ...is) reaches CPU 1's TLB: its next read faults.
    mm::flush_tlb_kernel_range(va, va.add(PAGE_SIZE));
    FLUSHED.store(true, SeqCst);
    reader.wait().unwrap();
    assert!(!WRONG_VALUE.load(SeqCst), "every read returned the page's value");
    assert!(STALE_READS.load(SeqCst) >= 1000, "stale reads between the clear and the flush");
    vfree(va).unwrap();
}

#[test_case]
fn the_kasan_shadow_race_is_real_on_two_cpus_and_pause_ends_it() {
    use crate::kasan_shadow::shadow_race_two_cpus;
    use lazymmu::mm::lazy_mmu::use_backend;
    let _ = cpus();
    // 250 trials of 4 pages each: with 4 vCPUs on a 2-core host every
    // broadcast TLBI must wake the idle ones, and 1000 took minutes.
    const TRIALS: u32 = 250;
    for (backend, pause) in [
        (Backend::DeferredWrites, false),
        (Backend::DeferredWrites, true),
        (Backend::Batched, false),
        (Backend::Batched, true),
    ] {
        let _b = use_backend(backend);
        let (mut installs, mut doubles, mut bbm, mut trials) = (0, 0, 0, 0);
        // At least TRIALS trials. A host that deschedules one vCPU for the
        // whole of a trial makes it race nobody, so the racy case goes on
        // (to 20 times as many) until it has lost at least once.
        let racy = backend == Backend::DeferredWrites && !pause;
        while trials < TRIALS || (racy && doubles == 0 && trials < 20 * TRIALS) {
            let outcome = shadow_race_two_cpus(1, pause, 4).unwrap();
            installs += outcome.installs;
            doubles += outcome.double_mappings;
            bbm += outcome.bbm_reports;
            trials += 1;
        }
        lazymmu::println!(
            "  {backend}, pause {pause}: {trials} trials, {installs} installs, {doubles} double mappings"
        );
        // Each double mapping replaced a live page: one break-before-make
        // report each from the page-table rules checker, and no other.
        let reported = if lazymmu::mm::pgtable_check::enabled() { doubles as u64 } else { 0 };
        assert_eq!(bbm, reported, "{backend}, pause {pause}: BBM reports");
        if racy {
            assert!(doubles > 0, "{backend} without pause: the queued store let the other CPU map the page again");
        } else {
            assert_eq!(doubles, 0, "{backend}, pause {pause}");
        }
    }
}

/// What a task that moved between CPUs in the middle of a section saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Migration {
    from: usize,
    to: usize,
    before: LazySnapshot,
    after: LazySnapshot,
    leave: (u64, u64),
}

fn lazy_state() -> LazySnapshot {
    lazymmu::sched::current().lazy_state()
}

#[test_case]
fn a_task_migrated_mid_section_keeps_its_state_and_its_leave_pays_on_the_new_cpu() {
    use lazymmu::barrier::cost;
    use lazymmu::mm::lazy_mmu::{enable, use_backend};
    use lazymmu::mm::{Access, HwTranslation, hw_translate};
    use lazymmu::mm::{Attributes, Level};
    use lazymmu::mm::{free_vm_area, get_vm_area, vunmap_range};
    use lazymmu::sched::Affinity;
    let _ = cpus();
    static SEEN: Mutex<Option<Migration>> = Mutex::new(None);
    for backend in [Backend::Batched, Backend::DeferredWrites] {
        let _b = use_backend(backend);
        let va = get_vm_area(8 * PAGE_SIZE, PAGE_SIZE).unwrap();
        let walk = pgtable::walking();
        for i in 0..8 {
            walk.walk_create(va.add(i * PAGE_SIZE), Level::L3).unwrap();
        }
        drop(walk);
        let frame = lazymmu::mm::frame_alloc::alloc_frame().unwrap();
        *SEEN.lock() = None;
        let task = lazymmu::sched::spawn_on("migrant", Affinity::Any, move || {
            let from = smp::smp_processor_id();
            // Held across the migration: dropped after the section.
            let walk = pgtable::walking();
            let section = enable();
            for i in 0..8 {
                let entry = walk.walk(va.add(i * PAGE_SIZE));
                // SAFETY: the test's own area and frame.
                unsafe { pgtable::write_entry(&entry, Descriptor::leaf(Level::L3, frame, Attributes::KERNEL_RW)) };
            }
            let before = lazy_state();
            // Yield until another CPU has picked this task up.
            while smp::smp_processor_id() == from {
                lazymmu::sched::yield_now();
            }
            let to = smp::smp_processor_id();
            // `current` (SP_EL0, set by the switch on the new CPU) is still
            // this task (that it agrees with the new CPU's record, the
            // scheduler asserts at every switch in debug builds).
            let me = lazymmu::sched::current();
            assert_eq!(me.name, "migrant");
            let after = lazy_state();
            let c = cost(|| drop(section));
            *SEEN.lock() = Some(Migration { from, to, before, after, leave: (c.dsb_ishst, c.isb) });
        })
        .unwrap();
        task.join().unwrap();
        let m = SEEN.lock().expect("the task ran");
        let queued = if backend == Backend::DeferredWrites { 8 } else { 0 };
        assert_ne!(m.from, m.to, "{backend}: {m:?}");
        assert_eq!(
            m.before,
            LazySnapshot { enable_count: 1, pause_count: 0, pending: true, queued },
            "{backend}: in the section, with work pending"
        );
        assert_eq!(m.after, m.before, "{backend}: depth, pause count, pending flag and queue moved with the task");
        assert_eq!(m.leave, (1, 1), "{backend}: its leave on the new CPU emitted the deferred pair");
        for i in 0..8 {
            assert_eq!(
                hw_translate(va.add(i * PAGE_SIZE), Access::Read),
                HwTranslation::Mapped { pa: frame, mair_attr: 0xff }
            );
        }
        vunmap_range(va, va.add(8 * PAGE_SIZE)).unwrap();
        free_vm_area(va).unwrap();
        lazymmu::mm::frame_alloc::free_frame(frame).unwrap();
    }
}

#[test_case]
fn mappers_on_every_cpu_at_once_share_tables_safely() {
    let n = cpus();
    use lazymmu::mm::audit;
    // (The audit's count: without vmalloc's spare nodes, whose slab frames
    // come and go with the calls.)
    let before = (audit::state().frames_used, mm::area_count());
    static FAILURES: AtomicU64 = AtomicU64::new(0);
    FAILURES.store(0, SeqCst);
    // Every CPU maps, checks and unmaps small buffers as fast as it can:
    // neighbouring areas share level-3 tables, which are made, shared and
    // emptied concurrently, and now and then taken away by a reclaim.
    let work = |seed: u64| {
        let mut x = seed;
        for round in 0..300u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let pages = 1 + (x >> 60);
            let Ok(va) = vmalloc(pages * PAGE_SIZE) else {
                FAILURES.fetch_add(1, SeqCst);
                continue;
            };
            for i in 0..pages {
                let page = va.add(i * PAGE_SIZE);
                // SAFETY: our own fresh mapping.
                let wrote = unsafe { probe::write(page, seed ^ round ^ i) };
                if wrote.is_err() || probe::read(page) != Ok(seed ^ round ^ i) {
                    FAILURES.fetch_add(1, SeqCst);
                }
            }
            if vfree(va).is_err() {
                FAILURES.fetch_add(1, SeqCst);
            }
            if round % 32 == 31 {
                mm::reclaim_page_tables();
            }
        }
    };
    let pending: Vec<smp::Pending> =
        (1..n).map(|c| smp::run_on(c, move || work(c as u64 * 7919)).expect("online and idle")).collect();
    work(1);
    for p in pending {
        p.wait().unwrap();
    }
    assert_eq!(FAILURES.load(SeqCst), 0, "every buffer was mapped, readable, writable and freed");
    mm::vm_unmap_aliases();
    mm::reclaim_page_tables();
    assert_eq!((audit::state().frames_used, mm::area_count()), before, "every frame and table came back");
}

#[test_case]
fn a_table_walk_keeps_its_tables_while_another_cpu_frees_them() {
    use lazymmu::mm::pgtable::Visitor;
    use lazymmu::mm::vmalloc_aligned;
    use lazymmu::mm::{Attributes, Level};
    use lazymmu::mm::{BLOCK_2M, PhysAddr};
    let _ = cpus();
    // An area alone in its 2 MiB: freeing it, then a reclaim, takes its
    // level-3 table away.
    let va = vmalloc_aligned(PAGE_SIZE, BLOCK_2M).unwrap();
    static FREED: AtomicBool = AtomicBool::new(false);
    FREED.store(false, SeqCst);
    struct FreeItMidWalk {
        target: VirtAddr,
        pending: Option<smp::Pending>,
        freed_during_walk: bool,
    }
    impl Visitor for FreeItMidWalk {
        fn table(&mut self, _: VirtAddr, _: Level) {}
        fn leaf(&mut self, va: VirtAddr, _: Level, _: PhysAddr, _: Attributes) {
            if va != self.target {
                return;
            }
            // Standing on the area's leaf, inside its table: CPU 1 frees
            // the area now, tables and all, unless the walk keeps them.
            let target = self.target;
            self.pending = smp::run_on(1, move || {
                vfree(target).unwrap();
                lazymmu::mm::reclaim_page_tables();
                FREED.store(true, SeqCst);
            });
            assert!(self.pending.is_some(), "CPU 1 takes the job");
            // Long enough for CPU 1 to finish a vfree many times over.
            for _ in 0..2_000_000 {
                if FREED.load(SeqCst) {
                    break;
                }
                core::hint::spin_loop();
            }
            self.freed_during_walk = FREED.load(SeqCst);
        }
    }
    let mut walk = FreeItMidWalk { target: va, pending: None, freed_during_walk: false };
    pgtable::visit(&mut walk);
    // The walk holds the walk guard (as Linux's ptdump holds the hotplug
    // lock): the reclaim waited for it to end, then went ahead.
    assert!(!walk.freed_during_walk, "the tables under the walk were freed while it was in them");
    walk.pending.expect("the job was sent").wait().unwrap();
    assert!(FREED.load(SeqCst));
    assert!(pgtable::lookup(va).level < Level::L3, "the area's level-3 table is gone now");
}

#[test_case]
fn a_job_that_panics_in_a_section_and_a_walk_leaves_neither_behind() {
    use lazymmu::mm::lazy_mmu::enable;
    let outcome = smp::run_on(1, || {
        core::mem::forget(enable());
        core::mem::forget(pgtable::walking());
        panic!("a panic in a section and a walk");
    })
    .expect("online and idle")
    .wait();
    match outcome {
        Err(Caught::Panic(message)) => {
            assert!(message.as_str().contains("a panic in a section and a walk"), "{message:?}")
        }
        other => panic!("expected the job's panic, got {other:?}"),
    }
    // The walk guard is let go: the tables' lock is free.
    assert!(pgtable::try_exclusive().is_some(), "no walk guard is left held on cpu 1");
    // The section is closed: cpu 1's boot task runs the next job outside one.
    static SEEN: Mutex<Option<LazySnapshot>> = Mutex::new(None);
    smp::run_on(1, || *SEEN.lock() = Some(lazy_state())).expect("online and idle").wait().unwrap();
    assert_eq!(SEEN.lock().take(), Some(LazySnapshot::default()), "cpu 1's next job starts with no section open");
}

#[test_case]
fn a_lock_wait_that_cannot_end_reports_where_it_waits() {
    static HOLDING: AtomicBool = AtomicBool::new(false);
    HOLDING.store(false, SeqCst);
    let before = lazymmu::lock_wait_reports();
    // Cpu 1 holds a walk guard until the wait for the tables' lock has
    // reported itself (LOCK_WAIT_REPORT_S in): a holder that never lets go,
    // as far as this CPU's exclusive() can tell.
    let holder = smp::run_on(1, move || {
        let walk = pgtable::walking();
        HOLDING.store(true, SeqCst);
        while lazymmu::lock_wait_reports() == before {
            core::hint::spin_loop();
        }
        drop(walk);
    })
    .expect("online and idle");
    while !HOLDING.load(SeqCst) {
        core::hint::spin_loop();
    }
    drop(pgtable::exclusive());
    holder.wait().unwrap();
    assert_eq!(lazymmu::lock_wait_reports(), before + 1, "the wait reported itself once");
}

/// A task spawned on CPU 0 and run on CPU 1: its stack was mapped and
/// published (`dsb ishst; isb`) on CPU 0, and is published to CPU 1 only by
/// CPU 1's own `isb` between taking the task and switching to its stack
/// (the checker's publish-receiver rule). With that `isb` planted away
/// (`skip-receiver-isb`) the checker names the switch, once.
#[test_case]
fn a_stack_mapped_on_one_cpu_is_switched_to_on_another_only_after_an_isb_there() {
    use lazymmu::mm::pgtable_check::{self, Rule};
    use lazymmu::sched::Affinity;
    use lazymmu::{Bug, with_planted};
    let _ = cpus();
    if !pgtable_check::enabled() {
        return;
    }
    static RAN_ON: AtomicU64 = AtomicU64::new(u64::MAX);
    let spawn_and_join = || {
        RAN_ON.store(u64::MAX, SeqCst);
        let task = lazymmu::sched::spawn_on("received", Affinity::Cpu(1), || {
            RAN_ON.store(smp::smp_processor_id() as u64, SeqCst);
        })
        .unwrap();
        task.join().unwrap();
    };
    assert_eq!(smp::smp_processor_id(), 0, "the stack is mapped on CPU 0");
    let ((), found) = pgtable_check::expecting(Rule::PublishReceiver, spawn_and_join);
    assert_eq!(RAN_ON.load(SeqCst), 1);
    assert_eq!(found.total(), 0, "with the isb: {:?}", found.first);

    let ((), found) =
        pgtable_check::expecting(Rule::PublishReceiver, || with_planted(Bug::SkipReceiverIsb, spawn_and_join));
    assert_eq!(RAN_ON.load(SeqCst), 1);
    assert_eq!(found.of(Rule::PublishReceiver), 1, "one switch to the new stack: {:?}", found.first);
    let v = &found.first[0];
    assert_eq!((v.cpu, v.task, v.in_interrupt), (1, "boot/1", false), "{v}");
    assert!(
        v.what.as_str().starts_with("cpu 1 switched to a stack [") && v.what.as_str().contains("that cpu 0 mapped"),
        "{v}"
    );
}
