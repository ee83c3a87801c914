//! The frames live leaves map, and the **freed-while-mapped** rule.
//!
//! A frame goes back to the allocator only once no valid entry maps it:
//! whoever is handed it next would share it with the old mapping, which
//! still reads and writes it (through the TLB or a fresh walk alike). The
//! order is Linux's `vfree()` and `vunmap()`: unmap (and flush), then free
//! the pages. The invalidate rule covers the TLB's copy of a *cleared*
//! entry; this rule covers the entry itself, never cleared.
//!
//! The checker counts, per frame, the valid leaves of linked tables that
//! map it outside the linear map: a leaf is counted when it is stored
//! into a linked table or when its table is linked, and counted off when
//! it is replaced or its table is unlinked or freed. The linear map maps
//! all RAM for good, the allocator's free frames included: its leaves are
//! not counted. A count, not a list: a store costs two array updates, and
//! only a report looks for the leaf it names.

use super::super::report::{EntryChange, Rule};
use super::{Checker, Kernel, Place, plural, sentence};
use crate::mm::addr::{PhysAddr, VirtAddr};
use crate::mm::descriptor::{Descriptor, Entry, Level};
use crate::mm::layout::in_linear_map;

impl<K: Kernel> Checker<K> {
    /// Counts the leaf `desc` (at `level`, translating from `va`) on or
    /// off the frames it maps, if it is one outside the linear map.
    pub(super) fn count_leaf(&mut self, desc: u64, level: Level, va: u64, on: bool) {
        if let Entry::Leaf { addr, .. } = Descriptor(desc).decode(level)
            && !in_linear_map(VirtAddr::new(va))
        {
            self.mapped.add(addr.as_u64(), level.entry_size(), on);
        }
    }

    /// Counts the leaves of the linked table at `table` on or off (it is
    /// linked, or no longer).
    pub(super) fn count_table(&mut self, table: u64, on: bool) {
        let Some(Place::Linked { level, va }) = self.tables.get(&table).map(|t| t.place) else { return };
        for i in 0..512 {
            let desc = self.entry_at(table, i);
            self.count_leaf(desc, level, va.wrapping_add(i * level.entry_size()), on);
        }
    }

    /// Counts every leaf again from the linked tables, after a linked
    /// table's page was allocated anew (a table-lifetime violation), its
    /// leaves zeroed before the checker could count them off.
    pub(super) fn recount_mapped(&mut self) {
        self.mapped.counts.fill(0);
        let linked: alloc::vec::Vec<u64> =
            self.tables.iter().filter(|(_, t)| matches!(t.place, Place::Linked { .. })).map(|(&pa, _)| pa).collect();
        for table in linked {
            self.count_table(table, true);
        }
    }

    /// The frame at `pa` is being freed: reports it if live leaves still
    /// map it, naming the first one found.
    pub(super) fn freed_while_mapped(&mut self, pa: u64) {
        let count = u64::from(self.mapped.get(pa));
        if count == 0 {
            return;
        }
        let leaf = self.tables.iter().find_map(|(&table, t)| {
            let Place::Linked { level, va } = t.place else { return None };
            (0..512).find_map(|i| {
                let desc = self.entry_at(table, i);
                let at = va.wrapping_add(i * level.entry_size());
                match Descriptor(desc).decode(level) {
                    Entry::Leaf { addr, .. }
                        if !in_linear_map(VirtAddr::new(at))
                            && (addr.as_u64()..addr.as_u64() + level.entry_size()).contains(&pa) =>
                    {
                        let slot = self.kernel.phys_to_virt(PhysAddr::new(table)).as_u64() + i * 8;
                        Some(EntryChange { slot, at: Some((at, level)), old: desc, new: desc })
                    }
                    _ => None,
                }
            })
        });
        self.violation(
            Rule::FreedWhileMapped,
            sentence(format_args!(
                "a frame was freed while {count} valid entr{} still mapped it: its next owner would share it with that mapping (unmap and flush first, then free)",
                plural(count)
            )),
            leaf,
            Some(pa),
        );
    }
}
