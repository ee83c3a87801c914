//! The checker's shadow state, and the rules applied to each event.
//!
//! Everything here runs under the checker's lock with interrupts masked,
//! on the CPU the event happened on. The rules know the kernel only
//! through what they are told: the events, where each happened ([`Here`],
//! given to `Checker::begin`), and what [`Kernel`] answers. So the host
//! compiles this file as it is and drives it against a model
//! (`tests/host/props/tests/checker.rs`).

mod icache;
mod perms;

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::report::{BACKTRACE_DEPTH, EntryChange, Rule, Sentence, Violation};
use crate::arch::observe::Issued;
use crate::mm::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mm::descriptor::{Attributes, Descriptor, Entry, Level};
use crate::mm::layout::in_linear_map;
use crate::percpu::MAX_CPUS;

pub use icache::CodeCaches;

/// The contiguous-bit rules, on this file's shadow state.
#[path = "contiguous.rs"]
mod contiguous;
mod handover;
mod lazy;
mod mapped;

/// What the rules ask of the kernel they watch, besides the events: the
/// kernel answers from its live tables and lock (`pgtable_check`'s
/// `Live`), the host's tests from a model.
pub trait Kernel {
    /// The descriptor at `index` of the page-table page at `table`, as it
    /// is in memory now.
    fn entry(&self, table: PhysAddr, index: u64) -> u64;
    /// Where the kernel reaches the RAM at `pa` (the linear map).
    fn phys_to_virt(&self, pa: PhysAddr) -> VirtAddr;
    /// The RAM behind a linear-map address.
    fn virt_to_phys(&self, va: VirtAddr) -> PhysAddr;
    /// Is `pgtable::exclusive` held, so that no walk is in progress?
    fn exclusive_held(&self) -> bool;
}

/// What the checker learns of the kernel once, when it starts.
pub struct Start {
    /// The root table: every table reachable from it is learnt.
    pub root: PhysAddr,
    /// The frames the allocator hands out: the first, and how many.
    pub frames: (PhysAddr, usize),
    /// The heap's memory: where it starts, and its size in bytes.
    pub heap: (PhysAddr, u64),
    /// May a live block be split into a table in place?
    pub bbml2_noabort: bool,
    /// What code written as data needs before it runs (CTR_EL0).
    pub caches: CodeCaches,
}

/// Who made a change: a task (by its control block's address), or the
/// interrupt handler running on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ctx {
    Task(usize),
    Irq(usize),
}

/// Where an event happened.
#[derive(Clone, Copy)]
pub struct Here {
    pub cpu: usize,
    pub ctx: Ctx,
    /// The task running on the CPU (interrupted, if `ctx` is an interrupt).
    pub task: Ctx,
    pub name: &'static str,
    pub irq: bool,
}

impl Here {
    const NOWHERE: Here = Here { cpu: 0, ctx: Ctx::Irq(0), task: Ctx::Irq(0), name: "", irq: false };
}

#[derive(Default)]
struct CpuShadow {
    /// Bumped by every `dmb ishst` and `dsb`: stores before the bump are
    /// ordered before stores after it.
    order_gen: u64,
    /// Bumped by every `dsb`: stores before it are visible to the walker.
    dsb_gen: u64,
    /// TLBIs issued since the last `dsb ish`, and by whom.
    tlbi_open: Option<Ctx>,
    /// A `dsb ish` completed TLB maintenance and no `isb` has followed.
    isb_owed: Option<Ctx>,
    /// Stale entries (level, VA) this CPU's TLBIs cover, done at its next `dsb ish`.
    invalidating: Vec<(usize, u64)>,
    /// The ranges [start, end) those TLBIs invalidate (None: everything).
    flushed: Vec<Option<(u64, u64)>>,
}

/// Valid entries stored by a context and not yet published.
#[derive(Clone, Copy)]
struct Unpublished {
    first: EntryChange,
    count: u64,
    /// Some(cpu): the latest is not covered by a dsb yet (on that CPU).
    /// None: a dsb covered them all; an isb is still owed.
    dsb_on: Option<usize>,
    /// An isb came while a dsb was still owed (so it did not count).
    isb_early: bool,
}

#[derive(Default)]
struct CtxShadow {
    unpublished: Option<Unpublished>,
    /// Contiguous runs (level-3 table, first index) this context stored
    /// into, checked whole when its operation ends (`contiguous.rs`).
    runs_touched: Vec<(u64, u64)>,
    /// Stale entries this context made and no TLBI has finished with.
    stale: u64,
    /// Operations in progress (nested); the outermost end is a checkpoint.
    ops: u32,
}

