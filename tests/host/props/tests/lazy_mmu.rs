//! The lazy MMU layer as the kernel runs it (`mm/lazy_mmu/mod.rs` and
//! `stats.rs` over `_arch/aarch64/lazy_mmu.rs`, `observe.rs` and
//! `barrier.rs`), on a page table in host memory, against a model of the
//! three backends written from their documentation: under random sequences
//! of enable, disable, pause, resume, stores (some from an interrupt
//! handler) and syncs, the instructions issued are exactly the model's, in
//! order; memory holds exactly what the model says is stored (the queue of
//! `deferred-writes` not yet made); the task's snapshot, the checker's
//! checkpoints, the statistics and every refusal are the model's.
//! Interrupt context never batches and leaves the task's section alone;
//! the pending pair is emitted once, at the outermost disable (or a
//! nested one's flush, or a pause).

use std::sync::{Mutex, MutexGuard};

use lazymmu_props::arch::barrier;
use lazymmu_props::arch::lazy_mmu::{Backend, DEFERRED_QUEUE_LEN, planted};
use lazymmu_props::arch::observe::Run;
use lazymmu_props::descriptor::{Descriptor, Level};
use lazymmu_props::host::{self, Event};
use lazymmu_props::internal;
use lazymmu_props::lazy_mmu::{
    self, LazyMmuMisuse, LazySnapshot, SectionKind, lazy_mmu_mode_disable, lazy_mmu_mode_enable, lazy_mmu_mode_pause,
    lazy_mmu_mode_resume, stats,
};
use lazymmu_props::task;
use lazymmu_props::trace;
use proptest::prelude::*;

/// The backend, the statistics and the trace are global: one test at a time.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

const ENTRIES: usize = 512;
const PAIR: [&str; 2] = ["dsb ishst", "isb"];

#[derive(Clone, Debug)]
enum Op {
    Enable,
    Disable,
    Pause,
    Resume,
    /// Writes `len` entries from `at`: valid ones where `valid` says, and
    /// every `skip`-th left alone (None).
    Write {
        at: usize,
        len: usize,
        valid: u8,
        skip: usize,
        irq: bool,
    },
    Sync,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Enable),
        3 => Just(Op::Disable),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        6 => (0usize..ENTRIES, 1usize..40, any::<u8>(), 0usize..5, prop::bool::weighted(0.15))
            .prop_map(|(at, len, valid, skip, irq)| Op::Write { at, len: len.min(ENTRIES - at), valid, skip, irq }),
        1 => Just(Op::Sync),
        1 => Just(Op::Flush),
    ]
}

/// The model: the counts, the pending flag, the queue, memory.
struct Model {
    backend: Backend,
    enable: u8,
    pause: u8,
    pending: bool,
    queue: Vec<(usize, u64)>,
    memory: Vec<u64>,
    issued: Vec<&'static str>,
    events: Vec<Event>,
    stats: lazy_mmu::LazyMmuStats,
    checker: bool,
}

impl Model {
    fn active(&self) -> bool {
        self.enable > 0 && self.pause == 0
    }

    fn apply_queue(&mut self) {
        for (i, v) in self.queue.drain(..) {
            self.memory[i] = v;
        }
    }

