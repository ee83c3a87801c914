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
//! Inside the section the walker never reads back an entry it wrote: under
//! `deferred-writes` that read would still see the old, invalid entry. It
//! remembers the tables it linked instead.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::{Entry, Level};
use super::pgtable::{
    self, EntryRef, Linked, MapError, Ptes, Walking, alloc_tables, check_range, free_unlinked_tables,
};
use super::{lazy_mmu, span};

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

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError<E> {
    /// The range or the tables did not allow the walk; nothing was changed.
    Map(MapError),
    /// The callback failed at some slot; slots before it were visited.
    Callback(E),
}

impl<E: fmt::Display> fmt::Display for ApplyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Map(e) => write!(f, "{e}"),
            ApplyError::Callback(e) => write!(f, "the callback failed: {e}"),
        }
    }
}

impl<E> From<MapError> for ApplyError<E> {
    fn from(e: MapError) -> Self {
        ApplyError::Map(e)
    }
}

/// What a walk did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Bit n set: the walk wrote an entry at level n (a new table linked
    /// below level n, or, for bit 3, the callback ran on a leaf slot), so
    /// the caller knows what to flush or sync (Linux's pgtbl_mod_mask).
    pub levels_modified: u8,
    /// Page-table pages the walk allocated.
    pub tables_allocated: usize,
    /// Slots the callback was called for.
    pub slots: u64,
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

/// The level-3 tables' spans: [start, end) cut at 2 MiB boundaries.
fn chunks(start: VirtAddr, end: VirtAddr) -> impl Iterator<Item = (u64, u64)> {
    span::chunks(start.as_u64(), end.as_u64(), Level::L2.entry_size())
}

/// Walks the range without changing anything: fails if a block mapping is
/// in the way, and counts the tables a creating walk will need
/// (`mm::walk::tables_needed`).
fn plan(walking: &Walking, start: VirtAddr, end: VirtAddr, create: bool) -> Result<usize, MapError> {
    let needed = walking.tables_needed(start, end)?;
    Ok(if create { needed } else { 0 })
}

/// Links tables for `va` down to level 3, from `pool`, and returns the
/// level-3 table; None if a hole stops a non-creating walk. `linked`
/// remembers the tables this walk linked, per level, so that it never reads
/// back its own (possibly still queued) writes.
fn leaf_table(
    walking: &Walking,
    va: VirtAddr,
    pool: &mut Vec<PhysAddr>,
    linked: &mut [Option<(u64, PhysAddr)>; 3],
    applied: &mut Applied,
) -> Option<PhysAddr> {
    let mut table = walking.root();
    for level in [Level::L0, Level::L1, Level::L2] {
        let base = va.as_u64() & !(level.entry_size() - 1);
        let remembered = linked[level.0 as usize].filter(|(b, _)| *b == base).map(|(_, pa)| pa);
        // SAFETY: the root, or a table at `level` linked below it (read
        // from it, or linked by this walk and remembered).
        let entry = unsafe { walking.table_entry(table, level, va) };
        table = match (remembered, entry.entry()) {
            (Some(pa), _) | (None, Entry::Table(pa)) => pa,
            (None, Entry::Invalid) => {
                let new = pool.pop()?;
                match pgtable::link_table(&entry, new) {
                    Linked::Ours => {
                        linked[level.0 as usize] = Some((base, new));
                        applied.levels_modified |= 1 << level.0;
                        applied.tables_allocated += 1;
                        new
                    }
                    // Another CPU linked one first: ours goes back.
                    Linked::Theirs(existing) => {
                        pool.push(new);
                        existing
                    }
                    Linked::Block => unreachable!("a block mapped into a range being walked: overlapping owners"),
                }
            }
            (None, Entry::Leaf { .. }) => unreachable!("plan() refused blocks in the way"),
        };
    }
    Some(table)
}

fn apply<E>(
    start: VirtAddr,
    size: u64,
    walk: Walk,
    mut f: impl FnMut(&EntryRef) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    walk_tables(start, size, walk, |walking, table, at, stop, applied| {
        visit_slots(walking, table, at, stop, walk.create, &mut f, applied)
    })
}

fn apply_by_table<E>(
    start: VirtAddr,
    size: u64,
    walk: Walk,
    mut f: impl FnMut(&Ptes) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    walk_tables(start, size, walk, |walking, table, at, stop, applied| {
        let len = ((stop - at) / Level::L3.entry_size()) as usize;
        // SAFETY: a level-3 table linked below the root by leaf_table(),
        // kept by `walking`; [at, stop) lies within it.
        let ptes = unsafe { walking.table_ptes(table, VirtAddr::new(at), len) };
        applied.slots += len as u64;
        applied.levels_modified |= 1 << 3;
        f(&ptes)
    })
}

/// The walk both kinds of callback share: plan, allocate, then for every
/// level-3 table of the range (linked on the way, or skipped if missing
/// when `walk.create` is not set), `visit(walking, table, at, stop,
/// applied)` for its part [at, stop) of the range, in the lazy MMU
/// section(s) the apply mode says.
fn walk_tables<E>(
    start: VirtAddr,
    size: u64,
    walk: Walk,
    mut visit: impl FnMut(&Walking, PhysAddr, u64, u64, &mut Applied) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    let end = check_range(start, size)?;
    let walking = pgtable::walking();
    let needed = plan(&walking, start, end, walk.create)?;
    let mut pool = alloc_tables(needed)?;

    let mode = apply_mode();
    let mut applied = Applied::default();
    let mut linked = [None; 3];
    let whole = (walk.lazy && mode == ApplyMode::WholeCall).then(lazy_mmu::enable);
    let mut result = Ok(());
    for (at, stop) in chunks(start, end) {
        let Some(table) = leaf_table(&walking, VirtAddr::new(at), &mut pool, &mut linked, &mut applied) else {
            continue;
        };
        let _per_table = (walk.lazy && mode == ApplyMode::PerLeafTable).then(lazy_mmu::enable);
        result = visit(&walking, table, at, stop, &mut applied);
        if result.is_err() {
            break;
        }
    }
    drop(whole);
    // Tables planned for slots a failed callback never reached.
    free_unlinked_tables(pool);
    result.map(|()| applied).map_err(ApplyError::Callback)
}

fn visit_slots<E>(
    walking: &Walking,
    table: PhysAddr,
    at: u64,
    stop: u64,
    create: bool,
    f: &mut impl FnMut(&EntryRef) -> Result<(), E>,
    applied: &mut Applied,
) -> Result<(), E> {
    // SAFETY: a level-3 table linked below the root by leaf_table().
    let mut entry = unsafe { walking.table_entry(table, Level::L3, VirtAddr::new(at)) };
    let mut visited = 0;
    let result = loop {
        if create || entry.read().is_valid() {
            if let Err(e) = f(&entry) {
                break Err(e);
            }
            visited += 1;
        }
        let next = entry.va.as_u64().wrapping_add(Level::L3.entry_size());
        if next == stop {
            break Ok(());
        }
        // SAFETY: [at, stop) lies within one level-3 table, and `next` is
        // in it: this entry is not the table's last.
        entry = unsafe { entry.following() };
    };
    applied.slots += visited;
    if visited > 0 {
        applied.levels_modified |= 1 << 3;
    }
    result
}
