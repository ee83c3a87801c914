//! The lazy purge's part of the rules (`vmalloc/purge.rs`).
//!
//! An entry `vfree` or `vunmap` cleared is not invalidated before the call
//! returns: its flush is the next purge's. So the freeing operation does
//! not owe it (**invalidate** lets it return), but until a TLBI covers it
//! the TLB may still hold the old translation, which must then reach
//! nothing new: mapping the address again (**break-before-make**) or
//! freeing the frame it mapped (**invalidate**) before the purge is a
//! violation, each said as such.

use super::super::report::{EntryChange, Rule};
use super::{Checker, Kernel, StaleKind, sentence};
use crate::mm::descriptor::{Descriptor, Entry, Level};

impl<K: Kernel> Checker<K> {
    /// [start, end) was cleared by a lazy free: the cleared entries there
    /// leave their creator's account and wait for the purge.
    pub fn lazily_freed(&mut self, start: u64, end: u64) {
        for level in 0..4 {
            let size = Level(level as u8).entry_size();
            let mut creators = alloc::vec::Vec::new();
            for rec in self.stale[level].range_mut(start & !(size - 1)..end).map(|(_, r)| r) {
                if rec.kind == StaleKind::Cleared && !rec.lazy {
                    rec.lazy = true;
                    creators.push(rec.creator);
                }
            }
            for creator in creators {
                if let Some(shadow) = self.contexts.get_mut(&creator) {
                    shadow.stale = shadow.stale.saturating_sub(1);
                }
            }
        }
    }

    /// Cleared entries that wait for a purge.
    pub fn awaiting_purge(&self) -> u64 {
        self.stale.iter().map(|m| m.values().filter(|r| r.lazy).count() as u64).sum()
    }

    /// A valid entry is being made where a lazily freed one waits for its
    /// purge: reported, and the old entry forgotten (the new one replaces it).
    pub(super) fn reused_before_purge(&mut self, change: EntryChange, level: Level) {
        let (va, _) = change.at.expect("a live table");
        let map = &mut self.stale[level.0 as usize];
        if !map.get(&va).is_some_and(|r| r.lazy) {
            return;
        }
        let rec = map.remove(&va).expect("just found");
        self.forget(&rec, level);
        self.violation(
            Rule::BreakBeforeMake,
            sentence(format_args!(
                "an address freed lazily (vfree, vunmap) was mapped again before a purge flushed it: the TLB may still hold {:#x}",
                rec.change.old
            )),
            Some(change),
            None,
        );
    }

    /// The frame at `pa` is being freed: if a lazily freed entry may still
    /// map it, reports that and returns true.
    pub(super) fn freed_before_purge(&mut self, pa: u64) -> bool {
        let lazy = self.stale.iter().enumerate().find_map(|(level, map)| {
            let level = Level(level as u8);
            map.values().filter(|r| r.lazy).find_map(|r| match Descriptor(r.change.old).decode(level) {
                Entry::Leaf { addr, .. } if (addr.as_u64()..addr.as_u64() + level.entry_size()).contains(&pa) => {
                    Some(r.change)
                }
                _ => None,
            })
        });
        let Some(change) = lazy else { return false };
        self.violation(
            Rule::Invalidate,
            sentence(format_args!(
                "a frame was freed while an area freed lazily (vfree, vunmap) still mapped it and no purge had flushed the TLB (vm_unmap_aliases first)"
            )),
            Some(change),
            Some(pa),
        );
        true
    }
}
