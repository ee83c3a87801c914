//! Walks on the kernel's tables, and the lock protocol that lets several
//! CPUs link, walk and take away tables at once.

use core::marker::PhantomData;
use core::panic::Location;
use core::ptr::read_volatile;

use super::*;
use crate::arch::observe::Run;
use crate::mm::addr::{BLOCK_2M, CONT_PTES, PhysAddr, VirtAddr};
use crate::mm::descriptor::{Descriptor, Entry, Level};
use crate::mm::engine::{self, TableRun};
use crate::mm::layout::in_linear_map;
use crate::mm::walk::{self, Slot, TableMemory};
use crate::mm::{lazy_mmu, pgtable_check, phys_to_virt};
use crate::planted::{Bug, planted};
use crate::sync::{IrqSpinLock, SpinWait};

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
    lookup_from(kernel_root(), va)
}

/// [`lookup`] in the tables under `root`.
pub(in crate::mm) fn lookup_from(root: PhysAddr, va: VirtAddr) -> Found {
    let walk = walking_from(root);
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
#[track_caller]
pub fn walking() -> Walking {
    walking_from(kernel_root())
}

/// [`walking`](fn@walking), on the tables under `root` (boot builds the kernel's own
/// before it installs them).
#[track_caller]
pub(in crate::mm) fn walking_from(root: PhysAddr) -> Walking {
    let guard = match TABLES.try_read() {
        Some(guard) => guard,
        None => wait_to_walk(Location::caller()),
    };
    crate::task::current().count_walk(true);
    Walking { _guard: guard, root, _task_bound: PhantomData }
}

/// Panics unless the current task holds a walk guard or [`Exclusive`]:
/// called by code that reads the tables through raw pointers (the audit,
/// [`visit`](fn@super::visit)), so that a reader that forgot its guard fails in every test
/// that runs it, not only in the rare race with a reclaim that frees a
/// table under it.
#[track_caller]
pub(crate) fn assert_walk_held() {
    let task = crate::task::current();
    assert!(task.walks() > 0 || task.holds_exclusive(), "the kernel's tables read without a walk guard");
}

/// [`walking_from`]'s wait while `exclusive()` is held: a holder that
/// never lets go is reported with where this walk waits.
#[cold]
fn wait_to_walk(at: &'static Location<'static>) -> spin::RwLockReadGuard<'static, ()> {
    let mut wait = SpinWait::at("TABLES for a walk (exclusive() holds it)", at);
    loop {
        if let Some(guard) = TABLES.try_read() {
            return guard;
        }
        wait.spin(|| (TABLES.reader_count() + TABLES.writer_count()) as u64);
    }
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

    /// The entry for `va` at `level`, creating missing tables on the way
    /// (the mapping engine's `entry_for`: all of them, or none). Fails if
    /// a block mapping sits above `level`.
    pub fn walk_create(&self, va: VirtAddr, level: Level) -> Result<EntryRef<'_>, MapError> {
        let slot = engine::entry_for(&KernelTables::new(self), self.root, va, level)?;
        // SAFETY: a table linked below the root, kept by this walk.
        Ok(unsafe { EntryRef::at(slot) })
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

    /// The `len` entries of the level-3 table `table` from the one for `va`.
    ///
    /// # Safety
    /// As [`Walking::table_entry`], for a level-3 table; the `len` entries
    /// lie in it.
    #[inline]
    pub unsafe fn table_ptes(&self, table: PhysAddr, va: VirtAddr, len: usize) -> Ptes<'_> {
        // SAFETY: as the caller guarantees; the walk keeps a linked table.
        unsafe { Ptes::new(table, va, len) }
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

/// The kernel's tables as the mapping engine (`mm::engine`) changes them:
/// read through the linear map, written through the one store path
/// (`lazy_mmu::write_run`), tables linked under `LINK` ([`link_table`]),
/// sections of the current task. It borrows the walk that keeps the
/// tables it reaches.
pub(crate) struct KernelTables<'walk> {
    _kept: PhantomData<&'walk ()>,
}

impl<'walk> KernelTables<'walk> {
    /// The tables as a walk reaches them (it keeps them).
    pub(crate) fn new(_walk: &'walk Walking) -> KernelTables<'walk> {
        KernelTables { _kept: PhantomData }
    }

    /// The tables as the holder of [`Exclusive`] reaches them (no walk is
    /// in progress: it may take tables away).
    pub(crate) fn exclusive(_exclusive: &'walk Exclusive) -> KernelTables<'walk> {
        KernelTables { _kept: PhantomData }
    }
}

impl TableMemory for KernelTables<'_> {
    #[inline(always)]
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        LinearMap.read(table, index)
    }

    #[inline(always)]
    fn reader(&self, table: PhysAddr, first: usize) -> impl Fn(usize) -> Descriptor + Copy {
        let first = phys_to_virt(table).as_ptr::<u64>().wrapping_add(first);
        // SAFETY: entries of a table the walk keeps, through the linear map.
        move |i| Descriptor(unsafe { read_volatile(first.wrapping_add(i)) })
    }
}

