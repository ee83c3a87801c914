//! An `EntryRef` cannot cross to another task (or CPU): it is not `Send`,
//! so neither a spawned task's closure nor a static (shared by every
//! task) can hold one. What crosses is the address; the other task walks there.
//!
//! case: moved_into_a_task E0277
//! case: kept_in_a_static E0277
#![no_std]

use lazymmu::mm::layout::VMALLOC_START;
use lazymmu::mm::pgtable::{self, EntryRef};
use lazymmu::sched;

pub fn hand_over() {
    let walk = pgtable::walking();
    let entry = walk.walk(VMALLOC_START);
    #[cfg(not(case = "moved_into_a_task"))]
    let task = sched::spawn("reader", move || {
        let walk = pgtable::walking();
        let _ = walk.walk(VMALLOC_START).read();
    });
    #[cfg(case = "moved_into_a_task")]
    let task = sched::spawn("reader", move || {
        let _ = entry.read();
    });
    let _ = (task, entry.level);
}

#[cfg(case = "kept_in_a_static")]
pub static SLOT: Option<EntryRef<'static>> = None;

#[cfg(not(case = "kept_in_a_static"))]
pub static SLOT: Option<lazymmu::mm::addr::VirtAddr> = None;

pub fn unused(_: &EntryRef<'_>) {}
