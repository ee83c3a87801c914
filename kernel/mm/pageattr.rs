//! `set_memory_ro`, `_rw`, `_x`, `_nx`: change the permissions of pages of
//! a vmalloc area (Linux arch/arm64/mm/pageattr.c); and, for the kernel's
//! own tests and tools, `set_linear_map_ro`/`_rw` on the linear map.
//!
//! **Whose memory.** `set_memory_*` is safe code, so it takes Linux's
//! contract: the range must lie inside one live vmalloc area
//! (`change_memory_common()` refuses anything but part of one `VM_ALLOC`
//! area: `find_vm_area(addr)`, `end` within `area->addr + area->size`,
//! else -EINVAL). Anything else is a typed error and nothing changes; the
//! linear map above all (`MapError::NotVmallocArea`): it holds the page
//! tables, the heap and every task's control block, and a read-only page
//! there makes the kernel's next write to it fault. Linux tells `VM_ALLOC`
//! areas from `vmap` and `ioremap` ones; here any live area is accepted
//! (the kinds are vmalloc.rs's own), which is safe because only the area's
//! own mapping changes (see the linear alias below), and a `vmap` area's
//! caller vouched for its frames when it mapped them. The linear map is
//! changed only through the `unsafe` `set_linear_map_ro`/`_rw`, whose
//! caller owns the frames (Linux's `__change_memory_common()` on
//! `page_address()`, which debug_pagealloc and `rodata_full` use).
//!
//! **The linear alias.** A vmalloc'd page is also mapped by the linear map,
//! writable and never executable. Linux keeps that alias in step only under
//! `rodata_full`: `change_memory_common()` applies a read-only change to
//! `page_address(area->pages[i])` as well (never an executable one), and
//! it may, because the alias is put back before the pages are freed
//! (`vfree()` of a `VM_FLUSH_RESET_PERMS` area calls `vm_reset_perms()`,
//! mm/vmalloc.c, and the users of `set_memory_x` mark their areas so).
//! Here `vfree` hands the frames back as they are: an alias made read-only
//! would outlive its area, and the frame's next owner (a page table, the
//! heap) would fault on its first write, the very bug the contract above
//! rules out. So the alias is left alone, as Linux leaves it with
//! `rodata=on` rather than `full`: a vmalloc page made read-only or
//! executable keeps a writable, never-executable alias in the linear map.
//! Keeping it in step needs `vfree` to reset it first (issue 24, item 1).
//!
//! A permission change of a live entry needs no break-before-make: the new
//! entry goes in, in one lazy section for the whole range, and one TLB
//! flush drops the old permissions everywhere.
//!
//! On a CPU with BBML2_NOABORT (`cpu::bbml2_noabort`) the linear map is
//! made of 1 GiB and 2 MiB blocks, and a `vmap_contiguous` area may be too.
//! Changing part of a block first *splits* it: a new table holds the same
//! mapping in the next smaller size, and replaces the block in place, in
//! the same lazy section as the permission change (like arm64's
//! `split_kernel_leaf_mapping`). Its entries are ordered before the link
//! that makes them reachable (`dsb ishst`, as Linux's `split_pmd` does),
//! and the final flush drops the old block.
//!
//! Without BBML2_NOABORT a live block would have to be broken (invalid,
//! TLB flush, then the table), and the kernel may touch any byte of the
//! linear map at any moment, from any CPU: its page tables, its heap, every
//! task's control block live there. So, as Linux does, a live kernel block
//! is never broken: the linear map is built from pages at boot on such
//! CPUs (`kernel_map::linear_map_leaves`), and a block elsewhere (a
//! `vmap_range` mapping) that a change would have to split is refused.
//!
//! A contiguous run of 16 pages (the linear map's with BBML2_NOABORT, a
//! `vmap_range` or `vmalloc_huge` area's) is changed whole or split first,
//! as a block is: with BBML2_NOABORT its 16 entries are rewritten without
//! the contiguous bit in place (`engine::split_contiguous`), in the same
//! section, and the final flush covers the whole run; without it, the
//! change is refused (`BreakBeforeMakeUnsafe`), since the split would have
//! to break the live run (the checker's rule `contiguous`).
//!
//! Nothing the kernel maps is both writable and executable: a change that
//! would make such a page is refused before anything is touched.

use alloc::vec::Vec;