/// The planted contiguous-bit bugs, on the way to the store primitive
/// (nothing in a release build, where `planted` is a constant `false`).
#[inline(always)]
fn planted_contiguous(run: TableRun, i: usize, new: Option<Descriptor>) -> Option<Descriptor> {
    let d = new?;
    if run.level != Level::L3 || !d.is_leaf(Level::L3) {
        return Some(d);
    }
    let index = run.index + i;
    if planted(Bug::ContPartialWrite) && d.is_contiguous() && index % CONT_PTES == CONT_PTES - 1 {
        return Some(d.without_contiguous());
    }
    let group = index - index % CONT_PTES;
    let whole_group = group >= run.index && group + CONT_PTES <= run.index + run.len;
    if planted(Bug::ContMisaligned) && whole_group && !in_linear_map(run.va) {
        return Some(d.with_contiguous());
    }
    Some(d)
}

/// The engine's run as the store primitive takes it: where its first
/// entry is, through the linear map.
#[inline(always)]
fn arch_run(run: TableRun) -> Run {
    let first = phys_to_virt(run.table).as_mut_ptr::<u64>().wrapping_add(run.index);
    Run { first, len: run.len, level: run.level, va: run.va.as_u64() }
}

impl engine::Tables for KernelTables<'_> {
    type Section = lazy_mmu::LazyMmuSection;

    #[inline]
    fn lazy_section(&self) -> lazy_mmu::LazyMmuSection {
        lazy_mmu::enable()
    }

    #[inline(always)]
    unsafe fn write_run(&self, run: TableRun, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize {
        let new = move |i| planted_contiguous(run, i, new(i));
        // SAFETY: the run lies in a table the walk keeps (or the caller's,
        // unlinked), and the stores are the caller's (our caller's contract).
        unsafe { lazy_mmu::write_run(arch_run(run), new) }
    }

    #[inline(always)]
    unsafe fn update_run(&self, run: TableRun, new: impl Fn(usize, Descriptor) -> Option<Descriptor> + Copy) -> usize {
        let run = arch_run(run);
        let first = run.first;
        // SAFETY: as in `write_run`; the reads are of the same entries.
        unsafe { lazy_mmu::write_run(run, move |i| new(i, Descriptor(read_volatile(first.wrapping_add(i))))) }
    }

    unsafe fn link(&self, slot: Slot, table: PhysAddr) -> Linked {
        // SAFETY: a table the walk reached, kept by it.
        link_table(&unsafe { EntryRef::at(slot) }, table)
    }

    unsafe fn replace_block(&self, slot: Slot, table: PhysAddr) {
        order_before_link();
        // SAFETY: the table maps exactly what the block did (our caller's
        // contract); the walk keeps the block's table.
        unsafe { write_entry(&EntryRef::at(slot), Descriptor::table(table)) };
        // The next walk reads from memory: under `deferred-writes` the link
        // must be there, or the block would be found and split again.
        lazy_mmu::sync_stores();
    }

    fn sync(&self) {
        lazy_mmu::sync_stores();
    }

    fn claimed_empty(&self, table: PhysAddr) {
        // The checker, if on, verifies the claim; the code takes the same path.
        pgtable_check::claimed_empty(table);
    }

    fn alloc_table(&self) -> Option<PhysAddr> {
        alloc_table().ok()
    }

    fn free_table(&self, table: PhysAddr) {
        crate::mm::frame_alloc::free_frame(table).expect("allocated by alloc_table");
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
/// next reclaim does not wait for them forever. Returns how many. Only
/// for code that `exception::catch` abandoned (`exception::release_abandoned`):
/// a live guard let go this way would let its tables be freed under it.
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
        crate::task::current().set_exclusive(false);
        self.guard = None;
        crate::arch::cpu::irq_restore(self.daif);
    }
}

/// Waits until no walk is in progress. Must not be called during one of
/// the caller's own (see [`walking`](fn@walking)). A wait that cannot end (a walk
/// guard never let go) reports itself with where it waits
/// (`sync::SpinWait`).
///
/// A fault or panic while it is held stops the kernel (see `panic.rs`):
/// tables may be half unlinked, and no walk could ever start again.
#[track_caller]
pub fn exclusive() -> Exclusive {
    // It would wait for itself forever: say so instead.
    assert_eq!(crate::task::current().walks(), 0, "exclusive() inside one of this task's own walks");
    if let Some(exclusive) = try_exclusive() {
        return exclusive;
    }
    let mut wait = SpinWait::new("TABLES for exclusive() (walk guards hold it)");
    loop {
        if let Some(exclusive) = try_exclusive() {
            return exclusive;
        }
        wait.spin(|| (TABLES.reader_count() + TABLES.writer_count()) as u64);
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
        Some(guard) => {
            crate::task::current().set_exclusive(true);
            Some(Exclusive { guard: Some(guard), daif, _cpu_bound: PhantomData })
        }
        None => {
            crate::arch::cpu::irq_restore(daif);
            None
        }
    }
}

pub(in crate::mm) use crate::mm::engine::Linked;

/// Links `table` at `entry` unless something is there by now (see above).
pub(in crate::mm) fn link_table(entry: &EntryRef<'_>, table: PhysAddr) -> Linked {
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