/// Where a page-table page stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Allocated, not reachable by any walker yet.
    Fresh,
    /// Linked: its entries translate from `va`, at `level`.
    Linked { level: Level, va: u64 },
    /// Was linked, and was taken away (its parent entry cleared).
    Unlinked { level: Level, va: u64 },
}

struct TableShadow {
    place: Place,
    /// Per CPU: its `order_gen` at its last store into this table (the
    /// zeroing included); ordered once that CPU's `order_gen` has moved on.
    unordered: [Option<u64>; MAX_CPUS],
    /// Stores into it waiting in some task's deferred-writes queue.
    queued: u32,
}

impl TableShadow {
    fn new(place: Place) -> TableShadow {
        TableShadow { place, unordered: [None; MAX_CPUS], queued: 0 }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StaleKind {
    /// A valid entry was cleared: the TLB may still translate through it.
    Cleared,
    /// A leaf lost write or execute permission: the TLB may still allow it.
    Downgraded,
    /// A leaf gained write or execute permission: the TLB may still refuse
    /// it (`perms.rs`).
    Upgraded,
}

/// A change the TLBs do not know about yet.
struct Stale {
    change: EntryChange,
    kind: StaleKind,
    /// The CPU that stored it, and its `dsb_gen` then.
    cpu: usize,
    dsb_gen: u64,
    creator: Ctx,
    /// The CPUs (a bit each) whose TLBIs cover it; done at the next
    /// `dsb ish` of any of them (two CPUs may flush one range at once).
    invalidating_on: u64,
    /// Cleared by a lazy free: the purge's to invalidate, not its creator's
    /// (see `shadow/lazy.rs`).
    lazy: bool,
}

/// Translations per frame: stale ones (a frame may not be freed while a
/// TLB might still map it), or live leaves (`shadow/mapped.rs`).
struct FrameCounts {
    base: u64,
    counts: Vec<u16>,
}

impl FrameCounts {
    fn add(&mut self, pa: u64, bytes: u64, up: bool) {
        let mut at = pa;
        while at < pa + bytes {
            if let Some(n) =
                at.checked_sub(self.base).map(|off| (off / PAGE_SIZE) as usize).and_then(|i| self.counts.get_mut(i))
            {
                *n = if up { n.saturating_add(1) } else { n.saturating_sub(1) };
            }
            at += PAGE_SIZE;
        }
    }

    fn get(&self, pa: u64) -> u16 {
        pa.checked_sub(self.base).and_then(|off| self.counts.get((off / PAGE_SIZE) as usize)).copied().unwrap_or(0)
    }
}

pub struct Checker<K: Kernel> {
    kernel: K,
    here: Here,
    cpus: [CpuShadow; MAX_CPUS],
    contexts: BTreeMap<Ctx, CtxShadow>,
    tables: BTreeMap<u64, TableShadow>,
    /// Per level, by the first VA the entry translates.
    stale: [BTreeMap<u64, Stale>; 4],
    frames: FrameCounts,
    /// Live leaves per frame, outside the linear map (`shadow/mapped.rs`).
    mapped: FrameCounts,
    /// The heap's frames [start, end): the kernel touches them at any time.
    heap: (u64, u64),
    bbml2_noabort: bool,
    caches: CodeCaches,
    /// Granules written as instructions and not yet maintained (`icache.rs`).
    code: icache::Code,
    /// Mappings handed to other CPUs (`shadow/handover.rs`).
    handovers: handover::Handovers,
    found: Vec<Violation>,
}

fn sentence(args: fmt::Arguments) -> Sentence {
    Sentence::new(args)
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "y" } else { "ies" }
}

impl<K: Kernel> Checker<K> {
    /// A checker that knows every table reachable from `start.root`.
    pub fn new(kernel: K, start: Start) -> Checker<K> {
        let (base, frames) = start.frames;
        let (heap_pa, heap_bytes) = start.heap;
        let mut checker = Checker {
            kernel,
            here: Here::NOWHERE,
            cpus: Default::default(),
            contexts: BTreeMap::new(),
            tables: BTreeMap::new(),
            stale: Default::default(),
            frames: FrameCounts { base: base.as_u64(), counts: vec![0; frames] },
            mapped: FrameCounts { base: base.as_u64(), counts: vec![0; frames] },
            heap: (heap_pa.as_u64(), heap_pa.as_u64() + heap_bytes),
            bbml2_noabort: start.bbml2_noabort,
            caches: start.caches,
            code: icache::Code::new(),
            handovers: handover::Handovers::new(),
            found: Vec::new(),
        };
        let root = start.root.as_u64();
        checker.tables.insert(root, TableShadow::new(Place::Fresh));
        checker.place_subtree(root, Level::L0, 0xffff_0000_0000_0000);
        checker
    }

