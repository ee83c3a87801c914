//! The kernel's mapping engine (`mm/engine.rs`) on tables in host memory,
//! against a model of what is mapped.
//!
//! Random sequences of the operations every mapper is made of (map a page
//! list, map a contiguous range with blocks, unmap with every address
//! mapped, clear with holes allowed, change the permissions of what
//! exists, split a block), with an allocation failure injected at a random
//! point of each call. After every call:
//! - the error, if any, is exactly the one the model predicts (the first
//!   mapped address, the first hole, the block that would be split, out of
//!   memory), and the tables are then exactly as before, with no frame
//!   leaked;
//! - every leaf of the tables is exactly the model's (level, address,
//!   output, permissions), read by a full walk of the tables;
//! - each store was a run inside one table, the entries written are the
//!   leaves the model changed, every table allocated was linked (the plan
//!   counted each once), and a whole-call mapping wrote its leaves inside
//!   one lazy section.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use lazymmu_props::addr::{PhysAddr, VirtAddr};
use lazymmu_props::descriptor::{Attributes, Descriptor, Entry, Level};
use lazymmu_props::engine::{
    self, ApplyError, Contiguous, LeafSizes, Linked, MapError, Pages, Sections, TableRun, Tables,
};
use lazymmu_props::walk::{Slot, TableMemory};
use proptest::prelude::*;

const PAGE: u64 = 4096;
const BLOCK_2M: u64 = 2 << 20;
/// A contiguous run of 16 pages.
const CONT: u64 = 16 * PAGE;
const BLOCK_1G: u64 = 1 << 30;

/// Windows of the kernel half the operations land in: 3 GiB from a 1 GiB
/// boundary (so 1 GiB blocks fit), and the last 1 GiB of the address
/// space (ranges that end at 2^64).
const WINDOWS: [(u64, u64); 2] = [(0xffff_8000_4000_0000, 3 * BLOCK_1G), (0xffff_ffff_c000_0000, BLOCK_1G)];

/// Page-table pages in host memory at made-up physical addresses, with
/// what the engine did to them.
struct HostTables {
    pages: RefCell<HashMap<u64, Box<[u64; 512]>>>,
    next: Cell<u64>,
    /// Allocations left before one fails (None: never).
    allocations_left: Cell<Option<usize>>,
    allocated: Cell<usize>,
    freed: Cell<usize>,
    linked: Cell<usize>,
    /// Entries stored, and stores made outside any lazy section.
    stored: Cell<u64>,
    stored_outside: Cell<u64>,
    sections: Rc<Cell<u32>>,
    sections_entered: Cell<u32>,
}

/// An open lazy section of [`HostTables`].
struct Section(Rc<Cell<u32>>);

impl Drop for Section {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl HostTables {
    fn new() -> (HostTables, PhysAddr) {
        let t = HostTables {
            pages: RefCell::new(HashMap::new()),
            next: Cell::new(0x8000_0000),
            allocations_left: Cell::new(None),
            allocated: Cell::new(0),
            freed: Cell::new(0),
            linked: Cell::new(0),
            stored: Cell::new(0),
            stored_outside: Cell::new(0),
            sections: Rc::new(Cell::new(0)),
            sections_entered: Cell::new(0),
        };
        let root = t.alloc_table().unwrap();
        (t, root)
    }

    fn write(&self, table: PhysAddr, index: usize, desc: Descriptor) {
        self.pages.borrow_mut().get_mut(&table.as_u64()).expect("a live table")[index] = desc.0;
    }

    /// The tables' contents, to compare before and after a failed call.
    fn snapshot(&self) -> BTreeMap<u64, Vec<u64>> {
        self.pages.borrow().iter().map(|(&pa, t)| (pa, t.to_vec())).collect()
    }

    /// Every valid leaf below `root`: va -> (level, output, attributes).
    fn leaves(&self, root: PhysAddr) -> BTreeMap<u64, (Level, u64, Attributes)> {
        let mut out = BTreeMap::new();
        self.collect(root, Level::L0, 0xffff_0000_0000_0000, &mut out);
        out
    }

    fn collect(&self, table: PhysAddr, level: Level, base: u64, out: &mut BTreeMap<u64, (Level, u64, Attributes)>) {
        for i in 0..512u64 {
            let va = base | (i << level.shift());
            match self.read(table, i as usize).decode(level) {
                Entry::Invalid => {}
                Entry::Leaf { addr, attrs } => _ = out.insert(va, (level, addr.as_u64(), attrs)),
                Entry::Table(next) => self.collect(next, level.next().unwrap(), va, out),
            }
        }
    }

