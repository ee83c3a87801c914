//! The page-table rules checker's rules (`mm/pgtable_check/shadow.rs`, as
//! the kernel compiles it) driven on the host by random sequences of
//! events, against a model of which violations each event must produce.
//!
//! The world: two CPUs, each running one task of its own; the kernel's
//! root, a level-1 and a level-2 table linked at the start of the vmalloc
//! region; three level-3 table pages (the first two linked at the start,
//! under level-2 entries 0 and 1) and four data frames. The events: descriptor stores
//! into the level-3 tables (invalid, or a page read/write, read-only or
//! device, whatever the table's state), links and unlinks of level-3
//! tables in four level-2 entries (with or without `pgtable::exclusive`
//! held), table allocations, frees of frames and of table pages, `dmb
//! ishst`, `dsb ishst`, `dsb ish`, `isb`, TLBIs of a range (with or
//! without the walks) and of everything, the end of a lazy MMU section, the
//! end of an operation (inside a section or not) and a task switched out.
//! Each event's violations are compared, rule by rule and in order, with
//! the model's.
//!
//! The rules modelled, each as its own sentence says (see the module doc
//! of `pgtable_check`), over this world:
//! - **publish** and its **barrier-order** half: the valid entries a task
//!   stored are followed on its CPU by a `dsb` and then an `isb` before
//!   its section or operation ends; an `isb` that came before that `dsb`
//!   does not count; a switch out with no `dsb` after the last store.
//! - **invalidate** and its **barrier-order** half: a cleared entry, or
//!   a page made read-only or writable again in place, is covered by a TLBI (one that drops walks, for a
//!   table entry) completed by `dsb ish` on the issuing CPU before the
//!   operation ends and before the frame or table it mapped is freed; a
//!   TLBI by the storing CPU before its `dsb` after the store; no TLBI left
//!   open and no `isb` owed after `dsb ish` at an operation's end.
//! - **break-before-make**: a live page replaced by another output
//!   address or memory type; an entry made again, differently, while its
//!   clearing is not invalidated yet; a table entry replaced by another.
//! - **link-order**: a table linked while a store into it (its zeroing
//!   included) is not ordered by `dmb ishst` or `dsb` on the CPU that made
//!   it.
//! - **mismatched-alias**: a page made Device memory over one of the two
//!   data frames the linear map maps (cacheable), changed in place or not.
//! - **table-lifetime**: a store into a page that is no table or into an
//!   unlinked one; a table linked that was never allocated or is linked
//!   already; an unlink without `pgtable::exclusive`; a table page
//!   allocated twice or freed while linked.
//! - **freed-while-mapped**: a data frame freed while a page of a linked
//!   level-3 table maps it (the linear map's own pages aside).
//!
//! - **icache** (exact cases): code written as data, then made
//!   executable, under each combination of CTR_EL0's IDC and DIC, the
//!   Cortex-A72's (both clear) first.
//! - **publish-receiver** (exact cases, not drawn at random): a stack
//!   handed over by one CPU and taken by the other is switched to only
//!   after an `isb` on the taking CPU.
//!
//! Not modelled here (pinned by the kernel's own test images,
//! `tests/pgtable_check.rs`): the linear map's blocks and pages, block
//! splits, interrupt handlers and tasks that move between CPUs, deferred
//! stores still queued, tables below fresh tables, tables claimed empty,
//! and the other checkpoints (walk ended, handed over, task exited).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use lazymmu_props::addr::{PhysAddr, VirtAddr};
use lazymmu_props::arch::observe::Issued;
use lazymmu_props::descriptor::{Attributes, Descriptor, Entry, Level, MemoryType};
use lazymmu_props::pgtable_check::report::{Rule, Violation};
use lazymmu_props::pgtable_check::shadow::{Checker, CodeCaches, Ctx, Here, Kernel, Start};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const PAGE: u64 = 4096;
/// Where RAM starts, and the linear map's offset to it.
const RAM: u64 = 0x4000_0000;
const LINEAR: u64 = 0xffff_0000_0000_0000 - RAM;
const VMALLOC: u64 = 0xffff_8000_0000_0000;
const ROOT: u64 = RAM;
const L1_TABLE: u64 = RAM + PAGE;
const L2_TABLE: u64 = RAM + 2 * PAGE;
/// The level-3 table pages the events use, and the data frames.
const TABLES: [u64; 3] = [RAM + 0x10 * PAGE, RAM + 0x11 * PAGE, RAM + 0x12 * PAGE];
const FRAMES: [u64; 4] = [RAM + 0x20 * PAGE, RAM + 0x21 * PAGE, RAM + 0x22 * PAGE, RAM + 0x23 * PAGE];
/// Level-2 entries the level-3 tables are linked into, and level-3
/// entries stored into.
const SLOTS: u64 = 4;
const ENTRIES: u64 = 4;
const CPUS: usize = 2;
/// The linear map's tables for the first two data frames: they have a
/// cacheable alias (the others, as far as the checker can tell, are not
/// RAM the linear map holds).
const LINEAR_TABLES: [u64; 3] = [RAM + 3 * PAGE, RAM + 4 * PAGE, RAM + 5 * PAGE];
const ALIASED: usize = 2;

/// The tables in memory, as the checker's [`Kernel`] reads them.
struct Memory {
    pages: RefCell<HashMap<u64, [u64; 512]>>,
    exclusive: Cell<bool>,
}

impl Memory {
    fn read(&self, table: u64, index: u64) -> u64 {
        self.pages.borrow().get(&table).map_or(0, |p| p[index as usize])
    }

    fn write(&self, table: u64, index: u64, desc: u64) {
        self.pages.borrow_mut().entry(table).or_insert([0; 512])[index as usize] = desc;
    }
}

