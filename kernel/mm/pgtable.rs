//! The kernel's page tables: the one module through which every kernel
//! page table is read and written. The walk's logic is `mm::walk`, which
//! this module runs over the linear map, under its locks, with its store
//! path.
//!
//! [`write_entry`] is the single place where a descriptor is stored, so the
//! barrier policy (what a store must be followed by before the walker can
//! rely on it) is applied in exactly one place: after making an entry valid,
//! `dsb ishst` (the store reaches the walker) and `isb` (no instruction
//! already in the pipeline keeps a stale "invalid" translation), paid at
//! once or deferred to the end of a lazy MMU section (`mm::lazy_mmu`).
//! Making an entry invalid needs neither: the TLB maintenance that must
//! follow it brings its own barriers.

use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::read_volatile;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::addr::{BLOCK_1G, BLOCK_2M, PAGE_SIZE, PhysAddr, VirtAddr};
use super::descriptor::{Attributes, Descriptor, Entry, Level};
use super::frame_alloc::{self, FrameError};
use super::layout::{LINEAR_MAP_SIZE, PAGE_OFFSET, in_linear_map};
use super::walk::{self, BlockInTheWay, Slot, TableMemory};
use super::{lazy_mmu, pgtable_check, phys_to_virt, tlb};
use crate::arch::barrier;
use crate::planted::{Bug, planted};
use crate::sync::IrqSpinLock;

/// Errors from building or changing mappings. Each leaves the tables as
/// they were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    /// An address or size not aligned as the operation needs.
    Misaligned {
        what: &'static str,
        value: u64,
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
}

impl From<BlockInTheWay> for MapError {
    fn from(BlockInTheWay { va, level }: BlockInTheWay) -> MapError {
        MapError::BlockInTheWay { va, level }
    }
}

impl From<FrameError> for MapError {
    fn from(_: FrameError) -> MapError {
        MapError::OutOfMemory
    }
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Physical address of the kernel's level-0 table (TTBR1), once built.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

pub fn kernel_root() -> PhysAddr {
    PhysAddr::new(KERNEL_ROOT.load(Relaxed))
}

pub(super) fn set_kernel_root(root: PhysAddr) {
    KERNEL_ROOT.store(root.as_u64(), Relaxed);
}

/// One entry of one table: where it is, at which level, and which virtual
/// address its range starts at. It borrows the walk that found it
/// ([`Walking`]): it cannot outlive the guard that keeps its table from
/// being taken away, and (a raw pointer inside) it cannot be sent to
/// another task or CPU.
#[derive(Clone, Copy, Debug)]
pub struct EntryRef<'walk> {
    ptr: *mut u64,
    pub level: Level,
    pub va: VirtAddr,
    walk: PhantomData<&'walk Walking>,
}

impl<'walk> EntryRef<'walk> {
    /// # Safety
    /// `table` is a page-table page at `level` that stays one for `'walk`:
    /// reachable under a walk guard (or `Exclusive`) that lives that long,
    /// or not linked anywhere yet and owned by the caller.
    #[inline]
    pub(super) unsafe fn new(table: PhysAddr, level: Level, va: VirtAddr) -> EntryRef<'walk> {
        let ptr = phys_to_virt(table).as_mut_ptr::<u64>().wrapping_add(level.index(va.as_u64()));
        let va = VirtAddr::new(va.as_u64() & !(level.entry_size() - 1));
        EntryRef { ptr, level, va, walk: PhantomData }
    }

    /// The entry at `slot`, which a walk reached.
    ///
    /// # Safety
    /// As [`EntryRef::new`], for `slot.table`.
    #[inline]
    unsafe fn at(slot: Slot) -> EntryRef<'walk> {
        // SAFETY: as our caller guarantees.
        unsafe { EntryRef::new(slot.table, slot.level, slot.va) }
    }

    /// The next entry of the same table (the entry for `va` plus this
    /// level's entry size), without a walk.
    ///
    /// # Safety
    /// This is not the table's last entry.
    #[inline]
    pub(super) unsafe fn following(&self) -> EntryRef<'walk> {
        EntryRef {
            // SAFETY: as the caller guarantees, still inside the table.
            ptr: unsafe { self.ptr.add(1) },
            level: self.level,
            va: self.va.add(self.level.entry_size()),
            walk: PhantomData,
        }
    }

    /// Where the entry is. A store through it (unsafe) bypasses the store
    /// path: no barrier owed, no count, nothing the checker sees. The
    /// bench's ideal loops do that on purpose, to measure what the path adds.
    pub fn as_ptr(&self) -> *mut u64 {
        self.ptr
    }

    #[inline]
    pub fn read(&self) -> Descriptor {
        // SAFETY: `ptr` points into a live page-table page, reached through
        // the linear map (or the boot identity map before it exists).
        Descriptor(unsafe { read_volatile(self.ptr) })
    }

    #[inline]
    pub fn entry(&self) -> Entry {
        self.read().decode(self.level)
    }

    /// Does the range this entry maps lie wholly inside [va, va + size)?
    /// (A block that sticks out of a range must not be cleared for it.)
    #[inline]
    pub fn within(&self, va: VirtAddr, size: u64) -> bool {
        self.va >= va && self.level.entry_size() <= size.saturating_sub(self.va.offset_from(va))
    }

    /// Where the entry itself is, in the linear map.
    pub fn slot_va(&self) -> VirtAddr {
        VirtAddr::from_ptr(self.ptr)
    }
}

