//! The barriers the memory-management code issues (DSB, DMB, ISB), and the
//! counters of every barrier, TLBI (`tlbi.rs`) and AT (`mmu.rs`): each one
//! is counted and told to the observer where it is issued, so a test can
//! say exactly how many an operation cost.
//!
//! With the trace on, each one also prints a line as it is issued, through
//! the hook the trace installs ([`set_issue_hook`]).
//!
//! Counters are global and atomic, so a count taken around an operation
//! includes what an interrupt handler issued meanwhile; tests that need
//! exact numbers keep interrupts out of the way, or count them on purpose.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::observe::{self, Issued};

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
pub(super) static ISB: AtomicU64 = AtomicU64::new(0);
pub(super) static TLBI_PAGE: AtomicU64 = AtomicU64::new(0);
pub(super) static TLBI_RANGE: AtomicU64 = AtomicU64::new(0);
pub(super) static TLBI_ALL: AtomicU64 = AtomicU64::new(0);
pub(super) static TLBI_WALKS: AtomicU64 = AtomicU64::new(0);
pub(super) static AT: AtomicU64 = AtomicU64::new(0);

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

pub(super) fn count(counter: &AtomicU64, name: &'static str) {
    counter.fetch_add(1, Relaxed);
    let hook = ON_ISSUE.load(Relaxed);
    if hook != 0 {
        // SAFETY: a value stored by set_issue_hook, from a `fn(&'static str)`.
        let hook = unsafe { core::mem::transmute::<usize, fn(&'static str)>(hook) };
        hook(name);
    }
}

/// Tells the observers (if any listen) what was just issued.
#[inline]
pub(super) fn report(what: Issued) {
    observe::tell(|observer| observer.issued(what));
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
    raw::dmb_ishst();
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

/// The host property tests (tests/host/props) compile this file: there
/// each instruction is recorded by the host, not issued.
#[cfg(not(target_arch = "aarch64"))]
pub use crate::host::barrier_raw as raw;

/// Uncounted forms, for code that runs before the counters may be touched
/// (MMU off: atomics on Device memory are not allowed).
#[cfg(target_arch = "aarch64")]
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
    #[inline(always)]
    pub fn dmb_ishst() {
        // SAFETY: a barrier has no other effect.
        unsafe { asm!("dmb ishst", options(nostack, preserves_flags)) };
    }
    /// Full system: orders the MMU-off stores before the cache
    /// invalidation of their lines (Linux: "needed before dc ivac with MMU
    /// off", head.S).
    #[inline(always)]
    pub fn dmb_sy() {
        // SAFETY: a barrier has no other effect.
        unsafe { asm!("dmb sy", options(nostack, preserves_flags)) };
    }
    #[inline(always)]
    pub fn dsb_sy() {
        // SAFETY: a barrier has no other effect.
        unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    }
    /// This CPU only: used before the MMU is on, when nothing else runs.
    #[inline(always)]
    pub fn tlbi_vmalle1() {
        // SAFETY: TLB maintenance only drops cached translations.
        unsafe { asm!("tlbi vmalle1", options(nostack, preserves_flags)) };
    }
}
