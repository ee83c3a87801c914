//! The fuzzer's reference model of the vmalloc region: which pages are
//! mapped, to which frame (when the fuzzer knows it), with which
//! permissions, holding which tag; and which areas are live. It is plain
//! data, changed by the fuzzer as each operation says it should change
//! things, and compared with the real tables, the MMU and real accesses.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use lazymmu::mm::{PAGE_SIZE, PhysAddr, VirtAddr};

/// One mapped page as the model expects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// The frame behind it, when the fuzzer chose it (vmalloc chooses its own).
    pub pa: Option<PhysAddr>,
    pub writable: bool,
    pub executable: bool,
    /// The word the fuzzer put at the start of the page.
    pub tag: u64,
}

/// What kind of area, and what the fuzzer must give back when it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AreaKind {
    /// `vmalloc`/`vzalloc`/`vmalloc_aligned`: frames the area owns.
    Vmalloc,
    /// `vmap_pages` of frames the fuzzer owns (one run per page).
    Pages(Vec<PhysAddr>),
    /// `vmap_contiguous` of a run the fuzzer owns: (first frame, frames).
    Range(PhysAddr, usize),
    /// `get_vm_area`, mapped by `apply_to_page_range` with the fuzzer's
    /// frames, one per page (allocated with the area).
    AddressSpace(Vec<PhysAddr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Area {
    pub start: VirtAddr,
    pub pages: u64,
    pub kind: AreaKind,
}

impl Area {
    pub fn page(&self, i: u64) -> VirtAddr {
        self.start.add(i * PAGE_SIZE)
    }
}

#[derive(Default)]
pub struct Model {
    pub pages: BTreeMap<u64, Page>,
    pub areas: BTreeMap<u64, Area>,
    /// The tag in each frame the fuzzer owns for get_vm_area areas, by
    /// physical address: a page mapped to that frame must read it.
    pub tags: BTreeMap<u64, u64>,
    /// The live areas' starts in the order they were made, when areas are
    /// picked in that order (None: in address order). On several CPUs the
    /// addresses depend on the other CPUs' operations; the order in which
    /// one CPU made its areas does not, so its picks, and its whole
    /// sequence of operations, stay those of its seed.
    pub creation_order: Option<Vec<u64>>,
}

impl Model {
    pub fn map(&mut self, va: VirtAddr, page: Page) {
        self.pages.insert(va.as_u64(), page);
    }

    pub fn unmap(&mut self, va: VirtAddr) {
        self.pages.remove(&va.as_u64());
    }

    pub fn page(&self, va: VirtAddr) -> Option<Page> {
        self.pages.get(&va.as_u64()).copied()
    }

    pub fn page_mut(&mut self, va: VirtAddr) -> Option<&mut Page> {
        self.pages.get_mut(&va.as_u64())
    }

    pub fn add_area(&mut self, area: Area) {
        if let Some(order) = &mut self.creation_order {
            order.push(area.start.as_u64());
        }
        self.areas.insert(area.start.as_u64(), area);
    }

    /// Removes an area and every page it had mapped.
    pub fn remove_area(&mut self, start: VirtAddr) -> Option<Area> {
        let area = self.areas.remove(&start.as_u64())?;
        if let Some(order) = &mut self.creation_order {
            order.retain(|&s| s != start.as_u64());
        }
        for i in 0..area.pages {
            self.unmap(area.page(i));
        }
        Some(area)
    }

    /// The n-th live area (in address or creation order), of a kind
    /// `filter` accepts.
    pub fn pick_area(&self, n: u64, filter: impl Fn(&AreaKind) -> bool) -> Option<Area> {
        let live: Vec<&Area> = match &self.creation_order {
            None => self.areas.values().collect(),
            Some(order) => order.iter().map(|start| &self.areas[start]).collect(),
        };
        let matching: Vec<&Area> = live.into_iter().filter(|a| filter(&a.kind)).collect();
        (!matching.is_empty()).then(|| matching[(n % matching.len() as u64) as usize].clone())
    }
}
