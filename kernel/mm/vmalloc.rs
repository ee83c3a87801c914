//! The vmalloc region: virtually contiguous kernel mappings of frames that
//! need not be physically contiguous (Linux mm/vmalloc.c).
//!
//! - An *area* is a range of the region, with one unmapped guard page
//!   after it, so running off the end of a vmalloc'd buffer faults instead
//!   of scribbling on the next one. The lowest free range that fits is
//!   found in O(log n) whatever the number of live areas (`area_alloc`),
//!   and a request bigger than the region, or than RAM, is refused first.
//! - `vmalloc`/`vzalloc`/`vmalloc_aligned` take frames, then map them with
//!   the mapping engine (`pgtable::map_leaves` with `engine::Pages`), a
//!   run of stores per level-3 table: every frame and table is allocated
//!   before the lazy section opens, and the whole mapping costs one
//!   `dsb ishst; isb`.
//! - `vmap_pages` maps frames the caller owns; `vmap_range` maps physically
//!   contiguous memory with 1 GiB and 2 MiB blocks and contiguous runs of
//!   16 pages where the addresses and size allow (`vmalloc_huge.rs` maps
//!   vmalloc'd memory in chunks that way).
//! - `vfree` and `vunmap` clear the entries in one lazy section (a clear
//!   owes no barrier) and flush nothing: the area waits on the purge list,
//!   and one flush covers many freed areas when they are purged
//!   (`vmalloc/purge.rs`); only then are their frames and ranges given
//!   back. `vunmap_range` flushes at once. The page-table pages stay, as
//!   Linux's do: a 1-page vmalloc
//!   after a 1-page vfree links no table. Tables go only where Linux frees
//!   them: under a block that replaces them (`vmap_range`), and in an
//!   explicit reclaim (`reclaim_page_tables`).
//!
//! Every operation either does all it says or returns an error and leaves
//! the frame count, the area list and the tables as they were.

use alloc::alloc::AllocError;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use super::addr::{BLOCK_1G, BLOCK_2M, CONT_PTE_SIZE, PAGE_SIZE, PhysAddr, VirtAddr};
use super::apply::{self, ApplyError};
use super::area_alloc::{Free, FreeRanges, Node, Spares, Tree, Weight};
use super::descriptor::{Attributes, Entry, Level, MemoryType};
use super::engine::{self, Contiguous, Pages, Sections};
use super::layout::{VMALLOC_END, VMALLOC_START, in_linear_map};
use super::pgtable::{self, LeafSizes, MapError, Operand};
use super::slab::{self, Kmalloc};
use super::{debug_pagealloc, frame_alloc, pageattr, pgtable_check, phys_to_virt, tlb};
use crate::planted::{Bug, planted};
use crate::println;
use crate::sync::{IrqSpinLock, IrqsMasked};

mod purge;

pub use purge::{lazy_max_pages, lazy_pages, set_vmap_lazy_purge, vm_unmap_aliases};

/// Unmapped bytes after every area.
pub const GUARD_SIZE: u64 = PAGE_SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmallocError {
    /// A size of zero bytes.
    ZeroSize,
    /// An alignment that is not a power of two multiple of the page size.
    BadAlignment(u64),
    /// An address that must be page aligned is not.
    Misaligned { what: Operand, value: u64 },
    /// The range covers only part of the block at `va` (at `level`), which
    /// is unmapped whole or not at all.
    SplitsBlock { va: VirtAddr, level: Level },
    /// No free range of the region is large enough.
    NoVirtualSpace,
    /// Not enough frames (or page-table pages).
    OutOfMemory,
    /// The address is not the start of a live area of the right kind.
    NotAnArea(VirtAddr),
    /// A slot of the range is already mapped (Linux's -EBUSY).
    AlreadyMapped(VirtAddr),
    /// `vmap_pages` of no pages.
    EmptyPageList,
    /// The page tables refused (a block in the way, a bad range).
    Map(MapError),
    /// RAM asked for with another memory type than its linear map's
    /// (Device, non-cacheable): Linux's `ioremap` refuses RAM too.
    RamNotDevice(PhysAddr),
}

impl fmt::Display for VmallocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VmallocError::ZeroSize => write!(f, "the size is zero bytes"),
            VmallocError::BadAlignment(align) => {
                write!(f, "alignment {align:#x} is not a power-of-two multiple of the page size")
            }
            VmallocError::Misaligned { what, value } => write!(f, "{what} {value:#x} is not page aligned"),
            VmallocError::SplitsBlock { va, level } => {
                write!(f, "the range covers only part of the level-{} block at {va}", level.0)
            }
            VmallocError::NoVirtualSpace => write!(f, "no free virtual range is large enough"),
            VmallocError::OutOfMemory => {
                write!(f, "there is not enough free memory for the area's pages, page tables or bookkeeping")
            }
            VmallocError::NotAnArea(va) => write!(f, "{va} is not in a live area of the right kind"),
            VmallocError::AlreadyMapped(va) => write!(f, "{va} is already mapped"),
            VmallocError::EmptyPageList => write!(f, "the list of pages to map is empty"),
            VmallocError::Map(e) => write!(f, "{e}"),
            VmallocError::RamNotDevice(pa) => write!(
                f,
                "{pa} is RAM, which the linear map maps cacheable: it may not be mapped as device or non-cacheable memory too"
            ),
        }
    }
}

