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

use super::{AREAS, Area, GUARD_SIZE, Kind, free_frames};
use crate::mm::addr::{PAGE_SIZE, VirtAddr};
use crate::mm::area_alloc::Tree;
use crate::mm::slab::Kmalloc;
use crate::mm::{debug_pagealloc, pgtable_check, tlb};
use crate::planted::{Bug, planted};
use crate::sync::IrqSpinLock;
use crate::{boot_args, smp};

/// Are freed areas purged lazily (`vmap_lazy_purge`, on unless said off)?
static LAZY: AtomicBool = AtomicBool::new(true);

/// Areas freed and not yet flushed, by start address, and how many pages
/// they map (Linux's `purge_vmap_area_root` and `vmap_lazy_nr`). The lock
/// is held through a whole purge, as Linux's `vmap_purge_lock`: an
/// allocation that finds no room while another CPU purges waits for the
/// ranges that purge gives back.
struct PurgeList {
    areas: Tree<Area, Kmalloc>,
    lazy_pages: u64,
}

static PURGE: IrqSpinLock<PurgeList> = IrqSpinLock::new(PurgeList { areas: Tree::new(), lazy_pages: 0 });

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

/// Puts an area whose entries are cleared on the purge list, with what it
/// holds (`kind`), and purges if that takes the lazily freed pages past
/// [`lazy_max_pages`] (Linux's `free_vmap_area_noflush`).
pub(super) fn free_vmap_area_noflush(start: VirtAddr, size: u64, kind: Kind) {
    if debug_pagealloc::enabled() {
        tlb::flush_tlb_kernel_range(start, start.add(size));
    }
    pgtable_check::lazily_freed(start, size);
    let mut record = {
        let mut areas = AREAS.lock();
        let mut record = areas.taken.remove(start.as_u64()).expect("a live area");
        if planted(Bug::ReuseBeforePurge) {
            let spare = record.value_mut().spare.take().expect("every area has its spare node");
            for merged in
                areas.free.give_back(start.as_u64(), start.as_u64() + size + GUARD_SIZE, spare).into_iter().flatten()
            {
                areas.keep(merged);
            }
        }
        record
    };
    record.value_mut().kind = kind;
    let over = {
        let mut list = PURGE.lock();
        list.areas.insert(record);
        list.lazy_pages += size / PAGE_SIZE;
        list.lazy_pages > lazy_max_pages()
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
    let Some((start, _)) = list.areas.first() else { return false };
    // The areas do not overlap: the last to start ends last.
    let (last, area) = list.areas.at_or_below(u64::MAX).expect("not empty");
    let end = last + area.size;
    tlb::flush_tlb_kernel_range(VirtAddr::new(start), VirtAddr::new(end));
    while let Some((start, _)) = list.areas.first() {
        let mut record = list.areas.remove(start).expect("just found");
        let area = record.value_mut();
        if let Kind::Vmalloc(frames) = core::mem::replace(&mut area.kind, Kind::Reserved) {
            free_frames(frames.as_slice());
        }
        let mut areas = AREAS.lock();
        // (Gone already if the range was handed out early, on purpose.)
        if let Some(spare) = area.spare.take() {
            for merged in areas.free.give_back(start, start + area.size + GUARD_SIZE, spare).into_iter().flatten() {
                areas.keep(merged);
            }
        }
        drop(areas.area_spares.put(record));
    }
    list.lazy_pages = 0;
    true
}

/// Purges every lazily freed area now, so that no TLB holds a translation
/// of one (Linux's `vm_unmap_aliases`): before a frame that a freed area
/// mapped is reached some other way with other attributes. Nothing to
/// purge, nothing flushed.
pub fn vm_unmap_aliases() {
    purge_vmap_area_lazy();
}
