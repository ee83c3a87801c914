//! The scheduler: tasks with their own guarded stacks, one round-robin run
//! queue, cooperative switches ([`yield_now`]) and preemptive ones (the
//! timer ends a time slice while other tasks wait).
//!
//! The switch issues `dsb ish` before it leaves a task, as arm64's
//! `__switch_to` does: whatever the task stored, page-table entries of an
//! unfinished lazy section included, is visible to every table walker
//! before anything else runs. The `isb` such a section still owes is not
//! needed by anyone else: the task issues it itself when it runs again and
//! leaves its section, before it touches the new mappings. So the task's
//! pending flag (and, under `deferred-writes`, its queue) simply goes with it.
//!
//! The CPU a task comes to needs one thing of its own: a task's stack was
//! mapped by another CPU, and a CPU that switches to a task which never
//! ran here before, or last ran elsewhere, issues `isb` between taking it
//! from the run queue and switching to its stack. Without it, a walk it
//! began earlier may have read the stack's entry while still invalid; the
//! spurious-fault fixup (`mm/fault.rs`) cannot catch that fault, whose
//! exception entry writes to the very stack that faulted (the checker's
//! publish-receiver rule, `pgtable_check/shadow/handover.rs`).

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::arch::{barrier, context, cpu};
use crate::exception::{self, Caught};
use crate::mm::pgtable::MapError;
use crate::mm::pgtable_check;
use crate::mm::stack::KernelStack;
use crate::percpu::this_cpu;
use crate::planted::{Bug, planted};
use crate::sync::IrqSpinLock;
use crate::task::{self, TaskState};
/// Tasks (`task.rs`): what `spawn` makes and `current` is, here as in
/// Linux's `<linux/sched.h>`.
pub use crate::task::{Affinity, Task, current};
use crate::{timer, trace};

/// How long a task runs before the timer lets another have the CPU.
pub(crate) const TIME_SLICE_US: u64 = 1_000;

static RUN_QUEUE: IrqSpinLock<VecDeque<&'static Task>> = IrqSpinLock::new(VecDeque::new());
static SWITCHES: AtomicU64 = AtomicU64::new(0);
static PREEMPTION: AtomicBool = AtomicBool::new(true);

/// Turns time slices on or off (on at boot) and returns the previous
/// setting. Off, tasks switch only when they yield: a demo that must print
/// the same trace every time, or a race staged step by step, wants that.
pub fn set_preemption(on: bool) -> bool {
    let was = PREEMPTION.swap(on, Relaxed);
    if !on {
        timer::set_slice(None);
    }
    was
}

/// A fresh time slice if preemption is on and `others_waiting`, else none.
fn arm_slice(others_waiting: bool) {
    let on = PREEMPTION.load(Relaxed) && others_waiting;
    timer::set_slice(on.then(|| timer::ticks_from_us(TIME_SLICE_US)));
}

/// Context switches so far.
pub fn switch_count() -> u64 {
    SWITCHES.load(Relaxed)
}

/// A spawned task. Joining (or dropping) it waits for the task to finish,
/// then frees its stack and control block.
#[must_use = "dropping the handle waits for the task"]
pub struct JoinHandle {
    task: &'static Task,
}