/// Writes `desc` into a page-table entry: the only way the kernel changes
/// a page table. The store and the barriers it owes are the lazy MMU
/// backend's business (`mm::lazy_mmu`): made and paid at once, paid at the
/// end of the section, or (under `deferred-writes`) both at the end.
///
/// # Safety
/// The entry is the caller's to change: a valid `desc` maps only memory
/// the caller may map there with those attributes (or links a table it
/// owns), and a change of a live translation (a clear, a permission taken
/// away) is followed by the TLB maintenance it owes before what it mapped
/// is used otherwise. The entry's own table is kept by the walk `entry`
/// borrows.
#[inline(always)]
pub unsafe fn write_entry(entry: &EntryRef<'_>, desc: Descriptor) {
    if lazy_mmu::stores_watched() {
        // SAFETY: as below.
        unsafe { write_entry_watched(entry.ptr, entry.level, entry.va, desc) };
        return;
    }
    // SAFETY: `ptr` points into a live page-table page (see EntryRef::read);
    // the caller keeps the table until its section ends.
    unsafe { lazy_mmu::set_entry(entry.ptr, desc) };
}

/// [`write_entry`] with the trace or the checker on: the trace line, then
/// the store path that tells them.
///
/// # Safety
/// As [`write_entry`].
#[cold]
#[inline(never)]
unsafe fn write_entry_watched(ptr: *mut u64, level: Level, va: VirtAddr, desc: Descriptor) {
    // (The entry in parts: passed in registers, so that the short path
    // never has to build it in memory.)
    if crate::trace::enabled() {
        trace_write(EntryRef { ptr, level, va, walk: PhantomData }, desc);
    }
    // SAFETY: as for write_entry.
    unsafe { lazy_mmu::set_entry_watched(ptr, desc) };
}

fn trace_write(entry: EntryRef<'_>, desc: Descriptor) {
    crate::trace::emit(format_args!(
        "write L{} entry for {}: {}",
        entry.level.0,
        entry.va,
        Described(desc, entry.level)
    ));
}

/// A descriptor in words, for traces.
struct Described(Descriptor, Level);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.decode(self.1) {
            Entry::Invalid => write!(f, "invalid (clears it)"),
            Entry::Table(pa) => write!(f, "table at {pa}"),
            Entry::Leaf { addr, attrs } => {
                let size = match self.1.0 {
                    1 => "1G block",
                    2 => "2M block",
                    _ => "page",
                };
                let perm = match (attrs.writable, attrs.executable) {
                    (true, _) => "RW",
                    (false, true) => "RX",
                    (false, false) => "RO",
                };
                write!(f, "{size} -> {addr} {perm}")
            }
        }
    }
}

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

/// Where a creating walk gets its new tables.
enum Tables<'p> {
    /// From the frame allocator, one at a time.
    Allocate,
    /// From tables allocated beforehand.
    Pool(&'p mut Vec<PhysAddr>),
}

impl Tables<'_> {
    fn take(&mut self) -> Result<PhysAddr, MapError> {
        match self {
            Tables::Allocate => alloc_table(),
            Tables::Pool(pool) => pool.pop().ok_or(MapError::OutOfMemory),
        }
    }

    fn give_back(&mut self, table: PhysAddr) {
        match self {
            Tables::Allocate => frame_alloc::free_frame(table).expect("allocated by take()"),
            Tables::Pool(pool) => pool.push(table),
        }
    }
}

