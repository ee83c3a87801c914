//! Touching memory and expecting that it may fault: one read, write or
//! instruction fetch, with the fault (if any) returned as a value. Tests
//! use these to check what the MMU really allows, next to what `at s1e1r`
//! reports.

use core::ptr::{read_volatile, write_volatile};

use super::addr::VirtAddr;
use crate::exception::{Caught, Syndrome, catch};

fn fault_of<R>(result: Result<R, Caught>) -> Result<R, Syndrome> {
    result.map_err(|caught| match caught {
        Caught::Fault(syndrome) => syndrome,
        Caught::Panic(message) => panic!("a probe cannot panic, but: {}", message.as_str()),
    })
}

/// Reads the u64 at `va`.
pub fn read(va: VirtAddr) -> Result<u64, Syndrome> {
    // SAFETY: a read may fault, which `catch` turns into a value; the
    // caller chose the address and accepts whatever it reads.
    fault_of(catch(|| unsafe { read_volatile(va.as_ptr::<u64>()) }))
}

/// Writes `value` to the u64 at `va`.
///
/// # Safety
/// If the write succeeds it really happens: `va` must be memory the caller
/// may overwrite with `value` (for example the value it already holds).
pub unsafe fn write(va: VirtAddr, value: u64) -> Result<(), Syndrome> {
    // SAFETY: the caller vouches for the write; a fault becomes a value.
    fault_of(catch(|| unsafe { write_volatile(va.as_mut_ptr::<u64>(), value) }))
}

/// Branches to `va` as a function, expecting to find a `ret` there.
///
/// # Safety
/// If fetching succeeds, the code at `va` runs: it must be a `ret`.
pub unsafe fn exec(va: VirtAddr) -> Result<(), Syndrome> {
    // SAFETY: the caller vouches that `va` holds a `ret` if it is executable.
    fault_of(catch(|| unsafe {
        let f: extern "C" fn() = core::mem::transmute(va.as_u64());
        f()
    }))
}

/// The encoding of `ret`, for pages that [`exec`] branches to.
pub const RET_INSTRUCTION: u32 = 0xd65f_03c0;
