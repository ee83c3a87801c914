//! The ideal loops: map, modify and unmap done by hand on the kernel's
//! live tables, with nothing but what the architecture asks for, so that
//! each lazymmu figure has a target measured in the same boot.
//!
//! Per 2 MiB, one level-3 table is made (zeroed, `dmb ishst`) and
//! linked; then one plain store per page, in a tight loop; then one
//! `dsb ishst; isb` for the whole call, and, where entries were cleared or
//! made read-only, one TLB flush of the range (with walks when tables were
//! taken away, before they are freed). No walk per page, no lazy MMU
//! bookkeeping, no counting, no checker: that is everything lazymmu adds,
//! and what its ratio to these loops measures.
//!
//! The stores bypass the store path on purpose, so the page-table rules
//! checker would not know of them: the bench runs these loops only with
//! the checker off (its default).

use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};

use super::workloads::{WorkloadError, with_fresh_area};
use super::{Meter, Sample};
use lazymmu::barrier;
use lazymmu::mm::{
    self, Attributes, BLOCK_2M, Descriptor, Level, PAGE_SIZE, PhysAddr, VirtAddr,
    pgtable::{self, MapError, Walking},
    phys_to_virt,
};

/// The level-3 table for one 2 MiB chunk, reached through the linear map.
fn slots(table: PhysAddr) -> *mut u64 {
    phys_to_virt(table).as_mut_ptr::<u64>()
}

/// Map, make read-only and unmap `pages` pages of fresh frames at a fresh
/// 2 MiB-aligned area, as `workloads::map_modify_unmap` does through
/// lazymmu: (map, modify, unmap), with the level-3 tables made by map and
/// freed by unmap. Whatever fails, everything it took goes back.
pub fn map_modify_unmap(pages: u64) -> Result<[Sample; 3], WorkloadError> {
    let measured = with_fresh_area(pages, |va, frames| {
        let walk = pgtable::walking();
        timed(&walk, va, frames, pages)
    });
    // The tables above level 3 it found or made go too: the next run, of
    // either kind, starts from none.
    mm::reclaim_page_tables();
    measured
}

/// The three timed steps, on the area at `va`, under `walk`.
fn timed(walk: &Walking, va: VirtAddr, frames: PhysAddr, pages: u64) -> Result<[Sample; 3], WorkloadError> {
    let size = pages * PAGE_SIZE;
    let chunks = size.div_ceil(BLOCK_2M) as usize;
    // The level-2 entries the tables go into (and the tables above them),
    // found before timing: lazymmu's walk to them is timed, but a walk per
    // 2 MiB is noise beside 512 stores.
    let mut l2 = Vec::new();
    l2.try_reserve_exact(chunks).map_err(|_| MapError::OutOfMemory)?;
    for i in 0..chunks {
        l2.push(walk.walk_create(va.add(i as u64 * BLOCK_2M), Level::L2)?);
    }
    let template = Descriptor::leaf_template(Level::L3, Attributes::KERNEL_RW);

    let map = Meter::start();
    // One zeroed table per 2 MiB (each ordered by a dmb before its link).
    let tables = pgtable::alloc_tables(chunks)?;
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
    mm::flush_tlb_kernel_range(va, va.add(size));
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
    // Leaves and walks both, before the tables are freed.
    mm::flush_tlb_kernel_pgtables(va, va.add(size));
    pgtable::free_unlinked_tables(tables);
    let mut unmap = unmap.stop();
    unmap.counts.entries = pages + chunks as u64;
    Ok([map, modify, unmap])
}
