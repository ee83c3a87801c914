//! The bench's workloads. Each does its setup and teardown outside the
//! measured part and returns one [`Sample`] per phase it measures.

use core::convert::Infallible;

use super::peer::{self, PeerError};
use super::{Counts, Meter, Sample};
use lazymmu::barrier;
use lazymmu::mm::{
    self, ApplyError, Attributes, BLOCK_1G, BLOCK_2M, Descriptor, FlushStrategy, Level, PAGE_SIZE, PhysAddr, VirtAddr,
    VmallocError, apply_to_existing_page_range_by_table, apply_to_page_range_by_table, frame_alloc,
    pgtable::{self, MapError, Ptes},
    phys_to_virt, set_memory_ro, set_memory_rw, vfree, vmalloc,
};

/// What stops a workload: the machine ran out of something. (Its fields
/// are read when it is printed, `{:?}`, which the dead-code lint does not
/// count.)
#[allow(dead_code)]
#[derive(Debug)]
pub enum WorkloadError {
    Vmalloc(VmallocError),
    Map(MapError),
    Peer(PeerError),
}

impl From<PeerError> for WorkloadError {
    fn from(e: PeerError) -> Self {
        WorkloadError::Peer(e)
    }
}

impl From<VmallocError> for WorkloadError {
    fn from(e: VmallocError) -> Self {
        WorkloadError::Vmalloc(e)
    }
}

impl From<MapError> for WorkloadError {
    fn from(e: MapError) -> Self {
        WorkloadError::Map(e)
    }
}

impl<E> From<ApplyError<E>> for WorkloadError {
    fn from(e: ApplyError<E>) -> Self {
        match e {
            ApplyError::Map(e) => WorkloadError::Map(e),
            ApplyError::Callback(_) => unreachable!("bench callbacks do not fail"),
        }
    }
}

/// Writes one word to every page, so each one is really used.
fn touch(va: VirtAddr, pages: u64) {
    for i in 0..pages {
        // SAFETY: the caller just mapped these pages for itself.
        unsafe { core::ptr::write_volatile(va.add(i * PAGE_SIZE).as_mut_ptr::<u64>(), i) };
    }
}

/// The phases of vmalloc + touch + vfree of `pages` pages:
/// (vmalloc, vfree, the whole cycle with the touch).
pub fn vmalloc_cycle(pages: u64) -> Result<[Sample; 3], WorkloadError> {
    let whole = Meter::start();
    let map = Meter::start();
    let va = vmalloc(pages * PAGE_SIZE)?;
    let map = map.stop();
    touch(va, pages);
    let unmap = Meter::start();
    vfree(va)?;
    let unmap = unmap.stop();
    let whole = whole.stop();
    cold_tables();
    Ok([map, unmap, whole])
}

/// One loop of test_vmalloc's `fix_size_alloc_test`: vmalloc, touch one
/// byte, vfree, with the tables a first call left (as every call of the
/// test's loop but its first finds them; `vmalloc_cycle` starts cold).
pub fn fix_size_call(pages: u64) -> Result<Sample, WorkloadError> {
    vfree(vmalloc(pages * PAGE_SIZE)?)?;
    let meter = Meter::start();
    let va = vmalloc(pages * PAGE_SIZE)?;
    // SAFETY: the first byte of the area just allocated.
    unsafe { core::ptr::write_volatile(va.as_mut_ptr::<u8>(), 0) };
    vfree(va)?;
    let sample = meter.stop();
    cold_tables();
    Ok(sample)
}

/// `live` 1-page areas of address space (`get_vm_area_range`: records
/// only, no frame, no table), one every four pages from the lowest free
/// address, each followed by a free hole of two pages (a page and its
/// guard): both trees of ranges, the taken and the free, hold `live`
/// nodes, and a 1-page vmalloc fits the first hole. Given back when
/// dropped. No list is kept: area `i` is at `base + 4 i` pages.
pub struct LiveAreas {
    base: VirtAddr,
    count: u64,
}