    /// Notes where and by whom the event about to be checked happened.
    pub fn begin(&mut self, here: Here) {
        self.here = here;
    }

    /// The violations found since the last call. Their call chains are
    /// left empty: the kernel's glue, which knows the stack, fills them.
    pub fn take_found(&mut self) -> Vec<Violation> {
        core::mem::take(&mut self.found)
    }

    fn violation(&mut self, rule: Rule, what: Sentence, entry: Option<EntryChange>, frame: Option<u64>) {
        self.found.push(Violation {
            rule,
            what,
            entry,
            frame: frame.map(PhysAddr::new),
            cpu: self.here.cpu,
            task: self.here.name,
            in_interrupt: self.here.irq,
            backtrace: [0; BACKTRACE_DEPTH],
        });
    }

    fn entry_at(&self, table: u64, index: u64) -> u64 {
        self.kernel.entry(PhysAddr::new(table), index)
    }

    fn ctx(&mut self, ctx: Ctx) -> &mut CtxShadow {
        self.contexts.entry(ctx).or_default()
    }

    // ---- tables ----------------------------------------------------------

    pub fn table_allocated(&mut self, pa: u64) {
        let cpu = self.here.cpu;
        if self.tables.contains_key(&pa) {
            self.violation(
                Rule::TableLifetime,
                sentence(format_args!("a page still in use as a page table was allocated as a new one")),
                None,
                Some(pa),
            );
        }
        let mut table = TableShadow::new(Place::Fresh);
        table.unordered[cpu] = Some(self.cpus[cpu].order_gen);
        let was = self.tables.insert(pa, table);
        if was.is_some_and(|t| matches!(t.place, Place::Linked { .. })) {
            self.recount_mapped();
        }
    }

    /// The level-3 table at `pa` is said to be empty (every entry zero) and
    /// will be unlinked and freed on that word.
    pub fn claimed_empty(&mut self, pa: u64) {
        let mut held = (0..512).map(|i| (i, self.entry_at(pa, i))).filter(|&(_, e)| e != 0);
        if let Some((first, old)) = held.next() {
            let held = 1 + held.count() as u64;
            let slot = self.kernel.phys_to_virt(PhysAddr::new(pa)).as_u64() + first * 8;
            let at = match self.tables.get(&pa).map(|t| t.place) {
                Some(Place::Linked { level, va }) => Some((va + first * level.entry_size(), level)),
                _ => None,
            };
            self.violation(
                Rule::TableLifetime,
                sentence(format_args!(
                    "a level-3 table still holding {held} entr{} was taken as empty (its caller said it had cleared them) and is unlinked and freed",
                    plural(held)
                )),
                Some(EntryChange { slot, at, old, new: old }),
                Some(pa),
            );
        }
    }

    pub fn frames_freed(&mut self, pa: u64, count: u64) {
        self.code_freed(pa, count * PAGE_SIZE);
        for at in (0..count).map(|i| pa + i * PAGE_SIZE) {
            self.freed_while_mapped(at);
            self.count_table(at, false);
            let stale = self.frames.get(at);
            if stale > 0 && !self.freed_before_purge(at) {
                self.violation(
                    Rule::Invalidate,
                    sentence(format_args!(
                        "a frame was freed while {stale} cleared entr{} that mapped it (or a walk through it) had not been invalidated in the TLB",
                        plural(stale as u64)
                    )),
                    self.first_stale_mapping(at),
                    Some(at),
                );
            }
            let Some(table) = self.tables.remove(&at) else { continue };
            if let Place::Linked { .. } = table.place {
                self.violation(
                    Rule::TableLifetime,
                    sentence(format_args!("a page table was freed while still linked into the tables")),
                    None,
                    Some(at),
                );
            }
            if table.queued > 0 {
                self.violation(
                    Rule::TableLifetime,
                    sentence(format_args!(
                        "a page table was freed with {} store{} still queued into it (they will land in a freed page)",
                        table.queued,
                        if table.queued == 1 { "" } else { "s" }
                    )),
                    None,
                    Some(at),
                );
            }
        }
    }

    /// A stale entry whose old descriptor maps (or is the table at) `pa`.
    fn first_stale_mapping(&self, pa: u64) -> Option<EntryChange> {
        for (level, map) in self.stale.iter().enumerate() {
            for rec in map.values() {
                let size = Level(level as u8).entry_size();
                let hit = match Descriptor(rec.change.old).decode(Level(level as u8)) {
                    Entry::Table(t) => t.as_u64() == pa,
                    Entry::Leaf { addr, .. } => (addr.as_u64()..addr.as_u64() + size).contains(&pa),
                    Entry::Invalid => false,
                };
                if hit {
                    return Some(rec.change);
                }
            }
        }
        None
    }