    /// The empty tables below `table` (at `level`, from `base`), as
    /// (first address, level).
    fn empty_tables(&self, table: PhysAddr, level: Level, base: u64, out: &mut Vec<(u64, Level)>) {
        for i in 0..512u64 {
            let va = base | (i << level.shift());
            if let Entry::Table(next) = self.read(table, i as usize).decode(level) {
                let next_level = level.next().unwrap();
                if (0..512).all(|j| self.read(next, j) == Descriptor::INVALID) {
                    out.push((va, next_level));
                }
                self.empty_tables(next, next_level, va, out);
            }
        }
    }

    /// Takes the empty tables under the entry at `slot` away (a mapping's
    /// block goes there): what the kernel's reclaim does before it plans
    /// again.
    fn take_away(&self, slot: Slot) {
        let Entry::Table(child) = slot.entry(self) else { return };
        let level = slot.level.next().unwrap();
        for i in 0..512u64 {
            self.take_away(Slot::new(child, level, slot.va.add(i * level.entry_size())));
        }
        assert!((0..512).all(|i| self.read(child, i) == Descriptor::INVALID), "an empty table");
        self.write(slot.table, slot.index(), Descriptor::INVALID);
        self.pages.borrow_mut().remove(&child.as_u64());
    }
}

impl TableMemory for HostTables {
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        Descriptor(self.pages.borrow()[&table.as_u64()][index])
    }
}

impl Tables for HostTables {
    type Section = Section;

    fn lazy_section(&self) -> Section {
        self.sections.set(self.sections.get() + 1);
        self.sections_entered.set(self.sections_entered.get() + 1);
        Section(self.sections.clone())
    }

    unsafe fn write_run(&self, run: TableRun, new: impl Fn(usize) -> Option<Descriptor> + Copy) -> usize {
        assert!(run.len >= 1 && run.index + run.len <= 512, "a run inside one table: {run:?}");
        assert_eq!(run.index, run.level.index(run.va.as_u64()), "the run's first entry translates its va");
        let mut written = 0;
        for i in 0..run.len {
            if let Some(desc) = new(i) {
                self.write(run.table, run.index + i, desc);
                written += 1;
            }
        }
        self.stored.set(self.stored.get() + written as u64);
        if self.sections.get() == 0 {
            self.stored_outside.set(self.stored_outside.get() + written as u64);
        }
        written
    }

    unsafe fn link(&self, slot: Slot, table: PhysAddr) -> Linked {
        match slot.entry(self) {
            Entry::Table(existing) => Linked::Theirs(existing),
            Entry::Leaf { .. } => Linked::Block,
            Entry::Invalid => {
                self.write(slot.table, slot.index(), Descriptor::table(table));
                self.linked.set(self.linked.get() + 1);
                Linked::Ours
            }
        }
    }

    unsafe fn replace_block(&self, slot: Slot, table: PhysAddr) {
        assert!(matches!(slot.entry(self), Entry::Leaf { .. }), "a block is replaced");
        self.write(slot.table, slot.index(), Descriptor::table(table));
    }

    fn sync(&self) {}

    fn claimed_empty(&self, table: PhysAddr) {
        assert!((0..512).all(|i| self.read(table, i) == Descriptor::INVALID), "a table claimed empty is");
    }

    fn alloc_table(&self) -> Option<PhysAddr> {
        if let Some(left) = self.allocations_left.get() {
            if left == 0 {
                return None;
            }
            self.allocations_left.set(Some(left - 1));
        }
        let pa = self.next.get();
        self.next.set(pa + PAGE);
        self.pages.borrow_mut().insert(pa, Box::new([0; 512]));
        self.allocated.set(self.allocated.get() + 1);
        Some(PhysAddr::new(pa))
    }

    fn free_table(&self, table: PhysAddr) {
        let page = self.pages.borrow_mut().remove(&table.as_u64()).expect("a table of ours");
        assert!(page.iter().all(|&e| e == 0), "a table freed unused is empty");
        self.freed.set(self.freed.get() + 1);
    }
}

/// What is mapped, by the model: leaves by address.
#[derive(Clone, Default, Debug)]
struct Model {
    leaves: BTreeMap<u64, (Level, u64, Attributes)>,
}

