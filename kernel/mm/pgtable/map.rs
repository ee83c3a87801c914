//! Mapping and unmapping ranges of the kernel's tables: the kernel's side
//! of the mapping engine (`mm::engine`), under its locks, with its store
//! path, its reclaim of empty tables and its TLB maintenance.

use super::*;
use crate::mm::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mm::descriptor::{Attributes, Level};
use crate::mm::engine::{self, Applied, Leaves, Sections};
use crate::mm::{pgtable_check, tlb};

pub use crate::mm::engine::{LeafSizes, check_range};

/// A test's stand-in for another CPU (debug builds only, as
/// `crate::planted`): called by [`map_leaves`] between its reclaim and
/// its re-plan, where a reclaim on another CPU may take tables away.
#[cfg(debug_assertions)]
static RECLAIM_RACE: spin::Mutex<Option<fn()>> = spin::Mutex::new(None);

/// Sets what [`map_leaves`] calls between its reclaim and its re-plan
/// (None: nothing). The test harness clears it after every test.
#[cfg(debug_assertions)]
pub fn set_reclaim_race(race: Option<fn()>) {
    *RECLAIM_RACE.lock() = race;
}

/// Maps [va, va + size) with `leaves` in the tables under
/// `root`, all or nothing: planned first (nothing may be mapped there
/// yet), the tables allocated, then written run by run in `sections`.
/// Where a block goes over an empty table (left by an earlier mapping),
/// the table is taken away first, its walks flushed (Linux's
/// `pmd_free_pte_page`), and the mapping planned again under the walk that
/// links it: a reclaim on another CPU in between may have taken tables
/// the first plan found, and the tables the second needs are made.
///
/// # Safety
/// As [`engine::map`]: the range is the caller's, and the leaves map
/// memory the caller may map there with their attributes.
pub(in crate::mm) unsafe fn map_leaves(
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    leaves: impl Leaves,
    sections: Sections,
) -> Result<Applied, MapError> {
    let mut walk = walking_from(root);
    // SAFETY: as our caller guarantees.
    let one_table = unsafe { engine::map_in_one_table(&KernelTables::new(&walk), root, va, size, leaves, sections) };
    if let Some(mapped) = one_table {
        return mapped;
    }
    let plan = engine::plan_map(&KernelTables::new(&walk), root, va, size, leaves)?;
    // Allocated before anything changes, the reclaim below included.
    let mut pool = engine::Pool::alloc(&KernelTables::new(&walk), plan.tables)?;
    if plan.reclaim {
        drop(walk);
        for run in engine::leaf_runs(va, size, leaves).filter(|run| run.level < Level::L3) {
            for at in (0..run.count as u64).map(|i| run.va.add(i * run.level.entry_size())) {
                if lookup_from(root, at).level > run.level {
                    // SAFETY: `root` is a level-0 table (our caller's);
                    // the plan found nothing mapped under the block.
                    unsafe {
                        reclaim_empty_tables(
                            exclusive(),
                            root,
                            at,
                            run.level.entry_size(),
                            tlb::Changed::NOTHING,
                            Cleared::Unknown,
                        )
                    };
                }
            }
        }
        #[cfg(debug_assertions)]
        if let Some(race) = { *RECLAIM_RACE.lock() } {
            race();
        }
        walk = walking_from(root);
        let tables = KernelTables::new(&walk);
        let ready = match engine::plan_map(&tables, root, va, size, leaves) {
            // Another table where a block goes: only another CPU mapping
            // into the caller's range puts one there.
            Ok(again) if again.reclaim => Err(MapError::AlreadyMapped(va)),
            Ok(again) => pool.top_up(&tables, again.tables),
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            pool.release(&tables);
            return Err(e);
        }
    }
    // SAFETY: as our caller guarantees; the tables are as planned.
    unsafe { engine::map(&KernelTables::new(&walk), root, va, size, leaves, &mut pool, sections) }
}