use super::addr::{CONT_PTE_SIZE, PAGE_SIZE, PhysAddr, VirtAddr};
use super::descriptor::{Attributes, Descriptor, Entry, Level};
use super::layout::{LINEAR_MAP_SIZE, PAGE_OFFSET, VMALLOC_END, VMALLOC_START, in_linear_map};
use super::pgtable::{
    self, EntryRef, MapError, Walking, alloc_tables, check_range, free_unlinked_tables, order_before_link,
};
use super::{engine, kernel_map, lazy_mmu, pgtable_check, phys_to_virt, tlb, vmalloc};
use crate::arch::cpu as arch_cpu;
use crate::cpu;
use crate::planted::{Bug, planted};

/// Makes `pages` pages from `addr`, inside one vmalloc area, read-only.
pub fn set_memory_ro(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.writable = false)
}

/// Makes them writable (refused if any is executable).
pub fn set_memory_rw(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.writable = true)
}

/// Makes them executable (refused if any is writable).
pub fn set_memory_x(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.executable = true)
}

/// Makes them never executable.
pub fn set_memory_nx(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.executable = false)
}

/// Makes `pages` pages of the linear map from `addr` read-only (the
/// image's alias is refused: `MapError::KernelImage`).
///
/// # Safety
/// The caller owns the frames behind them (from `frame_alloc`), and nothing
/// writes them through the linear map until [`set_linear_map_rw`] has
/// made them writable again, which the caller does before it frees them:
/// a read-only page table, heap page or task control block faults the
/// kernel's next write to it.
pub unsafe fn set_linear_map_ro(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::LinearMap, |a| a.writable = false)
}

/// Makes `pages` pages of the linear map from `addr` writable again.
///
/// # Safety
/// The caller owns the frames behind them (see [`set_linear_map_ro`]).
pub unsafe fn set_linear_map_rw(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::LinearMap, |a| a.writable = true)
}

/// Where a change may act.
#[derive(Clone, Copy)]
enum Region {
    /// Inside one live vmalloc area: `set_memory_*`.
    Vmalloc,
    /// The linear map, but for the image's alias: `set_linear_map_*`.
    LinearMap,
}

/// Checks that [addr, end) lies where `region` says (see the module docs).
fn check_region(addr: VirtAddr, end: VirtAddr, region: Region) -> Result<(), MapError> {
    let last = VirtAddr::new(end.as_u64().wrapping_sub(1));
    match region {
        // Linux's change_memory_common(): find_vm_area(addr), and `end`
        // no further than the area's end (ours excludes the guard page).
        Region::Vmalloc if addr >= VMALLOC_START && last < VMALLOC_END => match vmalloc::find_area(addr) {
            Some(area) if last.as_u64() - area.start.as_u64() < area.size => Ok(()),
            _ => Err(MapError::NotMapped(addr)),
        },
        Region::Vmalloc => Err(MapError::NotVmallocArea(addr)),
        Region::LinearMap if in_linear_map(addr) && in_linear_map(last) => {
            let (text, rodata_end) = image_alias();
            if addr.as_u64() < rodata_end && end.as_u64() > text {
                return Err(MapError::KernelImage(VirtAddr::new(addr.as_u64().max(text))));
            }
            Ok(())
        }
        Region::LinearMap => Err(MapError::BadRange { start: addr, size: end.offset_from(addr) }),
    }
}

/// The linear map's alias of the image's text and rodata: [start, end).
fn image_alias() -> (u64, u64) {
    // Only the sections' link addresses are used, not the load address.
    let image = kernel_map::image_layout(PhysAddr::new(0));
    let alias = |va: VirtAddr| match pgtable::lookup(va) {
        pgtable::Found { entry: Entry::Leaf { addr, .. }, va: base, .. } => {
            phys_to_virt(addr.add(va.offset_from(base))).as_u64()
        }
        other => unreachable!("the image is mapped: {other:?}"),
    };
    (alias(image.text.0), alias(VirtAddr::new(image.rodata.1.as_u64() - 1)) + 1)
}

/// The leaves covering [addr, end), in order; fails on a hole.
fn leaves(walk: &Walking, addr: VirtAddr, end: VirtAddr) -> Result<Vec<EntryRef<'_>>, MapError> {
    let size = end.as_u64().wrapping_sub(addr.as_u64());
    walk.walk_range(addr, size)
        .map(|(at, entry)| match entry.entry() {
            Entry::Leaf { .. } => Ok(entry),
            _ => Err(MapError::NotMapped(at)),
        })
        .collect()
}