impl Model {
    /// The leaves overlapping [va, va + size), in address order.
    fn overlapping(&self, va: u64, size: u64) -> Vec<(u64, (Level, u64, Attributes))> {
        let last = va + (size - 1);
        let from = va & !(BLOCK_1G - 1);
        self.leaves
            .range(from..=last)
            .filter(|(at, (level, ..))| **at + (level.entry_size() - 1) >= va)
            .map(|(&at, &leaf)| (at, leaf))
            .collect()
    }

    /// The error mapping [va, va + size) must give: the first address of
    /// it already mapped.
    fn map_refusal(&self, va: u64, size: u64) -> Option<MapError> {
        self.overlapping(va, size).first().map(|&(at, _)| MapError::AlreadyMapped(VirtAddr::new(at.max(va))))
    }

    /// The error clearing [va, va + size) must give: the first hole (if
    /// every address must be mapped) or block sticking out, in address order.
    fn clear_refusal(&self, va: u64, size: u64, mapped: bool) -> Option<MapError> {
        let mut at = va;
        for (start, (level, ..)) in self.overlapping(va, size) {
            if mapped && start.max(va) > at {
                return Some(MapError::NotMapped(VirtAddr::new(at)));
            }
            let end = start.wrapping_add(level.entry_size());
            if start < va || end.wrapping_sub(1) > va + (size - 1) {
                return Some(MapError::SplitsBlock { va: VirtAddr::new(start), level });
            }
            // A page of a contiguous run at either end of the range: the
            // run must lie wholly inside.
            let attrs = self.leaves[&start].2;
            let run = start & !(CONT - 1);
            let cut = (start == va && start != run) || (end == va.wrapping_add(size) && end % CONT != 0);
            if level == Level::L3 && attrs.contiguous && cut {
                return Some(MapError::SplitsContiguousRun(VirtAddr::new(run)));
            }
            at = end;
        }
        (mapped && at != va.wrapping_add(size)).then(|| MapError::NotMapped(VirtAddr::new(at)))
    }

    /// The first block overlapping [va, va + size), as a page walk finds it.
    fn block_in_the_way(&self, va: u64, size: u64) -> Option<MapError> {
        self.overlapping(va, size).into_iter().find(|(_, (level, ..))| *level != Level::L3).map(|(at, (level, ..))| {
            // The walk meets it at the first 2 MiB piece of the range inside it.
            MapError::BlockInTheWay { va: VirtAddr::new(at.max(va)), level }
        })
    }
}

/// The leaves the model expects for a contiguous range: the largest that
/// fits at each step, its own arithmetic (a contiguous run of 16 pages
/// where the run fits, each page with the bit), as (va, level, pa,
/// contiguous).
fn contiguous_leaves(va: u64, pa: u64, size: u64, sizes: LeafSizes) -> Vec<(u64, Level, u64, bool)> {
    let mut out = Vec::new();
    let mut done = 0;
    while done < size {
        let (v, p, left) = (va + done, pa + done, size - done);
        let fits = |b: u64| v % b == 0 && p % b == 0 && left >= b;
        let blocks = sizes == LeafSizes::Blocks;
        if blocks && fits(BLOCK_1G) {
            out.push((v, Level::L1, p, false));
            done += BLOCK_1G;
        } else if blocks && fits(BLOCK_2M) {
            out.push((v, Level::L2, p, false));
            done += BLOCK_2M;
        } else if sizes != LeafSizes::PagesOnly && fits(CONT) {
            out.extend((0..16).map(|i| (v + i * PAGE, Level::L3, p + i * PAGE, true)));
            done += CONT;
        } else {
            out.push((v, Level::L3, p, false));
            done += PAGE;
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Map `pages` pages of frames from `frame` (shuffled by a stride) at
    /// page `page` of window `window`.
    MapPages { window: usize, page: u64, pages: u64, frame: u64 },
    /// Map a contiguous range with the leaf sizes `sizes` allows.
    MapContiguous { window: usize, offset: u64, size: u64, pa: u64, sizes: LeafSizes },
    /// Unmap a range, every address of which must be mapped.
    Unmap { window: usize, offset: u64, size: u64 },
    /// Clear a range, holes allowed.
    Clear { window: usize, offset: u64, size: u64 },
    /// Make every page that exists in a range read-only (apply by table).
    Protect { window: usize, offset: u64, size: u64 },
    /// Split the `nth` block (if any) one level down.
    Split { nth: usize },
    /// Take the empty tables of a range away (after clearing it, claiming
    /// its level-3 entries zero, if `cleared`).
    Reclaim { window: usize, offset: u64, size: u64, cleared: bool },
}

/// An offset or size in a window: page, 2 MiB or 1 GiB granular, so that
/// blocks and their edges come up often.
fn extent(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..1024).prop_map(|p| p * PAGE),
        2 => (0u64..4, 0u64..3).prop_map(|(b, p)| b * BLOCK_2M + p * PAGE),
        1 => (0u64..3).prop_map(|g| g * BLOCK_1G),
        1 => (0u64..2, 0u64..2).prop_map(|(g, b)| g * BLOCK_1G + b * BLOCK_2M),
    ]
    .prop_map(move |x| x.min(max))
}