impl From<MapError> for VmallocError {
    fn from(e: MapError) -> VmallocError {
        match e {
            MapError::OutOfMemory => VmallocError::OutOfMemory,
            MapError::AlreadyMapped(va) => VmallocError::AlreadyMapped(va),
            MapError::SplitsBlock { va, level } => VmallocError::SplitsBlock { va, level },
            other => VmallocError::Map(other),
        }
    }
}

impl<E: Into<VmallocError>> From<ApplyError<E>> for VmallocError {
    fn from(e: ApplyError<E>) -> VmallocError {
        match e {
            ApplyError::Map(e) => e.into(),
            ApplyError::Callback(e) => e.into(),
        }
    }
}

/// What an area holds.
#[derive(Debug)]
enum Kind {
    /// Being set up or torn down: not yet (or no longer) usable.
    Reserved,
    /// get_vm_area: address space only; the caller maps it.
    AddressSpace,
    /// vmalloc: frames it owns, one per page.
    Vmalloc(Frames),
    /// vmap_pages: frames the caller owns.
    Pages,
    /// vmap_range: contiguous memory the caller owns.
    Range,
}

/// A vmalloc'd area's frames: a 1-page area's in place (no list to
/// allocate and free on the commonest call), a larger one's in a list.
#[derive(Debug)]
enum Frames {
    One(PhysAddr),
    Many(Vec<PhysAddr, Kmalloc>),
}

impl Frames {
    /// `pages` fresh frames, all or none.
    fn alloc(pages: usize) -> Result<Frames, VmallocError> {
        if pages == 1 {
            let mut one = [PhysAddr::new(0)];
            frame_alloc::alloc_frames_into(&mut one).map_err(|_| VmallocError::OutOfMemory)?;
            return Ok(Frames::One(one[0]));
        }
        let mut frames = Vec::new_in(Kmalloc);
        frames.try_reserve_exact(pages).map_err(|_| VmallocError::OutOfMemory)?;
        frame_alloc::alloc_frames_bulk(pages, &mut frames).map_err(|_| VmallocError::OutOfMemory)?;
        Ok(Frames::Many(frames))
    }

    fn as_slice(&self) -> &[PhysAddr] {
        match self {
            Frames::One(pa) => core::slice::from_ref(pa),
            Frames::Many(frames) => frames,
        }
    }
}

struct Area {
    /// Mapped bytes (the guard page follows).
    size: u64,
    kind: Kind,
    /// The node its address range takes when it goes back to the free
    /// ranges, taken when it was reserved: giving back cannot fail.
    spare: Option<Record<Free>>,
}

/// Taken areas need no search.
impl Weight for Area {
    fn weight(&self) -> u64 {
        0
    }
}

/// The region's address ranges: the free ones (searched in O(log n) for a
/// range that fits, as Linux's augmented `free_vmap_area_root`) and the
/// taken ones, by start address. Every node either needs is allocated
/// before the lock is taken, and fallibly: running out of memory is
/// `OutOfMemory` with nothing changed.
///
/// The nodes, and a vmalloc'd area's frame list, come from slab caches
/// (`kmalloc`), as Linux's `vmap_area`s come from `vmap_area_cachep`, not
/// from the heap: taking and giving one back is O(1) however many areas
/// are live (see `slab.rs` for what the heap cost).
///
/// A reservation takes three nodes and a release gives them back: a few
/// of each kind wait in `spares` for the next call (see `Spares`), so that
/// the commonest calls touch no cache at all. A lazily freed area keeps
/// its two nodes until its purge, so a run of vmalloc/vfree calls takes
/// two fresh nodes a call: when the spares run short they are filled up
/// to [`SPARES`] of each kind, each kind in one hold of its cache's lock
/// (`kmalloc_bulk`), so that one call in several pays for a refill.
struct Areas {
    free: FreeRanges<Kmalloc>,
    taken: Tree<Area, Kmalloc>,
    free_spares: Spares<Free, Kmalloc>,
    area_spares: Spares<Area, Kmalloc>,
}

/// Free-range nodes a reservation needs: one for a split, one for its
/// release (`Area::spare`).
const FREE_NODES: usize = 2;

/// The most nodes of each kind kept for the next calls.
const SPARES: usize = 8;

impl Areas {
    /// Keeps a node no longer used, or drops it if enough are kept.
    fn keep(&mut self, node: Record<Free>) {
        drop(self.free_spares.put(node));
    }

    /// Gives an area's range back to the free ranges (with the node it
    /// took for that when it was reserved) and keeps its record; the area
    /// is in no tree and holds nothing any more.
    fn release(&mut self, mut record: Record<Area>) {
        let start = record.key();
        let area = record.value_mut();
        // (Gone already if the range was handed out early, on purpose.)
        if let Some(spare) = area.spare.take() {
            for merged in self.free.give_back(start, start + area.size + GUARD_SIZE, spare).into_iter().flatten() {
                self.keep(merged);
            }
        }
        drop(self.area_spares.put(record));
    }
}

/// A tree node of the region's bookkeeping.
type Record<V> = Box<Node<V, Kmalloc>, Kmalloc>;

static AREAS: IrqSpinLock<Areas> = IrqSpinLock::new(Areas {
    free: FreeRanges::new(),
    taken: Tree::new(),
    free_spares: Spares::new(SPARES),
    area_spares: Spares::new(SPARES),
});

/// Makes the whole region free, once, at boot (once frames can be had).
pub fn init() -> Result<(), VmallocError> {
    slab::init().map_err(|AllocError| VmallocError::OutOfMemory)?;
    purge::init();
    let region = node(Free { len: 0 })?;
    AREAS.lock().free.give_back(VMALLOC_START.as_u64(), VMALLOC_END.as_u64(), region);
    Ok(())
}