    pub fn queued(&mut self, slot: u64, queued: bool) {
        let table = self.kernel.virt_to_phys(VirtAddr::new(slot)).as_u64() & !(PAGE_SIZE - 1);
        if let Some(t) = self.tables.get_mut(&table) {
            t.queued = if queued { t.queued + 1 } else { t.queued.saturating_sub(1) };
        }
    }

    /// Marks `table` (at `level`, translating from `va`) and the tables
    /// below it that were not reachable yet as linked.
    fn place_subtree(&mut self, table: u64, level: Level, va: u64) {
        let Some(t) = self.tables.get_mut(&table) else { return };
        let counted = matches!(t.place, Place::Linked { .. });
        t.place = Place::Linked { level, va };
        if !counted {
            self.count_table(table, true);
        }
        let Some(next) = level.next() else { return };
        for i in 0..512 {
            if let Entry::Table(child) = Descriptor(self.entry_at(table, i)).decode(level) {
                let child = child.as_u64();
                let fresh = self.tables.get(&child).is_none_or(|c| c.place == Place::Fresh);
                if fresh {
                    self.tables.entry(child).or_insert_with(|| TableShadow::new(Place::Fresh));
                    self.place_subtree(child, next, va + i * level.entry_size());
                }
            }
        }
    }

    /// The first table at or below `table` (not reachable yet) with a store
    /// no barrier has ordered: (table, CPU).
    fn unordered_below(&self, table: u64, level: Level) -> Option<(u64, usize)> {
        let t = self.tables.get(&table)?;
        if t.place != Place::Fresh {
            return None;
        }
        for (cpu, last) in t.unordered.iter().enumerate() {
            if *last == Some(self.cpus[cpu].order_gen) {
                return Some((table, cpu));
            }
        }
        let next = level.next()?;
        (0..512).find_map(|i| match Descriptor(self.entry_at(table, i)).decode(level) {
            Entry::Table(child) => self.unordered_below(child.as_u64(), next),
            _ => None,
        })
    }

    // ---- stores ----------------------------------------------------------

    pub fn stored(&mut self, slot: u64, old: u64, new: u64) {
        let cpu = self.here.cpu;
        let table = self.kernel.virt_to_phys(VirtAddr::new(slot)).as_u64() & !(PAGE_SIZE - 1);
        let index = (slot & (PAGE_SIZE - 1)) / 8;
        let order_gen = self.cpus[cpu].order_gen;
        let Some(t) = self.tables.get_mut(&table) else {
            let change = EntryChange { slot, at: None, old, new };
            self.violation(
                Rule::TableLifetime,
                sentence(format_args!(
                    "a descriptor was stored into a page that is not a live page table (never one, or freed)"
                )),
                Some(change),
                Some(table),
            );
            return;
        };
        t.unordered[cpu] = Some(order_gen);
        let (level, base) = match t.place {
            // Not reachable yet: only the order of its stores matters,
            // checked when it is linked.
            Place::Fresh => return,
            Place::Unlinked { level, va } => {
                let change = EntryChange { slot, at: Some((va + index * level.entry_size(), level)), old, new };
                self.violation(
                    Rule::TableLifetime,
                    sentence(format_args!("a descriptor was stored into a table that had been taken away (unlinked)")),
                    Some(change),
                    Some(table),
                );
                return;
            }
            Place::Linked { level, va } => (level, va),
        };
        let va = base.wrapping_add(index * level.entry_size());
        let change = EntryChange { slot, at: Some((va, level)), old, new };
        let (old_e, new_e) = (Descriptor(old).decode(level), Descriptor(new).decode(level));
        self.count_leaf(old, level, va, false);
        self.count_leaf(new, level, va, true);
        match (old_e, new_e) {
            (Entry::Invalid, Entry::Invalid) => {}
            (Entry::Invalid, _) => self.made(change, level, new_e),
            (_, Entry::Invalid) => self.cleared(change, level, old_e),
            (Entry::Leaf { addr: a, attrs: x }, Entry::Leaf { addr: b, attrs: y }) => {
                if a != b || x.memory != y.memory {
                    self.violation(
                        Rule::BreakBeforeMake,
                        sentence(format_args!("a live mapping was replaced by one with another output address or memory type without break-before-make (invalid, TLBI, dsb ish first)")),
                        Some(change),
                        None,
                    );
                } else if x.contiguous != y.contiguous {
                    self.contiguous_bit_changed(change, level);
                } else {
                    self.leaf_changed(change, level, x, y);
                }
            }
            (Entry::Leaf { addr, attrs }, Entry::Table(child)) => {
                self.split(change, level, addr, attrs, child.as_u64())
            }
            (Entry::Table(a), Entry::Table(b)) if a == b => {}
            _ => {
                self.violation(
                    Rule::BreakBeforeMake,
                    sentence(format_args!(
                        "a live entry was replaced by a different valid one without break-before-make"
                    )),
                    Some(change),
                    None,
                );
                // Keep the shadow true to the tables: what was linked is not.
                if let Entry::Table(old_table) = old_e {
                    self.count_table(old_table.as_u64(), false);
                }
                if let Entry::Table(old_table) = old_e
                    && let Some(t) = self.tables.get_mut(&old_table.as_u64())
                {
                    t.place = Place::Unlinked { level: level.next().expect("above level 3"), va };
                }
                if let Entry::Table(new_table) = new_e {
                    self.place_subtree(new_table.as_u64(), level.next().expect("above level 3"), va);
                }
            }
        }
        self.note_run(level, table, index, old, new);
        if let Entry::Leaf { addr, attrs } = new_e {
            self.check_alias(change, level, addr, attrs);
            let was_executable = matches!(old_e, Entry::Leaf { addr: a, attrs: x } if a == addr && x.executable);
            if attrs.executable && !was_executable {
                self.made_executable(change, level, addr);
            }
        }
        if Descriptor(new).is_valid() {
            let ctx = self.here.ctx;
            let shadow = self.ctx(ctx);
            match &mut shadow.unpublished {
                Some(u) => {
                    u.count += 1;
                    u.dsb_on = Some(cpu);
                }
                None => {
                    shadow.unpublished =
                        Some(Unpublished { first: change, count: 1, dsb_on: Some(cpu), isb_early: false })
                }
            }
        }
    }

