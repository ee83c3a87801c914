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
//! (the kinds are vmalloc.rs's own): a `vmap` area's caller vouched for
//! its frames when it mapped them, and `vunmap` puts their alias back as
//! `vfree` does (see the linear alias below). The linear map is
//! changed only through the `unsafe` `set_linear_map_ro`/`_rw`, whose
//! caller owns the frames (Linux's `__change_memory_common()` on
//! `page_address()`, which debug_pagealloc and `rodata_full` use).
//!
//! **The linear alias.** A vmalloc'd page is also mapped by the linear map,
//! read/write and never executable. It is kept in step, as arm64 Linux
//! keeps it under `rodata_full`, and a step further: `set_memory_ro` makes
//! the alias of every frame behind the range read-only as well,
//! `set_memory_rw` makes it writable again, and `set_memory_x` makes it
//! read-only too, so that no executable page has a writable alias
//! (`set_memory_nx` leaves it as it is). Linux's `change_memory_common()`
//! (arch/arm64/mm/pageattr.c; c55191e96caa, "arm64: mm: apply r/o
//! permissions of VM areas to its linear alias as well") applies only a
//! change of `PTE_RDONLY` to `page_address(area->pages[i])`, for every page
//! of the area; `set_memory_x` alone leaves the alias writable there, and
//! its callers make the area read-only first. Here the alias of exactly
//! the pages changed follows them. The alias change goes into the same
//! lazy section as the area's, with the same splits of blocks and runs
//! (on a CPU without BBML2_NOABORT the linear map is pages: nothing to
//! split), and one flush covers the area and the alias
//! (`tlb::flush_tlb_kernel_ranges`: one barrier pair, the TLBIs of every
//! range).
//!
//! The area remembers that its alias changed (Linux's
//! `VM_FLUSH_RESET_PERMS`, 868b104d7379), and `vfree` (or `vunmap`) of
//! such an area puts the alias back before the frames go, as
//! `vm_reset_perms()` does (mm/vmalloc.c): the alias is made invalid in
//! a section after the area's entries are cleared, one flush covers both
//! (Linux: `set_area_direct_map(area, set_direct_map_invalid_noflush)`,
//! then `_vm_unmap_aliases()` flushing the direct map range with the lazy
//! areas), and a last section maps the alias with the linear map's own
//! permissions, read/write, never executable
//! (`set_direct_map_default_noflush`). Such an area is freed at once,
//! not at the next purge. An area whose alias never changed pays nothing
//! new. The audit checks W^X across aliases after every test
//! (`audit::check_wx_aliases`).
//!
//! A `get_vm_area` area is the exception: its caller maps and unmaps it
//! (`vunmap_range`, any part at a time), so nothing could put the alias
//! back, and its alias is left as it is. Linux refuses `set_memory_*` on
//! such an area altogether (it is not `VM_ALLOC`); here the caller, who
//! mapped the frames, answers for their alias.
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

/// Makes `pages` pages from `addr`, inside one vmalloc area, read-only,
/// and their frames' linear alias too.
pub fn set_memory_ro(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.writable = false, Some(read_only))
}

/// Makes them writable (refused if any is executable), and their frames'
/// linear alias too.
pub fn set_memory_rw(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.writable = true, Some(writable))
}

/// Makes them executable (refused if any is writable), and their frames'
/// linear alias read-only (stricter than Linux: see the module doc).
pub fn set_memory_x(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.executable = true, Some(read_only))
}

/// Makes them never executable (their linear alias stays as it is).
pub fn set_memory_nx(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::Vmalloc, |a| a.executable = false, None)
}

fn read_only(attrs: &mut Attributes) {
    attrs.writable = false;
}

fn writable(attrs: &mut Attributes) {
    attrs.writable = true;
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
    change_memory(addr, pages, Region::LinearMap, read_only, None)
}