/// Gives the nodes kept for the next reservation back to their caches
/// (which give back a slab left empty): the audit counts frames without
/// them, so that a reservation made and undone leaves the count as it was.
pub(crate) fn shrink_spares() {
    let mut areas = AREAS.lock();
    while let Some(node) = areas.free_spares.take() {
        drop(node);
    }
    while let Some(node) = areas.area_spares.take() {
        drop(node);
    }
}

/// A node, or `OutOfMemory` when its slab cache can have no frame.
fn node<V: Weight>(value: V) -> Result<Record<V>, VmallocError> {
    Node::new(0, value).map_err(|AllocError| VmallocError::OutOfMemory)
}

/// `count` (at most [`SPARES`]) nodes of `value()`, from their cache in
/// one go, each handed to `put`; all or none: `OutOfMemory` when the
/// cache can have no frame.
fn nodes<V: Weight>(count: usize, value: impl Fn() -> V, mut put: impl FnMut(Record<V>)) -> Result<(), VmallocError> {
    let mut objects = [NonNull::dangling(); SPARES];
    let objects = &mut objects[..count];
    slab::kmalloc_bulk(Layout::new::<Node<V, Kmalloc>>(), objects).map_err(|AllocError| VmallocError::OutOfMemory)?;
    for &object in objects.iter() {
        // SAFETY: an object of the kmalloc cache for a node's layout, ours
        // alone: a box of it gives it back to that cache when dropped.
        let object = unsafe { Box::from_raw_in(object.as_ptr().cast::<MaybeUninit<Node<V, Kmalloc>>>(), Kmalloc) };
        put(Node::init(object, 0, value()));
    }
    Ok(())
}

/// A live area: where it starts and how many bytes it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaInfo {
    pub start: VirtAddr,
    pub size: u64,
}

/// The area holding `addr` (its guard page excluded), if any.
pub fn find_area(addr: VirtAddr) -> Option<AreaInfo> {
    let areas = AREAS.lock();
    let (start, area) = areas.taken.at_or_below(addr.as_u64())?;
    (addr.as_u64() - start < area.size).then(|| AreaInfo { start: VirtAddr::new(start), size: area.size })
}

/// How many areas are live.
pub fn area_count() -> usize {
    AREAS.lock().taken.len()
}

/// The live areas, in address order.
pub fn areas() -> Vec<AreaInfo> {
    AREAS.lock().taken.iter().map(|(start, area)| AreaInfo { start: VirtAddr::new(start), size: area.size }).collect()
}

/// Reserves `size` bytes (page multiple) in [lo, hi), aligned to `align`,
/// followed by a guard page: the lowest range that fits (see
/// `FreeRanges::find`). With no room, lazily freed areas are purged and
/// the search made once more (Linux's `alloc_vmap_area`).
fn reserve(size: u64, align: u64, lo: VirtAddr, hi: VirtAddr) -> Result<VirtAddr, VmallocError> {
    reserve_masked(size, align, lo, hi, &IrqsMasked::mask())
}

/// [`reserve`] with IRQs `masked` by the caller, who takes another lock
/// under the same mask (a 1-page vmalloc's frame). The mask covers the
/// whole call: a refill of the node spares too (the caches' locks and,
/// when a cache needs a frame, the frame allocator, which under
/// `debug_pagealloc` maps that frame), and the purge of a search that
/// found no room.
fn reserve_masked(
    size: u64,
    align: u64,
    lo: VirtAddr,
    hi: VirtAddr,
    masked: &IrqsMasked,
) -> Result<VirtAddr, VmallocError> {
    let span = size.checked_add(GUARD_SIZE).ok_or(VmallocError::NoVirtualSpace)?;
    let mut purged = false;
    let (mut areas, start) = loop {
        let mut areas = AREAS.lock_masked(masked);
        // The nodes first, from the spares, else from the caches, without
        // the lock (a cache may need a frame): out of memory changes nothing.
        while areas.free_spares.len() < FREE_NODES || areas.area_spares.is_empty() {
            let (free, area) = (SPARES - areas.free_spares.len(), SPARES - areas.area_spares.len());
            drop(areas);
            let mut free_nodes = Spares::new(SPARES);
            nodes(free, || Free { len: 0 }, |n| drop(free_nodes.put(n)))?;
            let mut area_nodes = Spares::new(SPARES);
            nodes(area, || Area { size: 0, kind: Kind::Reserved, spare: None }, |n| drop(area_nodes.put(n)))?;
            areas = AREAS.lock_masked(masked);
            while let Some(n) = free_nodes.take() {
                areas.keep(n);
            }
            while let Some(n) = area_nodes.take() {
                drop(areas.area_spares.put(n));
            }
        }
        if let Some(start) = areas.free.find(span, align, PAGE_SIZE, lo.as_u64(), hi.as_u64()) {
            break (areas, start);
        }
        drop(areas);
        if purged || !purge::purge_vmap_area_lazy() {
            return Err(VmallocError::NoVirtualSpace);
        }
        purged = true;
    };
    let split = areas.free_spares.take().expect("counted above");
    let give_back = areas.free_spares.take().expect("counted above");
    let mut record = areas.area_spares.take().expect("counted above");
    *record.value_mut() = Area { size, kind: Kind::Reserved, spare: Some(give_back) };
    record.rekey(start);
    if let Some(left_over) = areas.free.take(start, span, split) {
        areas.keep(left_over);
    }
    areas.taken.insert(record);
    Ok(VirtAddr::new(start))
}

