//! Code written as data is fetchable before it is made executable: the
//! `icache` rule.
//!
//! A store of instructions goes through the data side. On a core whose
//! CTR_EL0 has IDC clear the bytes may sit in a data cache the instruction
//! side does not look in, until `dc cvau` cleans them to the point of
//! unification (PoU); with DIC clear, the instruction cache may still hold
//! the old bytes of the line, until `ic ivau` drops it, after the clean.
//! Each is complete only at the issuing CPU's next `dsb ish`
//! (`flush_icache_range`, Linux's `caches_clean_inval_pou`). With IDC set
//! the clean is not needed, but the stores must still be complete: a
//! `dsb` on the CPU that wrote them. With DIC set the invalidation is not
//! needed. The checker models what the CPU's CTR_EL0 says ([`CodeCaches`],
//! learnt at start; the host tests give it the Cortex-A72's, with both
//! clear, and every other combination).
//!
//! **How the checker learns "written".** It sees descriptor stores and
//! ordering instructions, not data stores. Code is written through
//! `cacheflush::write_instructions`, which tells it where (by VA; the
//! checker finds the frame through the live tables), as Linux's code
//! writers go through a few helpers (`aarch64_insn_write`, the module and
//! BPF loaders). Instructions stored by any other path are not seen: the
//! rule checks that code written through the helper is maintained, not
//! that every store to a page later made executable was. (Taking every
//! writable mapping as a write would flag every page: the linear map
//! holds all RAM writable.)
//!
//! **When it is judged.** When an entry with execute permission is made
//! for the frame, in place or in a table as it is linked: every granule
//! written since its last maintenance must be cleaned and invalidated by
//! then. Code rewritten under a mapping that is already executable (live
//! patching) is not judged: the kernel does not do it.

use alloc::collections::BTreeMap;

use super::super::report::{EntryChange, Rule};
use super::{Checker, Kernel, sentence};
use crate::arch::observe::Issued;
use crate::mm::addr::PhysAddr;
use crate::mm::descriptor::{Descriptor, Entry, Level};

/// What CTR_EL0 says of the caches code goes through (the same on every
/// CPU this kernel runs on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeCaches {
    /// Bytes per data cache line (DminLine) and instruction cache line
    /// (IminLine).
    pub d_line: u64,
    pub i_line: u64,
    /// IDC: no clean to the PoU needed; DIC: no invalidation needed.
    pub idc: bool,
    pub dic: bool,
}

impl CodeCaches {
    /// The smallest unit either maintenance covers.
    fn grain(self) -> u64 {
        self.d_line.min(self.i_line)
    }
}

/// A granule of RAM written as instructions, and how far its maintenance got.
pub(super) struct Written {
    /// Where it was written (for the report), and on which CPU.
    va: u64,
    cpu: usize,
    /// Cleaned to the PoU (or, with IDC, the stores complete).
    cleaned: bool,
    /// CPUs (a bit each) whose `dc cvau` covers it, done at their `dsb ish`.
    cleaning_on: u64,
    /// Its instruction lines dropped after the clean (or DIC).
    invalidated: bool,
    /// CPUs whose `ic ivau`, issued after the clean, covers it.
    invalidating_on: u64,
}

/// The written granules, by physical address.
pub(super) type Code = BTreeMap<u64, Written>;

impl<K: Kernel> Checker<K> {
    /// Instructions were stored at [va, va + bytes) (through any alias).
    pub fn code_written(&mut self, va: u64, bytes: u64) {
        let grain = self.caches.grain();
        let mut at = va & !(grain - 1);
        while at < va.saturating_add(bytes) {
            if let Some(pa) = self.phys_of(at) {
                let w = Written {
                    va: at,
                    cpu: self.here.cpu,
                    cleaned: false,
                    cleaning_on: 0,
                    invalidated: self.caches.dic,
                    invalidating_on: 0,
                };
                self.code.insert(pa, w);
            }
            at += grain;
        }
    }

    /// The RAM `va` translates to in the live tables, if any.
    fn phys_of(&self, va: u64) -> Option<u64> {
        match self.translate(va) {
            (level, Entry::Leaf { addr, .. }) => Some(addr.as_u64() + (va & (level.entry_size() - 1))),
            _ => None,
        }
    }

