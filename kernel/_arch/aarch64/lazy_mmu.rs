//! arm64's side of lazy MMU mode: the hooks the generic layer
//! (`mm::lazy_mmu`) calls, and three backends that implement them, so one
//! kernel can run the same work under each and count the difference.
//!
//! After a *valid* kernel entry is stored, arm64 needs `dsb ishst` (the
//! table walker sees the store) and `isb` (no instruction already fetched
//! keeps an old "invalid" translation). The backends differ in when they
//! pay it:
//! - `eager`: after every valid store (Linux without lazy MMU mode);
//! - `batched`: inside an active section a store only sets the task's
//!   pending flag; leaving or flushing the section emits one pair, and only
//!   if something is pending (arm64 since Linux 6.16);
//! - `deferred-writes`: inside an active section the *stores themselves*
//!   are queued in the task and made at flush or leave, followed by one
//!   pair if any was valid. That is how Xen PV batches, with its
//!   multicalls (in mainline the only one: powerpc's hash MMU and sparc64
//!   store at once and batch what follows, hash-table invalidations and TLB
//!   flushes), and it is what makes the read hazard real: until the queue
//!   is applied, memory holds the old entry.
//!
//! Clearing an entry (valid to invalid) owes nothing in any backend: the
//! TLB maintenance that must follow it brings its own barriers.
//!
//! Like the pending flag, the queue belongs to the task and stays queued
//! across a context switch. (Xen instead applies it when a task is switched
//! out; keeping it shows on one CPU the hazard two CPUs would race into.)

use core::cell::Cell;
use core::fmt;
use core::ptr::{null_mut, write_volatile};
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use super::{barrier, observe};
use crate::mm::descriptor::Descriptor;
use crate::planted::{Bug, planted};
use crate::trace;

/// How many stores one task can queue under `deferred-writes` before the
/// queue is applied early (Xen's multicall batch holds 32).
pub const DEFERRED_QUEUE_LEN: usize = 64;

/// How the task's next entry store is made. The generic layer decides it
/// whenever the task's lazy MMU state changes (a section entered or left,
/// a pause, a resume, an interrupt taken or returned from, a backend
/// selected), so that a store reads one byte instead of the nesting
/// counts, the interrupt depth and the backend in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreMode {
    /// Not in an active section (or in an interrupt handler): every
    /// backend stores at once and pays for a valid entry at once.
    Now,
    /// In an active section under `eager`: the same, and counted as a
    /// write in a section.
    EagerInSection,
    /// In an active section under `batched`: store, and owe the pair.
    Pending,
    /// In an active section under `deferred-writes`: queue the store.
    Queue,
}

/// Per-task state of the arm64 backends.
pub struct ArchLazyState {
    /// How the next store is made (see [`StoreMode`]).
    mode: Cell<StoreMode>,
    /// A valid entry was stored (or queued) in this section and its
    /// barriers are owed.
    pending: Cell<bool>,
    /// `deferred-writes`: stores not made yet, oldest first.
    queue: [Cell<(*mut u64, u64)>; DEFERRED_QUEUE_LEN],
    queued: Cell<usize>,
}

impl ArchLazyState {
    pub const fn new() -> ArchLazyState {
        ArchLazyState {
            mode: Cell::new(StoreMode::Now),
            pending: Cell::new(false),
            queue: [const { Cell::new((null_mut(), 0)) }; DEFERRED_QUEUE_LEN],
            queued: Cell::new(0),
        }
    }

    /// How the next store is made.
    #[inline(always)]
    pub fn store_mode(&self) -> StoreMode {
        self.mode.get()
    }

    /// Decides how the next stores are made: `active` says whether the
    /// task is in an active section and not in an interrupt handler; the
    /// backend in use says what a store in a section does.
    pub fn set_store_mode(&self, active: bool) {
        let mode = match (active, selected()) {
            (false, _) => StoreMode::Now,
            (true, Backend::Eager) => StoreMode::EagerInSection,
            (true, Backend::Batched) => StoreMode::Pending,
            (true, Backend::DeferredWrites) => StoreMode::Queue,
        };
        self.mode.set(mode);
    }

    /// Barriers are owed for entries stored in the current section.
    pub fn pending(&self) -> bool {
        self.pending.get()
    }

    /// Stores waiting in the queue (`deferred-writes` only).
    pub fn queued(&self) -> usize {
        self.queued.get()
    }

    fn push(&self, slot: *mut u64, desc: Descriptor) {
        let n = self.queued.get();
        self.queue[n].set((slot, desc.0));
        self.queued.set(n + 1);
        if let Some(observer) = observe::observer() {
            observer.queued(slot, true);
        }
    }