fn unreserve(start: VirtAddr) {
    let mut areas = AREAS.lock();
    let record = areas.taken.remove(start.as_u64()).expect("a reserved area");
    areas.release(record);
}

/// Gives back a taken area's frames (if it owns them) and its range: it
/// is unmapped, and no TLB holds a translation of it.
fn release(mut record: Record<Area>) {
    if let Kind::Vmalloc(frames) = core::mem::replace(&mut record.value_mut().kind, Kind::Reserved) {
        free_frames(frames.as_slice());
    }
    AREAS.lock().release(record);
}

fn set_kind(start: VirtAddr, kind: Kind) {
    AREAS.lock().taken.get_mut(start.as_u64()).expect("reserved").kind = kind;
}

/// Takes the live area starting at `start` out of the taken areas if
/// `matches(kind)`, in one hold of the lock (Linux's `find_unlink_vmap_area`):
/// while it is torn down it is in no tree, its range neither taken nor free,
/// so no other call can find it, and none can be given it.
fn take_area(start: VirtAddr, matches: impl Fn(&Kind) -> bool) -> Result<Record<Area>, VmallocError> {
    AREAS.lock().taken.remove_if(start.as_u64(), |area| matches(&area.kind)).ok_or(VmallocError::NotAnArea(start))
}

/// The live areas whose frames' linear alias `set_memory_*` changed: it
/// is put back before they go (Linux's `VM_FLUSH_RESET_PERMS`; see
/// `pageattr.rs`). Kept apart from the areas' records, and counted, so
/// that the commonest `vfree` pays one load for it.
static RESET_PERMS: IrqSpinLock<Vec<u64>> = IrqSpinLock::new(Vec::new());
static RESET_PERMS_COUNT: AtomicU64 = AtomicU64::new(0);

/// Does the live area holding `addr` map what vmalloc.rs itself unmaps
/// (`vfree`, `vunmap`), so that the linear alias of its frames can be put
/// back then? Not a `get_vm_area` area: its caller maps and unmaps it.
pub(super) fn resets_perms(addr: VirtAddr) -> bool {
    live_area_start(addr, |kind| matches!(kind, Kind::Vmalloc(_) | Kind::Pages | Kind::Range)).is_some()
}

/// The start of the live area that holds `addr` and whose kind `kind`
/// accepts. (An area being freed is out of the tree: the one below it
/// does not hold `addr`, so a caller racing its own `vfree` finds none.)
fn live_area_start(addr: VirtAddr, kind: impl Fn(&Kind) -> bool) -> Option<u64> {
    let areas = AREAS.lock();
    let (start, area) = areas.taken.at_or_below(addr.as_u64())?;
    (addr.as_u64() - start < area.size && kind(&area.kind)).then_some(start)
}

/// Marks the live area holding `addr` as having had the linear alias of
/// its frames changed.
pub(super) fn set_reset_perms(addr: VirtAddr) {
    // None: the caller freed the area while changing it (its own bug):
    // nothing left to mark.
    let Some(start) = live_area_start(addr, |_| true) else { return };
    let mut marked = RESET_PERMS.lock();
    if !marked.contains(&start) {
        marked.push(start);
        RESET_PERMS_COUNT.fetch_add(1, Ordering::Relaxed);
    }
}

/// Was the area at `start` marked? Unmarks it.
#[inline(always)]
fn take_reset_perms(start: VirtAddr) -> bool {
    RESET_PERMS_COUNT.load(Ordering::Relaxed) != 0 && take_marked(start)
}

#[cold]
#[inline(never)]
fn take_marked(start: VirtAddr) -> bool {
    let mut marked = RESET_PERMS.lock();
    let Some(i) = marked.iter().position(|&s| s == start.as_u64()) else { return false };
    marked.swap_remove(i);
    RESET_PERMS_COUNT.fetch_sub(1, Ordering::Relaxed);
    true
}

/// `size` rounded up to whole pages.
fn page_size(size: u64) -> Result<u64, VmallocError> {
    if size == 0 {
        return Err(VmallocError::ZeroSize);
    }
    size.checked_next_multiple_of(PAGE_SIZE).ok_or(VmallocError::NoVirtualSpace)
}

/// Reserves `size` bytes (rounded up to pages) of the region, aligned to
/// `align`, with its guard page, and maps nothing: the caller maps it, for
/// example with `vmap_range` or `apply_to_page_range`, and unmaps it before
/// [`free_vm_area`].
pub fn get_vm_area(size: u64, align: u64) -> Result<VirtAddr, VmallocError> {
    get_vm_area_range(size, align, VMALLOC_START, VMALLOC_END)
}

/// [`get_vm_area`] with the area (and its guard page) inside [start, end)
/// of the region, the lowest place that fits (Linux's
/// `__get_vm_area_caller` with a start and an end).
pub fn get_vm_area_range(size: u64, align: u64, start: VirtAddr, end: VirtAddr) -> Result<VirtAddr, VmallocError> {
    check_window(start, end)?;
    let va = reserve(page_size(size)?, check_align(align)?, start, end)?;
    set_kind(va, Kind::AddressSpace);
    Ok(va)
}

/// Gives back an area from [`get_vm_area`].
pub fn free_vm_area(addr: VirtAddr) -> Result<(), VmallocError> {
    let mut areas = AREAS.lock();
    let record = areas.taken.remove_if(addr.as_u64(), |area| matches!(area.kind, Kind::AddressSpace));
    areas.release(record.ok_or(VmallocError::NotAnArea(addr))?);
    Ok(())
}

