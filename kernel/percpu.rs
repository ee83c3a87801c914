//! Per-CPU data, reached through TPIDR_EL1 without locks. Each CPU only
//! touches its own slot, so plain interior mutability is enough as long as
//! interrupt handlers on the same CPU do not race with it: the recovery
//! fields are used only by `exception::catch` and the fault and panic paths
//! it arms, and the current-task pointer changes only at a task switch.

use core::cell::UnsafeCell;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use crate::arch::cpu;
use crate::arch::exception::RecoveryPoint;
use crate::exception::Caught;
use crate::task::Task;

pub const MAX_CPUS: usize = 4;

pub struct PerCpu {
    pub id: usize,
    /// The innermost `exception::catch` on this CPU, or null.
    recovery: AtomicPtr<RecoveryPoint>,
    /// What the last recovered fault or panic was.
    caught: UnsafeCell<Option<Caught>>,
    /// The task this CPU runs; null means its boot task.
    current: AtomicPtr<Task>,
}

// SAFETY: each PerCpu is used only by its own CPU (see the module doc).
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new(id: usize) -> PerCpu {
        PerCpu { id, recovery: AtomicPtr::new(null_mut()), caught: UnsafeCell::new(None), current: AtomicPtr::new(null_mut()) }
    }

    /// The task running on this CPU.
    pub fn current_task(&self) -> &'static Task {
        let task = self.current.load(Relaxed);
        if task.is_null() {
            return &BOOT_TASKS[self.id];
        }
        // SAFETY: `current` only ever holds pointers to 'static tasks.
        unsafe { &*task }
    }

    pub(crate) fn set_recovery(&self, point: *mut RecoveryPoint) -> *mut RecoveryPoint {
        self.recovery.swap(point, Relaxed)
    }

    /// Takes the recovery point, so a second fault on the way out is not
    /// recovered into the same place.
    pub(crate) fn take_recovery(&self) -> Option<*mut RecoveryPoint> {
        let point = self.recovery.swap(null_mut(), Relaxed);
        (!point.is_null()).then_some(point)
    }

    pub(crate) fn set_caught(&self, caught: Caught) {
        // SAFETY: only this CPU, between a fault and its recovery.
        unsafe { *self.caught.get() = Some(caught) };
    }

    pub(crate) fn take_caught(&self) -> Option<Caught> {
        // SAFETY: only this CPU, after its recovery.
        unsafe { (*self.caught.get()).take() }
    }
}

/// The task each CPU boots into.
static BOOT_TASKS: [Task; MAX_CPUS] = [Task::new("boot/0"), Task::new("boot/1"), Task::new("boot/2"), Task::new("boot/3")];

static PERCPU: [PerCpu; MAX_CPUS] = [PerCpu::new(0), PerCpu::new(1), PerCpu::new(2), PerCpu::new(3)];

/// Points this CPU's TPIDR_EL1 at its slot.
pub fn init_this_cpu(id: usize) {
    cpu::set_percpu_pointer(&PERCPU[id] as *const PerCpu as u64);
}

/// This CPU's data.
pub fn this_cpu() -> &'static PerCpu {
    let ptr = cpu::percpu_pointer() as *const PerCpu;
    if ptr.is_null() {
        // Before init_this_cpu: only the boot CPU runs.
        return &PERCPU[0];
    }
    // SAFETY: TPIDR_EL1 only ever holds a pointer into PERCPU.
    unsafe { &*ptr }
}
