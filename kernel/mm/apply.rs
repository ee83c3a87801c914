//! `apply_to_page_range` and its variants: call a function on every level-3
//! slot of a kernel range, the way vmalloc, vmap and set_memory_* change
//! page tables in bulk (Linux mm/memory.c).
//!
//! Linux opens one lazy MMU section per leaf table and allocates (and links,
//! paying a barrier pair for each) any missing table as the walk meets it.
//! Here a call first *plans*: it walks the range without changing anything,
//! finds every table it will need and every reason it cannot run (a block in
//! the way, a bad range), and allocates the tables. Then it opens **one**
//! section for the whole call and writes table and leaf entries in it, so a
//! call costs one `dsb ishst; isb` whatever its size, and no frame is
//! allocated inside lazy mode. The Linux-style walk stays selectable
//! ([`ApplyMode::PerLeafTable`]) so the two can be counted side by side.
//!
//! The `_by_table` variants call their function once per level-3 table,
//! with the run of its slots in the range (`pgtable::Ptes`), for callers
//! that change a table's entries together (`set_ptes`, `modify_ptes`,
//! `clear_ptes`): one loop per table, the lazy MMU bookkeeping once per run.
//!
//! The walk is the mapping engine's ([`engine::for_each_table`]): these
//! functions are its thin callers, with Linux's names and contracts.

use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use super::addr::VirtAddr;
use super::descriptor::Level;
use super::engine::{self, Sections, TableRun};
use super::pgtable::{self, EntryRef, Ptes, check_range};

pub use super::engine::{Applied, ApplyError};

/// How a call brackets its writes with lazy MMU sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Tables allocated up front, one section for the whole call.
    WholeCall,
    /// Linux's walk: missing tables linked as met (outside any section),
    /// one section per leaf table.
    PerLeafTable,
}

static MODE: AtomicU8 = AtomicU8::new(0);

pub fn set_apply_mode(mode: ApplyMode) {
    MODE.store(mode as u8, Relaxed);
}

pub fn apply_mode() -> ApplyMode {
    if MODE.load(Relaxed) == 0 { ApplyMode::WholeCall } else { ApplyMode::PerLeafTable }
}

/// The lazy MMU sections of a call of this module (or of a mapper built
/// like one, as vmap), as the apply mode says: one for the whole call, or
/// one per level-3 table; none if its callback runs outside lazy mode.
pub(crate) fn sections(lazy: bool) -> Sections {
    match (lazy, apply_mode()) {
        (false, _) => Sections::Caller,
        (true, ApplyMode::WholeCall) => Sections::WholeCall,
        (true, ApplyMode::PerLeafTable) => Sections::PerTable,
    }
}

/// Calls `f` on every level-3 slot of [start, start + size), creating the
/// missing tables first. Runs in lazy MMU mode.
pub fn apply_to_page_range<E>(
    start: VirtAddr,
    size: u64,
    f: impl FnMut(&EntryRef) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    apply(start, size, Walk { create: true, lazy: true }, f)
}

/// Calls `f` only on the level-3 slots that hold a valid entry; skips holes
/// and allocates nothing. Runs in lazy MMU mode.
pub fn apply_to_existing_page_range<E>(
    start: VirtAddr,
    size: u64,
    f: impl FnMut(&EntryRef) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    apply(start, size, Walk { create: false, lazy: true }, f)
}

/// [`apply_to_page_range`] calling `f` once per level-3 table with the
/// run of its slots in the range ([`Ptes`]), for callers that change a
/// table's entries together (`pgtable::set_ptes`, `modify_ptes`,
/// `clear_ptes`: one loop per table, the lazy MMU bookkeeping once per
/// run). Runs in lazy MMU mode. `Applied::slots` counts the slots handed
/// to `f`.
pub fn apply_to_page_range_by_table<E>(
    start: VirtAddr,
    size: u64,
    f: impl FnMut(&Ptes) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    apply_by_table(start, size, Walk { create: true, lazy: true }, f)
}

/// [`apply_to_existing_page_range`] by table: `f` gets the run of slots
/// of every level-3 table the range reaches, holes included (the batched
/// stores skip them: `modify_ptes`, `clear_ptes`); missing tables are
/// skipped and nothing is allocated. Runs in lazy MMU mode.
pub fn apply_to_existing_page_range_by_table<E>(
    start: VirtAddr,
    size: u64,
    f: impl FnMut(&Ptes) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    apply_by_table(start, size, Walk { create: false, lazy: true }, f)
}

/// [`apply_to_page_range`] with `f` running outside lazy mode (Ryan Roberts' RFC <20250530140446.2387131-4-ryan.roberts@arm.com>),
/// for callbacks that allocate memory or must see their own writes.
pub fn apply_to_page_range_nolazy<E>(
    start: VirtAddr,
    size: u64,
    f: impl FnMut(&EntryRef) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    apply(start, size, Walk { create: true, lazy: false }, f)
}

/// [`apply_to_existing_page_range`] with `f` running outside lazy mode.
pub fn apply_to_existing_page_range_nolazy<E>(
    start: VirtAddr,
    size: u64,
    f: impl FnMut(&EntryRef) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    apply(start, size, Walk { create: false, lazy: false }, f)
}

#[derive(Clone, Copy)]
struct Walk {
    /// Make missing tables (else skip holes).
    create: bool,
    /// Run the callback in lazy MMU mode.
    lazy: bool,
}

fn apply<E>(
    start: VirtAddr,
    size: u64,
    walk: Walk,
    mut f: impl FnMut(&EntryRef) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    walk_tables(start, size, walk, |walking, run, applied| {
        // SAFETY: a level-3 table the engine reached or linked, kept by
        // `walking`.
        let mut entry = unsafe { walking.table_entry(run.table, Level::L3, run.va) };
        let mut visited = 0;
        let mut result = Ok(());
        for i in 0..run.len {
            if i > 0 {
                // SAFETY: the run lies in one table: this entry is not its last.
                entry = unsafe { entry.following() };
            }
            if walk.create || entry.read().is_valid() {
                if let Err(e) = f(&entry) {
                    result = Err(e);
                    break;
                }
                visited += 1;
            }
        }
        applied.slots += visited;
        if visited > 0 {
            applied.levels_modified |= 1 << 3;
        }
        result
    })
}

fn apply_by_table<E>(
    start: VirtAddr,
    size: u64,
    walk: Walk,
    mut f: impl FnMut(&Ptes) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    walk_tables(start, size, walk, |walking, run, applied| {
        // SAFETY: a level-3 table the engine reached or linked, kept by
        // `walking`; the run lies within it.
        let ptes = unsafe { walking.table_ptes(run.table, run.va, run.len) };
        applied.slots += run.len as u64;
        applied.levels_modified |= 1 << 3;
        f(&ptes)
    })
}

/// The walk both kinds of callback share, the engine's: plan, allocate,
/// then `visit` for every level-3 table of the range (linked on the way,
/// or skipped if missing when `walk.create` is not set), in the lazy MMU
/// section(s) the apply mode says.
fn walk_tables<E>(
    start: VirtAddr,
    size: u64,
    walk: Walk,
    mut visit: impl FnMut(&pgtable::Walking, TableRun, &mut Applied) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    check_range(start, size)?;
    let walking = pgtable::walking();
    let tables = pgtable::KernelTables::new(&walking);
    engine::for_each_table(&tables, walking.root(), start, size, walk.create, sections(walk.lazy), |run, applied| {
        visit(&walking, run, applied)
    })
}
