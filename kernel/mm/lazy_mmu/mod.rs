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
//! The state is the current task's (`task::LazyMmuState`). Only this layer
//! (and the context switch) calls the arch hooks (`arch::lazy_mmu`).
//!
//! In interrupt context every call here does nothing and nothing is
//! batched: a handler that writes an entry pays its barriers at once, and
//! the interrupted task's section is left exactly as it was.
//!
//! Rust code normally uses the guards, [`enable`] and [`pause`], so that
//! every enable has its disable and every pause its resume.

pub mod stats;

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use crate::arch::lazy_mmu::{self as arch, backend};
use crate::irq::in_interrupt;
use crate::mm::descriptor::Descriptor;
use crate::{println, task, trace};

/// A call the state did not allow. It is refused, reported once per kind,
/// and the state stays as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LazyMmuMisuse {
    /// enable with the nesting count already at 255.
    EnableOverflow,
    /// disable with no section open.
    DisableWithoutEnable,
    /// pause with the pause count already at 255.
    PauseOverflow,
    /// resume with no pause to undo.
    ResumeWithoutPause,
}

static REPORTED: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];
static MISUSES: AtomicU64 = AtomicU64::new(0);

fn refuse(misuse: LazyMmuMisuse) -> Result<(), LazyMmuMisuse> {
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

/// Opens a section. If paused, does nothing.
pub fn lazy_mmu_mode_enable() -> Result<(), LazyMmuMisuse> {
    if in_interrupt() {
        trace::emit(format_args!("lazy_mmu_mode_enable(): in interrupt context, does nothing"));
        return Ok(());
    }
    let task = task::current();
    let state = &task.lazy_mmu;
    if state.pause_count.get() > 0 {
        trace::emit(format_args!("lazy_mmu_mode_enable(): paused, does nothing"));
        return Ok(());
    }
    let depth = state.enable_count.get();
    if depth == u8::MAX {
        return refuse(LazyMmuMisuse::EnableOverflow);
    }
    let what = if depth == 0 { "arch enter" } else { "nested, nothing to do" };
    trace::emit(format_args!("lazy_mmu_mode_enable(): depth {depth} -> {}, {what}", depth + 1));
    state.enable_count.set(depth + 1);
    stats::entered(depth + 1);
    if depth == 0 {
        backend().enter(&task.arch_lazy);
    }
    Ok(())
}

/// Closes a section: the outermost one leaves lazy mode, a nested one
/// flushes. If paused, does nothing.
pub fn lazy_mmu_mode_disable() -> Result<(), LazyMmuMisuse> {
    if in_interrupt() {
        trace::emit(format_args!("lazy_mmu_mode_disable(): in interrupt context, does nothing"));
        return Ok(());
    }
    let task = task::current();
    let state = &task.lazy_mmu;
    if state.pause_count.get() > 0 {
        trace::emit(format_args!("lazy_mmu_mode_disable(): paused, does nothing"));
        return Ok(());
    }
    let depth = state.enable_count.get();
    if depth == 0 {
        return refuse(LazyMmuMisuse::DisableWithoutEnable);
    }
    state.enable_count.set(depth - 1);
    let what = if depth == 1 { "arch leave" } else { "nested exit, arch flush" };
    trace::emit(format_args!("lazy_mmu_mode_disable(): depth {depth} -> {}, {what} ({})", depth - 1, task.arch_lazy));
    if depth == 1 {
        backend().leave(&task.arch_lazy);
    } else {
        stats::flushed();
        backend().flush(&task.arch_lazy);
    }
    Ok(())
}

/// Turns lazy mode off, whatever the depth, until the matching resume.
pub fn lazy_mmu_mode_pause() -> Result<(), LazyMmuMisuse> {
    if in_interrupt() {
        trace::emit(format_args!("lazy_mmu_mode_pause(): in interrupt context, does nothing"));
        return Ok(());
    }
    let task = task::current();
    let state = &task.lazy_mmu;
    let paused = state.pause_count.get();
    if paused == u8::MAX {
        return refuse(LazyMmuMisuse::PauseOverflow);
    }
    state.pause_count.set(paused + 1);
    let leaves = paused == 0 && state.enable_count.get() > 0;
    let what = if leaves { "arch pause (leaves the mode)" } else { "nothing to do" };
    trace::emit(format_args!("lazy_mmu_mode_pause(): pause depth {paused} -> {}, {what}", paused + 1));
    if leaves {
        stats::paused();
        backend().pause(&task.arch_lazy);
    }
    Ok(())
}

/// Undoes one pause; the last one turns lazy mode back on if a section is open.
pub fn lazy_mmu_mode_resume() -> Result<(), LazyMmuMisuse> {
    if in_interrupt() {
        trace::emit(format_args!("lazy_mmu_mode_resume(): in interrupt context, does nothing"));
        return Ok(());
    }
    let task = task::current();
    let state = &task.lazy_mmu;
    let paused = state.pause_count.get();
    if paused == 0 {
        return refuse(LazyMmuMisuse::ResumeWithoutPause);
    }
    state.pause_count.set(paused - 1);
    let enters = paused == 1 && state.enable_count.get() > 0;
    let what = if enters { "arch resume (back in the mode)" } else { "nothing to do" };
    trace::emit(format_args!("lazy_mmu_mode_resume(): pause depth {paused} -> {}, {what}", paused - 1));
    if enters {
        backend().resume(&task.arch_lazy);
    }
    Ok(())
}

/// Is the current task in an active (enabled, not paused) section? Never
/// in interrupt context.
pub fn is_lazy_mmu_mode_active() -> bool {
    !in_interrupt() && task::current().lazy_mmu.is_active()
}

/// Stores `desc` at `slot` through the backend: the only way
/// `pgtable::write_entry` writes a table.
///
/// # Safety
/// `slot` is an entry of a live page table and stays one until the store
/// is made (under `deferred-writes`, until the section is flushed).
pub(crate) unsafe fn set_entry(slot: *mut u64, desc: Descriptor) {
    let task = task::current();
    let lazy = is_lazy_mmu_mode_active();
    stats::entry_written(lazy);
    // SAFETY: as our caller guarantees.
    unsafe { backend().set_entry(&task.arch_lazy, slot, desc, lazy) };
}

/// Makes every store the current task has asked for reach memory, before
/// TLB maintenance that must follow them, or before a mapping is handed to
/// another task (only `deferred-writes` has any left to make).
pub(crate) fn sync_stores() {
    if is_lazy_mmu_mode_active() {
        backend().sync(&task::current().arch_lazy);
    }
}

/// Closes whatever sections and pauses the current task left open when its
/// code was abandoned (a fault or panic recovered by `exception::catch`
/// skips the guards' drops): deferred work is done as a leave would do it,
/// and the counts go back to zero. Returns the (enable, pause) counts found.
pub fn recover_abandoned() -> (u8, u8) {
    let task = task::current();
    let state = &task.lazy_mmu;
    let found = (state.enable_count.get(), state.pause_count.get());
    if state.is_active() {
        backend().leave(&task.arch_lazy);
    }
    state.enable_count.set(0);
    state.pause_count.set(0);
    found
}

/// Selects a backend by name (see `arch::lazy_mmu::BACKENDS`); false if
/// there is none of that name. Only switch when no task is in a section.
pub fn select_backend(name: &str) -> bool {
    let previous = arch::backend_index();
    if !arch::select_backend(name) {
        return false;
    }
    stats::backend_switched(previous);
    true
}

/// A backend selected for a while: dropping it selects the previous one.
#[must_use = "the previous backend comes back when this is dropped"]
pub struct BackendSelection {
    previous: &'static str,
}

/// Selects backend `name` until the returned value is dropped; None (and
/// nothing changed) if there is no backend of that name.
pub fn use_backend(name: &str) -> Option<BackendSelection> {
    let previous = backend_name();
    select_backend(name).then_some(BackendSelection { previous })
}

impl Drop for BackendSelection {
    fn drop(&mut self) {
        select_backend(self.previous);
    }
}

/// The name of the backend in use.
pub fn backend_name() -> &'static str {
    backend().name()
}

/// Where a section stands in the nesting, as seed 003's local
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
pub fn enable() -> LazyMmuSection {
    let state = &task::current().lazy_mmu;
    let kind = match (state.pause_count.get(), state.enable_count.get()) {
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