impl Kernel for &Memory {
    fn entry(&self, table: PhysAddr, index: u64) -> u64 {
        self.read(table.as_u64(), index)
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> VirtAddr {
        VirtAddr::new(pa.as_u64().wrapping_add(LINEAR))
    }
    fn virt_to_phys(&self, va: VirtAddr) -> PhysAddr {
        PhysAddr::new(va.as_u64().wrapping_sub(LINEAR))
    }
    fn exclusive_held(&self) -> bool {
        self.exclusive.get()
    }
}

/// The VA level-2 entry `slot` translates from.
fn slot_va(slot: u64) -> u64 {
    VMALLOC + slot * Level::L2.entry_size()
}

/// CPU `cpu`, running its own task.
fn on(cpu: usize) -> Here {
    let task = Ctx::Task(0x1000 + cpu);
    Here { cpu, ctx: task, task, name: ["task0", "task1"][cpu], irq: false }
}

#[derive(Clone, Copy, Debug)]
enum Page {
    None,
    Rw(usize),
    Ro(usize),
    Device(usize),
    /// A page mapping `pa`, read-only if `ro`, with the contiguous bit if
    /// `cont` (the exact examples of the contiguous rules; not drawn at
    /// random).
    At {
        pa: u64,
        ro: bool,
        cont: bool,
    },
}

impl Page {
    fn descriptor(self) -> u64 {
        let (frame, attrs) = match self {
            Page::None => return 0,
            Page::Rw(f) => (f, Attributes::KERNEL_RW),
            Page::Ro(f) => (f, Attributes::KERNEL_RO),
            Page::Device(f) => (f, Attributes::DEVICE),
            Page::At { pa, ro, cont } => {
                let attrs = Attributes { contiguous: cont, writable: !ro, ..Attributes::KERNEL_RW };
                return Descriptor::leaf(Level::L3, PhysAddr::new(pa), attrs).0;
            }
        };
        Descriptor::leaf(Level::L3, PhysAddr::new(FRAMES[frame]), attrs).0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Barrier {
    DmbIshst,
    DsbIshst,
    DsbIsh,
    Isb,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    /// Entry `index` of level-3 table page `table` is set to `page`.
    Store {
        cpu: usize,
        table: usize,
        index: u64,
        page: Page,
    },
    /// Level-2 entry `slot` is set to level-3 table `table`.
    Link {
        cpu: usize,
        slot: u64,
        table: usize,
    },
    /// Level-2 entry `slot` is cleared, with `pgtable::exclusive` held or not.
    Unlink {
        cpu: usize,
        slot: u64,
        exclusive: bool,
    },
    /// Table page `table` is allocated and zeroed.
    Alloc {
        cpu: usize,
        table: usize,
    },
    /// A data frame (`table` false) or a table page goes back.
    Free {
        cpu: usize,
        table: bool,
        which: usize,
    },
    Barrier {
        cpu: usize,
        barrier: Barrier,
    },
    /// A TLBI of `pages` pages from entry `index` under level-2 entry `slot`.
    Tlbi {
        cpu: usize,
        slot: u64,
        index: u64,
        pages: u64,
        walks: bool,
    },
    TlbiAll {
        cpu: usize,
    },
    SectionEnded {
        cpu: usize,
    },
    /// An operation (begun just before) returns, in a lazy MMU section or not.
    OperationEnded {
        cpu: usize,
        in_section: bool,
    },
    SwitchingOut {
        cpu: usize,
    },
}

fn event() -> impl Strategy<Value = Event> {
    let cpu = 0..CPUS;
    let page = prop_oneof![
        Just(Page::None),
        (0..FRAMES.len()).prop_map(Page::Rw),
        (0..FRAMES.len()).prop_map(Page::Ro),
        (0..FRAMES.len()).prop_map(Page::Device),
    ];
    let barrier =
        prop_oneof![Just(Barrier::DmbIshst), Just(Barrier::DsbIshst), Just(Barrier::DsbIsh), Just(Barrier::Isb)];
    prop_oneof![
        8 => (cpu.clone(), 0..TABLES.len(), 0..ENTRIES, page)
            .prop_map(|(cpu, table, index, page)| Event::Store { cpu, table, index, page }),
        2 => (cpu.clone(), 0..SLOTS, 0..TABLES.len()).prop_map(|(cpu, slot, table)| Event::Link { cpu, slot, table }),
        1 => (cpu.clone(), 0..SLOTS, any::<bool>())
            .prop_map(|(cpu, slot, exclusive)| Event::Unlink { cpu, slot, exclusive }),
        1 => (cpu.clone(), 0..TABLES.len()).prop_map(|(cpu, table)| Event::Alloc { cpu, table }),
        2 => (cpu.clone(), any::<bool>(), 0..FRAMES.len())
            .prop_map(|(cpu, table, which)| Event::Free { cpu, table, which: which % if table { TABLES.len() } else { FRAMES.len() } }),
        10 => (cpu.clone(), barrier).prop_map(|(cpu, barrier)| Event::Barrier { cpu, barrier }),
        3 => (cpu.clone(), 0..SLOTS, 0..ENTRIES, 1..=ENTRIES, any::<bool>())
            .prop_map(|(cpu, slot, index, pages, walks)| Event::Tlbi { cpu, slot, index, pages, walks }),
        1 => cpu.clone().prop_map(|cpu| Event::TlbiAll { cpu }),
        2 => cpu.clone().prop_map(|cpu| Event::SectionEnded { cpu }),
        3 => (cpu.clone(), any::<bool>()).prop_map(|(cpu, in_section)| Event::OperationEnded { cpu, in_section }),
        1 => cpu.prop_map(|cpu| Event::SwitchingOut { cpu }),
    ]
}

// ---- the model ----------------------------------------------------------

/// A rule broken, and the count its report gives, if it gives one: the
/// valid entries not published, or the entries not invalidated (of the
/// task, or mapping the frame freed).
type Broken = (Rule, Option<u64>);

/// A violation reported, as the model predicts it.
fn broken(v: &Violation) -> Broken {
    let what = v.what.as_str();
    let digits: String = what.chars().skip_while(|c| !c.is_ascii_digit()).take_while(|c| c.is_ascii_digit()).collect();
    let counted = matches!(v.rule, Rule::Publish | Rule::Invalidate | Rule::BarrierOrder | Rule::FreedWhileMapped);
    (v.rule, if counted { digits.parse().ok() } else { None })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    Fresh,
    Linked(u64),
    Unlinked,
}

struct Table {
    place: Place,
    /// CPUs with a store into it that no `dmb ishst` or `dsb` has ordered yet.
    unordered: BTreeSet<usize>,
}

/// The valid entries a task stored and has not published.
struct Unpublished {
    count: u64,
    /// A `dsb` came on its CPU after the last of them.
    dsb_after: bool,
    /// An `isb` came since the first of them (so before that `dsb`).
    isb_seen: bool,
}

/// A change the TLBs may not know of yet.
struct Stale {
    /// What the entry held: what a TLB may still translate by.
    old: u64,
    /// Cleared (else made less or more permissive).
    cleared: bool,
    cpu: usize,
    /// The storing CPU's `dsb`s up to the store.
    dsbs: u64,
    /// CPUs whose TLBIs cover it, done at their next `dsb ish`.
    covered_by: BTreeSet<usize>,
}

#[derive(Default)]
struct Cpu {
    dsbs: u64,
    tlbi_open: bool,
    isb_owed: bool,
    /// Its task's entries not yet published.
    unpublished: Option<Unpublished>,
}

struct Model {
    tables: BTreeMap<u64, Table>,
    /// The level-3 tables' entries, by (table, index), as in memory.
    entries: BTreeMap<(u64, u64), u64>,
    cpus: [Cpu; CPUS],
    /// By (level, VA); each made by the task of its `cpu`.
    stale: BTreeMap<(u8, u64), Stale>,
    /// Is `pgtable::exclusive` held (during an unlink)?
    exclusive: bool,
    /// The rules broken by the event being judged, in order.
    broken: Vec<Broken>,
}

impl Model {
    fn new() -> Model {
        let linked = |va| Table { place: Place::Linked(va), unordered: BTreeSet::new() };
        let mut tables = BTreeMap::new();
        tables.insert(ROOT, linked(0));
        tables.insert(L1_TABLE, linked(0));
        tables.insert(L2_TABLE, linked(VMALLOC));
        tables.insert(TABLES[0], linked(slot_va(0)));
        tables.insert(TABLES[1], linked(slot_va(1)));
        Model {
            tables,
            entries: BTreeMap::new(),
            cpus: Default::default(),
            stale: BTreeMap::new(),
            exclusive: false,
            broken: Vec::new(),
        }
    }

    /// The rules `event` breaks, in the order the checker reports them;
    /// `old` is what the stored entry held, if it stores.
    fn expect(&mut self, event: Event, old: u64) -> Vec<Broken> {
        match event {
            Event::Store { cpu, table, index, page } => {
                self.store(cpu, TABLES[table], index, Level::L3, old, page.descriptor())
            }
            Event::Link { cpu, slot, table } => {
                let new = Descriptor::table(PhysAddr::new(TABLES[table])).0;
                self.store(cpu, L2_TABLE, slot, Level::L2, old, new)
            }
            Event::Unlink { cpu, slot, exclusive } => {
                self.exclusive = exclusive;
                self.store(cpu, L2_TABLE, slot, Level::L2, old, 0);
                self.exclusive = false;
            }
            Event::Alloc { cpu, table } => {
                let pa = TABLES[table];
                if self.tables.contains_key(&pa) {
                    self.broken.push((Rule::TableLifetime, None));
                }
                self.tables.insert(pa, Table { place: Place::Fresh, unordered: BTreeSet::from([cpu]) });
                self.entries.retain(|&(table, _), _| table != pa);
            }
            Event::Free { table, which, .. } => {
                let pa = if table { TABLES[which] } else { FRAMES[which] };
                let linked = |t: &u64| self.tables.get(t).is_some_and(|t| matches!(t.place, Place::Linked(_)));
                let mapped = self
                    .entries
                    .iter()
                    .filter(|&(&(t, _), &desc)| {
                        linked(&t)
                            && matches!(Descriptor(desc).decode(Level::L3), Entry::Leaf { addr, .. } if addr.as_u64() == pa)
                    })
                    .count() as u64;
                if mapped > 0 {
                    self.broken.push((Rule::FreedWhileMapped, Some(mapped)));
                }
                let maps_it = |&(&(level, _), s): &(&(u8, u64), &Stale)| {
                    s.cleared
                        && match Descriptor(s.old).decode(Level(level)) {
                            Entry::Table(t) => t.as_u64() == pa,
                            Entry::Leaf { addr, .. } => addr.as_u64() == pa,
                            Entry::Invalid => false,
                        }
                };
                let mapping = self.stale.iter().filter(maps_it).count() as u64;
                if mapping > 0 {
                    self.broken.push((Rule::Invalidate, Some(mapping)));
                }
                if let Some(t) = self.tables.remove(&pa)
                    && matches!(t.place, Place::Linked(_))
                {
                    self.broken.push((Rule::TableLifetime, None));
                }
            }
            Event::Barrier { cpu, barrier } => self.barrier(cpu, barrier),
            Event::Tlbi { cpu, slot, index, pages, walks } => {
                let start = slot_va(slot) + index * PAGE;
                self.tlbi(cpu, Some((start, start + pages * PAGE)), walks)
            }
            Event::TlbiAll { cpu } => self.tlbi(cpu, None, true),
            Event::SectionEnded { cpu } => self.publish_point(cpu),
            Event::OperationEnded { cpu, in_section } => {
                if !in_section {
                    self.publish_point(cpu);
                }
                let before = self.stale.len();
                self.stale.retain(|_, s| s.cpu != cpu);
                let owed = (before - self.stale.len()) as u64;
                if owed > 0 {
                    self.broken.push((Rule::Invalidate, Some(owed)));
                }
                if std::mem::take(&mut self.cpus[cpu].tlbi_open) {
                    self.broken.push((Rule::Invalidate, None));
                    self.stale.retain(|_, s| !s.covered_by.contains(&cpu));
                }
                if std::mem::take(&mut self.cpus[cpu].isb_owed) {
                    self.broken.push((Rule::BarrierOrder, None));
                }
            }
            Event::SwitchingOut { cpu } => {
                if let Some(u) = &mut self.cpus[cpu].unpublished
                    && !u.dsb_after
                {
                    u.dsb_after = true;
                    self.broken.push((Rule::Publish, Some(u.count)));
                }
            }
        }
        std::mem::take(&mut self.broken)
    }

    fn store(&mut self, cpu: usize, table: u64, index: u64, level: Level, old: u64, new: u64) {
        if level == Level::L3 {
            self.entries.insert((table, index), new);
        }
        let Some(t) = self.tables.get_mut(&table) else {
            self.broken.push((Rule::TableLifetime, None));
            return;
        };
        t.unordered.insert(cpu);
        let va = match t.place {
            Place::Fresh => return,
            Place::Unlinked => {
                self.broken.push((Rule::TableLifetime, None));
                return;
            }
            Place::Linked(base) => base + index * level.entry_size(),
        };
        match (Descriptor(old).decode(level), Descriptor(new).decode(level)) {
            (Entry::Invalid, Entry::Invalid) => {}
            (Entry::Invalid, made) => {
                if let Some(s) = self.stale.get(&(level.0, va))
                    && s.cleared
                {
                    let again = s.old != new;
                    self.stale.remove(&(level.0, va));
                    if again {
                        self.broken.push((Rule::BreakBeforeMake, None));
                    }
                }
                if let Entry::Table(child) = made {
                    self.link(child.as_u64(), va);
                }
            }
            (cleared, Entry::Invalid) => {
                if let Entry::Table(child) = cleared {
                    if let Some(c) = self.tables.get_mut(&child.as_u64()) {
                        c.place = Place::Unlinked;
                    }
                    if !self.exclusive {
                        self.broken.push((Rule::TableLifetime, None));
                    }
                }
                self.make_stale(cpu, level, va, old, true);
            }
            (Entry::Leaf { addr: a, attrs: x }, Entry::Leaf { addr: b, attrs: y }) => {
                if a != b || x.memory != y.memory {
                    self.broken.push((Rule::BreakBeforeMake, None));
                } else if x.writable != y.writable {
                    // Made less or more permissive: stale either way.
                    self.make_stale(cpu, level, va, old, false);
                }
            }
            (Entry::Table(a), Entry::Table(b)) if a == b => {}
            (before, after) => {
                self.broken.push((Rule::BreakBeforeMake, None));
                for (t, place) in [(before, Place::Unlinked), (after, Place::Linked(va))] {
                    if let Entry::Table(t) = t
                        && let Some(t) = self.tables.get_mut(&t.as_u64())
                    {
                        t.place = place;
                    }
                }
            }
        }
        if let Entry::Leaf { addr, attrs } = Descriptor(new).decode(level)
            && attrs.memory != MemoryType::NormalWriteBack
            && FRAMES[..ALIASED].contains(&addr.as_u64())
        {
            self.broken.push((Rule::MismatchedAlias, None));
        }
        if Descriptor(new).is_valid() {
            let u =
                self.cpus[cpu].unpublished.get_or_insert(Unpublished { count: 0, dsb_after: false, isb_seen: false });
            u.count += 1;
            u.dsb_after = false;
        }
    }

    fn link(&mut self, child: u64, va: u64) {
        let Some(t) = self.tables.get_mut(&child) else {
            self.broken.push((Rule::TableLifetime, None));
            return;
        };
        if t.place != Place::Fresh {
            self.broken.push((Rule::TableLifetime, None));
            return;
        }
        if !t.unordered.is_empty() {
            self.broken.push((Rule::LinkOrder, None));
        }
        t.place = Place::Linked(va);
    }

    fn make_stale(&mut self, cpu: usize, level: Level, va: u64, old: u64, cleared: bool) {
        let stale = Stale { old, cleared, cpu, dsbs: self.cpus[cpu].dsbs, covered_by: BTreeSet::new() };
        self.stale.insert((level.0, va), stale);
    }

    fn barrier(&mut self, cpu: usize, barrier: Barrier) {
        let c = &mut self.cpus[cpu];
        if barrier == Barrier::Isb {
            c.isb_owed = false;
            match &mut c.unpublished {
                Some(u) if u.dsb_after => c.unpublished = None,
                Some(u) => u.isb_seen = true,
                None => {}
            }
            return;
        }
        for t in self.tables.values_mut() {
            t.unordered.remove(&cpu);
        }
        if barrier == Barrier::DmbIshst {
            return;
        }
        c.dsbs += 1;
        if let Some(u) = &mut c.unpublished {
            u.dsb_after = true;
        }
        if barrier == Barrier::DsbIsh && std::mem::take(&mut c.tlbi_open) {
            c.isb_owed = true;
            self.stale.retain(|_, s| !s.covered_by.contains(&cpu));
        }
    }

    /// A TLBI of [start, end) (None: everything).
    fn tlbi(&mut self, cpu: usize, range: Option<(u64, u64)>, walks: bool) {
        let mut misordered = false;
        for (&(level, va), s) in &mut self.stale {
            let size = Level(level).entry_size();
            let covered = range.is_none_or(|(start, end)| va < end && start < va + size);
            let walk = matches!(Descriptor(s.old).decode(Level(level)), Entry::Table(_));
            if !covered || (walk && !walks) || s.covered_by.contains(&cpu) {
                continue;
            }
            let visible = self.cpus[s.cpu].dsbs > s.dsbs;
            if !visible && s.cpu != cpu {
                continue;
            }
            misordered |= !visible;
            s.covered_by.insert(cpu);
        }
        self.cpus[cpu].tlbi_open = true;
        if misordered {
            self.broken.push((Rule::BarrierOrder, None));
        }
    }

    fn publish_point(&mut self, cpu: usize) {
        if let Some(u) = self.cpus[cpu].unpublished.take() {
            let rule = if u.dsb_after && u.isb_seen { Rule::BarrierOrder } else { Rule::Publish };
            self.broken.push((rule, Some(u.count)));
        }
    }
}

// ---- the world the checker watches --------------------------------------

struct World<'m> {
    memory: &'m Memory,
    checker: Checker<&'m Memory>,
}

impl<'m> World<'m> {
    /// The tables the kernel would have built: root, level 1 and level 2
    /// at the start of vmalloc, and level-3 tables 0 and 1 under level-2
    /// entries 0 and 1.
    fn memory() -> Memory {
        let memory = Memory { pages: RefCell::new(HashMap::new()), exclusive: Cell::new(false) };
        let table = |pa| Descriptor::table(PhysAddr::new(pa)).0;
        memory.write(ROOT, Level::L0.index(VMALLOC) as u64, table(L1_TABLE));
        memory.write(L1_TABLE, Level::L1.index(VMALLOC) as u64, table(L2_TABLE));
        memory.write(L2_TABLE, 0, table(TABLES[0]));
        memory.write(L2_TABLE, 1, table(TABLES[1]));
        let linear = |pa: u64| pa.wrapping_add(LINEAR);
        let [l1, l2, l3] = LINEAR_TABLES;
        memory.write(ROOT, Level::L0.index(linear(FRAMES[0])) as u64, table(l1));
        memory.write(l1, Level::L1.index(linear(FRAMES[0])) as u64, table(l2));
        memory.write(l2, Level::L2.index(linear(FRAMES[0])) as u64, table(l3));
        for pa in &FRAMES[..ALIASED] {
            let page = Descriptor::leaf(Level::L3, PhysAddr::new(*pa), Attributes::KERNEL_RW).0;
            memory.write(l3, Level::L3.index(linear(*pa)) as u64, page);
        }
        memory
    }

