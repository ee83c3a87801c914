//! Must FAIL: one passing and one failing test. Proves the harness cannot
//! report green when an assertion fails (tests/host/harness_selfcheck.sh
//! checks the exit code and the summary line).

#![no_std]
#![no_main]

use lazymmu::{Testable, run_tests};

/// Two, as far as the compiler (and clippy) can tell only at run time.
fn two() -> u64 {
    core::hint::black_box(2)
}

fn passes() {
    assert_eq!(two(), 2);
}

fn fails_on_purpose() {
    assert_eq!(two(), 3, "a deliberately failing assertion");
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    run_tests(&[&passes as &dyn Testable, &fails_on_purpose])
}
