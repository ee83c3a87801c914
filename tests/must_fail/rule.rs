//! Must FAIL: one test that keeps the page-table rules and one that breaks
//! one (a live page replaced by another frame, with no break-before-make)
//! and returns normally. Proves the harness fails a test the page-table
//! rules checker caught, though nothing in it panicked.

#![no_std]
#![no_main]

use lazymmu::mm::{self, Attributes, Descriptor, Level, PAGE_SIZE, frame_alloc, pgtable, vfree, vmalloc};
use lazymmu::{Testable, run_tests};

fn keeps_the_rules() {
    vfree(vmalloc(PAGE_SIZE).unwrap()).unwrap();
}

fn breaks_a_rule_on_purpose() {
    let va = vmalloc(PAGE_SIZE).unwrap();
    let walk = pgtable::walking();
    let entry = walk.walk(va);
    let other = frame_alloc::alloc_frame().unwrap();
    // SAFETY: the test's own area and a fresh frame; replacing a live page
    // without break-before-make is the rule it breaks, on purpose.
    unsafe { pgtable::write_entry(&entry, Descriptor::leaf(Level::L3, other, Attributes::KERNEL_RW)) };
    drop(walk);
    mm::flush_tlb_kernel_range(va, va.add(PAGE_SIZE));
    frame_alloc::free_frame(other).unwrap_or(());
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    run_tests(&[&keeps_the_rules as &dyn Testable, &breaks_a_rule_on_purpose])
}
