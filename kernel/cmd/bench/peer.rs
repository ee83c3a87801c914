//! The peer: google's aarch64-paging crate doing the bench's map / modify /
//! unmap on a set of its own tables, built in the same boot from the same
//! frame allocator, so its times sit next to ours in one CSV.
//!
//! Why this peer: it is a small, well-typed Rust page-table library with
//! the shape we model ours on (`map_range`, `modify_range` with a callback,
//! an error enum), so the comparison is between two Rust walkers, not
//! between Rust and C.
//!
//! It runs two ways. *Live* (the row `aarch64-paging-live`): its tables
//! are loaded into TTBR0 with an ASID of their own (`Mapping::activate`)
//! before the map, at an address of the lower half, so the crate pays what
//! it pays on live tables: its break-before-make dry run, `dsb ishst`, one
//! `tlbi vaae1is` per entry changed, `dsb ish; isb`, and a TLBI per entry
//! of every table it frees. *Never live* (`aarch64-paging-never-live`):
//! the tables are never loaded, and the crate skips every barrier and TLBI
//! (see below); that row shows its walker alone.
//!
//! What is comparable: four levels from level 0, the same PA (RAM from its
//! first frame), the same descriptor bits as our `KERNEL_RW` / `KERNEL_RO`
//! (not global where live: the lower half is tagged with the peer's ASID),
//! 4 KiB pages only (block mappings are ruled out), and tables taken from
//! our frame allocator and zeroed the same way. Its barriers and TLBIs are
//! its own `asm!`, which the kernel's counters do not see: the CSV leaves
//! its barrier columns empty.
//!
//! What it issues per call, read from its source (0.12.3:
//! `Mapping::map_range`, `modify_range`, `compact_subtables`,
//! `PageTableWithLevel::free_detached`) and checked in the disassembly:
//! never live, map_range (map), modify_range (modify) and map_range with an
//! invalid descriptor + compact_subtables (unmap) issue no dsb ishst, dsb
//! ish, isb or tlbi: each sits behind `Mapping::active()`. Descriptors are
//! still written with store-release (STLR; modify_range swaps with
//! LDXR/STLXR) and read with load-acquire (LDAR). Live, it adds: activate()
//! dsb ishst + isb; map_range dsb ishst + one tlbi vaae1is per descriptor
//! covering the range + dsb ish + isb; modify_range dsb ishst per leaf table
//! changed + one tlbi vaae1is per changed entry + dsb ish + isb; per
//! subtable freed dsb ishst + one tlbi per valid entry in it + dsb ish +
//! isb.

use core::cell::Cell;
use core::ptr::NonNull;

use aarch64_paging::descriptor::{El1Attributes, PhysicalAddress, UpdatableDescriptor};
use aarch64_paging::paging::{Constraints, El1And0, LEAF_LEVEL, MemoryRegion, PageTable, Translation, VaRange};
use aarch64_paging::{MapError, Mapping};

use lazymmu::dtb;
use lazymmu::mm::{
    self, Attributes, Descriptor, Level, PAGE_SIZE, PhysAddr, VirtAddr, disable_ttbr0_walks, enable_ttbr0_walks,
    frame_alloc, phys_to_virt, virt_to_phys,
};

use super::{Meter, Sample};

/// The ASID of the peer's live tables (the kernel's own mappings are
/// global and use none).
pub const PEER_ASID: usize = 1;

/// Where the peer maps, live: the lower half (TTBR0), at 512 GiB, far from
/// anything (the kernel runs in the upper half and walks nothing in TTBR0
/// once booted).
pub const PEER_LIVE_VA: u64 = 1 << 39;

/// One map / modify / unmap of `pages` 4 KiB pages done by aarch64-paging
/// on a fresh set of its own tables: each phase measured (time, and
/// instructions where counted).
#[derive(Clone, Copy, Debug)]
pub struct PeerRun {
    pub map: Sample,
    pub modify: Sample,
    /// The unmap plus `compact_subtables`, which frees the tables the
    /// unmap emptied, as our `unmap_range` does.
    pub unmap: Sample,
    /// Page-table pages in use once mapped, the root included (the root is
    /// allocated before the timed map; the other tables inside it).
    pub tables: usize,
}

// The fields are read when the error is printed (`{:?}`), which the
// dead-code lint does not count.
#[allow(dead_code)]
#[derive(Debug)]
pub enum PeerError {
    /// Zero pages, or more pages than RAM has frames.
    BadPageCount {
        pages: u64,
        ram_pages: u64,
    },
    /// Fewer free frames than the tables the mapping needs.
    OutOfMemory {
        needed: usize,
        free: usize,
    },
    Map(MapError),
    Modify(MapError),
    Unmap(MapError),
    /// Page-table pages still allocated after the tables were dropped.
    TablesLeaked(usize),
}