/// Makes `pages` pages of the linear map from `addr` writable again.
///
/// # Safety
/// The caller owns the frames behind them (see [`set_linear_map_ro`]).
pub unsafe fn set_linear_map_rw(addr: VirtAddr, pages: u64) -> Result<(), MapError> {
    change_memory(addr, pages, Region::LinearMap, writable, None)
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

/// One range a change acts on: [start, end), and what it does there.
#[derive(Clone, Copy)]
struct Span {
    start: VirtAddr,
    end: VirtAddr,
    change: fn(&mut Attributes),
}

fn change_memory(
    addr: VirtAddr,
    pages: u64,
    region: Region,
    change: fn(&mut Attributes),
    alias: Option<fn(&mut Attributes)>,
) -> Result<(), MapError> {
    let _one_at_a_time = CHANGING.lock();
    let _op = pgtable_check::operation();
    let walk = pgtable::walking();
    let size = pages.checked_mul(PAGE_SIZE).ok_or(MapError::BadRange { start: addr, size: u64::MAX })?;
    let end = check_range(addr, size)?;
    check_region(addr, end, region)?;
    let mut spans = Vec::from([Span { start: addr, end, change }]);
    // The linear alias of the frames behind the range (all of it mapped:
    // checked below, before anything changes).
    let alias = match alias {
        Some(alias_change) if vmalloc::resets_perms(addr) => {
            let runs = linear_aliases(&walk, addr, end)?;
            for &(start, end) in &runs {
                check_region(start, end, Region::LinearMap)?;
            }
            spans.extend(runs.into_iter().map(|(start, end)| Span { start, end, change: alias_change }));
            spans.len() > 1
        }
        _ => false,
    };
    // Every check before anything changes: mapped throughout, and W^X.
    for span in &spans {
        for entry in leaves(&walk, span.start, span.end)? {
            if let Entry::Leaf { attrs, .. } = entry.entry() {
                let mut new = attrs;
                (span.change)(&mut new);
                if new.is_wx() {
                    return Err(MapError::WritableAndExecutable(entry.va.max(span.start)));
                }
            }
        }
    }
    let boundaries: Vec<VirtAddr> = spans.iter().flat_map(|s| [s.start, s.end]).collect();
    let splits: usize = boundaries.iter().map(|&b| splits_needed(&walk, b)).sum();
    let mut runs_cut: Vec<EntryRef<'_>> = boundaries.iter().filter_map(|&b| run_across(&walk, b)).collect();
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
        let block = boundaries.iter().find_map(|&b| block_across(&walk, b)).expect("a split is needed");
        return Err(MapError::BreakBeforeMakeUnsafe(block.va));
    }
    let mut pool = alloc_tables(splits)?;
    if break_live && let Err(e) = check_break_before_make(&walk, addr, end, &pool) {
        free_unlinked_tables(pool);
        return Err(e);
    }
    if alias {
        // From now on the change cannot fail: vfree puts the alias back.
        vmalloc::set_reset_perms(addr);
    }
    // No lazily freed vmalloc area may still alias these frames in a TLB
    // with the permissions being taken away (arm64 Linux's
    // `change_memory_common` calls `vm_unmap_aliases` too).
    vmalloc::vm_unmap_aliases();
    // The ranges the final flush covers: the blocks split, whole.
    let mut flushes: Vec<(VirtAddr, VirtAddr)> = spans.iter().map(|s| (s.start, s.end)).collect();
    {
        let _section = lazy_mmu::enable();
        for (span, flush) in spans.iter().zip(flushes.iter_mut()) {
            for boundary in [span.start, span.end] {
                while let Some(block) = block_across(&walk, boundary) {
                    let block_end = block.va.add(block.level.entry_size());
                    flush.0 = flush.0.min(block.va);
                    flush.1 = flush.1.max(block_end);
                    split(&walk, &block, pool.pop().expect("counted by splits_needed"));
                }
            }
        }
        // Both boundaries may have fallen in the same block: one split served.
        free_unlinked_tables(pool);
        for run in &runs_cut {
            // SAFETY: a run of the caller's range, split in place
            // (BBML2_NOABORT, checked above); the flush below covers it.
            let first = unsafe { engine::split_contiguous(&pgtable::KernelTables::new(&walk), run.slot()) };
            let flush = flushes
                .iter_mut()
                .find(|f| f.0 < first.add(CONT_PTE_SIZE) && first < f.1)
                .expect("a run cut by one of the ranges");
            flush.0 = flush.0.min(first);
            flush.1 = flush.1.max(first.add(CONT_PTE_SIZE));
        }
        if !runs_cut.is_empty() {
            // The change below reads the entries back: under
            // `deferred-writes` the split's stores must be there first, or
            // it would put the bit back on the pages it changes.
            lazy_mmu::sync_stores();
        }
        for span in &spans {
            for entry in leaves(&walk, span.start, span.end).expect("checked above") {
                if let Entry::Leaf { addr: pa, mut attrs } = entry.entry() {
                    (span.change)(&mut attrs);
                    // SAFETY: the same frame, other permissions (W^X
                    // checked above); the flush below drops the old ones.
                    unsafe { pgtable::write_entry(&entry, Descriptor::leaf(entry.level, pa, attrs)) };
                }
            }
        }
    }
    // Upgrades are flushed too: a TLB still holding the old entry would
    // refuse the new permission with a permission fault, which Linux's
    // EL1 fault path never forgives (`__change_memory_common()` flushes
    // every change; pgtable_check's shadow/perms.rs). One flush for the
    // range and its alias: one barrier pair, the TLBIs of every range.
    if !(planted(Bug::UpgradeUnflushed) && only_grants(change)) {
        tlb::flush_tlb_kernel_ranges(&flushes);
    }
    Ok(())
}