    fn pay_pending(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.issued.extend(PAIR);
        }
    }

    /// What ending the mode's span owes (leave, flush, pause alike).
    fn settle(&mut self, why: &'static str) {
        match self.backend {
            Backend::Eager => {}
            Backend::Batched => self.pay_pending(),
            Backend::DeferredWrites => {
                self.apply_queue();
                self.pay_pending();
            }
        }
        self.events.push(Event::SectionEnded(why));
    }

    fn enable(&mut self) -> Result<(), LazyMmuMisuse> {
        if self.pause == 0 {
            self.enable = self.enable.checked_add(1).ok_or(LazyMmuMisuse::EnableOverflow)?;
            if self.enable == 1 {
                self.stats.sections += 1;
            }
            self.stats.max_nesting = self.stats.max_nesting.max(self.enable);
        }
        Ok(())
    }

    fn disable(&mut self) -> Result<(), LazyMmuMisuse> {
        if self.pause == 0 {
            self.enable = self.enable.checked_sub(1).ok_or(LazyMmuMisuse::DisableWithoutEnable)?;
            if self.enable > 0 {
                self.stats.flushes += 1;
                self.settle("lazy_mmu_mode_disable()");
            } else {
                self.settle("lazy_mmu_mode_disable()");
            }
        }
        Ok(())
    }

    fn pause(&mut self) -> Result<(), LazyMmuMisuse> {
        let was_active = self.active();
        self.pause = self.pause.checked_add(1).ok_or(LazyMmuMisuse::PauseOverflow)?;
        if was_active {
            self.stats.pauses += 1;
            self.settle("lazy_mmu_mode_pause()");
        }
        Ok(())
    }

    fn resume(&mut self) -> Result<(), LazyMmuMisuse> {
        self.pause = self.pause.checked_sub(1).ok_or(LazyMmuMisuse::ResumeWithoutPause)?;
        Ok(())
    }

    fn write(&mut self, at: usize, values: &[Option<u64>], irq: bool) {
        let lazy = self.active() && !irq;
        let written = values.iter().flatten().count() as u64;
        self.stats.entry_writes += written;
        if lazy {
            self.stats.lazy_writes += written;
        }
        match (lazy, self.backend) {
            (true, Backend::Batched) => {
                for (i, v) in values.iter().enumerate() {
                    if let Some(v) = *v {
                        self.memory[at + i] = v;
                        self.pending |= v & 1 != 0;
                    }
                }
            }
            (true, Backend::DeferredWrites) => {
                for (i, v) in values.iter().enumerate() {
                    if let Some(v) = *v {
                        if self.queue.len() == DEFERRED_QUEUE_LEN {
                            self.apply_queue();
                            self.pay_pending();
                        }
                        self.queue.push((at + i, v));
                        self.pending |= v & 1 != 0;
                    }
                }
            }
            // Outside a section, in an interrupt, or eager: each store
            // now, each valid one followed by its pair.
            _ => {
                for (i, v) in values.iter().enumerate() {
                    if let Some(v) = *v {
                        self.memory[at + i] = v;
                        if v & 1 != 0 {
                            self.issued.extend(PAIR);
                        }
                    }
                }
                if written > 0 && !lazy && self.checker {
                    self.events.push(Event::WroteOutsideSection);
                }
            }
        }
    }

    fn snapshot(&self) -> LazySnapshot {
        LazySnapshot {
            enable_count: self.enable,
            pause_count: self.pause,
            pending: self.pending,
            queued: self.queue.len(),
        }
    }
}

fn values(len: usize, valid: u8, skip: usize, seed: u64) -> Vec<Option<u64>> {
    (0..len)
        .map(|i| {
            if skip > 0 && i % (skip + 1) == skip {
                return None;
            }
            let page = ((seed + i as u64) & 0xffff) << 12;
            Some(if valid & (1 << (i % 8)) != 0 { page | 0x403 } else { page & !1 })
        })
        .collect()
}

