//! Must FAIL: a test that panics while it holds `pgtable::Exclusive`. The
//! table lock cannot be given back safely (tables may be half unlinked),
//! so the kernel stops with a report, even inside the harness's `catch`,
//! instead of failing the test and then hanging at the next walk.

#![no_std]
#![no_main]

use lazymmu::mm::pgtable;
use lazymmu::{Testable, run_tests};

fn panics_holding_exclusive() {
    let _exclusive = pgtable::exclusive();
    panic!("a deliberate panic under Exclusive");
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    run_tests(&[&panics_holding_exclusive as &dyn Testable])
}