    fn new(memory: &'m Memory) -> World<'m> {
        World::with_caches(memory, A72)
    }

    fn with_caches(memory: &'m Memory, caches: CodeCaches) -> World<'m> {
        let start = Start {
            root: PhysAddr::new(ROOT),
            frames: (PhysAddr::new(RAM), 64),
            heap: (PhysAddr::new(RAM + (64 << 12)), 16 * PAGE),
            bbml2_noabort: false,
            caches,
        };
        World { memory, checker: Checker::new(memory, start) }
    }

    fn slot(&self, table: u64, index: u64) -> u64 {
        table + LINEAR + index * 8
    }

    fn store(&mut self, table: u64, index: u64, new: u64) -> u64 {
        let old = self.memory.read(table, index);
        self.memory.write(table, index, new);
        self.checker.stored(self.slot(table, index), old, new);
        old
    }

    /// Tells the checker of `event`; returns the rules it found broken and
    /// what the stored entry held before, if the event stores.
    fn run(&mut self, event: Event) -> (Vec<Broken>, u64) {
        let cpu = match event {
            Event::Store { cpu, .. }
            | Event::Link { cpu, .. }
            | Event::Unlink { cpu, .. }
            | Event::Alloc { cpu, .. }
            | Event::Free { cpu, .. }
            | Event::Barrier { cpu, .. }
            | Event::Tlbi { cpu, .. }
            | Event::TlbiAll { cpu }
            | Event::SectionEnded { cpu }
            | Event::OperationEnded { cpu, .. }
            | Event::SwitchingOut { cpu } => cpu,
        };
        self.checker.begin(on(cpu));
        let mut old = 0;
        match event {
            Event::Store { table, index, page, .. } => old = self.store(TABLES[table], index, page.descriptor()),
            Event::Link { slot, table, .. } => {
                old = self.store(L2_TABLE, slot, Descriptor::table(PhysAddr::new(TABLES[table])).0)
            }
            Event::Unlink { slot, exclusive, .. } => {
                self.memory.exclusive.set(exclusive);
                old = self.store(L2_TABLE, slot, 0);
                self.memory.exclusive.set(false);
            }
            Event::Alloc { table, .. } => {
                self.memory.pages.borrow_mut().insert(TABLES[table], [0; 512]);
                self.checker.table_allocated(TABLES[table]);
            }
            Event::Free { table, which, .. } => {
                self.checker.frames_freed(if table { TABLES[which] } else { FRAMES[which] }, 1)
            }
            Event::Barrier { barrier, .. } => self.checker.issued(match barrier {
                Barrier::DmbIshst => Issued::DmbIshst,
                Barrier::DsbIshst => Issued::DsbIshst,
                Barrier::DsbIsh => Issued::DsbIsh,
                Barrier::Isb => Issued::Isb,
            }),
            Event::Tlbi { slot, index, pages, walks, .. } => {
                self.checker.issued(Issued::Tlbi { start: slot_va(slot) + index * PAGE, pages, walks })
            }
            Event::TlbiAll { .. } => self.checker.issued(Issued::TlbiAll),
            Event::SectionEnded { .. } => self.checker.publish_point("a lazy MMU section ended"),
            Event::OperationEnded { in_section, .. } => {
                self.checker.op_begin();
                self.checker.op_end(in_section);
            }
            Event::SwitchingOut { .. } => self.checker.switching_out(),
        }
        (self.checker.take_found().iter().map(broken).collect(), old)
    }
}

/// The rules each event of `events` breaks, by the checker and by the model.
fn both(events: &[Event]) -> Vec<(Vec<Broken>, Vec<Broken>)> {
    let memory = World::memory();
    let mut world = World::new(&memory);
    let mut model = Model::new();
    events
        .iter()
        .map(|&event| {
            let (found, old) = world.run(event);
            (found, model.expect(event, old))
        })
        .collect()
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(event(), 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_event_breaks_exactly_the_rules_the_model_says(events in events()) {
        for (i, (found, expected)) in both(&events).into_iter().enumerate() {
            prop_assert_eq!(&found, &expected, "event {} of {}: {:?}", i, events.len(), events[i]);
        }
    }
}

/// The property above is not vacuous: over the sequences it draws (the
/// same strategy, a fixed seed), each modelled rule is broken somewhere,
/// and most events break none.
#[test]
fn the_random_sequences_break_every_modelled_rule() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut by_rule, mut events_seen, mut clean) = (BTreeMap::new(), 0, 0);
    for _ in 0..500 {
        let events = events().new_tree(&mut runner).expect("a sequence").current();
        for (found, _) in both(&events) {
            events_seen += 1;
            clean += usize::from(found.is_empty());
            for (rule, _) in found {
                *by_rule.entry(rule.name()).or_insert(0) += 1;
            }
        }
    }
    // The contiguous, icache and publish-receiver rules are not in the
    // random model: exact examples below.
    let exact_only = [Rule::Contiguous, Rule::Icache, Rule::PublishReceiver];
    for rule in Rule::ALL.into_iter().filter(|r| !exact_only.contains(r)) {
        assert!(by_rule.get(rule.name()).is_some_and(|&n| n >= 20), "{rule} broken too rarely: {by_rule:?}");
    }
    assert!(clean * 2 > events_seen, "only {clean} of {events_seen} events broke nothing: {by_rule:?}");
}

// ---- exact examples -----------------------------------------------------

use Event::*;

const RW: Page = Page::Rw(0);

fn barrier(cpu: usize, barrier: Barrier) -> Event {
    Event::Barrier { cpu, barrier }
}

/// The rules the checker finds in `events`, event by event.
fn found(events: &[Event]) -> Vec<Vec<Rule>> {
    let memory = World::memory();
    let mut world = World::new(&memory);
    events.iter().map(|&e| world.run(e).0.into_iter().map(|(rule, _)| rule).collect()).collect()
}

/// All the rules the checker finds in `events`, in order.
fn found_all(events: &[Event]) -> Vec<Rule> {
    found(events).concat()
}

#[test]
fn a_section_ended_without_dsb_and_isb_breaks_publish() {
    let store = Store { cpu: 0, table: 0, index: 0, page: RW };
    assert_eq!(found_all(&[store, SectionEnded { cpu: 0 }]), [Rule::Publish]);
    assert_eq!(found_all(&[store, barrier(0, Barrier::DsbIshst), SectionEnded { cpu: 0 }]), [Rule::Publish]);
    assert_eq!(
        found_all(&[store, barrier(0, Barrier::DsbIshst), barrier(0, Barrier::Isb), SectionEnded { cpu: 0 }]),
        []
    );
}

#[test]
fn an_isb_before_the_dsb_breaks_barrier_order_and_publishes_nothing() {
    let events = [
        Store { cpu: 0, table: 0, index: 0, page: RW },
        barrier(0, Barrier::Isb),
        barrier(0, Barrier::DsbIshst),
        OperationEnded { cpu: 0, in_section: false },
    ];
    assert_eq!(found_all(&events), [Rule::BarrierOrder]);
}

#[test]
fn another_cpus_dsb_and_isb_publish_nothing() {
    let events = [
        Store { cpu: 0, table: 0, index: 0, page: RW },
        barrier(1, Barrier::DsbIshst),
        barrier(1, Barrier::Isb),
        SectionEnded { cpu: 0 },
    ];
    assert_eq!(found_all(&events), [Rule::Publish]);
}

#[test]
fn a_cleared_entry_needs_a_tlbi_and_dsb_ish_before_the_operation_returns() {
    let publish = [barrier(0, Barrier::DsbIshst), barrier(0, Barrier::Isb)];
    let map = [&[Store { cpu: 0, table: 0, index: 3, page: RW }][..], &publish].concat();
    let unmap = Store { cpu: 0, table: 0, index: 3, page: Page::None };
    let end = OperationEnded { cpu: 0, in_section: false };
    let tlbi = Tlbi { cpu: 0, slot: 0, index: 3, pages: 1, walks: false };
    assert_eq!(found_all(&[&map[..], &[unmap, end]].concat()), [Rule::Invalidate]);
    let flushed =
        [unmap, barrier(0, Barrier::DsbIshst), tlbi, barrier(0, Barrier::DsbIsh), barrier(0, Barrier::Isb), end];
    assert_eq!(found_all(&[&map[..], &flushed].concat()), []);
    // A TLBI of the page before or after does not cover it.
    for index in [2, 4] {
        let missed = Tlbi { cpu: 0, slot: 0, index, pages: 1, walks: false };
        let wrong =
            [unmap, barrier(0, Barrier::DsbIshst), missed, barrier(0, Barrier::DsbIsh), barrier(0, Barrier::Isb), end];
        assert_eq!(found_all(&[&map[..], &wrong].concat()), [Rule::Invalidate], "TLBI of page {index}");
    }
    // Left open, it is both an entry not invalidated and a TLBI not completed.
    let open = [unmap, barrier(0, Barrier::DsbIshst), tlbi, end];
    assert_eq!(found_all(&[&map[..], &open].concat()), [Rule::Invalidate, Rule::Invalidate]);
    let no_isb = [unmap, barrier(0, Barrier::DsbIshst), tlbi, barrier(0, Barrier::DsbIsh), end];
    assert_eq!(found_all(&[&map[..], &no_isb].concat()), [Rule::BarrierOrder]);
}

#[test]
fn a_tlbi_before_the_dsb_that_shows_the_clearing_breaks_barrier_order() {
    let events = [
        Store { cpu: 0, table: 0, index: 0, page: RW },
        barrier(0, Barrier::DsbIshst),
        barrier(0, Barrier::Isb),
        Store { cpu: 0, table: 0, index: 0, page: Page::None },
        TlbiAll { cpu: 0 },
    ];
    assert_eq!(found(&events), [vec![], vec![], vec![], vec![], vec![Rule::BarrierOrder]]);
}

#[test]
fn a_frame_freed_before_its_invalidation_completes_breaks_invalidate() {
    let events = [
        Store { cpu: 0, table: 0, index: 0, page: Page::Rw(2) },
        barrier(0, Barrier::DsbIshst),
        barrier(0, Barrier::Isb),
        Store { cpu: 0, table: 0, index: 0, page: Page::None },
        Free { cpu: 0, table: false, which: 1 },
        Free { cpu: 0, table: false, which: 2 },
        barrier(0, Barrier::DsbIshst),
        TlbiAll { cpu: 0 },
        Free { cpu: 0, table: false, which: 2 },
        barrier(0, Barrier::DsbIsh),
        Free { cpu: 0, table: false, which: 2 },
    ];
    let found = found(&events);
    assert_eq!(found[4..], [vec![], vec![Rule::Invalidate], vec![], vec![], vec![Rule::Invalidate], vec![], vec![]]);
}

#[test]
fn a_live_page_replaced_without_break_before_make_is_reported() {
    let events = [
        Store { cpu: 0, table: 0, index: 0, page: Page::Rw(0) },
        Store { cpu: 0, table: 0, index: 0, page: Page::Ro(0) },
        Store { cpu: 0, table: 0, index: 0, page: Page::Ro(1) },
        Store { cpu: 0, table: 0, index: 0, page: Page::Device(1) },
    ];
    // (Frame 1 is RAM the linear map holds: Device memory over it is a
    // mismatched alias as well.)
    let device = vec![Rule::BreakBeforeMake, Rule::MismatchedAlias];
    assert_eq!(found(&events), [vec![], vec![], vec![Rule::BreakBeforeMake], device]);
}

#[test]
fn a_table_linked_before_its_zeroing_is_ordered_breaks_link_order() {
    let alloc = Alloc { cpu: 0, table: 2 };
    let link = Link { cpu: 0, slot: 2, table: 2 };
    assert_eq!(found_all(&[alloc, link]), [Rule::LinkOrder]);
    assert_eq!(found_all(&[alloc, barrier(1, Barrier::DmbIshst), link]), [Rule::LinkOrder]);
    assert_eq!(found_all(&[alloc, barrier(0, Barrier::DmbIshst), link]), []);
}

/// The rules and counts the checker finds in `events`, event by event.
fn found_counted(events: &[Event]) -> Vec<Vec<Broken>> {
    let memory = World::memory();
    let mut world = World::new(&memory);
    events.iter().map(|&e| world.run(e).0).collect()
}

#[test]
fn a_frame_freed_while_a_live_page_maps_it_breaks_freed_while_mapped() {
    let map = |table, index| Store { cpu: 0, table, index, page: Page::Rw(2) };
    let free = Free { cpu: 0, table: false, which: 2 };
    let published = [barrier(0, Barrier::DsbIshst), barrier(0, Barrier::Isb)];
    // Mapped by one page, then by two (in two linked tables): each counted.
    assert_eq!(found_counted(&[map(0, 0), free])[1], [(Rule::FreedWhileMapped, Some(1))]);
    assert_eq!(found_counted(&[map(0, 0), map(1, 3), free])[2], [(Rule::FreedWhileMapped, Some(2))]);
    // The report names the page and the frame.
    let memory = World::memory();
    let mut world = World::new(&memory);
    for e in [map(0, 1), free] {
        world.run(e);
    }
    world.checker.begin(on(0));
    world.checker.frames_freed(FRAMES[2], 1);
    let found = world.checker.take_found();
    assert_eq!(found.len(), 1);
    let v = &found[0];
    assert_eq!((v.rule, v.frame), (Rule::FreedWhileMapped, Some(PhysAddr::new(FRAMES[2]))));
    assert_eq!(v.entry.and_then(|e| e.at), Some((slot_va(0) + PAGE, Level::L3)));
    assert_eq!(v.entry.map(|e| e.old), Some(Page::Rw(2).descriptor()));
    assert!(
        v.what.as_str().starts_with("a frame was freed while 1 valid entry still mapped it"),
        "{}",
        v.what.as_str()
    );
    // Unmapped and flushed first: nothing.
    let tlbi = Tlbi { cpu: 0, slot: 0, index: 0, pages: 1, walks: false };
    let unmapped = [
        Store { cpu: 0, table: 0, index: 0, page: Page::None },
        barrier(0, Barrier::DsbIshst),
        tlbi,
        barrier(0, Barrier::DsbIsh),
        barrier(0, Barrier::Isb),
        free,
    ];
    assert_eq!(found_all(&[&[map(0, 0)][..], &published, &unmapped].concat()), []);
    // Another frame, or a frame only the linear map maps, goes freely.
    assert_eq!(found_all(&[map(0, 0), Free { cpu: 0, table: false, which: 3 }]), []);
    assert_eq!(found_all(&[Free { cpu: 0, table: false, which: 0 }]), []);
}

#[test]
fn a_page_counts_as_mapping_its_frame_only_while_its_table_is_linked() {
    let free = Free { cpu: 0, table: false, which: 2 };
    let in_fresh = [
        Alloc { cpu: 0, table: 2 },
        barrier(0, Barrier::DmbIshst),
        Store { cpu: 0, table: 2, index: 0, page: Page::Rw(2) },
    ];
    // In a table not linked yet: nothing maps the frame.
    assert_eq!(found_all(&[&in_fresh[..], &[free]].concat()), []);
    // Linked (its store ordered): the page maps it.
    let linked = [&in_fresh[..], &[barrier(0, Barrier::DmbIshst), Link { cpu: 0, slot: 2, table: 2 }]].concat();
    assert_eq!(found_counted(&[&linked[..], &[free]].concat()).last().unwrap(), &[(Rule::FreedWhileMapped, Some(1))]);
    // Unlinked (under exclusive): not any more, though the page is still in it.
    let unlinked = [&linked[..], &[Unlink { cpu: 0, slot: 2, exclusive: true }]].concat();
    assert_eq!(found(&[&unlinked[..], &[free]].concat()).last().unwrap(), &[]);
    // Its page allocated anew (zeroed): not any more either.
    let reused = [Store { cpu: 0, table: 0, index: 0, page: Page::Rw(2) }, Alloc { cpu: 0, table: 0 }, free];
    assert_eq!(found(&reused)[2], []);
}

#[test]
fn tables_are_unlinked_under_exclusive_and_freed_only_once_unlinked_and_invalidated() {
    let unlink = Unlink { cpu: 0, slot: 0, exclusive: true };
    let free = Free { cpu: 0, table: true, which: 0 };
    assert_eq!(found(&[free]), [vec![Rule::TableLifetime]]);
    assert_eq!(found(&[Unlink { cpu: 0, slot: 0, exclusive: false }]), [vec![Rule::TableLifetime]]);
    assert_eq!(found(&[unlink, free]), [vec![], vec![Rule::Invalidate]]);
    // A TLBI of the level-3 entries only leaves the walk through the table cached.
    let leaves = Tlbi { cpu: 0, slot: 0, index: 0, pages: 1, walks: false };
    let walks = Tlbi { cpu: 0, slot: 0, index: 0, pages: 1, walks: true };
    let flushed = |tlbi| [unlink, barrier(0, Barrier::DsbIshst), tlbi, barrier(0, Barrier::DsbIsh), free];
    assert_eq!(found_all(&flushed(leaves)), [Rule::Invalidate]);
    assert_eq!(found_all(&flushed(walks)), []);
    // Stores into it once it is gone are into no table.
    let store = Store { cpu: 0, table: 0, index: 0, page: RW };
    assert_eq!(found_all(&[unlink, store]), [Rule::TableLifetime]);
    assert_eq!(found_all(&[&flushed(walks)[..], &[store]].concat()), [Rule::TableLifetime]);
}

#[test]
fn the_publish_sentence_is_the_one_the_docs_quote() {
    let memory = World::memory();
    let mut world = World::new(&memory);
    world.run(Store { cpu: 0, table: 0, index: 5, page: RW });
    world.checker.begin(on(0));
    world.checker.publish_point("lazy_mmu_mode_disable() left a lazy MMU section");
    let found = world.checker.take_found();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].what.as_str(),
        "lazy_mmu_mode_disable() left a lazy MMU section with 1 valid entry stored and no dsb ishst; isb after them: the walker may not see them yet"
    );
    let entry = found[0].entry.expect("the entry is reported");
    assert_eq!(entry.at, Some((VMALLOC + 5 * PAGE, Level::L3)));
    assert_eq!((entry.old, entry.new), (0, RW.descriptor()));
}

// ---- the lazy purge (shadow/lazy.rs) ------------------------------------

/// Maps entry 3 of level-3 table 0 to frame 2 and publishes it, clears it
/// on `cpu`, tells the checker the clear was a lazy free (vfree, vunmap)
/// and ends the operation; then runs `after`. The rules found in `after`,
/// event by event, and the violations' sentences.
fn after_a_lazy_free(cpu: usize, after: &[Event]) -> (Vec<Vec<Rule>>, Vec<String>) {
    let memory = World::memory();
    let mut world = World::new(&memory);
    let before = [
        Store { cpu, table: 0, index: 3, page: Page::Rw(2) },
        barrier(cpu, Barrier::DsbIshst),
        barrier(cpu, Barrier::Isb),
        Store { cpu, table: 0, index: 3, page: Page::None },
    ];
    for e in before {
        assert_eq!(world.run(e).0, []);
    }
    world.checker.begin(on(cpu));
    world.checker.lazily_freed(slot_va(0) + 3 * PAGE, slot_va(0) + 4 * PAGE);
    assert_eq!(world.checker.awaiting_purge(), 1);
    assert_eq!(world.run(OperationEnded { cpu, in_section: false }).0, [], "the flush is the purge's, not vfree's");
    let mut said = Vec::new();
    let rules = after
        .iter()
        .map(|&e| match e {
            // Stores and frees by hand, to keep the sentences.
            Store { cpu, table, index, page } => {
                world.checker.begin(on(cpu));
                world.store(TABLES[table], index, page.descriptor());
                let found = world.checker.take_found();
                said.extend(found.iter().map(|v| v.what.as_str().to_string()));
                found.iter().map(|v| v.rule).collect()
            }
            Free { cpu, table: false, which } => {
                world.checker.begin(on(cpu));
                world.checker.frames_freed(FRAMES[which], 1);
                let found = world.checker.take_found();
                said.extend(found.iter().map(|v| v.what.as_str().to_string()));
                found.iter().map(|v| v.rule).collect()
            }
            other => world.run(other).0.into_iter().map(|(rule, _)| rule).collect(),
        })
        .collect();
    (rules, said)
}

/// The purge's flush of entry 3, on `cpu`.
fn purge(cpu: usize) -> [Event; 4] {
    [
        barrier(cpu, Barrier::DsbIshst),
        Tlbi { cpu, slot: 0, index: 0, pages: 8, walks: false },
        barrier(cpu, Barrier::DsbIsh),
        barrier(cpu, Barrier::Isb),
    ]
}

#[test]
fn a_lazily_freed_entry_waits_for_its_purge_then_its_frame_may_go() {
    let free = Free { cpu: 0, table: false, which: 2 };
    let (rules, _) = after_a_lazy_free(0, &[&purge(0)[..], &[free]].concat());
    assert_eq!(rules.concat(), []);
}

#[test]
fn another_cpus_purge_covers_a_lazily_freed_entry() {
    // The clearing CPU made no dsb: the entry reached the purging CPU
    // through the purge list's lock, and its dsb ishst is cumulative.
    let free = Free { cpu: 1, table: false, which: 2 };
    let (rules, _) = after_a_lazy_free(0, &[&purge(1)[..], &[free]].concat());
    assert_eq!(rules.concat(), []);
}

#[test]
fn a_lazily_freed_address_mapped_again_before_the_purge_breaks_break_before_make() {
    // Even with the same frame: the purge's flush comes first.
    for page in [Page::Rw(3), Page::Rw(2)] {
        let (rules, said) = after_a_lazy_free(0, &[Store { cpu: 0, table: 0, index: 3, page }]);
        assert_eq!(rules, [vec![Rule::BreakBeforeMake]], "{page:?}");
        assert!(
            said[0].starts_with("an address freed lazily (vfree, vunmap) was mapped again before a purge flushed it")
        );
    }
    let again = Store { cpu: 0, table: 0, index: 3, page: Page::Rw(3) };
    let (rules, _) = after_a_lazy_free(0, &[&purge(0)[..], &[again]].concat());
    assert_eq!(rules.concat(), [], "after the purge the address is free");
}

#[test]
fn a_frame_freed_before_the_purge_of_its_lazy_free_breaks_invalidate() {
    let (rules, said) = after_a_lazy_free(0, &[Free { cpu: 0, table: false, which: 2 }]);
    assert_eq!(rules, [vec![Rule::Invalidate]]);
    assert!(said[0].starts_with("a frame was freed while an area freed lazily (vfree, vunmap) still mapped it"));
    // Another frame is not its business.
    let (rules, _) = after_a_lazy_free(0, &[Free { cpu: 0, table: false, which: 1 }]);
    assert_eq!(rules.concat(), []);
}

// ---- the contiguous bit ------------------------------------------------------

/// A 64 KiB aligned physical run for the contiguous examples.
const RUN_PA: u64 = RAM + 0x40 * PAGE;

/// A read/write page with the contiguous bit, mapping `pa`.
fn cont(pa: u64) -> Page {
    Page::At { pa, ro: false, cont: true }
}

/// Stores the 16 entries of the run at index 0 of table 0 (`page(i)`
/// each), then publishes them.
fn run_stored(page: impl Fn(u64) -> Page) -> Vec<Event> {
    let mut events: Vec<Event> = (0..16).map(|i| Store { cpu: 0, table: 0, index: i, page: page(i) }).collect();
    events.extend([barrier(0, Barrier::DsbIshst), barrier(0, Barrier::Isb)]);
    events
}

#[test]
fn a_contiguous_run_is_sixteen_aligned_entries_that_agree_when_the_operation_returns() {
    let end = OperationEnded { cpu: 0, in_section: false };
    let whole = run_stored(|i| cont(RUN_PA + i * PAGE));
    assert_eq!(found_all(&[&whole[..], &[end]].concat()), []);
    // One entry without the bit: partial.
    let partial = run_stored(|i| if i == 15 { Page::Rw(0) } else { cont(RUN_PA + i * PAGE) });
    assert_eq!(found(&[&partial[..], &[end]].concat()).last(), Some(&vec![Rule::Contiguous]));
    // Output addresses a page off 64 KiB: misaligned.
    let misaligned = run_stored(|i| cont(RUN_PA + (i + 1) * PAGE));
    assert_eq!(found_all(&[&misaligned[..], &[end]].concat()), [Rule::Contiguous]);
    // One entry read-only: the run's attributes differ.
    let mixed = run_stored(|i| Page::At { pa: RUN_PA + i * PAGE, ro: i == 3, cont: true });
    assert_eq!(found_all(&[&mixed[..], &[end]].concat()), [Rule::Contiguous]);
    // Inside a caller's section the check waits for its end.
    assert_eq!(found_all(&[&partial[..], &[OperationEnded { cpu: 0, in_section: true }]].concat()), []);
}

#[test]
fn the_bit_of_a_live_entry_changes_only_after_a_break_without_bbml2() {
    let whole = run_stored(|i| cont(RUN_PA + i * PAGE));
    let plain = |i: u64| Page::At { pa: RUN_PA + i * PAGE, ro: false, cont: false };
    // Without BBML2_NOABORT (this world's CPU), the bit goes in place: a
    // break-before-make violation at once (the run left partial too).
    let in_place = Store { cpu: 0, table: 0, index: 0, page: plain(0) };
    assert_eq!(found(&[&whole[..], &[in_place]].concat()).last(), Some(&vec![Rule::BreakBeforeMake]));
    // Broken first (all 16 invalid, flushed), then made without the bit.
    let flushed = [
        barrier(0, Barrier::DsbIshst),
        Tlbi { cpu: 0, slot: 0, index: 0, pages: 16, walks: false },
        barrier(0, Barrier::DsbIsh),
        barrier(0, Barrier::Isb),
    ];
    let broken: Vec<Event> = (0..16).map(|i| Store { cpu: 0, table: 0, index: i, page: Page::None }).collect();
    let made = run_stored(plain);
    let end = OperationEnded { cpu: 0, in_section: false };
    assert_eq!(found_all(&[&whole[..], &broken, &flushed, &made, &[end]].concat()), []);
}

#[test]
fn a_tlb_flush_of_a_changed_run_covers_all_sixteen_entries() {
    let whole = run_stored(|i| cont(RUN_PA + i * PAGE));
    let cleared: Vec<Event> = (0..16).map(|i| Store { cpu: 0, table: 0, index: i, page: Page::None }).collect();
    let flush = |pages| {
        [
            barrier(0, Barrier::DsbIshst),
            Tlbi { cpu: 0, slot: 0, index: 0, pages, walks: false },
            barrier(0, Barrier::DsbIsh),
            barrier(0, Barrier::Isb),
            OperationEnded { cpu: 0, in_section: false },
        ]
    };
    assert_eq!(found_all(&[&whole[..], &cleared, &flush(16)].concat()), []);
    // One page of the run flushed: the run is reported when the flush
    // completes, and the 15 entries left stale when the operation returns.
    let found = found(&[&whole[..], &cleared, &flush(1)].concat());
    let n = found.len();
    assert_eq!(found[n - 3..], [vec![Rule::Contiguous], vec![], vec![Rule::Invalidate]]);
}

#[test]
fn a_permission_upgrade_needs_a_tlbi_and_dsb_ish_before_the_operation_returns() {
    let publish = [barrier(0, Barrier::DsbIshst), barrier(0, Barrier::Isb)];
    let map = [&[Store { cpu: 0, table: 0, index: 3, page: Page::Ro(0) }][..], &publish].concat();
    let upgrade = Store { cpu: 0, table: 0, index: 3, page: Page::Rw(0) };
    let end = OperationEnded { cpu: 0, in_section: false };
    let tlbi = Tlbi { cpu: 0, slot: 0, index: 3, pages: 1, walks: false };
    assert_eq!(found_all(&[&map[..], &[upgrade], &publish, &[end]].concat()), [Rule::Invalidate]);
    let flushed =
        [upgrade, barrier(0, Barrier::DsbIshst), tlbi, barrier(0, Barrier::DsbIsh), barrier(0, Barrier::Isb), end];
    assert_eq!(found_all(&[&map[..], &flushed].concat()), []);
    // What the report says.
    let memory = World::memory();
    let mut world = World::new(&memory);
    for event in [&map[..], &[upgrade], &publish].concat() {
        world.run(event);
    }
    world.checker.begin(on(0));
    world.checker.op_begin();
    world.checker.op_end(false);
    let found = world.checker.take_found();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].what.as_str(),
        "an operation returned with 1 entry made more permissive and not invalidated in the TLB (TLBI + dsb ish): a TLB may still hold the old entry, and an EL1 permission fault is never fixed up"
    );
    let entry = found[0].entry.expect("the entry is reported");
    assert_eq!((entry.old, entry.new), (Page::Ro(0).descriptor(), Page::Rw(0).descriptor()));
}

