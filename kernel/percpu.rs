//! Per-CPU data, reached through TPIDR_EL1 without locks. Each CPU only
//! touches its own slot; the fields that an interrupt handler also touches
//! (the interrupt depth, the reschedule request) are changed only with
//! IRQs masked or by the handler itself, so plain cells are enough.

use core::cell::Cell;
use core::ptr::null;
use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use crate::arch::cpu;
use crate::task::Task;

/// The most CPUs the kernel starts (GICv2's limit); the runner refuses more.
pub(crate) const MAX_CPUS: usize = 8;

pub struct PerCpu {
    pub id: usize,
    /// The task this CPU runs; null means its boot task.
    current: AtomicPtr<Task>,
    /// The task this CPU just switched away from, until the task it
    /// switched to has finished the switch (`sched::finish_task_switch`).
    switched_from: Cell<*const Task>,
    /// How many interrupt handlers are running on this CPU (0 or 1: they
    /// do not nest).
    irq_depth: Cell<u32>,
    /// The timer asked for another task to run when the handler returns.
    need_resched: Cell<bool>,
}

// SAFETY: each PerCpu is used only by its own CPU (see the module doc).
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new(id: usize) -> PerCpu {
        PerCpu {
            id,
            current: AtomicPtr::new(core::ptr::null_mut()),
            switched_from: Cell::new(null()),
            irq_depth: Cell::new(0),
            need_resched: Cell::new(false),
        }
    }

    /// The task running on this CPU.
    pub fn current_task(&self) -> &'static Task {
        let task = self.current.load(Relaxed);
        if task.is_null() {
            return &BOOT_TASKS[self.id];
        }
        // SAFETY: `current` only holds tasks that outlive their running
        // (boot tasks are static; spawned tasks are freed only when Dead).
        unsafe { &*task }
    }

    /// Called on this CPU only, with IRQs masked.
    pub(crate) fn set_current_task(&self, task: &'static Task) {
        self.current.store(task as *const Task as *mut Task, Relaxed);
        cpu::set_current_task_pointer(task as *const Task as u64);
    }

    pub(crate) fn set_switched_from(&self, task: &'static Task) {
        self.switched_from.set(task);
    }

    pub(crate) fn take_switched_from(&self) -> Option<&'static Task> {
        let task = self.switched_from.replace(null());
        // SAFETY: set from a `&'static Task` that is not freed before it is Dead,
        // which only finish_task_switch (our caller) makes it.
        (!task.is_null()).then(|| unsafe { &*task })
    }

    pub fn irq_depth(&self) -> u32 {
        self.irq_depth.get()
    }

    pub(crate) fn irq_enter(&self) {
        self.irq_depth.set(self.irq_depth.get() + 1);
    }

    pub(crate) fn irq_exit(&self) {
        self.irq_depth.set(self.irq_depth.get() - 1);
    }

    pub(crate) fn request_resched(&self) {
        self.need_resched.set(true);
    }

    pub(crate) fn take_need_resched(&self) -> bool {
        self.need_resched.replace(false)
    }
}

/// The task each CPU boots into.
static BOOT_TASKS: [Task; MAX_CPUS] = [
    Task::boot("boot/0", 0),
    Task::boot("boot/1", 1),
    Task::boot("boot/2", 2),
    Task::boot("boot/3", 3),
    Task::boot("boot/4", 4),
    Task::boot("boot/5", 5),
    Task::boot("boot/6", 6),
    Task::boot("boot/7", 7),
];

static PERCPU: [PerCpu; MAX_CPUS] = [
    PerCpu::new(0),
    PerCpu::new(1),
    PerCpu::new(2),
    PerCpu::new(3),
    PerCpu::new(4),
    PerCpu::new(5),
    PerCpu::new(6),
    PerCpu::new(7),
];

/// Points this CPU's TPIDR_EL1 at its slot.
pub(crate) fn init_this_cpu(id: usize) {
    cpu::set_percpu_pointer(&PERCPU[id] as *const PerCpu as u64);
    let cpu = &PERCPU[id];
    cpu::set_current_task_pointer(cpu.current_task() as *const Task as u64);
}

/// Runs `f` on this CPU's data with IRQs masked, so that no switch (and no
/// move to another CPU) falls between finding this CPU and using its data.
/// Code that is preemptible and not bound to one CPU reads per-CPU data
/// this way.
pub(crate) fn with_this_cpu<R>(f: impl FnOnce(&'static PerCpu) -> R) -> R {
    let daif = cpu::irq_save();
    let result = f(this_cpu());
    cpu::irq_restore(daif);
    result
}

/// This CPU's data. Stable only while nothing can switch this task away:
/// IRQs masked (an interrupt handler, the scheduler) or a task bound to
/// this CPU; otherwise use [`with_this_cpu`].
pub fn this_cpu() -> &'static PerCpu {
    let ptr = cpu::percpu_pointer() as *const PerCpu;
    if ptr.is_null() {
        // Before init_this_cpu: only the boot CPU runs.
        return &PERCPU[0];
    }
    // SAFETY: TPIDR_EL1 only ever holds a pointer into PERCPU.
    unsafe { &*ptr }
}
