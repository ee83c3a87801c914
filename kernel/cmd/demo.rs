//! `cargo run -- demo lazy [--backend NAME]`: an annotated trace of lazy MMU
//! mode at work, one backend after another (or just NAME), then the cost of
//! the same steps under each, side by side. `demo kasan`: the read hazard
//! that pause/resume exists for, counted. `demo pagealloc`: allocating
//! inside lazy mode (Ryan Roberts' RFC "mm: Avoid calling page allocator
//! from apply_to_page_range()", <20250530140446.2387131-4-ryan.roberts@arm.com>), and the two cures, counted.
//!
//! Every line that starts with `[task]` is printed by the kernel as it
//! happens (see `trace`); the `--` lines say what the next steps show.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering::SeqCst};

use crate::kasan_shadow;
use crate::kasan_shadow::Populate;
use lazymmu::cpu;
use lazymmu::mm::{
    self, Attributes, Descriptor, Entry, Level, PAGE_SIZE, PhysAddr, VMALLOC_END, VMALLOC_START, VirtAddr,
    VmallocError,
    debug_pagealloc::{self, MapBack},
    frame_alloc,
    lazy_mmu::{self, Backend},
    pgtable::{self, EntryRef, Walking},
    pgtable_check::{self, Rule},
};
use lazymmu::{println, sched, timer, trace};

/// Where the demo maps its pages: four level-3 slots of an area of the
/// vmalloc region, at this address if it is free (a fixed place keeps the
/// trace the same from run to run).
const DEMO_VA: VirtAddr = VMALLOC_START.add(0x8000_0000);
const SLOTS: u64 = 4;

fn say(what: &str) {
    println!("\n-- {what}");
}

/// The demo's page-table slots, their tables made before tracing starts
/// (so the trace shows only the writes the steps make), the walk that
/// reaches them (held for the whole demo: its end would make queued
/// stores), and the frame they map.
struct Pages {
    walk: Option<Walking>,
    va: VirtAddr,
    frame: PhysAddr,
}

impl Pages {
    fn new() -> Result<Pages, VmallocError> {
        let va = mm::get_vm_area_range(SLOTS * PAGE_SIZE, PAGE_SIZE, DEMO_VA, VMALLOC_END)?;
        let frame = frame_alloc::alloc_frame().map_err(|_| VmallocError::OutOfMemory);
        let frame = frame.inspect_err(|_| mm::free_vm_area(va).expect("just reserved"))?;
        let pages = Pages { walk: Some(pgtable::walking()), va, frame };
        for i in 0..SLOTS {
            // On failure, drop() gives back what is made.
            pages.walk.as_ref().expect("just made").walk_create(va.add(i * PAGE_SIZE), Level::L3)?;
        }
        Ok(pages)
    }

    fn entry(&self, i: u64) -> EntryRef<'_> {
        self.walk.as_ref().expect("dropped only by drop()").walk(self.va.add(i * PAGE_SIZE))
    }

    fn write(&self, i: u64, desc: Descriptor) {
        // SAFETY: the demo's own slots (nothing else maps there), its own
        // frame; step 8 clears them and flushes.
        unsafe { pgtable::write_entry(&self.entry(i), desc) };
    }

    fn map(&self, i: u64) {
        self.write(i, Descriptor::leaf(Level::L3, self.frame, Attributes::KERNEL_RW));
    }

    /// What memory holds in slot `i` right now, in words.
    fn show(&self, i: u64) {
        let what = match self.entry(i).entry() {
            Entry::Invalid => "invalid: the write is not in memory yet",
            _ => "the new page: the write is in memory",
        };
        println!("   a read of entry {i} from memory finds: {what}");
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        self.walk = None;
        mm::vunmap_range(self.va, self.va.add(SLOTS * PAGE_SIZE)).expect("the demo's own area");
        mm::free_vm_area(self.va).expect("the demo's own area");
        frame_alloc::free_frame(self.frame).expect("allocated by new()");
    }
}