#[test]
fn a_not_global_page_made_global_in_place_breaks_break_before_make() {
    let memory = World::memory();
    let mut world = World::new(&memory);
    let leaf = |not_global| {
        let attrs = Attributes { not_global, ..Attributes::KERNEL_RW };
        Descriptor::leaf(Level::L3, PhysAddr::new(FRAMES[2]), attrs).0
    };
    world.checker.begin(on(0));
    let mut rules = Vec::new();
    for new in [leaf(false), leaf(true), leaf(false)] {
        world.store(TABLES[0], 0, new);
        rules.push(world.checker.take_found().iter().map(|v| v.rule).collect::<Vec<_>>());
    }
    // Made; global to not-global is allowed; back is not.
    assert_eq!(rules, [vec![], vec![], vec![Rule::BreakBeforeMake]]);
}

#[test]
fn ram_mapped_as_device_beside_its_cacheable_linear_alias_breaks_mismatched_alias() {
    let store = |index, page| Store { cpu: 0, table: 0, index, page };
    // A frame the linear map holds, as Device memory: made, or changed in place.
    assert_eq!(found(&[store(0, Page::Device(0))]), [vec![Rule::MismatchedAlias]]);
    assert_eq!(
        found(&[store(0, Page::Rw(1)), store(0, Page::Device(1))]),
        [vec![], vec![Rule::BreakBeforeMake, Rule::MismatchedAlias]]
    );
    // One the linear map does not hold (MMIO, as far as the checker can tell), or RAM as Normal memory.
    assert_eq!(found(&[store(0, Page::Device(2)), store(1, Page::Ro(0))]), [vec![], vec![]]);
    let memory = World::memory();
    let mut world = World::new(&memory);
    world.run(store(0, Page::Device(0)));
    world.checker.begin(on(0));
    world.store(TABLES[0], 1, Page::Device(1).descriptor());
    let found = world.checker.take_found();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].frame, Some(PhysAddr::new(FRAMES[1])));
    assert_eq!(
        found[0].what.as_str(),
        format!(
            "RAM at {:#x} was mapped Device while its linear-map alias at {:#x} maps it Normal write-back: a mismatched-attribute alias (Linux's ioremap refuses RAM)",
            FRAMES[1],
            FRAMES[1].wrapping_add(LINEAR)
        )
    );
}

