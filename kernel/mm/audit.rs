//! The memory manager's state in one comparable value: frames in use, the
//! live vmalloc areas, a digest of every page-table entry of the kernel
//! half, and the current task's lazy MMU state. Fault injection and the
//! fuzzer take one before an operation that must fail cleanly and compare
//! it with one taken after: "changes nothing" becomes one `assert_eq!`.
//!
//! And W^X across aliases ([`check_wx_aliases`]): no frame is mapped
//! executable by one entry and writable by another, the linear map's
//! entries included. The test harness checks it after every test.

use alloc::vec::Vec;
use core::ptr::read_volatile;

use super::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use super::descriptor::{Descriptor, Entry, Level};
use super::layout::{REGIONS, in_linear_map};
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

/// A frame mapped executable at `executable` and writable at `writable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WxAlias {
    pub frame: PhysAddr,
    pub executable: VirtAddr,
    pub writable: VirtAddr,
}

/// Checks W^X across aliases: every frame that a kernel entry maps
/// executable is mapped by no writable entry, neither elsewhere outside
/// the linear map (a `vmap` of the same frame) nor by its linear alias.
/// Returns the first frame that is. (The linear map itself is never
/// executable; it is looked up at each executable frame rather than walked
/// whole: 262144 pages on a CPU without BBML2_NOABORT.)
pub fn check_wx_aliases() -> Result<(), WxAlias> {
    let walk = pgtable::walking();
    // (va, frame, bytes) of every leaf outside the linear map.
    let (mut executable, mut writable) = (Vec::new(), Vec::new());
    for &(_, start, size) in REGIONS.iter().filter(|r| !in_linear_map(r.1)) {
        for (_, entry) in walk.walk_range(start, size) {
            if let Entry::Leaf { addr, attrs } = entry.entry() {
                let leaf = (entry.va, addr, entry.level.entry_size());
                if attrs.executable {
                    executable.push(leaf);
                } else if attrs.writable {
                    writable.push(leaf);
                }
            }
        }
    }
    for &(va, pa, size) in &executable {
        let overlap = |&&(_, wpa, wsize): &&(VirtAddr, PhysAddr, u64)| {
            wpa.as_u64() < pa.as_u64() + size && pa.as_u64() < wpa.as_u64() + wsize
        };
        if let Some(&(wva, wpa, _)) = writable.iter().find(overlap) {
            let frame = PhysAddr::new(wpa.as_u64().max(pa.as_u64()));
            let at = |base: VirtAddr, base_pa: PhysAddr| base.add(frame.as_u64() - base_pa.as_u64());
            return Err(WxAlias { frame, executable: at(va, pa), writable: at(wva, wpa) });
        }
        for offset in (0..size).step_by(PAGE_SIZE as usize) {
            let frame = pa.add(offset);
            let alias = phys_to_virt(frame);
            if !in_linear_map(alias) {
                continue;
            }
            if let Entry::Leaf { attrs, .. } = walk.walk(alias).entry()
                && attrs.writable
            {
                return Err(WxAlias { frame, executable: va.add(offset), writable: alias });
            }
        }
    }
    Ok(())
}
