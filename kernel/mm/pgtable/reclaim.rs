//! Taking empty page-table pages away: unlink, flush, free.

use alloc::vec::Vec;

use super::*;
use crate::mm::addr::{PhysAddr, VirtAddr};
use crate::mm::layout::{LINEAR_MAP_SIZE, PAGE_OFFSET};
use crate::mm::{engine, tlb};
use crate::planted::{Bug, planted};

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

/// Unlinks the empty tables below `root` that cover [va, va + size) (the
/// engine's [`engine::unlink_empty_tables`]) and returns their pages.
///
/// # Safety
/// The caller holds `Exclusive`; `cleared` is true of the range.
unsafe fn unlink_empty_tables(
    exclusive: &Exclusive,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    cleared: Cleared,
) -> Vec<PhysAddr> {
    let mut unlinked = Vec::new();
    // SAFETY: no walk is in progress (our caller's `Exclusive`), and the
    // claim is the caller's.
    unsafe {
        engine::unlink_empty_tables(
            &KernelTables::exclusive(exclusive),
            root,
            va,
            size,
            cleared == Cleared::Leaves,
            &mut |pa| unlinked.push(pa),
        )
    };
    unlinked
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
    // SAFETY: `exclusive` is held; `cleared` is our caller's claim.
    let mut unlinked = unsafe { unlink_empty_tables(&exclusive, root, va, size, cleared) };
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