// ---- icache: code written as data, then made executable -----------------

/// CTR_EL0 of a Cortex-A72 (and QEMU's `max`): 64-byte lines, IDC and DIC
/// clear, so code needs both the clean and the invalidation.
const A72: CodeCaches = CodeCaches { d_line: 64, i_line: 64, idc: false, dic: false };

/// What the code events below do, on CPU `cpu`.
#[derive(Clone, Copy, Debug)]
enum Code {
    /// A `ret` written at byte `offset` of data frame 0, through its
    /// linear-map alias.
    Written(usize, u64),
    Op(usize, Issued),
    /// Entry 0 of level-3 table 0 made a read-only executable page of frame 0.
    MadeExecutable(usize),
    /// Data frame 0 goes back to the allocator.
    Freed(usize),
}

/// The rules the checker finds in `events` on a CPU whose CTR_EL0 says `caches`.
fn code_found(caches: CodeCaches, events: &[Code]) -> Vec<Rule> {
    let memory = World::memory();
    let mut world = World::with_caches(&memory, caches);
    let mut rules = Vec::new();
    for &event in events {
        let cpu = match event {
            Code::Written(cpu, _) | Code::Op(cpu, _) | Code::MadeExecutable(cpu) | Code::Freed(cpu) => cpu,
        };
        world.checker.begin(on(cpu));
        match event {
            Code::Written(_, offset) => world.checker.code_written(FRAMES[0] + LINEAR + offset, 4),
            Code::Op(_, what) => world.checker.issued(what),
            Code::MadeExecutable(_) => {
                let rx = Descriptor::leaf(Level::L3, PhysAddr::new(FRAMES[0]), Attributes::KERNEL_RX).0;
                world.store(TABLES[0], 0, rx);
            }
            Code::Freed(_) => world.checker.frames_freed(FRAMES[0], 1),
        }
        rules.extend(world.checker.take_found().iter().map(|v| v.rule));
    }
    rules
}