fn check_align(align: u64) -> Result<u64, VmallocError> {
    if !align.is_power_of_two() || align < PAGE_SIZE {
        return Err(VmallocError::BadAlignment(align));
    }
    Ok(align)
}

/// `size` bytes (rounded up to pages) of fresh frames, mapped read/write.
pub fn vmalloc(size: u64) -> Result<VirtAddr, VmallocError> {
    vmalloc_aligned(size, PAGE_SIZE)
}

/// [`vmalloc`], with the area's start aligned to `align`.
pub fn vmalloc_aligned(size: u64, align: u64) -> Result<VirtAddr, VmallocError> {
    alloc_and_map(size, check_align(align)?, (VMALLOC_START, VMALLOC_END), false)
}

/// [`vmalloc`], zeroed.
pub fn vzalloc(size: u64) -> Result<VirtAddr, VmallocError> {
    alloc_and_map(size, PAGE_SIZE, (VMALLOC_START, VMALLOC_END), true)
}

/// [`vmalloc_aligned`], zeroed (Linux's `__vmalloc_node(size, align,
/// GFP_KERNEL | __GFP_ZERO, ...)`).
pub fn vzalloc_aligned(size: u64, align: u64) -> Result<VirtAddr, VmallocError> {
    alloc_and_map(size, check_align(align)?, (VMALLOC_START, VMALLOC_END), true)
}

/// [`vmalloc_aligned`] in [start, end) only, a part of the vmalloc region
/// (Linux's `__vmalloc_node_range`).
pub fn vmalloc_range(size: u64, align: u64, start: VirtAddr, end: VirtAddr) -> Result<VirtAddr, VmallocError> {
    check_window(start, end)?;
    alloc_and_map(size, check_align(align)?, (start, end), false)
}

/// A window of the region: [start, end) not empty, inside the region.
fn check_window(start: VirtAddr, end: VirtAddr) -> Result<(), VmallocError> {
    if start < VMALLOC_START || end > VMALLOC_END || start >= end {
        return Err(VmallocError::Map(MapError::BadRange { start, size: end.as_u64().saturating_sub(start.as_u64()) }));
    }
    Ok(())
}

fn alloc_and_map(size: u64, align: u64, (lo, hi): (VirtAddr, VirtAddr), zero: bool) -> Result<VirtAddr, VmallocError> {
    let _op = pgtable_check::operation();
    let size = page_size(size)?;
    let pages = size / PAGE_SIZE;
    // More than the range can hold, or than the machine has, is refused
    // before anything is taken.
    if size >= hi.offset_from(lo) {
        return Err(VmallocError::NoVirtualSpace);
    }
    // (One page is never more than the machine has: no lock taken for it.)
    if pages > 1 && pages > frame_alloc::stats().total as u64 {
        return Err(VmallocError::OutOfMemory);
    }
    let (va, frames) = if pages == 1 && !debug_pagealloc::enabled() {
        // The range and the frame under one mask of IRQs: two locks, one
        // unmask.
        let masked = IrqsMasked::mask();
        let va = reserve_masked(size, align, lo, hi, &masked)?;
        match frame_alloc::alloc_frame_masked(&masked) {
            Ok(pa) => (va, Frames::One(pa)),
            Err(_) => {
                drop(masked);
                unreserve(va);
                return Err(VmallocError::OutOfMemory);
            }
        }
    } else {
        let va = reserve(size, align, lo, hi)?;
        match Frames::alloc(pages as usize) {
            Ok(frames) => (va, frames),
            Err(e) => {
                unreserve(va);
                return Err(e);
            }
        }
    };
    if zero {
        for &pa in frames.as_slice() {
            // SAFETY: a fresh frame, ours alone, reached through the linear map.
            unsafe { core::ptr::write_bytes(phys_to_virt(pa).as_mut_ptr::<u8>(), 0, PAGE_SIZE as usize) };
        }
    }
    if let Err(e) = vmap_pages_range(va, frames.as_slice(), Attributes::KERNEL_RW) {
        free_frames(frames.as_slice());
        unreserve(va);
        return Err(e);
    }
    set_kind(va, Kind::Vmalloc(frames));
    Ok(va)
}

/// Reserves `size` bytes (whole pages) anywhere in the region, aligned to
/// `align`, for a mapper of vmalloc'd memory in another module
/// (`vmalloc_huge`); it maps the area, then [`set_vmalloc_frames`], or
/// [`unreserve_area`] if it fails.
pub(super) fn reserve_area(size: u64, align: u64) -> Result<VirtAddr, VmallocError> {
    reserve(size, align, VMALLOC_START, VMALLOC_END)
}

/// Gives back an area from [`reserve_area`] that was never made live.
pub(super) fn unreserve_area(va: VirtAddr) {
    unreserve(va);
}

/// Makes the area from [`reserve_area`] at `va` a live vmalloc area owning
/// `frames` (every 4 KiB frame it maps): [`vfree`] unmaps and frees it.
pub(super) fn set_vmalloc_frames(va: VirtAddr, frames: Vec<PhysAddr, Kmalloc>) {
    set_kind(va, Kind::Vmalloc(Frames::Many(frames)));
}

/// Unmaps and frees what `vmalloc` (or `vzalloc`) returned: the entries
/// are cleared now, the TLB flushed and the frames and range given back
/// at the next purge (see `vmalloc/purge.rs`).
pub fn vfree(addr: VirtAddr) -> Result<(), VmallocError> {
    let _op = pgtable_check::operation();
    let record = take_area(addr, |k| matches!(k, Kind::Vmalloc(_)))?;
    if take_reset_perms(addr) {
        free_reset_area(record);
    } else {
        free_unmap_vmap_area(record);
    }
    Ok(())
}

