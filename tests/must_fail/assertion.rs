//! Must FAIL: one passing and one failing test. Proves the harness cannot
//! report green when an assertion fails (tests/host/harness_selfcheck.sh
//! checks the exit code and the summary line).

#![no_std]
#![no_main]

use lazymmu::testing::{Testable, run_tests};

fn passes() {
    assert_eq!(1 + 1, 2);
}

fn fails_on_purpose() {
    assert_eq!(1 + 1, 3, "a deliberately failing assertion");
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    run_tests(&[&passes as &dyn Testable, &fails_on_purpose])
}