fn run_ops(backend: Backend, checker: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    // What a failed case left (the shrinking runs it again): closed.
    let task = task::current();
    while task.in_irq() {
        task.irq_exit();
    }
    internal::recover_abandoned();
    let _backend = lazy_mmu::use_backend(backend);
    let table: &mut [u64] = Box::leak(vec![0u64; ENTRIES].into_boxed_slice());
    let first = table.as_mut_ptr();
    host::set_checker(checker);
    host::take_events();
    host::take_issued();
    let stats_before = stats(backend);
    let mut model = Model {
        backend,
        enable: 0,
        pause: 0,
        pending: false,
        queue: Vec::new(),
        memory: vec![0; ENTRIES],
        issued: Vec::new(),
        events: Vec::new(),
        stats: lazy_mmu::LazyMmuStats { max_nesting: stats_before.max_nesting, ..Default::default() },
        checker,
    };
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Enable => prop_assert_eq!(lazy_mmu_mode_enable(), model.enable()),
            Op::Disable => prop_assert_eq!(lazy_mmu_mode_disable(), model.disable()),
            Op::Pause => prop_assert_eq!(lazy_mmu_mode_pause(), model.pause()),
            Op::Resume => prop_assert_eq!(lazy_mmu_mode_resume(), model.resume()),
            Op::Write { at, len, valid, skip, irq } => {
                let vals = values(len, valid, skip, n as u64);
                let task = task::current();
                if irq {
                    task.irq_enter();
                    // In interrupt context every call does nothing.
                    prop_assert_eq!(lazy_mmu_mode_enable(), Ok(()));
                    prop_assert!(!lazy_mmu::is_lazy_mmu_mode_active());
                }
                let run = Run { first: first.wrapping_add(at), len, level: Level(3), va: (at as u64) << 12 };
                let v = &vals;
                // SAFETY: the run lies in `table`, ours.
                let written = unsafe { internal::write_run(run, move |i| v[i].map(Descriptor)) };
                prop_assert_eq!(written, vals.iter().flatten().count());
                if irq {
                    prop_assert_eq!(lazy_mmu_mode_disable(), Ok(()));
                    task.irq_exit();
                }
                model.write(at, &vals, irq);
            }
            Op::Sync => {
                internal::sync_stores();
                if model.active() && backend == Backend::DeferredWrites {
                    model.apply_queue();
                }
            }
            Op::Flush => {
                // A nested section's exit: what is deferred is made visible.
                internal::flush_section();
                if model.pause == 0 {
                    model.enable().unwrap();
                    model.disable().unwrap();
                }
            }
        }
        prop_assert_eq!(host::take_issued(), std::mem::take(&mut model.issued), "issued after {:?} (op {})", op, n);
        let (printed, events): (Vec<Event>, Vec<Event>) =
            host::take_events().into_iter().partition(|e| matches!(e, Event::Printed(_)));
        prop_assert_eq!(events, std::mem::take(&mut model.events), "events after {:?}", op);
        // A refusal is reported the first time its kind is refused (in
        // the process: maybe by an earlier case), never otherwise.
        let refused = match *op {
            Op::Disable if model.pause == 0 && model.enable == 0 => Some(LazyMmuMisuse::DisableWithoutEnable),
            Op::Resume if model.pause == 0 => Some(LazyMmuMisuse::ResumeWithoutPause),
            _ => None,
        };
        match (refused, &printed[..]) {
            (_, []) => {}
            (Some(m), [Event::Printed(line)]) => {
                prop_assert_eq!(line, &format!("lazy_mmu: warning: {m:?} refused (task host); reported once"))
            }
            _ => prop_assert!(false, "printed {:?} after {:?}", printed, op),
        }
        prop_assert_eq!(&table[..], &model.memory[..], "memory after {:?} (op {})", op, n);
        prop_assert_eq!(task::current().lazy_state(), model.snapshot(), "after {:?}", op);
        prop_assert_eq!(internal::queued_stores(), model.queue.len());
        prop_assert_eq!(lazy_mmu::is_lazy_mmu_mode_active(), model.active());
    }
    let got = stats(backend) - stats_before;
    let want = model.stats;
    prop_assert_eq!(
        (got.entry_writes, got.lazy_writes, got.sections, got.flushes, got.pauses, got.max_nesting),
        (want.entry_writes, want.lazy_writes, want.sections, want.flushes, want.pauses, want.max_nesting)
    );
    // The barriers the backend's window counted: the pairs issued.
    prop_assert_eq!(got.barriers.dsb_ishst, got.barriers.isb);
    // Whatever is left open is closed as a recovered fault would.
    let (enable, pause) = internal::recover_abandoned();
    prop_assert_eq!((enable, pause), (model.enable, model.pause));
    if model.active() {
        model.settle("");
    }
    prop_assert_eq!(&table[..], &model.memory[..]);
    prop_assert_eq!(host::take_issued(), std::mem::take(&mut model.issued));
    prop_assert_eq!(task::current().lazy_state(), LazySnapshot::default());
    host::take_events();
    host::set_checker(false);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_backend_matches_the_model(
        backend in prop::sample::select(Backend::ALL.to_vec()),
        checker: bool,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let _turn = turn();
        run_ops(backend, checker, &ops)?;
    }
}

