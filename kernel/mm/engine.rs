//! The mapping engine: the one range walker behind every mapper.
//!
//! Every change of a range of the kernel's tables is the same job: plan
//! (walk without changing anything: find every reason the call cannot run,
//! count the tables it will link), allocate those tables, then walk again
//! writing *runs*: consecutive entries of one table, a single entry being a
//! run of one, through the one store primitive ([`Tables::write_run`]).
//! The flush the change owes is the caller's, decided by what the engine
//! reports (`tlb_policy::Changed`).
//!
//! Its parameters:
//! - the leaves, [`Leaves`]: a list of pages ([`Pages`]), or a physically
//!   contiguous range ([`Contiguous`]) with the largest leaf size its
//!   alignment allows (page, contiguous run of 16 pages, 2 MiB, 1 GiB:
//!   [`LeafSizes`]);
//! - create or existing-only (apply's two kinds of walk);
//! - the section policy, [`Sections`]: the caller's, one for the whole
//!   call, or one per level-3 table (Linux's own walk).
//!
//! It is generic over [`Tables`] (read, write a run, link, allocate,
//! free), so that the same code runs in the kernel, over the linear map
//! with its locks and store path (`pgtable::KernelTables`), and on the
//! host, over tables in host memory against a model (tests/host/props).
//!
//! One rule lives here and nowhere else: a walk never reads back a table
//! entry it wrote itself. Under `deferred-writes` a store may still wait in
//! the task's queue, and the read would see the old entry; the engine
//! remembers the tables it linked instead ([`Linking`]).
//!
//! The mappers with Linux's names (`apply_to_page_range`, `vmap_pages`,
//! `vmap_range`, `vunmap_range`, `pgtable::map_range`, `unmap_range`,
//! `clear_range`, `set_memory_*`) are thin callers of [`plan_map`] +
//! [`map`], [`for_each_table`], [`check_clear`] + [`clear`] ([`huge_leaf_at`]),
//! [`split_block`] and [`unlink_empty_tables`].

use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;

use super::addr::{BLOCK_1G, BLOCK_2M, CONT_PTE_SIZE, CONT_PTES, PAGE_SIZE, PhysAddr, VirtAddr};
use super::descriptor::{Attributes, Descriptor, Entry, Level};
use super::walk::{self, BlockInTheWay, NewTables, Slot, TableMemory};

// ---- errors --------------------------------------------------------------

/// Errors from building or changing mappings. Each leaves the tables as
/// they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    /// An address or size that must be page aligned is not.
    Misaligned {
        what: Operand,
        value: u64,
    },
    /// The range covers only part of the block at `va` (at `level`): the
    /// call would have to split it, and a block is changed whole or not
    /// at all.
    SplitsBlock {
        va: VirtAddr,
        level: Level,
    },
    /// Size zero, or start + size wraps around.
    BadRange {
        start: VirtAddr,
        size: u64,
    },
    /// Not a kernel (TTBR1) address.
    NotKernelAddress(VirtAddr),
    /// A block mapping covers `va` at `level` where a table is needed.
    BlockInTheWay {
        va: VirtAddr,
        level: Level,
    },
    /// Something is already mapped at `va`.
    AlreadyMapped(VirtAddr),
    /// Nothing is mapped at `va`.
    NotMapped(VirtAddr),
    /// The change would make the page at `va` writable and executable (W^X).
    WritableAndExecutable(VirtAddr),
    /// Splitting the block at `va` needs break-before-make (no FEAT_BBM
    /// level 2), and a page table the split must write lies inside that
    /// block: it would be unmapped while it is written.
    BreakBeforeMakeUnsafe(VirtAddr),
    /// The linear map's alias of the kernel's text or rodata, whose
    /// permissions are the image's: a writable alias would let safe code
    /// change the kernel's code, or data Rust assumes never changes.
    KernelImage(VirtAddr),
    /// The range covers only part of the contiguous run of 16 pages at
    /// `va` (`CONT_PTES`): the run is unmapped whole or not at all, as a
    /// block is (Linux warns and clears the whole run: `vunmap_pte_range`).
    SplitsContiguousRun(VirtAddr),
    /// Not inside one live vmalloc area: `set_memory_*` changes vmalloc'd
    /// memory only (Linux's `change_memory_common()`), never the linear
    /// map, where the page tables, the heap and the tasks' control blocks
    /// live.
    NotVmallocArea(VirtAddr),
}

impl From<BlockInTheWay> for MapError {
    fn from(BlockInTheWay { va, level }: BlockInTheWay) -> MapError {
        MapError::BlockInTheWay { va, level }
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MapError::OutOfMemory => write!(f, "there is not enough free memory for the page tables the change needs"),
            MapError::Misaligned { what, value } => write!(f, "{what} {value:#x} is not page aligned"),
            MapError::SplitsBlock { va, level } => {
                write!(f, "the range covers only part of the level-{} block at {va}", level.0)
            }
            MapError::BadRange { start, size: 0 } => write!(f, "the range at {start} is empty"),
            MapError::BadRange { start, size } => {
                write!(f, "the range of {size:#x} bytes at {start} wraps around or lies outside the allowed region")
            }
            MapError::NotKernelAddress(va) => write!(f, "{va} is not a kernel (TTBR1) address"),
            MapError::BlockInTheWay { va, level } => {
                write!(f, "a level-{} block maps {va} where a page table is needed", level.0)
            }
            MapError::AlreadyMapped(va) => write!(f, "{va} is already mapped"),
            MapError::NotMapped(va) => write!(f, "{va} is not mapped"),
            MapError::WritableAndExecutable(va) => write!(f, "the page at {va} would be writable and executable"),
            MapError::BreakBeforeMakeUnsafe(va) => write!(
                f,
                "splitting the block at {va} needs break-before-make, and a page table the split writes lies inside it"
            ),
            MapError::KernelImage(va) => {
                write!(f, "{va} is the linear map's alias of the kernel image, whose permissions are fixed")
            }
            MapError::SplitsContiguousRun(va) => {
                write!(f, "the range covers only part of the contiguous run of 16 pages at {va}")
            }
            MapError::NotVmallocArea(va) => {
                write!(f, "{va} is not in a vmalloc area: set_memory_* changes vmalloc'd memory only")
            }
        }
    }
}

