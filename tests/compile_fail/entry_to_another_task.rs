//! An `EntryRef` cannot cross to another task (or CPU): it is not `Send`,
//! so neither a spawned task's closure nor a static (shared by every
//! task) can hold one. What crosses is the address; the other task walks there.
//!
//! case: moved_into_a_task E0277
//! case: kept_in_a_static E0277
//! case: walk_moved_into_a_task E0277
//! case: exclusive_moved_into_a_task E0277
#![no_std]

use lazymmu::mm::{VMALLOC_START, pgtable::{self, EntryRef}};
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

/// The guard itself stays with its task too: its end makes that task's
/// queued stores, and `Exclusive` masked this CPU's interrupts.
pub fn hand_over_the_guard() {
    let walk = pgtable::walking();
    #[cfg(case = "walk_moved_into_a_task")]
    let _ = sched::spawn("dropper", move || drop(walk));
    #[cfg(not(case = "walk_moved_into_a_task"))]
    drop(walk);
    let exclusive = pgtable::exclusive();
    #[cfg(case = "exclusive_moved_into_a_task")]
    let _ = sched::spawn("dropper", move || drop(exclusive));
    #[cfg(not(case = "exclusive_moved_into_a_task"))]
    drop(exclusive);
}

#[cfg(case = "kept_in_a_static")]
pub static SLOT: Option<EntryRef<'static>> = None;

#[cfg(not(case = "kept_in_a_static"))]
pub static SLOT: Option<lazymmu::mm::VirtAddr> = None;

pub fn unused(_: &EntryRef<'_>) {}