    /// A `dc cvau` or `ic ivau` was issued on this CPU.
    pub(super) fn cache_maintenance(&mut self, what: Issued) {
        if self.code.is_empty() {
            return;
        }
        let bit = 1 << self.here.cpu;
        let (va, line, clean) = match what {
            Issued::DcCvau { va } => (va, self.caches.d_line, true),
            Issued::IcIvau { va } => (va, self.caches.i_line, false),
            _ => return,
        };
        let Some(pa) = self.phys_of(va & !(line - 1)) else { return };
        for w in self.code.range_mut(pa..pa + line).map(|(_, w)| w) {
            if clean {
                w.cleaning_on |= bit;
            } else if w.cleaned {
                // Before the clean completed, the instruction side may
                // refill the line from the old bytes: it does not count.
                w.invalidating_on |= bit;
            }
        }
    }

    /// A `dsb` (`ish`: `dsb ish`) completed this CPU's maintenance.
    pub(super) fn code_dsb(&mut self, ish: bool) {
        if self.code.is_empty() {
            return;
        }
        let (cpu, idc) = (self.here.cpu, self.caches.idc);
        let bit = 1 << cpu;
        for w in self.code.values_mut() {
            if (idc && w.cpu == cpu) || (ish && w.cleaning_on & bit != 0) {
                w.cleaned = true;
            }
            if ish && w.invalidating_on & bit != 0 {
                w.invalidated = true;
            }
        }
        self.code.retain(|_, w| !(w.cleaned && w.invalidated));
    }

    /// Frames went back to the allocator: what was written there is gone.
    pub(super) fn code_freed(&mut self, pa: u64, bytes: u64) {
        let freed: alloc::vec::Vec<u64> = self.code.range(pa..pa + bytes).map(|(&k, _)| k).collect();
        for k in freed {
            self.code.remove(&k);
        }
    }

    /// The leaf `change` makes [pa, pa + its level's size) executable.
    pub(super) fn made_executable(&mut self, change: EntryChange, level: Level, pa: PhysAddr) {
        let (start, end) = (pa.as_u64(), pa.as_u64() + level.entry_size());
        let Some((&first, w)) = self.code.range(start..end).next() else { return };
        let (written, cleaned) = (w.va, w.cleaned);
        let what = if !cleaned && self.caches.idc {
            sentence(format_args!(
                "memory at {first:#x} was made executable while the instructions written to it at {written:#x} were not complete (no dsb since, on the CPU that wrote them): instruction fetches may miss them"
            ))
        } else if !cleaned {
            sentence(format_args!(
                "memory at {first:#x} was made executable while the instructions written to it at {written:#x} were not cleaned to the point of unification (dc cvau, then dsb ish; flush_icache_range): instruction fetches may read the old bytes"
            ))
        } else {
            sentence(format_args!(
                "memory at {first:#x} was made executable while the instruction cache lines of what was written to it at {written:#x} were not invalidated after the clean (ic ivau, then dsb ish; flush_icache_range): a stale line may still be fetched"
            ))
        };
        self.violation(Rule::Icache, what, Some(change), Some(first));
        self.code_freed(start, end - start);
    }

    /// `table` (at `level`, translating from `va`) was just linked with the
    /// tables below it: its executable leaves are made now.
    pub(super) fn linked_code(&mut self, table: u64, level: Level, va: u64) {
        if self.code.is_empty() {
            return;
        }
        let slots = self.kernel.phys_to_virt(PhysAddr::new(table)).as_u64();
        for i in 0..512u64 {
            let desc = self.entry_at(table, i);
            let at = va + i * level.entry_size();
            match Descriptor(desc).decode(level) {
                Entry::Leaf { addr, attrs } if attrs.executable => {
                    let change = EntryChange { slot: slots + i * 8, at: Some((at, level)), old: 0, new: desc };
                    self.made_executable(change, level, addr);
                }
                Entry::Table(child) => {
                    if let Some(next) = level.next() {
                        self.linked_code(child.as_u64(), next, at);
                    }
                }
                _ => {}
            }
        }
    }
}