/// Maps, write-protects and unmaps `pages` pages with aarch64-paging,
/// measuring each step, on tables loaded into TTBR0 (`live`) or never
/// loaded; its tables are freed before it returns, whatever happens.
pub fn run(pages: u64, live: bool) -> Result<PeerRun, PeerError> {
    let ram = dtb::info();
    let ram_pages = ram.ram_size / PAGE_SIZE;
    if pages == 0 || pages > ram_pages {
        return Err(PeerError::BadPageCount { pages, ram_pages });
    }
    let va = if live { VirtAddr::new(PEER_LIVE_VA) } else { mm::VMALLOC_START };
    // allocate_table cannot fail, so every frame it will need is checked for
    // here (a fresh tree needs exactly these).
    let needed = tables_needed(va, pages);
    let free = frame_alloc::stats().free;
    if free < needed {
        return Err(PeerError::OutOfMemory { needed, free });
    }

    let region = MemoryRegion::new(va.as_u64() as usize, va.add(pages * PAGE_SIZE).as_u64() as usize);
    // Live, in the lower half: tagged with the peer's ASID.
    let tag = if live { El1Attributes::NON_GLOBAL } else { El1Attributes::empty() };
    let rw = peer_flags(Attributes::KERNEL_RW) | tag;
    let ro = peer_flags(Attributes::KERNEL_RO) | tag;
    let to_read_only = |_: &MemoryRegion, d: &mut UpdatableDescriptor<El1Attributes>| {
        if d.level() != LEAF_LEVEL || d.flags() != rw | El1Attributes::TABLE_OR_PAGE {
            return Err(());
        }
        d.set(d.output_address(), ro | El1Attributes::TABLE_OR_PAGE)
    };

    let live_tables = Cell::new(0);
    let (asid, range) = if live { (PEER_ASID, VaRange::Lower) } else { (0, VaRange::Upper) };
    let mut mapping = Mapping::with_asid_and_va_range(FrameTables { live: &live_tables }, asid, 0, El1And0, range);
    let loaded = live.then(|| {
        enable_ttbr0_walks();
        // SAFETY: the peer's table maps only its own region of the lower
        // half, which the kernel never touches; it is unloaded (below)
        // before it is dropped.
        unsafe { mapping.activate() }
    });

    let steps = (|| {
        let map = Meter::start();
        mapping
            .map_range(&region, peer_pa(ram.ram_start), rw, Constraints::NO_BLOCK_MAPPINGS)
            .map_err(PeerError::Map)?;
        let map = map.stop();
        let tables = live_tables.get();
        let modify = Meter::start();
        mapping.modify_range(&region, &to_read_only).map_err(PeerError::Modify)?;
        let modify = modify.stop();
        let unmap = Meter::start();
        mapping
            .map_range(&region, PhysicalAddress(0), El1Attributes::empty(), Constraints::NO_BLOCK_MAPPINGS)
            .map_err(PeerError::Unmap)?;
        mapping.compact_subtables();
        let unmap = unmap.stop();
        Ok((map, modify, unmap, tables))
    })();

    if let Some(previous) = loaded {
        // SAFETY: back to the TTBR0 the kernel had, which it does not use.
        unsafe { mapping.deactivate(previous) };
        disable_ttbr0_walks();
    }
    drop(mapping);
    if live_tables.get() != 0 {
        return Err(PeerError::TablesLeaked(live_tables.get()));
    }
    let (map, modify, unmap, tables) = steps?;
    Ok(PeerRun { map, modify, unmap, tables })
}

/// The root plus one table per 512 GiB, 1 GiB and 2 MiB that the pages touch.
fn tables_needed(va: VirtAddr, pages: u64) -> usize {
    let first = va.as_u64();
    let last = first + pages * PAGE_SIZE - 1;
    let per_level = [Level::L0, Level::L1, Level::L2].map(|l| (last >> l.shift()) - (first >> l.shift()) + 1);
    1 + per_level.iter().sum::<u64>() as usize
}

/// Our page descriptor for `attrs` as aarch64-paging flags: the same bits,
/// less the output address and the page bit (the crate adds that itself).
fn peer_flags(attrs: Attributes) -> El1Attributes {
    let page = Descriptor::leaf(Level::L3, PhysAddr::new(0), attrs);
    El1Attributes::from_bits_retain(page.0 as usize) - El1Attributes::TABLE_OR_PAGE
}

fn peer_pa(pa: PhysAddr) -> PhysicalAddress {
    PhysicalAddress(pa.as_u64() as usize)
}

/// aarch64-paging's table pages: zeroed frames from our allocator, reached
/// through the linear map, counted in `live`.
struct FrameTables<'a> {
    live: &'a Cell<usize>,
}

impl Translation<El1Attributes> for FrameTables<'_> {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El1Attributes>>, PhysicalAddress) {
        let pa = frame_alloc::alloc_frame().expect("run() checked that enough frames are free");
        let table = self.physical_to_virtual(peer_pa(pa));
        // SAFETY: a fresh frame, ours alone, mapped at phys_to_virt(pa).
        unsafe { table.cast::<u8>().write_bytes(0, PAGE_SIZE as usize) };
        self.live.set(self.live.get() + 1);
        (table, peer_pa(pa))
    }

    unsafe fn deallocate_table(&mut self, table: NonNull<PageTable<El1Attributes>>) {
        let pa = virt_to_phys(VirtAddr::from_ptr(table.as_ptr()));
        frame_alloc::free_frame(pa).expect("allocated by allocate_table");
        self.live.set(self.live.get() - 1);
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El1Attributes>> {
        let va = phys_to_virt(PhysAddr::new(pa.0 as u64));
        NonNull::new(va.as_mut_ptr()).expect("the linear map starts far above address 0")
    }
}
