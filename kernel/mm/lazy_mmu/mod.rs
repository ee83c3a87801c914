//! Lazy MMU mode, the generic layer (Linux 7.0 semantics, Linux's names).
//!
//! Core code brackets a batch of page-table updates with
//! `lazy_mmu_mode_enable()` / `lazy_mmu_mode_disable()`; inside, the arch
//! backend may defer the barriers (or the writes) those updates owe, and
//! pays them once when the section ends. Sections nest: only the outermost
//! disable leaves the mode; a nested disable *flushes* (what is pending is
//! made visible now) and the mode stays on. `lazy_mmu_mode_pause()` turns
//! the mode off at any depth until `lazy_mmu_mode_resume()`; pauses nest,
//! and enable/disable between them do nothing.
//!
//! The state is the current task's ([`LazyMmuState`]). Only this layer
//! calls the arch hooks (`arch::lazy_mmu`); the context switch calls none:
//! its `dsb ish` is enough (chapter 4).
//!
//! In interrupt context every call here does nothing and nothing is
//! batched: a handler that writes an entry pays its barriers at once, and
//! the interrupted task's section is left exactly as it was.
//!
//! Rust code normally uses the guards, [`enable`] and [`pause`], so that
//! every enable has its disable and every pause its resume.

mod state;
mod stats;

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::arch::lazy_mmu::{self as arch, ArchLazyState, LazyMmuBackend, StoreMode};
pub use crate::arch::lazy_mmu::{Backend, DEFERRED_QUEUE_LEN};
use crate::arch::observe::Run;
use crate::irq::in_interrupt;
use crate::mm::descriptor::Descriptor;
use crate::mm::pgtable_check;
use crate::{println, task, trace};
pub use state::LazyMmuMisuse;
use state::{Counts, Hook, Transition};
pub use stats::{LazyMmuStats, reset as reset_stats, stats};

/// A task's lazy MMU state, all of it, in its control block (Linux 7.0's
/// `lazy_mmu_state` in `task_struct`, with the arch's part beside it as
/// arm64 keeps its TIF_LAZY_MMU_PENDING flag in the thread's flags). Only this
/// layer changes it, and only the current task's.
#[derive(Default)]
pub(crate) struct LazyMmuState {
    /// The nesting counts, as the state machine (`state.rs`) reads and
    /// makes them.
    pub(crate) counts: Cell<Counts>,
    /// Entries this task wrote in active sections that the backend's
    /// statistics do not hold yet: the store path counts here, in the
    /// task, with no atomic, and [`stats`](mod@stats) adds them up at every
    /// transition and whenever it is read.
    pub(crate) unaccounted_writes: Cell<u64>,
    /// What the arch backend keeps: the pending flag, the queue, how the
    /// next store is made.
    pub(crate) arch: ArchLazyState,
}

impl LazyMmuState {
    pub const fn new() -> LazyMmuState {
        LazyMmuState {
            counts: Cell::new(Counts { enable: 0, pause: 0 }),
            unaccounted_writes: Cell::new(0),
            arch: ArchLazyState::new(),
        }
    }

    /// Lazy MMU mode is active: enabled and not paused.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.counts.get().is_active()
    }

    /// The state now, as a value.
    pub fn snapshot(&self) -> LazySnapshot {
        let Counts { enable, pause } = self.counts.get();
        LazySnapshot {
            enable_count: enable,
            pause_count: pause,
            pending: self.arch.pending(),
            queued: self.arch.queued(),
        }
    }
}

/// A task's lazy MMU state, read at one moment (`Task::lazy_state`), as
/// tests and the audit compare it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazySnapshot {
    /// Nesting depth of enable/disable.
    pub enable_count: u8,
    /// Nesting depth of pause/resume.
    pub pause_count: u8,
    /// Barriers are owed for entries stored in the current section.
    pub pending: bool,
    /// Stores waiting in the queue (`deferred-writes` only).
    pub queued: usize,
}

static REPORTED: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];
static MISUSES: AtomicU64 = AtomicU64::new(0);

fn refuse<T>(misuse: LazyMmuMisuse) -> Result<T, LazyMmuMisuse> {
    MISUSES.fetch_add(1, Relaxed);
    if !REPORTED[misuse as usize].swap(true, Relaxed) {
        println!("lazy_mmu: warning: {misuse:?} refused (task {}); reported once", task::current().name);
    }
    Err(misuse)
}

/// How many misuses were refused so far.
pub fn misuse_count() -> u64 {
    MISUSES.load(Relaxed)
}

