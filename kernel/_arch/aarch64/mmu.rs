//! The MMU's controls and its own walker: `at` (a translation asked of
//! the hardware), the TTBR1 switch, TTBR0 walks on and off (TCR_EL1.EPD0),
//! and the cache clean a CPU with its MMU off needs.

use aarch64_cpu::registers::*;
use core::arch::asm;
use core::sync::atomic::Ordering::Relaxed;

use super::barrier::{AT, ISB, dsb_ish, isb, report};
use super::observe::Issued;
use super::tlbi::tlbi_vmalle1is;

/// Asks the MMU to translate `va` for an EL1 read (`write` = false) or
/// write, and returns PAR_EL1. QEMU walks the tables in memory; a real CPU
/// may answer from its TLB, as for the access itself.
pub fn at_s1e1(va: u64, write: bool) -> u64 {
    AT.fetch_add(1, Relaxed);
    ISB.fetch_add(1, Relaxed);
    // SAFETY: AT only writes PAR_EL1; the ISB orders it before the read.
    unsafe {
        if write {
            asm!("at s1e1w, {}", "isb", in(reg) va, options(nostack, preserves_flags));
        } else {
            asm!("at s1e1r, {}", "isb", in(reg) va, options(nostack, preserves_flags));
        }
    }
    report(Issued::Isb);
    PAR_EL1.get()
}

/// [`at_s1e1`] for the fault path (`mm::fault`), not counted among the
/// barriers: a test that counts a section's barriers around a fault it
/// expects counts the section's, not the fault handler's re-check. The
/// fault path counts its checks itself. PAR_EL1 is read before an
/// interrupt could overwrite it: the caller has interrupts masked.
pub fn at_s1e1_in_fault(va: u64, write: bool) -> u64 {
    // SAFETY: AT only writes PAR_EL1; the ISB orders it before the read.
    unsafe {
        if write {
            asm!("at s1e1w, {}", "isb", in(reg) va, options(nostack, preserves_flags));
        } else {
            asm!("at s1e1r, {}", "isb", in(reg) va, options(nostack, preserves_flags));
        }
    }
    PAR_EL1.get()
}

core::arch::global_asm!(
    // Replaces TTBR1 while running from the identity map (TTBR0), so no
    // instruction fetch or stack access goes through TTBR1 meanwhile: first
    // an empty table (x1), so no walk can mix old and new entries, then the
    // TLB is emptied, then the new table (x0). Leaf function: no stack.
    ".global __idmap_replace_ttbr1",
    "__idmap_replace_ttbr1:",
    "    msr ttbr1_el1, x1",
    "    isb",
    "    tlbi vmalle1",
    "    dsb nsh",
    "    isb",
    "    msr ttbr1_el1, x0",
    "    isb",
    "    ret",
);

unsafe extern "C" {
    fn __idmap_replace_ttbr1(new_root: u64, empty_root: u64);
}

/// Switches the kernel half to the table at `new_root`, calling the switch
/// code at its identity-mapped address `kimage_voffset` below its link
/// address. `empty_root` is a zeroed table.
///
/// # Safety
/// TTBR0 must identity-map the image's text, and the new table must map
/// everything the caller will touch after the switch (its stack, its code).
pub unsafe fn replace_ttbr1(new_root: u64, empty_root: u64, kimage_voffset: u64) {
    let link_address = __idmap_replace_ttbr1 as *const () as u64;
    // SAFETY: the caller guarantees the identity mapping of the function.
    unsafe {
        let at_identity: unsafe extern "C" fn(u64, u64) = core::mem::transmute(link_address - kimage_voffset);
        at_identity(new_root, empty_root);
    }
}

/// Cleans the cache line holding `va` to the point of coherency, so that an
/// observer that bypasses the caches (a CPU with its MMU off) reads it.
pub fn clean_dcache_to_poc(va: u64) {
    // SAFETY: a cache clean only writes back data already there.
    unsafe { asm!("dc cvac, {}", in(reg) va, options(nostack, preserves_flags)) };
    dsb_ish();
}

/// Lets the MMU walk the tables in TTBR0 again (TCR_EL1.EPD0), on this
/// CPU: for the bench's peer, which loads its own tables there.
pub fn enable_ttbr0_walks() {
    TCR_EL1.modify(TCR_EL1::EPD0::EnableTTBR0Walks);
    isb();
}

/// Stops all walks through TTBR0 (TCR_EL1.EPD0), so any low address faults.
pub fn disable_ttbr0_walks() {
    TCR_EL1.modify(TCR_EL1::EPD0::DisableTTBR0Walks);
    isb();
    tlbi_vmalle1is();
    dsb_ish();
    isb();
}