/// The linear map's alias of the RAM that [addr, end) maps, as ranges of
/// the linear map in address order, adjacent frames merged (whatever order
/// the area maps them in). Fails on a hole (as the change would).
fn linear_aliases(walk: &Walking, addr: VirtAddr, end: VirtAddr) -> Result<Vec<(VirtAddr, VirtAddr)>, MapError> {
    let mut aliases: Vec<(VirtAddr, VirtAddr)> = Vec::new();
    for entry in leaves(walk, addr, end)? {
        let Entry::Leaf { addr: pa, .. } = entry.entry() else { unreachable!("leaves") };
        let from = entry.va.max(addr);
        let to = entry.va.add(entry.level.entry_size()).min(end);
        let start = phys_to_virt(pa.add(from.offset_from(entry.va)));
        let alias_end = start.add(to.offset_from(from));
        if !in_linear_map(start) || !in_linear_map(VirtAddr::new(alias_end.as_u64() - 1)) {
            continue; // not RAM (a `vmap_range` of MMIO): no alias
        }
        aliases.push((start, alias_end));
    }
    aliases.sort_unstable();
    let mut runs: Vec<(VirtAddr, VirtAddr)> = Vec::with_capacity(aliases.len());
    for (start, end) in aliases {
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    Ok(runs)
}

/// Puts back the linear alias of the frames that the area [va, va + size)
/// maps, before they go back (Linux's `vm_reset_perms()`, mm/vmalloc.c):
/// the alias is made invalid in the section after `clear` (which clears
/// the area's entries), one flush covers the area and the alias, and a
/// last section maps the alias with the linear map's own permissions
/// (read/write, never executable). No TLB ever holds a writable alias
/// beside the area's old executable or read-only entry. Every page of the
/// area is mapped (it is the area's owner that frees it).
pub(super) fn reset_linear_alias(va: VirtAddr, size: u64, clear: impl FnOnce()) {
    let _one_at_a_time = CHANGING.lock();
    let end = va.add(size);
    let runs = {
        let walk = pgtable::walking();
        linear_aliases(&walk, va, end).expect("a live area is mapped throughout")
    };
    clear();
    let walk = pgtable::walking();
    // The alias leaves changed away from the default: every one lies
    // inside a run (the change split at the runs' boundaries).
    let changed: Vec<(EntryRef<'_>, PhysAddr, Attributes)> = runs
        .iter()
        .flat_map(|&(start, end)| leaves(&walk, start, end).expect("the linear map maps all RAM"))
        .filter_map(|entry| match entry.entry() {
            Entry::Leaf { addr, attrs } if !attrs.writable => Some((entry, addr, attrs)),
            _ => None,
        })
        .collect();
    {
        let _section = lazy_mmu::enable();
        for (entry, _, _) in &changed {
            // SAFETY: the alias of frames the area's owner is giving back:
            // nothing reaches them until they are freed (after the last
            // section below).
            unsafe { pgtable::write_entry(entry, Descriptor::INVALID) };
        }
    }
    let mut flushes = Vec::from([(va, end)]);
    flushes.extend(runs.iter().copied());
    tlb::flush_tlb_kernel_ranges(&flushes);
    let _section = lazy_mmu::enable();
    for (entry, pa, mut attrs) in changed {
        attrs.writable = true;
        attrs.executable = false;
        // SAFETY: as above; an invalid entry made valid needs no flush.
        unsafe { pgtable::write_entry(&entry, Descriptor::leaf(entry.level, pa, attrs)) };
    }
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
