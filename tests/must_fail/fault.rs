//! Must FAIL: an unexpected data abort outside any test. The kernel must
//! print a decoded report (class, fault status and level, FAR, ELR with its
//! symbol) and exit with the fault exit code.

#![no_std]
#![no_main]

/// A low address: TTBR0 walks are off after boot, so this faults at level 0.
const LOW_ADDRESS: u64 = 0x4000_0000;

#[inline(never)]
fn read_a_low_address() -> u64 {
    // SAFETY: deliberately not safe: the read must fault.
    unsafe { core::ptr::read_volatile(LOW_ADDRESS as *const u64) }
}

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    let value = read_a_low_address();
    lazymmu::println!("read {value:#x}: the fault did not happen");
    lazymmu::semihosting::exit(lazymmu::semihosting::ExitCode::Success)
}