/// Maps [va, va + size) to [pa, pa + size) with `attrs` in the table at
/// `root`, with the leaf sizes `sizes` allows. Nothing may be mapped there
/// yet. On failure nothing is mapped. Runs in the caller's lazy MMU
/// section, if any. It needs no heap (the kernel builds its own tables
/// with it before it has one).
///
/// # Safety
/// [pa, pa + size) is memory the caller may map at `va` with `attrs`
/// (see [`write_entry`]).
pub unsafe fn map_range(
    root: PhysAddr,
    va: VirtAddr,
    pa: PhysAddr,
    size: u64,
    attrs: Attributes,
    sizes: LeafSizes,
) -> Result<(), MapError> {
    let _op = pgtable_check::operation();
    check_range(va, size)?;
    if !pa.is_aligned(PAGE_SIZE) {
        return Err(MapError::Misaligned { what: Operand::PhysicalAddress, value: pa.as_u64() });
    }
    // In pieces of runs of leaves, each of which needs at most three new
    // tables: a piece's tables fit in the pool's own space
    // (`engine::Pool::INLINE`), as they must while the kernel builds its
    // tables, before it has a heap. A piece ends where a run does, so the
    // leaves are those of the whole range.
    let leaves = engine::Contiguous { pa, sizes, attrs };
    let mut runs = engine::leaf_runs(va, size, leaves).peekable();
    let mut done = 0;
    while runs.peek().is_some() {
        let end = runs
            .by_ref()
            .take(engine::Pool::INLINE / 3)
            .last()
            .map_or(size, |r| r.offset + r.count as u64 * r.level.entry_size());
        let piece = engine::Contiguous { pa: pa.add(done), sizes, attrs };
        // SAFETY: as our caller guarantees.
        if let Err(e) = unsafe { map_leaves(root, va.add(done), end - done, piece, Sections::Caller) } {
            if done > 0 {
                // SAFETY: what this call mapped, nothing else; its caller
                // owns the range.
                unsafe { unmap_range(root, va, done) }.expect("just mapped");
            }
            return Err(e);
        }
        done = end;
    }
    Ok(())
}

/// Unmaps [va, va + size): clears every leaf (blocks must lie wholly
/// inside), takes away the tables left empty, and flushes the TLB once for
/// both: the leaves, and every level of the walk if a table went (see
/// [`reclaim_empty_tables`]; if another CPU is walking right now the
/// tables stay for a later reclaim, and the flush is the leaves').
/// Everything it unmapped is out of every TLB when it returns.
///
/// # Safety
/// `root` is a level-0 page table, and the range is the caller's: nothing
/// else uses what it maps (see [`write_entry`]).
pub unsafe fn unmap_range(root: PhysAddr, va: VirtAddr, size: u64) -> Result<(), MapError> {
    check_range(va, size)?;
    // SAFETY: as our caller guarantees; every address must be mapped.
    unsafe { clear_and_reclaim(root, va, size, true, Sections::Caller) }
}

/// The body of [`unmap_range`] and [`clear_range`] on a checked range:
/// the engine's check (every address mapped, if `mapped`; no block sticking
/// out), its clear in `sections`, then the reclaim with the flush of both.
///
/// # Safety
/// As [`clear_range`].
unsafe fn clear_and_reclaim(
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    mapped: bool,
    sections: Sections,
) -> Result<(), MapError> {
    let cleared = {
        let walk = walking_from(root);
        let tables = KernelTables::new(&walk);
        engine::check_clear(&tables, root, va, size, mapped)?;
        // SAFETY: the caller's range; flushed below.
        unsafe { engine::clear(&tables, root, va, size, sections) }
    };
    // SAFETY: `root` is a level-0 table, and the range the caller's (our
    // caller's contract); `cleared` says what the clear left.
    unsafe { super::reclaim::reclaim_unless_walked(root, va, size, tlb::Changed::LEAVES, reclaim_claim(cleared)) };
    Ok(())
}

/// What a clear lets the reclaim after it claim of the range.
fn reclaim_claim(cleared: engine::Cleared) -> Cleared {
    if cleared.zero { Cleared::Leaves } else { Cleared::Unknown }
}

/// Clears every valid leaf of [va, va + size) in one lazy MMU section, a
/// level-3 table's part of the range in one run, takes away the tables
/// left empty, and flushes the TLB once for both: how Linux's memory
/// hot-remove unmaps (arm64's `unmap_hotplug_range`, then
/// `free_empty_tables`). Unlike [`unmap_range`], holes are allowed; a
/// block must lie wholly inside (refused first, with nothing changed).
/// Everything it unmapped is out of every TLB when it returns; if another
/// CPU is walking right now, the tables stay for a later reclaim.
///
/// # Safety
/// `root` is a level-0 page table, and the range is the caller's: nothing
/// else maps, unmaps or uses anything in it while this runs (see
/// [`write_entry`]).
pub unsafe fn clear_range(root: PhysAddr, va: VirtAddr, size: u64) -> Result<(), MapError> {
    let _op = pgtable_check::operation();
    check_range(va, size)?;
    // SAFETY: as our caller guarantees; holes are allowed.
    unsafe { clear_and_reclaim(root, va, size, false, Sections::WholeCall) }
}
