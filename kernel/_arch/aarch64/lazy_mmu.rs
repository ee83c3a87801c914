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
use core::ptr::write_volatile;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use super::barrier;
use super::descriptor::Descriptor;
use super::observe::{self, QueueEvent, Run};

/// How many stores one task can queue under `deferred-writes` before the
/// queue is applied early (Xen's multicall batch holds 32).
pub const DEFERRED_QUEUE_LEN: usize = 64;

/// How the task's next entry store is made. The generic layer decides it
/// whenever the task's lazy MMU state changes (a section entered or left,
/// a pause, a resume, an interrupt taken or returned from, a backend
/// selected), so that a run of stores reads one byte instead of the
/// nesting counts, the interrupt depth and the backend in use.
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

impl StoreMode {
    /// How a store in an active section is made under `backend`.
    #[inline(always)]
    pub const fn in_section(backend: Backend) -> StoreMode {
        match backend {
            Backend::Eager => StoreMode::EagerInSection,
            Backend::Batched => StoreMode::Pending,
            Backend::DeferredWrites => StoreMode::Queue,
        }
    }
}

/// Per-task state of the arm64 backends.
pub struct ArchLazyState {
    /// How the next store is made (see [`StoreMode`]).
    mode: Cell<StoreMode>,
    /// A valid entry was stored (or queued) in this section and its
    /// barriers are owed.
    pending: Cell<bool>,
    /// `deferred-writes`: stores not made yet, oldest first.
    queue: [Cell<(Run, Descriptor)>; DEFERRED_QUEUE_LEN],
    queued: Cell<usize>,
}

