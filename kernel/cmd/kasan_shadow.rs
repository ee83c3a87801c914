//! A model of KASAN's vmalloc shadow population (Linux mm/kasan/shadow.c),
//! kept to show why `lazy_mmu_mode_pause()` exists (the review of "mm: introduce
//! generic lazy_mmu helpers", <20251029100909.3381140-7-kevin.brodsky@arm.com>).
//!
//! Two tasks populate the same shadow page through `apply_to_page_range`.
//! Each callback checks the entry, takes a frame, and under a spinlock maps
//! it only if the entry is still none; the loser frees its frame. Each task
//! is switched out twice, at fixed points (preemption is off, so those are
//! the only switches): between its entry write and the lock release, where
//! the other task gets as far as waiting for the lock; and right after the
//! release, while its own section is still open, where the waiter takes the
//! lock, as a task spinning on a second CPU would. On one CPU a waiter
//! yields instead of spinning, or the holder would never run again.
//!
//! - `batched`: the store is in memory at once; the second task sees it.
//! - `deferred-writes` without pause: the winner's store is still queued in
//!   its task, so the loser also reads "none" and maps a second frame over
//!   it when its own queue is applied: a double mapping, and a leaked frame.
//! - with pause/resume around the locked part the store is made before the
//!   lock is dropped, and the race is gone under every backend.
//!
//! The same callback is also the page-allocator RFC's (<20250530140446.2387131-4-ryan.roberts@arm.com>)
//! example of allocating inside lazy
//! mode: [`populate_shadow`] counts what it costs with its callbacks in lazy
//! mode (under `debug_pagealloc` each allocation nests a section) and with
//! the `_nolazy` variant.
//!
//! The boot binary (`demo kasan`, `demo pagealloc`) and the test images
//! that race it compile this file each for themselves.

// A task's outcome carries a caught fault's message in a fixed buffer (see
// `lazymmu::exception`): its `Result`s are large on purpose.
#![allow(clippy::result_large_err)]

use alloc::vec::Vec;
use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};

use lazymmu::mm::{
    ApplyError, Attributes, Descriptor, Level, PAGE_SIZE, PhysAddr, VirtAddr, VmallocError, apply_to_page_range,
    apply_to_page_range_nolazy, frame_alloc, free_vm_area, get_vm_area,
    lazy_mmu::{self, LazyMmuStats, stats},
    pgtable::{self, EntryRef},
    pgtable_check::{self, Rule},
    phys_to_virt, probe, vunmap_range,
};
use lazymmu::sched;

/// The lock KASAN takes (init_mm's page_table_lock). Not an IRQ lock: its
/// holder may be switched out, as a task on another CPU would keep running.
static SHADOW_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// The frames each populate call mapped, for the race's bookkeeping.
static INSTALLED: spin::Mutex<Vec<PhysAddr>> = spin::Mutex::new(Vec::new());

/// What one race between two populating tasks did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaceOutcome {
    /// Times a task found the entry none under the lock and mapped a frame.
    pub installs: usize,
    /// Installs beyond the first: the shadow page was mapped twice.
    pub double_mappings: usize,
    /// Break-before-make violations the page-table rules checker reported
    /// meanwhile: each double mapping replaces a live page by another
    /// frame with no break-before-make (0 when the checker is off).
    pub bbm_reports: u64,
}

/// Where the two populating sides run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Racers {
    /// Two tasks on one CPU, switched at fixed points.
    OneCpu,
    /// Two CPUs at once: no switch needed (the SMP test image's race).
    #[allow(dead_code, reason = "the demo runs on one CPU; tests/smp.rs races two")]
    TwoCpus,
}

/// The apply_to_page_range callback, `kasan_populate_vmalloc_pte` in shape.
fn populate(entry: &EntryRef, pause: bool, racers: Racers) -> Result<(), VmallocError> {
    let switch = || {
        if racers == Racers::OneCpu {
            sched::yield_now();
        }
    };
    let paused = pause.then(lazy_mmu::pause);
    if entry.read().is_valid() {
        return Ok(());
    }
    let frame = frame_alloc::alloc_frame().map_err(|_| VmallocError::OutOfMemory)?;
    let lock = lock_shadow(racers);
    let install = !entry.read().is_valid();
    if install {
        // SAFETY: a shadow slot still empty under the shadow lock, mapping
        // a frame just allocated.
        unsafe { pgtable::write_entry(entry, Descriptor::leaf(Level::L3, frame, Attributes::KERNEL_RW)) };
    }
    // Written, not yet unlocked: the other task runs up to the lock.
    switch();
    drop(lock);
    drop(paused);
    if install {
        INSTALLED.lock().push(frame);
    } else {
        frame_alloc::free_frame(frame).expect("allocated above");
    }
    // Unlocked, this task's section still open: the waiter takes the lock.
    switch();
    Ok(())
}