/// How many tables the splits at `boundary` may need: a block that sticks
/// out of the range splits, and again at the next level down, until the
/// boundary falls between leaves. (Two boundaries in one block share splits;
/// what is left over is freed.)
fn splits_needed(walk: &Walking, boundary: VirtAddr) -> usize {
    let entry = walk.walk(boundary);
    match entry.entry() {
        Entry::Leaf { .. } if entry.va != boundary => (3 - entry.level.0) as usize,
        _ => 0,
    }
}

/// One permission change at a time: two CPUs splitting the same block
/// would each replace it with a table of their own.
static CHANGING: spin::Mutex<()> = spin::Mutex::new(());

fn change_memory(addr: VirtAddr, pages: u64, region: Region, change: fn(&mut Attributes)) -> Result<(), MapError> {
    let _one_at_a_time = CHANGING.lock();
    let _op = pgtable_check::operation();
    let walk = pgtable::walking();
    let size = pages.checked_mul(PAGE_SIZE).ok_or(MapError::BadRange { start: addr, size: u64::MAX })?;
    let end = check_range(addr, size)?;
    check_region(addr, end, region)?;
    // Every check before anything changes: mapped throughout, and W^X.
    for entry in leaves(&walk, addr, end)? {
        if let Entry::Leaf { attrs, .. } = entry.entry() {
            let mut new = attrs;
            change(&mut new);
            if new.is_wx() {
                return Err(MapError::WritableAndExecutable(entry.va.max(addr)));
            }
        }
    }
    let splits = splits_needed(&walk, addr) + splits_needed(&walk, end);
    let mut runs_cut: Vec<EntryRef<'_>> = [addr, end].into_iter().filter_map(|b| run_across(&walk, b)).collect();
    if planted(Bug::ContSplitLive) {
        runs_cut.clear();
    }
    if let Some(run) = runs_cut.first()
        && !cpu::features().bbml2_noabort
    {
        // Splitting a live run needs break-before-make without BBML2, and
        // a live kernel mapping is never broken (see the module docs).
        return Err(MapError::BreakBeforeMakeUnsafe(run.va.align_down(CONT_PTE_SIZE)));
    }
    let break_live = planted(Bug::BreakLiveBlock);
    if splits > 0 && !cpu::features().bbml2_noabort && !break_live {
        let block = [addr, end].into_iter().find_map(|b| block_across(&walk, b)).expect("a split is needed");
        return Err(MapError::BreakBeforeMakeUnsafe(block.va));
    }
    let mut pool = alloc_tables(splits)?;
    if break_live && let Err(e) = check_break_before_make(&walk, addr, end, &pool) {
        free_unlinked_tables(pool);
        return Err(e);
    }
    // No lazily freed vmalloc area may still alias these frames in a TLB
    // with the permissions being taken away (arm64 Linux's
    // `change_memory_common` calls `vm_unmap_aliases` too).
    vmalloc::vm_unmap_aliases();
    // The range the final flush covers: the blocks split, whole.
    let (mut flush_start, mut flush_end) = (addr, end);
    {
        let _section = lazy_mmu::enable();
        for boundary in [addr, end] {
            while let Some(block) = block_across(&walk, boundary) {
                let block_end = block.va.add(block.level.entry_size());
                flush_start = flush_start.min(block.va);
                flush_end = flush_end.max(block_end);
                split(&walk, &block, pool.pop().expect("counted by splits_needed"));
            }
        }
        // Both boundaries may have fallen in the same block: one split served.
        free_unlinked_tables(pool);
        for run in &runs_cut {
            // SAFETY: a run of the caller's range, split in place
            // (BBML2_NOABORT, checked above); the flush below covers it.
            let first = unsafe { engine::split_contiguous(&pgtable::KernelTables::new(&walk), run.slot()) };
            flush_start = flush_start.min(first);
            flush_end = flush_end.max(first.add(CONT_PTE_SIZE));
        }
        if !runs_cut.is_empty() {
            // The change below reads the entries back: under
            // `deferred-writes` the split's stores must be there first, or
            // it would put the bit back on the pages it changes.
            lazy_mmu::sync_stores();
        }
        for entry in leaves(&walk, addr, end).expect("checked above") {
            if let Entry::Leaf { addr: pa, mut attrs } = entry.entry() {
                change(&mut attrs);
                // SAFETY: the same frame, other permissions (W^X checked
                // above); the flush below drops the old ones.
                unsafe { pgtable::write_entry(&entry, Descriptor::leaf(entry.level, pa, attrs)) };
            }
        }
    }
    // Upgrades are flushed too: a TLB still holding the old entry would
    // refuse the new permission with a permission fault, which Linux's
    // EL1 fault path never forgives (`__change_memory_common()` flushes
    // every change; pgtable_check's shadow/perms.rs).
    if !(planted(Bug::UpgradeUnflushed) && only_grants(change)) {
        tlb::flush_tlb_kernel_range(flush_start, flush_end);
    }
    Ok(())
}

