//! What a live leaf may become in place, and what memory type RAM may be
//! mapped with: the rules for permission upgrades, the nG bit and
//! mismatched aliases.
//!
//! **Permission upgrades** (read-only to writable, never-executable to
//! executable). A TLB may hold the old, stricter entry after the store, and
//! an access that needs the new permission then takes a permission fault.
//! Linux takes such a fault back only for user addresses (the generic
//! fault path finds the entry already upgraded and retries). For a kernel
//! address arm64's `__do_kernel_fault()` (arch/arm64/mm/fault.c) forgives
//! only a *translation* fault that a walk now resolves
//! (`is_spurious_el1_translation_fault()`: an entry that was invalid and
//! was made valid, 42f91093b043); a permission fault at EL1 is reported
//! and the kernel dies. So `__change_memory_common()` (pageattr.c) flushes
//! the range after every change, upgrade or not. The checker asks the
//! same: a leaf whose permissions grew is stale, like one whose
//! permissions shrank, until a TLBI covering it is completed by `dsb ish`,
//! by the end of the operation that changed it (the caller uses the new
//! permission as soon as it returns). An invalid entry made valid is not
//! an upgrade: that is the publish rule's, and the fixup's, case.
//!
//! **The nG bit.** A live leaf may go from global to not-global (nG set)
//! in place, but not back: an ASID-tagged entry and a global one for the
//! same address could then both sit in a TLB and both match, and the
//! architecture calls that a TLB conflict. Linux's
//! `pgattr_change_is_safe()` (arch/arm64/mm/mmu.c) lets PTE_NG change
//! without break-before-make only one way ("Transitioning from Non-Global
//! to Global is unsafe"). The kernel's own mappings are all global, so
//! only a bug sets nG; the rule is here so that such a bug is named.
//!
//! **Mismatched aliases.** Every page of RAM is mapped by the linear map as
//! Normal write-back memory. A second mapping of it as Device or Normal
//! non-cacheable is a mismatched-attribute alias: the cacheable alias may
//! bring the line into a cache (speculatively, at any time) which the
//! other alias's accesses bypass, so each alias may read data the other
//! has not written back, and a Device alias of RAM is not even guaranteed
//! to behave as memory. Linux's `ioremap_prot()` (arch/arm64/mm/ioremap.c)
//! refuses RAM for this reason (`pfn_is_map_memory()`), and so does ours
//! (`vmalloc::vmap_range`, `vmap_contiguous`: `VmallocError::RamNotDevice`).
//! The checker reports a leaf made with another memory type over RAM whose
//! cacheable linear-map alias is live. (The other order, a linear-map
//! page made cacheable under a live Device alias, cannot happen here: the
//! linear map's memory type is set at boot and never changed.)

use super::super::report::{EntryChange, Rule, Sentence};
use super::{Checker, Kernel, Place, StaleKind, sentence};
use crate::mm::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mm::descriptor::{Attributes, Descriptor, Entry, Level, MemoryType};
use crate::mm::layout::in_linear_map;

impl<K: Kernel> Checker<K> {
    /// A live leaf changed in place to the same output address and memory
    /// type, from `old` to `new` attributes.
    pub(super) fn leaf_changed(&mut self, change: EntryChange, level: Level, old: Attributes, new: Attributes) {
        if old.not_global && !new.not_global {
            self.violation(
                Rule::BreakBeforeMake,
                sentence(format_args!(
                    "a live not-global (nG) mapping was made global without break-before-make: a TLB may hold both entries, and both match (a TLB conflict)"
                )),
                Some(change),
                None,
            );
        }
        let lost = (old.writable && !new.writable) || (old.executable && !new.executable);
        let gained = (!old.writable && new.writable) || (!old.executable && new.executable);
        if lost {
            self.add_stale(change, level, StaleKind::Downgraded);
        } else if gained {
            self.add_stale(change, level, StaleKind::Upgraded);
        }
    }

    /// What a context that has left `stale` entries uninvalidated is told,
    /// if the first of them is a permission upgrade.
    pub(super) fn upgrade_not_invalidated(why: &str, stale: u64) -> Sentence {
        sentence(format_args!(
            "{why} with {stale} entr{} made more permissive and not invalidated in the TLB (TLBI + dsb ish): a TLB may still hold the old entry, and an EL1 permission fault is never fixed up",
            super::plural(stale)
        ))
    }

    /// A leaf stored at `change` maps [pa, pa + its level's size) with
    /// `attrs`: Device or non-cacheable RAM is a mismatched alias of its
    /// linear map's cacheable one.
    pub(super) fn check_alias(&mut self, change: EntryChange, level: Level, pa: PhysAddr, attrs: Attributes) {
        let Some((va, _)) = change.at else { return };
        if attrs.memory == MemoryType::NormalWriteBack || in_linear_map(VirtAddr::new(va)) {
            return;
        }
        let (start, end) = (pa.as_u64(), pa.as_u64() + level.entry_size());
        let mut at = start;
        while at < end {
            let alias = self.kernel.phys_to_virt(PhysAddr::new(at)).as_u64();
            if !in_linear_map(VirtAddr::new(alias)) {
                at += PAGE_SIZE;
                continue;
            }
            let (found, entry) = self.translate(alias);
            if let Entry::Leaf { attrs: linear, .. } = entry
                && linear.memory == MemoryType::NormalWriteBack
            {
                self.violation(
                    Rule::MismatchedAlias,
                    sentence(format_args!(
                        "RAM at {at:#x} was mapped {:?} while its linear-map alias at {alias:#x} maps it Normal write-back: a mismatched-attribute alias (Linux's ioremap refuses RAM)",
                        attrs.memory
                    )),
                    Some(change),
                    Some(at),
                );
                return;
            }
            // Skip what the entry found covers: all of it has no
            // cacheable alias.
            let size = found.entry_size();
            at += ((alias | (size - 1)) + 1) - alias;
        }
    }

    /// The entry that translates `va` in the live tables, and its level
    /// (the level where the walk stopped, for an invalid one).
    pub(super) fn translate(&self, va: u64) -> (Level, Entry) {
        let root = self.tables.iter().find_map(|(&pa, t)| match t.place {
            Place::Linked { level: Level::L0, .. } => Some(pa),
            _ => None,
        });
        let Some(mut table) = root else { return (Level::L0, Entry::Invalid) };
        let mut level = Level::L0;
        loop {
            let entry = Descriptor(self.entry_at(table, level.index(va) as u64)).decode(level);
            match (entry, level.next()) {
                (Entry::Table(next_table), Some(next)) => {
                    table = next_table.as_u64();
                    level = next;
                }
                _ => return (level, entry),
            }
        }
    }
}