/// Which argument of a call a [`MapError::Misaligned`] (or a
/// `VmallocError::Misaligned`) is about: a value, so tests match it
/// exactly, and the message says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    VirtualAddress,
    PhysicalAddress,
    Size,
    /// The end of an [addr, end) range.
    End,
    /// One of the frames of a page list.
    Page,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operand::VirtualAddress => "virtual address",
            Operand::PhysicalAddress => "physical address",
            Operand::Size => "size",
            Operand::End => "end address",
            Operand::Page => "page",
        })
    }
}

/// Why a walk with a callback ([`for_each_table`]) stopped.
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

/// Checks a kernel range: page aligned, not empty, not wrapping past 2^64
/// (it may end exactly there), and returns its end.
pub fn check_range(va: VirtAddr, size: u64) -> Result<VirtAddr, MapError> {
    if !va.is_kernel() {
        return Err(MapError::NotKernelAddress(va));
    }
    if !va.is_aligned(PAGE_SIZE) {
        return Err(MapError::Misaligned { what: Operand::VirtualAddress, value: va.as_u64() });
    }
    if size == 0 {
        return Err(MapError::BadRange { start: va, size });
    }
    if !size.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::Misaligned { what: Operand::Size, value: size });
    }
    match va.checked_add(size - 1) {
        Some(_) => Ok(VirtAddr::new(va.as_u64().wrapping_add(size))),
        None => Err(MapError::BadRange { start: va, size }),
    }
}

// ---- the tables ------------------------------------------------------------

/// Consecutive entries of one table: `len` from entry `index` of the
/// table at `table` (at `level`), the first translating `va`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRun {
    pub table: PhysAddr,
    pub level: Level,
    pub index: usize,
    pub len: usize,
    pub va: VirtAddr,
}

impl TableRun {
    /// The run of `len` entries from the one for `va` in the table at
    /// `table` (at `level`).
    #[inline]
    pub fn new(table: PhysAddr, level: Level, va: VirtAddr, len: usize) -> TableRun {
        let va = VirtAddr::new(va.as_u64() & !(level.entry_size() - 1));
        let index = level.index(va.as_u64());
        debug_assert!(index + len <= 512, "a run of entries crosses its table's end");
        TableRun { table, level, index, len, va }
    }

    /// Entry `i` of the run, by position.
    #[inline]
    pub fn slot(&self, i: usize) -> Slot {
        Slot::new(self.table, self.level, self.va.add(i as u64 * self.level.entry_size()))
    }
}

/// What [`Tables::link`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linked {
    /// The new table is linked.
    Ours,
    /// Another CPU linked this table first; the new one was not used.
    Theirs(PhysAddr),
    /// A block mapping is there.
    Block,
}

/// What the engine needs of the tables it changes.
pub trait Tables: TableMemory {
    /// A lazy MMU section: stores made while it lives may wait, and their
    /// barriers are paid when it ends.
    type Section;

    /// Enters a lazy MMU section (it ends when the value is dropped).
    fn lazy_section(&self) -> Self::Section;

    /// Stores `new(i)` into entry `i` of `run` wherever it is `Some`, and
    /// returns how many it stored: the one store primitive. `new` computes
    /// a descriptor from the index (and may read the entry first, through
    /// [`TableMemory::read`]); it may be asked more than once per entry.
    ///
    /// # Safety
    /// The run lies in a table reached under the caller's walk (kept for
    /// as long as it lasts), or in one the caller owns and has not linked;
    /// every store is one the caller may make (what it maps is the
    /// caller's to map; what it clears is flushed before it is used
    /// otherwise).
    unsafe fn write_run(&self, run: TableRun, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize;

    /// [`Tables::write_run`] with `new` given each entry's old value too:
    /// `new(i, old)`. The same store primitive; the kernel reads and
    /// stores through one pointer.
    ///
    /// # Safety
    /// As [`Tables::write_run`].
    #[inline(always)]
    unsafe fn update_run(&self, run: TableRun, new: impl Fn(usize, Descriptor) -> Option<Descriptor> + Copy) -> usize {
        let old = self.reader(run.table, run.index);
        // SAFETY: as our caller guarantees.
        unsafe { self.write_run(run, move |i| new(i, old(i))) }
    }

    /// Links `table` (zeroed, ordered, from [`Tables::alloc_table`]) at the
    /// entry `slot`, unless something is there by now, and makes the link
    /// visible to the next walker that looks.
    ///
    /// # Safety
    /// As [`Tables::write_run`], for `slot`.
    unsafe fn link(&self, slot: Slot, table: PhysAddr) -> Linked;

    /// Replaces the block at `slot` with `table`, which maps the same
    /// memory one level down (filled by [`split_block`]): orders the
    /// table's entries before the link.
    ///
    /// # Safety
    /// As [`Tables::write_run`]; the table maps exactly what the block did.
    unsafe fn replace_block(&self, slot: Slot, table: PhysAddr);

    /// Makes the stores asked for so far reach memory (under
    /// `deferred-writes` they may wait in the task's queue), for a walk that
    /// reads them back next.
    fn sync(&self);

    /// The caller claims the level-3 table at `table` empty without a look
    /// ([`unlink_empty_tables`] with `zero`): an observer may check it.
    fn claimed_empty(&self, _table: PhysAddr) {}

    /// A zeroed page-table page, or None if memory ran out.
    fn alloc_table(&self) -> Option<PhysAddr>;

    /// Frees a page-table page from [`Tables::alloc_table`] that was never
    /// linked.
    fn free_table(&self, table: PhysAddr);
}

/// Tables allocated for a change before it starts, so that it cannot run
/// out of memory half way. What is left over goes back at
/// [`Pool::release`]. The first [`Pool::INLINE`] are held in place (the
/// common case, and the only one while the kernel builds its tables, before
/// it has a heap); more go in a vector. Three: the tables one run of
/// leaves can need (levels 1 to 3), and a pool small enough that making
/// one costs a few stores (with 16 in place, a 1-page vmalloc spent a
/// tenth of its instructions copying and clearing its pool).
pub struct Pool {
    inline: [PhysAddr; Pool::INLINE],
    held: usize,
    more: Vec<PhysAddr>,
}

impl Pool {
    /// How many tables a pool holds without a heap allocation.
    pub const INLINE: usize = 3;