/// Clears a taken area's entries, then puts it on the purge list, or,
/// with the lazy purge off, flushes its range and gives back its frames
/// (if it owns them) and its range at once (Linux's `free_unmap_vmap_area`).
/// (An area whose linear alias was changed goes through
/// [`free_reset_area`] instead.)
fn free_unmap_vmap_area(mut record: Record<Area>) {
    let (va, size) = (VirtAddr::new(record.key()), record.value().size);
    if planted(Bug::VfreeFreesEarly)
        && let Kind::Vmalloc(frames) = core::mem::replace(&mut record.value_mut().kind, Kind::Reserved)
    {
        free_frames(frames.as_slice());
    }
    clear_area_range(va, size);
    if purge::lazy() {
        return purge::free_vmap_area_noflush(record);
    }
    tlb::flush_tlb_kernel_range(va, va.add(size));
    release(record);
}

/// [`free_unmap_vmap_area`] of an area whose frames' linear alias was
/// changed, never freed lazily: after the section that clears the area
/// the alias goes invalid, one flush covers both, the alias is made
/// writable again (`pageattr::reset_linear_alias`; Linux's
/// `vm_reset_perms`, which purges the lazy areas and flushes the direct
/// map in one go), and then the frames and the range are given back.
/// Out of line: the commonest `vfree` does not carry it.
#[cold]
#[inline(never)]
fn free_reset_area(record: Record<Area>) {
    let (va, size) = (VirtAddr::new(record.key()), record.value().size);
    pageattr::reset_linear_alias(va, size, || clear_area_range(va, size));
    release(record);
}

/// Maps `pages` (frames the caller owns and keeps) at a new area, one
/// after another (Linux's `vmap`).
///
/// # Safety
/// Every page is memory the caller may map with `attrs` (a frame it owns,
/// for as long as the mapping lives): the kernel cannot tell a frame the
/// caller owns from any other physical address.
pub unsafe fn vmap_pages(pages: &[PhysAddr], attrs: Attributes) -> Result<VirtAddr, VmallocError> {
    let _op = pgtable_check::operation();
    if pages.is_empty() {
        return Err(VmallocError::EmptyPageList);
    }
    if let Some(&pa) = pages.iter().find(|pa| !pa.is_aligned(PAGE_SIZE)) {
        return Err(VmallocError::Misaligned { what: Operand::Page, value: pa.as_u64() });
    }
    let va = reserve(pages.len() as u64 * PAGE_SIZE, PAGE_SIZE, VMALLOC_START, VMALLOC_END)?;
    if let Err(e) = vmap_pages_range(va, pages, attrs) {
        unreserve(va);
        return Err(e);
    }
    set_kind(va, Kind::Pages);
    Ok(va)
}

/// Unmaps what `vmap_pages` or `vmap_contiguous` returned; the frames stay
/// the caller's. As [`vfree`], the flush waits for the next purge: a
/// caller that frees the frames (or reaches them with other attributes)
/// calls [`vm_unmap_aliases`] first, so that no TLB still maps them here.
pub fn vunmap(addr: VirtAddr) -> Result<(), VmallocError> {
    let _op = pgtable_check::operation();
    let record = take_area(addr, |k| matches!(k, Kind::Pages | Kind::Range))?;
    if take_reset_perms(addr) {
        free_reset_area(record);
    } else {
        free_unmap_vmap_area(record);
    }
    Ok(())
}

/// Maps `pages` one per slot from `va`, in one lazy section (or one per
/// level-3 table, as the apply mode says), all or nothing: a slot already
/// mapped refuses it (EBUSY) before anything changes.
fn vmap_pages_range(va: VirtAddr, pages: &[PhysAddr], attrs: Attributes) -> Result<(), VmallocError> {
    let size = pages.len() as u64 * PAGE_SIZE;
    // SAFETY: the caller's area, mapping pages the caller may map (the
    // callers' own contracts).
    unsafe {
        pgtable::map_leaves(pgtable::kernel_root(), va, size, Pages { frames: pages, attrs }, apply::sections(true))
    }?;
    Ok(())
}

/// Maps [addr, end) of a [`get_vm_area`] area to the physical range from
/// `pa`, with 1 GiB and 2 MiB blocks where both addresses and the size
/// allow, in one lazy section (Linux's `vmap_range(addr, end, phys_addr,
/// prot, ...)`, as ioremap uses it; now `vmap_page_range`). A range that
/// is empty, not page aligned or not inside one live `get_vm_area` area is
/// refused, and so is a slot already mapped; nothing is changed.
///
/// # Safety
/// The `end - addr` bytes from `pa` are memory (or device registers) the
/// caller may map with `attrs`: a writable mapping of a frame someone else
/// owns, or of the kernel's own text, is a way around every rule of the
/// memory model.
pub unsafe fn vmap_range(addr: VirtAddr, end: VirtAddr, pa: PhysAddr, attrs: Attributes) -> Result<(), VmallocError> {
    let _op = pgtable_check::operation();
    let size = range_size(addr, end)?;
    if !pa.is_aligned(PAGE_SIZE) {
        return Err(VmallocError::Misaligned { what: Operand::PhysicalAddress, value: pa.as_u64() });
    }
    refuse_ram(pa, size, attrs)?;
    check_in_address_space(addr, size)?;
    map_contiguous(addr, pa, size, attrs)
}

