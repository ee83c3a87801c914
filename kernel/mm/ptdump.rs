//! `ptdump`: the kernel's page tables as merged ranges, like Linux's
//! /sys/kernel/debug/kernel_page_tables. Adjacent leaves of the same size
//! and attributes print as one line.

use core::fmt::{self, Write};

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::{Attributes, Level, MemoryType};
use super::layout::REGIONS;
use super::pgtable::{self, Visitor};

/// How many table pages and leaves each region uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionStats {
    /// Table pages at levels 1, 2, 3 whose entries lie in the region.
    pub tables: [usize; 4],
    /// Leaves: 1 GiB blocks, 2 MiB blocks, 4 KiB pages.
    pub blocks_1g: usize,
    pub blocks_2m: usize,
    pub pages: usize,
}

impl RegionStats {
    pub fn table_pages(&self) -> usize {
        self.tables.iter().sum()
    }
}

fn region_of(va: VirtAddr) -> usize {
    REGIONS
        .iter()
        .position(|&(_, start, size)| va >= start && va.as_u64() - start.as_u64() < size)
        .unwrap_or(REGIONS.len())
}

/// Counts per region (indexes as `layout::REGIONS`); the level-0 table is shared.
pub fn region_stats() -> [RegionStats; REGIONS.len()] {
    struct Count([RegionStats; REGIONS.len()]);
    impl Visitor for Count {
        fn table(&mut self, va: VirtAddr, level: Level) {
            if level != Level::L0
                && let Some(s) = self.0.get_mut(region_of(va))
            {
                s.tables[level.0 as usize] += 1;
            }
        }
        fn leaf(&mut self, va: VirtAddr, level: Level, _: PhysAddr, _: Attributes) {
            if let Some(s) = self.0.get_mut(region_of(va)) {
                match level {
                    Level::L1 => s.blocks_1g += 1,
                    Level::L2 => s.blocks_2m += 1,
                    _ => s.pages += 1,
                }
            }
        }
    }
    let mut count = Count([RegionStats::default(); REGIONS.len()]);
    pgtable::visit(&mut count);
    count.0
}

fn human(bytes: u64) -> (u64, &'static str) {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => (b >> 30, "G"),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => (b >> 20, "M"),
        b => (b >> 10, "K"),
    }
}

struct Run {
    start: VirtAddr,
    end: VirtAddr,
    level: Level,
    attrs: Attributes,
}

fn print_run(out: &mut dyn Write, run: &Run) -> fmt::Result {
    let (size, unit) = human(run.end.offset_from(run.start));
    let (leaf, leaf_unit) = human(run.level.entry_size());
    let memory = match run.attrs.memory {
        MemoryType::NormalWriteBack => "normal",
        MemoryType::NormalNonCacheable => "normal-nc",
        MemoryType::Device => "device",
    };
    writeln!(
        out,
        "{:#018x}-{:#018x} {:>6}{} {:>4}{} {} {} {}{}",
        run.start.as_u64(),
        run.end.as_u64(),
        size,
        unit,
        leaf,
        leaf_unit,
        if run.attrs.writable { "RW" } else { "ro" },
        if run.attrs.executable { "x " } else { "NX" },
        memory,
        // Linux's ptdump says "CON" for PTE_CONT.
        if run.attrs.contiguous { " CONT" } else { "" }
    )
}

/// Writes the dump: one header per region, then merged runs.
pub fn dump(out: &mut dyn Write) -> fmt::Result {
    struct Dump<'a> {
        out: &'a mut dyn Write,
        run: Option<Run>,
        region: usize,
        result: fmt::Result,
    }
    impl Dump<'_> {
        fn flush(&mut self) {
            if let Some(run) = self.run.take() {
                self.result = self.result.and_then(|_| print_run(self.out, &run));
            }
        }
    }
    impl Visitor for Dump<'_> {
        fn table(&mut self, _: VirtAddr, _: Level) {}
        fn leaf(&mut self, va: VirtAddr, level: Level, _: PhysAddr, attrs: Attributes) {
            let end = va.add(level.entry_size());
            let region = region_of(va);
            if let Some(run) = &mut self.run
                && run.end == va
                && run.level == level
                && run.attrs == attrs
                && region == self.region
            {
                run.end = end;
                return;
            }
            self.flush();
            if region != self.region {
                self.region = region;
                let name = REGIONS.get(region).map_or("outside any region", |r| r.0);
                self.result = self.result.and_then(|_| writeln!(self.out, "---[ {name} ]---"));
            }
            self.run = Some(Run { start: va, end, level, attrs });
        }
    }
    let mut dump = Dump { out, run: None, region: usize::MAX, result: Ok(()) };
    pgtable::visit(&mut dump);
    dump.flush();
    dump.result
}