/// Applies one of the state machine's transitions to the current task:
/// new counts, a trace line, and the arch hook it calls for. The
/// commonest two, an outermost section's enable and disable with nobody
/// tracing, take the short way ([`enter_outermost`], [`leave_outermost`]),
/// which does the same.
#[inline(never)]
fn transition(call: &'static str, step: impl FnOnce(Counts) -> Transition) -> Result<(), LazyMmuMisuse> {
    if in_interrupt() {
        trace::emit(format_args!("{call}: in interrupt context, does nothing"));
        return Ok(());
    }
    let task = task::current();
    let state = &task.lazy_mmu;
    let old = state.counts.get();
    stats::account(task);
    let (new, hook) = step(old).or_else(refuse)?;
    state.counts.set(new);
    let arch = &state.arch;
    // The trace's lines only when it is on: building them costs a few
    // stores per call even when `emit` then drops them.
    if trace::enabled() {
        match (old.pause != new.pause, hook) {
            (false, _) if old == new => trace::emit(format_args!("{call}: paused, does nothing")),
            (false, Hook::Enter) => {
                trace::emit(format_args!("{call}: depth {} -> {}, arch enter", old.enable, new.enable))
            }
            (false, Hook::Leave) => {
                trace::emit(format_args!("{call}: depth {} -> {}, arch leave ({arch})", old.enable, new.enable))
            }
            (false, Hook::Flush) => trace::emit(format_args!(
                "{call}: depth {} -> {}, nested exit, arch flush ({arch})",
                old.enable, new.enable
            )),
            (false, _) => {
                trace::emit(format_args!("{call}: depth {} -> {}, nested, nothing to do", old.enable, new.enable))
            }
            (true, Hook::Pause) => trace::emit(format_args!(
                "{call}: pause depth {} -> {}, arch pause (leaves the mode)",
                old.pause, new.pause
            )),
            (true, Hook::Resume) => trace::emit(format_args!(
                "{call}: pause depth {} -> {}, arch resume (back in the mode)",
                old.pause, new.pause
            )),
            (true, _) => trace::emit(format_args!("{call}: pause depth {} -> {}, nothing to do", old.pause, new.pause)),
        }
    }
    if new.enable > old.enable {
        stats::entered(new.enable);
    }
    match hook {
        Hook::None => {}
        Hook::Enter => backend().enter(arch),
        Hook::Leave => backend().leave(arch),
        Hook::Flush => {
            stats::flushed();
            backend().flush(arch);
        }
        Hook::Pause => {
            stats::paused();
            backend().pause(arch);
        }
        Hook::Resume => backend().resume(arch),
    }
    task.refresh_store_mode();
    // What the section deferred is owed by now.
    if matches!(hook, Hook::Leave | Hook::Flush | Hook::Pause) {
        pgtable_check::section_ended(call);
    }
    Ok(())
}

/// Opens a section. If paused, does nothing.
#[inline]
pub fn lazy_mmu_mode_enable() -> Result<(), LazyMmuMisuse> {
    if enter_outermost(task::current()) {
        return Ok(());
    }
    transition("lazy_mmu_mode_enable()", Counts::enable)
}

/// Closes a section: the outermost one leaves lazy mode, a nested one
/// flushes. If paused, does nothing.
#[inline]
pub fn lazy_mmu_mode_disable() -> Result<(), LazyMmuMisuse> {
    if leave_outermost(task::current()) {
        return Ok(());
    }
    transition("lazy_mmu_mode_disable()", Counts::disable)
}

/// [`transition`] of the outermost enable, (0, 0) to (1, 0), when nobody
/// traces, as Linux's `lazy_mmu_mode_enable()` makes it: the count in the
/// task, the arch hook (a match on the backend in use, inlined: every
/// backend's `enter` is empty), the section counted, the store mode of a
/// section. False, with nothing done, in any other case: the general path
/// takes it.
#[inline(always)]
fn enter_outermost(task: &task::Task) -> bool {
    let state = &task.lazy_mmu;
    if state.counts.get() != Counts::default() || task.in_irq() || trace::enabled() {
        return false;
    }
    // (No writes wait to be counted: outside active sections they are
    // counted as they are made, and every transition out of one counts
    // the section's.)
    debug_assert_eq!(state.unaccounted_writes.get(), 0);
    state.counts.set(Counts { enable: 1, pause: 0 });
    let backend = arch::selected();
    stats::entered_under(backend, 1);
    backend.enter(&state.arch);
    state.arch.set_section_store_mode(Some(backend));
    true
}