/// Frees page-table pages from [`alloc_tables`] that were never linked.
pub fn free_unlinked_tables(tables: Vec<PhysAddr>) {
    for pa in tables {
        frame_alloc::free_frame(pa).expect("allocated by alloc_tables");
    }
}

/// What the walk for an address finds: the deepest entry reached (a leaf,
/// an invalid entry, or the level-3 entry), as a value: its level, the
/// first address it translates, and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub level: Level,
    pub va: VirtAddr,
    pub entry: Entry,
}

/// What the kernel's tables hold for `va` now (read under a walk guard).
pub fn lookup(va: VirtAddr) -> Found {
    let walk = walking();
    let entry = walk.walk(va);
    Found { level: entry.level, va: entry.va, entry: entry.entry() }
}

// ---- several CPUs: who may link, walk and take away tables -------------
//
// Leaf entries belong to whoever owns the range (a vmalloc area, a stack):
// two CPUs never write the same leaf unless they agreed on a lock of their
// own (as KASAN does). Tables are shared, and two rules keep them right:
//
// - Linking: a missing table is linked under `LINK`, after looking again
//   (another CPU may have linked one meanwhile: then that one is used and
//   ours goes back), and the link is in memory before the lock is dropped,
//   so the next CPU to look sees it (Linux's `__pte_alloc_kernel` under
//   init_mm's page_table_lock).
// - Taking away: every operation that walks the tables and then writes
//   through what it found holds `TABLES` for reading ([`walking`]); empty
//   tables are unlinked and freed only under `TABLES` for writing, when no
//   such walk is in progress, so nobody can be about to write into a table
//   that is being taken away.

static LINK: IrqSpinLock<()> = IrqSpinLock::new(());
static TABLES: spin::RwLock<()> = spin::RwLock::new(());

/// A walk in progress: empty tables are not taken away while it lives,
/// and the entries it finds ([`EntryRef`]) borrow it.
#[must_use = "tables may be taken away as soon as this is dropped"]
pub struct Walking {
    _guard: spin::RwLockReadGuard<'static, ()>,
    root: PhysAddr,
    /// Not `Send`: the walk is counted on the task that began it, and its
    /// end makes that task's queued stores.
    _task_bound: PhantomData<*const ()>,
}

/// Declares a walk-then-write operation in progress on the kernel's tables.
pub fn walking() -> Walking {
    walking_from(kernel_root())
}

/// [`walking`], on the tables under `root` (boot builds the kernel's own
/// before it installs them).
pub(super) fn walking_from(root: PhysAddr) -> Walking {
    let guard = TABLES.read();
    crate::task::current().count_walk(true);
    Walking { _guard: guard, root, _task_bound: PhantomData }
}