const CODE: u64 = FRAMES[0] + LINEAR;
const DC: Issued = Issued::DcCvau { va: CODE };
const IC: Issued = Issued::IcIvau { va: CODE };
const DSB_ISH: Issued = Issued::DsbIsh;
const DSB_ISHST: Issued = Issued::DsbIshst;

fn ops(cpu: usize, ops: &[Issued]) -> Vec<Code> {
    ops.iter().map(|&op| Code::Op(cpu, op)).collect()
}

/// `written`, then `between` on CPU 0, then the page made executable.
fn code_case(caches: CodeCaches, between: &[Code]) -> Vec<Rule> {
    code_found(caches, &[&[Code::Written(0, 0)][..], between, &[Code::MadeExecutable(0)]].concat())
}

#[test]
fn on_an_a72_code_is_cleaned_then_invalidated_each_completed_by_dsb_ish_before_it_is_made_executable() {
    // flush_icache_range's sequence (cache_type.rs): clean, dsb ish, invalidate, dsb ish.
    assert_eq!(code_case(A72, &ops(0, &[DC, DSB_ISH, IC, DSB_ISH, Issued::Isb])), []);
    // Nothing at all (the planted skip-icache), and each step short.
    assert_eq!(code_case(A72, &[]), [Rule::Icache]);
    assert_eq!(code_case(A72, &ops(0, &[DC, DSB_ISH])), [Rule::Icache], "not invalidated");
    assert_eq!(code_case(A72, &ops(0, &[IC, DSB_ISH])), [Rule::Icache], "not cleaned");
    assert_eq!(
        code_case(A72, &ops(0, &[DC, DSB_ISHST, IC, DSB_ISH])),
        [Rule::Icache],
        "a dsb ishst completes no clean"
    );
    // The invalidation issued before the clean completed does not count:
    // the instruction side may refill the line from the old bytes.
    assert_eq!(code_case(A72, &ops(0, &[DC, IC, DSB_ISH])), [Rule::Icache]);
    // Another CPU's dsb completes none of CPU 0's maintenance; its own
    // complete sequence covers what CPU 0 wrote (both broadcast).
    let other = [ops(0, &[DC]), ops(1, &[DSB_ISH]), ops(0, &[IC]), ops(1, &[DSB_ISH])].concat();
    assert_eq!(code_case(A72, &other), [Rule::Icache]);
    assert_eq!(code_case(A72, &ops(1, &[DC, DSB_ISH, IC, DSB_ISH])), []);
    // A line elsewhere in the frame cleans nothing of this one.
    let elsewhere = [Issued::DcCvau { va: CODE + 64 }, DSB_ISH, Issued::IcIvau { va: CODE + 64 }, DSB_ISH];
    assert_eq!(code_case(A72, &ops(0, &elsewhere)), [Rule::Icache]);
    // Written again after the maintenance: owed again.
    let again = [ops(0, &[DC, DSB_ISH, IC, DSB_ISH]), vec![Code::Written(0, 4)]].concat();
    assert_eq!(code_case(A72, &again), [Rule::Icache]);
    // A frame freed takes what was written there with it.
    assert_eq!(code_case(A72, &[Code::Freed(0)]), []);
}