    /// `count` tables, or none at all if memory (or heap) runs out.
    /// Inlined: a pool is 160 bytes, which a call would copy out.
    #[inline(always)]
    pub fn alloc(tables: &impl Tables, count: usize) -> Result<Pool, MapError> {
        let mut pool = Pool { inline: [PhysAddr::new(0); Pool::INLINE], held: 0, more: Vec::new() };
        if count > Pool::INLINE {
            pool.more.try_reserve_exact(count - Pool::INLINE).map_err(|_| MapError::OutOfMemory)?;
        }
        for _ in 0..count {
            match tables.alloc_table() {
                Some(pa) => pool.put(pa),
                None => {
                    pool.release(tables);
                    return Err(MapError::OutOfMemory);
                }
            }
        }
        Ok(pool)
    }

    /// Allocates tables until `count` are left (a second plan found more
    /// missing than the first). If memory runs out the pool keeps what it
    /// has, for its caller to release.
    pub fn top_up(&mut self, tables: &impl Tables, count: usize) -> Result<(), MapError> {
        let missing = count.saturating_sub(self.left());
        let spill = (self.held + missing).saturating_sub(Pool::INLINE);
        self.more.try_reserve(spill).map_err(|_| MapError::OutOfMemory)?;
        for _ in 0..missing {
            self.put(tables.alloc_table().ok_or(MapError::OutOfMemory)?);
        }
        Ok(())
    }

    /// How many are left.
    pub fn left(&self) -> usize {
        self.held + self.more.len()
    }

    fn put(&mut self, table: PhysAddr) {
        if self.held < Pool::INLINE {
            self.inline[self.held] = table;
            self.held += 1;
        } else {
            // Within the capacity reserved at `alloc` (a table given back
            // was taken from it first).
            self.more.push(table);
        }
    }

    fn take(&mut self) -> Option<PhysAddr> {
        if let Some(pa) = self.more.pop() {
            return Some(pa);
        }
        self.held = self.held.checked_sub(1)?;
        Some(self.inline[self.held])
    }

    /// Frees the tables not used.
    pub fn release(mut self, tables: &impl Tables) {
        self.release_unused(tables);
    }

    /// Frees the tables not used, and leaves the pool empty.
    fn release_unused(&mut self, tables: &impl Tables) {
        while let Some(pa) = self.take() {
            tables.free_table(pa);
        }
    }
}

/// Where a change's lazy MMU sections go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sections {
    /// None of the engine's own: the caller's, if it opened one.
    Caller,
    /// One for the whole change: one barrier pair per call, whatever its size.
    WholeCall,
    /// One per level-3 table, tables linked outside them, blocks written
    /// outside any (Linux's walk: only its pte loops enter lazy MMU mode).
    PerTable,
}

/// What a change did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Bit n set: the change wrote an entry at level n (a new table linked
    /// below level n, or leaves at level n), so the caller knows what to
    /// flush or sync (Linux's pgtbl_mod_mask).
    pub levels_modified: u8,
    /// Page-table pages the change linked.
    pub tables_allocated: usize,
    /// Slots handed to the callback ([`for_each_table`]), or leaves
    /// written ([`map`]).
    pub slots: u64,
}

/// The tables a walk linked, one per level (0 to 2): where it goes next
/// it uses them without reading its own link back.
#[derive(Default)]
struct Linking {
    linked: [Option<(u64, PhysAddr)>; 3],
}

/// The table at `level` on the way to `va`, linking missing ones from
/// `pool` on the way (None: a hole stops an existing-only walk).
fn table_for(
    tables: &impl Tables,
    root: PhysAddr,
    va: VirtAddr,
    level: Level,
    mut pool: Option<&mut Pool>,
    linking: &mut Linking,
    applied: &mut Applied,
) -> Result<Option<PhysAddr>, MapError> {
    let mut table = root;
    for l in 0..level.0 {
        let at = Level(l);
        let base = va.as_u64() & !(at.entry_size() - 1);
        if let Some((b, pa)) = linking.linked[l as usize]
            && b == base
        {
            table = pa;
            continue;
        }
        let slot = Slot::new(table, at, va);
        table = match slot.entry(tables) {
            Entry::Table(next) => next,
            Entry::Leaf { .. } => return Err(BlockInTheWay { va, level: at }.into()),
            Entry::Invalid => {
                let Some(pool) = pool.as_deref_mut() else { return Ok(None) };
                let new = pool.take().ok_or(MapError::OutOfMemory)?;
                // SAFETY: an invalid entry of a table the walk reached; the
                // new table is ours, zeroed, linked nowhere.
                match unsafe { tables.link(slot, new) } {
                    Linked::Ours => {
                        linking.linked[l as usize] = Some((base, new));
                        applied.levels_modified |= 1 << l;
                        applied.tables_allocated += 1;
                        new
                    }
                    // Another CPU linked one first: ours goes back.
                    Linked::Theirs(existing) => {
                        pool.put(new);
                        existing
                    }
                    Linked::Block => {
                        pool.put(new);
                        return Err(BlockInTheWay { va, level: at }.into());
                    }
                }
            }
        };
    }
    Ok(Some(table))
}