/// Takes the shadow lock; on one CPU a waiter yields to the holder.
fn lock_shadow(racers: Racers) -> spin::MutexGuard<'static, ()> {
    loop {
        if let Some(guard) = SHADOW_LOCK.try_lock() {
            return guard;
        }
        match racers {
            Racers::OneCpu => sched::yield_now(),
            Racers::TwoCpus => core::hint::spin_loop(),
        }
    }
}

/// Races two tasks populating one shadow page; `pause` puts pause/resume
/// around the locked part. Leaves no frame, table or area behind.
pub fn shadow_race(pause: bool) -> Result<RaceOutcome, VmallocError> {
    // The tables exist before the race, so it is about the leaf entry alone
    // (a table linked inside one task's section would race the same way).
    let va = shadow_area(PAGE_SIZE)?;
    INSTALLED.lock().clear();
    // The tasks switch exactly where `populate` yields, every time.
    let preemption = sched::set_preemption(false);
    let racer = move || {
        apply_to_page_range(va, PAGE_SIZE, |entry: &EntryRef| populate(entry, pause, Racers::OneCpu)).map(|_| ())
    };
    let (failure, reports) = pgtable_check::expecting(Rule::BreakBeforeMake, || {
        let tasks = [
            sched::spawn("kasan/a", move || racer().expect("populate")),
            sched::spawn("kasan/b", move || racer().expect("populate")),
        ];
        let mut failure = None;
        for task in tasks {
            match task.map_err(VmallocError::from).map(|t| t.join()) {
                Ok(Ok(())) => {}
                Ok(Err(_)) => failure = Some(VmallocError::OutOfMemory),
                Err(e) => failure = Some(e),
            }
        }
        failure
    });
    sched::set_preemption(preemption);
    // Clean up: the frame in the entry now, and any it replaced.
    let installs = release_shadow_area(va, PAGE_SIZE, core::mem::take(&mut *INSTALLED.lock()))?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(RaceOutcome { installs, double_mappings: installs.saturating_sub(1), bbm_reports: reports.total() })
}

/// Why a two-CPU race could not run.
#[allow(dead_code, reason = "the demo runs on one CPU; tests/smp.rs races two")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwoCpuRaceError {
    /// That CPU is not online, or is this one, or is busy.
    CpuNotAvailable(usize),
    Vmalloc(VmallocError),
}

impl From<VmallocError> for TwoCpuRaceError {
    fn from(e: VmallocError) -> Self {
        TwoCpuRaceError::Vmalloc(e)
    }
}

/// The same race as a real one between two CPUs: this
/// CPU and CPU `other` populate the same `pages` shadow pages at the same
/// moment, with no switch at all. Each side's section spans all the pages,
/// so a store one side made under the lock may still sit in its queue when
/// the other side, holding the lock next, looks at the entry.
#[allow(dead_code, reason = "the demo runs on one CPU; tests/smp.rs races two")]
pub fn shadow_race_two_cpus(other: usize, pause: bool, pages: u64) -> Result<RaceOutcome, TwoCpuRaceError> {
    let size = pages * PAGE_SIZE;
    let va = shadow_area(size)?;
    INSTALLED.lock().clear();
    static GO: AtomicBool = AtomicBool::new(false);
    static READY: AtomicBool = AtomicBool::new(false);
    GO.store(false, SeqCst);
    READY.store(false, SeqCst);
    let racer =
        move || apply_to_page_range(va, size, |entry: &EntryRef| populate(entry, pause, Racers::TwoCpus)).map(|_| ());
    let remote = lazymmu::smp::run_on(other, move || {
        READY.store(true, SeqCst);
        while !GO.load(SeqCst) {
            core::hint::spin_loop();
        }
        racer().expect("populate on the other CPU");
    });
    let (failure, reports) = pgtable_check::expecting(Rule::BreakBeforeMake, || match remote {
        Some(remote) => {
            while !READY.load(SeqCst) {
                core::hint::spin_loop();
            }
            GO.store(true, SeqCst);
            (racer().is_err() || remote.wait().is_err()).then_some(TwoCpuRaceError::Vmalloc(VmallocError::OutOfMemory))
        }
        None => Some(TwoCpuRaceError::CpuNotAvailable(other)),
    });
    let installs = release_shadow_area(va, size, core::mem::take(&mut *INSTALLED.lock()))?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(RaceOutcome { installs, double_mappings: installs.saturating_sub(pages as usize), bbm_reports: reports.total() })
}