#[test]
fn idc_and_dic_leave_out_what_ctr_el0_says_is_not_needed() {
    let idc = CodeCaches { idc: true, ..A72 };
    let dic = CodeCaches { dic: true, ..A72 };
    let both = CodeCaches { idc: true, dic: true, ..A72 };
    // IDC: a dsb on the writing CPU replaces the clean (Linux: dsb ishst);
    // the invalidation is still owed, after it.
    assert_eq!(code_case(idc, &ops(0, &[DSB_ISHST, IC, DSB_ISH])), []);
    assert_eq!(code_case(idc, &ops(0, &[DSB_ISHST])), [Rule::Icache]);
    assert_eq!(code_case(idc, &ops(0, &[IC, DSB_ISH])), [Rule::Icache], "ic ivau before the stores completed");
    assert_eq!(code_case(idc, &ops(1, &[DSB_ISHST, IC, DSB_ISH])), [Rule::Icache], "another CPU's dsb");
    // DIC: the clean alone.
    assert_eq!(code_case(dic, &ops(0, &[DC, DSB_ISH])), []);
    assert_eq!(code_case(dic, &ops(0, &[DC])), [Rule::Icache]);
    // Both: the stores complete on the writing CPU, nothing else.
    assert_eq!(code_case(both, &ops(0, &[DSB_ISHST])), []);
    assert_eq!(code_case(both, &[]), [Rule::Icache]);
}

