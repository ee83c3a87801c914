//! Must FAIL: a walk that waits forever for the tables' lock (an
//! `Exclusive` never let go, with the interrupts it masked still masked:
//! no watchdog can stop the test). Within `sync::LOCK_WAIT_REPORT_S` the
//! wait says which lock it waits for, how many hold it and where it waits
//! (this file's line), so that the runner's kill of the silent QEMU comes
//! with a diagnosis.

#![no_std]
#![no_main]

use lazymmu::mm::pgtable;
use lazymmu::{Testable, run_tests};

fn a_walk_waits_for_an_exclusive_never_let_go() {
    core::mem::forget(pgtable::exclusive());
    let _walk = pgtable::walking();
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    run_tests(&[&a_walk_waits_for_an_exclusive_never_let_go as &dyn Testable])
}
