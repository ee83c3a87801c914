//! Must FAIL: a kernel that never exits. The runner's wall-clock limit must
//! kill QEMU and fail the run (checked by tests/host/harness_selfcheck.sh).

#![no_std]
#![no_main]

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    lazymmu::println!("hanging on purpose");
    loop {
        core::hint::spin_loop();
    }
}
