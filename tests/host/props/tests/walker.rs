//! The kernel's walker (`mm/walk.rs`) on tables in host memory, against a
//! model: random page and block mappings and unmappings in a few regions
//! of the address space (so that tables are made at every level), then
//! every walk finds what the model says is mapped, and the planner's count
//! of the tables a range needs is exactly what creating walks then link.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use lazymmu_props::addr::{PhysAddr, VirtAddr};
use lazymmu_props::descriptor::{Attributes, Descriptor, Entry, Level};
use lazymmu_props::walk::{BlockInTheWay, Slot, TableMemory, tables_missing, tables_needed, walk};
use proptest::prelude::*;

const PAGE: u64 = 4096;
const BLOCK: u64 = 2 << 20;

/// Where the operations land: windows of 8 MiB (four 2 MiB blocks) in
/// different level-0, level-1 and level-2 entries, and at the top of the
/// address space.
const REGIONS: [u64; 4] = [0x0000_0000_4000_0000, 0x0000_7f80_0000_0000, 0xffff_8000_3fc0_0000, 0xffff_ffff_ff80_0000];
const REGION_PAGES: u64 = 4 * BLOCK / PAGE;

/// Page-table pages in host memory, handed out at made-up physical
/// addresses; counts the tables it made.
struct Tables {
    pages: RefCell<HashMap<u64, Box<[u64; 512]>>>,
    next: Cell<u64>,
    made: Cell<usize>,
}

impl TableMemory for Tables {
    fn read(&self, table: PhysAddr, index: usize) -> Descriptor {
        Descriptor(self.pages.borrow()[&table.as_u64()][index])
    }
}

impl Tables {
    /// The tables and their root.
    fn new() -> (Tables, PhysAddr) {
        let t = Tables { pages: RefCell::new(HashMap::new()), next: Cell::new(0x8000_0000), made: Cell::new(0) };
        let root = t.alloc();
        t.made.set(0);
        (t, root)
    }

    fn alloc(&self) -> PhysAddr {
        let pa = self.next.get();
        self.next.set(pa + PAGE);
        self.pages.borrow_mut().insert(pa, Box::new([0; 512]));
        self.made.set(self.made.get() + 1);
        PhysAddr::new(pa)
    }

    fn write(&self, slot: Slot, desc: Descriptor) {
        self.pages.borrow_mut().get_mut(&slot.table.as_u64()).unwrap()[slot.index()] = desc.0;
    }

    /// A creating walk that links fresh tables, as the kernel's does (the
    /// kernel's is the engine's `table_for`, tested in engine.rs; this one
    /// is the test's own, to make the states the walker is tested on).
    fn walk_create(&self, root: PhysAddr, va: u64, level: Level) -> Result<Slot, BlockInTheWay> {
        let va = VirtAddr::new(va);
        let mut slot = Slot::new(root, Level::L0, va);
        while slot.level < level {
            let next = match slot.entry(self) {
                Entry::Table(next) => next,
                Entry::Invalid => {
                    let table = self.alloc();
                    self.write(slot, Descriptor::table(table));
                    table
                }
                Entry::Leaf { .. } => return Err(BlockInTheWay { va, level: slot.level }),
            };
            slot = Slot::new(next, slot.level.next().unwrap(), va);
        }
        Ok(slot)
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Map page `page` of region `region` to frame `frame`.
    MapPage { region: usize, page: u64, frame: u64 },
    /// Map 2 MiB block `block` of the region, if nothing is there.
    MapBlock { region: usize, block: u64, frame: u64 },
    /// Unmap whatever maps page `page` of the region.
    Unmap { region: usize, page: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..REGIONS.len(), 0..REGION_PAGES, 0u64..(1 << 20)).prop_map(|(region, page, frame)| Op::MapPage { region, page, frame }),
        1 => (0..REGIONS.len(), 0u64..4, 0u64..(1 << 10)).prop_map(|(region, block, frame)| Op::MapBlock { region, block, frame }),
        2 => (0..REGIONS.len(), 0..REGION_PAGES).prop_map(|(region, page)| Op::Unmap { region, page }),
    ]
}

/// What is mapped, by the model: pages and 2 MiB blocks, by address.
#[derive(Default)]
struct Model {
    pages: BTreeMap<u64, u64>,
    blocks: BTreeMap<u64, u64>,
}

impl Model {
    /// What the walk for `va` must find: (level, output address) of a leaf.
    fn translation(&self, va: u64) -> Option<(Level, u64)> {
        if let Some(&pa) = self.pages.get(&(va & !(PAGE - 1))) {
            return Some((Level::L3, pa));
        }
        self.blocks.get(&(va & !(BLOCK - 1))).map(|&pa| (Level::L2, pa))
    }
}

