//! lazymmu: a small arm64 kernel that builds real stage-1 page tables and
//! implements Linux's lazy MMU mode, so that barrier batching can be seen,
//! counted and learned.
//!
//! Boot path: `_arch/aarch64/boot.s` (physical addresses, MMU off) ->
//! `_arch/aarch64/boot.rs` (boot tables, MMU on) -> `init.rs` (`__kernel_init`)
//! (upper half: device tree, frames, the kernel's own page tables, heap,
//! a guarded stack) -> `kernel_main`, which each kernel image provides: the
//! boot binary (`cmd/main.rs`, a package of its own), or a test image (`tests/*.rs`, or this library
//! built for its unit tests).

#![no_std]
#![cfg_attr(test, no_main)]
// Every unsafe operation sits in its own `unsafe` block with a `// SAFETY:`
// line, also inside an `unsafe fn`: Cargo.toml's `[workspace.lints]` deny
// the rest, for every crate and image (see STYLE: unsafe is small and local).
// A fault or panic caught by `exception::catch` carries its message in a
// fixed buffer, so that recovering from one needs no heap: the `Result`s
// and the enum that carry it are large on purpose.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]
#![feature(custom_test_frameworks)]
// Box::try_new: a node that cannot be allocated is an error, not a panic.
#![feature(allocator_api)]
#![test_runner(crate::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

// The library's public API is the modules marked `pub` here and the
// re-exports below: what the boot binary (kernel/cmd), the test images and
// the must-fail images use, and nothing else (tests/host/public_items.py
// counts it; an item only the kernel uses is `pub(crate)`, and a test of
// an internal is a unit test beside it). Each item has one path, Linux's
// name where the concept is Linux's: the memory manager's calls sit flat in
// `mm` (`mm::vmalloc`, `mm::set_memory_ro`, `mm::flush_tlb_kernel_range`,
// `mm::PAGE_SIZE`), with modules kept where they are namespaces of their
// own (`mm::frame_alloc`, `mm::lazy_mmu`, `mm::pgtable`, the debug
// features); tasks are `sched`'s, as in `<linux/sched.h>`. arm64 itself
// stays inside: the rest of the world reaches it through the small generic
// modules beside `arch` (`barrier`, `cpu`, `exception`, `timer`,
// `semihosting`).
#[path = "_arch/aarch64/mod.rs"]
mod arch;

pub mod barrier;
pub mod boot_args;
mod console;
pub mod cpu;
mod cpufeature;
mod drivers;
pub mod dtb;
pub mod exception;
mod fixed_text;
pub mod init;
mod irq;
pub mod mm;
mod panic;
mod percpu;
mod planted;
pub mod sched;
pub mod semihosting;
pub mod smp;
mod symbols;
mod sync;
mod task;
// The test harness: debug builds only, as what it resets (see planted.rs).
#[cfg(debug_assertions)]
mod testing;
pub mod timer;
pub mod trace;

/// What `print!` and `println!` call: they expand in the caller's crate, so
/// it must be public; it is no API of its own.
#[doc(hidden)]
pub use console::_print;

/// Lock waits that could not end, reported (`sync::SpinWait`): tests
/// count them.
pub use sync::{LOCK_WAIT_REPORT_S, lock_wait_reports};

/// The planted bugs (`planted.rs`): the fuzzer's `--break BUG` and the
/// checker's tests plant one to prove it is caught.
pub use planted::{Bug, DEBUG_ONLY as PLANTED_BUGS_DEBUG_ONLY, plant, with as with_planted};

/// The test harness (`testing.rs`), what test images use of it (debug
/// builds only): `#![test_runner(lazymmu::run_tests)]` and
/// [`test_image!`] make an image.
#[cfg(debug_assertions)]
pub use testing::{Scratch, Testable, expect_panic, linear_map_block, run_tests};

#[cfg(test)]
#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    test_main();
    unreachable!("the test runner exits QEMU");
}
