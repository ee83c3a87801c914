//! The PL011 UART of QEMU `virt`, transmit side only: enough for a console.
//! QEMU's model needs no baud-rate set-up.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

const DR: u64 = 0x00;
const FR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// Physical address of the UART on QEMU `virt`.
pub const PHYS_BASE: u64 = 0x0900_0000;

/// Where the UART's registers are mapped now: its physical address while
/// the boot tables identity-map it, its MMIO address afterwards.
static BASE: AtomicU64 = AtomicU64::new(PHYS_BASE);

pub fn set_base(va: u64) {
    BASE.store(va, Relaxed);
}

pub fn write_byte(byte: u8) {
    let base = BASE.load(Relaxed);
    // SAFETY: BASE always holds a mapping of the UART's register page.
    unsafe {
        while read_volatile((base + FR) as *const u32) & FR_TXFF != 0 {}
        write_volatile((base + DR) as *mut u32, byte as u32);
    }
}