/// The pages from one live area to the next.
const LIVE_STRIDE: u64 = 4 * PAGE_SIZE;

impl LiveAreas {
    pub fn new(live: u64) -> Result<LiveAreas, WorkloadError> {
        let base = mm::get_vm_area(PAGE_SIZE, PAGE_SIZE)?;
        mm::free_vm_area(base)?;
        let mut areas = LiveAreas { base, count: 0 };
        while areas.count < live {
            let at = base.add(areas.count * LIVE_STRIDE);
            let va = mm::get_vm_area_range(PAGE_SIZE, PAGE_SIZE, at, at.add(PAGE_SIZE + mm::GUARD_SIZE))?;
            debug_assert_eq!(va, at);
            areas.count += 1;
        }
        Ok(areas)
    }
}

impl Drop for LiveAreas {
    fn drop(&mut self) {
        for i in 0..self.count {
            mm::free_vm_area(self.base.add(i * LIVE_STRIDE)).expect("taken by new");
        }
    }
}

/// The phases of vmalloc_huge + touch + vfree of `pages` pages (64 KiB:
/// one contiguous run; 2 MiB and up: blocks): (vmalloc_huge, vfree).
pub fn vmalloc_huge_cycle(pages: u64) -> Result<[Sample; 2], WorkloadError> {
    let map = Meter::start();
    let va = lazymmu::mm::vmalloc_huge(pages * PAGE_SIZE)?;
    let map = map.stop();
    touch(va, pages);
    let unmap = Meter::start();
    vfree(va)?;
    let unmap = unmap.stop();
    cold_tables();
    Ok([map, unmap])
}

/// vmalloc's tables stay after an unmap (as Linux's do): every sample
/// starts from none, so that each one makes the tables it needs, and
/// every repeat counts the same. What was freed lazily is purged first,
/// outside the samples: each starts with nothing pending.
fn cold_tables() {
    mm::vm_unmap_aliases();
    mm::reclaim_page_tables();
}

/// Makes a live vmalloc area read-only with
/// `apply_to_existing_page_range_by_table` (`modify_ptes`, a table at a
/// time) and one TLB flush: the permission change Linux's set_memory_* does.
pub fn modify(pages: u64) -> Result<Sample, WorkloadError> {
    let va = vmalloc(pages * PAGE_SIZE)?;
    touch(va, pages);
    let meter = Meter::start();
    let changed = make_read_only(va, pages);
    let sample = meter.stop();
    vfree(va)?;
    cold_tables();
    changed.map(|()| sample)
}

fn make_read_only(va: VirtAddr, pages: u64) -> Result<(), WorkloadError> {
    apply_to_existing_page_range_by_table(va, pages * PAGE_SIZE, |ptes: &Ptes| {
        // SAFETY: pages of the bench's own area (holes are skipped),
        // write taken away; the flush follows.
        unsafe { pgtable::modify_ptes(ptes, Descriptor::read_only) };
        Ok::<(), Infallible>(())
    })?;
    mm::flush_tlb_kernel_range(va, va.add(pages * PAGE_SIZE));
    Ok(())
}

/// `set_memory_ro` then `set_memory_rw` over a live vmalloc area.
pub fn set_memory(pages: u64) -> Result<Sample, WorkloadError> {
    let va = vmalloc(pages * PAGE_SIZE)?;
    // The frames' linear alias follows the change: with BBML2_NOABORT the
    // first change splits the linear-map blocks it cuts, and they stay
    // split (as in Linux). What is measured is the change itself.
    if let Err(e) = set_memory_ro(va, pages).and_then(|()| set_memory_rw(va, pages)) {
        vfree(va)?;
        return Err(WorkloadError::Map(e));
    }
    let meter = Meter::start();
    let changed = set_memory_ro(va, pages).and_then(|()| set_memory_rw(va, pages));
    let sample = meter.stop();
    vfree(va)?;
    cold_tables();
    changed.map(|()| sample).map_err(WorkloadError::Map)
}

