//! The semihosting trap: `hlt #0xf000` with the operation in w0 and a
//! pointer to its parameter block in x1; the result comes back in x0.

use core::arch::asm;

/// # Safety
/// `param` must point to the block `op` expects (or be its plain value),
/// and any buffers it names must be valid for the host to read or write.
pub unsafe fn call(op: u32, param: u64) -> u64 {
    let ret: u64;
    // SAFETY: the caller vouches for the parameter block; QEMU handles the trap.
    unsafe { asm!("hlt #0xf000", inout("x0") op as u64 => ret, in("x1") param, options(nostack)) };
    ret
}