fn range() -> impl Strategy<Value = (usize, u64, u64)> {
    (0..WINDOWS.len(), extent(3 * BLOCK_1G), extent(3 * BLOCK_1G)).prop_map(|(window, offset, size)| {
        let len = WINDOWS[window].1;
        let offset = offset.min(len - PAGE);
        let size = size.clamp(PAGE, len - offset);
        (window, offset, size)
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..WINDOWS.len(), 0u64..2048, 1u64..700, 0u64..(1 << 20)).prop_map(|(window, page, pages, frame)| {
            let page = page.min(WINDOWS[window].1 / PAGE - 1);
            let pages = pages.min(WINDOWS[window].1 / PAGE - page);
            Op::MapPages { window, page, pages, frame }
        }),
        3 => (range(), 0u64..8, 0u64..5, 0usize..3, 0u64..16).prop_map(|((window, offset, size), g, skew, sizes, odd)| {
            // The physical address as aligned as the virtual one, or (one
            // time in five) a page, 64 KiB or 2 MiB off, so that blocks and
            // contiguous runs fit or not.
            let pa = g * BLOCK_1G + (WINDOWS[window].0 + offset) % BLOCK_1G + [0, 0, PAGE, CONT, BLOCK_2M][skew as usize];
            let sizes = [LeafSizes::PagesOnly, LeafSizes::ContPtes, LeafSizes::Blocks][sizes];
            // In pages, at most 8 MiB: a test of the walk, not of patience.
            let pages_only = sizes != LeafSizes::Blocks || skew == 2;
            let size = if pages_only { size.min(4 * BLOCK_2M) } else { size };
            // Sizes and offsets a few pages off 64 KiB too, so that runs
            // start and end inside the range.
            let size = if size > odd * PAGE { size - odd * PAGE } else { size };
            Op::MapContiguous { window, offset, size, pa, sizes }
        }),
        2 => range().prop_map(|(window, offset, size)| Op::Unmap { window, offset, size }),
        2 => range().prop_map(|(window, offset, size)| Op::Clear { window, offset, size }),
        1 => range().prop_map(|(window, offset, size)| Op::Protect { window, offset, size }),
        1 => (0usize..8).prop_map(|nth| Op::Split { nth }),
        2 => (range(), any::<bool>()).prop_map(|((window, offset, size), cleared)| Op::Reclaim { window, offset, size, cleared }),
    ]
}

/// Checks after a call that failed: nothing changed, nothing leaked.
fn unchanged(t: &HostTables, before: &BTreeMap<u64, Vec<u64>>, allocated: usize, freed: usize) {
    assert_eq!(&t.snapshot(), before, "a refused call changes nothing");
    assert_eq!(t.allocated.get() - allocated, t.freed.get() - freed, "every table it took went back");
}