/// The entry for `va` at `level`, linking the missing tables above it
/// first (allocated together, or none: out of memory changes nothing).
/// Fails if a block is in the way.
pub fn entry_for(tables: &impl Tables, root: PhysAddr, va: VirtAddr, level: Level) -> Result<Slot, MapError> {
    let missing = walk::tables_missing(tables, root, va, level)?.count();
    let mut pool = Pool::alloc(tables, missing)?;
    let table = table_for(tables, root, va, level, Some(&mut pool), &mut Linking::default(), &mut Applied::default());
    pool.release(tables);
    Ok(Slot::new(table?.expect("a creating walk"), level, va))
}

// ---- leaves ---------------------------------------------------------------

/// Which leaf sizes a mapping may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafSizes {
    /// 4 KiB pages only.
    PagesOnly,
    /// Pages, in contiguous runs of 16 (64 KiB, the contiguous bit set)
    /// where both addresses are 64 KiB aligned and 64 KiB are left (arm64's
    /// `arch_vmap_pte_range_map_size`): `vmalloc_huge` below 2 MiB.
    ContPtes,
    /// 1 GiB and 2 MiB blocks where address and size allow, contiguous runs
    /// of pages where they allow, pages elsewhere.
    Blocks,
}

impl LeafSizes {
    /// May level-3 leaves be written as contiguous runs?
    #[inline]
    pub fn contiguous(self) -> bool {
        self != LeafSizes::PagesOnly
    }
}

/// The level-3 leaves from `va` (mapping `pa`, `remaining` bytes left):
/// whether they are contiguous runs, and for how many bytes at most
/// (then the answer may change). Runs where both addresses are 64 KiB
/// aligned and a whole run is left; where the two addresses differ modulo
/// 64 KiB, never.
#[inline]
pub fn contiguous_span(va: VirtAddr, pa: PhysAddr, remaining: u64) -> (bool, u64) {
    let mask = CONT_PTE_SIZE - 1;
    if (va.as_u64() ^ pa.as_u64()) & mask != 0 {
        return (false, remaining);
    }
    match va.as_u64() & mask {
        0 if remaining >= CONT_PTE_SIZE => (true, remaining & !mask),
        0 => (false, remaining),
        off => (false, remaining.min(CONT_PTE_SIZE - off)),
    }
}

/// The largest leaf that fits at `va`/`pa` with `remaining` bytes left.
pub fn leaf_level(va: VirtAddr, pa: PhysAddr, remaining: u64, sizes: LeafSizes) -> Level {
    if sizes == LeafSizes::Blocks {
        for (level, size) in [(Level::L1, BLOCK_1G), (Level::L2, BLOCK_2M)] {
            if va.is_aligned(size) && pa.is_aligned(size) && remaining >= size {
                return level;
            }
        }
    }
    Level::L3
}

/// What a mapping maps: the level of each leaf and where it points.
///
/// The level may change only where a table of the deeper level starts
/// (a 2 MiB or 1 GiB boundary), which both kinds below keep: a run of
/// leaves of one level lasts to its table's end or the range's.
pub trait Leaves: Copy {
    /// The level of the leaf at `offset` bytes into the range (at `va`),
    /// with `remaining` bytes left.
    fn level(&self, va: VirtAddr, offset: u64, remaining: u64) -> Level;
    /// Where the leaf at `offset` bytes into the range points.
    fn output(&self, offset: u64) -> PhysAddr;
    /// The attributes of every leaf (the contiguous bit is the engine's).
    fn attrs(&self) -> Attributes;
    /// The level-3 leaves from `offset` bytes into the range (at `va`,
    /// `remaining` bytes left): whether they go in contiguous runs of 16,
    /// and for how many bytes at most ([`contiguous_span`]). A run of
    /// leaves ends there. None by default.
    #[inline(always)]
    fn contiguous(&self, _va: VirtAddr, _offset: u64, remaining: u64) -> (bool, u64) {
        (false, remaining)
    }
}

/// A physically contiguous range from `pa`, in leaves as large as `sizes`
/// and the alignment of both addresses allow, with `attrs`.
#[derive(Clone, Copy, Debug)]
pub struct Contiguous {
    pub pa: PhysAddr,
    pub sizes: LeafSizes,
    pub attrs: Attributes,
}

impl Leaves for Contiguous {
    #[inline]
    fn level(&self, va: VirtAddr, offset: u64, remaining: u64) -> Level {
        leaf_level(va, self.pa.add(offset), remaining, self.sizes)
    }

    #[inline(always)]
    fn output(&self, offset: u64) -> PhysAddr {
        self.pa.add(offset)
    }

    #[inline]
    fn attrs(&self) -> Attributes {
        self.attrs
    }

    #[inline]
    fn contiguous(&self, va: VirtAddr, offset: u64, remaining: u64) -> (bool, u64) {
        if self.sizes.contiguous() { contiguous_span(va, self.pa.add(offset), remaining) } else { (false, remaining) }
    }
}

/// Physically contiguous chunks of `chunk_size` bytes each (a power of
/// two, each chunk aligned to it), one after another, in leaves as large
/// as `sizes` and the chunk allow: what `vmalloc_huge` maps (Linux's
/// `vmap_pages_range_noflush` with a `page_shift` above a page, one
/// `vmap_range_noflush` per chunk). No leaf crosses a chunk's end.
#[derive(Clone, Copy, Debug)]
pub struct Chunks<'a> {
    pub chunks: &'a [PhysAddr],
    pub chunk_size: u64,
    pub sizes: LeafSizes,
    pub attrs: Attributes,
}

impl Chunks<'_> {
    /// Where the leaf at `offset` points, and the bytes of its chunk from
    /// there (at most `remaining`).
    #[inline(always)]
    fn at(&self, offset: u64, remaining: u64) -> (PhysAddr, u64) {
        let within = offset & (self.chunk_size - 1);
        let pa = self.chunks[(offset / self.chunk_size) as usize].add(within);
        (pa, remaining.min(self.chunk_size - within))
    }
}