    /// Makes every queued store, in order; leaves the barriers owed.
    fn apply_queue(&self) {
        let n = self.queued.replace(0);
        if n == 0 {
            return;
        }
        trace::emit(format_args!("apply {n} queued store{}", if n == 1 { "" } else { "s" }));
        for cell in &self.queue[..n] {
            let (slot, value) = cell.get();
            if let Some(observer) = observe::observer() {
                observer.queued(slot, false);
            }
            // SAFETY: queued by `set_entry`, whose caller vouched for the slot.
            unsafe { store(slot, Descriptor(value)) };
        }
    }
}

impl Default for ArchLazyState {
    fn default() -> Self {
        ArchLazyState::new()
    }
}

impl fmt::Display for ArchLazyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pending {}", if self.pending() { "yes" } else { "no" })?;
        if self.queued() > 0 {
            write!(f, ", {} queued", self.queued())?;
        }
        Ok(())
    }
}

/// The arch hooks (Linux's `arch_*_lazy_mmu_mode`). Only the generic layer
/// and the context switch call them.
pub trait LazyMmuBackend: Sync {
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
    /// Stores `desc` into the entry at `slot` (arm64's `__set_pte`), now or
    /// later, and pays or defers what the store owes. `lazy` says whether
    /// the current task is in an active section (never in interrupt context).
    ///
    /// # Safety
    /// `slot` is an entry of a live page table, and stays one until the
    /// store is made.
    unsafe fn set_entry(&self, state: &ArchLazyState, slot: *mut u64, desc: Descriptor, lazy: bool);
    /// Every store asked for reaches memory now (barriers may stay owed):
    /// TLB maintenance must come after the stores it is for.
    fn sync(&self, _state: &ArchLazyState) {}
}

/// The store itself: one 64-bit `str`, single-copy atomic, so the walker
/// sees the old or the new descriptor, never a mix.
///
/// # Safety
/// `slot` is an entry of a live page table.
#[inline(always)]
unsafe fn store(slot: *mut u64, desc: Descriptor) {
    match observe::observer() {
        // SAFETY: as the caller guarantees.
        Some(observer) => unsafe { store_observed(observer, slot, desc) },
        // SAFETY: as the caller guarantees.
        None => unsafe { write_volatile(slot, desc.0) },
    }
}

/// [`store`] with an observer listening (the checker): it makes the store.
///
/// # Safety
/// `slot` is an entry of a live page table.
#[cold]
#[inline(never)]
unsafe fn store_observed(observer: &dyn observe::Observer, slot: *mut u64, desc: Descriptor) {
    // SAFETY: as the caller guarantees.
    let write = || unsafe { write_volatile(slot, desc.0) };
    observer.store(slot, desc.0, &write);
}

/// `dsb ishst; isb`: the pair a valid entry store owes.
fn emit_pair() {
    if planted(Bug::SwapPair) {
        barrier::isb();
        barrier::dsb_ishst();
        return;
    }
    barrier::dsb_ishst();
    barrier::isb();
}

fn emit_if_pending(state: &ArchLazyState) {
    if state.pending.replace(false) {
        emit_pair();
    }
}

pub struct Eager;

impl LazyMmuBackend for Eager {
    fn enter(&self, _: &ArchLazyState) {}
    fn leave(&self, _: &ArchLazyState) {}
    fn flush(&self, _: &ArchLazyState) {}
    #[inline(always)]
    unsafe fn set_entry(&self, _: &ArchLazyState, slot: *mut u64, desc: Descriptor, _: bool) {
        // SAFETY: as our caller guarantees.
        unsafe { store(slot, desc) };
        if desc.is_valid() {
            emit_pair();
        }
    }
}

pub struct Batched;

impl LazyMmuBackend for Batched {
    fn enter(&self, _: &ArchLazyState) {}
    fn leave(&self, state: &ArchLazyState) {
        if planted(Bug::SkipLeavePair) {
            state.pending.set(false);
            return;
        }
        emit_if_pending(state);
    }
    fn flush(&self, state: &ArchLazyState) {
        emit_if_pending(state);
    }
    #[inline(always)]
    unsafe fn set_entry(&self, state: &ArchLazyState, slot: *mut u64, desc: Descriptor, lazy: bool) {
        // SAFETY: as our caller guarantees.
        unsafe { store(slot, desc) };
        if !desc.is_valid() {
            return;
        }
        if lazy {
            state.pending.set(true);
            trace::emit(format_args!("  barriers deferred (pending)"));
        } else {
            emit_pair();
        }
    }
}

pub struct DeferredWrites;

impl DeferredWrites {
    fn apply(state: &ArchLazyState) {
        state.apply_queue();
        emit_if_pending(state);
    }
}