impl Walking {
    /// The level-0 table this walk starts from.
    #[inline]
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Walks towards `va` and returns the deepest entry reached: a leaf,
    /// an invalid entry, or the level-3 entry.
    #[inline]
    pub fn walk(&self, va: VirtAddr) -> EntryRef<'_> {
        // SAFETY: the root and every table linked below it stay for as
        // long as this walk (see the module's notes on taking tables away).
        unsafe { walk_from(self.root, va) }
    }

    /// The entry for `va` at `level`, creating missing tables on the way.
    /// Fails if a block mapping sits above `level`.
    pub fn walk_create(&self, va: VirtAddr, level: Level) -> Result<EntryRef<'_>, MapError> {
        self.walk_create_with(va, level, &mut Tables::Allocate)
    }

    /// [`Walking::walk_create`] taking the tables it links from `pool`
    /// (from [`alloc_tables`], sized by [`Walking::tables_missing`]), so
    /// that it cannot run out of memory half way; a table another CPU
    /// linked first goes back to the pool.
    ///
    /// # Safety
    /// Every page in `pool` is a zeroed page-table page from
    /// [`alloc_tables`], the caller's, linked nowhere: whatever is in the
    /// pool becomes part of the kernel's tables.
    pub(crate) unsafe fn walk_create_from(
        &self,
        va: VirtAddr,
        level: Level,
        pool: &mut Vec<PhysAddr>,
    ) -> Result<EntryRef<'_>, MapError> {
        self.walk_create_with(va, level, &mut Tables::Pool(pool))
    }

    fn walk_create_with(&self, va: VirtAddr, level: Level, tables: &mut Tables<'_>) -> Result<EntryRef<'_>, MapError> {
        let slot = walk::walk_create(&LinearMap, self.root, va, level, |slot| -> Result<_, MapError> {
            let new = tables.take()?;
            // SAFETY: a table linked below the root, kept by this walk.
            let entry = unsafe { EntryRef::at(slot) };
            Ok(match link_table(&entry, new) {
                Linked::Ours => Some(new),
                Linked::Theirs(existing) => {
                    tables.give_back(new);
                    Some(existing)
                }
                Linked::Block => {
                    tables.give_back(new);
                    None
                }
            })
        })?;
        // SAFETY: a table linked below the root, kept by this walk.
        Ok(unsafe { EntryRef::at(slot) })
    }

    /// The tables [`Walking::walk_create`] would link to reach `va` at
    /// `level`, as (level of the entry that would point to it, the first
    /// address it covers), top down; an error if a block is in the way.
    /// Nothing is changed.
    pub fn tables_missing(&self, va: VirtAddr, level: Level) -> Result<impl Iterator<Item = (Level, u64)>, MapError> {
        Ok(walk::tables_missing(&LinearMap, self.root, va, level)?)
    }

    /// The tables creating walks to every level-3 entry of [start, end)
    /// will link, each counted once; an error if a block is in the way.
    pub fn tables_needed(&self, start: VirtAddr, end: VirtAddr) -> Result<usize, MapError> {
        Ok(walk::tables_needed(&LinearMap, self.root, start, end)?)
    }

    /// The entries covering [va, va + size), in address order: at each
    /// step the deepest entry the walk reaches (a leaf, or an invalid entry
    /// at the level where a hole starts), with the address it was reached
    /// for (`va` for the first, the entry's own start after that).
    ///
    /// Inside a level-3 table it steps from one entry to the next instead
    /// of walking from the root again: the table stays linked for as long
    /// as this walk (nothing replaces a table with a block), so the next
    /// entry is where a walk from the root would find it.
    pub fn walk_range(&self, va: VirtAddr, size: u64) -> impl Iterator<Item = (VirtAddr, EntryRef<'_>)> + '_ {
        let mut at = (size > 0).then_some(va);
        let mut last: Option<EntryRef<'_>> = None;
        core::iter::from_fn(move || {
            let here = at?;
            let entry = match last {
                // SAFETY: `here` is not 2 MiB aligned, so `prev` is not
                // the last entry of its level-3 table.
                Some(prev) if prev.level == Level::L3 && here.as_u64() & (BLOCK_2M - 1) != 0 => unsafe {
                    prev.following()
                },
                _ => self.walk(here),
            };
            last = Some(entry);
            let next = entry.va.as_u64().wrapping_add(entry.level.entry_size());
            // Stop at the end, even when the entry runs past it or to 2^64.
            at = (next != 0 && next.wrapping_sub(va.as_u64()) < size).then(|| VirtAddr::new(next));
            Some((here, entry))
        })
    }

    /// The entry for `va` at `level` in `table`.
    ///
    /// # Safety
    /// `table` is a page-table page at `level` that is linked below this
    /// walk's root, or that the caller allocated and owns and has not
    /// linked yet (to fill it first).
    #[inline]
    pub unsafe fn table_entry(&self, table: PhysAddr, level: Level, va: VirtAddr) -> EntryRef<'_> {
        // SAFETY: as the caller guarantees; the walk keeps a linked table.
        unsafe { EntryRef::new(table, level, va) }
    }
}

/// The kernel's tables as the walk reads them: through the linear map.
struct LinearMap;

impl TableMemory for LinearMap {
    #[inline]
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        // SAFETY: the walk reads only tables linked below a root that its
        // caller keeps (see `walk_from`), reached through the linear map.
        Descriptor(unsafe { read_volatile(phys_to_virt(table).as_mut_ptr::<u64>().add(index)) })
    }
}

/// The deepest entry for `va` below `root`.
///
/// # Safety
/// The tables below `root` on the way to `va` stay page tables for `'a`.
unsafe fn walk_from<'a>(root: PhysAddr, va: VirtAddr) -> EntryRef<'a> {
    // SAFETY: as the caller guarantees.
    unsafe { EntryRef::at(walk::walk(&LinearMap, root, va)) }
}

