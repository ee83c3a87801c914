//! A task's lazy MMU state is the lazy MMU layer's: other code reads it
//! (`Task::lazy_state`) but cannot change it. A spawned task's TCB is
//! borrowed from its `JoinHandle`, not `'static`: it is freed with it.
//!
//! case: lazy_state_written E0616
//! case: task_outlives_handle E0515
//! case: walk_guards_forgotten E0603
//! case: area_taken_away E0603
#![no_std]

use lazymmu::sched::{self, Task};

pub fn depth() -> u8 {
    #[cfg(case = "lazy_state_written")]
    sched::current().lazy_mmu.counts.set(Default::default());
    sched::current().lazy_state().enable_count
}

/// What the test harness does between tests, after a test's code was
/// abandoned, is not for anyone else: let go of walk guards still held,
/// take away an area whatever its owner.
pub fn harness_only(area: lazymmu::mm::VirtAddr) {
    #[cfg(case = "walk_guards_forgotten")]
    let _ = lazymmu::mm::pgtable::recover_abandoned_walks();
    #[cfg(case = "area_taken_away")]
    let _ = lazymmu::mm::vmalloc::release_leaked_area(area);
    let _ = area;
}

#[cfg(case = "task_outlives_handle")]
pub fn tcb() -> &'static Task {
    let handle = sched::spawn("t", || {}).unwrap();
    handle.task()
}

#[cfg(not(case = "task_outlives_handle"))]
pub fn name() -> &'static str {
    let handle = sched::spawn("t", || {}).unwrap();
    let name = handle.task().name;
    let _: &Task = handle.task();
    name
}
