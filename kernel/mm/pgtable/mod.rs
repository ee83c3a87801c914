//! The kernel's page tables: the one module through which every kernel
//! page table is read and written. The walk's logic is `mm::walk`, which
//! this module runs over the linear map, under its locks, with its store
//! path.
//!
//! Every descriptor stored into a live table goes through
//! [`write_entry`] (one entry) or [`write_ptes`] (a run of one table's
//! level-3 entries), both a run through the one store primitive
//! (`arch::lazy_mmu::write_run`, whose `store_entries` makes the stores), so
//! the barrier policy (what a store must be followed by before the walker
//! can rely on it) is applied in exactly one place: after making an entry valid,
//! `dsb ishst` (the store reaches the walker) and `isb` (no instruction
//! already in the pipeline keeps a stale "invalid" translation), paid at
//! once or deferred to the end of a lazy MMU section (`mm::lazy_mmu`).
//! Making an entry invalid needs neither: the TLB maintenance that must
//! follow it brings its own barriers.
//!
//! The files: `entry.rs` (the entry handle and the store of one entry), `tables.rs`
//! (page-table pages), `walking.rs` (walks and the SMP lock protocol),
//! `map.rs` (map and unmap ranges), `ptes.rs` (runs of level-3 entries
//! of one table and their batched stores), `reclaim.rs` (empty tables taken
//! away), `visit.rs` (every entry, for ptdump and the audit).

mod entry;
mod map;
mod ptes;
mod reclaim;
mod tables;
mod visit;
mod walking;

// What the rest of the world maps, walks and frees tables with; then
// what only the kernel's own mappers use.
pub use entry::{EntryRef, write_entry};
pub use map::{LeafSizes, clear_range, map_range, unmap_range};
pub(in crate::mm) use map::{check_range, leaf_level};
pub use ptes::{Ptes, clear_ptes, modify_ptes, set_ptes, write_ptes};
pub use reclaim::free_empty_tables;
pub(crate) use reclaim::{Cleared, reclaim_empty_tables};
pub use tables::{alloc_table, alloc_tables, free_unlinked_tables};
pub use visit::{Visitor, visit};
#[cfg(debug_assertions)]
pub(crate) use walking::recover_abandoned_walks;
pub use walking::{Exclusive, Found, Walking, exclusive, lookup, walking};
pub(in crate::mm) use walking::{Linked, link_table, walking_from};
pub(crate) use walking::{exclusive_held, linear_map_entry, try_exclusive};

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::Level;
use super::frame_alloc::FrameError;
use super::walk::BlockInTheWay;

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
        match *self {
            MapError::OutOfMemory => write!(f, "out of memory"),
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
        }
    }
}

/// Which argument of a call a [`MapError::Misaligned`] or
/// [`VmallocError::Misaligned`](crate::mm::vmalloc::VmallocError::Misaligned)
/// is about: a value, so tests match it exactly, and the message says it.
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

/// Physical address of the kernel's level-0 table (TTBR1), once built.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

pub fn kernel_root() -> PhysAddr {
    PhysAddr::new(KERNEL_ROOT.load(Relaxed))
}

pub(super) fn set_kernel_root(root: PhysAddr) {
    KERNEL_ROOT.store(root.as_u64(), Relaxed);
}