impl LazyMmuBackend for DeferredWrites {
    fn enter(&self, _: &ArchLazyState) {}
    fn leave(&self, state: &ArchLazyState) {
        Self::apply(state);
    }
    fn flush(&self, state: &ArchLazyState) {
        Self::apply(state);
    }
    #[inline(never)]
    unsafe fn set_entry(&self, state: &ArchLazyState, slot: *mut u64, desc: Descriptor, lazy: bool) {
        if !lazy {
            // SAFETY: as our caller guarantees.
            unsafe { store(slot, desc) };
            if desc.is_valid() {
                emit_pair();
            }
            return;
        }
        if state.queued() == DEFERRED_QUEUE_LEN {
            trace::emit(format_args!("  queue full"));
            Self::apply(state);
        }
        state.push(slot, desc);
        if desc.is_valid() {
            state.pending.set(true);
        }
        trace::emit(format_args!("  store queued ({} waiting), memory still holds the old entry", state.queued()));
    }
    fn sync(&self, state: &ArchLazyState) {
        state.apply_queue();
    }
}

/// The three backends, by what they do with a store in a section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Backend {
    /// Pays the pair after every valid store (Linux without lazy MMU mode).
    Eager = 0,
    /// Owes the pair, pays it once when the section is left or flushed
    /// (arm64 since Linux 6.16).
    Batched = 1,
    /// Queues the stores themselves until the section is flushed or left
    /// (Xen PV's way).
    DeferredWrites = 2,
}

impl Backend {
    /// Every backend, in the order of their statistics.
    pub const ALL: [Backend; 3] = [Backend::Eager, Backend::Batched, Backend::DeferredWrites];
    /// The backend at boot: batched, as arm64 Linux.
    pub const DEFAULT: Backend = Backend::Batched;

    /// Its name on the command line and in the output.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Eager => "eager",
            Backend::Batched => "batched",
            Backend::DeferredWrites => "deferred-writes",
        }
    }

    /// The backend of that name (command-line parsing).
    pub fn from_name(name: &str) -> Option<Backend> {
        Backend::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Its place in [`Backend::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Its hooks.
    pub fn hooks(self) -> &'static dyn LazyMmuBackend {
        match self {
            Backend::Eager => &Eager,
            Backend::Batched => &Batched,
            Backend::DeferredWrites => &DeferredWrites,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

static SELECTED: AtomicU8 = AtomicU8::new(Backend::DEFAULT as u8);

/// The backend in use (at boot, [`Backend::DEFAULT`]).
pub fn selected() -> Backend {
    Backend::ALL[SELECTED.load(Relaxed) as usize]
}

/// The store through the backend in use, as the task's [`StoreMode`]
/// says: [`LazyMmuBackend::set_entry`] of that backend, called directly
/// (no dynamic dispatch, no second look at the task's state: this is the
/// path of every entry written). Outside a section every backend does
/// what `eager` does.
///
/// # Safety
/// As [`LazyMmuBackend::set_entry`].
#[inline(always)]
pub unsafe fn set_entry(state: &ArchLazyState, slot: *mut u64, desc: Descriptor) {
    // SAFETY: as our caller guarantees.
    unsafe {
        match state.store_mode() {
            StoreMode::Now => Eager.set_entry(state, slot, desc, false),
            StoreMode::EagerInSection => Eager.set_entry(state, slot, desc, true),
            StoreMode::Pending => Batched.set_entry(state, slot, desc, true),
            StoreMode::Queue => DeferredWrites.set_entry(state, slot, desc, true),
        }
    }
}

/// [`set_entry`] with nothing watching the stores (no observer listening,
/// no trace): what the backends' `set_entry` do, without their calls to
/// the observer and the trace, so that the store path of an unwatched
/// kernel is a handful of instructions. `deferred-writes` in a section
/// keeps its own, out of line.
///
/// # Safety
/// As [`LazyMmuBackend::set_entry`].
#[inline(always)]
pub unsafe fn set_entry_unwatched(state: &ArchLazyState, slot: *mut u64, desc: Descriptor) {
    match state.store_mode() {
        StoreMode::Pending => {
            // SAFETY: as our caller guarantees.
            unsafe { write_volatile(slot, desc.0) };
            if desc.is_valid() {
                state.pending.set(true);
            }
        }
        StoreMode::Now | StoreMode::EagerInSection => {
            // SAFETY: as our caller guarantees.
            unsafe { write_volatile(slot, desc.0) };
            if desc.is_valid() {
                emit_pair();
            }
        }
        // SAFETY: as our caller guarantees.
        StoreMode::Queue => unsafe { DeferredWrites.set_entry(state, slot, desc, true) },
    }
}

/// After a run of plain stores in an active `batched` section
/// ([`StoreMode::Pending`], nothing watching): the pair is owed if any of
/// them was valid, as [`set_entry_unwatched`] would have owed it for each.
#[inline(always)]
pub fn stored_run(state: &ArchLazyState, valid: bool) {
    debug_assert_eq!(state.store_mode(), StoreMode::Pending, "a run of plain stores outside a batched section");
    if valid {
        state.pending.set(true);
    }
}

/// Makes `backend` the one in use, and nothing else: the generic layer's
/// `select_backend` accounts the statistics and the tasks' store modes
/// around it.
pub(crate) fn set_selected(backend: Backend) {
    SELECTED.store(backend as u8, Relaxed);
}