static INTERRUPT_DONE: AtomicBool = AtomicBool::new(false);
/// The slot the handler maps (it walks there itself: an entry the task
/// found cannot be handed over).
static INTERRUPT_SLOT: spin::Mutex<Option<VirtAddr>> = spin::Mutex::new(None);
static INTERRUPT_FRAME: spin::Mutex<PhysAddr> = spin::Mutex::new(PhysAddr::new(0));

fn timer_callback() {
    let _ = lazy_mmu::lazy_mmu_mode_enable();
    if let Some(va) = *INTERRUPT_SLOT.lock() {
        let frame = *INTERRUPT_FRAME.lock();
        let walk = pgtable::walking();
        // SAFETY: the demo's own slot and frame (see `Pages`).
        unsafe { pgtable::write_entry(&walk.walk(va), Descriptor::leaf(Level::L3, frame, Attributes::KERNEL_RW)) };
    }
    let _ = lazy_mmu::lazy_mmu_mode_disable();
    INTERRUPT_DONE.store(true, SeqCst);
}

/// The task step 7 switches to.
fn other_task() {
    let active = if lazy_mmu::is_lazy_mmu_mode_active() { "yes" } else { "no" };
    trace::emit(format_args!("another task runs; is it in lazy mode? {active}"));
}

fn steps(pages: &Pages) {
    say("1. A write outside any section pays dsb ishst + isb at once (in every backend).");
    pages.map(0);

    say("2. An outer section with one write, then a nested section with one more.");
    let outer = lazy_mmu::enable();
    pages.map(1);
    let inner = lazy_mmu::enable();
    pages.map(2);

    say("3. The nested section ends: a nested exit flushes what is pending; the mode stays on.");
    drop(inner);
    pages.map(3);
    pages.show(3);

    say("4. Pause: the mode is off at any depth, so what is owed is paid now and a write is eager.");
    let paused = lazy_mmu::pause();
    pages.show(3);
    pages.map(3);

    say("5. Resume, write all four entries, then the outermost disable leaves the mode:");
    println!("   one pair for the lot, if anything is pending.");
    drop(paused);
    for i in 0..SLOTS {
        pages.map(i);
    }
    drop(outer);

    say("6. A timer interrupt lands inside a section and writes an entry.");
    println!("   In the handler lazy mode does not exist: its write pays at once, its lazy_mmu");
    println!("   calls do nothing, and the task's section is left exactly as it was.");
    *INTERRUPT_SLOT.lock() = Some(pages.va.add(PAGE_SIZE));
    *INTERRUPT_FRAME.lock() = pages.frame;
    INTERRUPT_DONE.store(false, SeqCst);
    let section = lazy_mmu::enable();
    pages.map(0);
    timer::call_after(timer::ticks_from_us(100), timer_callback);
    cpu::wait_until(|| INTERRUPT_DONE.load(SeqCst));
    drop(section);

    say("7. A task switched out in the middle of a section.");
    println!("   The switch issues dsb ish: the stores made so far reach every walker (a deferred-writes");
    println!("   queue holds stores not made yet). The pending flag (or the queue) goes with the task,");
    println!("   which pays the rest when it leaves.");
    let section = lazy_mmu::enable();
    pages.map(1);
    sched::yield_now();
    drop(section);

    say("8. Unmap all four pages: clearing an entry owes no barrier; one TLB flush orders it all.");
    let section = lazy_mmu::enable();
    for i in 0..SLOTS {
        pages.write(i, Descriptor::INVALID);
    }
    drop(section);
    mm::flush_tlb_kernel_range(pages.va, pages.va.add(SLOTS * PAGE_SIZE));
}