/// Runs `ops` on fresh tables and the model, the kernel's rules for what
/// may go where: a page needs no block above it; a block needs its level-2
/// entry empty (no table: a block is never made over one).
fn run(ops: &[Op]) -> (Tables, PhysAddr, Model) {
    let (tables, root) = Tables::new();
    let mut model = Model::default();
    for &op in ops {
        match op {
            Op::MapPage { region, page, frame } => {
                let va = REGIONS[region] + page * PAGE;
                let pa = frame * PAGE;
                let blocked = model.blocks.contains_key(&(va & !(BLOCK - 1)));
                match tables.walk_create(root, va, Level::L3) {
                    Ok(slot) => {
                        assert!(!blocked, "{va:#x}: the walk went through a block");
                        tables.write(slot, Descriptor::leaf(Level::L3, PhysAddr::new(pa), Attributes::KERNEL_RW));
                        model.pages.insert(va, pa);
                    }
                    Err(e) => {
                        assert!(blocked, "{va:#x}: no block in the way, yet {e:?}");
                        assert_eq!(e, BlockInTheWay { va: VirtAddr::new(va), level: Level::L2 });
                    }
                }
            }
            Op::MapBlock { region, block, frame } => {
                let va = REGIONS[region] + block * BLOCK;
                let pa = frame * BLOCK;
                let slot = tables.walk_create(root, va, Level::L2).expect("nothing above level 2 is a block");
                if slot.entry(&tables) == Entry::Invalid {
                    tables.write(slot, Descriptor::leaf(Level::L2, PhysAddr::new(pa), Attributes::KERNEL_RW));
                    model.blocks.insert(va, pa);
                }
            }
            Op::Unmap { region, page } => {
                let va = REGIONS[region] + page * PAGE;
                let slot = walk(&tables, root, VirtAddr::new(va));
                if let Entry::Leaf { .. } = slot.entry(&tables) {
                    tables.write(slot, Descriptor::INVALID);
                    match slot.level {
                        Level::L3 => model.pages.remove(&slot.va.as_u64()),
                        _ => model.blocks.remove(&slot.va.as_u64()),
                    };
                }
            }
        }
    }
    (tables, root, model)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_walk_finds_what_the_model_maps(
        ops in prop::collection::vec(op(), 1..60),
        probes in prop::collection::vec((0..REGIONS.len(), 0..REGION_PAGES, 0..PAGE), 1..40),
    ) {
        let (tables, root, model) = run(&ops);
        // Every address mapped, and random others (offsets in the page too).
        let mapped = model.pages.keys().copied().chain(model.blocks.keys().copied());
        let probed = probes.iter().map(|&(r, page, offset)| REGIONS[r] + page * PAGE + offset);
        for va in mapped.chain(probed) {
            let slot = walk(&tables, root, VirtAddr::new(va));
            let found = match slot.entry(&tables) {
                Entry::Leaf { addr, attrs } => {
                    prop_assert_eq!(attrs, Attributes::KERNEL_RW);
                    Some((slot.level, addr.as_u64()))
                }
                Entry::Invalid => None,
                Entry::Table(t) => panic!("{va:#x}: the walk stopped at a table ({t:?}) at {:?}", slot.level),
            };
            prop_assert_eq!(found, model.translation(va), "{:#x}", va);
            if let Some((level, _)) = found {
                prop_assert_eq!(slot.va.as_u64(), va & !(level.entry_size() - 1));
            }
        }
    }

    #[test]
    fn the_plan_counts_exactly_the_tables_the_walks_link(
        ops in prop::collection::vec(op(), 0..40),
        region in 0..REGIONS.len(),
        first in 0..REGION_PAGES,
        pages in 1u64..REGION_PAGES,
    ) {
        let (tables, root, _) = run(&ops);
        let start = REGIONS[region] + first * PAGE;
        let end = start.wrapping_add(pages.min(REGION_PAGES - first) * PAGE);
        let plan = tables_needed(&tables, root, VirtAddr::new(start), VirtAddr::new(end));
        // The creating walks apply_to_page_range makes: one per 2 MiB.
        let made = tables.made.get();
        let mut walked = Ok(());
        let mut at = start;
        while at != end {
            let missing: Vec<(Level, u64)> = match tables_missing(&tables, root, VirtAddr::new(at), Level::L3) {
                Ok(m) => m.collect(),
                Err(e) => { walked = Err(e); break; }
            };
            let before = tables.made.get();
            tables.walk_create(root, at, Level::L3).expect("tables_missing found no block");
            prop_assert_eq!(tables.made.get() - before, missing.len(), "one walk links what tables_missing lists");
            let next = (at & !(BLOCK - 1)).wrapping_add(BLOCK);
            at = if next.wrapping_sub(start) >= end.wrapping_sub(start) || next == 0 { end } else { next };
        }
        match (plan, walked) {
            (Ok(n), Ok(())) => prop_assert_eq!(n, tables.made.get() - made, "[{:#x}, {:#x})", start, end),
            (Err(p), Err(w)) => prop_assert_eq!(p, w, "the same block stops both"),
            (p, w) => prop_assert!(false, "the plan said {:?}, the walks {:?}", p, w),
        }
    }
}
