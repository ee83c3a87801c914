//! Accounting per backend: what the generic layer saw (entry writes,
//! sections, flushes, pauses, the deepest nesting) and every barrier, TLBI
//! and AT issued while that backend was selected. One boot can run the same
//! work under each backend and print the columns side by side.
//!
//! The store path pays no atomic for an entry written inside a section:
//! the task counts it (`LazyMmuState::unaccounted_writes`, `super`), and the count
//! joins the backend's here at every lazy MMU call and whenever the
//! statistics are read, so every figure stays exact: one atomic add, as
//! the writes outside sections are counted apart and `entry_writes` is
//! the sum of both, made when the statistics are read. A section's writes
//! belong to the backend of its section: the backend is only switched
//! when no task is in one.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::arch::barrier::{self, BarrierCounts};
use crate::arch::lazy_mmu::{Backend, selected};
use crate::irq::in_interrupt;
use crate::sync::IrqSpinLock;
use crate::task::Task;

const N: usize = Backend::ALL.len();

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyMmuStats {
    /// Entry stores asked for (valid or not).
    pub entry_writes: u64,
    /// Of those, the ones made inside an active section.
    pub lazy_writes: u64,
    /// Outermost sections entered.
    pub sections: u64,
    /// Nested exits, each a flush.
    pub flushes: u64,
    /// Pauses that left an active section.
    pub pauses: u64,
    /// The deepest nesting reached.
    pub max_nesting: u8,
    /// Barriers, TLBIs and ATs issued while the backend was selected.
    pub barriers: BarrierCounts,
}

/// What happened between two snapshots; `max_nesting` is the later one's.
impl core::ops::Sub for LazyMmuStats {
    type Output = LazyMmuStats;
    fn sub(self, earlier: LazyMmuStats) -> LazyMmuStats {
        LazyMmuStats {
            entry_writes: self.entry_writes - earlier.entry_writes,
            lazy_writes: self.lazy_writes - earlier.lazy_writes,
            sections: self.sections - earlier.sections,
            flushes: self.flushes - earlier.flushes,
            pauses: self.pauses - earlier.pauses,
            max_nesting: self.max_nesting,
            barriers: self.barriers - earlier.barriers,
        }
    }
}

struct Counters {
    /// Entry stores outside active sections (`entry_writes` less `lazy_writes`).
    outside_writes: AtomicU64,
    lazy_writes: AtomicU64,
    sections: AtomicU64,
    flushes: AtomicU64,
    pauses: AtomicU64,
    max_nesting: AtomicU8,
}

static COUNTERS: [Counters; N] = [const {
    Counters {
        outside_writes: AtomicU64::new(0),
        lazy_writes: AtomicU64::new(0),
        sections: AtomicU64::new(0),
        flushes: AtomicU64::new(0),
        pauses: AtomicU64::new(0),
        max_nesting: AtomicU8::new(0),
    }
}; N];

/// Barriers of the backends' finished selection windows, and where the
/// current window started.
struct Windows {
    closed: [BarrierCounts; N],
    start: BarrierCounts,
}

static WINDOWS: IrqSpinLock<Windows> =
    IrqSpinLock::new(Windows { closed: [BarrierCounts::ZERO; N], start: BarrierCounts::ZERO });

#[inline(always)]
fn mine() -> &'static Counters {
    of(selected())
}

#[inline(always)]
fn of(backend: Backend) -> &'static Counters {
    &COUNTERS[backend.index()]
}

/// `n` entries written outside any active section (or in an interrupt).
#[inline]
pub(super) fn written_outside_section(n: u64) {
    mine().outside_writes.fetch_add(n, Relaxed);
}

/// Adds the writes `task` made in its sections to the backend's counts.
#[inline(always)]
pub(super) fn account(task: &Task) {
    account_under(selected(), task)
}

/// [`account`] with `backend`, the one in use, read already.
#[inline(always)]
pub(super) fn account_under(backend: Backend, task: &Task) {
    let writes = task.lazy_mmu.unaccounted_writes.replace(0);
    if writes > 0 {
        of(backend).lazy_writes.fetch_add(writes, Relaxed);
    }
}

/// [`account`] for the task running here, unless in an interrupt handler
/// (which must not touch the interrupted task's count).
pub(super) fn account_current() {
    if !in_interrupt() {
        account(crate::task::current());
    }
}

#[inline(always)]
pub(super) fn entered(depth: u8) {
    entered_under(selected(), depth)
}

/// A section entered at `depth` under `backend`, the one in use.
#[inline(always)]
pub(super) fn entered_under(backend: Backend, depth: u8) {
    let mine = of(backend);
    if depth == 1 {
        mine.sections.fetch_add(1, Relaxed);
    }
    // (Read first: the depth is rarely a new maximum, and a load is
    // cheaper than the atomic read-modify-write loop.)
    if depth > mine.max_nesting.load(Relaxed) {
        mine.max_nesting.fetch_max(depth, Relaxed);
    }
}

pub(super) fn flushed() {
    mine().flushes.fetch_add(1, Relaxed);
}

pub(super) fn paused() {
    mine().pauses.fetch_add(1, Relaxed);
}

/// Closes the window of the backend that was selected until now.
pub(super) fn backend_switched(previous: Backend) {
    let now = barrier::counts();
    let mut w = WINDOWS.lock();
    let i = previous.index();
    w.closed[i] = w.closed[i] + (now - w.start);
    w.start = now;
}

/// The totals of `backend` since boot (or the last [`reset`]).
pub fn stats(backend: Backend) -> LazyMmuStats {
    account_current();
    let i = backend.index();
    let c = &COUNTERS[i];
    let w = WINDOWS.lock();
    let open = if backend == selected() { barrier::counts() - w.start } else { BarrierCounts::ZERO };
    let lazy_writes = c.lazy_writes.load(Relaxed);
    LazyMmuStats {
        entry_writes: c.outside_writes.load(Relaxed) + lazy_writes,
        lazy_writes,
        sections: c.sections.load(Relaxed),
        flushes: c.flushes.load(Relaxed),
        pauses: c.pauses.load(Relaxed),
        max_nesting: c.max_nesting.load(Relaxed),
        barriers: w.closed[i] + open,
    }
}

/// Starts every backend's accounting from zero.
pub fn reset() {
    account_current();
    for c in &COUNTERS {
        for counter in [&c.outside_writes, &c.lazy_writes, &c.sections, &c.flushes, &c.pauses] {
            counter.store(0, Relaxed);
        }
        c.max_nesting.store(0, Relaxed);
    }
    let mut w = WINDOWS.lock();
    w.closed = [BarrierCounts::ZERO; N];
    w.start = barrier::counts();
}