impl Leaves for Chunks<'_> {
    #[inline]
    fn level(&self, va: VirtAddr, offset: u64, remaining: u64) -> Level {
        let (pa, left) = self.at(offset, remaining);
        leaf_level(va, pa, left, self.sizes)
    }

    #[inline(always)]
    fn output(&self, offset: u64) -> PhysAddr {
        self.at(offset, 0).0
    }

    #[inline]
    fn attrs(&self) -> Attributes {
        self.attrs
    }

    #[inline]
    fn contiguous(&self, va: VirtAddr, offset: u64, remaining: u64) -> (bool, u64) {
        let (pa, left) = self.at(offset, remaining);
        if self.sizes.contiguous() { contiguous_span(va, pa, left) } else { (false, left) }
    }
}

/// One page per frame of a list, in order, with `attrs` (vmap's).
#[derive(Clone, Copy, Debug)]
pub struct Pages<'a> {
    pub frames: &'a [PhysAddr],
    pub attrs: Attributes,
}

impl Leaves for Pages<'_> {
    #[inline]
    fn level(&self, _: VirtAddr, _: u64, _: u64) -> Level {
        Level::L3
    }

    #[inline(always)]
    fn output(&self, offset: u64) -> PhysAddr {
        self.frames[(offset / PAGE_SIZE) as usize]
    }

    #[inline]
    fn attrs(&self) -> Attributes {
        self.attrs
    }
}

/// One run of leaves of a mapping: `count` leaves at `level` from `va`,
/// `offset` bytes into the range, all in one table; with `contiguous`,
/// whole aligned runs of 16 pages with the contiguous bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafRun {
    pub va: VirtAddr,
    pub offset: u64,
    pub level: Level,
    pub count: usize,
    pub contiguous: bool,
}

/// The runs of leaves that map [va, va + size) with `leaves`, in order.
pub fn leaf_runs(va: VirtAddr, size: u64, leaves: impl Leaves) -> impl Iterator<Item = LeafRun> {
    let mut done = 0;
    core::iter::from_fn(move || {
        (done < size).then(|| {
            let at = va.add(done);
            let level = leaves.level(at, done, size - done);
            let step = level.entry_size();
            let in_table = 512 - level.index(at.as_u64()) as u64;
            let (contiguous, span) =
                if level == Level::L3 { leaves.contiguous(at, done, size - done) } else { (false, size - done) };
            let count = in_table.min(span / step);
            done += count * step;
            LeafRun { va: at, offset: done - count * step, level, count: count as usize, contiguous }
        })
    })
}

// ---- mapping ----------------------------------------------------------------

/// What [`plan_map`] found: how many tables the mapping will link (at
/// most), and whether empty tables sit where blocks go (to be taken away
/// first, by the caller, with the flush of their walks that needs, after
/// the tables are allocated: a mapping that fails for memory changes
/// nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub tables: usize,
    pub reclaim: bool,
}

/// The first address under the entry at `slot` that a valid leaf maps.
fn first_mapped(tables: &impl TableMemory, slot: Slot) -> Option<VirtAddr> {
    match slot.entry(tables) {
        Entry::Invalid => None,
        Entry::Leaf { .. } => Some(slot.va),
        Entry::Table(child) => {
            let level = slot.level.next()?;
            (0..512u64).find_map(|i| first_mapped(tables, Slot::new(child, level, slot.va.add(i * level.entry_size()))))
        }
    }
}

/// Walks [va, va + size) as [`map`] will with `leaves`, changing nothing:
/// fails if anything is mapped there already (at any level under a leaf,
/// or a block over it), and counts the tables the mapping will link, each
/// once. The range is checked ([`check_range`]) by the caller.
pub fn plan_map(
    tables: &impl TableMemory,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    leaves: impl Leaves,
) -> Result<Plan, MapError> {
    let mut plan = Plan::default();
    let mut needed = NewTables::default();
    for run in leaf_runs(va, size, leaves) {
        let deepest = walk::walk(tables, root, run.va);
        if deepest.level < run.level {
            if matches!(deepest.entry(tables), Entry::Leaf { .. }) {
                return Err(MapError::AlreadyMapped(run.va));
            }
            needed.note(
                (deepest.level.0..run.level.0).map(|l| (Level(l), run.va.as_u64() & !(Level(l).entry_size() - 1))),
            );
            continue;
        }
        // The table the leaves go in is there: each of their slots must be
        // empty, or (for a block) hold a table with nothing mapped below.
        let table = if deepest.level == run.level { deepest.table } else { walk_up(tables, root, run.va, run.level) };
        for i in 0..run.count {
            let slot = TableRun::new(table, run.level, run.va, run.count).slot(i);
            match slot.entry(tables) {
                Entry::Invalid => {}
                Entry::Leaf { .. } => return Err(MapError::AlreadyMapped(slot.va)),
                Entry::Table(_) => {
                    if let Some(at) = first_mapped(tables, slot) {
                        return Err(MapError::AlreadyMapped(at));
                    }
                    // An empty table where a block goes: the caller takes
                    // it away first (its walks flushed), which may take its
                    // parents with it if they empty too: the whole path
                    // counts as missing (what is left over goes back).
                    plan.reclaim = true;
                    needed.note((0..run.level.0).map(|l| (Level(l), slot.va.as_u64() & !(Level(l).entry_size() - 1))));
                }
            }
        }
    }
    plan.tables = needed.count;
    Ok(plan)
}

