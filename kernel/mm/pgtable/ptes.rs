//! Runs of level-3 entries of one table ([`Ptes`]), and the batched
//! stores that write them: [`set_ptes`] (Linux's `set_ptes`: consecutive
//! pages), [`modify_ptes`] and [`clear_ptes`].
//!
//! A run goes down the one store path whole (`lazy_mmu::write_run`):
//! each store is what [`write_entry`] would make of it, with the same
//! barriers, counts and checks, and what a run saves is the bookkeeping
//! around each store. In an active `batched` section the run is one plain
//! loop of stores and the pair is owed once, after it, if any entry was
//! valid (as arm64's `set_ptes` pays its barriers once for `nr` entries);
//! under `eager` each valid store pays its pair, under `deferred-writes`
//! each is queued. The checker and the trace watch the same loop.

use core::marker::PhantomData;
use core::ptr::read_volatile;

use super::*;
use crate::arch::observe::Run;
use crate::mm::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mm::descriptor::{Descriptor, Level};
use crate::mm::lazy_mmu;

/// `len` consecutive level-3 entries of one table, from the entry for
/// `va()`. Like [`EntryRef`], it borrows the walk that found the table.
#[derive(Clone, Copy, Debug)]
pub struct Ptes<'walk> {
    first: *mut u64,
    va: VirtAddr,
    len: usize,
    walk: PhantomData<&'walk Walking>,
}

impl<'walk> Ptes<'walk> {
    /// The entries of the level-3 table at `table` for [va, va + len pages).
    ///
    /// # Safety
    /// As [`EntryRef::new`] for `table` at level 3; the `len` entries
    /// from the one for `va` lie in that table (they do not cross a
    /// 2 MiB boundary).
    #[inline]
    pub(in crate::mm) unsafe fn new(table: PhysAddr, va: VirtAddr, len: usize) -> Ptes<'walk> {
        debug_assert!(Level::L3.index(va.as_u64()) + len <= 512, "a run of entries crosses its table's end");
        // SAFETY: as our caller guarantees.
        let first = unsafe { EntryRef::<'walk>::new(table, Level::L3, va) };
        Ptes { first: first.as_ptr(), va: first.va, len, walk: PhantomData }
    }

    /// The first address the run translates.
    #[inline]
    pub fn va(&self) -> VirtAddr {
        self.va
    }

    /// How many entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `i`th entry of the run.
    #[inline]
    pub fn entry(&self, i: usize) -> EntryRef<'walk> {
        assert!(i < self.len, "entry {i} of a run of {}", self.len);
        // SAFETY: inside the run, so inside its table, which the walk keeps.
        unsafe { EntryRef::from_parts(self.first.add(i), Level::L3, self.va.add(i as u64 * PAGE_SIZE)) }
    }

    /// What the `i`th entry holds.
    #[inline]
    pub fn read(&self, i: usize) -> Descriptor {
        assert!(i < self.len, "entry {i} of a run of {}", self.len);
        // SAFETY: an entry of a live page-table page, as in EntryRef::read.
        Descriptor(unsafe { read_volatile(self.first.add(i)) })
    }
}

/// One slot of a run, as [`write_ptes`] hands it to its callback.
pub struct PteSlot {
    ptr: *mut u64,
    index: usize,
}

impl PteSlot {
    /// Its place in the run.
    #[inline(always)]
    pub fn index(&self) -> usize {
        self.index
    }

    /// What it holds.
    #[inline(always)]
    pub fn read(&self) -> Descriptor {
        // SAFETY: an entry of the run's live table, as in EntryRef::read.
        Descriptor(unsafe { read_volatile(self.ptr) })
    }
}

/// Writes `new(slot)` into every slot of the run where it is `Some`
/// (`new` may read the slot first): the one loop behind [`set_ptes`],
/// [`modify_ptes`] and [`clear_ptes`], a run through the one store path
/// (`lazy_mmu::write_run`). `new` only computes descriptors from the
/// slot's index and old value; it must not write page tables itself, and
/// it may be asked more than once for a slot (by the checker and the
/// trace, before the store). It is `Copy` (capture by value: `move`), so
/// that the store loop works on its own copy, in registers. Returns how
/// many entries it wrote.
///
/// # Safety
/// Each store is one [`write_entry`] would be allowed to make.
#[inline(always)]
pub unsafe fn write_ptes(ptes: &Ptes<'_>, new: impl Fn(&PteSlot) -> Option<Descriptor> + Copy) -> usize {
    let first = ptes.first;
    let run = Run { first, len: ptes.len, level: Level::L3, va: ptes.va.as_u64() };
    // SAFETY: the run's entries lie in its live table, which the walk
    // keeps (see `Ptes::new`); the stores are our caller's to make.
    unsafe { lazy_mmu::write_run(run, move |index| new(&PteSlot { ptr: first.wrapping_add(index), index })) }
}

/// Maps the run to consecutive pages (Linux's `set_ptes(mm, addr, ptep,
/// pte, nr)`): entry `i` gets `first` with its output address moved on
/// by `i` pages (`Descriptor::advance_pfn`: an add, so that the store loop
/// keeps one running descriptor, as Linux's `set_ptes` does).
///
/// # Safety
/// As [`write_entry`], for every page the run maps.
#[inline(always)]
pub unsafe fn set_ptes(ptes: &Ptes<'_>, first: Descriptor) {
    // SAFETY: as our caller guarantees.
    unsafe { write_ptes(ptes, move |slot| Some(first.advance_pfn(slot.index() as u64))) };
}

/// Replaces every valid entry of the run with `f(entry)` (a permission
/// change: `Descriptor::read_only`, one bit operation on the word); holes
/// stay holes. Returns how many entries it changed.
///
/// # Safety
/// As [`write_entry`], for every change `f` makes.
#[inline(always)]
pub unsafe fn modify_ptes(ptes: &Ptes<'_>, f: impl Fn(Descriptor) -> Descriptor + Copy) -> usize {
    // SAFETY: as our caller guarantees.
    unsafe {
        write_ptes(ptes, move |slot| {
            let old = slot.read();
            old.is_valid().then(|| f(old))
        })
    }
}

/// Clears every valid entry of the run (as Linux's `vunmap_pte_range`
/// does, slot by slot); holes stay untouched. Returns how many it cleared.
///
/// # Safety
/// As [`write_entry`]: what the run mapped is flushed from the TLB before
/// it is used otherwise.
#[inline(always)]
pub unsafe fn clear_ptes(ptes: &Ptes<'_>) -> usize {
    // SAFETY: as our caller guarantees.
    unsafe { write_ptes(ptes, |slot| slot.read().is_valid().then_some(Descriptor::INVALID)) }
}