/// Runs the demo under each backend named (all of them if `only` is None).
pub fn lazy(only: Option<Backend>) -> Result<(), VmallocError> {
    // Tasks switch only where step 7 yields, so the trace is the same every run.
    let preemption = sched::set_preemption(false);
    lazy_mmu::reset_stats();
    let mut costs = Vec::new();
    for backend in Backend::ALL.into_iter().filter(|&b| only.is_none_or(|o| o == b)) {
        let _selected = lazy_mmu::use_backend(backend);
        println!("\n==== demo lazy: backend {backend} ====");
        println!("{}", describe(backend));
        let pages = Pages::new()?;
        // Ready now, so that step 7's yield has somewhere to go.
        let other = sched::spawn("other", other_task)?;
        println!("(task {} starts outside any section)", sched::current().name);
        let before = lazy_mmu::stats(backend);
        trace::set_enabled(true);
        steps(&pages);
        trace::set_enabled(false);
        costs.push((backend, lazy_mmu::stats(backend) - before));
        if let Err(e) = other.join() {
            println!("the other task failed: {e}");
        }
        drop(pages);
    }
    sched::set_preemption(preemption);
    summary(&costs);
    Ok(())
}

fn describe(backend: Backend) -> &'static str {
    match backend {
        Backend::Eager => "eager: no lazy mode at all; every valid entry write is followed by dsb ishst; isb.",
        Backend::Batched => {
            "batched (arm64): a write in a section only sets the task's pending flag; leaving or\n\
             flushing the section emits one dsb ishst; isb, and only if something is pending."
        }
        Backend::DeferredWrites => {
            "deferred-writes: the stores themselves wait in the task's queue until the section is\n\
             flushed or left (as Xen batches them): a read in the section still sees the old entry."
        }
    }
}

fn summary(costs: &[(Backend, lazy_mmu::LazyMmuStats)]) {
    println!("\n==== the same steps, counted per backend ====");
    println!(
        "{:<16} {:>7} {:>7} {:>9} {:>5} {:>7} {:>5} {:>8} {:>7} {:>7}",
        "backend", "writes", "in sec", "dsb ishst", "isb", "dsb ish", "tlbi", "sections", "flushes", "nesting"
    );
    for (name, s) in costs {
        println!(
            "{:<16} {:>7} {:>7} {:>9} {:>5} {:>7} {:>5} {:>8} {:>7} {:>7}",
            name,
            s.entry_writes,
            s.lazy_writes,
            s.barriers.dsb_ishst,
            s.barriers.isb,
            s.barriers.dsb_ish,
            s.barriers.tlbi(),
            s.sections,
            s.flushes,
            s.max_nesting
        );
    }
    println!("(dsb ishst, dsb ish and tlbi include the TLB flush of step 8 and the switches of step 7;");
    println!(" \"in sec\" counts writes made in an active section, \"nesting\" the deepest one)");
}

/// `demo kasan`: the shadow-population race of the generic lazy_mmu helpers'
/// review (<20251029100909.3381140-7-kevin.brodsky@arm.com>), `trials` times
/// under each backend, without and with pause/resume around the locked part.
pub fn kasan(trials: u32) -> Result<(), VmallocError> {
    println!("==== demo kasan: two tasks populate one KASAN-style shadow page ====");
    println!("Each task, in apply_to_page_range's lazy section: if the entry is none, take a frame;");
    println!("under the lock, map it if the entry is still none; drop the lock. It is switched out");
    println!("after its write, still holding the lock (the other task runs up to the lock and waits),");
    println!("and again after the unlock, its section still open (the other task takes the lock).");
    println!("A double mapping means the second task also read \"none\" and mapped a second frame.\n");
    println!(
        "{:<16} {:<22} {:>7} {:>9} {:>16} {:>12}",
        "backend", "around the lock", "trials", "installs", "double mappings", "BBM reports"
    );
    for backend in Backend::ALL {
        let _selected = lazy_mmu::use_backend(backend);
        for pause in [false, true] {
            let (mut installs, mut doubles, mut bbm) = (0, 0, 0);
            for _ in 0..trials {
                let outcome = kasan_shadow::shadow_race(pause)?;
                installs += outcome.installs;
                doubles += outcome.double_mappings;
                bbm += outcome.bbm_reports;
            }
            let how = if pause { "pause/resume" } else { "nothing (stays lazy)" };
            println!("{:<16} {:<22} {:>7} {:>9} {:>16} {:>12}", backend.name(), how, trials, installs, doubles, bbm);
        }
    }
    println!("\nOnly deferred-writes without pause double-maps: its stores wait in the task's queue,");
    println!("so the lock no longer orders them. Pausing makes the store before the lock is dropped.");
    if pgtable_check::enabled() {
        println!("BBM reports: the page-table rules checker sees each double mapping as what it is on");
        println!("hardware: a live page replaced by another frame without break-before-make.");
    }
    Ok(())
}