/// Does `change` only grant permissions (the planted `upgrade-unflushed`
/// bug skips their flush)? It grants if it does so to a page that had none.
fn only_grants(change: fn(&mut Attributes)) -> bool {
    let mut attrs = Attributes::KERNEL_RO;
    change(&mut attrs);
    attrs != Attributes::KERNEL_RO
}

/// The planted `break-live-block` bug splits by break-before-make, which
/// unmaps the whole block for a moment; the kernel reaches page tables
/// through the linear map, so at least the table holding the block's entry,
/// and the new tables of deeper splits, must not lie inside it (the heap,
/// the stacks' frames and every other CPU's data may, which is why the
/// kernel never does this).
fn check_break_before_make(walk: &Walking, addr: VirtAddr, end: VirtAddr, pool: &[PhysAddr]) -> Result<(), MapError> {
    for boundary in [addr, end] {
        let Some(block) = block_across(walk, boundary) else { continue };
        let range = block.va.as_u64()..block.va.as_u64() + block.level.entry_size();
        let new_tables = pool.iter().map(|&pa| super::phys_to_virt(pa));
        if core::iter::once(block.slot_va()).chain(new_tables).any(|va| range.contains(&va.as_u64())) {
            return Err(MapError::BreakBeforeMakeUnsafe(block.va));
        }
    }
    Ok(())
}

/// The block leaf that `boundary` falls strictly inside, if any.
fn block_across(walk: &Walking, boundary: VirtAddr) -> Option<EntryRef<'_>> {
    let entry = walk.walk(boundary);
    let inside = matches!(entry.entry(), Entry::Leaf { .. }) && entry.level < Level::L3 && entry.va != boundary;
    inside.then_some(entry)
}

/// The contiguous run of pages that `boundary` falls strictly inside, if
/// any: its entry for `boundary`.
fn run_across(walk: &Walking, boundary: VirtAddr) -> Option<EntryRef<'_>> {
    let entry = walk.walk(boundary);
    let inside = entry.level == Level::L3
        && matches!(entry.entry(), Entry::Leaf { attrs, .. } if attrs.contiguous)
        && !boundary.is_aligned(CONT_PTE_SIZE);
    inside.then_some(entry)
}

/// Replaces `block` by `table` holding the same mapping one level down, in
/// place (BBML2_NOABORT). Runs inside the caller's lazy section.
fn split(walk: &Walking, block: &EntryRef<'_>, table: PhysAddr) {
    if planted(Bug::BreakLiveBlock) {
        break_live_block(walk, block, table);
        return;
    }
    // The old block and the new table may both be in TLBs for a while:
    // they map the same memory, which BBML2_NOABORT allows; the caller's
    // flush drops the block.
    // SAFETY: `table` is ours, from the pool; the block is the caller's to
    // split in place (BBML2_NOABORT).
    unsafe { engine::split_block(&pgtable::KernelTables::new(walk), block.slot(), table) };
}

