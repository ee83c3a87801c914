//! The task control block (TCB). For now there is one task per CPU, the
//! one that booted it; the scheduler (issue 4's context switch) adds more.
//!
//! The lazy MMU state lives here, in the task, not in the CPU: a task may be
//! preempted inside a lazy section and resumed later (on another CPU, with
//! SMP), and its nesting depth and pending barriers must go with it.

use core::cell::Cell;

use crate::arch::lazy_mmu::ArchLazyState;
use crate::percpu::this_cpu;

/// The generic lazy MMU state of a task (Linux 7.0's `lazy_mmu_state`).
#[derive(Debug, Default)]
pub struct LazyMmuState {
    /// Nesting depth of enable/disable.
    pub enable_count: Cell<u8>,
    /// Nesting depth of pause/resume.
    pub pause_count: Cell<u8>,
}

impl LazyMmuState {
    /// Lazy MMU mode is active: enabled and not paused.
    pub fn is_active(&self) -> bool {
        self.enable_count.get() > 0 && self.pause_count.get() == 0
    }
}

pub struct Task {
    pub name: &'static str,
    pub lazy_mmu: LazyMmuState,
    /// What the architecture's lazy MMU backend keeps per task.
    pub arch_lazy: ArchLazyState,
}

// SAFETY: a task's cells are only touched by the CPU currently running it,
// and never from interrupt context (lazy MMU calls are no-ops there).
unsafe impl Sync for Task {}

impl Task {
    pub const fn new(name: &'static str) -> Task {
        Task {
            name,
            lazy_mmu: LazyMmuState { enable_count: Cell::new(0), pause_count: Cell::new(0) },
            arch_lazy: ArchLazyState::new(),
        }
    }
}

/// The task running on this CPU.
pub fn current() -> &'static Task {
    this_cpu().current_task()
}
