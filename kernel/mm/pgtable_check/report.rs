//! What the checker says when a rule is broken: the rule, a sentence, the
//! entry, where (CPU, task, interrupt or not) and the call chain.

use core::fmt;

use crate::mm::addr::PhysAddr;
use crate::mm::descriptor::{Descriptor, Entry, Level};
use crate::symbols::Symbolized;

/// The rules the checker enforces (see the module doc of `pgtable_check`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A valid entry is followed by `dsb ishst` then `isb` before it is
    /// relied on.
    Publish,
    /// A table is linked only after the stores into it are ordered.
    LinkOrder,
    /// A live translation is replaced only through invalid + TLBI, and a
    /// live linear-map block is never broken.
    BreakBeforeMake,
    /// A cleared entry, or a leaf whose permissions changed in place (less
    /// or more), is invalidated in every TLB before the operation returns,
    /// and a cleared one before what it mapped is freed.
    Invalidate,
    /// Tables are stored into, linked and freed only while they are tables,
    /// and never freed under a walk or a queued store.
    TableLifetime,
    /// The instructions of a sequence come in their order.
    BarrierOrder,
    /// A contiguous run is 16 aligned entries, all with the bit, mapping
    /// one aligned 64 KiB range with the same attributes; a TLB flush of
    /// an entry of one covers the whole run.
    Contiguous,
    /// RAM is mapped only with the memory type of its linear-map alias
    /// (Normal write-back): no Device or non-cacheable alias of it.
    MismatchedAlias,
    /// Instructions written as data are cleaned to the point of
    /// unification and their instruction lines invalidated (as CTR_EL0
    /// asks) before their memory is made executable.
    Icache,
    /// A CPU that receives a mapping another CPU made (a task's stack)
    /// takes a context synchronization event between receiving it and its
    /// first use (`shadow/handover.rs`).
    PublishReceiver,
    /// A frame goes back to the allocator only once no valid entry (but
    /// the linear map's) maps it.
    FreedWhileMapped,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::Publish,
        Rule::LinkOrder,
        Rule::BreakBeforeMake,
        Rule::Invalidate,
        Rule::TableLifetime,
        Rule::BarrierOrder,
        Rule::Contiguous,
        Rule::MismatchedAlias,
        Rule::Icache,
        Rule::PublishReceiver,
        Rule::FreedWhileMapped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Publish => "publish",
            Rule::LinkOrder => "link-order",
            Rule::BreakBeforeMake => "break-before-make",
            Rule::Invalidate => "invalidate",
            Rule::TableLifetime => "table-lifetime",
            Rule::BarrierOrder => "barrier-order",
            Rule::Contiguous => "contiguous",
            Rule::MismatchedAlias => "mismatched-alias",
            Rule::Icache => "icache",
            Rule::PublishReceiver => "publish-receiver",
            Rule::FreedWhileMapped => "freed-while-mapped",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry and one change of it, as the checker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryChange {
    /// Where the descriptor is (its linear-map address).
    pub slot: u64,
    /// The first address it translates, and its level; None while its
    /// table is not linked anywhere yet.
    pub at: Option<(u64, Level)>,
    pub old: u64,
    pub new: u64,
}

impl fmt::Display for EntryChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((va, level)) => write!(
                f,
                "L{} entry for VA {va:#x} (slot {:#x}): {} -> {}",
                level.0,
                self.slot,
                Described(self.old, level),
                Described(self.new, level)
            ),
            None => write!(f, "slot {:#x} of a table not linked yet: {:#x} -> {:#x}", self.slot, self.old, self.new),
        }
    }
}

/// A descriptor in words.
struct Described(u64, Level);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Descriptor(self.0).decode(self.1) {
            Entry::Invalid => write!(f, "invalid"),
            Entry::Table(pa) => write!(f, "table at {pa}"),
            Entry::Leaf { addr, attrs } => {
                let size = ["512G block", "1G block", "2M block", "page"][self.1.0 as usize];
                let perm = match (attrs.writable, attrs.executable) {
                    (true, _) => "RW",
                    (false, true) => "RX",
                    (false, false) => "RO",
                };
                write!(f, "{size} -> {addr} {perm}")
            }
        }
    }
}

/// A sentence, kept in a fixed buffer: violations are recorded with the
/// checker's lock held and interrupts masked.
pub type Sentence = crate::fixed_text::FixedText;

/// Return addresses of the calls that led here, innermost first.
pub const BACKTRACE_DEPTH: usize = 8;

/// One broken rule.
#[derive(Clone, Copy, Debug)]
pub struct Violation {
    pub rule: Rule,
    pub what: Sentence,
    pub entry: Option<EntryChange>,
    /// A frame the rule is about (a page freed, a table linked), if any.
    pub frame: Option<PhysAddr>,
    pub cpu: usize,
    pub task: &'static str,
    pub in_interrupt: bool,
    pub backtrace: [u64; BACKTRACE_DEPTH],
}

impl Violation {
    /// The VA of the entry, if the violation is about one.
    pub fn va(&self) -> Option<u64> {
        self.entry.and_then(|e| e.at).map(|(va, _)| va)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = if self.in_interrupt { "interrupt handler" } else { "task" };
        writeln!(f, "pgtable_check: VIOLATION of rule `{}` on cpu {}, {context} {}:", self.rule, self.cpu, self.task)?;
        writeln!(f, "  {}", self.what.as_str())?;
        if let Some(entry) = &self.entry {
            writeln!(f, "  entry: {entry}")?;
        }
        if let Some(frame) = self.frame {
            writeln!(f, "  frame: {frame}")?;
        }
        for (i, &pc) in self.backtrace.iter().take_while(|&&pc| pc != 0).enumerate() {
            writeln!(f, "  {} {pc:#018x} {}", if i == 0 { "at" } else { "  " }, Symbolized(pc))?;
        }
        Ok(())
    }
}