/// Maps with the engine as the kernel does: plan, allocate the tables,
/// take away empty tables where blocks go (and plan again), then map.
fn map(t: &HostTables, root: PhysAddr, va: u64, size: u64, leaves: impl engine::Leaves) -> Result<(), MapError> {
    let va = VirtAddr::new(va);
    let plan = engine::plan_map(t, root, va, size, leaves)?;
    // Allocated before anything changes, the tables taken away included.
    let mut pool = engine::Pool::alloc(t, plan.tables)?;
    if plan.reclaim {
        for run in engine::leaf_runs(va, size, leaves).filter(|r| r.level < Level::L3) {
            for i in 0..run.count as u64 {
                let at = run.va.add(i * run.level.entry_size());
                let deepest = lazymmu_props::walk::walk(t, root, at);
                if deepest.level > run.level {
                    let mut slot = Slot::new(root, Level::L0, at);
                    while slot.level < run.level {
                        let Entry::Table(next) = slot.entry(t) else { unreachable!() };
                        slot = Slot::new(next, slot.level.next().unwrap(), at);
                    }
                    t.take_away(slot);
                }
            }
        }
        let again = engine::plan_map(t, root, va, size, leaves).unwrap();
        assert!(!again.reclaim && again.tables <= pool.left(), "the pool counted the blocks' paths: {again:?}");
    }
    let linked = t.linked.get();
    let (entered, stored, outside) = (t.sections_entered.get(), t.stored.get(), t.stored_outside.get());
    // SAFETY: host memory.
    let (allocated, freed) = (t.allocated.get(), t.freed.get());
    let applied = unsafe { engine::map(t, root, va, size, leaves, &mut pool, Sections::WholeCall) }?;
    assert_eq!(t.allocated.get(), allocated, "no allocation once the pool is made");
    if !plan.reclaim {
        assert_eq!(t.linked.get() - linked, plan.tables, "the plan counted every table it linked, once");
        assert_eq!(t.freed.get(), freed, "none left over");
    }
    assert_eq!(applied.tables_allocated, t.linked.get() - linked);
    assert_eq!(t.sections_entered.get() - entered, 1, "one section for the whole call");
    assert_eq!(t.stored_outside.get(), outside, "every store inside it");
    assert_eq!(t.stored.get() - stored, applied.slots, "one store per leaf");
    assert_eq!(applied.slots, engine::leaf_runs(va, size, leaves).map(|r| r.count as u64).sum::<u64>());
    Ok(())
}

