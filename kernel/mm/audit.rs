//! The memory manager's state in one comparable value: frames in use, the
//! live vmalloc areas, a digest of every page-table entry of the kernel
//! half, and the current task's lazy MMU state. Fault injection and the
//! fuzzer take one before an operation that must fail cleanly and compare
//! it with one taken after: "changes nothing" becomes one `assert_eq!`.

use alloc::vec::Vec;

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::{Attributes, Descriptor, Level};
use super::pgtable::{self, Visitor};
use super::vmalloc::{self, AreaInfo};
use super::frame_alloc;
use crate::task;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmState {
    pub frames_used: usize,
    pub areas: Vec<AreaInfo>,
    /// Table pages in the kernel half, and an FNV-1a digest of every table
    /// and leaf (address, level, descriptor).
    pub table_pages: usize,
    pub tables_digest: u64,
    /// (enable count, pause count, pending, queued stores).
    pub lazy: (u8, u8, bool, usize),
}

struct Digest {
    hash: u64,
    tables: usize,
}

impl Digest {
    fn mix(&mut self, value: u64) {
        for byte in value.to_le_bytes() {
            self.hash = (self.hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
}

impl Visitor for Digest {
    fn table(&mut self, va: VirtAddr, level: Level) {
        self.tables += 1;
        self.mix(va.as_u64());
        self.mix(level.0 as u64);
    }

    fn leaf(&mut self, va: VirtAddr, level: Level, pa: PhysAddr, attrs: Attributes) {
        self.mix(va.as_u64());
        self.mix(Descriptor::leaf(level, pa, attrs).0);
    }
}

/// The state now.
pub fn state() -> MmState {
    let mut digest = Digest { hash: 0xcbf2_9ce4_8422_2325, tables: 0 };
    pgtable::visit(pgtable::kernel_root(), &mut digest);
    MmState {
        frames_used: frame_alloc::stats().used,
        areas: vmalloc::areas(),
        table_pages: digest.tables,
        tables_digest: digest.hash,
        lazy: task::current().lazy_state(),
    }
}
