//! Must FAIL: a panic outside any test. The kernel must print the message
//! with its location and exit with the panic exit code.

#![no_std]
#![no_main]

// The kernel (boot code, panic handler) comes with the library.
use lazymmu as _;

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    panic!("a deliberate panic, value {}", 42);
}
