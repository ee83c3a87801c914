//! The task control block (TCB) and the current task.
//!
//! Each CPU boots into a static boot task; `sched::spawn` adds tasks with
//! their own guarded kernel stacks. What belongs to a *task* and must
//! survive being switched out lives here, not in the per-CPU data:
//! - the lazy MMU state: a task may be preempted inside a lazy section and
//!   resumed later (on another CPU, with SMP); its nesting depth and its
//!   pending barriers (or queued writes) must go with it;
//! - the `exception::catch` recovery point: a task preempted inside a
//!   `catch` must not have another task's fault recovered into it.

use alloc::boxed::Box;
use core::cell::{Cell, UnsafeCell};
use core::ptr::null_mut;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::arch::context::Context;
use crate::arch::exception::RecoveryPoint;
use crate::exception::Caught;
use crate::mm::lazy_mmu::{LazyMmuState, LazySnapshot};
use crate::mm::stack::KernelStack;
use crate::percpu::with_this_cpu;

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum TaskState {
    /// In a run queue, waiting for a CPU.
    Ready,
    Running,
    /// Finished, but its CPU may still be on its stack.
    Exited,
    /// Finished and off every CPU: its stack and TCB may be freed.
    Dead,
}

pub struct Task {
    pub name: &'static str,
    /// Its lazy MMU state, generic and arch parts: private to the lazy MMU
    /// layer (`mm::lazy_mmu`), which changes it only for the current task;
    /// others read it with [`Task::lazy_state`].
    pub(crate) lazy_mmu: LazyMmuState,
    state: AtomicU8,
    /// Saved registers while the task is not running.
    context: UnsafeCell<Context>,
    /// None for boot tasks, which run on the stack their CPU was given.
    stack: Option<KernelStack>,
    /// What a spawned task runs, taken when it starts.
    entry: Cell<Option<Box<dyn FnOnce() + Send>>>,
    /// How a spawned task ended: returned, or a fault or panic caught.
    outcome: Cell<Option<Result<(), Caught>>>,
    /// The innermost `exception::catch` of this task, or null.
    recovery: Cell<*mut RecoveryPoint>,
    /// What the last recovered fault or panic was.
    caught: Cell<Option<Caught>>,
    /// Where the task may run.
    pub affinity: Affinity,
    /// The CPU it last ran on, or for a task that never ran, the CPU that
    /// mapped its stack: another CPU owes an `isb` before it switches to
    /// it (`sched::schedule`).
    last_cpu: AtomicUsize,
    /// Walk guards (`pgtable::walking`) the task holds now.
    walks: Cell<u32>,
    /// Does it hold `pgtable::Exclusive` now? A fault or panic then stops
    /// the kernel instead of ending the task (see `panic.rs`).
    exclusive: Cell<bool>,
    /// Interrupt handlers running on top of this task (0 or 1): kept with
    /// the task, as Linux keeps the preempt count, so that `in_interrupt`
    /// reads it without masking anything (a handler never switches away
    /// from the task it interrupted while it runs).
    irq_depth: Cell<u32>,
}

/// The CPUs a task may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// Any CPU: the scheduler may move it between CPUs at any switch.
    Any,
    /// This CPU only (a CPU's boot task; `sched::spawn`'s default).
    Cpu(usize),
}

impl Affinity {
    pub fn allows(self, cpu: usize) -> bool {
        match self {
            Affinity::Any => true,
            Affinity::Cpu(n) => n == cpu,
        }
    }
}

// SAFETY: a task's cells are touched only by the CPU running it (never
// from interrupt context: lazy MMU calls are no-ops there, and faults in
// interrupt handlers are not recovered), or, for `entry` and `outcome`,
// by whoever holds the TCB while the task is not running.
unsafe impl Sync for Task {}

impl Task {
    /// A CPU's boot task: already running, on the CPU's boot stack, and
    /// bound to that CPU.
    pub const fn boot(name: &'static str, cpu: usize) -> Task {
        Task {
            name,
            lazy_mmu: LazyMmuState::new(),
            state: AtomicU8::new(TaskState::Running as u8),
            context: UnsafeCell::new(Context::zeroed()),
            stack: None,
            entry: Cell::new(None),
            outcome: Cell::new(None),
            recovery: Cell::new(null_mut()),
            caught: Cell::new(None),
            affinity: Affinity::Cpu(cpu),
            last_cpu: AtomicUsize::new(cpu),
            walks: Cell::new(0),
            exclusive: Cell::new(false),
            irq_depth: Cell::new(0),
        }
    }

