//! The ideal loops: map, modify and unmap done by hand on the kernel's
//! live tables, with nothing but what the architecture asks for, so that
//! each lazymmu figure has a target measured in the same boot.
//!
//! Per 2 MiB, one level-3 table is made (zeroed, `dmb ishst`) and linked,
//! or found once; then one plain store per page, in a tight loop; then
//! one `dsb ishst; isb` for the whole call, and, where entries were
//! cleared or made read-only, one TLB flush of the range (with walks when
//! tables were taken away). No walk per page, no lazy MMU bookkeeping, no
//! counting, no checker: that is everything lazymmu adds, and what its
//! ratio to these loops measures.
//!
//! The stores bypass the store path on purpose, so the page-table rules
//! checker would not know of them: the bench runs these loops only with
//! the checker off (its default).

use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};

use super::workloads::WorkloadError;
use super::{Meter, Sample};
use crate::arch::barrier;
use crate::mm::addr::{BLOCK_2M, PAGE_SIZE, PhysAddr};
use crate::mm::descriptor::{Attributes, Descriptor, Entry, Level};
use crate::mm::pgtable::{self, MapError};
use crate::mm::{frame_alloc, phys_to_virt, tlb, vmalloc};

/// The level-3 table for one 2 MiB chunk, reached through the linear map.
fn slots(table: PhysAddr) -> *mut u64 {
    phys_to_virt(table).as_mut_ptr::<u64>()
}

/// Map, make read-only and unmap `pages` pages of fresh frames at a fresh
/// 2 MiB-aligned area, as `workloads::map_modify_unmap` does through
/// lazymmu: (map, modify, unmap), with the tables made by map and freed by
/// unmap.
pub fn map_modify_unmap(pages: u64) -> Result<[Sample; 3], WorkloadError> {
    let frames = frame_alloc::alloc_contiguous(pages as usize, PAGE_SIZE).map_err(MapError::from)?;
    let size = pages * PAGE_SIZE;
    let chunks = size.div_ceil(BLOCK_2M) as usize;
    let mut tables = Vec::new();
    let taken = tables
        .try_reserve_exact(chunks)
        .map_err(|_| MapError::OutOfMemory)
        .and_then(|()| pgtable::alloc_tables(chunks).map(|t| tables = t));
    let va = match taken.map_err(WorkloadError::from).and_then(|()| Ok(vmalloc::get_vm_area(size, BLOCK_2M)?)) {
        Ok(va) => va,
        Err(e) => {
            pgtable::free_unlinked_tables(tables);
            frame_alloc::free_frames(frames, pages as usize).expect("allocated above");
            return Err(e);
        }
    };
    let walk = pgtable::walking();
    // The level-2 entries the tables go into (and the tables above them),
    // found before timing: lazymmu's plan is timed, but a walk per 2 MiB
    // is noise beside 512 stores.
    let mut l2 = Vec::with_capacity(chunks);
    for i in 0..chunks {
        let entry = walk.walk_create(va.add(i as u64 * BLOCK_2M), Level::L2)?;
        l2.push(entry);
    }
    let template = Descriptor::leaf_template(Level::L3, Attributes::KERNEL_RW);

    let map = Meter::start();
    let mut page = 0;
    for (entry, &table) in l2.iter().zip(&tables) {
        // SAFETY: the level-2 entry of the bench's own area, invalid until
        // now; the table's zeroing was ordered by alloc_tables' dmb.
        unsafe { write_volatile(entry.as_ptr(), Descriptor::table(table).0) };
        let slots = slots(table);
        let n = (pages - page).min(512);
        for i in 0..n {
            let desc = template.with_output(frames.add((page + i) * PAGE_SIZE));
            // SAFETY: the bench's own table, linked above.
            unsafe { write_volatile(slots.add(i as usize), desc.0) };
        }
        page += n;
    }
    barrier::dsb_ishst();
    barrier::isb();
    let mut map = map.stop();
    map.counts.entries = pages + chunks as u64;

    let modify = Meter::start();
    let mut page = 0;
    for &table in &tables {
        let slots = slots(table);
        let n = (pages - page).min(512);
        for i in 0..n as usize {
            // SAFETY: the bench's own live table: one entry made read-only.
            unsafe { write_volatile(slots.add(i), Descriptor(read_volatile(slots.add(i))).read_only().0) };
        }
        page += n;
    }
    barrier::dsb_ishst();
    barrier::isb();
    tlb::flush_tlb_kernel_range(va, va.add(size));
    let mut modify = modify.stop();
    modify.counts.entries = pages;

    let unmap = Meter::start();
    let mut page = 0;
    for (entry, &table) in l2.iter().zip(&tables) {
        let slots = slots(table);
        let n = (pages - page).min(512);
        for i in 0..n as usize {
            // SAFETY: the bench's own live table: its entries cleared.
            unsafe { write_volatile(slots.add(i), 0) };
        }
        // SAFETY: the level-2 entry of the bench's own area: the table unlinked.
        unsafe { write_volatile(entry.as_ptr(), 0) };
        page += n;
    }
    // Leaves and walks both: the tables are freed right after.
    tlb::flush_tlb_kernel_pgtables(va, va.add(size));
    let mut unmap = unmap.stop();
    unmap.counts.entries = pages + chunks as u64;

    debug_assert!(l2.iter().all(|e| e.entry() == Entry::Invalid));
    drop(l2);
    drop(walk);
    pgtable::free_unlinked_tables(tables);
    frame_alloc::free_frames(frames, pages as usize).expect("allocated above");
    vmalloc::free_vm_area(va)?;
    // The tables above level 3 it found or made go too: the next run, of
    // either kind, starts from none.
    vmalloc::reclaim_page_tables();
    Ok([map, modify, unmap])
}
