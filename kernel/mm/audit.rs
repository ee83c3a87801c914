//! The memory manager's state in one comparable value: frames in use, the
//! live vmalloc areas, a digest of every page-table entry of the kernel
//! half, and the current task's lazy MMU state. Fault injection and the
//! fuzzer take one before an operation that must fail cleanly and compare
//! it with one taken after: "changes nothing" becomes one `assert_eq!`.

use alloc::vec::Vec;

use alloc::collections::BTreeSet;
use alloc::string::String;
use core::fmt::Write;
use core::ptr::read_volatile;

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::{Descriptor, Entry, Level};
use super::layout::{KSTACK_SLOT_SIZE, KSTACK_SLOTS, KSTACK_START, VMALLOC_END, VMALLOC_START};
use super::pgtable;
use super::vmalloc::{self, AreaInfo};
use super::{frame_alloc, phys_to_virt, ptdump};
use crate::task;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmState {
    pub frames_used: usize,
    pub areas: Vec<AreaInfo>,
    /// Table pages in the kernel half, and a digest of every descriptor in
    /// them.
    pub table_pages: usize,
    pub tables_digest: u64,
    /// (enable count, pause count, pending, queued stores).
    pub lazy: super::lazy_mmu::LazySnapshot,
}

/// A digest of every table page reachable from the root: each page's 512
/// raw descriptors, in walk order. Raw words, not decoded leaves: a page
/// table of 262144 linear-map pages (a CPU without BBML2_NOABORT) is read
/// thousands of times by fault injection, and any bit that changes counts.
struct Digest {
    hash: u64,
    tables: usize,
}

