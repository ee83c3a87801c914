//! Taking empty page-table pages away: unlink, flush, free.

use alloc::vec::Vec;
use core::ptr::read_volatile;

use super::*;
use crate::mm::addr::{PhysAddr, VirtAddr};
use crate::mm::descriptor::{Descriptor, Entry, Level};
use crate::mm::layout::{LINEAR_MAP_SIZE, PAGE_OFFSET};
use crate::mm::{lazy_mmu, pgtable_check, phys_to_virt, tlb};
use crate::planted::{Bug, planted};

fn table_is_empty(table: PhysAddr) -> bool {
    let entries = phys_to_virt(table).as_ptr::<u64>();
    // SAFETY: a live page-table page.
    (0..512).all(|i| unsafe { read_volatile(entries.add(i)) } == 0)
}

/// What the caller of a reclaim knows of the range's level-3 entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Cleared {
    /// Nothing: every table is looked at, entry by entry.
    #[default]
    Unknown,
    /// Every level-3 entry of the range is zero: the caller, who owns the
    /// range (nothing else maps into it), has just cleared them. A level-3
    /// table wholly inside the range is empty without a look, as the
    /// ideal loop knows its own tables are. The checker, if on, verifies
    /// the claim (`pgtable_check::claimed_empty`) and reports a table a
    /// broken caller left entries in; the code takes the same path.
    Leaves,
}

/// Unlinks the tables below `root` that cover [va, va + size) and are
/// empty (clears the entries that point to them), and returns their pages.
/// They are not free yet: a CPU may still hold a cached walk through the
/// cleared entries until [`tlb::flush_tlb_kernel_pgtables`] drops it.
fn unlink_empty_tables(root: PhysAddr, va: VirtAddr, size: u64, cleared: Cleared) -> Vec<PhysAddr> {
    let mut unlinked = Vec::new();
    let last = va.as_u64().wrapping_add(size - 1);
    unlink_empty_below(root, Level::L0, va.as_u64(), last, cleared, &mut unlinked);
    unlinked
}

/// Is the level-3 table `table`, all of whose entries lie in the range
/// the caller described with `cleared`, empty?
fn leaf_table_is_empty(table: PhysAddr, cleared: Cleared) -> bool {
    match cleared {
        Cleared::Leaves => {
            pgtable_check::claimed_empty(table);
            true
        }
        Cleared::Unknown => table_is_empty(table),
    }
}

/// Takes the empty tables under [va, va + size) away: unlink, one flush of
/// the range, then free, in that order. The flush is what the caller's
/// change there (`changed`: leaves cleared, or nothing) and the tables
/// unlinked need together (`tlb_policy::flush_for`). The
/// pages are freed after `exclusive` is let go (freeing may map and unmap,
/// under debug_pagealloc, which walks). Returns how many tables went.
/// Never in the linear map, whose tables are permanent
/// ([`linear_map_entry`] relies on it).
///
/// # Safety
/// `root` is a level-0 page table: the kernel's, or tables the caller
/// built and owns (every entry below it is read as a table or a leaf).
///
/// With [`Cleared::Leaves`], every level-3 entry of the range is zero,
/// and nothing but the caller maps into it.
pub(crate) unsafe fn reclaim_empty_tables(
    exclusive: Exclusive,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    changed: tlb::Changed,
    cleared: Cleared,
) -> usize {
    let linear = PAGE_OFFSET.as_u64()..PAGE_OFFSET.as_u64() + LINEAR_MAP_SIZE;
    assert!(
        va.as_u64() >= linear.end || va.as_u64().saturating_add(size) <= linear.start,
        "the linear map's tables are never taken away: {va} + {size:#x}"
    );
    let mut unlinked = unlink_empty_tables(root, va, size, cleared);
    let count = unlinked.len();
    if planted(Bug::FreeBeforeFlush) {
        drop(exclusive);
        free_unlinked_tables(core::mem::take(&mut unlinked));
        tlb::flush_tlb_kernel_pgtables(va, va.add(size));
        return count;
    }
    tlb::flush_after(tlb::Changed { tables: !unlinked.is_empty(), ..changed }, va, va.add(size));
    drop(exclusive);
    free_unlinked_tables(unlinked);
    count
}

/// Takes the empty tables under [va, va + size) away (see
/// [`reclaim_empty_tables`]). If another CPU is walking the tables right
/// now, leaves them for a later reclaim.
///
/// # Safety
/// As for [`reclaim_empty_tables`]: `root` is a level-0 page table.
pub unsafe fn free_empty_tables(root: PhysAddr, va: VirtAddr, size: u64) {
    // SAFETY: as our caller guarantees.
    unsafe { reclaim_unless_walked(root, va, size, tlb::Changed::NOTHING, Cleared::Unknown) };
}

/// [`reclaim_empty_tables`] after the caller's `changed` under the range,
/// unless another CPU is walking the tables right now: then the tables
/// stay for a later reclaim, and the flush is only what `changed` needs.
///
/// # Safety
/// As for [`reclaim_empty_tables`]: `root` is a level-0 page table, and
/// `cleared` true of the range.
pub(super) unsafe fn reclaim_unless_walked(
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    changed: tlb::Changed,
    cleared: Cleared,
) {
    match try_exclusive() {
        // SAFETY: as our caller guarantees.
        Some(exclusive) => _ = unsafe { reclaim_empty_tables(exclusive, root, va, size, changed, cleared) },
        None => tlb::flush_after(changed, va, va.add(size)),
    }
}

fn unlink_empty_below(
    table: PhysAddr,
    level: Level,
    first: u64,
    last: u64,
    cleared: Cleared,
    unlinked: &mut Vec<PhysAddr>,
) {
    let Some(next_level) = level.next() else { return };
    let size = level.entry_size();
    let mut at = first & !(size - 1);
    loop {
        // SAFETY: a table reached from the root under `Exclusive` (the
        // caller's): nothing takes it away but this code.
        let entry = unsafe { EntryRef::new(table, level, VirtAddr::new(at)) };
        if let Entry::Table(child) = entry.entry() {
            let lo = first.max(at);
            let hi = last.min(at.wrapping_add(size - 1));
            unlink_empty_below(child, next_level, lo, hi, cleared, unlinked);
            let whole = lo == at && hi == at.wrapping_add(size - 1);
            let empty = match next_level {
                Level::L3 if whole => leaf_table_is_empty(child, cleared),
                _ => table_is_empty(child),
            };
            if empty {
                // SAFETY: an empty table, unlinked with no walk in
                // progress; the caller flushes its walks before freeing it.
                unsafe { write_entry(&entry, Descriptor::INVALID) };
                // The parent's emptiness is read from memory next.
                lazy_mmu::sync_stores();
                unlinked.push(child);
            }
        }
        let next = at.wrapping_add(size);
        if next == 0 || next > last || next < at {
            break;
        }
        at = next;
    }
}