#[test]
fn batched_pays_one_pair_at_the_outermost_disable() {
    let _turn = turn();
    let _b = lazy_mmu::use_backend(Backend::Batched);
    let table: &mut [u64] = Box::leak(vec![0u64; 16].into_boxed_slice());
    let run = Run { first: table.as_mut_ptr(), len: 16, level: Level(3), va: 0 };
    host::take_issued();
    let cost = barrier::cost(|| {
        let outer = lazy_mmu::enable();
        assert_eq!(outer.kind(), SectionKind::Outermost);
        {
            let inner = lazy_mmu::enable();
            assert_eq!(inner.kind(), SectionKind::Nested);
            // SAFETY: `table` is ours.
            unsafe { internal::write_run(run, |i| Some(Descriptor(((i as u64) << 12) | 3))) };
            assert!(task::current().lazy_state().pending);
            assert_eq!(host::take_issued(), Vec::<&str>::new(), "nothing paid inside");
        }
        // The nested exit flushed: one pair, nothing owed now.
        assert_eq!(host::take_issued(), PAIR);
        assert!(!task::current().lazy_state().pending);
        drop(outer);
        // Nothing was owed at the outermost exit.
        assert_eq!(host::take_issued(), Vec::<&str>::new());
    });
    assert_eq!((cost.dsb_ishst, cost.isb, cost.dsb()), (1, 1, 1));
    assert_eq!(table[15], (15 << 12) | 3);
}

#[test]
fn an_interrupt_handler_never_batches_and_leaves_the_section_alone() {
    let _turn = turn();
    let _b = lazy_mmu::use_backend(Backend::DeferredWrites);
    let table: &mut [u64] = Box::leak(vec![0u64; 4].into_boxed_slice());
    let first = table.as_mut_ptr();
    host::take_issued();
    let section = lazy_mmu::enable();
    // SAFETY: `table` is ours.
    unsafe { internal::write_run(Run { first, len: 1, level: Level(3), va: 0 }, |_| Some(Descriptor(0x1003))) };
    assert_eq!(table[0], 0, "queued");
    let task = task::current();
    task.irq_enter();
    assert_eq!(lazy_mmu::enable().kind(), SectionKind::InInterrupt);
    assert_eq!(internal::queued_stores(), 0, "none in interrupt context");
    // SAFETY: as above.
    unsafe {
        internal::write_run(Run { first: first.wrapping_add(1), len: 1, level: Level(3), va: 0x1000 }, |_| {
            Some(Descriptor(0x2003))
        })
    };
    assert_eq!(table[1], 0x2003, "stored at once");
    assert_eq!(host::take_issued(), PAIR, "paid at once");
    task.irq_exit();
    assert_eq!(task.lazy_state(), LazySnapshot { enable_count: 1, pause_count: 0, pending: true, queued: 1 });
    drop(section);
    assert_eq!(table[0], 0x1003);
    assert_eq!(host::take_issued(), PAIR);
}

#[test]
fn deferred_writes_applies_a_full_queue_before_the_next_store() {
    let _turn = turn();
    let _b = lazy_mmu::use_backend(Backend::DeferredWrites);
    let n = DEFERRED_QUEUE_LEN + 3;
    let table: &mut [u64] = Box::leak(vec![0u64; n].into_boxed_slice());
    let run = Run { first: table.as_mut_ptr(), len: n, level: Level(3), va: 0 };
    host::take_issued();
    let section = lazy_mmu::enable();
    // SAFETY: `table` is ours.
    unsafe { internal::write_run(run, |i| Some(Descriptor(((i as u64 + 1) << 12) | 3))) };
    // The first 64 made when the 65th came, with their pair; 3 queued.
    assert_eq!(host::take_issued(), PAIR);
    assert_eq!(internal::queued_stores(), 3);
    assert_eq!(table[DEFERRED_QUEUE_LEN - 1], ((DEFERRED_QUEUE_LEN as u64) << 12) | 3);
    assert_eq!(table[DEFERRED_QUEUE_LEN], 0);
    // A sync makes the stores, owes the pair still.
    internal::sync_stores();
    assert_eq!(table[n - 1], ((n as u64) << 12) | 3);
    assert_eq!(host::take_issued(), Vec::<&str>::new());
    drop(section);
    assert_eq!(host::take_issued(), PAIR);
}