fn run_op(t: &HostTables, root: PhysAddr, model: &mut Model, op: Op) {
    let before = t.snapshot();
    let (allocated, freed, stored) = (t.allocated.get(), t.freed.get(), t.stored.get());
    match op {
        Op::MapPages { window, page, pages, frame } => {
            let va = WINDOWS[window].0 + page * PAGE;
            let size = pages * PAGE;
            let frames: Vec<PhysAddr> =
                (0..pages).map(|i| PhysAddr::new(((frame + i * 7919) % (1 << 20)) * PAGE)).collect();
            let got = map(t, root, va, size, Pages { frames: &frames, attrs: Attributes::KERNEL_RW });
            match model.map_refusal(va, size) {
                Some(e) => {
                    assert_eq!(got, Err(e), "{op:?}");
                    unchanged(t, &before, allocated, freed);
                }
                None if got == Err(MapError::OutOfMemory) => unchanged(t, &before, allocated, freed),
                None => {
                    assert_eq!(got, Ok(()), "{op:?}");
                    for (i, pa) in frames.iter().enumerate() {
                        model.leaves.insert(va + i as u64 * PAGE, (Level::L3, pa.as_u64(), Attributes::KERNEL_RW));
                    }
                }
            }
        }
        Op::MapContiguous { window, offset, size, pa, sizes } => {
            let va = WINDOWS[window].0 + offset;
            let got = map(t, root, va, size, Contiguous { pa: PhysAddr::new(pa), sizes, attrs: Attributes::KERNEL_RO });
            match model.map_refusal(va, size) {
                Some(e) => {
                    assert_eq!(got, Err(e), "{op:?}");
                    unchanged(t, &before, allocated, freed);
                }
                None if got == Err(MapError::OutOfMemory) => unchanged(t, &before, allocated, freed),
                None => {
                    assert_eq!(got, Ok(()), "{op:?}");
                    for (v, level, p, contiguous) in contiguous_leaves(va, pa, size, sizes) {
                        model.leaves.insert(v, (level, p, Attributes { contiguous, ..Attributes::KERNEL_RO }));
                    }
                }
            }
        }
        Op::Unmap { window, offset, size } | Op::Clear { window, offset, size } => {
            let mapped = matches!(op, Op::Unmap { .. });
            let va = WINDOWS[window].0 + offset;
            let got = engine::check_clear(t, root, VirtAddr::new(va), size, mapped);
            match model.clear_refusal(va, size, mapped) {
                Some(e) => {
                    assert_eq!(got, Err(e), "{op:?}");
                    unchanged(t, &before, allocated, freed);
                }
                None => {
                    assert_eq!(got, Ok(()), "{op:?}");
                    let expected = model.overlapping(va, size).len() as u64;
                    // SAFETY: host memory.
                    let cleared = unsafe { engine::clear(t, root, VirtAddr::new(va), size, Sections::WholeCall) };
                    assert_eq!(cleared, engine::Cleared { leaves: expected, zero: true }, "{op:?}");
                    assert_eq!(t.stored.get() - stored, expected, "one store per leaf cleared");
                    for (at, _) in model.overlapping(va, size) {
                        model.leaves.remove(&at);
                    }
                }
            }
        }
        Op::Protect { window, offset, size } => {
            let va = WINDOWS[window].0 + offset;
            let got = engine::for_each_table(t, root, VirtAddr::new(va), size, false, Sections::WholeCall, |run, _| {
                // SAFETY: host memory.
                unsafe {
                    t.write_run(run, move |i| {
                        let old = t.read(run.table, run.index + i);
                        old.is_valid().then(|| old.read_only())
                    })
                };
                Ok::<(), ()>(())
            });
            match model.block_in_the_way(va, size) {
                Some(e) => {
                    assert_eq!(got.map(|_| ()), Err(ApplyError::Map(e)), "{op:?}");
                    unchanged(t, &before, allocated, freed);
                }
                None => {
                    assert_eq!(got.map(|a| a.tables_allocated), Ok(0), "{op:?}: existing tables only");
                    for (at, leaf) in model.overlapping(va, size) {
                        model.leaves.insert(at, (leaf.0, leaf.1, Attributes { writable: false, ..leaf.2 }));
                    }
                }
            }
        }
        Op::Split { nth } => {
            let blocks: Vec<(u64, (Level, u64, Attributes))> =
                model.leaves.iter().filter(|(_, l)| l.0 != Level::L3).map(|(&a, &l)| (a, l)).collect();
            let Some(&(va, (level, pa, attrs))) = blocks.get(nth % blocks.len().max(1)) else { return };
            let mut slot = Slot::new(root, Level::L0, VirtAddr::new(va));
            while slot.level < level {
                let Entry::Table(next) = slot.entry(t) else { unreachable!() };
                slot = Slot::new(next, slot.level.next().unwrap(), VirtAddr::new(va));
            }
            t.allocations_left.set(None);
            let table = t.alloc_table().unwrap();
            // SAFETY: host memory.
            let next = unsafe { engine::split_block(t, slot, table) };
            assert_eq!(next, level.next().unwrap());
            assert_eq!(t.stored.get() - stored, 512, "512 entries in one run (then the link)");
            model.leaves.remove(&va);
            for i in 0..512 {
                model.leaves.insert(va + i * next.entry_size(), (next, pa + i * next.entry_size(), attrs));
            }
        }
        Op::Reclaim { window, offset, size, cleared } => {
            let va = WINDOWS[window].0 + offset;
            if cleared {
                if model.clear_refusal(va, size, false).is_some() {
                    return;
                }
                // SAFETY: host memory.
                unsafe { engine::clear(t, root, VirtAddr::new(va), size, Sections::Caller) };
                for (at, _) in model.overlapping(va, size) {
                    model.leaves.remove(&at);
                }
            }
            let mut unlinked = Vec::new();
            // SAFETY: host memory, no walk in progress; the claim is true
            // if `cleared`.
            unsafe {
                engine::unlink_empty_tables(t, root, VirtAddr::new(va), size, cleared, &mut |pa| unlinked.push(pa))
            };
            for pa in unlinked {
                t.free_table(pa);
            }
            // No table left under the range is empty.
            let mut empty = Vec::new();
            t.empty_tables(root, Level::L0, 0xffff_0000_0000_0000, &mut empty);
            let last = va + (size - 1);
            for (at, level) in empty {
                let end = at + (level.entry_size() * 512 - 1);
                assert!(end < va || at > last, "{op:?}: an empty level-{} table at {at:#x} stayed", level.0);
            }
        }
    }
    assert_eq!(t.leaves(root), model.leaves, "after {op:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_engine_maps_and_unmaps_what_the_model_says(
        ops in prop::collection::vec((op(), prop::option::weighted(0.2, 0usize..4)), 1..25),
    ) {
        let (t, root) = HostTables::new();
        let mut model = Model::default();
        for (op, fail_after) in ops {
            t.allocations_left.set(fail_after);
            run_op(&t, root, &mut model, op);
        }
    }
}