    /// An invalid entry became valid.
    fn made(&mut self, change: EntryChange, level: Level, new: Entry) {
        let (va, _) = change.at.expect("a live table");
        self.reused_before_purge(change, level);
        if let Some(rec) = self.stale[level.0 as usize].get(&va)
            && rec.kind == StaleKind::Cleared
        {
            let same = rec.change.old == change.new;
            let rec = self.stale[level.0 as usize].remove(&va).expect("just found");
            self.forget(&rec, level);
            if !same {
                self.violation(
                    Rule::BreakBeforeMake,
                    sentence(format_args!(
                        "an entry was made again before the TLB invalidation of its break had completed (the TLB may still hold {:#x})",
                        rec.change.old
                    )),
                    Some(change),
                    None,
                );
            }
        }
        if let Entry::Table(child) = new {
            self.link(change, level, child.as_u64());
        }
    }

    /// `child` was linked below the entry `change` (at `level`).
    fn link(&mut self, change: EntryChange, level: Level, child: u64) -> bool {
        let (va, _) = change.at.expect("a live table");
        let child_level = level.next().expect("tables are linked above level 3");
        let Some(place) = self.tables.get(&child).map(|t| t.place) else {
            self.violation(
                Rule::TableLifetime,
                sentence(format_args!("a page that is not an allocated page table was linked as one")),
                Some(change),
                Some(child),
            );
            return false;
        };
        if place != Place::Fresh {
            self.violation(
                Rule::TableLifetime,
                sentence(format_args!("a table already linked (or taken away) was linked again")),
                Some(change),
                Some(child),
            );
            return false;
        }
        let ordered = match self.unordered_below(child, child_level) {
            Some((table, cpu)) => {
                self.violation(
                    Rule::LinkOrder,
                    sentence(format_args!(
                        "a table was linked before the stores into table {table:#x} (its zeroing or entries, on cpu {cpu}) were ordered by dmb ishst or dsb: a walker may see the link and old contents"
                    )),
                    Some(change),
                    Some(table),
                );
                false
            }
            None => true,
        };
        self.place_subtree(child, child_level, va);
        self.linked_code(child, child_level, va);
        ordered
    }

    /// A live block was replaced by a table.
    fn split(&mut self, change: EntryChange, level: Level, pa: PhysAddr, attrs: Attributes, child: u64) {
        if !self.bbml2_noabort {
            self.violation(
                Rule::BreakBeforeMake,
                sentence(format_args!(
                    "a live block was replaced by a table on a CPU without BBML2_NOABORT (FEAT_BBM level 2 alone may still raise a TLB conflict abort)"
                )),
                Some(change),
                None,
            );
        }
        let next = level.next().expect("blocks are above level 3");
        if self.link(change, level, child) && !self.maps_same(child, next, pa, attrs) {
            self.violation(
                Rule::BreakBeforeMake,
                sentence(format_args!(
                    "a live block was replaced by a table that does not map the same memory with the same attributes"
                )),
                Some(change),
                Some(child),
            );
        }
    }