/// `vmap_contiguous` of the GiB of RAM that holds the kernel (read-only,
/// one level-1 block) and its `vunmap`: (map, unmap).
pub fn vmap_1g() -> Result<[Sample; 2], WorkloadError> {
    let ram = lazymmu::dtb::info().ram_start.align_down(BLOCK_1G);
    let map = Meter::start();
    // SAFETY: RAM, read-only: it is mapped so already (the linear map).
    let va = unsafe { mm::vmap_contiguous(ram, BLOCK_1G, Attributes::KERNEL_RO) }?;
    let map = map.stop();
    let unmap = Meter::start();
    mm::vunmap(va)?;
    let unmap = unmap.stop();
    cold_tables();
    Ok([map, unmap])
}

/// The floor: the same number of page descriptors stored into plain
/// memory by a loop, with one `dsb ishst; isb` at the end, and nothing
/// else (no walk, no allocation, no lazy MMU bookkeeping).
pub fn floor(pages: u64) -> Result<Sample, WorkloadError> {
    let tables = pages.div_ceil(512) as usize;
    let scratch = frame_alloc::alloc_contiguous(tables, PAGE_SIZE).map_err(MapError::from)?;
    let slots = phys_to_virt(scratch).as_mut_ptr::<u64>();
    let target = PhysAddr::new(0x4000_0000);
    let meter = Meter::start();
    for i in 0..pages {
        let desc = Descriptor::leaf(Level::L3, target.add(i * PAGE_SIZE), Attributes::KERNEL_RW);
        // SAFETY: `tables` fresh frames hold 512 slots each; nothing walks them.
        unsafe { core::ptr::write_volatile(slots.add(i as usize), desc.0) };
    }
    barrier::dsb_ishst();
    barrier::isb();
    let mut sample = meter.stop();
    sample.counts.entries = pages;
    frame_alloc::free_frames(scratch, tables).expect("allocated above");
    Ok(sample)
}

/// What one reservation of address space costs (`get_vm_area` of a page,
/// then `free_vm_area`) with `live` areas already live: counter ticks per
/// pair, over `pairs` pairs. The live areas are taken first and given
/// back after, and are not timed.
pub fn reserve_with_live_areas(live: usize, pairs: usize) -> Result<u64, WorkloadError> {
    let mut areas = alloc::vec::Vec::new();
    areas.try_reserve_exact(live).map_err(|_| VmallocError::OutOfMemory)?;
    let filled = (0..live).try_for_each(|_| {
        areas.push(mm::get_vm_area(PAGE_SIZE, PAGE_SIZE)?);
        Ok::<(), VmallocError>(())
    });
    let timed = filled.and_then(|()| {
        let start = lazymmu::cpu::counter();
        for _ in 0..pairs {
            mm::free_vm_area(mm::get_vm_area(PAGE_SIZE, PAGE_SIZE)?)?;
        }
        Ok((lazymmu::cpu::counter() - start) / pairs as u64)
    });
    for va in areas {
        mm::free_vm_area(va).expect("taken above");
    }
    Ok(timed?)
}

/// The pages [`grow_softmmu_tlb`] touches: the bench's largest N.
pub const GROWN_PAGES: u64 = 65536;

