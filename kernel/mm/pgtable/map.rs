//! Mapping and unmapping ranges of physical memory, with blocks where they fit.

use super::*;
use crate::mm::addr::{BLOCK_1G, BLOCK_2M, PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mm::descriptor::{Attributes, Descriptor, Entry, Level};
use crate::mm::{lazy_mmu, pgtable_check, tlb};

/// Which leaf sizes a mapping may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafSizes {
    /// 4 KiB pages only.
    PagesOnly,
    /// 1 GiB and 2 MiB blocks where address and size allow, pages elsewhere.
    Blocks,
}

/// The largest leaf that fits at `va`/`pa` with `remaining` bytes left.
pub(in crate::mm) fn leaf_level(va: VirtAddr, pa: PhysAddr, remaining: u64, sizes: LeafSizes) -> Level {
    if sizes == LeafSizes::Blocks {
        for (level, size) in [(Level::L1, BLOCK_1G), (Level::L2, BLOCK_2M)] {
            if va.is_aligned(size) && pa.is_aligned(size) && remaining >= size {
                return level;
            }
        }
    }
    Level::L3
}

pub(in crate::mm) fn check_range(va: VirtAddr, size: u64) -> Result<VirtAddr, MapError> {
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
        return Err(MapError::Misaligned { what: Operand::PhysicalAddress, value: pa.as_u64() });
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
    {
        let walk = walking_from(root);
        // Check first: every address mapped, blocks entirely inside.
        for (at, entry) in walk.walk_range(va, size) {
            if !matches!(entry.entry(), Entry::Leaf { .. }) {
                return Err(MapError::NotMapped(at));
            }
            if !entry.within(va, size) {
                return Err(MapError::SplitsBlock { va: entry.va, level: entry.level });
            }
        }
        for (_, entry) in walk.walk_range(va, size) {
            // SAFETY: the caller's range; flushed below.
            unsafe { write_entry(&entry, Descriptor::INVALID) };
        }
    }
    // Every level-3 entry of the range was a page and is cleared: the
    // tables wholly inside it are empty without a look.
    // SAFETY: `root` is a level-0 table, and the range the caller's (our
    // caller's contract); every level-3 entry in it was cleared above.
    unsafe { super::reclaim::reclaim_unless_walked(root, va, size, tlb::Changed::LEAVES, Cleared::Leaves) };
    Ok(())
}

/// Clears every valid leaf of [va, va + size) in one lazy MMU section, a
/// level-3 table at a time ([`clear_ptes`]'s loop), takes away the
/// tables left empty, and flushes the TLB once for both: how Linux's
/// memory hot-remove unmaps (arm64's `unmap_hotplug_range`, then
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
    // Is every level-3 entry of the range zero at the end? (Clears make
    // them so; an invalid entry that is not zero, which nothing here
    // writes, stays, and its table is looked at.) A cell: the run's
    // callback may be asked more than once per slot (see `write_ptes`).
    let left = core::cell::Cell::new(0);
    {
        let walking = walking_from(root);
        let walk = &walking;
        // A hole or a leaf above level 3, or a level-3 table's part of the
        // range: (where it starts, the entry, how many pages).
        let steps = || {
            let mut done = 0;
            core::iter::from_fn(move || {
                (done < size).then(|| {
                    let at = va.add(done);
                    let entry = walk.walk(at);
                    let span = match entry.level {
                        Level::L3 => (BLOCK_2M - (at.as_u64() & (BLOCK_2M - 1))).min(size - done),
                        _ => entry.level.entry_size() - at.offset_from(entry.va),
                    };
                    done = done.saturating_add(span);
                    (entry, span / PAGE_SIZE)
                })
            })
        };
        if let Some((entry, _)) = steps()
            .find(|(entry, _)| entry.level != Level::L3 && entry.read().is_leaf(entry.level) && !entry.within(va, size))
        {
            return Err(MapError::SplitsBlock { va: entry.va, level: entry.level });
        }
        let _section = lazy_mmu::enable();
        for (entry, pages) in steps() {
            if entry.level != Level::L3 {
                if entry.read().is_leaf(entry.level) {
                    // SAFETY: a block of the caller's range; flushed below.
                    unsafe { write_entry(&entry, Descriptor::INVALID) };
                }
                continue;
            }
            // SAFETY: the walk reached this level-3 entry, and the run
            // stops at its table's end (or the range's).
            let ptes = unsafe { Ptes::starting_at(&entry, pages as usize) };
            // SAFETY: the caller's range; flushed below.
            unsafe {
                let left = &left;
                write_ptes(&ptes, move |slot| {
                    let old = slot.read();
                    if old.is_valid() {
                        return Some(Descriptor::INVALID);
                    }
                    left.set(left.get() | old.0);
                    None
                })
            };
        }
    }
    let cleared = if left.get() == 0 { Cleared::Leaves } else { Cleared::Unknown };
    // SAFETY: `root` is a level-0 table, and the range the caller's (our
    // caller's contract); `cleared` says what the walk above left.
    unsafe { super::reclaim::reclaim_unless_walked(root, va, size, tlb::Changed::LEAVES, cleared) };
    Ok(())
}