/// `demo pagealloc`: the page-allocator RFC's problem, counted. KASAN's shadow populate
/// callback allocates a frame per page; under `debug_pagealloc=on` each
/// allocation maps its frame back into the linear map, a page-table change
/// in the middle of the caller's lazy section.
pub fn pagealloc(pages: u64) -> Result<(), VmallocError> {
    println!("==== demo pagealloc: allocating inside lazy MMU mode ====");
    if debug_pagealloc::enabled() {
        let boot = debug_pagealloc::boot_stats();
        println!(
            "debug_pagealloc is on: free frames are out of the linear map ({} blocks split at boot,\n{} free frames unmapped); every allocation maps its frame back.",
            boot.blocks_split, boot.frames_unmapped
        );
    } else {
        println!("debug_pagealloc is off: allocating writes no page table, so there is nothing to nest.");
        println!("Boot with it to see the problem: cargo run -- debug_pagealloc=on demo pagealloc");
    }
    println!("Populating the KASAN shadow of {pages} pages: each callback takes a frame, poisons it");
    println!("through the linear map, and maps it. Page tables exist beforehand.\n");
    let cures: &[(&str, Populate, MapBack)] = &[
        ("nesting (apply_to_page_range)", Populate::Lazy, MapBack::NestedSection),
        ("_nolazy variant", Populate::NoLazy, MapBack::NestedSection),
        ("none: map-back in caller's section", Populate::Lazy, MapBack::CallersSection),
    ];
    let shown = if debug_pagealloc::enabled() { cures } else { &cures[..2] };
    println!(
        "{:<36} {:<16} {:>6} {:>9} {:>5} {:>13} {:>15} {:>7} {:>15}",
        "cure", "backend", "writes", "dsb ishst", "isb", "nested exits", "allocs in lazy", "faults", "publish reports"
    );
    for &(cure, how, map_back) in shown {
        for backend in Backend::ALL {
            let _selected = lazy_mmu::use_backend(backend);
            let previous = debug_pagealloc::set_map_back(map_back);
            let (outcome, publish) =
                pgtable_check::expecting(Rule::Publish, || kasan_shadow::populate_shadow(pages, how));
            debug_pagealloc::set_map_back(previous);
            let (writes, dsb_ishst, isb, nested_exits, allocs, faults) = outcome?.row();
            println!(
                "{:<36} {:<16} {:>6} {:>9} {:>5} {:>13} {:>15} {:>7} {:>15}",
                cure,
                backend.name(),
                writes,
                dsb_ishst,
                isb,
                nested_exits,
                allocs,
                faults,
                publish.total()
            );
        }
    }
    println!("\n(The warning is the debug check: it reports the first frame allocated in lazy mode.)");
    if !debug_pagealloc::enabled() {
        println!("nesting: the N leaf writes share one pair. _nolazy: each pays its own, N pairs.");
        return Ok(());
    }
    println!("nesting: each map-back is a nested section whose exit pays what is pending, and the");
    println!("  callback stays in lazy mode: N + 1 pairs for 2N writes (Linux 7.0's answer).");
    println!("_nolazy: no lazy mode around the callbacks: every write pays, 2N pairs (the RFC's).");
    println!("none: the map-back's writes join the caller's batch. Under batched one pair is paid,");
    println!("  after the frames were touched: those accesses had no barrier (harmless only under QEMU).");
    println!("  Under deferred-writes the map-back is still queued when the frame is poisoned: faults.");
    if pgtable_check::enabled() {
        println!("  The page-table rules checker reports each frame handed out with its mapping unpublished.");
    }
    Ok(())
}