/// [`plan_map`] and [`map`] in one walk, for the commonest mapping: pages
/// in one level-3 table that is already there (a 1-page vmalloc after an
/// earlier one: the tables stay). Walks to the table, checks that every
/// slot of the run is empty, writes the run (in one section unless the
/// caller has it: one table is the same section under either policy).
/// `None`, with nothing changed, where the mapping is not of that shape:
/// the caller plans and maps. The range is checked by the caller.
///
/// # Safety
/// As [`map`].
#[inline]
pub unsafe fn map_in_one_table(
    tables: &impl Tables,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    leaves: impl Leaves,
    sections: Sections,
) -> Option<Result<Applied, MapError>> {
    let run = leaf_runs(va, size, leaves).next()?;
    // Pages only: a contiguous run (its bit) and blocks take the planned path.
    if run.level != Level::L3 || run.contiguous || run.count as u64 * PAGE_SIZE != size {
        return None;
    }
    let slot = walk::walk(tables, root, va);
    if slot.level != Level::L3 {
        return None;
    }
    let run = TableRun::new(slot.table, Level::L3, va, run.count);
    let old = tables.reader(run.table, run.index);
    if let Some(i) = (0..run.len).find(|&i| old(i).is_valid()) {
        return Some(Err(MapError::AlreadyMapped(run.slot(i).va)));
    }
    let template = Descriptor::leaf_template(Level::L3, leaves.attrs());
    let _section = (sections != Sections::Caller).then(|| tables.lazy_section());
    // SAFETY: a table the walk reached, its slots empty; the leaves are
    // the caller's to map (our caller's contract).
    let written =
        unsafe { tables.write_run(run, move |i| Some(template.with_output(leaves.output(i as u64 * PAGE_SIZE)))) };
    Some(Ok(Applied { levels_modified: 1 << 3, tables_allocated: 0, slots: written as u64 }))
}

/// The table at `level` on the way to `va`, which exists (the walk went
/// deeper than `level`).
fn walk_up(tables: &impl TableMemory, root: PhysAddr, va: VirtAddr, level: Level) -> PhysAddr {
    let mut slot = Slot::new(root, Level::L0, va);
    while slot.level < level {
        let Entry::Table(next) = slot.entry(tables) else { unreachable!("the walk went deeper") };
        slot = Slot::new(next, slot.level.next().expect("above level 3"), va);
    }
    slot.table
}

/// Maps [va, va + size) with `leaves`, as [`plan_map`]
/// planned it, with the tables it counted (`pool`, from [`Pool::alloc`]:
/// allocated before anything changes; borrowed, not moved: a move copies
/// it): each run of leaves written in one store, linking the tables on the
/// way. What is left of the pool is freed. If it still fails (only another CPU mapping into the
/// caller's range can make it), what it mapped is cleared again.
///
/// # Safety
/// The range is the caller's, and every leaf maps memory the caller may
/// map there with `attrs`.
pub unsafe fn map(
    tables: &impl Tables,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    leaves: impl Leaves,
    pool: &mut Pool,
    sections: Sections,
) -> Result<Applied, MapError> {
    let mut applied = Applied::default();
    let mut linking = Linking::default();
    let mut result = Ok(());
    {
        let _whole = (sections == Sections::WholeCall).then(|| tables.lazy_section());
        for run in leaf_runs(va, size, leaves) {
            let table = match table_for(tables, root, run.va, run.level, Some(&mut *pool), &mut linking, &mut applied) {
                Ok(table) => table.expect("a creating walk"),
                Err(e) => {
                    result = Err((e, run.offset));
                    break;
                }
            };
            let per_table = sections == Sections::PerTable && run.level == Level::L3;
            let _per_table = per_table.then(|| tables.lazy_section());
            let template =
                Descriptor::leaf_template(run.level, Attributes { contiguous: run.contiguous, ..leaves.attrs() });
            let (offset, step) = (run.offset, run.level.entry_size());
            let run = TableRun::new(table, run.level, run.va, run.count);
            // SAFETY: a table the walk reached or linked; the leaves are the
            // caller's to map (our caller's contract).
            let written = unsafe {
                tables.write_run(run, move |i| Some(template.with_output(leaves.output(offset + i as u64 * step))))
            };
            applied.slots += written as u64;
            applied.levels_modified |= 1 << run.level.0;
        }
    }
    pool.release_unused(tables);
    match result {
        Ok(()) => Ok(applied),
        Err((e, done)) => {
            if done > 0 {
                // SAFETY: what this call mapped, in the caller's range.
                unsafe { clear(tables, root, va, done, sections) };
            }
            Err(e)
        }
    }
}

// ---- walks with a callback (apply_to_page_range) -------------------------------

/// Calls `visit` with the run of slots of every level-3 table of
/// [va, va + size) (the range checked by the caller): missing tables are
/// linked first (`create`; allocated before anything changes) or skipped.
/// Fails with nothing changed if a block is in the way; stops at the first
/// error of `visit`.
pub fn for_each_table<E>(
    tables: &impl Tables,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    create: bool,
    sections: Sections,
    mut visit: impl FnMut(TableRun, &mut Applied) -> Result<(), E>,
) -> Result<Applied, ApplyError<E>> {
    // It may be 0: the range runs to the top of the address space.
    let end = VirtAddr::new(va.as_u64().wrapping_add(size));
    let needed = walk::tables_needed(tables, root, va, end).map_err(MapError::from)?;
    let mut pool = Pool::alloc(tables, if create { needed } else { 0 })?;
    let mut applied = Applied::default();
    let mut linking = Linking::default();
    let mut result = Ok(());
    {
        let _whole = (sections == Sections::WholeCall).then(|| tables.lazy_section());
        for (at, stop) in super::span::chunks(va.as_u64(), end.as_u64(), BLOCK_2M) {
            let at = VirtAddr::new(at);
            let pool = create.then_some(&mut pool);
            let table = match table_for(tables, root, at, Level::L3, pool, &mut linking, &mut applied) {
                Ok(Some(table)) => table,
                Ok(None) => continue,
                Err(e) => {
                    result = Err(ApplyError::Map(e));
                    break;
                }
            };
            let _per_table = (sections == Sections::PerTable).then(|| tables.lazy_section());
            let len = (stop.wrapping_sub(at.as_u64()) / PAGE_SIZE) as usize;
            if let Err(e) = visit(TableRun::new(table, Level::L3, at, len), &mut applied) {
                result = Err(ApplyError::Callback(e));
                break;
            }
        }
    }
    // Tables planned for slots a failed callback never reached.
    pool.release(tables);
    result.map(|()| applied)
}

