//! `debug_pagealloc=on`: free frames are not in the linear map (Linux's
//! CONFIG_DEBUG_PAGEALLOC). A use after free through the linear map then
//! faults at once, instead of corrupting whoever gets the frame next.
//!
//! The frame allocator maps frames back as it hands them out and unmaps
//! them (with a TLB flush) as they come back, so **the allocator writes
//! page-table entries**. That is what makes it matter for lazy MMU mode
//! (Ryan Roberts' RFC "mm: Avoid calling page allocator from
//! apply_to_page_range()", <20250530140446.2387131-4-ryan.roberts@arm.com>): a caller that allocates inside a lazy section, such as an
//! `apply_to_page_range` callback that populates pages, now has a page-table
//! change made in the middle of its section, and the frame must be
//! reachable when `alloc_frame` returns, before the caller's section ends.
//!
//! - The map-back runs through `apply_to_page_range`, so it opens a lazy
//!   section of its own, which **nests** in the caller's: its exit flushes
//!   what is pending (one `dsb ishst; isb`), and the caller stays in lazy
//!   mode, its batch intact for everything after. This is Linux 7.0's cure.
//! - The other cure (the RFC's) is for the caller not to be in lazy mode
//!   while it allocates: the `_nolazy` variants of `apply_to_page_range`.
//! - [`MapBack::CallersSection`] shows the disease: map-back writes made
//!   without a section of their own belong to the caller's section, so
//!   under `deferred-writes` they are not in memory yet when the caller
//!   touches the frame, and that access faults.
//!
//! Unmapping one page needs pages. With BBML2_NOABORT the linear map is
//! built with blocks, and every block is split in place at boot (as
//! set_memory_* splits them); without it the linear map is made of pages
//! from the start (`kernel_map::linear_map_leaves`), since a live block
//! that holds the page tables cannot be broken safely.

use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};

use super::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use super::apply::{ApplyError, apply_to_existing_page_range, apply_to_page_range};
use super::descriptor::{Attributes, Descriptor, Level};
use super::pgtable::{self, MapError};
use super::{frame_alloc, lazy_mmu, pageattr, pgtable_check, phys_to_virt, tlb, virt_to_phys};
use crate::boot_args;

static ENABLED: AtomicBool = AtomicBool::new(false);
static MAP_BACK: AtomicU8 = AtomicU8::new(MapBack::NestedSection as u8);
static BLOCKS_SPLIT: AtomicUsize = AtomicUsize::new(0);
static UNMAPPED_AT_BOOT: AtomicUsize = AtomicUsize::new(0);

/// How the allocator's map-back writes are bracketed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapBack {
    /// In a lazy section of their own (nested in the caller's, if any).
    NestedSection = 0,
    /// Written bare, so inside the caller's section if it has one: the
    /// bug the RFC describes, kept to be shown.
    CallersSection = 1,
}

/// What debug_pagealloc did at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootStats {
    /// Linear-map blocks split into pages (0 when built from pages).
    pub blocks_split: usize,
    /// Free frames unmapped from the linear map.
    pub frames_unmapped: usize,
}

/// Did the command line ask for it (`debug_pagealloc=on`)?
pub fn requested() -> bool {
    boot_args::bool_option("debug_pagealloc")
}

/// Is it on: are free frames out of the linear map?
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

pub fn boot_stats() -> BootStats {
    BootStats { blocks_split: BLOCKS_SPLIT.load(Relaxed), frames_unmapped: UNMAPPED_AT_BOOT.load(Relaxed) }
}

/// Chooses how map-back writes are bracketed; returns the previous choice.
pub fn set_map_back(how: MapBack) -> MapBack {
    match MAP_BACK.swap(how as u8, Relaxed) {
        0 => MapBack::NestedSection,
        _ => MapBack::CallersSection,
    }
}

/// Turns it on, at boot, with one task and no interrupts yet: splits the
/// linear map into pages and unmaps every free frame.
pub(crate) fn init() -> Result<BootStats, MapError> {
    BLOCKS_SPLIT.store(pageattr::split_linear_map_to_pages()?, Relaxed);
    // From here the allocator maps what it hands out; nothing allocates
    // between taking the list and unmapping it (init runs alone).
    ENABLED.store(true, Relaxed);
    let runs = frame_alloc::free_runs();
    {
        let _section = lazy_mmu::enable();
        for &(pa, count) in &runs {
            clear(pa, count)?;
        }
    }
    tlb::flush_tlb_all();
    UNMAPPED_AT_BOOT.store(runs.iter().map(|&(_, count)| count).sum(), Relaxed);
    Ok(boot_stats())
}

fn linear_range(pa: PhysAddr, count: usize) -> (VirtAddr, u64) {
    (phys_to_virt(pa), count as u64 * PAGE_SIZE)
}

/// Puts `count` frames from `pa` back into the linear map, read/write.
/// The linear map has level-3 tables everywhere, so this allocates nothing.
pub(super) fn map_pages(pa: PhysAddr, count: usize) -> Result<(), MapError> {
    let _op = pgtable_check::operation();
    let (va, size) = linear_range(pa, count);
    let map = |entry: &pgtable::EntryRef| {
        // SAFETY: the linear map's own slot for a frame being given back to
        // the allocator, mapped as the rest of the linear map is.
        unsafe {
            pgtable::write_entry(entry, Descriptor::leaf(Level::L3, virt_to_phys(entry.va), Attributes::KERNEL_RW))
        };
    };
    match MAP_BACK.load(Relaxed) {
        0 => {
            apply_to_page_range(va, size, |entry| {
                map(entry);
                Ok::<(), Infallible>(())
            })
            .map_err(map_error)?;
        }
        _ => {
            // No walk guard (the linear map's tables stay): a guard's end
            // would make the stores, and the bug shown is that they wait.
            for i in 0..count as u64 {
                let entry = pgtable::linear_map_entry(va.add(i * PAGE_SIZE)).expect("a linear-map address");
                if entry.level != Level::L3 {
                    return Err(MapError::BlockInTheWay { va: entry.va, level: entry.level });
                }
                map(&entry);
            }
        }
    }
    Ok(())
}

/// Takes `count` frames from `pa` out of the linear map, and out of every
/// TLB, before they are freed.
pub(super) fn unmap_pages(pa: PhysAddr, count: usize) {
    let _op = pgtable_check::operation();
    clear(pa, count).expect("the linear map is made of pages under debug_pagealloc");
    let (va, size) = linear_range(pa, count);
    tlb::flush_tlb_kernel_range(va, va.add(size));
}

/// Clears the linear map's entries for the frames; the caller flushes.
fn clear(pa: PhysAddr, count: usize) -> Result<(), MapError> {
    let (va, size) = linear_range(pa, count);
    apply_to_existing_page_range(va, size, |entry| {
        // SAFETY: the linear map's slot for a frame being freed; the
        // caller flushes it before the frame is used again.
        unsafe { pgtable::write_entry(entry, Descriptor::INVALID) };
        Ok::<(), Infallible>(())
    })
    .map(|_| ())
    .map_err(map_error)
}

fn map_error(e: ApplyError<Infallible>) -> MapError {
    match e {
        ApplyError::Map(e) => e,
        ApplyError::Callback(never) => match never {},
    }
}