/// The linear map's entry for `va` (the deepest the walk reaches), with no
/// walk guard: the linear map's tables are never taken away (a split puts
/// a table under a block, nothing frees one), so the entry is good for as
/// long as the kernel runs. Not for stores that must be made before a
/// guard goes: under `deferred-writes` a store through it stays queued
/// until the task's section ends. None outside the linear map.
pub fn linear_map_entry(va: VirtAddr) -> Option<EntryRef<'static>> {
    if !in_linear_map(va) {
        return None;
    }
    // SAFETY: the linear map's tables are permanent (see above).
    Some(unsafe { walk_from(kernel_root(), va) })
}

/// Lets go of the walk guards the current task held when its code was
/// abandoned by a fault or panic (recovery skips their drops), so the
/// next reclaim does not wait for them forever. Returns how many. For the
/// test harness, after `exception::catch` abandoned a test's code: a live
/// guard let go this way would let its tables be freed under it.
pub(crate) fn recover_abandoned_walks() -> u32 {
    let n = crate::task::current().take_walks();
    for _ in 0..n {
        // SAFETY: each was a read guard of TABLES that this task took and
        // will never drop: its code was abandoned.
        unsafe { TABLES.force_read_decrement() };
    }
    n
}

impl Drop for Walking {
    /// The stores made under the walk are in memory before it ends: under
    /// `deferred-writes` they may wait in the task's queue, and once the
    /// walk is over the table they go into may be taken away (emptiness is
    /// read from memory) and freed, and they would land in a freed page.
    fn drop(&mut self) {
        if !planted(Bug::EarlyGuardDrop) {
            lazy_mmu::sync_stores();
        }
        pgtable_check::walk_ended();
        crate::task::current().count_walk(false);
    }
}

/// No walk is in progress: tables may be unlinked and freed. Interrupts
/// are masked while it is held, so that no handler on this CPU starts a
/// walk that would wait for it forever.
pub struct Exclusive {
    guard: Option<spin::RwLockWriteGuard<'static, ()>>,
    daif: u64,
    /// Not `Send`: it masked this CPU's interrupts and must end on it.
    _cpu_bound: PhantomData<*const ()>,
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        self.guard = None;
        crate::arch::cpu::irq_restore(self.daif);
    }
}

/// Waits until no walk is in progress. Must not be called during one of
/// the caller's own (see [`walking`]).
pub fn exclusive() -> Exclusive {
    // It would wait for itself forever: say so instead.
    assert_eq!(crate::task::current().walks(), 0, "exclusive() inside one of this task's own walks");
    loop {
        if let Some(exclusive) = try_exclusive() {
            return exclusive;
        }
        core::hint::spin_loop();
    }
}

/// Is [`exclusive`] held (by anyone)? The checker asks when a table is unlinked.
pub fn exclusive_held() -> bool {
    TABLES.writer_count() > 0
}

/// [`exclusive`], or None at once if a walk is in progress.
pub fn try_exclusive() -> Option<Exclusive> {
    let daif = crate::arch::cpu::irq_save();
    match TABLES.try_write() {
        Some(guard) => Some(Exclusive { guard: Some(guard), daif, _cpu_bound: PhantomData }),
        None => {
            crate::arch::cpu::irq_restore(daif);
            None
        }
    }
}

/// What [`link_table`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Linked {
    /// The new table is linked.
    Ours,
    /// Another CPU linked this table first; the new one was not used.
    Theirs(PhysAddr),
    /// A block mapping is there.
    Block,
}

/// Links `table` at `entry` unless something is there by now (see above).
pub(super) fn link_table(entry: &EntryRef<'_>, table: PhysAddr) -> Linked {
    let _link = LINK.lock();
    match entry.entry() {
        Entry::Table(existing) => Linked::Theirs(existing),
        Entry::Leaf { .. } => Linked::Block,
        Entry::Invalid => {
            // SAFETY: a table just allocated (zeroed and ordered), linked
            // where nothing was, under LINK.
            unsafe { write_entry(entry, Descriptor::table(table)) };
            // In memory before the lock goes: under deferred-writes it
            // would otherwise wait in this task's queue, unseen.
            lazy_mmu::sync_stores();
            Linked::Ours
        }
    }
}