/// Refuses RAM for a mapping whose memory type is not the linear map's, as
/// Linux's `ioremap_prot()` does (`pfn_is_map_memory()`, arch/arm64/mm/
/// ioremap.c): the linear map keeps every page of RAM mapped Normal
/// write-back, and a Device or non-cacheable mapping beside it is a
/// mismatched-attribute alias, whose accesses may miss what the cacheable
/// alias holds in a cache (pgtable_check's `mismatched-alias` rule).
fn refuse_ram(pa: PhysAddr, size: u64, attrs: Attributes) -> Result<(), VmallocError> {
    if attrs.memory == MemoryType::NormalWriteBack || planted(Bug::DeviceAlias) {
        return Ok(());
    }
    let (mut at, end) = (pa.as_u64(), pa.as_u64().saturating_add(size));
    while at < end {
        let alias = phys_to_virt(PhysAddr::new(at));
        if !in_linear_map(alias) {
            at += PAGE_SIZE;
            continue;
        }
        let found = pgtable::lookup(alias);
        if let Entry::Leaf { .. } = found.entry {
            return Err(VmallocError::RamNotDevice(PhysAddr::new(at)));
        }
        // Nothing of what the walk stopped at is mapped.
        let size = found.level.entry_size();
        at += ((alias.as_u64() | (size - 1)) + 1) - alias.as_u64();
    }
    Ok(())
}

/// The size of [addr, end): refused if either end is not page aligned, or
/// if the range is empty or runs backwards.
fn range_size(addr: VirtAddr, end: VirtAddr) -> Result<u64, VmallocError> {
    if !addr.is_aligned(PAGE_SIZE) {
        return Err(VmallocError::Misaligned { what: Operand::VirtualAddress, value: addr.as_u64() });
    }
    if end == addr {
        return Err(VmallocError::ZeroSize);
    }
    if end < addr {
        let size = end.as_u64().wrapping_sub(addr.as_u64());
        return Err(VmallocError::Map(MapError::BadRange { start: addr, size }));
    }
    if !end.is_aligned(PAGE_SIZE) {
        return Err(VmallocError::Misaligned { what: Operand::End, value: end.as_u64() });
    }
    Ok(end.offset_from(addr))
}

/// [`vmap_range`] into an area whose record the caller holds, checked:
/// 1 GiB and 2 MiB blocks where both addresses and the size allow, in one
/// lazy section (or, as the apply mode says, Linux's: one per level-3
/// table, blocks outside any), all or nothing.
fn map_contiguous(va: VirtAddr, pa: PhysAddr, size: u64, attrs: Attributes) -> Result<(), VmallocError> {
    let leaves = Contiguous { pa, sizes: LeafSizes::Blocks, attrs };
    // SAFETY: the caller may map [pa, pa + size) at its area's [va, va + size).
    unsafe { pgtable::map_leaves(pgtable::kernel_root(), va, size, leaves, apply::sections(true)) }?;
    Ok(())
}

/// Maps contiguous memory at a new area, aligned so that blocks can be used.
///
/// # Safety
/// [pa, pa + size) is memory (or device registers) the caller may map with
/// `attrs`, for as long as the mapping lives (see [`vmap_range`]).
pub unsafe fn vmap_contiguous(pa: PhysAddr, size: u64, attrs: Attributes) -> Result<VirtAddr, VmallocError> {
    let _op = pgtable_check::operation();
    let size = page_size(size)?;
    let align = [BLOCK_1G, BLOCK_2M].into_iter().find(|&b| size >= b && pa.is_aligned(b)).unwrap_or(PAGE_SIZE);
    if !pa.is_aligned(PAGE_SIZE) {
        return Err(VmallocError::Misaligned { what: Operand::PhysicalAddress, value: pa.as_u64() });
    }
    refuse_ram(pa, size, attrs)?;
    let va = reserve(size, align, VMALLOC_START, VMALLOC_END)?;
    if let Err(e) = map_contiguous(va, pa, size, attrs) {
        unreserve(va);
        return Err(e);
    }
    set_kind(va, Kind::Range);
    Ok(va)
}

/// Unmaps [addr, end) of a `get_vm_area` area (Linux's
/// `vunmap_range(addr, end)`): clears the valid leaves (pages, runs and
/// blocks) in one lazy section and flushes the TLB for what it cleared
/// once. The page-table pages stay, as in Linux (see
/// [`reclaim_page_tables`]). A range that is empty, not page aligned, or
/// not inside one live `get_vm_area` area is refused, with nothing
/// changed: safe code can unmap only what a `get_vm_area` caller maps
/// itself, never vmalloc's, a stack or the linear map.
///
/// A range that covers only part of a block or of a contiguous run is
/// improper use, which Linux does not refuse: it warns and unmaps the
/// whole block or run (61ef8ddaa35e, 2fba13371fe8). So does this, with a
/// printed warning for each of Linux's `WARN_ON`s ([`vunmap_warnings`]
/// counts them), and its flush covers the whole of what it cleared
/// (Linux's covers [addr, end) only; the rest of a run may still be in a
/// TLB then, which the rule `contiguous` reports).
pub fn vunmap_range(addr: VirtAddr, end: VirtAddr) -> Result<(), VmallocError> {
    let _op = pgtable_check::operation();
    let size = range_size(addr, end)?;
    check_in_address_space(addr, size)?;
    let (start, size) = whole_leaves(addr, size);
    // A leaf the caller mapped lies inside its area; anything else was
    // not the caller's to unmap.
    check_in_address_space(start, size)?;
    unmap_area_range(start, size);
    Ok(())
}