/// KASAN's byte for vmalloc shadow that is mapped but not in use yet.
const KASAN_VMALLOC_INVALID: u8 = 0xf8;

/// How [`populate_shadow`] runs its callbacks: the page-allocator RFC's two answers to
/// "the callback allocates".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Populate {
    /// `apply_to_page_range`: callbacks in lazy mode, so under
    /// `debug_pagealloc` each allocation's map-back nests a section.
    Lazy,
    /// `apply_to_page_range_nolazy`: callbacks outside lazy mode.
    NoLazy,
}

/// What one populate call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Populated {
    /// The call's cost as the selected backend counted it.
    pub stats: LazyMmuStats,
    /// Frame allocations made while lazy mode was active.
    pub allocations_in_lazy_mode: u64,
    /// New shadow frames that faulted when poisoned through the linear map.
    pub faults: u64,
}

impl Populated {
    /// The figures `demo pagealloc` prints and its tests check: (entry
    /// writes, dsb ishst, isb, nested exits, allocations in lazy mode,
    /// faults).
    pub fn row(&self) -> (u64, u64, u64, u64, u64, u64) {
        let s = &self.stats;
        (s.entry_writes, s.barriers.dsb_ishst, s.barriers.isb, s.flushes, self.allocations_in_lazy_mode, self.faults)
    }
}

/// Populates the shadow of `pages` fresh pages the way
/// `kasan_populate_vmalloc` does: each callback takes a frame, poisons it
/// through the linear map, and maps it. The tables are made first, so the
/// counts are of the populating alone. Leaves nothing behind.
pub fn populate_shadow(pages: u64, how: Populate) -> Result<Populated, VmallocError> {
    let size = pages.checked_mul(PAGE_SIZE).ok_or(VmallocError::NoVirtualSpace)?;
    let va = shadow_area(size)?;
    let mut frames = Vec::with_capacity(pages as usize);
    let mut faults = 0;
    let callback = |entry: &EntryRef| {
        let frame = frame_alloc::alloc_frame()?;
        frames.push(frame);
        let shadow = phys_to_virt(frame);
        // SAFETY: a fresh frame, ours alone; the probe's write is caught if
        // the frame is not reachable yet.
        match unsafe { probe::write(shadow, 0) } {
            // SAFETY: the same frame, now known to be mapped.
            Ok(()) => unsafe {
                core::ptr::write_bytes(shadow.as_mut_ptr::<u8>(), KASAN_VMALLOC_INVALID, PAGE_SIZE as usize)
            },
            Err(_) => faults += 1,
        }
        // SAFETY: a shadow slot of the test's own range, mapping a frame
        // just allocated.
        unsafe { pgtable::write_entry(entry, Descriptor::leaf(Level::L3, frame, Attributes::KERNEL_RW)) };
        Ok::<(), frame_alloc::FrameError>(())
    };
    let backend = lazy_mmu::selected_backend();
    let before = stats(backend);
    let lazy_allocations = frame_alloc::allocations_in_lazy_mode();
    let result = match how {
        Populate::Lazy => apply_to_page_range(va, size, callback),
        Populate::NoLazy => apply_to_page_range_nolazy(va, size, callback),
    };
    let outcome = Populated {
        stats: stats(backend) - before,
        allocations_in_lazy_mode: frame_alloc::allocations_in_lazy_mode() - lazy_allocations,
        faults,
    };
    release_shadow_area(va, size, frames)?;
    match result {
        Ok(_) => Ok(outcome),
        Err(ApplyError::Map(e)) => Err(e.into()),
        Err(ApplyError::Callback(_)) => Err(VmallocError::OutOfMemory),
    }
}

/// A shadow area of `size` bytes with its page tables made and its
/// entries empty, so that what follows is about the leaf entries alone.
fn shadow_area(size: u64) -> Result<VirtAddr, VmallocError> {
    let va = get_vm_area(size, PAGE_SIZE)?;
    if let Err(ApplyError::Map(e)) = apply_to_page_range(va, size, |_| Ok::<(), Infallible>(())) {
        free_vm_area(va)?;
        return Err(e.into());
    }
    Ok(va)
}

/// Unmaps a shadow area, frees the frames that were mapped in it (all of
/// them, double mappings included), its tables and the area. Returns how
/// many frames there were.
fn release_shadow_area(va: VirtAddr, size: u64, frames: Vec<PhysAddr>) -> Result<usize, VmallocError> {
    vunmap_range(va, va.add(size))?;
    for &pa in &frames {
        frame_alloc::free_frame(pa).expect("mapped by populate");
    }
    free_vm_area(va)?;
    Ok(frames.len())
}
