//! Every ordering instruction the memory-management code issues: DSB, ISB,
//! TLBI and AT, plus the TTBR writes. Keeping them in one module means each
//! one can be counted and traced, so a test can say exactly how
//! many barriers an operation cost.
//!
//! With `trace` on, each one also prints a line as it is issued.
//!
//! Counters are global and atomic, so a count taken around an operation
//! includes what an interrupt handler issued meanwhile; tests that need
//! exact numbers keep interrupts out of the way, or count them on purpose.

use aarch64_cpu::registers::*;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::observe::{self, Issued};
use super::sysreg;

/// One counter per kind of instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BarrierCounts {
    /// `dsb ishst`: earlier stores (page-table writes) reach the walker.
    pub dsb_ishst: u64,
    /// `dsb ish`: all earlier accesses and TLB maintenance are complete.
    pub dsb_ish: u64,
    /// `dmb ishst`: orders earlier stores before later ones (a new table's
    /// zeroing before the descriptor that links it in).
    pub dmb_ishst: u64,
    /// `isb`: later instructions are fetched and translated afresh.
    pub isb: u64,
    /// `tlbi vaale1is`: one page, all ASIDs, inner shareable.
    pub tlbi_page: u64,
    /// `tlbi rvaale1is`: a range of pages (FEAT_TLBIRANGE).
    pub tlbi_range: u64,
    /// `tlbi vmalle1is`: the whole EL1&0 TLB.
    pub tlbi_all: u64,
    /// Of `tlbi_page` and `tlbi_range`, those at every level of the walk
    /// (`vaae1is`, `rvaae1is`), issued when page-table pages were unlinked.
    pub tlbi_walks: u64,
    /// `at s1e1r` / `at s1e1w`: a hardware table walk.
    pub at: u64,
}

impl BarrierCounts {
    pub const ZERO: BarrierCounts = BarrierCounts {
        dsb_ishst: 0,
        dsb_ish: 0,
        dmb_ishst: 0,
        isb: 0,
        tlbi_page: 0,
        tlbi_range: 0,
        tlbi_all: 0,
        tlbi_walks: 0,
        at: 0,
    };

    /// DSBs of both kinds.
    pub fn dsb(&self) -> u64 {
        self.dsb_ishst + self.dsb_ish
    }
    /// TLBI instructions of every kind.
    pub fn tlbi(&self) -> u64 {
        self.tlbi_page + self.tlbi_range + self.tlbi_all
    }
}

impl core::ops::Add for BarrierCounts {
    type Output = BarrierCounts;
    fn add(self, other: BarrierCounts) -> BarrierCounts {
        BarrierCounts {
            dsb_ishst: self.dsb_ishst + other.dsb_ishst,
            dsb_ish: self.dsb_ish + other.dsb_ish,
            dmb_ishst: self.dmb_ishst + other.dmb_ishst,
            isb: self.isb + other.isb,
            tlbi_page: self.tlbi_page + other.tlbi_page,
            tlbi_range: self.tlbi_range + other.tlbi_range,
            tlbi_all: self.tlbi_all + other.tlbi_all,
            tlbi_walks: self.tlbi_walks + other.tlbi_walks,
            at: self.at + other.at,
        }
    }
}

impl core::ops::Sub for BarrierCounts {
    type Output = BarrierCounts;
    fn sub(self, earlier: BarrierCounts) -> BarrierCounts {
        BarrierCounts {
            dsb_ishst: self.dsb_ishst - earlier.dsb_ishst,
            dsb_ish: self.dsb_ish - earlier.dsb_ish,
            dmb_ishst: self.dmb_ishst - earlier.dmb_ishst,
            isb: self.isb - earlier.isb,
            tlbi_page: self.tlbi_page - earlier.tlbi_page,
            tlbi_range: self.tlbi_range - earlier.tlbi_range,
            tlbi_all: self.tlbi_all - earlier.tlbi_all,
            tlbi_walks: self.tlbi_walks - earlier.tlbi_walks,
            at: self.at - earlier.at,
        }
    }
}

static DSB_ISHST: AtomicU64 = AtomicU64::new(0);
static DSB_ISH: AtomicU64 = AtomicU64::new(0);
static DMB_ISHST: AtomicU64 = AtomicU64::new(0);
static ISB: AtomicU64 = AtomicU64::new(0);
static TLBI_PAGE: AtomicU64 = AtomicU64::new(0);
static TLBI_RANGE: AtomicU64 = AtomicU64::new(0);
static TLBI_ALL: AtomicU64 = AtomicU64::new(0);
static TLBI_WALKS: AtomicU64 = AtomicU64::new(0);
static AT: AtomicU64 = AtomicU64::new(0);

