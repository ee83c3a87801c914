//! A window onto the two things the architecture's page-table rules are
//! about: every descriptor store (`lazy_mmu::store`, the one store path)
//! and every ordering instruction (`barrier`, the one barrier module).
//!
//! An upper layer installs an [`Observer`] once (the page-table rules
//! checker, `mm::pgtable_check`); this layer only reports what it did and
//! never calls up by name. With nothing installed, each report is one
//! atomic load and a branch.

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use spin::Once;

/// An ordering instruction as issued, with what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issued {
    DsbIshst,
    DsbIsh,
    DmbIshst,
    Isb,
    /// A TLBI by address: every page of [start, start + pages * 4 KiB).
    /// `walks`: it also drops cached table walks (`vaae1is`, `rvaae1is`),
    /// not only last-level entries (`vaale1is`, `rvaale1is`).
    Tlbi {
        start: u64,
        pages: u64,
        walks: bool,
    },
    /// `tlbi vmalle1is`: everything, walks included.
    TlbiAll,
}

/// What an observer is told, on the CPU that did it, in program order.
pub trait Observer: Sync {
    /// `what` was just issued.
    fn issued(&self, what: Issued);
    /// The descriptor at `slot` is to become `new`: the observer calls
    /// `write` (the store itself) once, at the moment it chooses, so that
    /// the store and what it makes of it are one step as the observer's
    /// other callers, on other CPUs, see it (another CPU may read the new
    /// entry the instant it is in memory).
    fn store(&self, slot: *mut u64, new: u64, write: &dyn Fn());
    /// A store to `slot` was queued (`true`) or, later, taken off the
    /// queue to be made (`false`) under a backend that defers stores.
    fn queued(&self, slot: *mut u64, queued: bool);
}

static OBSERVER: Once<&'static dyn Observer> = Once::new();
/// The observer wants to be told: false until one is installed, and once
/// it stops listening (the checker turned off to measure), so that the
/// store path pays one load and a branch, not a call that returns at once.
static LISTENING: AtomicBool = AtomicBool::new(false);

/// Installs the observer and starts telling it; the first one stays.
pub fn install(observer: &'static dyn Observer) {
    OBSERVER.call_once(|| observer);
    LISTENING.store(true, Relaxed);
}

/// Stops telling the observer anything, for the rest of the boot.
pub fn stop_listening() {
    LISTENING.store(false, Relaxed);
}

/// Is an observer listening?
#[inline(always)]
pub fn listening() -> bool {
    LISTENING.load(Relaxed)
}

/// The installed observer, if any is listening.
#[inline]
pub fn observer() -> Option<&'static dyn Observer> {
    if !LISTENING.load(Relaxed) {
        return None;
    }
    OBSERVER.get().copied()
}