    /// A task that will start `entry` on `stack` when first switched to.
    pub(crate) fn spawned(
        name: &'static str,
        affinity: Affinity,
        stack: KernelStack,
        entry: Box<dyn FnOnce() + Send>,
    ) -> Task {
        let mut task = Task::boot(name, 0);
        task.affinity = affinity;
        task.last_cpu = AtomicUsize::new(stack.mapped_on());
        task.state = AtomicU8::new(TaskState::Ready as u8);
        task.stack = Some(stack);
        task.entry.set(Some(entry));
        task
    }

    /// Its lazy MMU state at a glance, as tests and the audit compare it.
    pub fn lazy_state(&self) -> LazySnapshot {
        self.lazy_mmu.snapshot()
    }

    pub(crate) fn state(&self) -> TaskState {
        match self.state.load(Ordering::Acquire) {
            0 => TaskState::Ready,
            1 => TaskState::Running,
            2 => TaskState::Exited,
            _ => TaskState::Dead,
        }
    }

    pub(crate) fn set_state(&self, state: TaskState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// The CPU it last ran on (see the field).
    pub(crate) fn last_cpu(&self) -> usize {
        self.last_cpu.load(Ordering::Relaxed)
    }

    pub(crate) fn set_last_cpu(&self, cpu: usize) {
        self.last_cpu.store(cpu, Ordering::Relaxed);
    }

    pub fn stack(&self) -> Option<&KernelStack> {
        self.stack.as_ref()
    }

    pub(crate) fn context(&self) -> *mut Context {
        self.context.get()
    }

    pub(crate) fn take_entry(&self) -> Option<Box<dyn FnOnce() + Send>> {
        self.entry.take()
    }

    pub(crate) fn set_outcome(&self, outcome: Result<(), Caught>) {
        self.outcome.set(Some(outcome));
    }

    pub(crate) fn take_outcome(&self) -> Option<Result<(), Caught>> {
        self.outcome.take()
    }

    pub(crate) fn set_recovery(&self, point: *mut RecoveryPoint) -> *mut RecoveryPoint {
        self.recovery.replace(point)
    }

    /// Takes the recovery point, so a second fault on the way out is not
    /// recovered into the same place.
    pub(crate) fn take_recovery(&self) -> Option<*mut RecoveryPoint> {
        let point = self.recovery.replace(null_mut());
        (!point.is_null()).then_some(point)
    }

    pub(crate) fn set_caught(&self, caught: Caught) {
        self.caught.set(Some(caught));
    }

    pub(crate) fn take_caught(&self) -> Option<Caught> {
        self.caught.take()
    }

    /// Counts a walk guard taken (`up`) or let go by this task.
    pub(crate) fn count_walk(&self, up: bool) {
        self.walks.set(if up { self.walks.get() + 1 } else { self.walks.get() - 1 });
    }

    /// Is an interrupt handler running on top of this task?
    #[inline]
    pub fn in_irq(&self) -> bool {
        self.irq_depth.get() > 0
    }

    pub(crate) fn irq_enter(&self) {
        self.irq_depth.set(self.irq_depth.get() + 1);
        self.refresh_store_mode();
    }

    pub(crate) fn irq_exit(&self) {
        self.irq_depth.set(self.irq_depth.get() - 1);
        self.refresh_store_mode();
    }

    /// Decides again how this task's next entry stores are made (see
    /// `arch::lazy_mmu::StoreMode`), after its lazy MMU state, its
    /// interrupt depth or the backend changed: lazily only in an active
    /// section and outside interrupt handlers.
    pub(crate) fn refresh_store_mode(&self) {
        self.lazy_mmu.arch.set_store_mode(!self.in_irq() && self.lazy_mmu.is_active());
    }

    pub(crate) fn walks(&self) -> u32 {
        self.walks.get()
    }

    /// The walk guards this task holds, forgotten: what a fault or panic
    /// abandoned without letting go (`exception::release_abandoned`).
    pub(crate) fn take_walks(&self) -> u32 {
        self.walks.replace(0)
    }

    pub(crate) fn set_exclusive(&self, held: bool) {
        self.exclusive.set(held);
    }

    /// Does this task hold `pgtable::Exclusive`?
    pub fn holds_exclusive(&self) -> bool {
        self.exclusive.get()
    }
}

/// The task running on this CPU: the caller itself, from one register
/// (SP_EL0, see `arch::cpu::current_task_pointer`), with nothing masked.
#[inline]
pub fn current() -> &'static Task {
    let ptr = crate::arch::cpu::current_task_pointer() as *const Task;
    if ptr.is_null() {
        // Early boot, before this CPU's init.
        return with_this_cpu(|cpu| cpu.current_task());
    }
    // SAFETY: the scheduler only sets it to a running task, which lives
    // at least as long as it runs (boot tasks are static).
    unsafe { &*ptr }
}