/// Which leaf sizes a mapping may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafSizes {
    /// 4 KiB pages only.
    PagesOnly,
    /// 1 GiB and 2 MiB blocks where address and size allow, pages elsewhere.
    Blocks,
}

/// The largest leaf that fits at `va`/`pa` with `remaining` bytes left.
pub(super) fn leaf_level(va: VirtAddr, pa: PhysAddr, remaining: u64, sizes: LeafSizes) -> Level {
    if sizes == LeafSizes::Blocks {
        for (level, size) in [(Level::L1, BLOCK_1G), (Level::L2, BLOCK_2M)] {
            if va.is_aligned(size) && pa.is_aligned(size) && remaining >= size {
                return level;
            }
        }
    }
    Level::L3
}

pub(super) fn check_range(va: VirtAddr, size: u64) -> Result<VirtAddr, MapError> {
    if !va.is_kernel() {
        return Err(MapError::NotKernelAddress(va));
    }
    if !va.is_aligned(PAGE_SIZE) {
        return Err(MapError::Misaligned { what: "virtual address", value: va.as_u64() });
    }
    if size == 0 {
        return Err(MapError::BadRange { start: va, size });
    }
    if !size.is_multiple_of(PAGE_SIZE) {
        return Err(MapError::Misaligned { what: "size", value: size });
    }
    // The end may be exactly 2^64 (the last page of the address space).
    match va.checked_add(size - 1) {
        Some(_) => Ok(VirtAddr::new(va.as_u64().wrapping_add(size))),
        None => Err(MapError::BadRange { start: va, size }),
    }
}

/// Maps [va, va + size) to [pa, pa + size) with `attrs` in the table at
/// `root`. Nothing may be mapped there yet. On failure nothing is mapped.
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
        return Err(MapError::Misaligned { what: "physical address", value: pa.as_u64() });
    }
    let walk = walking_from(root);
    if let Some((mapped, _)) = walk.walk_range(va, size).find(|(_, entry)| !matches!(entry.entry(), Entry::Invalid)) {
        return Err(MapError::AlreadyMapped(mapped));
    }
    let mut done = 0;
    while done < size {
        let (v, p) = (va.add(done), pa.add(done));
        let level = leaf_level(v, p, size - done, sizes);
        let entry = match walk.walk_create(v, level) {
            Ok(entry) => entry,
            Err(e) => {
                drop(walk);
                if done > 0 {
                    // SAFETY: what this call mapped, nothing else; its
                    // caller owns the range.
                    unsafe { unmap_range(root, va, done) }.expect("just mapped");
                }
                return Err(e);
            }
        };
        // SAFETY: the caller may map [pa, pa + size) at [va, va + size).
        unsafe { write_entry(&entry, Descriptor::leaf(level, p, attrs)) };
        done += level.entry_size();
    }
    Ok(())
}

/// Unmaps [va, va + size): clears every leaf (blocks must lie wholly
/// inside) and frees tables left empty (see [`free_empty_tables`]). The
/// caller flushes the TLB for the leaves.
///
/// # Safety
/// `root` is a level-0 page table, and the range is the caller's: nothing
/// else uses what it maps (see [`write_entry`]).
pub unsafe fn unmap_range(root: PhysAddr, va: VirtAddr, size: u64) -> Result<(), MapError> {
    check_range(va, size)?;
    {
        let walk = walking_from(root);
        // Check first: every address mapped, blocks entirely inside.
        for (at, entry) in walk.walk_range(va, size) {
            if !matches!(entry.entry(), Entry::Leaf { .. }) {
                return Err(MapError::NotMapped(at));
            }
            if !entry.within(va, size) {
                return Err(MapError::Misaligned { what: "unmap splits a block at", value: entry.va.as_u64() });
            }
        }
        for (_, entry) in walk.walk_range(va, size) {
            // SAFETY: the caller's range; its flush is the caller's too.
            unsafe { write_entry(&entry, Descriptor::INVALID) };
        }
    }
    // SAFETY: `root` is a level-0 table (our caller's contract).
    unsafe { free_empty_tables(root, va, size) };
    Ok(())
}

fn table_is_empty(table: PhysAddr) -> bool {
    let entries = phys_to_virt(table).as_ptr::<u64>();
    // SAFETY: a live page-table page.
    (0..512).all(|i| unsafe { read_volatile(entries.add(i)) } == 0)
}