/// The planted `break-live-block` bug: the split by break-before-make,
/// the live block unmapped for a moment.
fn break_live_block(walk: &Walking, block: &EntryRef<'_>, table: PhysAddr) {
    let Entry::Leaf { addr: pa, attrs } = block.entry() else { unreachable!("a block") };
    let level = block.level.next().expect("blocks are above level 3");
    for i in 0..512 {
        // SAFETY: `table` is ours (from the pool), not linked yet; its
        // entries map the block's own memory, one level down.
        unsafe {
            let child = walk.table_entry(table, level, block.va.add(i * level.entry_size()));
            pgtable::write_entry(&child, Descriptor::leaf(level, pa.add(i * level.entry_size()), attrs));
        }
    }
    order_before_link();
    let _paused = lazy_mmu::pause();
    let daif = arch_cpu::irq_save();
    // SAFETY: none: this is the planted bug (a live block broken).
    unsafe { pgtable::write_entry(block, Descriptor::INVALID) };
    tlb::flush_tlb_kernel_range(block.va, block.va.add(block.level.entry_size()));
    // SAFETY: as above.
    unsafe { pgtable::write_entry(block, Descriptor::table(table)) };
    arch_cpu::irq_restore(daif);
}

/// Rewrites every block of the linear map as 4 KiB pages with the same
/// attributes, and every contiguous run of pages as 16 plain pages, in
/// place, and returns how many blocks it split. There are blocks and runs
/// only with BBML2_NOABORT (see the module doc).
///
/// Each block's replacement is built bottom-up (a 1 GiB block becomes a
/// level-2 table of level-3 tables, all filled before the level-2 table is
/// linked), so nothing written in the section is read back.
pub(super) fn split_linear_map_to_pages() -> Result<usize, MapError> {
    let walk = pgtable::walking();
    let (blocks, runs): (Vec<EntryRef<'_>>, Vec<EntryRef<'_>>) = walk
        .walk_range(PAGE_OFFSET, LINEAR_MAP_SIZE)
        .map(|(_, entry)| entry)
        .filter(|entry| match entry.entry() {
            Entry::Leaf { attrs, .. } => {
                entry.level < Level::L3 || (attrs.contiguous && entry.va.is_aligned(CONT_PTE_SIZE))
            }
            _ => false,
        })
        .partition(|entry| entry.level < Level::L3);
    let Some(first) = blocks.first().or(runs.first()) else { return Ok(0) };
    if !cpu::features().bbml2_noabort {
        return Err(MapError::BreakBeforeMakeUnsafe(first.va));
    }
    let needed = blocks.iter().map(|b| if b.level == Level::L1 { 1 + 512 } else { 1 }).sum();
    let mut pool = alloc_tables(needed)?;
    {
        let _section = lazy_mmu::enable();
        for block in &blocks {
            let Entry::Leaf { addr: pa, attrs } = block.entry() else { unreachable!("a block") };
            let table = pages_below(&walk, block.level, block.va, pa, attrs, &mut pool);
            order_before_link();
            // SAFETY: the table maps exactly what the block did (BBML2_NOABORT).
            unsafe { pgtable::write_entry(block, Descriptor::table(table)) };
        }
        for run in &runs {
            // SAFETY: the same pages without the contiguous bit, in place
            // (BBML2_NOABORT); the flush below drops the 64 KiB entries.
            unsafe { engine::split_contiguous(&pgtable::KernelTables::new(&walk), run.slot()) };
        }
    }
    tlb::flush_tlb_kernel_range(PAGE_OFFSET, PAGE_OFFSET.add(LINEAR_MAP_SIZE));
    Ok(blocks.len())
}

/// A table from `pool` mapping the block at `level` (`va` -> `pa`) with
/// pages, through new level-3 tables if the block is above level 2.
fn pages_below(
    walk: &Walking,
    level: Level,
    va: VirtAddr,
    pa: PhysAddr,
    attrs: Attributes,
    pool: &mut Vec<PhysAddr>,
) -> PhysAddr {
    let table = pool.pop().expect("counted by split_linear_map_to_pages");
    let child_level = level.next().expect("blocks are above level 3");
    let step = child_level.entry_size();
    for i in 0..512 {
        let (child_va, child_pa) = (va.add(i * step), pa.add(i * step));
        let desc = if child_level == Level::L3 {
            Descriptor::leaf(Level::L3, child_pa, attrs)
        } else {
            Descriptor::table(pages_below(walk, child_level, child_va, child_pa, attrs, pool))
        };
        // SAFETY: `table` is ours (from the pool), not linked yet; the
        // entry maps the block's own memory, or links a table of ours.
        unsafe { pgtable::write_entry(&walk.table_entry(table, child_level, child_va), desc) };
    }
    table
}