/// Linux's `WARN_ON`s for partial unmaps since boot (see [`vunmap_range`]).
static VUNMAP_WARNINGS: AtomicU64 = AtomicU64::new(0);

/// How many warnings [`vunmap_range`] printed since boot: one for each
/// `WARN_ON` Linux's vunmap takes on the same range.
pub fn vunmap_warnings() -> u64 {
    VUNMAP_WARNINGS.load(Ordering::Relaxed)
}

/// [addr, addr + size) widened at either end to the whole block or run
/// it cuts, as Linux's vunmap clears, with a warning where Linux warns:
/// a block cut once per block (`vunmap_pmd_range`'s `WARN_ON`), a run
/// once for a start inside it and once for an end inside it
/// (`vunmap_pte_range`'s two).
fn whole_leaves(addr: VirtAddr, size: u64) -> (VirtAddr, u64) {
    let walk = pgtable::walking();
    let tables = pgtable::KernelTables::new(&walk);
    let last = addr.add(size - PAGE_SIZE);
    let first_leaf = engine::huge_leaf_at(&tables, walk.root(), addr);
    let last_leaf = engine::huge_leaf_at(&tables, walk.root(), last);
    let mut start = addr;
    let mut end = addr.add(size);
    let warn = |leaf: (VirtAddr, u64), why: &str| {
        VUNMAP_WARNINGS.fetch_add(1, Ordering::Relaxed);
        let what = if leaf.1 == CONT_PTE_SIZE { "contiguous run" } else { "block" };
        println!(
            "lazymmu: WARNING: vunmap_range({addr}, {}) {why} the {what} at {} ({:#x} bytes): unmapping all of it, as Linux does",
            addr.add(size),
            leaf.0,
            leaf.1
        );
    };
    if let Some(leaf) = first_leaf
        && leaf.0 != addr
    {
        warn(leaf, "starts inside");
        start = leaf.0;
    }
    if let Some(leaf) = last_leaf
        && leaf.0.add(leaf.1) != end
    {
        // One WARN_ON per block whatever its ends; a run has one per end.
        if !(Some(leaf) == first_leaf && leaf.0 != addr && leaf.1 != CONT_PTE_SIZE) {
            warn(leaf, "ends inside");
        }
        end = leaf.0.add(leaf.1);
    }
    (start, end.offset_from(start))
}

/// Checks that [va, va + size), a range [`range_size`] accepted, lies
/// inside one live area from [`get_vm_area`] (whose caller maps and
/// unmaps it).
fn check_in_address_space(va: VirtAddr, size: u64) -> Result<(), VmallocError> {
    let areas = AREAS.lock();
    match areas.taken.at_or_below(va.as_u64()) {
        Some((start, area))
            if matches!(area.kind, Kind::AddressSpace)
                && size <= area.size
                && va.as_u64() - start <= area.size - size =>
        {
            Ok(())
        }
        _ => Err(VmallocError::NotAnArea(va)),
    }
}

/// [`vunmap_range`] for an area whose record the caller holds: the
/// engine's clear, in one lazy section, a level-3 table's part of the
/// range in one run (Linux's `vunmap_pte_range`).
fn unmap_area_range(va: VirtAddr, size: u64) {
    clear_area_range(va, size);
    // The tables stay, as Linux's vunmap leaves them: the next mapping
    // there needs none, and nothing has to wait for walks to end. One
    // flush of the leaves.
    tlb::flush_tlb_kernel_range(va, va.add(size));
}

/// The clear of [`unmap_area_range`], with no flush: the caller owes it.
fn clear_area_range(va: VirtAddr, size: u64) {
    let walk = pgtable::walking();
    // SAFETY: the range is the caller's (see the callers).
    unsafe { engine::clear(&pgtable::KernelTables::new(&walk), walk.root(), va, size, Sections::WholeCall) };
}

/// Takes away every empty page-table page of the vmalloc region (unlink,
/// one flush of their walks, free), waiting until no walk is in progress,
/// and returns how many went. Unmapping leaves the tables in place, as
/// Linux does; this is the explicit reclaim, for a caller that wants the
/// memory back (the test harness, between tests).
pub fn reclaim_page_tables() -> usize {
    let _op = pgtable_check::operation();
    let size = VMALLOC_END.offset_from(VMALLOC_START);
    // SAFETY: the kernel's own root.
    unsafe {
        pgtable::reclaim_empty_tables(
            pgtable::exclusive(),
            pgtable::kernel_root(),
            VMALLOC_START,
            size,
            tlb::Changed::NOTHING,
            pgtable::Cleared::Unknown,
        )
    }
}

/// Takes an area away whatever its kind and state, as if its owner had
/// given it back: unmapped (one flush), its vmalloc frames freed, its
/// record gone. For the test harness, after a test that left it behind
/// (or was abandoned half way through making it). Debug builds only.
#[cfg(debug_assertions)]
pub(crate) fn release_leaked_area(start: VirtAddr) -> Result<(), VmallocError> {
    let _op = pgtable_check::operation();
    let record = take_area(start, |_| true)?;
    let size = record.value().size;
    if take_reset_perms(start) {
        pageattr::reset_linear_alias(start, size, || clear_area_range(start, size));
    } else {
        unmap_area_range(start, size);
    }
    release(record);
    Ok(())
}

fn free_frames(frames: &[PhysAddr]) {
    frame_alloc::free_frames_bulk(frames).expect("allocated by vmalloc");
}
