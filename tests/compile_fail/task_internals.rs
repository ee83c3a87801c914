//! A task's lazy MMU state is the lazy MMU layer's: other code reads it
//! (`Task::lazy_state`) but cannot change it. A spawned task's TCB is
//! borrowed from its `JoinHandle`, not `'static`: it is freed with it.
//!
//! case: lazy_state_written E0616
//! case: task_outlives_handle E0515
#![no_std]

use lazymmu::sched;
use lazymmu::task::{self, Task};

pub fn depth() -> u8 {
    #[cfg(case = "lazy_state_written")]
    task::current().lazy_mmu.enable_count.set(0);
    task::current().lazy_state().0
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