#[test]
fn code_in_a_table_linked_with_an_executable_page_is_judged_at_the_link() {
    let memory = World::memory();
    let mut world = World::new(&memory);
    world.checker.begin(on(0));
    world.checker.code_written(CODE, 4);
    world.run(Alloc { cpu: 0, table: 2 });
    world.checker.begin(on(0));
    let rx = Descriptor::leaf(Level::L3, PhysAddr::new(FRAMES[0]), Attributes::KERNEL_RX).0;
    world.store(TABLES[2], 5, rx);
    assert!(world.checker.take_found().is_empty(), "not reachable yet");
    let (found, _) = world.run(barrier(0, Barrier::DmbIshst));
    assert_eq!(found, []);
    let (found, _) = world.run(Link { cpu: 0, slot: 2, table: 2 });
    assert_eq!(found, [(Rule::Icache, None)]);
}

#[test]
fn the_icache_sentence_names_the_frame_the_address_written_and_what_is_missing() {
    let memory = World::memory();
    let mut world = World::new(&memory);
    world.checker.begin(on(0));
    world.checker.code_written(CODE + 8, 4);
    for op in [DC, DSB_ISH] {
        world.checker.issued(op);
    }
    let rx = Descriptor::leaf(Level::L3, PhysAddr::new(FRAMES[0]), Attributes::KERNEL_RX).0;
    world.store(TABLES[0], 0, rx);
    let found = world.checker.take_found();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].frame, Some(PhysAddr::new(FRAMES[0])));
    assert_eq!(
        found[0].what.as_str(),
        format!(
            "memory at {:#x} was made executable while the instruction cache lines of what was written to it at {CODE:#x} were not invalidated after the clean (ic ivau, then dsb ish; flush_icache_range): a stale line may still be fetched",
            FRAMES[0]
        )
    );
    let entry = found[0].entry.expect("the entry");
    assert_eq!((entry.old, entry.new), (0, rx));
}

/// The receiving CPU's half of publishing (`shadow/handover.rs`): a stack
/// CPU 0 mapped and handed over, taken by CPU 1, and switched to; then
/// the rules each event asked of, in order.
fn hand_over_stack(between: &[Event]) -> Vec<Rule> {
    const STACK: (u64, u64) = (0xffff_c000_0005_0000, 0xffff_c000_0006_0000);
    let memory = World::memory();
    let mut world = World::new(&memory);
    world.checker.begin(on(0));
    world.checker.mapping_handed_over(STACK.0, STACK.1);
    world.checker.begin(on(1));
    world.checker.mapping_received(STACK.0, STACK.1);
    for &event in between {
        world.run(event);
    }
    world.checker.begin(on(1));
    world.checker.using_received(STACK.0, STACK.1);
    // Switched to once more, with nothing in between: published to CPU 1
    // for good, or reported once.
    world.checker.mapping_received(STACK.0, STACK.1);
    world.checker.using_received(STACK.0, STACK.1);
    // And on the CPU that mapped it, nothing is owed.
    world.checker.begin(on(0));
    world.checker.mapping_received(STACK.0, STACK.1);
    world.checker.using_received(STACK.0, STACK.1);
    world.checker.take_found().iter().map(|v| v.rule).collect()
}

#[test]
fn a_stack_received_from_another_cpu_is_used_only_after_an_isb_there() {
    assert_eq!(hand_over_stack(&[barrier(1, Barrier::Isb)]), []);
    assert_eq!(hand_over_stack(&[]), [Rule::PublishReceiver]);
    // Another CPU's isb, or a dsb on the receiving one, publishes nothing to it.
    assert_eq!(hand_over_stack(&[barrier(0, Barrier::Isb), barrier(1, Barrier::DsbIsh)]), [Rule::PublishReceiver]);
}
