//! The TLB maintenance instructions the kernel issues, each counted and
//! told to the observer as it goes (see `barrier`): one page, a range
//! (FEAT_TLBIRANGE), or everything, with or without the cached walks.
//! Which of them a change needs is `mm::tlb_policy`'s decision.

use core::arch::asm;
use core::sync::atomic::Ordering::Relaxed;

use super::barrier::{TLBI_ALL, TLBI_PAGE, TLBI_RANGE, TLBI_WALKS, count, report};
use super::observe::Issued;
use super::sysreg;

/// Invalidates one page's last-level translation, for all ASIDs, on every
/// CPU in the inner-shareable domain. Cached table walks stay: enough when
/// only leaf entries changed.
#[inline]
pub fn tlbi_vaale1is(va: u64) {
    count(&TLBI_PAGE, "tlbi vaale1is");
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe { asm!("tlbi vaale1is, {}", in(reg) sysreg::tlbi_va_operand(va), options(nostack, preserves_flags)) };
    report(Issued::Tlbi { start: va, pages: 1, walks: false });
}

/// [`tlbi_vaale1is`] on this CPU only (no `is`): the planted
/// `local-tlb-flush` (debug builds only). Uncounted and untold: the
/// observers know broadcast maintenance only.
#[cfg(debug_assertions)]
#[inline]
pub fn tlbi_vaale1_this_cpu(va: u64) {
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe { asm!("tlbi vaale1, {}", in(reg) sysreg::tlbi_va_operand(va), options(nostack, preserves_flags)) };
}

/// Invalidates a range of pages in one instruction (FEAT_TLBIRANGE).
/// `operand` is built by [`sysreg::tlbi_range_operand`]: base, scale and count.
#[inline]
pub fn tlbi_rvaale1is(operand: u64) {
    count(&TLBI_RANGE, "tlbi rvaale1is");
    // `tlbi rvaale1is, x` written as its system-instruction encoding
    // (op1=0, CRn=8, CRm=2, op2=7) so no assembler extension is needed.
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe { asm!("sys #0, c8, c2, #7, {}", in(reg) operand, options(nostack, preserves_flags)) };
    let (start, pages) = sysreg::tlbi_range_of(operand);
    report(Issued::Tlbi { start, pages, walks: false });
}

/// Like [`tlbi_vaale1is`], but also drops cached walks through table
/// entries for `va`: needed once a page-table page under it was unlinked.
#[inline]
pub fn tlbi_vaae1is(va: u64) {
    TLBI_WALKS.fetch_add(1, Relaxed);
    count(&TLBI_PAGE, "tlbi vaae1is");
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe { asm!("tlbi vaae1is, {}", in(reg) sysreg::tlbi_va_operand(va), options(nostack, preserves_flags)) };
    report(Issued::Tlbi { start: va, pages: 1, walks: true });
}

/// Like [`tlbi_rvaale1is`], at every level of the walk.
#[inline]
pub fn tlbi_rvaae1is(operand: u64) {
    TLBI_WALKS.fetch_add(1, Relaxed);
    count(&TLBI_RANGE, "tlbi rvaae1is");
    // `tlbi rvaae1is, x`: op1=0, CRn=8, CRm=2, op2=3.
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe { asm!("sys #0, c8, c2, #3, {}", in(reg) operand, options(nostack, preserves_flags)) };
    let (start, pages) = sysreg::tlbi_range_of(operand);
    report(Issued::Tlbi { start, pages, walks: true });
}

/// Invalidates every EL1&0 translation on every CPU in the inner-shareable domain.
#[inline]
pub fn tlbi_vmalle1is() {
    count(&TLBI_ALL, "tlbi vmalle1is");
    // SAFETY: TLB maintenance only drops cached translations.
    unsafe { asm!("tlbi vmalle1is", options(nostack, preserves_flags)) };
    report(Issued::TlbiAll);
}