// ---- clearing ---------------------------------------------------------------

/// The entries covering [va, va + size), in address order, each the
/// deepest a walk reaches: (the entry, the address it was reached for,
/// how many bytes of the range from there it covers). Inside a level-3
/// table, the rest of the table's part of the range is one step.
fn steps(
    tables: &impl TableMemory,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
) -> impl Iterator<Item = (Slot, VirtAddr, u64)> {
    let mut done = 0;
    core::iter::from_fn(move || {
        (done < size).then(|| {
            let at = va.add(done);
            let slot = walk::walk(tables, root, at);
            let span = match slot.level {
                Level::L3 => (BLOCK_2M - (at.as_u64() & (BLOCK_2M - 1))).min(size - done),
                _ => (slot.level.entry_size() - at.offset_from(slot.va)).min(size - done),
            };
            done += span;
            (slot, at, span)
        })
    })
}

/// Does a boundary at `at` cut the contiguous run `entry` (the level-3
/// entry next to it) belongs to?
#[inline]
fn run_cut(at: u64, entry: Descriptor) -> bool {
    entry.is_leaf(Level::L3) && entry.is_contiguous() && at & (CONT_PTE_SIZE - 1) != 0
}

/// Does the leaf at `slot` lie wholly inside [va, va + size)?
fn within(slot: Slot, va: VirtAddr, size: u64) -> bool {
    slot.va >= va && slot.level.entry_size() <= size.saturating_sub(slot.va.offset_from(va))
}

/// Checks that [va, va + size) can be cleared: no block or contiguous run
/// of pages sticks out of it (`SplitsBlock`, `SplitsContiguousRun`), and,
/// if `mapped`, every address of it is mapped (`NotMapped`, the first
/// hole). Changes nothing.
pub fn check_clear(
    tables: &impl TableMemory,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    mapped: bool,
) -> Result<(), MapError> {
    for (slot, at, span) in steps(tables, root, va, size) {
        match (slot.level, slot.entry(tables)) {
            (Level::L3, _) => {
                let run = TableRun::new(slot.table, Level::L3, at, (span / PAGE_SIZE) as usize);
                let old = tables.reader(run.table, run.index);
                // Only the range's two ends can cut a run.
                if at == va && run_cut(run.va.as_u64(), old(0)) {
                    return Err(MapError::SplitsContiguousRun(run.va.align_down(CONT_PTE_SIZE)));
                }
                if mapped && let Some(i) = (0..run.len).find(|&i| !old(i).is_valid()) {
                    return Err(MapError::NotMapped(run.slot(i).va));
                }
                let last = run.slot(run.len - 1).va;
                if last.offset_from(va) + PAGE_SIZE == size
                    && run_cut(last.as_u64().wrapping_add(PAGE_SIZE), old(run.len - 1))
                {
                    return Err(MapError::SplitsContiguousRun(last.align_down(CONT_PTE_SIZE)));
                }
            }
            (_, Entry::Leaf { .. }) if !within(slot, va, size) => {
                return Err(MapError::SplitsBlock { va: slot.va, level: slot.level });
            }
            (_, Entry::Invalid) if mapped => return Err(MapError::NotMapped(at)),
            _ => {}
        }
    }
    Ok(())
}

/// The leaf mapping `va` when it is bigger than a page: the block, or the
/// contiguous run of 16 pages, as (its first address, its size). `None`
/// for a page without the bit or nothing mapped. Changes nothing.
///
/// Linux's vunmap clears such a leaf whole when the range covers only
/// part of it (and warns): `vunmap_pmd_range` and `vunmap_pud_range` clear
/// the block (`pmd_clear_huge`, `WARN_ON(next - addr < PMD_SIZE)`,
/// 61ef8ddaa35e), `vunmap_pte_range` the run (`huge_ptep_get_and_clear`
/// of `CONT_PTE_SIZE`, 2fba13371fe8).
pub fn huge_leaf_at(tables: &impl TableMemory, root: PhysAddr, va: VirtAddr) -> Option<(VirtAddr, u64)> {
    let slot = walk::walk(tables, root, va);
    let entry = tables.read(slot.table, slot.index());
    match slot.level {
        Level::L3 if entry.is_leaf(Level::L3) && entry.is_contiguous() => {
            Some((va.align_down(CONT_PTE_SIZE), CONT_PTE_SIZE))
        }
        Level::L3 => None,
        level => entry.is_leaf(level).then_some((slot.va, level.entry_size())),
    }
}

/// What [`clear`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Valid leaves cleared.
    pub leaves: u64,
    /// Every level-3 entry of the range is zero now (an invalid entry that
    /// is not zero, which nothing here writes, stays): the level-3 tables
    /// wholly inside the range are empty without a look.
    pub zero: bool,
}

/// Clears every valid leaf of [va, va + size) (checked by
/// [`check_clear`]: no block sticks out), a level-3 table's part of the
/// range in one run; holes stay. The flush is the caller's.
///
/// # Safety
/// The range is the caller's: nothing else maps into it while this runs,
/// and what it mapped is flushed from the TLB before it is used otherwise.
pub unsafe fn clear(tables: &impl Tables, root: PhysAddr, va: VirtAddr, size: u64, sections: Sections) -> Cleared {
    let left = Cell::new(0);
    let mut cleared = 0;
    let _whole = (sections == Sections::WholeCall).then(|| tables.lazy_section());
    for (slot, at, span) in steps(tables, root, va, size) {
        if slot.level == Level::L3 {
            let _per_table = (sections == Sections::PerTable).then(|| tables.lazy_section());
            let run = TableRun::new(slot.table, Level::L3, at, (span / PAGE_SIZE) as usize);
            let left = &left;
            // SAFETY: the caller's range; flushed by the caller.
            cleared += unsafe {
                tables.update_run(run, move |_, old| {
                    if old.is_valid() {
                        return Some(Descriptor::INVALID);
                    }
                    left.set(left.get() | old.0);
                    None
                })
            } as u64;
        } else if tables.read(slot.table, slot.index()).is_leaf(slot.level) {
            let run = TableRun::new(slot.table, slot.level, slot.va, 1);
            // SAFETY: a block wholly in the caller's range; flushed by the caller.
            cleared += unsafe { tables.write_run(run, |_| Some(Descriptor::INVALID)) } as u64;
        }
    }
    Cleared { leaves: cleared, zero: left.get() == 0 }
}

