//! Page-table pages: allocated zeroed and ordered, freed when never linked.

use alloc::vec::Vec;

use super::*;
use crate::arch::barrier;
use crate::mm::addr::{PAGE_SIZE, PhysAddr};
use crate::mm::frame_alloc::{self};
use crate::mm::{lazy_mmu, pgtable_check, phys_to_virt};
use crate::planted::{Bug, planted};

/// A zeroed page-table page. The zeroing must be visible to the walker
/// before the page is linked into a table, which `dmb ishst` orders.
pub fn alloc_table() -> Result<PhysAddr, MapError> {
    let pa = frame_alloc::alloc_frame()?;
    // SAFETY: a fresh frame, ours alone, mapped at phys_to_virt(pa).
    unsafe { core::ptr::write_bytes(phys_to_virt(pa).as_mut_ptr::<u8>(), 0, PAGE_SIZE as usize) };
    pgtable_check::table_allocated(pa);
    if !planted(Bug::SkipTableDmb) {
        barrier::dmb_ishst();
    }
    Ok(pa)
}

/// `count` zeroed page-table pages for a change to link later, or, if
/// frames run out, none at all.
pub fn alloc_tables(count: usize) -> Result<Vec<PhysAddr>, MapError> {
    let mut tables = Vec::new();
    tables.try_reserve_exact(count).map_err(|_| MapError::OutOfMemory)?;
    for _ in 0..count {
        match alloc_table() {
            Ok(pa) => tables.push(pa),
            Err(e) => {
                free_unlinked_tables(tables);
                return Err(e);
            }
        }
    }
    Ok(tables)
}

/// Frees page-table pages from [`alloc_tables`] that were never linked.
pub fn free_unlinked_tables(tables: Vec<PhysAddr>) {
    for pa in tables {
        frame_alloc::free_frame(pa).expect("allocated by alloc_tables");
    }
}

/// The entries of a table built inside a lazy section are in memory
/// (under `deferred-writes` they may still be queued) and ordered before
/// the store that links the table where a walker can reach it: a walker
/// that sees the link must not read the zeroes under it (Linux's
/// `split_pmd`/`split_pud`: `dsb(ishst)` before `pmd_populate`).
pub(in crate::mm) fn order_before_link() {
    lazy_mmu::sync_stores();
    barrier::dsb_ishst();
}
