//! An `EntryRef` borrows the walk that found it: it cannot be used after
//! the walk guard is gone (a reclaim may have freed its table by then), nor
//! returned from the function that owns the guard.
//!
//! case: used_after_guard E0505
//! case: returned E0515
#![no_std]

use lazymmu::mm::{Level, VMALLOC_START, pgtable::{self, EntryRef}};

pub fn level_of_a_slot() -> Level {
    let walk = pgtable::walking();
    let entry = walk.walk(VMALLOC_START);
    #[cfg(case = "used_after_guard")]
    drop(walk);
    entry.level
}

#[cfg(case = "returned")]
pub fn keep_a_slot() -> EntryRef<'static> {
    let walk = pgtable::walking();
    walk.walk(VMALLOC_START)
}

#[cfg(not(case = "returned"))]
pub fn read_a_slot(entry: &EntryRef<'_>) -> bool {
    entry.read().is_valid()
}