    /// A valid entry was cleared.
    fn cleared(&mut self, change: EntryChange, level: Level, old: Entry) {
        let (va, _) = change.at.expect("a live table");
        let in_linear = in_linear_map(VirtAddr::new(va));
        if in_linear {
            let pa = self.kernel.virt_to_phys(VirtAddr::new(va)).as_u64();
            let what = if level < Level::L3 {
                Some(
                    "a live linear-map block was broken: the linear map holds the page tables, the heap and every task's control block, which any CPU may touch meanwhile (Linux never breaks a live kernel block)",
                )
            } else if self.tables.contains_key(&pa) {
                Some("the linear-map page of a live page table was unmapped: the kernel reaches its tables through it")
            } else if (self.heap.0..self.heap.1).contains(&pa) {
                Some("the linear-map page of the kernel heap was unmapped: any CPU may touch the heap at any time")
            } else {
                None
            };
            if let Some(what) = what {
                self.violation(Rule::BreakBeforeMake, sentence(format_args!("{what}")), Some(change), None);
            }
        }
        if let Entry::Table(child) = old {
            let child = child.as_u64();
            self.count_table(child, false);
            if let Some(t) = self.tables.get_mut(&child) {
                t.place = Place::Unlinked { level: level.next().expect("above level 3"), va };
            }
            if !self.kernel.exclusive_held() {
                self.violation(
                    Rule::TableLifetime,
                    sentence(format_args!(
                        "a table was unlinked while walks may be in progress (without pgtable::exclusive)"
                    )),
                    Some(change),
                    Some(child),
                );
            }
        }
        self.add_stale(change, level, StaleKind::Cleared);
    }

    fn add_stale(&mut self, change: EntryChange, level: Level, kind: StaleKind) {
        let (va, _) = change.at.expect("a live table");
        let cpu = self.here.cpu;
        if let Some(prev) = self.stale[level.0 as usize].remove(&va) {
            self.forget(&prev, level);
        }
        if kind == StaleKind::Cleared {
            self.count_frames(change.old, level, true);
        }
        let creator = self.here.ctx;
        self.ctx(creator).stale += 1;
        let rec =
            Stale { change, kind, cpu, dsb_gen: self.cpus[cpu].dsb_gen, creator, invalidating_on: 0, lazy: false };
        self.stale[level.0 as usize].insert(va, rec);
    }

    /// Undoes what a stale entry counted.
    fn forget(&mut self, rec: &Stale, level: Level) {
        if rec.kind == StaleKind::Cleared {
            self.count_frames(rec.change.old, level, false);
        }
        if !rec.lazy
            && let Some(shadow) = self.contexts.get_mut(&rec.creator)
        {
            shadow.stale = shadow.stale.saturating_sub(1);
        }
    }

    fn count_frames(&mut self, old: u64, level: Level, up: bool) {
        match Descriptor(old).decode(level) {
            Entry::Table(t) => self.frames.add(t.as_u64(), PAGE_SIZE, up),
            Entry::Leaf { addr, .. } => self.frames.add(addr.as_u64(), level.entry_size(), up),
            Entry::Invalid => {}
        }
    }

    // ---- barriers and TLB maintenance -------------------------------------

    pub fn issued(&mut self, what: Issued) {
        let cpu = self.here.cpu;
        match what {
            Issued::DmbIshst => self.cpus[cpu].order_gen += 1,
            Issued::DsbIshst | Issued::DsbIsh => {
                self.cpus[cpu].order_gen += 1;
                self.cpus[cpu].dsb_gen += 1;
                self.code_dsb(what == Issued::DsbIsh);
                for shadow in self.contexts.values_mut() {
                    if let Some(u) = &mut shadow.unpublished
                        && u.dsb_on == Some(cpu)
                    {
                        u.dsb_on = None;
                    }
                }
                if what == Issued::DsbIsh
                    && let Some(by) = self.cpus[cpu].tlbi_open.take()
                {
                    self.complete_tlbis(cpu);
                    self.cpus[cpu].isb_owed = Some(by);
                }
            }
            Issued::Isb => {
                for ctx in [self.here.task, Ctx::Irq(cpu)] {
                    if let Some(shadow) = self.contexts.get_mut(&ctx)
                        && let Some(u) = &mut shadow.unpublished
                    {
                        match u.dsb_on {
                            None => shadow.unpublished = None,
                            Some(c) if c == cpu => u.isb_early = true,
                            Some(_) => {}
                        }
                    }
                }
                self.cpus[cpu].isb_owed = None;
                self.context_synchronized(cpu);
            }
            Issued::Tlbi { start, pages, walks } => self.tlbi(Some((start, pages)), walks),
            Issued::TlbiAll => self.tlbi(None, true),
            Issued::DcCvau { .. } | Issued::IcIvau { .. } => self.cache_maintenance(what),
        }
    }