// ---- splitting a block ---------------------------------------------------------

/// Replaces the block at `block` with `table` (zeroed, the caller's,
/// linked nowhere) holding the same mapping one level down: the 512
/// entries written in one run, ordered before the link, then the link
/// ([`Tables::replace_block`]). Returns the new table's level.
///
/// # Safety
/// The block is the caller's to split in place (BBML2_NOABORT: the old
/// block and the new table map the same memory, which may both be in TLBs
/// until the caller's flush).
pub unsafe fn split_block(tables: &impl Tables, block: Slot, table: PhysAddr) -> Level {
    let Entry::Leaf { addr: pa, attrs } = block.entry(tables) else {
        panic!("split_block of a non-block at {}", block.va)
    };
    let level = block.level.next().expect("blocks are above level 3");
    let template = Descriptor::leaf_template(level, attrs);
    let step = level.entry_size();
    // SAFETY: `table` is ours, not linked yet; its entries map the block's
    // own memory, one level down.
    unsafe {
        tables.write_run(TableRun::new(table, level, block.va, 512), move |i| {
            Some(template.with_output(pa.add(i as u64 * step)))
        });
        tables.replace_block(block, table);
    }
    level
}

// ---- splitting a contiguous run -------------------------------------------------

/// Rewrites the contiguous run of 16 pages holding the level-3 slot `slot`
/// as 16 plain pages (the contiguous bit cleared, the rest unchanged), in
/// one run of stores, and returns the run's first address. Entries without
/// the bit stay.
///
/// # Safety
/// The run is the caller's to split in place (BBML2_NOABORT: the old
/// 64 KiB entry and the new pages may both be in TLBs until the caller's
/// flush of the run's whole range), or already unreachable (broken: all 16
/// invalid and flushed, which this does not check).
pub unsafe fn split_contiguous(tables: &impl Tables, slot: Slot) -> VirtAddr {
    debug_assert_eq!(slot.level, Level::L3, "contiguous runs are of pages");
    let first = slot.va.align_down(CONT_PTE_SIZE);
    let run = TableRun::new(slot.table, Level::L3, first, CONT_PTES);
    // SAFETY: as our caller guarantees.
    unsafe { tables.update_run(run, |_, old| old.is_contiguous().then(|| old.without_contiguous())) };
    first
}

// ---- taking empty tables away ----------------------------------------------------

/// Is the table at `table` all zeroes?
fn table_is_empty(tables: &impl TableMemory, table: PhysAddr) -> bool {
    let entry = tables.reader(table, 0);
    (0..512).all(|i| entry(i) == Descriptor::INVALID)
}

/// Unlinks the tables below `root` that cover [va, va + size) and are
/// empty (clears the entries that point to them, bottom up: a table whose
/// tables all went may go too), and hands each to `unlinked`. They are not
/// free yet: a CPU may still hold a cached walk through the cleared
/// entries until the caller's flush drops it. With `zero` (every level-3
/// entry of the range is zero: the caller, who owns the range, has just
/// cleared them), a level-3 table wholly inside the range is empty without
/// a look ([`Tables::claimed_empty`]).
///
/// # Safety
/// No walk of the tables is in progress, nor starts until the caller's
/// flush (the kernel's `Exclusive`); with `zero`, the claim is true.
pub unsafe fn unlink_empty_tables(
    tables: &impl Tables,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    zero: bool,
    unlinked: &mut impl FnMut(PhysAddr),
) {
    let last = va.as_u64().wrapping_add(size - 1);
    // SAFETY: as our caller guarantees.
    unsafe { unlink_empty_below(tables, root, Level::L0, va.as_u64(), last, zero, unlinked) };
}

/// # Safety
/// As [`unlink_empty_tables`], for the table at `table` (at `level`).
unsafe fn unlink_empty_below(
    tables: &impl Tables,
    table: PhysAddr,
    level: Level,
    first: u64,
    last: u64,
    zero: bool,
    unlinked: &mut impl FnMut(PhysAddr),
) {
    let Some(next_level) = level.next() else { return };
    let size = level.entry_size();
    let mut at = first & !(size - 1);
    loop {
        let slot = Slot::new(table, level, VirtAddr::new(at));
        if let Entry::Table(child) = slot.entry(tables) {
            let lo = first.max(at);
            let hi = last.min(at.wrapping_add(size - 1));
            // SAFETY: as our caller guarantees.
            unsafe { unlink_empty_below(tables, child, next_level, lo, hi, zero, unlinked) };
            let whole = lo == at && hi == at.wrapping_add(size - 1);
            let empty = if next_level == Level::L3 && whole && zero {
                tables.claimed_empty(child);
                true
            } else {
                table_is_empty(tables, child)
            };
            if empty {
                // SAFETY: an empty table, unlinked with no walk in progress
                // (our caller's contract); flushed before it is freed.
                unsafe { tables.write_run(TableRun::new(table, level, slot.va, 1), |_| Some(Descriptor::INVALID)) };
                // The parent's emptiness is read from memory next.
                tables.sync();
                unlinked(child);
            }
        }
        let next = at.wrapping_add(size);
        if next == 0 || next > last || next < at {
            break;
        }
        at = next;
    }
}
