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
#[cfg(debug_assertions)]
pub use map::set_reclaim_race;
pub use map::{LeafSizes, clear_range, map_range, unmap_range};
pub(in crate::mm) use map::{check_range, map_leaves};
pub use ptes::{Ptes, clear_ptes, modify_ptes, set_ptes, write_ptes};
pub use reclaim::free_empty_tables;
pub(crate) use reclaim::{Cleared, reclaim_empty_tables};
pub(in crate::mm) use tables::order_before_link;
pub use tables::{alloc_table, alloc_tables, free_unlinked_tables};
pub use visit::{Visitor, visit};
pub(crate) use walking::KernelTables;
pub(crate) use walking::recover_abandoned_walks;
pub use walking::{Exclusive, Found, Walking, exclusive, lookup, try_exclusive, walking};
pub(crate) use walking::{assert_walk_held, exclusive_held, linear_map_entry};
pub(in crate::mm) use walking::{lookup_from, walking_from};

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::addr::PhysAddr;
use super::frame_alloc::FrameError;

pub use crate::mm::engine::{MapError, Operand};

impl From<FrameError> for MapError {
    fn from(_: FrameError) -> MapError {
        MapError::OutOfMemory
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
