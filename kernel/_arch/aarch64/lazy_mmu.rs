//! arm64's side of lazy MMU mode: the hooks the generic layer
//! (`mm::lazy_mmu`) calls, and the backends that implement them.
//!
//! After a *valid* kernel entry is written, arm64 needs `dsb ishst` (the
//! walker sees the store) and `isb` (no instruction already fetched keeps an
//! old "invalid" translation). The backends differ in when they pay it:
//! - `Eager`: after every valid write (Linux without lazy MMU mode);
//! - `Batched`: inside an active section a write only sets the task's
//!   pending flag; leaving or flushing the section emits one pair, and only
//!   if something is pending (arm64 since Linux 6.16).

use core::cell::Cell;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use super::barrier;

/// Per-task state of the arm64 backends.
#[derive(Debug)]
pub struct ArchLazyState {
    /// A valid entry was written in this section and its barriers are owed.
    pub pending: Cell<bool>,
}

impl ArchLazyState {
    pub const fn new() -> ArchLazyState {
        ArchLazyState { pending: Cell::new(false) }
    }
}

impl Default for ArchLazyState {
    fn default() -> Self {
        ArchLazyState::new()
    }
}

/// The arch hooks (Linux's `arch_*_lazy_mmu_mode`). Only the generic layer
/// and the context switch call them.
pub trait LazyMmuBackend: Sync {
    fn name(&self) -> &'static str;
    /// The outermost section starts.
    fn enter(&self, state: &ArchLazyState);
    /// The outermost section ends: everything deferred must be done.
    fn leave(&self, state: &ArchLazyState);
    /// A nested section ends: deferred work becomes visible, mode stays on.
    fn flush(&self, state: &ArchLazyState);
    /// Lazy mode is paused. A backend with parameters for its section keeps
    /// them here; the default simply leaves.
    fn pause(&self, state: &ArchLazyState) {
        self.leave(state)
    }
    /// Lazy mode resumes after a pause; the default enters again.
    fn resume(&self, state: &ArchLazyState) {
        self.enter(state)
    }
    /// A valid entry was just stored. `lazy` says whether the current task
    /// is in an active section (never true in interrupt context).
    fn valid_entry_written(&self, state: &ArchLazyState, lazy: bool);
}

/// `dsb ishst; isb`: the pair a valid entry write owes.
fn emit_pair() {
    barrier::dsb_ishst();
    barrier::isb();
}

pub struct Eager;

impl LazyMmuBackend for Eager {
    fn name(&self) -> &'static str {
        "eager"
    }
    fn enter(&self, _: &ArchLazyState) {}
    fn leave(&self, _: &ArchLazyState) {}
    fn flush(&self, _: &ArchLazyState) {}
    fn valid_entry_written(&self, _: &ArchLazyState, _: bool) {
        emit_pair();
    }
}

pub struct Batched;

impl Batched {
    fn emit_if_pending(state: &ArchLazyState) {
        if state.pending.replace(false) {
            emit_pair();
        }
    }
}

impl LazyMmuBackend for Batched {
    fn name(&self) -> &'static str {
        "batched"
    }
    fn enter(&self, _: &ArchLazyState) {}
    fn leave(&self, state: &ArchLazyState) {
        Self::emit_if_pending(state);
    }
    fn flush(&self, state: &ArchLazyState) {
        Self::emit_if_pending(state);
    }
    fn valid_entry_written(&self, state: &ArchLazyState, lazy: bool) {
        if lazy {
            state.pending.set(true);
        } else {
            emit_pair();
        }
    }
}

pub static BACKENDS: [&dyn LazyMmuBackend; 2] = [&Eager, &Batched];

static SELECTED: AtomicU8 = AtomicU8::new(1);

/// The backend in use (default: batched).
pub fn backend() -> &'static dyn LazyMmuBackend {
    BACKENDS[SELECTED.load(Relaxed) as usize]
}

/// Selects a backend by name; false if there is none of that name. Only
/// switch when no task is inside a section.
pub fn select_backend(name: &str) -> bool {
    match BACKENDS.iter().position(|b| b.name() == name) {
        Some(i) => {
            SELECTED.store(i as u8, Relaxed);
            true
        }
        None => false,
    }
}