/// The counts so far; subtract two snapshots to cost an operation.
pub fn counts() -> BarrierCounts {
    BarrierCounts {
        dsb_ishst: DSB_ISHST.load(Relaxed),
        dsb_ish: DSB_ISH.load(Relaxed),
        dmb_ishst: DMB_ISHST.load(Relaxed),
        isb: ISB.load(Relaxed),
        tlbi_page: TLBI_PAGE.load(Relaxed),
        tlbi_range: TLBI_RANGE.load(Relaxed),
        tlbi_all: TLBI_ALL.load(Relaxed),
        tlbi_walks: TLBI_WALKS.load(Relaxed),
        at: AT.load(Relaxed),
    }
}

/// What `f` issued (plus whatever interrupt handlers issued meanwhile).
pub fn cost(f: impl FnOnce()) -> BarrierCounts {
    let before = counts();
    f();
    counts() - before
}

/// What to call with each instruction's name once it is issued: the
/// upper layer's trace, installed while it is on (this layer calls no
/// other). 0: nothing.
static ON_ISSUE: AtomicUsize = AtomicUsize::new(0);

/// Calls `hook` with the name of every barrier and TLBI issued from now
/// on, or nobody (None).
pub fn set_issue_hook(hook: Option<fn(&'static str)>) {
    ON_ISSUE.store(hook.map_or(0, |f| f as usize), Relaxed);
}

fn count(counter: &AtomicU64, name: &'static str) {
    counter.fetch_add(1, Relaxed);
    let hook = ON_ISSUE.load(Relaxed);
    if hook != 0 {
        // SAFETY: a value stored by set_issue_hook, from a `fn(&'static str)`.
        let hook = unsafe { core::mem::transmute::<usize, fn(&'static str)>(hook) };
        hook(name);
    }
}

/// Tells the observer (if one is installed) what was just issued.
#[inline]
fn report(what: Issued) {
    if let Some(observer) = observe::observer() {
        observer.issued(what);
    }
}

/// Makes earlier stores, page-table writes included, visible to the table
/// walker (and other CPUs) before anything after it.
#[inline]
pub fn dsb_ishst() {
    count(&DSB_ISHST, "dsb ishst");
    raw::dsb_ishst();
    report(Issued::DsbIshst);
}

/// Waits until all earlier memory accesses and TLB maintenance are complete.
#[inline]
pub fn dsb_ish() {
    count(&DSB_ISH, "dsb ish");
    raw::dsb_ish();
    report(Issued::DsbIsh);
}

/// Orders earlier stores before later stores, as every observer sees them.
#[inline]
pub fn dmb_ishst() {
    count(&DMB_ISHST, "dmb ishst");
    // SAFETY: a barrier has no other effect.
    unsafe { asm!("dmb ishst", options(nostack, preserves_flags)) };
    report(Issued::DmbIshst);
}

/// Discards instructions already fetched (and translations they started),
/// so what follows sees the effect of everything before it.
#[inline]
pub fn isb() {
    count(&ISB, "isb");
    raw::isb();
    report(Issued::Isb);
}

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

/// Asks the MMU to translate `va` for an EL1 read (`write` = false) or
/// write, walking the tables in memory, and returns PAR_EL1.
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

/// Uncounted forms, for code that runs before the counters may be touched
/// (MMU off: atomics on Device memory are not allowed).
pub mod raw {
    use core::arch::asm;

    #[inline(always)]
    pub fn dsb_ishst() {
        // SAFETY: a barrier has no other effect.
        unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
    }
    #[inline(always)]
    pub fn dsb_ish() {
        // SAFETY: a barrier has no other effect.
        unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
    }
    #[inline(always)]
    pub fn isb() {
        // SAFETY: a barrier has no other effect.
        unsafe { asm!("isb", options(nostack, preserves_flags)) };
    }
    /// This CPU only: used before the MMU is on, when nothing else runs.
    #[inline(always)]
    pub fn tlbi_vmalle1() {
        // SAFETY: TLB maintenance only drops cached translations.
        unsafe { asm!("tlbi vmalle1", options(nostack, preserves_flags)) };
    }
}
