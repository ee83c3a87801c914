//! The page-table walk as pure logic: which entry a walk for an address
//! reaches, which tables a creating walk would link on the way, and how
//! many tables a range will need (the count the mapping engine,
//! `mm::engine`, allocates up front). It reads tables through
//! [`TableMemory`], so it knows nothing of locks, frames or the store
//! path: the kernel runs it over the linear map (`pgtable`), the host
//! property tests over pages of their own (tests/host/props), as
//! aarch64-paging's `Translation` trait lets its walker run anywhere.

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::{Descriptor, Entry, Level};

/// Where the walk reads page-table pages.
pub trait TableMemory {
    /// Entry `index` (0 to 511) of the page-table page at `table`.
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor;

    /// A reader of the entries of `table` from entry `first`: `i` gives
    /// entry `first + i`, as [`TableMemory::read`] would read it, with the
    /// table's address worked out once (for loops over a run).
    #[inline(always)]
    fn reader(&self, table: PhysAddr, first: usize) -> impl Fn(usize) -> Descriptor + Copy {
        move |i| self.read(table, first + i)
    }
}

/// One entry of one table, by position: the table, its level, and the
/// first address the entry translates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub table: PhysAddr,
    pub level: Level,
    pub va: VirtAddr,
}

impl Slot {
    /// The entry of `table` (at `level`) that translates `va`.
    #[inline]
    pub fn new(table: PhysAddr, level: Level, va: VirtAddr) -> Slot {
        Slot { table, level, va: VirtAddr::new(va.as_u64() & !(level.entry_size() - 1)) }
    }

    /// Its index in its table.
    #[inline]
    pub fn index(&self) -> usize {
        self.level.index(self.va.as_u64())
    }

    /// What it holds, decoded at its level.
    #[inline]
    pub fn entry(&self, memory: &impl TableMemory) -> Entry {
        memory.read(self.table, self.index()).decode(self.level)
    }
}

/// A block mapping at `level` is in the way of a walk to `va`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInTheWay {
    pub va: VirtAddr,
    pub level: Level,
}

/// The deepest entry for `va` below `root`: a leaf, an invalid entry, or
/// the level-3 entry.
#[inline]
pub fn walk(memory: &impl TableMemory, root: PhysAddr, va: VirtAddr) -> Slot {
    let mut slot = Slot::new(root, Level::L0, va);
    loop {
        match (slot.entry(memory), slot.level.next()) {
            (Entry::Table(next), Some(level)) => slot = Slot::new(next, level, va),
            _ => return slot,
        }
    }
}

/// The tables a creating walk would link to reach `va` at `level`, as
/// (level of the entry that would point to it, the first address it
/// covers), top down; an error if a block is in the way. Nothing is
/// changed.
pub fn tables_missing(
    memory: &impl TableMemory,
    root: PhysAddr,
    va: VirtAddr,
    level: Level,
) -> Result<impl Iterator<Item = (Level, u64)>, BlockInTheWay> {
    let deepest = walk(memory, root, va);
    // One read of the entry the walk stopped at: another CPU may link a
    // table there meanwhile (then the count is one too many, never too
    // few), which a second read would take for a block.
    if deepest.level < level && matches!(deepest.entry(memory), Entry::Leaf { .. }) {
        return Err(BlockInTheWay { va, level: deepest.level });
    }
    let from = if deepest.level < level { deepest.level.0 } else { level.0 };
    Ok((from..level.0).map(move |l| (Level(l), va.as_u64() & !(Level(l).entry_size() - 1))))
}

/// Counts the tables a series of creating walks will link, each once.
/// The walks come in address order, so the walks under one new table come
/// one after another, and the last table noted per level is enough to
/// know (no allocation: a plan cannot run out of heap).
#[derive(Default)]
pub struct NewTables {
    last: [Option<u64>; 3],
    pub count: usize,
}

impl NewTables {
    /// Notes tables as [`tables_missing`] lists them.
    pub fn note(&mut self, missing: impl Iterator<Item = (Level, u64)>) {
        for (level, base) in missing {
            if self.last[level.0 as usize].replace(base) != Some(base) {
                self.count += 1;
            }
        }
    }
}

/// The tables creating walks to every level-3 entry of [start, end) will
/// link, each counted once (the plan of `apply_to_page_range`); an error
/// if a block is in the way. `end` may be 0, the top of the address space.
pub fn tables_needed(
    memory: &impl TableMemory,
    root: PhysAddr,
    start: VirtAddr,
    end: VirtAddr,
) -> Result<usize, BlockInTheWay> {
    let mut new = NewTables::default();
    for (at, _) in super::span::chunks(start.as_u64(), end.as_u64(), Level::L2.entry_size()) {
        new.note(tables_missing(memory, root, VirtAddr::new(at), Level::L3)?);
    }
    Ok(new.count)
}
