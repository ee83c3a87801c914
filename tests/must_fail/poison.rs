//! Must FAIL, and only once: a test that fails half way through a mapping
//! (inside an `apply_to_page_range` callback, in a lazy section, holding
//! the walk guard, under a backend it selected, with an area and frames it
//! never gives back), then tests that must still pass: the harness puts
//! back what the failed test left, so it cannot poison the ones after it.

#![no_std]
#![no_main]

use core::convert::Infallible;

use lazymmu::mm::{
    self, Attributes, Descriptor, Level, PAGE_SIZE, apply_to_page_range, frame_alloc, get_vm_area,
    lazy_mmu::{Backend, LazySnapshot, selected_backend, use_backend},
    pgtable, vfree, vmalloc,
};
use lazymmu::sched;
use lazymmu::{Testable, run_tests};

fn fails_half_way_through_a_mapping() {
    let _deferred = use_backend(Backend::DeferredWrites);
    let leaked = vmalloc(3 * PAGE_SIZE).unwrap();
    let area = get_vm_area(4 * PAGE_SIZE, PAGE_SIZE).unwrap();
    let mut mapped = 0;
    apply_to_page_range(area, 4 * PAGE_SIZE, |entry| {
        let frame = frame_alloc::alloc_frame().unwrap();
        // SAFETY: a fresh frame in the test's own area.
        unsafe { pgtable::write_entry(entry, Descriptor::leaf(Level::L3, frame, Attributes::KERNEL_RW)) };
        mapped += 1;
        assert!(mapped < 3, "a deliberate failure in the middle of a walk (leaking {leaked})");
        Ok::<(), Infallible>(())
    })
    .unwrap();
}

fn the_next_test_starts_clean() {
    assert_eq!(selected_backend(), Backend::Batched, "the default backend");
    assert_eq!(sched::current().lazy_state(), LazySnapshot::default(), "no section open, nothing pending or queued");
    assert_eq!(mm::area_count(), 0, "no area left behind");
    // Freeing takes the tables away: it waits for no walk guard forever.
    vfree(vmalloc(PAGE_SIZE).unwrap()).unwrap();
}

fn and_so_does_the_one_after() {
    the_next_test_starts_clean();
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    run_tests(&[
        &fails_half_way_through_a_mapping as &dyn Testable,
        &the_next_test_starts_clean,
        &and_so_does_the_one_after,
    ])
}