/// Starts `f` as a new task named `name`, on this CPU. It runs when the
/// scheduler picks it: at the spawner's next yield, or when its time slice
/// ends.
pub fn spawn(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle, MapError> {
    spawn_on(name, Affinity::Cpu(this_cpu().id), f)
}

/// Starts `f` as a new task that may run on the CPUs `affinity` allows;
/// with `Affinity::Any` any CPU may pick it up, and it may move between
/// CPUs at every switch.
pub fn spawn_on(
    name: &'static str,
    affinity: Affinity,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle, MapError> {
    let stack = KernelStack::new()?;
    let top = stack.top().as_u64();
    let task: &'static Task = Box::leak(Box::new(Task::spawned(name, affinity, stack, Box::new(f))));
    // SAFETY: the task is not running, and nobody else has it yet.
    unsafe { *task.context() = context::Context::new_task(top, task_entry, task as *const Task as u64) };
    enqueue(task);
    arm_slice(true);
    Ok(JoinHandle { task })
}

/// Makes `task` ready, and wakes CPUs idling for work.
fn enqueue(task: &'static Task) {
    RUN_QUEUE.lock().push_back(task);
    cpu::send_event();
}

/// Is a task that may run on this CPU waiting?
pub(crate) fn has_work_here() -> bool {
    let here = this_cpu().id;
    RUN_QUEUE.lock().iter().any(|t| t.affinity.allows(here))
}

impl JoinHandle {
    /// The task, for as long as this handle keeps it (its TCB is freed
    /// when the handle drops).
    pub fn task(&self) -> &Task {
        self.task
    }

    /// Has the task finished (and left its CPU)?
    pub fn is_finished(&self) -> bool {
        self.task.state() == TaskState::Dead
    }

    /// Waits for the task; returns how it ended: `Err` if it faulted or
    /// panicked (which ended only that task).
    pub fn join(self) -> Result<(), Caught> {
        self.wait();
        let outcome = self.task.take_outcome().expect("a dead task has an outcome");
        drop(self);
        outcome
    }

    fn wait(&self) {
        while !self.is_finished() {
            yield_now();
        }
    }
}

impl Drop for JoinHandle {
    fn drop(&mut self) {
        self.wait();
        // SAFETY: leaked by spawn; Dead means no CPU runs it or will again,
        // and this handle was the only other reference.
        drop(unsafe { Box::from_raw(self.task as *const Task as *mut Task) });
    }
}

/// Lets the next ready task run, if there is one.
pub fn yield_now() {
    schedule();
}

/// The timer ended the running task's slice.
pub(crate) fn slice_expired() {
    if has_work_here() {
        this_cpu().request_resched();
    }
}

/// Switches to the next ready task; returns when this one runs again (at
/// once if no other task is ready).
pub(crate) fn schedule() {
    let daif = cpu::irq_save();
    let prev = task::current();
    let here = this_cpu().id;
    let (next, others_waiting) = {
        let mut queue = RUN_QUEUE.lock();
        let next = queue.iter().position(|t| t.affinity.allows(here)).and_then(|i| queue.remove(i));
        (next, queue.iter().any(|t| t.affinity.allows(here)))
    };
    let Some(next) = next else {
        assert!(prev.state() == TaskState::Running, "task {} exited with no task left to run", prev.name);
        cpu::irq_restore(daif);
        return;
    };
    if prev.state() == TaskState::Running {
        prev.set_state(TaskState::Ready);
    }
    arm_slice(others_waiting || prev.state() == TaskState::Ready);
    trace::emit(format_args!(
        "context switch: {} ({}, depth {}) -> {} (depth {})",
        prev.name,
        prev.lazy_mmu.arch,
        prev.lazy_state().enable_count,
        next.name,
        next.lazy_state().enable_count
    ));
    // Everything `prev` stored, page-table entries of an open lazy section
    // included, reaches every walker before `next` runs.
    barrier::dsb_ish();
    pgtable_check::switching_out();
    receive(next, here);
    next.set_state(TaskState::Running);
    let cpu = this_cpu();
    cpu.set_switched_from(prev);
    cpu.set_current_task(next);
    SWITCHES.fetch_add(1, Relaxed);
    // SAFETY: IRQs are masked; `next` was saved by a switch or made by
    // spawn, and its stack lives as long as its TCB.
    unsafe { context::cpu_switch_to(prev.context(), next.context()) };
    finish_task_switch();
    cpu::irq_restore(daif);
}

/// Publishes `next`'s stack to this CPU (see the module's notes): an
/// `isb` if another CPU mapped it or last ran it.
fn receive(next: &Task, here: usize) {
    let Some(stack) = next.stack() else { return };
    let (bottom, top) = (stack.bottom(), stack.top());
    pgtable_check::stack_received(bottom, top);
    if next.last_cpu() != here && !planted(Bug::SkipReceiverIsb) {
        barrier::isb();
    }
    pgtable_check::stack_entering(bottom, top);
    next.set_last_cpu(here);
}

/// The second half of a switch, run by the task switched to: the task
/// switched from is off this CPU now, so it can be queued again or, if it
/// exited, declared dead (its stack is no longer in use).
fn finish_task_switch() {
    // `current` (SP_EL0, which the switch set on this CPU) and this CPU's
    // record name the same task, wherever the task ran before.
    debug_assert!(core::ptr::eq(task::current(), this_cpu().current_task()), "SP_EL0 and the per-CPU record disagree");
    if let Some(prev) = this_cpu().take_switched_from() {
        match prev.state() {
            TaskState::Ready => enqueue(prev),
            TaskState::Exited => prev.set_state(TaskState::Dead),
            TaskState::Running | TaskState::Dead => unreachable!("task {} switched from twice", prev.name),
        }
    }
}

/// Where a new task starts (see `Context::new_task`), IRQs still masked
/// from the switch that got here.
extern "C" fn task_entry(task: u64) -> ! {
    finish_task_switch();
    cpu::irq_enable();
    // SAFETY: spawn passed the task's own address; it lives until Dead.
    let task = unsafe { &*(task as *const Task) };
    let entry = task.take_entry().expect("a new task has its entry");
    // What a fault or panic abandoned is let go of (sections closed, what
    // they owed paid, walk guards released) and reported; returning with a
    // section open is the task's own bug, and is reported as its failure.
    let outcome = exception::end_of_work(exception::catch(entry));
    pgtable_check::task_exited();
    task.set_outcome(outcome);
    cpu::irq_save();
    task.set_state(TaskState::Exited);
    schedule();
    unreachable!("an exited task is never switched to");
}
