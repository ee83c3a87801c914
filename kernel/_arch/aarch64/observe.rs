//! A window onto the two things the architecture's page-table rules are
//! about: every descriptor store (`lazy_mmu::store_entries`, the one store)
//! and every ordering instruction (`barrier`, the one barrier module).
//!
//! Upper layers install [`Observer`]s, one per [`Watcher`] (the page-table
//! rules checker, `mm::pgtable_check`; the trace, `trace`); this layer only
//! reports what it does and never calls up by name. Observers watch: none
//! makes a store or changes what the store path does, so the code that
//! runs with the checker on is the code that runs when the bench measures.
//! With nobody listening, each report is one atomic load and a branch.

use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use spin::Once;

use super::descriptor::{Descriptor, Level};
use super::lazy_mmu::StoreMode;

mod issued;
pub use issued::Issued;

/// `len` consecutive entries of one page table at `level`, the first of
/// which, at `first`, translates from `va`: what the store primitive
/// writes (a single entry is a run of one).
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub first: *mut u64,
    pub len: usize,
    pub level: Level,
    pub va: u64,
}

impl Run {
    /// No entry at all (an empty slot of a queue).
    pub const EMPTY: Run = Run { first: core::ptr::null_mut(), len: 0, level: Level(3), va: 0 };

    /// The run of one made of entry `i` of this run.
    #[inline(always)]
    pub fn one(&self, i: usize) -> Run {
        Run {
            first: self.first.wrapping_add(i),
            len: 1,
            level: self.level,
            va: self.va.wrapping_add(i as u64 * self.level.entry_size()),
        }
    }
}

/// What a backend that defers stores (`deferred-writes`) does with its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// A store to `slot` was queued; `waiting` are queued now.
    Queued { slot: *mut u64, waiting: usize },
    /// The queue is full: it is applied before the next store is queued.
    Full,
    /// `count` queued stores are about to be made, oldest first.
    Applying { count: usize },
    /// The store queued for `slot` is taken off the queue to be made.
    Dequeued { slot: *mut u64 },
}

/// What an observer is told, on the CPU that did it, in program order.
/// `new(i)` is what entry `i` of a run is to hold (None: left as it is);
/// it reads at most entry `i`, so it may be asked before the stores.
pub trait Observer: Sync {
    /// `what` was just issued.
    fn issued(&self, _what: Issued) {}
    /// The kernel asks for `run` to be written, and the task's store mode
    /// is `mode`: told once per step of the backend's (a whole run under
    /// `batched`, each entry under `eager` and `deferred-writes`), before
    /// anything is stored or queued.
    fn writing(&self, _run: &Run, _mode: StoreMode, _new: &dyn Fn(usize) -> Option<Descriptor>) {}
    /// The descriptors are to be stored into memory now: the observer
    /// calls `store` (the store loop itself, as it runs when nobody
    /// watches) exactly once, at the moment it chooses, so that the stores
    /// and what it makes of them are one step as its other callers, on
    /// other CPUs, see it (another CPU may read a new entry the instant it
    /// is in memory). Only the [`Watcher::Checker`]'s is called.
    fn storing(&self, _run: &Run, _new: &dyn Fn(usize) -> Option<Descriptor>, store: &mut dyn FnMut()) {
        store()
    }
    /// The deferred-writes queue moved.
    fn queue(&self, _event: QueueEvent) {}
}

/// Who watches: each has its own slot and can stop listening on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watcher {
    /// The page-table rules checker.
    Checker = 0,
    /// The lazy MMU trace.
    Trace = 1,
}

static OBSERVERS: [Once<&'static dyn Observer>; 2] = [Once::new(), Once::new()];
/// A bit per [`Watcher`] listening now, so that the store path pays one
/// load and a branch when nobody is, not a call that returns at once.
static LISTENING: AtomicU8 = AtomicU8::new(0);

/// Installs `watcher`'s observer (the first one stays) and tells it from
/// now on.
pub fn install(watcher: Watcher, observer: &'static dyn Observer) {
    OBSERVERS[watcher as usize].call_once(|| observer);
    LISTENING.fetch_or(1 << watcher as u8, Relaxed);
}

/// Starts or stops telling `watcher`'s observer (installed already).
pub fn set_listening(watcher: Watcher, on: bool) {
    if on {
        LISTENING.fetch_or(1 << watcher as u8, Relaxed);
    } else {
        LISTENING.fetch_and(!(1 << watcher as u8), Relaxed);
    }
}

/// Tells every listening observer, checker first.
#[inline(always)]
pub fn tell(f: impl Fn(&dyn Observer)) {
    let listening = LISTENING.load(Relaxed);
    if listening != 0 {
        tell_each(listening, &f);
    }
}

/// Is any observer listening?
#[inline(always)]
pub fn listening() -> bool {
    LISTENING.load(Relaxed) != 0
}

/// [`tell`] of a run about to be written ([`Observer::writing`]), out of
/// the store path's line.
#[cold]
#[inline(never)]
pub fn tell_writing(run: &Run, mode: StoreMode, new: &dyn Fn(usize) -> Option<Descriptor>) {
    tell(|o| o.writing(run, mode, new));
}

/// Is the checker listening? Then a run's stores are made through
/// [`storing_checked`]; else the store loop runs as it is.
#[inline(always)]
pub fn checker_listening() -> bool {
    LISTENING.load(Relaxed) & (1 << Watcher::Checker as u8) != 0
}

/// Makes the stores of `run` (`store`, the store loop) with the checker
/// told: it runs `store` itself, once.
#[cold]
#[inline(never)]
pub fn storing_checked(run: &Run, new: &dyn Fn(usize) -> Option<Descriptor>, store: &mut dyn FnMut()) {
    match OBSERVERS[Watcher::Checker as usize].get() {
        Some(checker) => checker.storing(run, new, store),
        None => store(),
    }
}

#[cold]
#[inline(never)]
fn tell_each(listening: u8, f: &dyn Fn(&dyn Observer)) {
    for (i, slot) in OBSERVERS.iter().enumerate() {
        if listening & (1 << i) != 0
            && let Some(observer) = slot.get()
        {
            f(*observer);
        }
    }
}