/// [`transition`] of the outermost disable, (1, 0) to (0, 0), when nobody
/// traces, as Linux's `lazy_mmu_mode_disable()` makes it: the count, the
/// section's writes added to the statistics, the arch hook (`batched`: the
/// pair if one is pending), the store mode outside sections, and the
/// checker's checkpoint (a test of a flag when it is off). False, with
/// nothing done, in any other case.
#[inline(always)]
fn leave_outermost(task: &task::Task) -> bool {
    let state = &task.lazy_mmu;
    if state.counts.get() != (Counts { enable: 1, pause: 0 }) || task.in_irq() || trace::enabled() {
        return false;
    }
    let backend = arch::selected();
    stats::account_under(backend, task);
    state.counts.set(Counts::default());
    backend.leave(&state.arch);
    state.arch.set_section_store_mode(None);
    pgtable_check::section_ended("lazy_mmu_mode_disable()");
    true
}

/// Turns lazy mode off, whatever the depth, until the matching resume.
pub fn lazy_mmu_mode_pause() -> Result<(), LazyMmuMisuse> {
    transition("lazy_mmu_mode_pause()", Counts::pause)
}

/// Undoes one pause; the last one turns lazy mode back on if a section is open.
pub fn lazy_mmu_mode_resume() -> Result<(), LazyMmuMisuse> {
    transition("lazy_mmu_mode_resume()", Counts::resume)
}

/// Is the current task in an active (enabled, not paused) section? Never
/// in interrupt context.
#[inline]
pub fn is_lazy_mmu_mode_active() -> bool {
    active_in(task::current())
}

/// Is `task`, the one running here, in an active section, and not in an
/// interrupt handler? Two loads from the task, nothing masked.
#[inline(always)]
fn active_in(task: &task::Task) -> bool {
    !task.in_irq() && task.lazy_mmu.is_active()
}

/// Writes `new(i)` into entry `i` of `run` wherever it is `Some`: the
/// one way the kernel stores descriptors into page tables
/// (`pgtable::write_entry` for one entry, `pgtable::write_ptes` for a run
/// of one table's level-3 entries). What a store does is the current
/// task's [`StoreMode`], decided when its state last changed
/// (`arch::lazy_mmu::write_run`); this layer counts the writes: in the
/// task in a section (no atomic; see `stats`), in the backend's totals
/// outside. Whatever watches (the checker, the trace) is told by the
/// store itself and changes nothing of it: this is the path the bench
/// measures and the checker checks. Returns how many entries it wrote.
///
/// # Safety
/// As `arch::lazy_mmu::write_run`: `run` lies in one live page table (or
/// one the caller owns, not linked yet), kept until the stores are made,
/// and each store is one the caller may make.
#[inline(always)]
pub(crate) unsafe fn write_run(run: Run, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize {
    let task = task::current();
    let state = &task.lazy_mmu.arch;
    let mode = state.store_mode();
    // SAFETY: as our caller guarantees.
    let written = unsafe { arch::write_run(state, run, new) };
    if written == 0 {
        return 0;
    }
    if mode == StoreMode::Now {
        stats::written_outside_section(written as u64);
        if pgtable_check::enabled() {
            pgtable_check::wrote_outside_section();
        }
    } else {
        let writes = &task.lazy_mmu.unaccounted_writes;
        writes.set(writes.get() + written as u64);
    }
    written
}

/// Stores the current task has queued and not made yet (`deferred-writes`
/// only; none in interrupt context, which never batches).
pub(crate) fn queued_stores() -> usize {
    if in_interrupt() { 0 } else { task::current().lazy_mmu.arch.queued() }
}

/// Makes every store the current task has asked for reach memory, before
/// TLB maintenance that must follow them, or before a mapping is handed to
/// another task (only `deferred-writes` has any left to make).
///
/// Only a task whose stores are queued has any to make (its store mode
/// says so: in an active section under `deferred-writes`, not in an
/// interrupt handler), so that the rest pay a load and a branch.
#[inline]
pub(crate) fn sync_stores() {
    let arch = &task::current().lazy_mmu.arch;
    if arch.queueing() {
        backend().sync(arch);
    }
}

/// Makes what the current task's section deferred visible now, as a
/// nested section's exit does (Linux's `arch_flush_lazy_mmu_mode()`), and
/// stays in lazy mode; outside any section there is nothing to pay. For a
/// mapping handed to another task before the section ends.
pub(crate) fn flush_section() {
    drop(enable());
}

/// Closes whatever sections and pauses the current task left open when its
/// code was abandoned (a fault or panic recovered by `exception::catch`
/// skips the guards' drops): deferred work is done as a leave would do it,
/// and the counts go back to zero. Returns the (enable, pause) counts found.
pub(crate) fn recover_abandoned() -> (u8, u8) {
    let task = task::current();
    let state = &task.lazy_mmu;
    let found = state.counts.get();
    stats::account(task);
    if state.is_active() {
        backend().leave(&state.arch);
    }
    state.counts.set(Counts::default());
    task.refresh_store_mode();
    (found.enable, found.pause)
}

/// Makes `backend` the one in use: the writes counted so far stay the
/// old one's, and the current task's stores follow the new one. Only
/// switch when no task is in a section.
pub(crate) fn select_backend(backend: Backend) {
    let previous = arch::selected();
    // Writes counted so far are the old backend's.
    stats::account_current();
    arch::set_selected(backend);
    stats::backend_switched(previous);
    if !in_interrupt() {
        task::current().refresh_store_mode();
    }
}

/// A backend selected for a while: dropping it selects the previous one.
#[must_use = "the previous backend comes back when this is dropped"]
pub struct BackendSelection {
    previous: Backend,
}

/// Selects `backend` until the returned value is dropped.
pub fn use_backend(backend: Backend) -> BackendSelection {
    let previous = selected_backend();
    select_backend(backend);
    BackendSelection { previous }
}

impl Drop for BackendSelection {
    fn drop(&mut self) {
        select_backend(self.previous);
    }
}

/// The backend in use.
pub fn selected_backend() -> Backend {
    arch::selected()
}

/// The hooks of the backend in use (called through a match, inlined).
#[inline(always)]
fn backend() -> Backend {
    arch::selected()
}

/// Where a section stands in the nesting, as the local-state patch's
/// (<20250908073931.4159362-3-kevin.brodsky@arm.com>) local
/// `lazy_mmu_state_t` recorded it (LAZY_MMU_DEFAULT / LAZY_MMU_NESTED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SectionKind {
    /// Opened lazy mode; its end leaves it.
    Outermost,
    /// Opened inside another section; its end flushes.
    Nested,
    /// Opened while paused: neither its start nor its end does anything.
    WhilePaused,
    /// Refused (the nesting count was at 255): its end does nothing.
    Refused,
    /// Opened in interrupt context, where lazy mode does not exist.
    InInterrupt,
}