#[test]
fn misuse_is_refused_counted_and_reported_once() {
    let _turn = turn();
    host::take_events();
    let before = lazy_mmu::misuse_count();
    assert_eq!(lazy_mmu_mode_disable(), Err(LazyMmuMisuse::DisableWithoutEnable));
    assert_eq!(lazy_mmu_mode_disable(), Err(LazyMmuMisuse::DisableWithoutEnable));
    assert_eq!(lazy_mmu::misuse_count() - before, 2);
    let printed: Vec<Event> = host::take_events();
    // Reported once per process, whichever test refused first.
    assert!(printed.len() <= 1);
    for _ in 0..255 {
        lazy_mmu_mode_enable().unwrap();
    }
    assert_eq!(lazy_mmu_mode_enable(), Err(LazyMmuMisuse::EnableOverflow));
    assert_eq!(lazy_mmu::enable().kind(), SectionKind::Refused);
    assert_eq!(task::current().lazy_state().enable_count, 255);
    assert_eq!(internal::recover_abandoned(), (255, 0));
    assert_eq!(task::current().lazy_state(), LazySnapshot::default());
}

#[test]
fn the_trace_tells_each_step() {
    let _turn = turn();
    let _b = lazy_mmu::use_backend(Backend::Batched);
    let table: &mut [u64] = Box::leak(vec![0u64; 2].into_boxed_slice());
    let first = table.as_mut_ptr();
    host::take_events();
    trace::set_enabled(true);
    {
        let _s = lazy_mmu::enable();
        // SAFETY: `table` is ours.
        unsafe {
            internal::write_run(Run { first, len: 1, level: Level(3), va: 0x4000 }, |_| Some(Descriptor(0x8000_0403)))
        };
        let _p = lazy_mmu::pause();
    }
    trace::set_enabled(false);
    // (Indented by the depth after each call.)
    let lines: Vec<String> = host::take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Printed(line) => Some(line),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            "  [host    ]   lazy_mmu_mode_enable(): depth 0 -> 1, arch enter",
            "  [host    ]   write L3 entry for 0x4000: page -> 0x80000000 RW",
            "  [host    ]     barriers deferred (pending)",
            "  [host    ]   lazy_mmu_mode_pause(): pause depth 0 -> 1, arch pause (leaves the mode)",
            "  [host    ]   dsb ishst",
            "  [host    ]   isb",
            "  [host    ]   lazy_mmu_mode_resume(): pause depth 1 -> 0, arch resume (back in the mode)",
            "  [host    ] lazy_mmu_mode_disable(): depth 1 -> 0, arch leave (pending no)",
        ]
    );
}

#[test]
fn planted_swap_pair_issues_isb_first() {
    let _turn = turn();
    let _b = lazy_mmu::use_backend(Backend::Eager);
    let table: &mut [u64] = Box::leak(vec![0u64; 1].into_boxed_slice());
    host::take_issued();
    lazymmu_props::planted::with(lazymmu_props::planted::Bug::SwapPair, || {
        // SAFETY: `table` is ours.
        unsafe {
            internal::write_run(Run { first: table.as_mut_ptr(), len: 1, level: Level(3), va: 0 }, |_| {
                Some(Descriptor(0x1003))
            })
        };
    });
    assert_eq!(host::take_issued(), ["isb", "dsb ishst"]);
    assert!(!lazymmu_props::planted::planted(lazymmu_props::planted::Bug::SwapPair));
    let _ = planted::SWAP_PAIR;
}
