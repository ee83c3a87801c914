//! A model of KASAN's vmalloc shadow population (Linux mm/kasan/shadow.c),
//! kept to show why `lazy_mmu_mode_pause()` exists (seed 000).
//!
//! Two tasks populate the same shadow page through `apply_to_page_range`.
//! Each callback checks the entry, takes a frame, and under a spinlock maps
//! it only if the entry is still none; the loser frees its frame. Here each
//! task is switched out right after it drops the lock, while its section is
//! still open (preemption is off, so that is the only switch): on one CPU
//! that is the moment a second CPU would race in.
//!
//! - `batched`: the store is in memory at once; the second task sees it.
//! - `deferred-writes` without pause: the winner's store is still queued in
//!   its task, so the loser also reads "none" and maps a second frame over
//!   it when its own queue is applied: a double mapping, and a leaked frame.
//! - with pause/resume around the locked part the store is made before the
//!   lock is dropped, and the race is gone under every backend.

use alloc::vec::Vec;

use super::addr::{PAGE_SIZE, PhysAddr};
use super::apply::apply_to_page_range;
use super::descriptor::{Attributes, Descriptor, Entry, Level};
use super::pgtable::{self, EntryRef};
use super::vmalloc::{VmallocError, free_vm_area, get_vm_area};
use super::{frame_alloc, lazy_mmu, tlb};
use crate::sched;

/// The lock KASAN takes (init_mm's page_table_lock). Not an IRQ lock: its
/// holder may be switched out, as a task on another CPU would keep running.
static SHADOW_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// The frames each populate call mapped, for the race's bookkeeping.
static INSTALLED: spin::Mutex<Vec<PhysAddr>> = spin::Mutex::new(Vec::new());

/// What one race between two populating tasks did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceOutcome {
    /// Times a task found the entry none under the lock and mapped a frame.
    pub installs: usize,
    /// Installs beyond the first: the shadow page was mapped twice.
    pub double_mappings: usize,
}

/// The apply_to_page_range callback, `kasan_populate_vmalloc_pte` in shape.
fn populate(entry: &EntryRef, pause: bool) -> Result<(), VmallocError> {
    let paused = pause.then(lazy_mmu::pause);
    if entry.read().is_valid() {
        return Ok(());
    }
    let frame = frame_alloc::alloc_frame().map_err(|_| VmallocError::OutOfMemory)?;
    let lock = SHADOW_LOCK.lock();
    let install = !entry.read().is_valid();
    if install {
        pgtable::write_entry(entry, Descriptor::leaf(Level::L3, frame, Attributes::KERNEL_RW));
    }
    drop(lock);
    drop(paused);
    if install {
        INSTALLED.lock().push(frame);
    } else {
        frame_alloc::free_frame(frame).expect("allocated above");
    }
    // The other task runs now, while this one's section is still open.
    sched::yield_now();
    Ok(())
}

/// Races two tasks populating one shadow page; `pause` puts pause/resume
/// around the locked part. Leaves no frame, table or area behind.
pub fn shadow_race(pause: bool) -> Result<RaceOutcome, VmallocError> {
    let va = get_vm_area(PAGE_SIZE, PAGE_SIZE)?;
    // The tables exist before the race, so it is about the leaf entry alone
    // (a table linked inside one task's section would race the same way).
    if let Err(e) = pgtable::walk_create(pgtable::kernel_root(), va, Level::L3) {
        free_vm_area(va)?;
        return Err(e.into());
    }
    INSTALLED.lock().clear();
    // The tasks switch exactly where `populate` yields, every time.
    let preemption = sched::set_preemption(false);
    let racer = move || {
        apply_to_page_range(va, PAGE_SIZE, |entry: &EntryRef| populate(entry, pause)).map(|_| ())
    };
    let tasks = [sched::spawn("kasan/a", move || racer().expect("populate")), sched::spawn("kasan/b", move || racer().expect("populate"))];
    let mut failure = None;
    for task in tasks {
        match task.map_err(VmallocError::from).map(|t| t.join()) {
            Ok(Ok(())) => {}
            Ok(Err(_)) => failure = Some(VmallocError::OutOfMemory),
            Err(e) => failure = Some(e),
        }
    }
    sched::set_preemption(preemption);
    let installed = core::mem::take(&mut *INSTALLED.lock());
    // Clean up: the frame in the entry now, and any it replaced.
    let entry = pgtable::walk(pgtable::kernel_root(), va);
    if let Entry::Leaf { .. } = entry.entry() {
        pgtable::write_entry(&entry, Descriptor::INVALID);
        tlb::flush_tlb_kernel_range(va, va.add(PAGE_SIZE));
    }
    for pa in &installed {
        frame_alloc::free_frame(*pa).expect("installed by populate");
    }
    pgtable::free_empty_tables(pgtable::kernel_root(), va, PAGE_SIZE);
    free_vm_area(va)?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(RaceOutcome { installs: installed.len(), double_mappings: installed.len().saturating_sub(1) })
}