#[test]
fn a_block_over_an_empty_table_is_mapped_after_the_table_goes() {
    let (t, root) = HostTables::new();
    let va = WINDOWS[0].0;
    // A page, unmapped again: its level-3 table stays, empty.
    map(
        &t,
        root,
        va,
        PAGE,
        Contiguous { pa: PhysAddr::new(0), sizes: LeafSizes::PagesOnly, attrs: Attributes::KERNEL_RW },
    )
    .unwrap();
    // SAFETY: host memory.
    unsafe { engine::clear(&t, root, VirtAddr::new(va), PAGE, Sections::Caller) };
    let plan = engine::plan_map(
        &t,
        root,
        VirtAddr::new(va),
        BLOCK_2M,
        Contiguous { pa: PhysAddr::new(0), sizes: LeafSizes::Blocks, attrs: Attributes::KERNEL_RW },
    )
    .unwrap();
    assert!(plan.reclaim, "the plan says the table must go first");
    map(
        &t,
        root,
        va,
        BLOCK_2M,
        Contiguous { pa: PhysAddr::new(0), sizes: LeafSizes::Blocks, attrs: Attributes::KERNEL_RW },
    )
    .unwrap();
    assert_eq!(t.leaves(root).into_iter().collect::<Vec<_>>(), vec![(va, (Level::L2, 0, Attributes::KERNEL_RW))]);
}

#[test]
fn a_page_list_is_one_run_per_table_and_the_tables_are_counted_once() {
    let (t, root) = HostTables::new();
    // 2 MiB - 4 KiB + 3 pages: across one level-3 table boundary.
    let va = WINDOWS[0].0 + BLOCK_2M - PAGE;
    let frames: Vec<PhysAddr> = (0..4).map(|i| PhysAddr::new(i * PAGE)).collect();
    let plan = engine::plan_map(
        &t,
        root,
        VirtAddr::new(va),
        4 * PAGE,
        Pages { frames: &frames, attrs: Attributes::KERNEL_RW },
    )
    .unwrap();
    // Level 1, level 2 and two level-3 tables.
    assert_eq!(plan, engine::Plan { tables: 4, reclaim: false });
    let runs: Vec<_> =
        engine::leaf_runs(VirtAddr::new(va), 4 * PAGE, Pages { frames: &frames, attrs: Attributes::KERNEL_RW })
            .map(|r| r.count)
            .collect();
    assert_eq!(runs, vec![1, 3]);
    map(&t, root, va, 4 * PAGE, Pages { frames: &frames, attrs: Attributes::KERNEL_RW }).unwrap();
    assert_eq!((t.allocated.get(), t.freed.get()), (1 + 4, 0));
}

#[test]
fn a_contiguous_range_is_pages_runs_of_sixteen_and_blocks_as_alignment_allows() {
    let (t, root) = HostTables::new();
    // From a page before a 64 KiB boundary that is 64 KiB before a 2 MiB
    // one, to a page after the run after the next 2 MiB boundary.
    let va = WINDOWS[0].0 + BLOCK_2M - CONT - PAGE;
    let size = PAGE + CONT + BLOCK_2M + CONT + PAGE;
    let leaves =
        Contiguous { pa: PhysAddr::new(va % BLOCK_1G), sizes: LeafSizes::Blocks, attrs: Attributes::KERNEL_RW };
    let runs: Vec<_> =
        engine::leaf_runs(VirtAddr::new(va), size, leaves).map(|r| (r.level, r.count, r.contiguous)).collect();
    assert_eq!(
        runs,
        vec![
            (Level::L3, 1, false),
            (Level::L3, 16, true),
            (Level::L2, 1, false),
            (Level::L3, 16, true),
            (Level::L3, 1, false)
        ]
    );
    let stored = t.stored.get();
    map(&t, root, va, size, leaves).unwrap();
    assert_eq!(t.stored.get() - stored, 1 + 16 + 1 + 16 + 1, "one store per entry");
    let cont: Vec<u64> = t.leaves(root).into_iter().filter(|(_, l)| l.2.contiguous).map(|(v, _)| v - va).collect();
    let expected: Vec<u64> =
        (0..16).map(|i| PAGE + i * PAGE).chain((0..16).map(|i| PAGE + CONT + BLOCK_2M + i * PAGE)).collect();
    assert_eq!(cont, expected, "the bit on the 32 pages of the two runs, and on nothing else");
    // Without the same alignment of both addresses, no runs at all.
    let skewed = Contiguous { pa: PhysAddr::new(PAGE), ..leaves };
    assert!(engine::leaf_runs(VirtAddr::new(va), size, skewed).all(|r| !r.contiguous));
    // Unmapping part of a run is refused, nothing changed; the whole run goes.
    let first_run = VirtAddr::new(va + PAGE);
    assert_eq!(engine::check_clear(&t, root, first_run, PAGE, true), Err(MapError::SplitsContiguousRun(first_run)));
    assert_eq!(
        engine::check_clear(&t, root, first_run.add(PAGE), CONT - PAGE, true),
        Err(MapError::SplitsContiguousRun(first_run))
    );
    assert_eq!(engine::check_clear(&t, root, first_run, CONT, true), Ok(()));
    // The leaf vunmap widens a partial range to (Linux clears it whole):
    // the run or the block around an address, none for a plain page.
    let block = VirtAddr::new(va + PAGE + CONT);
    let second_run = block.add(BLOCK_2M);
    assert_eq!(engine::huge_leaf_at(&t, root, VirtAddr::new(va)), None);
    for (at, leaf) in [
        (first_run, (first_run, CONT)),
        (first_run.add(CONT - PAGE), (first_run, CONT)),
        (block, (block, BLOCK_2M)),
        (block.add(BLOCK_2M - PAGE), (block, BLOCK_2M)),
        (second_run.add(7 * PAGE), (second_run, CONT)),
    ] {
        assert_eq!(engine::huge_leaf_at(&t, root, at), Some(leaf), "{at}");
    }
    assert_eq!(engine::huge_leaf_at(&t, root, second_run.add(CONT)), None);
    assert_eq!(engine::huge_leaf_at(&t, root, second_run.add(CONT + PAGE)), None, "nothing mapped");
}