impl Digest {
    fn mix(&mut self, value: u64) {
        self.hash = (self.hash.rotate_left(5) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn table(&mut self, table: PhysAddr, level: Level) {
        self.tables += 1;
        let entries = phys_to_virt(table).as_ptr::<u64>();
        for i in 0..512 {
            // SAFETY: a live page-table page (the caller holds a walk
            // guard), read through the linear map.
            let raw = unsafe { read_volatile(entries.add(i)) };
            self.mix(raw);
            if let (Some(next), Entry::Table(child)) = (level.next(), Descriptor(raw).decode(level)) {
                self.table(child, next);
            }
        }
    }
}

/// The state now.
pub fn state() -> MmState {
    let mut digest = Digest { hash: 0xcbf2_9ce4_8422_2325, tables: 0 };
    {
        let _walk = pgtable::walking();
        digest.table(pgtable::kernel_root(), Level::L0);
    }
    MmState {
        frames_used: frame_alloc::stats().used,
        areas: vmalloc::areas(),
        table_pages: digest.tables,
        tables_digest: digest.hash,
        lazy: task::current().lazy_state(),
    }
}

/// What a test may not leave behind: the areas, the frames in use (but for
/// the linear map's tables: a block split by a permission change stays
/// split), and every mapping of the vmalloc region. The test harness takes
/// one before each test; after it, [`Baseline::leaks`] says what the test
/// left behind and [`Baseline::restore`] takes it back, so that a test that
/// failed half way (its cleanup skipped) cannot poison the next.
pub struct Baseline {
    areas: Vec<AreaInfo>,
    frames_used: usize,
    used: Vec<u64>,
    vmalloc_leaves: Vec<(u64, u64)>,
}

/// The valid leaves of the vmalloc region: (VA, descriptor).
fn vmalloc_leaves() -> Vec<(u64, u64)> {
    let walk = pgtable::walking();
    walk.walk_range(VMALLOC_START, VMALLOC_END.offset_from(VMALLOC_START))
        .filter(|(_, e)| matches!(e.entry(), Entry::Leaf { .. }))
        .map(|(_, e)| (e.va.as_u64(), e.read().0))
        .collect()
}

/// Frames in use minus the linear map's table pages.
fn frames_used() -> usize {
    frame_alloc::stats().used - ptdump::region_stats()[0].table_pages()
}

impl Baseline {
    pub fn take() -> Baseline {
        Baseline {
            areas: vmalloc::areas(),
            frames_used: frames_used(),
            used: frame_alloc::used_bitmap(),
            vmalloc_leaves: vmalloc_leaves(),
        }
    }

    /// What is different now, in words; None if nothing is.
    pub fn leaks(&self) -> Option<String> {
        let mut what = String::new();
        let areas = vmalloc::areas();
        let (new, gone) = (
            areas.iter().filter(|a| !self.areas.contains(a)).count(),
            self.areas.iter().filter(|a| !areas.contains(a)).count(),
        );
        if new + gone > 0 {
            let _ = write!(what, "{new} area(s) left, {gone} gone; ");
        }
        let frames = frames_used();
        if frames != self.frames_used {
            let _ = write!(what, "{} frames in use, {} before; ", frames, self.frames_used);
        }
        let leaves = vmalloc_leaves();
        if leaves != self.vmalloc_leaves {
            let stray = leaves.iter().filter(|l| !self.vmalloc_leaves.contains(l)).count();
            let _ = write!(what, "{stray} vmalloc-region mapping(s) that were not there; ");
        }
        (!what.is_empty()).then(|| String::from(what.trim_end_matches("; ")))
    }

    /// Takes back what the test left: its areas (unmapped, their frames
    /// freed), any other mapping it made in the vmalloc region, and the
    /// frames it took that no table and no stack still uses.
    pub(crate) fn restore(&self) {
        for area in vmalloc::areas() {
            if !self.areas.contains(&area) {
                let _ = vmalloc::release_leaked_area(area.start);
            }
        }
        let stray: Vec<u64> =
            vmalloc_leaves().into_iter().filter(|l| !self.vmalloc_leaves.contains(l)).map(|(va, _)| va).collect();
        if !stray.is_empty() {
            {
                let walk = pgtable::walking();
                for &va in &stray {
                    let entry = walk.walk(VirtAddr::new(va));
                    // SAFETY: a leaf the failed test made or changed (it is
                    // not in the baseline); its code was abandoned, and the
                    // harness runs alone between tests: nobody uses it.
                    unsafe { pgtable::write_entry(&entry, Descriptor::INVALID) };
                }
            }
            let size = VMALLOC_END.offset_from(VMALLOC_START);
            crate::mm::tlb::flush_tlb_kernel_range(VMALLOC_START, VMALLOC_START.add(size));
        }
        // The tables of what was released stay (as vmalloc's do); empty now.
        vmalloc::reclaim_page_tables();
        let in_use = frames_in_use_by_tables_and_stacks();
        for pa in frame_alloc::used_since(&self.used) {
            if !in_use.contains(&pa.as_u64()) {
                let _ = frame_alloc::free_frame(pa);
            }
        }
    }
}

/// Every page-table page, and every frame a kernel stack maps: frames a
/// leaked task or the linear map's splits still use.
fn frames_in_use_by_tables_and_stacks() -> BTreeSet<u64> {
    fn tables(table: PhysAddr, level: Level, out: &mut BTreeSet<u64>) {
        out.insert(table.as_u64());
        let Some(next) = level.next() else { return };
        let entries = phys_to_virt(table).as_ptr::<u64>();
        for i in 0..512 {
            // SAFETY: a live page-table page (the caller holds a walk
            // guard), read through the linear map.
            let raw = unsafe { read_volatile(entries.add(i)) };
            if let Entry::Table(child) = Descriptor(raw).decode(level) {
                tables(child, next, out);
            }
        }
    }
    let mut found = BTreeSet::new();
    let walk = pgtable::walking();
    tables(walk.root(), Level::L0, &mut found);
    let stacks = KSTACK_SLOTS * KSTACK_SLOT_SIZE;
    for (_, entry) in walk.walk_range(KSTACK_START, stacks) {
        if let Entry::Leaf { addr, .. } = entry.entry() {
            found.insert(addr.as_u64());
        }
    }
    found
}
