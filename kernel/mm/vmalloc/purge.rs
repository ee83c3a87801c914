//! The lazy vfree purge: TLB-flush batching, the sibling of the barrier
//! batching of lazy MMU mode (Linux's `free_vmap_area_noflush`,
//! `__purge_vmap_area_lazy`, `vm_unmap_aliases` in mm/vmalloc.c).
//!
//! `vfree` and `vunmap` clear the area's entries (a clear owes no barrier
//! of its own) and flush nothing: the area goes on the purge list, its
//! address range and, for vmalloc, its frames still held. Until a purge
//! flushes it, a CPU's TLB may still translate the old addresses to the
//! old frames. That is harmless as long as nothing else can be reached
//! through them: the range is not handed out again and the frames are not
//! freed before the purge (Linux frees a vfree'd area's pages at once and
//! keeps only the range; this kernel's checker does not allow a frame a
//! TLB may still reach to be freed, so the frames wait too).
//!
//! A purge flushes the union of the listed areas once, one range (or the
//! whole TLB, as `tlb_policy` chooses for its size), then gives back the
//! frames and the ranges. It runs when the lazily freed pages pass
//! [`lazy_max_pages`], when an allocation finds no room (then the
//! allocation is tried once more), and on [`vm_unmap_aliases`], which a
//! caller about to change what its frames may be reached as
//! (`set_memory_*`) calls first, as arm64's `change_memory_common` does.
//! With debug_pagealloc on, each area's range is flushed at once as well
//! (Linux's `free_unmap_vmap_area`): a use after free then faults.
//!
//! `vmap_lazy_purge=off` on the command line flushes and gives back every
//! area at once instead, as before the purge existed.

use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::{AREAS, Area, GUARD_SIZE, Kind, Record, free_frames};
use crate::mm::addr::{PAGE_SIZE, VirtAddr};
use crate::mm::area_alloc::Spares;
use crate::mm::slab::Kmalloc;
use crate::mm::{debug_pagealloc, pgtable_check, tlb};
use crate::planted::{Bug, planted};
use crate::sync::IrqSpinLock;
use crate::{boot_args, smp};

/// Are freed areas purged lazily (`vmap_lazy_purge`, on unless said off)?
static LAZY: AtomicBool = AtomicBool::new(true);

/// Areas freed and not yet flushed, the union of their ranges, and how
/// many pages they map (Linux's `purge_vmap_area_root`, `vmap_lazy_nr`).
/// Nothing looks an area up here and the purge takes them all, so the
/// list is a stack threaded through the areas' own tree nodes (as Linux's
/// `vmap_purge_list` was an `llist`): a free pushes in a few stores, where
/// a tree insert cost a split and a merge of a tree as deep as the list
/// is long. The lock is held through a whole purge, as Linux's
/// `vmap_purge_lock`: an allocation that finds no room while another CPU
/// purges waits for the ranges that purge gives back.
struct PurgeList {
    areas: Spares<Area, Kmalloc>,
    /// [start, end) covers every listed area's mapped bytes (empty if none).
    start: u64,
    end: u64,
    lazy_pages: u64,
}

static PURGE: IrqSpinLock<PurgeList> =
    IrqSpinLock::new(PurgeList { areas: Spares::new(usize::MAX), start: u64::MAX, end: 0, lazy_pages: 0 });

pub(super) fn init() {
    LAZY.store(boot_args::bool_option("vmap_lazy_purge"), Relaxed);
}

pub(super) fn lazy() -> bool {
    LAZY.load(Relaxed)
}

/// Turns the lazy purge on or off (the bench and the tests compare the
/// two in one boot); returns what it was. Turning it off purges.
pub fn set_vmap_lazy_purge(on: bool) -> bool {
    let was = LAZY.swap(on, Relaxed);
    if !on {
        vm_unmap_aliases();
    }
    was
}

/// The lazily freed pages above which a free purges: 32 MiB worth, times
/// log2 of the CPUs online plus one (Linux's `fls(num_online_cpus())`):
/// more CPUs, more to flush on each, so each flush is made to count for
/// more.
pub fn lazy_max_pages() -> u64 {
    let cpus = smp::online_cpus().max(1) as u64;
    let fls = u64::from(u64::BITS - cpus.leading_zeros());
    fls * ((32 << 20) / PAGE_SIZE)
}

/// Pages freed lazily and not yet purged (Linux's `vmap_lazy_nr`).
pub fn lazy_pages() -> u64 {
    PURGE.lock().lazy_pages
}

/// Puts an area taken out of the live ones (`take_area`), its entries
/// cleared, on the purge list with what it holds, and purges if that
/// takes the lazily freed pages past [`lazy_max_pages`] (Linux's
/// `free_vmap_area_noflush`).
pub(super) fn free_vmap_area_noflush(mut record: Record<Area>) {
    let (start, size) = (record.key(), record.value().size);
    if debug_pagealloc::enabled() {
        tlb::flush_tlb_kernel_range(VirtAddr::new(start), VirtAddr::new(start + size));
    }
    if pgtable_check::enabled() {
        pgtable_check::lazily_freed(VirtAddr::new(start), size);
    }
    if planted(Bug::ReuseBeforePurge) {
        let spare = record.value_mut().spare.take().expect("every area has its spare node");
        let mut areas = AREAS.lock();
        for merged in areas.free.give_back(start, start + size + GUARD_SIZE, spare).into_iter().flatten() {
            areas.keep(merged);
        }
    }
    let max = lazy_max_pages();
    let over = {
        let mut list = PURGE.lock();
        let full = list.areas.put(record);
        debug_assert!(full.is_none(), "the list has no bound");
        list.start = list.start.min(start);
        list.end = list.end.max(start + size);
        list.lazy_pages += size / PAGE_SIZE;
        list.lazy_pages > max
    };
    if over {
        purge_vmap_area_lazy();
    }
}

/// Flushes every listed area's range with one flush of their union, then
/// gives back their frames and ranges; false if the list was empty (and
/// nothing was flushed). Linux's `__purge_vmap_area_lazy`.
pub(super) fn purge_vmap_area_lazy() -> bool {
    let mut list = PURGE.lock();
    if list.areas.is_empty() {
        return false;
    }
    tlb::flush_tlb_kernel_range(VirtAddr::new(list.start), VirtAddr::new(list.end));
    while let Some(mut record) = list.areas.take() {
        if let Kind::Vmalloc(frames) = core::mem::replace(&mut record.value_mut().kind, Kind::Reserved) {
            free_frames(frames.as_slice());
        }
        AREAS.lock().release(record);
    }
    (list.start, list.end, list.lazy_pages) = (u64::MAX, 0, 0);
    true
}

/// Purges every lazily freed area now, so that no TLB holds a translation
/// of one (Linux's `vm_unmap_aliases`): before a frame that a freed area
/// mapped is reached some other way with other attributes. Nothing to
/// purge, nothing flushed.
pub fn vm_unmap_aliases() {
    purge_vmap_area_lazy();
}