#[test]
fn splitting_a_run_clears_the_bit_of_its_sixteen_pages_in_one_store() {
    let (t, root) = HostTables::new();
    let va = WINDOWS[0].0;
    let leaves = Contiguous { pa: PhysAddr::new(0), sizes: LeafSizes::ContPtes, attrs: Attributes::KERNEL_RW };
    map(&t, root, va, 2 * CONT, leaves).unwrap();
    let slot = lazymmu_props::walk::walk(&t, root, VirtAddr::new(va + 5 * PAGE));
    let stored = t.stored.get();
    // SAFETY: host memory.
    let first = unsafe { engine::split_contiguous(&t, slot) };
    assert_eq!(first, VirtAddr::new(va));
    assert_eq!(t.stored.get() - stored, 16);
    let bits: Vec<bool> = t.leaves(root).values().map(|l| l.2.contiguous).collect();
    assert_eq!(bits, [[false; 16], [true; 16]].concat(), "the first run split, the second whole");
    assert_eq!(engine::check_clear(&t, root, VirtAddr::new(va), PAGE, true), Ok(()));
}

#[test]
fn chunks_map_each_chunk_as_one_block_or_one_run_and_nothing_crosses_a_chunk() {
    let (t, root) = HostTables::new();
    let va = WINDOWS[0].0;
    // Two 2 MiB chunks far apart: two blocks.
    let blocks = [PhysAddr::new(6 * BLOCK_2M), PhysAddr::new(2 * BLOCK_2M)];
    let leaves = engine::Chunks {
        chunks: &blocks,
        chunk_size: BLOCK_2M,
        sizes: LeafSizes::Blocks,
        attrs: Attributes::KERNEL_RW,
    };
    map(&t, root, va, 2 * BLOCK_2M, leaves).unwrap();
    let got: Vec<_> = t.leaves(root).into_iter().map(|(v, (level, pa, a))| (v - va, level, pa, a.contiguous)).collect();
    assert_eq!(got, [(0, Level::L2, 6 * BLOCK_2M, false), (BLOCK_2M, Level::L2, 2 * BLOCK_2M, false)]);
    // Three 64 KiB chunks, out of order: three runs, one store run each.
    let va = WINDOWS[0].0 + 4 * BLOCK_2M;
    let runs = [PhysAddr::new(5 * CONT), PhysAddr::new(CONT), PhysAddr::new(9 * CONT)];
    let leaves =
        engine::Chunks { chunks: &runs, chunk_size: CONT, sizes: LeafSizes::ContPtes, attrs: Attributes::KERNEL_RW };
    let shape: Vec<_> =
        engine::leaf_runs(VirtAddr::new(va), 3 * CONT, leaves).map(|r| (r.count, r.contiguous)).collect();
    assert_eq!(shape, [(16, true), (16, true), (16, true)]);
    map(&t, root, va, 3 * CONT, leaves).unwrap();
    for (i, pa) in runs.iter().enumerate() {
        for page in 0..16 {
            let at = va + i as u64 * CONT + page * PAGE;
            assert_eq!(
                t.leaves(root)[&at],
                (Level::L3, pa.as_u64() + page * PAGE, Attributes { contiguous: true, ..Attributes::KERNEL_RW })
            );
        }
    }
}