/// Lets QEMU shrink its software TLB back to what the kernel uses while
/// idle, so that a TLB flush timed next costs what its own pages make it
/// cost, not what ran before it.
///
/// Under TCG each CPU's software TLB is a table QEMU sizes to the guest's
/// recent use (accel/tcg/cputlb.c, `tlb_mmu_resize_locked`): at a full
/// flush it doubles when more than 70% of it was used since the last
/// resize, and it shrinks, to fit the most used, only at a full flush
/// after a 100 ms window of low use. A full flush clears the whole table
/// (`tlb_mmu_flush_locked`, a `memset`), so `tlbi vmalle1is` costs in
/// proportion to the table: to what the guest touched lately, not to the
/// range flushed. (A hardware TLB has a fixed size; there a full flush
/// costs its refills afterwards.)
///
/// Three windows of more than 100 ms that touch nothing, each ended by a
/// full flush (QEMU resizes only then, and the first still sees the
/// window the last workload used): about a third of a second.
pub fn settle_softmmu_tlb() {
    let window = lazymmu::cpu::counter_frequency() * 110 / 1000;
    let anywhere = VirtAddr::new(0xffff_8000_0000_0000);
    for _ in 0..3 {
        let end = lazymmu::cpu::counter() + window;
        while lazymmu::cpu::counter() < end {
            core::hint::spin_loop();
        }
        mm::flush_tlb_kernel_range_with(FlushStrategy::All, anywhere, anywhere.add(PAGE_SIZE));
    }
}

/// Makes QEMU grow its software TLB (see [`settle_softmmu_tlb`]) as a
/// large workload does: [`GROWN_PAGES`] pages touched, then a full flush,
/// twelve times (the table doubles at most once per flush, and only after
/// use: from QEMU's smallest, 2^6 entries, twelve doublings pass 2^17, the
/// size that holds these pages at under 70%).
pub fn grow_softmmu_tlb() -> Result<(), WorkloadError> {
    let va = vmalloc(GROWN_PAGES * PAGE_SIZE)?;
    for _ in 0..12 {
        touch(va, GROWN_PAGES);
        mm::flush_tlb_kernel_range_with(FlushStrategy::All, va, va.add(GROWN_PAGES * PAGE_SIZE));
    }
    vfree(va)?;
    cold_tables();
    Ok(())
}

/// One flush of `pages` live, touched pages with the strategy given.
pub fn tlb_unmap(pages: u64, how: FlushStrategy) -> Result<Sample, WorkloadError> {
    let va = vmalloc(pages * PAGE_SIZE)?;
    touch(va, pages);
    let meter = Meter::start();
    mm::flush_tlb_kernel_range_with(how, va, va.add(pages * PAGE_SIZE));
    let sample = meter.stop();
    vfree(va)?;
    cold_tables();
    Ok(sample)
}

/// Runs `steps` on `pages` physically contiguous frames (the run's
/// [`ReservedFrames`], or fresh ones outside a run) and a fresh 2 MiB-aligned
/// area of as many pages (`steps(va, frames)`), and gives back what it took
/// whatever it returns: the setup of the map / modify / unmap comparisons
/// (lazymmu's here, the ideal loop's in `ideal`).
pub fn with_fresh_area(
    pages: u64,
    steps: impl FnOnce(VirtAddr, PhysAddr) -> Result<[Sample; 3], WorkloadError>,
) -> Result<[Sample; 3], WorkloadError> {
    let reserved = RESERVED_FRAMES.lock().filter(|&(_, held)| held >= pages).map(|(pa, _)| pa);
    let frames = match reserved {
        Some(pa) => pa,
        None => frame_alloc::alloc_contiguous(pages as usize, PAGE_SIZE).map_err(MapError::from)?,
    };
    let give_back = || {
        if reserved.is_none() {
            frame_alloc::free_frames(frames, pages as usize).expect("allocated above");
        }
    };
    let va = match mm::get_vm_area(pages * PAGE_SIZE, BLOCK_2M) {
        Ok(va) => va,
        Err(e) => {
            give_back();
            return Err(e.into());
        }
    };
    let measured = steps(va, frames);
    give_back();
    mm::free_vm_area(va)?;
    measured
}

