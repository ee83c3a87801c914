//! Every entry of the kernel's tables, in address order (ptdump, the audit).

use super::*;
use crate::mm::addr::{PhysAddr, VirtAddr};
use crate::mm::descriptor::{Attributes, Entry, Level};

/// What [`visit`](fn@visit) reports, in address order.
pub trait Visitor {
    /// A table page at `level` whose entries start at `va`.
    fn table(&mut self, va: VirtAddr, level: Level);
    /// A valid leaf: a block at levels 1-2, a page at level 3.
    fn leaf(&mut self, va: VirtAddr, level: Level, pa: PhysAddr, attrs: Attributes);
}

/// Visits every table page and valid leaf of the kernel half. The visit
/// is a walk ([`walking`](fn@super::walking)): no table is taken away under it (Linux's
/// ptdump holds the memory-hotplug lock for the same reason).
pub fn visit(visitor: &mut dyn Visitor) {
    let walk = walking();
    let base = VirtAddr::new(0xffff_0000_0000_0000);
    visitor.table(base, Level::L0);
    visit_table(walk.root(), Level::L0, base.as_u64(), visitor);
}

fn visit_table(table: PhysAddr, level: Level, base: u64, visitor: &mut dyn Visitor) {
    assert_walk_held();
    for index in 0..512u64 {
        let va = VirtAddr::new(base | (index << level.shift()));
        // SAFETY: a table reached from the root under the visit's walk guard.
        let entry = unsafe { EntryRef::new(table, level, va) };
        match entry.entry() {
            Entry::Invalid => {}
            Entry::Leaf { addr, attrs } => visitor.leaf(va, level, addr, attrs),
            Entry::Table(child) => {
                let next = level.next().expect("level-3 entries are never tables");
                visitor.table(va, next);
                visit_table(child, next, va.as_u64(), visitor);
            }
        }
    }
}