/// An open lazy MMU section; dropping it closes the section.
#[must_use = "the section closes when this guard is dropped"]
pub struct LazyMmuSection {
    kind: SectionKind,
}

impl LazyMmuSection {
    pub fn kind(&self) -> SectionKind {
        self.kind
    }
}

/// Opens a section for the guard's lifetime.
#[inline]
pub fn enable() -> LazyMmuSection {
    if enter_outermost(task::current()) {
        return LazyMmuSection { kind: SectionKind::Outermost };
    }
    enable_nested()
}

/// [`enable`] other than an outermost section's, or with the trace on.
#[inline(never)]
fn enable_nested() -> LazyMmuSection {
    let state = &task::current().lazy_mmu;
    let Counts { enable, pause } = state.counts.get();
    let kind = match (pause, enable) {
        _ if in_interrupt() => SectionKind::InInterrupt,
        (1.., _) => SectionKind::WhilePaused,
        (0, 0) => SectionKind::Outermost,
        _ => SectionKind::Nested,
    };
    match lazy_mmu_mode_enable() {
        Ok(()) => LazyMmuSection { kind },
        Err(_) => LazyMmuSection { kind: SectionKind::Refused },
    }
}

impl Drop for LazyMmuSection {
    #[inline]
    fn drop(&mut self) {
        if matches!(self.kind, SectionKind::Outermost | SectionKind::Nested) {
            let _ = lazy_mmu_mode_disable();
        }
    }
}

/// A pause of lazy mode; dropping it resumes.
#[must_use = "lazy mode resumes when this guard is dropped"]
pub struct LazyMmuPause {
    armed: bool,
}

/// Pauses lazy mode for the guard's lifetime.
pub fn pause() -> LazyMmuPause {
    LazyMmuPause { armed: lazy_mmu_mode_pause().is_ok() }
}

impl Drop for LazyMmuPause {
    fn drop(&mut self) {
        if self.armed {
            let _ = lazy_mmu_mode_resume();
        }
    }
}
