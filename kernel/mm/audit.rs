//! The memory manager's state in one comparable value: frames in use, the
//! live vmalloc areas, a digest of every page-table entry of the kernel
//! half, and the current task's lazy MMU state. Fault injection and the
//! fuzzer take one before an operation that must fail cleanly and compare
//! it with one taken after: "changes nothing" becomes one `assert_eq!`.

use alloc::vec::Vec;
use core::ptr::read_volatile;

use super::addr::PhysAddr;
use super::descriptor::{Descriptor, Entry, Level};
use super::pgtable;
use super::vmalloc::{self, AreaInfo};
use super::{frame_alloc, phys_to_virt};
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
        pgtable::assert_walk_held();
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

/// The state now. The nodes vmalloc keeps for its next call go back to
/// their caches first: bookkeeping waiting for reuse, not memory in use.
pub fn state() -> MmState {
    vmalloc::shrink_spares();
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
