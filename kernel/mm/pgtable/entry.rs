//! The entry handle ([`EntryRef`]) and the store of one entry ([`write_entry`]).

use core::marker::PhantomData;
use core::ptr::read_volatile;

use super::*;
use crate::arch::observe::Run;
use crate::mm::addr::PAGE_SIZE;
use crate::mm::addr::{PhysAddr, VirtAddr};
use crate::mm::descriptor::{Descriptor, Entry, Level};
use crate::mm::walk::Slot;
use crate::mm::{lazy_mmu, phys_to_virt, virt_to_phys};

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
    pub(in crate::mm) unsafe fn new(table: PhysAddr, level: Level, va: VirtAddr) -> EntryRef<'walk> {
        let ptr = phys_to_virt(table).as_mut_ptr::<u64>().wrapping_add(level.index(va.as_u64()));
        let va = VirtAddr::new(va.as_u64() & !(level.entry_size() - 1));
        EntryRef { ptr, level, va, walk: PhantomData }
    }

    /// The entry at `slot`, which a walk reached.
    ///
    /// # Safety
    /// As [`EntryRef::new`], for `slot.table`.
    #[inline]
    pub(super) unsafe fn at(slot: Slot) -> EntryRef<'walk> {
        // SAFETY: as our caller guarantees.
        unsafe { EntryRef::new(slot.table, slot.level, slot.va) }
    }

    /// The entry at `ptr`, of a table at `level`, for `va`.
    ///
    /// # Safety
    /// `ptr` is an entry of a page-table page at `level`, kept as for
    /// [`EntryRef::new`]; `va` is the first address it translates.
    #[inline]
    pub(super) unsafe fn from_parts(ptr: *mut u64, level: Level, va: VirtAddr) -> EntryRef<'walk> {
        EntryRef { ptr, level, va, walk: PhantomData }
    }

    /// The next entry of the same table (the entry for `va` plus this
    /// level's entry size), without a walk.
    ///
    /// # Safety
    /// This is not the table's last entry.
    #[inline]
    pub(in crate::mm) unsafe fn following(&self) -> EntryRef<'walk> {
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

    /// The entry by position (its table, level and address), as the
    /// mapping engine names it.
    pub fn slot(&self) -> Slot {
        let table = virt_to_phys(self.slot_va().align_down(PAGE_SIZE));
        Slot::new(table, self.level, self.va)
    }
}

/// Writes `desc` into a page-table entry: a run of one through the one
/// store path (`lazy_mmu::write_run`). The store and the barriers it owes
/// are the lazy MMU backend's business (`mm::lazy_mmu`): made and paid at
/// once, paid at the end of the section, or (under `deferred-writes`)
/// both at the end.
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
    let run = Run { first: entry.ptr, len: 1, level: entry.level, va: entry.va.as_u64() };
    // SAFETY: `ptr` points into a live page-table page (see EntryRef::read),
    // kept by the caller's walk; the store is the caller's to make.
    unsafe { lazy_mmu::write_run(run, move |_| Some(desc)) };
}