/// Unlinks the tables below `root` that cover [va, va + size) and are
/// empty (clears the entries that point to them), and returns their pages.
/// They are not free yet: a CPU may still hold a cached walk through the
/// cleared entries until [`tlb::flush_tlb_kernel_pgtables`] drops it.
fn unlink_empty_tables(root: PhysAddr, va: VirtAddr, size: u64) -> Vec<PhysAddr> {
    let mut unlinked = Vec::new();
    unlink_empty_below(root, Level::L0, va.as_u64(), va.as_u64().wrapping_add(size - 1), &mut unlinked);
    unlinked
}

/// Takes the empty tables under [va, va + size) away: unlink, one flush of
/// the range, then free, in that order. The flush is at every level of the
/// walk if a table went; else, if the caller cleared leaves there
/// (`leaves_cleared`), it is the leaves' flush; else there is none. The
/// pages are freed after `exclusive` is let go (freeing may map and unmap,
/// under debug_pagealloc, which walks). Returns how many tables went.
/// Never in the linear map, whose tables are permanent
/// ([`linear_map_entry`] relies on it).
///
/// # Safety
/// `root` is a level-0 page table: the kernel's, or tables the caller
/// built and owns (every entry below it is read as a table or a leaf).
pub(crate) unsafe fn reclaim_empty_tables(
    exclusive: Exclusive,
    root: PhysAddr,
    va: VirtAddr,
    size: u64,
    leaves_cleared: bool,
) -> usize {
    let linear = PAGE_OFFSET.as_u64()..PAGE_OFFSET.as_u64() + LINEAR_MAP_SIZE;
    assert!(
        va.as_u64() >= linear.end || va.as_u64().saturating_add(size) <= linear.start,
        "the linear map's tables are never taken away: {va} + {size:#x}"
    );
    let mut unlinked = unlink_empty_tables(root, va, size);
    let count = unlinked.len();
    if planted(Bug::FreeBeforeFlush) {
        drop(exclusive);
        free_unlinked_tables(core::mem::take(&mut unlinked));
        tlb::flush_tlb_kernel_pgtables(va, va.add(size));
        return count;
    }
    if !unlinked.is_empty() {
        tlb::flush_tlb_kernel_pgtables(va, va.add(size));
    } else if leaves_cleared {
        tlb::flush_tlb_kernel_range(va, va.add(size));
    }
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
    if let Some(exclusive) = try_exclusive() {
        // SAFETY: as our caller guarantees.
        unsafe { reclaim_empty_tables(exclusive, root, va, size, false) };
    }
}

fn unlink_empty_below(table: PhysAddr, level: Level, first: u64, last: u64, unlinked: &mut Vec<PhysAddr>) {
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
            unlink_empty_below(child, next_level, lo, hi, unlinked);
            if table_is_empty(child) {
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

/// What [`visit`] reports, in address order.
pub trait Visitor {
    /// A table page at `level` whose entries start at `va`.
    fn table(&mut self, va: VirtAddr, level: Level);
    /// A valid leaf: a block at levels 1-2, a page at level 3.
    fn leaf(&mut self, va: VirtAddr, level: Level, pa: PhysAddr, attrs: Attributes);
}

/// Visits every table page and valid leaf of the kernel half. The visit
/// is a walk ([`walking`]): no table is taken away under it (Linux's
/// ptdump holds the memory-hotplug lock for the same reason).
pub fn visit(visitor: &mut dyn Visitor) {
    let walk = walking();
    let base = VirtAddr::new(0xffff_0000_0000_0000);
    visitor.table(base, Level::L0);
    visit_table(walk.root(), Level::L0, base.as_u64(), visitor);
}

fn visit_table(table: PhysAddr, level: Level, base: u64, visitor: &mut dyn Visitor) {
    for index in 0..512u64 {
        let va = VirtAddr::new(base | (index << level.shift()));
        // SAFETY: a table reached from the root under the visit's walk guard.
        let entry = unsafe { EntryRef::new(table, level, va) };
        match entry.entry() {
            Entry::Invalid => {}
            Entry::Leaf { addr, attrs } => visitor.leaf(va, level, addr, attrs),
            Entry::Table(child) => {
                let next = level.next().expect("level-3 entries are never tables");
                visitor.table(va, next);
                visit_table(child, next, va.as_u64(), visitor);
            }
        }
    }
}