    /// A TLBI of [start, start + pages) (None: everything): marks the stale
    /// entries it covers, done at this CPU's next `dsb ish`.
    fn tlbi(&mut self, range: Option<(u64, u64)>, walks: bool) {
        let cpu = self.here.cpu;
        let mut too_early: Option<EntryChange> = None;
        for level in 0..4 {
            let size = Level(level as u8).entry_size();
            let keys: Vec<u64> = match range {
                None => self.stale[level].keys().copied().collect(),
                Some((start, pages)) => {
                    let last = start.saturating_add((pages << 12).saturating_sub(1));
                    self.stale[level].range(start & !(size - 1)..=last).map(|(&k, _)| k).collect()
                }
            };
            for key in keys {
                let rec = self.stale[level].get_mut(&key).expect("listed above");
                let is_walk = matches!(Descriptor(rec.change.old).decode(Level(level as u8)), Entry::Table(_));
                if (is_walk && !walks) || rec.invalidating_on & (1 << cpu) != 0 {
                    continue;
                }
                if self.cpus[rec.cpu].dsb_gen == rec.dsb_gen {
                    // Not visible to walkers yet. The storing CPU's own
                    // TLBI is then misordered; another CPU's (a reclaim's
                    // full flush, say) is simply too early to count, but
                    // for a lazily freed entry: it came to the purging
                    // CPU through the purge list's lock, and that CPU's
                    // `dsb ishst` is cumulative (it orders what it has
                    // observed, the clear included), as Linux relies on.
                    if rec.cpu != cpu {
                        if !rec.lazy {
                            continue;
                        }
                    } else {
                        too_early.get_or_insert(rec.change);
                    }
                }
                rec.invalidating_on |= 1 << cpu;
                self.cpus[cpu].invalidating.push((level, key));
            }
        }
        self.cpus[cpu].tlbi_open = Some(self.here.ctx);
        self.cpus[cpu].flushed.push(range.map(|(start, pages)| (start, start.saturating_add(pages << 12))));
        if let Some(change) = too_early {
            self.violation(
                Rule::BarrierOrder,
                sentence(format_args!(
                    "a TLBI was issued before the dsb ishst that makes the changed entry visible: the walker may refill the TLB from the old entry"
                )),
                Some(change),
                None,
            );
        }
    }

    fn complete_tlbis(&mut self, cpu: usize) {
        self.check_flushed_runs(cpu);
        for (level, key) in core::mem::take(&mut self.cpus[cpu].invalidating) {
            if self.stale[level].get(&key).is_some_and(|r| r.invalidating_on & (1 << cpu) != 0) {
                let rec = self.stale[level].remove(&key).expect("just found");
                self.forget(&rec, Level(level as u8));
            }
        }
    }

    // ---- checkpoints -------------------------------------------------------

    /// Everything the current context stored must be published by now.
    pub fn publish_point(&mut self, why: &'static str) {
        let ctx = self.here.ctx;
        let Some(u) = self.contexts.get_mut(&ctx).and_then(|s| s.unpublished.take()) else { return };
        let n = u.count;
        let (rule, what) = match (u.dsb_on, u.isb_early) {
            (Some(_), _) => (
                Rule::Publish,
                sentence(format_args!(
                    "{why} with {n} valid entr{} stored and no dsb ishst; isb after them: the walker may not see them yet",
                    plural(n)
                )),
            ),
            (None, true) => (
                Rule::BarrierOrder,
                sentence(format_args!(
                    "{why} with {n} valid entr{}: the isb came before the dsb ishst, so nothing synchronized this CPU after they became visible",
                    plural(n)
                )),
            ),
            (None, false) => (
                Rule::Publish,
                sentence(format_args!(
                    "{why} with {n} valid entr{} made visible (dsb) but no isb after: instructions already fetched may still use the old translation",
                    plural(n)
                )),
            ),
        };
        self.violation(rule, what, Some(u.first), None);
    }

    pub fn op_begin(&mut self) {
        let ctx = self.here.ctx;
        self.ctx(ctx).ops += 1;
    }

    pub fn op_end(&mut self, in_section: bool) {
        let ctx = self.here.ctx;
        let shadow = self.ctx(ctx);
        shadow.ops = shadow.ops.saturating_sub(1);
        if shadow.ops == 0 {
            self.settled("an operation returned", !in_section);
            if !in_section {
                self.check_runs();
            }
        }
    }