impl ArchLazyState {
    pub const fn new() -> ArchLazyState {
        ArchLazyState {
            mode: Cell::new(StoreMode::Now),
            pending: Cell::new(false),
            queue: [const { Cell::new((Run::EMPTY, Descriptor::INVALID)) }; DEFERRED_QUEUE_LEN],
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
        self.mode.set(if active { StoreMode::in_section(selected()) } else { StoreMode::Now });
    }

    /// [`ArchLazyState::set_store_mode`] for a task that has just entered
    /// an active section under `backend` (the one in use), or left one.
    #[inline(always)]
    pub fn set_section_store_mode(&self, backend: Option<Backend>) {
        self.mode.set(match backend {
            Some(backend) => StoreMode::in_section(backend),
            None => StoreMode::Now,
        });
    }

    /// The task's stores are queued (`deferred-writes`, in an active
    /// section, not in an interrupt handler): only then has a sync
    /// anything to make.
    #[inline(always)]
    pub fn queueing(&self) -> bool {
        self.mode.get() == StoreMode::Queue
    }

    /// Barriers are owed for entries stored in the current section.
    pub fn pending(&self) -> bool {
        self.pending.get()
    }

    /// Stores waiting in the queue (`deferred-writes` only).
    pub fn queued(&self) -> usize {
        self.queued.get()
    }

    fn push(&self, one: Run, desc: Descriptor) {
        let n = self.queued.get();
        self.queue[n].set((one, desc));
        self.queued.set(n + 1);
        observe::tell(|o| o.queue(QueueEvent::Queued { slot: one.first, waiting: n + 1 }));
    }

    /// Makes every queued store, in order; leaves the barriers owed.
    fn apply_queue(&self) {
        let n = self.queued.replace(0);
        if n == 0 {
            return;
        }
        observe::tell(|o| o.queue(QueueEvent::Applying { count: n }));
        for cell in &self.queue[..n] {
            let (one, desc) = cell.get();
            observe::tell(|o| o.queue(QueueEvent::Dequeued { slot: one.first }));
            // SAFETY: queued by `write_run`, whose caller vouched for the entry.
            unsafe { store_entries(&one, move |_| Some(desc)) };
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
/// calls them. What a store does is not a hook: the task's [`StoreMode`]
/// says it, and [`write_run`] does it.
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
    /// Every store asked for reaches memory now (barriers may stay owed):
    /// TLB maintenance must come after the stores it is for.
    fn sync(&self, _state: &ArchLazyState) {}
}

/// Writes `new(i)` into entry `i` of `run` wherever it is `Some`, as the
/// task's [`StoreMode`] says (arm64's `__set_pte` and `set_ptes`): the
/// store policy of every backend, in one place. Returns how many entries
/// it wrote (stored or queued).
///
/// - `Pending` (`batched` in a section): the whole run is one plain loop
///   of stores, and the pair is owed once if any entry was valid (owed
///   while the loop runs, in case `new` panics).
/// - `Now`, `EagerInSection`: each entry is stored and, if valid, followed
///   by its pair at once.
/// - `Queue` (`deferred-writes` in a section): each entry is queued.
///
/// `new(i)` computes a descriptor and may read entry `i` (and no other
/// entry of the run); it is asked again by the observers, if any listen.
///
/// # Safety
/// `run` lies inside one live page table (or one not linked yet and owned
/// by the caller), which stays one until the stores are made (under
/// `deferred-writes`, until the section is flushed); each store is one the
/// caller may make (see `pgtable::write_entry`).
#[inline(always)]
pub unsafe fn write_run(state: &ArchLazyState, run: Run, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize {
    let mode = state.store_mode();
    match mode {
        StoreMode::Pending => {
            // (Out of line, behind the test of who listens: built here,
            // the observers' closure was copied on every call, listened
            // to or not.)
            // They are shown a copy of `new`: with the address of the
            // caller's taken, it was copied again (a `memcpy` of its
            // captures) on every call, listened to or not.
            if observe::listening() {
                let shown = new;
                observe::tell_writing(&run, mode, &shown);
            }
            // The pair is owed before the loop can panic (in `new`) with
            // valid entries stored: a section abandoned half way through
            // the run still pays it when it is closed. Once the loop is
            // done, it is owed only if an entry was valid (or was before).
            let owed = state.pending.replace(true);
            // SAFETY: as our caller guarantees.
            let (written, valid) = unsafe { store_entries(&run, new) };
            state.pending.set(owed | valid);
            written
        }
        // SAFETY: as our caller guarantees.
        StoreMode::Now | StoreMode::EagerInSection => unsafe { write_run_eager(run, mode, new) },
        StoreMode::Queue => {
            // (A copy, for the same reason as the observers'.)
            let queued = new;
            // SAFETY: as our caller guarantees.
            unsafe { DeferredWrites::queue_run(state, run, &queued) }
        }
    }
}

/// [`write_run`] a store at a time, each valid one followed by its pair.
/// A run of more than one entry is stored out of line, a function per
/// caller's `new`, so that its loop (a pair per entry) keeps its
/// registers whatever its caller's code around it holds; one entry
/// (`pgtable::write_entry`'s) is stored in place.
///
/// # Safety
/// As [`write_run`].
#[inline(always)]
unsafe fn write_run_eager(run: Run, mode: StoreMode, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize {
    if run.len == 1 {
        // SAFETY: as our caller guarantees.
        unsafe { eager_loop(run, mode, new) }
    } else {
        // SAFETY: as our caller guarantees.
        unsafe { eager_loop_out_of_line(run, mode, new) }
    }
}

/// [`eager_loop`], out of line.
///
/// # Safety
/// As [`write_run`].
#[inline(never)]
unsafe fn eager_loop_out_of_line(run: Run, mode: StoreMode, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize {
    // SAFETY: as our caller guarantees.
    unsafe { eager_loop(run, mode, new) }
}

/// The loop of [`write_run_eager`].
///
/// # Safety
/// As [`write_run`].
#[inline(always)]
unsafe fn eager_loop(run: Run, mode: StoreMode, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize {
    let mut written = 0;
    for i in 0..run.len {
        let Some(desc) = new(i) else { continue };
        let one = run.one(i);
        observe::tell(|o| o.writing(&one, mode, &|_| Some(desc)));
        // SAFETY: entry `i` of the caller's run.
        let (_, valid) = unsafe { store_entries(&one, move |_| Some(desc)) };
        if valid {
            emit_pair();
        }
        written += 1;
    }
    written
}

/// The one place a descriptor is stored into a live page table (besides
/// the boot code's tables, made before the MMU is on, and the zeroing of
/// a table not linked yet, `pgtable::alloc_table`): entry `i` of `run`
/// gets `new(i)` where that is `Some`, each a single 64-bit `str`
/// (single-copy atomic, so the walker sees the old or the new descriptor,
/// never a mix). With the checker listening, the same loop runs inside
/// its check (`observe::storing_checked`). Returns how many entries it stored,
/// and whether any of them was valid (the pair is then owed).
///
/// # Safety
/// As [`write_run`], and the store is made now.
#[inline(always)]
unsafe fn store_entries(run: &Run, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> (usize, bool) {
    if !observe::checker_listening() {
        // SAFETY: as our caller guarantees.
        return unsafe { store_loop(run.first, run.len, new) };
    }
    // SAFETY: as our caller guarantees.
    unsafe { store_entries_checked(*run, new) }
}

/// [`store_entries`] with the checker listening, out of line: the
/// checker is shown copies and its `store` owns its own, so that nothing
/// of the caller's has its address taken and the loop keeps the run and
/// `new`'s captures in registers.
///
/// # Safety
/// As [`store_entries`].
#[inline(never)]
unsafe fn store_entries_checked(run: Run, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> (usize, bool) {
    let (first, len) = (run.first, run.len);
    let mut stored = (0, false);
    let out = &mut stored;
    // SAFETY: as our caller guarantees.
    let mut store = move || *out = unsafe { store_loop(first, len, new) };
    observe::storing_checked(&run, &new, &mut store);
    stored
}

/// The loop of [`store_entries`]. Its arguments are values (`new` a copy
/// of the caller's), so that what it reads stays in registers while it
/// stores: nothing the observers were shown is read in the loop.
///
/// # Safety
/// As [`store_entries`], for the `len` entries from `first`.
#[inline(always)]
unsafe fn store_loop(first: *mut u64, len: usize, new: impl Fn(usize) -> Option<Descriptor>) -> (usize, bool) {
    // (Counted so that the loop's common case does no counting: the
    // slots skipped, rare, and the valid bits ORed, bit 0 alone, which
    // each caller's descriptors fix outside the loop (a constant, or the
    // run's first entry's: `set_ptes` adds whole pages), so that the OR
    // leaves the loop.)
    let (mut skipped, mut valid) = (0, 0);
    for i in 0..len {
        match new(i) {
            Some(desc) => {
                // SAFETY: entry `i` of the caller's run, inside its table.
                unsafe { write_volatile(first.add(i), desc.0) };
                valid |= desc.0 & 1;
            }
            None => {
                core::hint::cold_path();
                skipped += 1;
            }
        }
    }
    (len - skipped, Descriptor(valid).is_valid())
}

/// Bugs this module can be made to have, to show that the checks catch
/// them (`planted`: debug builds only; a release build has none).
#[cfg(debug_assertions)]
pub mod planted {
    use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

    /// The pair is issued `isb; dsb ishst`.
    pub const SWAP_PAIR: u8 = 1 << 0;
    /// `batched` forgets what is pending when a section is left.
    pub const SKIP_LEAVE_PAIR: u8 = 1 << 1;

    static PLANTED: AtomicU8 = AtomicU8::new(0);

    /// Plants the bugs of `bits` (0: none).
    pub fn plant(bits: u8) {
        PLANTED.store(bits, Relaxed);
    }

    #[inline(always)]
    pub(super) fn planted(bit: u8) -> bool {
        PLANTED.load(Relaxed) & bit != 0
    }
}

/// Without planted bugs (a release build): none is ever planted.
#[cfg(not(debug_assertions))]
mod planted {
    pub const SWAP_PAIR: u8 = 0;
    pub const SKIP_LEAVE_PAIR: u8 = 0;
    #[inline(always)]
    pub(super) fn planted(_: u8) -> bool {
        false
    }
}

/// `dsb ishst; isb`: the pair a valid entry store owes.
fn emit_pair() {
    if planted::planted(planted::SWAP_PAIR) {
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
}

pub struct Batched;

impl LazyMmuBackend for Batched {
    fn enter(&self, _: &ArchLazyState) {}
    fn leave(&self, state: &ArchLazyState) {
        if planted::planted(planted::SKIP_LEAVE_PAIR) {
            state.pending.set(false);
            return;
        }
        emit_if_pending(state);
    }
    fn flush(&self, state: &ArchLazyState) {
        emit_if_pending(state);
    }
}

pub struct DeferredWrites;

impl DeferredWrites {
    fn apply(state: &ArchLazyState) {
        state.apply_queue();
        emit_if_pending(state);
    }

    /// [`write_run`] in an active section: each entry is queued (the
    /// queue applied first when it is full), and the pair owed if valid.
    ///
    /// # Safety
    /// As [`write_run`].
    #[inline(never)]
    unsafe fn queue_run(state: &ArchLazyState, run: Run, new: &dyn Fn(usize) -> Option<Descriptor>) -> usize {
        let mut written = 0;
        for i in 0..run.len {
            let Some(desc) = new(i) else { continue };
            let one = run.one(i);
            observe::tell(|o| o.writing(&one, StoreMode::Queue, &|_| Some(desc)));
            if state.queued() == DEFERRED_QUEUE_LEN {
                observe::tell(|o| o.queue(QueueEvent::Full));
                Self::apply(state);
            }
            state.push(one, desc);
            if desc.is_valid() {
                state.pending.set(true);
            }
            written += 1;
        }
        written
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

/// The hooks of a backend called through a match, not a vtable: the
/// generic layer calls them on the backend in use, and each is inlined
/// there (an `enter`, empty in every backend, costs nothing; `batched`'s
/// `leave` is a test of the pending flag).
impl LazyMmuBackend for Backend {
    #[inline(always)]
    fn enter(&self, state: &ArchLazyState) {
        match self {
            Backend::Eager => Eager.enter(state),
            Backend::Batched => Batched.enter(state),
            Backend::DeferredWrites => DeferredWrites.enter(state),
        }
    }
    #[inline(always)]
    fn leave(&self, state: &ArchLazyState) {
        match self {
            Backend::Eager => Eager.leave(state),
            Backend::Batched => Batched.leave(state),
            Backend::DeferredWrites => DeferredWrites.leave(state),
        }
    }
    #[inline(always)]
    fn flush(&self, state: &ArchLazyState) {
        match self {
            Backend::Eager => Eager.flush(state),
            Backend::Batched => Batched.flush(state),
            Backend::DeferredWrites => DeferredWrites.flush(state),
        }
    }
    #[inline(always)]
    fn pause(&self, state: &ArchLazyState) {
        match self {
            Backend::Eager => Eager.pause(state),
            Backend::Batched => Batched.pause(state),
            Backend::DeferredWrites => DeferredWrites.pause(state),
        }
    }
    #[inline(always)]
    fn resume(&self, state: &ArchLazyState) {
        match self {
            Backend::Eager => Eager.resume(state),
            Backend::Batched => Batched.resume(state),
            Backend::DeferredWrites => DeferredWrites.resume(state),
        }
    }
    #[inline(always)]
    fn sync(&self, state: &ArchLazyState) {
        match self {
            Backend::Eager => Eager.sync(state),
            Backend::Batched => Batched.sync(state),
            Backend::DeferredWrites => DeferredWrites.sync(state),
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
/// (A match, not an index into [`Backend::ALL`]: every lazy MMU
/// transition reads it, and a match has no bounds check to pay.)
#[inline]
pub fn selected() -> Backend {
    match SELECTED.load(Relaxed) {
        0 => Backend::Eager,
        1 => Backend::Batched,
        _ => Backend::DeferredWrites,
    }
}

/// Makes `backend` the one in use, and nothing else: the generic layer's
/// `select_backend` accounts the statistics and the tasks' store modes
/// around it.
pub(crate) fn set_selected(backend: Backend) {
    SELECTED.store(backend as u8, Relaxed);
}