/// The physically contiguous frames [`with_fresh_area`] maps, taken once
/// when a run starts (`ReservedFrames::take`) and given back when it ends:
/// (first frame, frames). At boot the free frames are one run; later in
/// the run they are as many but no longer contiguous at the largest N
/// (256 MiB): the set_memory workloads split the linear map's blocks over
/// frames all over RAM, and those tables stay (as in Linux), and slab
/// frames come and go.
static RESERVED_FRAMES: spin::Mutex<Option<(PhysAddr, u64)>> = spin::Mutex::new(None);

/// The run's hold on [`RESERVED_FRAMES`].
pub struct ReservedFrames(());

impl ReservedFrames {
    /// Takes `pages` contiguous frames for the run's fresh areas.
    pub fn take(pages: u64) -> Result<ReservedFrames, WorkloadError> {
        let pa = frame_alloc::alloc_contiguous(pages as usize, PAGE_SIZE).map_err(MapError::from)?;
        let mut reserved = RESERVED_FRAMES.lock();
        assert!(reserved.is_none(), "one run at a time");
        *reserved = Some((pa, pages));
        Ok(ReservedFrames(()))
    }
}

impl Drop for ReservedFrames {
    fn drop(&mut self) {
        if let Some((pa, pages)) = RESERVED_FRAMES.lock().take() {
            frame_alloc::free_frames(pa, pages as usize).expect("taken by ReservedFrames::take");
        }
    }
}

/// lazymmu's side of the peer comparison, the same steps the peer takes
/// on its own tables: map `pages` pages at a fresh 2 MiB-aligned area
/// (tables included), make them read-only, unmap them (freeing the
/// tables, as the peer does). Ours are live, so modify and unmap also
/// flush the TLB. Each step uses the calls a kernel user would: the
/// `_by_table` apply variants with `set_ptes` and `modify_ptes` (a loop
/// per level-3 table, Linux's `set_ptes` shape), and `pgtable::clear_range`
/// (clear, take the tables away, one flush: memory hot-remove's unmap).
pub fn map_modify_unmap(pages: u64) -> Result<[Sample; 3], WorkloadError> {
    with_fresh_area(pages, |va, frames| {
        let size = pages * PAGE_SIZE;
        let map = Meter::start();
        let template = Descriptor::leaf_template(Level::L3, Attributes::KERNEL_RW);
        let mapped = apply_to_page_range_by_table(va, size, |ptes: &Ptes| {
            let pa = frames.add(ptes.va().offset_from(va));
            // SAFETY: the bench's own frames, in its own area.
            unsafe { pgtable::set_ptes(ptes, template.with_output(pa)) };
            Ok::<(), Infallible>(())
        });
        let map = map.stop();
        let modify = Meter::start();
        let modified = mapped.map_err(WorkloadError::from).and_then(|_| make_read_only(va, pages));
        let modify = modify.stop();
        // Unmapped as the peer unmaps, with the kernel's call for it: the
        // leaves cleared in one section, a table at a time, the tables
        // freed, one flush for both.
        let unmap = Meter::start();
        // SAFETY: the kernel's own root and the bench's own area, which
        // nothing else maps into.
        let cleared = unsafe { pgtable::clear_range(pgtable::kernel_root(), va, size) };
        let unmap = unmap.stop();
        cleared.expect("the bench's own mapping");
        modified?;
        Ok([map, modify, unmap])
    })
}

/// The peer's map / modify / unmap of `pages` pages on its own tables,
/// live or never live (see `peer`). Its barriers and TLBIs are its own
/// `asm!`: not counted. It writes one descriptor per page plus, to map and
/// to unmap, one per table it links or unlinks below its root.
pub fn peer_map_modify_unmap(pages: u64, live: bool) -> Result<[Sample; 3], WorkloadError> {
    let run = peer::run(pages, live)?;
    let links = run.tables as u64 - 1;
    let sample =
        |s: Sample, entries| Sample { counts: Counts { entries, ..Counts::default() }, barriers_unknown: true, ..s };
    Ok([sample(run.map, pages + links), sample(run.modify, pages), sample(run.unmap, pages + links)])
}
