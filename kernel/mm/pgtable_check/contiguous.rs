//! The contiguous-bit rules (rule `contiguous`, and a case of
//! `break-before-make`).
//!
//! A contiguous run is 16 level-3 entries, the first at a 64 KiB aligned
//! address, that a TLB may cache as one 64 KiB entry. The architecture
//! leaves it CONSTRAINED UNPREDICTABLE what a walk returns when the 16 do
//! not agree (Arm ARM, "Misprogramming the Contiguous bit"), so:
//! - when an operation returns, every run it stored into is whole: all 16
//!   entries valid with the bit, mapping one aligned 64 KiB range with the
//!   same attributes, or none with the bit (a run is written in one store
//!   run, so the check waits for the operation's end, not each store);
//! - the bit of a live entry changes in place only under BBML2_NOABORT;
//!   without it, the run is broken first (all 16 invalid, TLBI, `dsb ish`)
//!   and the change is a new mapping, as Linux's `contpte_convert` does;
//!   with it, the old 64 KiB entry is stale until the flush;
//! - a TLB flush of a changed entry of a run covers the whole run: the TLB
//!   may hold the run as one entry, which a flush of part of its range is
//!   not required to drop on every implementation (Linux flushes
//!   `CONT_PTE_SIZE` around it).

use super::{Checker, Ctx, EntryChange, Kernel, Rule, StaleKind, sentence};
use crate::mm::addr::{CONT_PTE_SIZE, CONT_PTES, PAGE_SIZE, PhysAddr};
use crate::mm::descriptor::{Descriptor, Level};

/// The bits of a page descriptor besides its output address.
const ATTRIBUTE_BITS: u64 = !(((1 << 36) - 1) << 12);

impl<K: Kernel> Checker<K> {
    /// The bit of the live entry `change` (at `level`) changed in place.
    pub(super) fn contiguous_bit_changed(&mut self, change: EntryChange, level: Level) {
        if self.bbml2_noabort {
            // The old entry (or the whole run) may stay in TLBs until the
            // flush, which is owed.
            self.add_stale(change, level, StaleKind::Downgraded);
            return;
        }
        self.violation(
            Rule::BreakBeforeMake,
            sentence(format_args!(
                "the contiguous bit of a live entry changed in place without BBML2_NOABORT: the run must be broken first (all 16 entries invalid, TLBI, dsb ish)"
            )),
            Some(change),
            None,
        );
    }

    /// Notes the run a level-3 store went into, if either descriptor has
    /// the bit: checked when the operation returns.
    pub(super) fn note_run(&mut self, level: Level, table: u64, index: u64, old: u64, new: u64) {
        let bit = |d: u64| Descriptor(d).is_leaf(Level::L3) && Descriptor(d).is_contiguous();
        if level != Level::L3 || !(bit(old) || bit(new)) {
            return;
        }
        let run = (table, index & !(CONT_PTES as u64 - 1));
        let ctx: Ctx = self.here.ctx;
        let touched = &mut self.ctx(ctx).runs_touched;
        if !touched.contains(&run) {
            touched.push(run);
        }
    }

    /// Checks every run the current context stored into: whole, or none.
    pub(super) fn check_runs(&mut self) {
        let ctx = self.here.ctx;
        let runs = core::mem::take(&mut self.ctx(ctx).runs_touched);
        for (table, first) in runs {
            self.check_run(table, first);
        }
    }

    fn check_run(&mut self, table: u64, first: u64) {
        let entries: [u64; CONT_PTES] = core::array::from_fn(|i| self.entry_at(table, first + i as u64));
        let with_bit =
            entries.iter().filter(|&&e| Descriptor(e).is_leaf(Level::L3) && Descriptor(e).is_contiguous()).count();
        if with_bit == 0 {
            return;
        }
        let base = Descriptor(entries[0]).output().as_u64();
        let what = if with_bit < CONT_PTES {
            sentence(format_args!(
                "a contiguous run is partial: {with_bit} of its 16 entries are valid pages with the bit (a run is all 16, or the bit goes from all of them)"
            ))
        } else if !base.is_multiple_of(CONT_PTE_SIZE)
            || (0..CONT_PTES).any(|i| Descriptor(entries[i]).output().as_u64() != base + i as u64 * PAGE_SIZE)
        {
            sentence(format_args!(
                "the contiguous bit is on 16 entries that do not map one 64 KiB aligned range (the first maps {base:#x})"
            ))
        } else if entries.iter().any(|&e| e & ATTRIBUTE_BITS != entries[0] & ATTRIBUTE_BITS) {
            sentence(format_args!(
                "the entries of a contiguous run differ in attributes: part of a live run was changed without the run being split first"
            ))
        } else {
            return;
        };
        let slot = self.kernel.phys_to_virt(PhysAddr::new(table)).as_u64() + first * 8;
        let at = match self.tables.get(&table).map(|t| t.place) {
            Some(super::Place::Linked { level, va }) => Some((va + first * level.entry_size(), level)),
            _ => None,
        };
        let change = EntryChange { slot, at, old: entries[0], new: entries[0] };
        self.violation(Rule::Contiguous, what, Some(change), None);
    }

    /// The flush `cpu` completes now (its TLBIs since its last `dsb ish`)
    /// must cover the whole run of every stale level-3 entry it drops whose
    /// old descriptor had the bit; reported once per flush.
    pub(super) fn check_flushed_runs(&mut self, cpu: usize) {
        let flushed = core::mem::take(&mut self.cpus[cpu].flushed);
        if flushed.contains(&None) {
            return;
        }
        let covered = |at: u64| flushed.iter().flatten().any(|&(start, end)| (start..end).contains(&at));
        let short = self.cpus[cpu].invalidating.iter().filter(|&&(level, _)| level == 3).find_map(|&(_, va)| {
            let rec = self.stale[3].get(&va)?;
            let old = Descriptor(rec.change.old);
            let run = va & !(CONT_PTE_SIZE - 1);
            let whole = (0..CONT_PTES as u64).all(|i| covered(run + i * PAGE_SIZE));
            (old.is_leaf(Level::L3) && old.is_contiguous() && !whole).then_some((run, rec.change))
        });
        if let Some((run, change)) = short {
            self.violation(
                Rule::Contiguous,
                sentence(format_args!(
                    "a TLB flush covered only part of the contiguous run at {run:#x}: the TLB may hold the run as one entry, or any of its 16"
                )),
                Some(change),
                None,
            );
        }
    }
}