    /// Nothing the current context changed may still be owed (its valid
    /// entries only if `publish`: a lazy section may still owe them).
    fn settled(&mut self, why: &'static str, publish: bool) {
        let (cpu, ctx) = (self.here.cpu, self.here.ctx);
        if publish {
            self.publish_point(why);
        }
        let stale = self.contexts.get(&ctx).map_or(0, |s| s.stale);
        if stale > 0 {
            let first = self.stale.iter().flat_map(|m| m.values()).find(|r| r.creator == ctx && !r.lazy);
            let what = match first.map(|r| r.kind) {
                Some(StaleKind::Upgraded) => Self::upgrade_not_invalidated(why, stale),
                _ => sentence(format_args!(
                    "{why} with {stale} entr{} cleared or made less permissive and not invalidated in the TLB (TLBI + dsb ish): CPUs may go on using the old translation",
                    plural(stale)
                )),
            };
            let first = first.map(|r| r.change);
            self.violation(Rule::Invalidate, what, first, None);
            self.drop_stale_of(ctx);
        }
        if self.cpus[cpu].tlbi_open == Some(ctx) {
            self.violation(
                Rule::Invalidate,
                sentence(format_args!("{why} with a TLBI not completed by dsb ish")),
                None,
                None,
            );
            self.cpus[cpu].tlbi_open = None;
            self.complete_tlbis(cpu);
        }
        if self.cpus[cpu].isb_owed == Some(ctx) {
            self.violation(
                Rule::BarrierOrder,
                sentence(format_args!("{why} with TLB maintenance completed (dsb ish) but no isb after it")),
                None,
                None,
            );
            self.cpus[cpu].isb_owed = None;
        }
    }

    fn drop_stale_of(&mut self, ctx: Ctx) {
        for level in 0..4 {
            let keys: Vec<u64> =
                self.stale[level].iter().filter(|(_, r)| r.creator == ctx && !r.lazy).map(|(&k, _)| k).collect();
            for key in keys {
                let rec = self.stale[level].remove(&key).expect("listed above");
                self.forget(&rec, Level(level as u8));
            }
        }
    }

    /// A checkpoint between operations, at a task's or a handler's end.
    pub fn quiescent(&mut self, queued: usize, ends: bool) {
        let ctx = self.here.ctx;
        // (No entry is made for a context the checker has not met: an
        // interrupt handler may end while the heap is full.)
        if let Some(shadow) = self.contexts.get_mut(&ctx) {
            shadow.ops = 0;
        }
        self.settled(if ends { "a task or interrupt handler ended" } else { "the task finished its work" }, true);
        self.check_queued(queued, "stores are still queued at the end of the work");
        if ends {
            self.contexts.remove(&ctx);
        }
    }

    fn check_queued(&mut self, queued: usize, why: &str) {
        if queued > 0 {
            self.violation(
                Rule::Publish,
                sentence(format_args!("{why}: {queued} deferred store{} not made", if queued == 1 { "" } else { "s" })),
                None,
                None,
            );
        }
    }

    pub fn walk_ended(&mut self, queued: usize) {
        if queued > 0 {
            self.violation(
                Rule::TableLifetime,
                sentence(format_args!(
                    "a walk guard was dropped with {queued} deferred store{} still queued: the tables they go into may be taken away and freed before they are made",
                    if queued == 1 { "" } else { "s" }
                )),
                None,
                None,
            );
        }
    }

    pub fn handed_over(&mut self, queued: usize) {
        self.publish_point("a mapping was handed to another task (which may run on another CPU at once)");
        self.check_queued(queued, "a mapping was handed to another task");
    }

    pub fn switching_out(&mut self) {
        let (cpu, ctx) = (self.here.cpu, self.here.ctx);
        let Some(u) = self.contexts.get_mut(&ctx).and_then(|s| s.unpublished.as_mut()) else { return };
        if u.dsb_on == Some(cpu) {
            u.dsb_on = None;
            let (first, n) = (u.first, u.count);
            self.violation(
                Rule::Publish,
                sentence(format_args!(
                    "the task was switched out with {n} valid entr{} stored since the last dsb: the switch must make them visible (dsb ish) before another task, or this one on another CPU, runs",
                    plural(n)
                )),
                Some(first),
                None,
            );
        }
    }

    /// Does `table` (at `level`) map [pa, pa + 512 entries) with `attrs`, as
    /// leaves or through tables below it?
    fn maps_same(&self, table: u64, level: Level, pa: PhysAddr, attrs: Attributes) -> bool {
        let size = level.entry_size();
        (0..512u64).all(|i| {
            let at = pa.add(i * size);
            match Descriptor(self.entry_at(table, i)).decode(level) {
                Entry::Leaf { addr, attrs: a } => addr == at && a == attrs,
                Entry::Table(child) => level.next().is_some_and(|next| self.maps_same(child.as_u64(), next, at, attrs)),
                Entry::Invalid => false,
            }
        })
    }
}
