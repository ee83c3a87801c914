//! Must FAIL: a test that never finishes. The harness's per-test time limit
//! (`test_time_limit=SECONDS`) must stop the run and name the test, before
//! the runner's limit for the whole image kills QEMU without a word.

#![no_std]
#![no_main]

use lazymmu::{Testable, run_tests};

fn passes() {}

fn never_finishes() {
    loop {
        core::hint::spin_loop();
    }
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    run_tests(&[&passes as &dyn Testable, &never_finishes])
}
