//! `cargo run -- fuzz [--seed S] [--ops N] [--backend NAME] [--break WHAT]`:
//! randomized differential testing of the mappers against a reference
//! model ([`model`]), under every backend.
//!
//! Each step is one random operation: vmalloc / vzalloc / vmalloc_aligned,
//! vmalloc_huge (2 MiB blocks, contiguous runs of 16 pages, or pages),
//! vfree, vmap_pages, vmap_contiguous, vunmap, get_vm_area, the four
//! apply_to_page_range variants with random callbacks (some of which fail
//! part-way), set_memory_*, deliberately bad calls, all sometimes run inside
//! nested lazy sections and a pause, with a forced switch to another task
//! or a timer interrupt that maps a page in the middle. After each step
//! every page it touched (and the guard page after it) is checked three
//! ways against the model: the tables in memory (a software walk), the
//! MMU (`at s1e1r`/`at s1e1w`), and a real read and write, which go through
//! the TLB. At the end the whole vmalloc region is swept, everything is
//! torn down, and the frame count and area list must be back where they
//! started.
//!
//! A divergence names the seed, the step and the backend, and the command
//! that replays exactly the steps up to it. `--break skip-tlb-flush` turns
//! on a deliberately broken kernel (TLB flushes do nothing), which the
//! fuzzer must catch: `tests/host/commands.sh` checks that it does. Each
//! vmalloc page also gets a `ret` after its tag, written and flushed as
//! code (`cacheflush`), so that `set_memory_x` of it is judged by the
//! checker's icache rule (`--break skip-icache`).
//!
//! `--cpus N` runs N fuzzers at once, each a task that any CPU may run
//! (it moves between CPUs at its switches), with a model of its own and
//! the seed plus its index, over the one set of kernel tables: the
//! operations of the N run truly in parallel, interrupts and switches
//! included. Each checks its own pages, on whichever CPU it is on then.
//! What one CPU does for all is in each model: a purge (anyone's) flushes
//! every lazily freed range, after which a range one fuzzer gave back may
//! be another's, so a page no model of this fuzzer's maps is checked only
//! while no live area holds it; until that purge, a page of any fuzzer's
//! lazily freed range may still be read through a stale TLB entry, on any
//! CPU (the fuzzers share that allowance). The checks of a step run alone ([`Gate`]):
//! the area list and the tables then hold still, so "nothing changed" and
//! "unmapped" mean what they say. Each fuzzer's sequence of operations is
//! the same from run to run; how the N interleave is not.

pub mod model;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

use model::{Area, AreaKind, Model, Page};

use lazymmu::cpu;
use lazymmu::exception::FaultStatus;
use lazymmu::mm::{
    self, Access, ApplyError, Attributes, BLOCK_2M, CONT_PTE_SIZE, Descriptor, Entry, HugeShape, HwTranslation, Level,
    PAGE_SIZE, PhysAddr, SwTranslation, VMALLOC_END, VMALLOC_START, VirtAddr, VmallocError, audit, flush_icache_range,
    frame_alloc, hw_translate,
    lazy_mmu::{self, Backend},
    pgtable::{self, EntryRef, MapError, Operand},
    pgtable_check, phys_to_virt, probe, sw_translate, write_instructions,
};
use lazymmu::sched::Affinity;
use lazymmu::{Bug, plant};
use lazymmu::{sched, smp, timer};

/// Where a vmalloc page's code goes: after its tag (a `u64` at its start).
const CODE_OFFSET: u64 = 8;

use crate::rng::Rng;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    /// Steps per backend.
    pub ops: u64,
    pub backends: Vec<Backend>,
    /// A deliberately broken kernel, to show that the checks catch it.
    pub broken: Option<Bug>,
    /// Fuzzers at once (1: the boot task runs the one fuzzer itself).
    pub cpus: usize,
}

/// Where the model and the kernel disagreed, or where the kernel broke a
/// page-table rule (`rule`: the first one the checker reported).
#[derive(Debug)]
pub struct Divergence {
    pub backend: Backend,
    /// Which fuzzer (its seed is the campaign's plus this).
    pub cpu: usize,
    /// 0-based step index (`ops` = index + 1 replays up to it).
    pub step: u64,
    pub op: String,
    pub what: String,
    pub rule: Option<pgtable_check::Rule>,
}

/// What a clean run did: per backend, per fuzzer.
pub struct Report {
    pub runs: Vec<(Backend, Vec<Counts>)>,
}

/// One fuzzer's run under one backend.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub ops: u64,
    pub checks: u64,
    /// Steps that ended on another CPU than they began on.
    pub migrations: u64,
    /// Pages it gave back and found in another fuzzer's area by the time
    /// of its check (several CPUs only): left to that fuzzer.
    pub handed_on: u64,
}

/// Progress, every 1000 steps: backend, fuzzer (None: the only one), steps, page checks.
pub type Progress = fn(Backend, Option<usize>, u64, u64);

type Step = Result<Vec<(VirtAddr, u64)>, String>;

/// Live areas above which the fuzzer frees instead of allocating.
const MAX_LIVE_AREAS: usize = 48;

struct Fuzzer {
    /// Its index (0 when alone).
    cpu: usize,
    rng: Rng,
    model: Model,
    next_tag: u64,
    /// Steps done.
    ops: u64,
    checks: u64,
    migrations: u64,
    handed_on: u64,
    /// A page a timer interrupt maps: its area, tables made beforehand.
    irq_page: VirtAddr,
    irq_frame: PhysAddr,
    /// The live `vmalloc_huge` areas mapped in chunks, and the chunk size
    /// (2 MiB blocks or 64 KiB runs): where `set_memory_*` must split.
    huge: BTreeMap<VirtAddr, u64>,
}

/// CPUs the kernel can run (its `MAX_CPUS`).
const MAX_CPUS: usize = 8;

/// Per CPU: the page the timer handler maps, and the descriptor it writes
/// (the handler walks to its entry itself: an entry found by the task
/// cannot be handed over). The fuzzer waiting for it cannot move to
/// another CPU meanwhile: it does not yield, and preemption is off.
static IRQ_SLOT: [spin::Mutex<Option<(VirtAddr, Descriptor)>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];
static IRQ_DONE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static TAGS: AtomicU64 = AtomicU64::new(1);

/// Ranges vfree'd or vunmap'd since the last purge, by any fuzzer (or a
/// task one spawned): their translations may still be in a TLB
/// (`vmalloc/purge.rs`). With each, the lazily freed pages just after it
/// went on the purge list: fewer later means a purge (any CPU's) has
/// flushed it since. Shared, because a fuzzer checks pages of another's
/// range too: `free_vm_area` gives a range back at once (no purge), and
/// while the fuzzer that gave it back waits for its checks' turn (the
/// others' steps go on), another fuzzer, or the task its switch spawns,
/// may map the range, touch it on this fuzzer's CPU and vfree it. The
/// page is then unmapped in every model and in no live area, and a read
/// of it on that CPU may hit the stale entry until the next purge.
static AWAITING_PURGE: spin::Mutex<Vec<(VirtAddr, u64, u64)>> = spin::Mutex::new(Vec::new());

fn timer_maps_a_page() {
    let cpu = smp::smp_processor_id();
    if let Some((va, desc)) = IRQ_SLOT[cpu].lock().take() {
        let walk = pgtable::walking();
        let entry = walk.walk(va);
        assert_eq!(entry.level, Level::L3, "the irq page's tables were made beforehand");
        // SAFETY: the fuzzer's own irq page, unmapped, and its own frame.
        unsafe { pgtable::write_entry(&entry, desc) };
    }
    IRQ_DONE[cpu].store(true, SeqCst);
}

/// The fuzzers' operations run together; the checks of a step run alone.
/// While one fuzzer checks, no other is inside an operation: no area is
/// made or given back, no purge hands a range on, no entry changes, so
/// what it sees is what its own step left. (Alone, a fuzzer never waits.)
struct Gate(AtomicU64);

/// In [`Gate`]: one fuzzer checks (the rest counts operations in progress).
const ALONE: u64 = 1 << 63;

static GATE: Gate = Gate(AtomicU64::new(0));

impl Gate {
    /// An operation may start: waits (yielding the CPU) while one checks.
    fn operation(&'static self) -> InOperation {
        self.begin_operation();
        InOperation
    }

    fn begin_operation(&self) {
        self.wait(|n| (n & ALONE == 0).then_some(n + 1));
    }

    fn end_operation(&self) {
        self.0.fetch_sub(1, SeqCst);
    }

    /// Waits until no operation is in progress and no one else checks.
    fn alone(&'static self) -> Alone {
        self.wait(|n| (n == 0).then_some(ALONE));
        Alone
    }

    /// Runs `f` alone from within an operation, which steps aside meanwhile.
    fn alone_within_operation<R>(&'static self, f: impl FnOnce() -> R) -> R {
        self.end_operation();
        let result = {
            let _alone = self.alone();
            f()
        };
        self.begin_operation();
        result
    }

    fn wait(&self, next: impl Fn(u64) -> Option<u64>) {
        loop {
            let n = self.0.load(SeqCst);
            if let Some(to) = next(n)
                && self.0.compare_exchange(n, to, SeqCst, SeqCst).is_ok()
            {
                return;
            }
            // The one it waits for may need this CPU (it yielded here).
            sched::yield_now();
        }
    }
}

struct InOperation;

impl Drop for InOperation {
    fn drop(&mut self) {
        GATE.end_operation();
    }
}

struct Alone;

impl Drop for Alone {
    fn drop(&mut self) {
        GATE.0.store(0, SeqCst);
    }
}

/// A fuzzer diverged: the others stop at their next step.
static STOP: AtomicBool = AtomicBool::new(false);
/// Which fuzzer diverged first.
static FIRST: AtomicUsize = AtomicUsize::new(0);

/// [`Fuzzer::unchanged`], for a caller already alone.
fn unchanged_alone<T: core::fmt::Debug + PartialEq>(
    what: &str,
    call: impl FnOnce() -> T,
    want: T,
) -> Result<(), String> {
    let before = audit::state();
    expect(what, call(), want)?;
    let after = audit::state();
    if after != before {
        return Err(format!("{what} changed the state: before {before:?}, after {after:?}"));
    }
    Ok(())
}

fn err<E: core::fmt::Debug>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what} failed: {e:?}")
}

fn expect<T: core::fmt::Debug + PartialEq>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, expected {want:?}")) }
}

impl Fuzzer {
    /// A fuzzer with its irq page (an area whose tables are made now) and
    /// frame. On several CPUs it picks areas in creation order.
    fn new(cpu: usize, seed: u64, smp: bool) -> Result<Fuzzer, String> {
        let irq_page = mm::get_vm_area(PAGE_SIZE, PAGE_SIZE).map_err(err("get_vm_area"))?;
        pgtable::walking().walk_create(irq_page, Level::L3).map_err(err("walk_create"))?;
        let irq_frame = frame_alloc::alloc_frame().map_err(err("alloc_frame"))?;
        Ok(Fuzzer {
            cpu,
            rng: Rng::new(seed),
            model: Model { creation_order: smp.then(Vec::new), ..Model::default() },
            next_tag: 0,
            ops: 0,
            checks: 0,
            migrations: 0,
            handed_on: 0,
            irq_page,
            irq_frame,
            huge: BTreeMap::new(),
        })
    }

    fn counts(&self) -> Counts {
        Counts { ops: self.ops, checks: self.checks, migrations: self.migrations, handed_on: self.handed_on }
    }

    /// `ops` steps (fewer if another fuzzer diverges first), each
    /// operation among the other fuzzers' ones, its checks alone.
    fn run(&mut self, backend: Backend, ops: u64, smp: Option<usize>, progress: Progress) -> Result<(), Divergence> {
        for step in 0..ops {
            if STOP.load(SeqCst) {
                break;
            }
            let result = self.step(backend, step);
            if result.is_err() && STOP.compare_exchange(false, true, SeqCst, SeqCst).is_ok() {
                FIRST.store(self.cpu, SeqCst);
            }
            result?;
            self.ops = step + 1;
            if (step + 1) % 1000 == 0 {
                progress(backend, smp, step + 1, self.checks);
            }
        }
        Ok(())
    }

    /// One random operation, maybe in nested sections and a pause, with a
    /// timer write and a switch; then, alone, its checks.
    fn step(&mut self, backend: Backend, step: u64) -> Result<(), Divergence> {
        let cpu = self.cpu;
        let diverged =
            |op: &str, what: String| Divergence { backend, cpu, step, op: String::from(op), what, rule: None };
        let f = self;
        let choice = f.rng.below(100);
        let depth = if f.rng.chance(4) { 1 + f.rng.below(3) } else { 0 };
        let paused = depth > 0 && f.rng.chance(3);
        let interrupt = f.rng.chance(12);
        let switch = f.rng.chance(12);
        // With many areas live, allocations turn into frees, so a long
        // campaign stays within RAM and keeps exercising both.
        let full = f.model.areas.len() >= MAX_LIVE_AREAS;
        let op = match choice {
            0..20 if full => "vfree",
            0..17 => "vmalloc",
            17..20 => "vmalloc_huge",
            20..35 => "vfree",
            35..45 if full => "vunmap",
            35..45 => "vmap_pages",
            45..52 if full => "vunmap",
            45..52 => "vmap_contiguous",
            52..62 => "vunmap",
            62..70 if full => "free_vm_area",
            62..70 => "get_vm_area",
            70..76 => "free_vm_area",
            76..88 => "apply",
            88..92 => "set_memory",
            92..95 => "set_linear_map",
            _ => "bad input",
        };
        let label = format!(
            "{op} (sections {depth}{}{}{})",
            if paused { ", paused" } else { "" },
            if interrupt { ", timer write" } else { "" },
            if switch { ", switch" } else { "" }
        );
        let began_on = smp::smp_processor_id();
        let operation = GATE.operation();
        let mut sections: Vec<lazy_mmu::LazyMmuSection> = (0..depth).map(|_| lazy_mmu::enable()).collect();
        let pause = paused.then(lazy_mmu::pause);
        let outcome = (|| {
            let touched = match op {
                "vmalloc" => f.vmalloc(),
                "vmalloc_huge" => f.vmalloc_huge(),
                "vfree" => f.vfree(),
                "vmap_pages" => f.vmap_pages(),
                "vmap_contiguous" => f.vmap_contiguous(),
                "vunmap" => f.vunmap(),
                "get_vm_area" => f.get_vm_area(),
                "free_vm_area" => f.free_vm_area(),
                "apply" => f.apply(),
                "set_memory" => f.set_memory(),
                "set_linear_map" => f.set_linear_map(),
                _ => f.bad_input(),
            }?;
            if interrupt {
                f.timer_write()?;
            }
            if switch {
                f.switch()?;
            }
            Ok::<_, String>(touched)
        })();
        drop(pause);
        while let Some(section) = sections.pop() {
            drop(section);
        }
        drop(operation);
        let _alone = GATE.alone();
        if smp::smp_processor_id() != began_on {
            f.migrations += 1;
        }
        rules_kept(backend, cpu, step, &label)?;
        let touched = outcome.map_err(|what| diverged(&label, what))?;
        f.check(&touched).map_err(|what| diverged(&label, what))
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        (TAGS.fetch_add(1, SeqCst) << 16) | (self.next_tag & 0xffff)
    }

    /// A page count: mostly small, sometimes across a level-3 table.
    fn pages(&mut self) -> u64 {
        if self.rng.chance(16) { 513 + self.rng.below(88) } else { 1 + self.rng.below(16) }
    }

    /// Frames the fuzzer owns, each holding a fresh tag (written through
    /// the linear map, so read-only mappings of them can be checked).
    fn tagged_frames(&mut self, n: u64) -> Result<Vec<(PhysAddr, u64)>, String> {
        let mut frames = Vec::new();
        for _ in 0..n {
            let pa = frame_alloc::alloc_frame().map_err(err("alloc_frame"))?;
            let tag = self.tag();
            // SAFETY: a fresh frame, ours alone.
            unsafe { core::ptr::write_volatile(phys_to_virt(pa).as_mut_ptr::<u64>(), tag) };
            frames.push((pa, tag));
        }
        Ok(frames)
    }

    fn attrs(&mut self) -> Attributes {
        if self.rng.chance(2) { Attributes::KERNEL_RW } else { Attributes::KERNEL_RO }
    }

    // ---- the operations ----------------------------------------------------

    fn vmalloc(&mut self) -> Step {
        let pages = self.pages();
        let size = pages * PAGE_SIZE;
        let (va, zeroed) = match self.rng.below(3) {
            0 => (mm::vmalloc(size).map_err(err("vmalloc"))?, false),
            1 => (mm::vzalloc(size).map_err(err("vzalloc"))?, true),
            _ => {
                let align = [2 * PAGE_SIZE, 16 * PAGE_SIZE, BLOCK_2M][self.rng.below(3) as usize];
                let va = mm::vmalloc_aligned(size, align).map_err(err("vmalloc_aligned"))?;
                if !va.is_aligned(align) {
                    return Err(format!("vmalloc_aligned({size:#x}, {align:#x}) returned {va}"));
                }
                (va, false)
            }
        };
        for i in 0..pages {
            let page = va.add(i * PAGE_SIZE);
            if zeroed {
                expect(&format!("vzalloc page {page}"), probe::read(page), Ok(0))?;
            }
            let tag = self.tag();
            // SAFETY: a page vmalloc just mapped for us.
            unsafe { probe::write(page, tag) }.map_err(err(&format!("tagging {page}")))?;
            // Code beside the tag, as a loader would write it: a step may
            // make the page executable (set_memory_x), and the icache rule
            // asks for its maintenance before that.
            // SAFETY: the same page, after the tag.
            unsafe { write_instructions(page.add(CODE_OFFSET), &[probe::RET_INSTRUCTION]) };
            flush_icache_range(page.add(CODE_OFFSET), page.add(CODE_OFFSET + 4));
            self.model.map(page, Page { pa: None, writable: true, executable: false, tag });
        }
        self.model.add_area(Area { start: va, pages, kind: AreaKind::Vmalloc });
        Ok(Vec::from([(va, pages)]))
    }

    /// `vmalloc_huge` of a size that gives each shape: a 2 MiB block, one
    /// to three contiguous runs (a size rounded up to whole runs), or pages
    /// (below 64 KiB). The shape is read back from the tables and must be
    /// the one the size asks for, or pages (the chunks could not be had).
    fn vmalloc_huge(&mut self) -> Step {
        let size = match self.rng.below(4) {
            0 => BLOCK_2M,
            1 => (1 + self.rng.below(3)) * CONT_PTE_SIZE,
            2 => CONT_PTE_SIZE + (1 + self.rng.below(15)) * PAGE_SIZE,
            _ => (1 + self.rng.below(15)) * PAGE_SIZE,
        };
        let va = mm::vmalloc_huge(size).map_err(err("vmalloc_huge"))?;
        let pages = mm::find_area(va).ok_or("vmalloc_huge: no area")?.size / PAGE_SIZE;
        let chunk = HugeShape::for_size(size).chunk_size();
        let (level, contiguous) = match pgtable::lookup(va).entry {
            Entry::Leaf { attrs, .. } => (pgtable::lookup(va).level, attrs.contiguous),
            other => return Err(format!("vmalloc_huge({size:#x}) at {va}: {other:?}")),
        };
        let shape = match (level, contiguous) {
            (Level::L2, false) if chunk == BLOCK_2M => Some(BLOCK_2M),
            (Level::L3, true) if chunk == CONT_PTE_SIZE => Some(CONT_PTE_SIZE),
            (Level::L3, false) => None,
            other => return Err(format!("vmalloc_huge({size:#x}) at {va}: leaf {other:?}")),
        };
        if let Some(chunk) = shape {
            if !va.is_aligned(chunk) || pages * PAGE_SIZE != size.next_multiple_of(chunk) {
                return Err(format!("vmalloc_huge({size:#x}) at {va}: {pages} pages in {chunk:#x} chunks"));
            }
            self.huge.insert(va, chunk);
        }
        for i in 0..pages {
            let page = va.add(i * PAGE_SIZE);
            let tag = self.tag();
            // SAFETY: a page vmalloc_huge just mapped for us.
            unsafe { probe::write(page, tag) }.map_err(err(&format!("tagging {page}")))?;
            self.model.map(page, Page { pa: None, writable: true, executable: false, tag });
        }
        self.model.add_area(Area { start: va, pages, kind: AreaKind::Vmalloc });
        Ok(Vec::from([(va, pages)]))
    }

    fn vfree(&mut self) -> Step {
        let n = self.rng.next();
        let Some(area) = self.model.pick_area(n, |k| *k == AreaKind::Vmalloc) else { return self.vmalloc() };
        if area.pages > 1 && self.rng.chance(4) {
            let inside = area.page(1);
            self.unchanged(
                "vfree of an address inside an area",
                || mm::vfree(inside),
                Err(VmallocError::NotAnArea(inside)),
            )?;
            return Ok(Vec::from([(area.start, area.pages)]));
        }
        // Freed twice, the second call must find no area. Both calls are
        // made alone: between them another CPU could have taken the range
        // (after a purge) and the second would free its area.
        let free = || mm::vfree(area.start).map_err(err("vfree"));
        if self.rng.chance(4) {
            GATE.alone_within_operation(|| {
                free()?;
                unchanged_alone("vfree twice", || mm::vfree(area.start), Err(VmallocError::NotAnArea(area.start)))
            })?;
        } else {
            free()?;
        }
        self.freed_lazily(area.start, area.pages);
        self.model.remove_area(area.start);
        self.huge.remove(&area.start);
        Ok(Vec::from([(area.start, area.pages)]))
    }

    fn vmap_pages(&mut self) -> Step {
        let n = 1 + self.rng.below(12);
        let attrs = self.attrs();
        let frames = self.tagged_frames(n)?;
        let pas: Vec<PhysAddr> = frames.iter().map(|f| f.0).collect();
        // SAFETY: fresh frames, the fuzzer's own until it vunmaps them.
        let va = match unsafe { mm::vmap_pages(&pas, attrs) } {
            Ok(va) => va,
            Err(e) => {
                free_frames(&pas);
                return Err(format!("vmap_pages failed: {e:?}"));
            }
        };
        for (i, &(pa, tag)) in frames.iter().enumerate() {
            self.model.map(
                va.add(i as u64 * PAGE_SIZE),
                Page { pa: Some(pa), writable: attrs.writable, executable: false, tag },
            );
        }
        self.model.add_area(Area { start: va, pages: n, kind: AreaKind::Pages(pas) });
        Ok(Vec::from([(va, n)]))
    }

    fn vmap_contiguous(&mut self) -> Step {
        // Sometimes a 2 MiB-aligned run, which becomes a block (plus pages).
        let (n, align) =
            if self.rng.chance(4) { (512 + self.rng.below(4), BLOCK_2M) } else { (1 + self.rng.below(8), PAGE_SIZE) };
        let attrs = self.attrs();
        let pa = frame_alloc::alloc_contiguous(n as usize, align).map_err(err("alloc_contiguous"))?;
        let mut tags = Vec::new();
        for i in 0..n {
            let tag = self.tag();
            // SAFETY: fresh frames, ours alone.
            unsafe { core::ptr::write_volatile(phys_to_virt(pa.add(i * PAGE_SIZE)).as_mut_ptr::<u64>(), tag) };
            tags.push(tag);
        }
        // RAM as Device memory is refused (ioremap's rule), changing nothing.
        self.unchanged(
            "vmap_contiguous of RAM as Device memory",
            // SAFETY: the fuzzer's own frames; refused before anything maps them.
            || unsafe { mm::vmap_contiguous(pa, n * PAGE_SIZE, Attributes::DEVICE) }.map(|_| ()),
            Err(VmallocError::RamNotDevice(pa)),
        )?;
        // SAFETY: fresh frames, the fuzzer's own until it vunmaps them.
        let va = match unsafe { mm::vmap_contiguous(pa, n * PAGE_SIZE, attrs) } {
            Ok(va) => va,
            Err(e) => {
                frame_alloc::free_frames(pa, n as usize).expect("allocated above");
                return Err(format!("vmap_contiguous failed: {e:?}"));
            }
        };
        for (i, tag) in tags.into_iter().enumerate() {
            let i = i as u64;
            self.model.map(
                va.add(i * PAGE_SIZE),
                Page { pa: Some(pa.add(i * PAGE_SIZE)), writable: attrs.writable, executable: false, tag },
            );
        }
        self.model.add_area(Area { start: va, pages: n, kind: AreaKind::Range(pa, n as usize) });
        Ok(Vec::from([(va, n)]))
    }

    fn vunmap(&mut self) -> Step {
        let n = self.rng.next();
        let Some(area) = self.model.pick_area(n, |k| matches!(k, AreaKind::Pages(_) | AreaKind::Range(..))) else {
            return self.vmap_pages();
        };
        mm::vunmap(area.start).map_err(err("vunmap"))?;
        self.freed_lazily(area.start, area.pages);
        self.model.remove_area(area.start);
        release(&area.kind);
        Ok(Vec::from([(area.start, area.pages)]))
    }

    fn get_vm_area(&mut self) -> Step {
        let pages = self.pages();
        let frames = self.tagged_frames(pages)?;
        let align = if self.rng.chance(3) { BLOCK_2M } else { PAGE_SIZE };
        let va = match mm::get_vm_area(pages * PAGE_SIZE, align) {
            Ok(va) => va,
            Err(e) => {
                free_frames(&frames.iter().map(|f| f.0).collect::<Vec<_>>());
                return Err(format!("get_vm_area failed: {e:?}"));
            }
        };
        // The tags live in the frames; the model learns them as pages map.
        self.model.add_area(Area {
            start: va,
            pages,
            kind: AreaKind::AddressSpace(frames.iter().map(|f| f.0).collect()),
        });
        self.model.tags.extend(frames.iter().map(|&(pa, tag)| (pa.as_u64(), tag)));
        Ok(Vec::from([(va, pages)]))
    }

    fn free_vm_area(&mut self) -> Step {
        let n = self.rng.next();
        let Some(area) = self.model.pick_area(n, |k| matches!(k, AreaKind::AddressSpace(_))) else {
            return self.get_vm_area();
        };
        if self.rng.chance(4) {
            let n = self.rng.next();
            if let Some(other) = self.model.pick_area(n, |k| *k == AreaKind::Vmalloc) {
                self.unchanged(
                    "free_vm_area of a vmalloc area",
                    || mm::free_vm_area(other.start),
                    Err(VmallocError::NotAnArea(other.start)),
                )?;
            }
        }
        mm::vunmap_range(area.start, area.start.add(area.pages * PAGE_SIZE)).map_err(err("vunmap_range"))?;
        mm::free_vm_area(area.start).map_err(err("free_vm_area"))?;
        self.model.remove_area(area.start);
        release(&area.kind);
        Ok(Vec::from([(area.start, area.pages)]))
    }

    /// One of the four apply variants on part of a get_vm_area area. The
    /// callback maps holes (create variants) to the area's own frames and
    /// flips the write permission of present non-executable pages; it may
    /// fail at a random slot, which must stop the walk there.
    fn apply(&mut self) -> Step {
        let n = self.rng.next();
        let Some(area) = self.model.pick_area(n, |k| matches!(k, AreaKind::AddressSpace(_))) else {
            return self.get_vm_area();
        };
        let AreaKind::AddressSpace(frames) = &area.kind else { unreachable!("picked by kind") };
        let first = self.rng.below(area.pages);
        let count = 1 + self.rng.below(area.pages - first);
        let (start, size) = (area.page(first), count * PAGE_SIZE);
        let (create, lazy) = (self.rng.chance(2), self.rng.chance(2));
        // The slots the walk must visit, in order.
        let expected: Vec<VirtAddr> = (first..first + count)
            .map(|i| area.page(i))
            .filter(|&va| create || self.model.page(va).is_some())
            .collect();
        let fail_at = self.rng.chance(4).then(|| self.rng.below(expected.len() as u64 + 1));
        let writable_bits = self.rng.next();
        let mut visited: Vec<(VirtAddr, Descriptor)> = Vec::new();
        let callback = |entry: &EntryRef| -> Result<(), u64> {
            if fail_at == Some(visited.len() as u64) {
                return Err(visited.len() as u64);
            }
            let i = entry.va.offset_from(area.start) / PAGE_SIZE;
            let desc = match entry.entry() {
                Entry::Invalid => {
                    let attrs = if (writable_bits >> (i % 64)) & 1 == 1 {
                        Attributes::KERNEL_RW
                    } else {
                        Attributes::KERNEL_RO
                    };
                    Descriptor::leaf(Level::L3, frames[i as usize], attrs)
                }
                Entry::Leaf { addr, mut attrs } => {
                    if !attrs.executable {
                        attrs.writable = !attrs.writable;
                    }
                    Descriptor::leaf(Level::L3, addr, attrs)
                }
                Entry::Table(_) => Descriptor::INVALID,
            };
            // SAFETY: a slot of the fuzzer's own area; what it maps is the
            // area's own frame or the same page with write toggled, and
            // the fuzzer flushes before it relies on the change.
            unsafe { pgtable::write_entry(entry, desc) };
            visited.push((entry.va, desc));
            Ok(())
        };
        let result = match (create, lazy) {
            (true, true) => mm::apply_to_page_range(start, size, callback),
            (true, false) => mm::apply_to_page_range_nolazy(start, size, callback),
            (false, true) => mm::apply_to_existing_page_range(start, size, callback),
            (false, false) => mm::apply_to_existing_page_range_nolazy(start, size, callback),
        };
        // Permissions of live pages changed: the caller flushes.
        mm::flush_tlb_kernel_range(start, start.add(size));
        let name = ["existing", "existing_nolazy", "page_range", "page_range_nolazy"]
            [(create as usize) * 2 + (!lazy) as usize];
        let fails = fail_at.filter(|&k| k < expected.len() as u64);
        match (fails, result) {
            (Some(k), Err(ApplyError::Callback(at))) => expect(&format!("apply_to_{name}: failed at"), at, k)?,
            (None, Ok(_)) => {}
            (_, other) => {
                return Err(format!(
                    "apply_to_{name}: {other:?} with failure at {fail_at:?} of {} slots",
                    expected.len()
                ));
            }
        }
        let visits = fails.map_or(expected.len(), |k| k as usize);
        let visited_va: Vec<VirtAddr> = visited.iter().map(|v| v.0).collect();
        expect(&format!("apply_to_{name}: slots visited"), &visited_va[..], &expected[..visits])?;
        for (va, desc) in visited {
            let Entry::Leaf { addr, attrs } = desc.decode(Level::L3) else { continue };
            let tag = self.model.tags.get(&addr.as_u64()).copied().ok_or_else(|| format!("no tag for {addr}"))?;
            self.model.map(va, Page { pa: Some(addr), writable: attrs.writable, executable: attrs.executable, tag });
        }
        Ok(Vec::from([(area.start, area.pages)]))
    }

    fn set_memory(&mut self) -> Step {
        let n = self.rng.next();
        let Some(area) = self
            .model
            .pick_area(n, |k| matches!(k, AreaKind::Vmalloc | AreaKind::Pages(_) | AreaKind::AddressSpace(_)))
        else {
            return self.vmalloc();
        };
        let first = self.rng.below(area.pages);
        let count = 1 + self.rng.below(area.pages - first);
        let start = area.page(first);
        let which = self.rng.below(4);
        let change = |p: &mut Page| match which {
            0 => p.writable = false,
            1 => p.writable = true,
            2 => p.executable = true,
            _ => p.executable = false,
        };
        // What the model says: the first hole, else the first W+X page.
        let mut want = Ok(());
        for i in first..first + count {
            let va = area.page(i);
            match self.model.page(va) {
                None => {
                    want = Err(MapError::NotMapped(va));
                    break;
                }
                Some(mut p) => {
                    change(&mut p);
                    if p.writable && p.executable && want.is_ok() {
                        want = Err(MapError::WritableAndExecutable(va));
                    }
                }
            }
        }
        // A huge area's run or block that the range cuts must be split,
        // which only BBML2_NOABORT allows in place (else: refused).
        if want.is_ok()
            && !cpu::features().bbml2_noabort
            && let Some(&chunk) = self.huge.get(&area.start)
        {
            let end = area.page(first + count);
            if let Some(cut) = [start, end].into_iter().find(|b| !b.is_aligned(chunk)) {
                want = Err(MapError::BreakBeforeMakeUnsafe(cut.align_down(chunk)));
            }
        }
        let name = ["set_memory_ro", "set_memory_rw", "set_memory_x", "set_memory_nx"][which as usize];
        let call = || match which {
            0 => mm::set_memory_ro(start, count),
            1 => mm::set_memory_rw(start, count),
            2 => mm::set_memory_x(start, count),
            _ => mm::set_memory_nx(start, count),
        };
        if want.is_err() {
            self.unchanged(name, call, want)?;
        } else {
            expect(name, call(), want)?;
            for i in first..first + count {
                change(self.model.page_mut(area.page(i)).expect("checked above"));
            }
        }
        Ok(Vec::from([(area.start, area.pages)]))
    }

    /// set_linear_map_ro, then _rw, on the linear-map page of a frame the
    /// fuzzer owns (in a 2 MiB run of its own, so nothing else the kernel
    /// uses is in that block): a write through it must fault in between,
    /// and work after. With BBML2_NOABORT the first change inside a block
    /// splits that live block in place. (set_memory_* refuses the linear
    /// map: `bad_input`.)
    fn set_linear_map(&mut self) -> Step {
        let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).map_err(err("alloc_contiguous"))?;
        let va = phys_to_virt(run.add(self.rng.below(512) * PAGE_SIZE));
        let result = (|| {
            // SAFETY: the fuzzer's own frame, made writable again below
            // whatever the write in between did, before the run is freed.
            unsafe { mm::set_linear_map_ro(va, 1) }.map_err(err("set_linear_map_ro"))?;
            // SAFETY: the fuzzer's own frame; the write is expected to fault.
            let write = unsafe { probe::write(va, 1) };
            // SAFETY: the fuzzer's own frame.
            unsafe { mm::set_linear_map_rw(va, 1) }.map_err(err("set_linear_map_rw"))?;
            match write {
                Err(s) if s.write && s.status == Some(FaultStatus::Permission { level: 3 }) => {}
                other => return Err(format!("a write to the read-only linear-map page {va}: {other:?}")),
            }
            // SAFETY: the fuzzer's own frame, writable again.
            unsafe { probe::write(va, 2) }.map_err(err(&format!("a write to {va} after set_linear_map_rw")))
        })();
        frame_alloc::free_frames(run, 512).expect("allocated above");
        result.map(|()| Vec::new())
    }

    /// Calls that must fail with a given error and change nothing.
    fn bad_input(&mut self) -> Step {
        match self.rng.below(5) {
            0 => self.unchanged("vmalloc(0)", || mm::vmalloc(0), Err(VmallocError::ZeroSize)),
            1 => self.unchanged(
                "vmalloc_aligned(align 3000)",
                || mm::vmalloc_aligned(PAGE_SIZE, 3000),
                Err(VmallocError::BadAlignment(3000)),
            ),
            2 => self.unchanged(
                "vmap_pages(no pages)",
                // SAFETY: no pages: nothing is mapped.
                || unsafe { mm::vmap_pages(&[], Attributes::KERNEL_RW) },
                Err(VmallocError::EmptyPageList),
            ),
            3 => {
                let va = VirtAddr::new(VMALLOC_END.as_u64() - PAGE_SIZE);
                self.unchanged(
                    "set_memory_ro of an address in no area",
                    || mm::set_memory_ro(va, 1),
                    Err(MapError::NotMapped(va)),
                )
            }
            _ => {
                let va = VMALLOC_START.add(PAGE_SIZE / 2);
                self.unchanged(
                    "apply_to_page_range(unaligned)",
                    || mm::apply_to_page_range(va, PAGE_SIZE, |_| Ok::<(), ()>(())).map(|_| ()),
                    Err(ApplyError::Map(MapError::Misaligned { what: Operand::VirtualAddress, value: va.as_u64() })),
                )
            }
        }?;
        Ok(Vec::new())
    }

    /// Runs `call`, which must return `want` and change nothing.
    fn unchanged<T: core::fmt::Debug + PartialEq>(
        &mut self,
        what: &str,
        call: impl FnOnce() -> T,
        want: T,
    ) -> Result<(), String> {
        // The state is everyone's: no other fuzzer may change it meanwhile.
        GATE.alone_within_operation(|| unchanged_alone(what, call, want))
    }

    /// A timer interrupt maps the irq page while this task may be in a
    /// section: the handler's write must be in place when it returns.
    fn timer_write(&mut self) -> Result<(), String> {
        let found = pgtable::lookup(self.irq_page);
        if found.level != Level::L3 {
            return Err(format!("the irq page's tables are gone: {found:?}"));
        }
        if self.model.page(self.irq_page).is_some() {
            // Unmapped again here, in task context, with its flush.
            {
                let walk = pgtable::walking();
                // SAFETY: the fuzzer's own irq page.
                unsafe { pgtable::write_entry(&walk.walk(self.irq_page), Descriptor::INVALID) };
            }
            mm::flush_tlb_kernel_range(self.irq_page, self.irq_page.add(PAGE_SIZE));
            self.model.unmap(self.irq_page);
            return Ok(());
        }
        let tag = self.tag();
        // SAFETY: the fuzzer's own frame.
        unsafe { core::ptr::write_volatile(phys_to_virt(self.irq_frame).as_mut_ptr::<u64>(), tag) };
        let here = smp::smp_processor_id();
        *IRQ_SLOT[here].lock() =
            Some((self.irq_page, Descriptor::leaf(Level::L3, self.irq_frame, Attributes::KERNEL_RW)));
        IRQ_DONE[here].store(false, SeqCst);
        timer::call_after(timer::ticks_from_us(50), timer_maps_a_page);
        cpu::wait_until(|| IRQ_DONE[here].load(SeqCst));
        // In the interrupted task's section or not, the write is in memory.
        expect(
            "the handler's mapping, seen at once",
            hw_translate(self.irq_page, Access::Read),
            HwTranslation::Mapped { pa: self.irq_frame, mair_attr: 0xff },
        )?;
        self.model.map(self.irq_page, Page { pa: Some(self.irq_frame), writable: true, executable: false, tag });
        Ok(())
    }

    /// Another task maps, checks and frees a buffer while this one is
    /// switched out (maybe inside its sections).
    fn switch(&mut self) -> Result<(), String> {
        // Where the other task's buffer was: its vfree leaves the range to
        // the lazy purge, and a stale TLB entry may still reach it.
        let other = Arc::new(AtomicU64::new(0));
        let buffer = other.clone();
        let pages = 1 + self.rng.below(8);
        let tag = self.tag();
        let task = sched::spawn("fuzz/other", move || {
            assert!(!lazy_mmu::is_lazy_mmu_mode_active(), "another task starts outside lazy mode");
            let va = mm::vmalloc(pages * PAGE_SIZE).expect("vmalloc in the other task");
            for i in 0..pages {
                // SAFETY: our own fresh mapping.
                unsafe { probe::write(va.add(i * PAGE_SIZE), tag + i) }.expect("writable");
            }
            for i in 0..pages {
                assert_eq!(probe::read(va.add(i * PAGE_SIZE)), Ok(tag + i));
            }
            mm::vfree(va).expect("vfree in the other task");
            buffer.store(va.as_u64(), SeqCst);
        })
        .map_err(err("spawn"))?;
        task.join().map_err(err("the other task"))?;
        let va = VirtAddr::new(other.load(SeqCst));
        self.freed_lazily(va, pages);
        Ok(())
    }

    // ---- checks ------------------------------------------------------------

    /// The page at `va` in memory, in the MMU and through the TLB, against
    /// the model.
    fn check_page(&mut self, va: VirtAddr) -> Result<(), String> {
        self.checks += 1;
        let Some(p) = self.model.page(va) else {
            // Given back and purged, the range may be another fuzzer's
            // now (never while it is one of this fuzzer's areas).
            if let Some(area) = mm::find_area(va)
                && !self.model.areas.contains_key(&area.start.as_u64())
                && area.start != self.irq_page
            {
                self.checks -= 1;
                self.handed_on += 1;
                return Ok(());
            }
            let read = probe::read(va);
            // Freed lazily (by any fuzzer) and not purged yet, a page may
            // still be read through a stale TLB entry; the tables (`at
            // s1e1r`) say unmapped all the same.
            let stale_ok =
                AWAITING_PURGE.lock().iter().any(|&(start, pages, _)| va >= start && va < start.add(pages * PAGE_SIZE));
            return match (hw_translate(va, Access::Read), read) {
                (HwTranslation::Fault(FaultStatus::Translation { .. }), Err(s))
                    if matches!(s.status, Some(FaultStatus::Translation { .. })) =>
                {
                    Ok(())
                }
                (HwTranslation::Fault(FaultStatus::Translation { .. }), Ok(_)) if stale_ok => Ok(()),
                (at, read) => Err(format!("{va} should be unmapped: at s1e1r {at:?}, a read {read:?}")),
            };
        };
        let SwTranslation::Mapped { pa, attrs, level } = sw_translate(va) else {
            return Err(format!("{va} should be mapped ({p:?}) but the tables say {:?}", sw_translate(va)));
        };
        if p.pa.is_some_and(|want| want != pa) || attrs.writable != p.writable || attrs.executable != p.executable {
            return Err(format!("{va}: the tables map {pa} {attrs:?}, the model says {p:?}"));
        }
        expect(
            &format!("{va}: at s1e1r"),
            hw_translate(va, Access::Read),
            HwTranslation::Mapped { pa, mair_attr: 0xff },
        )?;
        let write_walk = if p.writable {
            HwTranslation::Mapped { pa, mair_attr: 0xff }
        } else {
            HwTranslation::Fault(FaultStatus::Permission { level: level.0 })
        };
        expect(&format!("{va}: at s1e1w"), hw_translate(va, Access::Write), write_walk)?;
        expect(&format!("{va}: the tag read through the mapping"), probe::read(va), Ok(p.tag))?;
        // And it is the word in the frame the tables map: an access through
        // a stale TLB entry reaches another frame (the tag of a vmalloc
        // page was written through the mapping too, so both could agree).
        // SAFETY: a frame the tables map, read through its linear-map alias.
        let in_frame = unsafe { core::ptr::read_volatile(phys_to_virt(pa).as_ptr::<u64>()) };
        expect(&format!("{va}: the tag in its frame {pa}, read through the linear map"), in_frame, p.tag)?;
        // SAFETY: writes back the tag the page holds.
        let wrote = unsafe { probe::write(va, p.tag) };
        match (p.writable, wrote) {
            (true, Ok(())) => Ok(()),
            (false, Err(s)) if s.status == Some(FaultStatus::Permission { level: level.0 }) => Ok(()),
            (w, got) => Err(format!("{va}: a write (page writable: {w}) gave {got:?}")),
        }
    }

    /// [start, start + pages) was just put on the purge list.
    fn freed_lazily(&mut self, start: VirtAddr, pages: u64) {
        let lazy_after = mm::lazy_pages();
        AWAITING_PURGE.lock().push((start, pages, lazy_after));
    }

    fn check(&mut self, touched: &[(VirtAddr, u64)]) -> Result<(), String> {
        // A purge (past the threshold, for room, or set_memory_*'s) flushed
        // every area on the list when it ran.
        let lazy = mm::lazy_pages();
        AWAITING_PURGE.lock().retain(|&(_, _, lazy_after)| lazy != 0 && lazy >= lazy_after);
        for &(start, pages) in touched {
            // The guard page after the area too.
            for i in 0..=pages {
                self.check_page(start.add(i * PAGE_SIZE))?;
            }
        }
        self.check_page(self.irq_page)
    }

    /// Gives back everything the run still holds.
    fn teardown(&mut self) -> Result<(), String> {
        let areas: Vec<Area> = self.model.areas.values().cloned().collect();
        for area in areas {
            match &area.kind {
                AreaKind::Vmalloc => mm::vfree(area.start).map_err(err("vfree at teardown"))?,
                AreaKind::Pages(_) | AreaKind::Range(..) => {
                    mm::vunmap(area.start).map_err(err("vunmap at teardown"))?
                }
                AreaKind::AddressSpace(_) => {
                    mm::vunmap_range(area.start, area.start.add(area.pages * PAGE_SIZE))
                        .map_err(err("vunmap_range at teardown"))?;
                    mm::free_vm_area(area.start).map_err(err("free_vm_area at teardown"))?;
                }
            }
            self.model.remove_area(area.start);
            release(&area.kind);
        }
        self.huge.clear();
        self.model.tags.clear();
        Ok(())
    }

    /// Gives back the irq page's area and frame.
    fn release_irq_page(self) -> Result<(), String> {
        mm::vunmap_range(self.irq_page, self.irq_page.add(PAGE_SIZE)).map_err(err("vunmap_range"))?;
        mm::free_vm_area(self.irq_page).map_err(err("free_vm_area"))?;
        frame_alloc::free_frame(self.irq_frame).map_err(err("free_frame"))
    }
}

fn free_frames(frames: &[PhysAddr]) {
    for &pa in frames {
        frame_alloc::free_frame(pa).expect("the fuzzer's frame");
    }
}

/// Frees the fuzzer's frames behind an area that is gone.
fn release(kind: &AreaKind) {
    // A vunmap'd area's flush waits for the purge: no TLB may still map
    // the frames when they go.
    if matches!(kind, AreaKind::Pages(_) | AreaKind::Range(..)) {
        mm::vm_unmap_aliases();
    }
    match kind {
        AreaKind::Vmalloc => {}
        AreaKind::Pages(frames) | AreaKind::AddressSpace(frames) => free_frames(frames),
        AreaKind::Range(pa, n) => frame_alloc::free_frames(*pa, *n).expect("the fuzzer's run"),
    }
}

/// Every leaf of the vmalloc region is in one of the models, and the
/// other way round.
fn sweep(fuzzers: &[Fuzzer]) -> Result<(), String> {
    let size = VMALLOC_END.offset_from(VMALLOC_START);
    let mut seen = 0u64;
    let walk = pgtable::walking();
    for (_, entry) in walk.walk_range(VMALLOC_START, size) {
        let Entry::Leaf { .. } = entry.entry() else { continue };
        for i in 0..entry.level.entry_size() / PAGE_SIZE {
            let va = entry.va.add(i * PAGE_SIZE);
            if fuzzers.iter().all(|f| f.model.page(va).is_none()) {
                return Err(format!("sweep: {va} is mapped ({:?}) but the model has no such page", entry.entry()));
            }
            seen += 1;
        }
    }
    let modelled = fuzzers.iter().map(|f| f.model.pages.len() as u64).sum();
    expect("sweep: pages mapped in the vmalloc region", seen, modelled)
}

/// Runs the campaign: `ops` steps under each backend (on each CPU), then
/// the sweep and teardown checks.
pub fn run(config: &Config, progress: Progress) -> Result<Report, Divergence> {
    let preemption = sched::set_preemption(false);
    plant(config.broken);
    let mut report = Report { runs: Vec::new() };
    let result = config.backends.iter().try_for_each(|&backend| {
        report.runs.push((backend, campaign(config, backend, progress)?));
        Ok(())
    });
    plant(None);
    sched::set_preemption(preemption);
    result.map(|()| report)
}

/// The checker's verdict since the last: every step (and the teardown)
/// ends with nothing owed and no rule broken, on any CPU.
fn rules_kept(backend: Backend, cpu: usize, step: u64, op: &str) -> Result<(), Divergence> {
    pgtable_check::quiescent();
    let broken = pgtable_check::take_violations();
    match broken.first.first() {
        None if broken.total() == 0 => Ok(()),
        first => Err(Divergence {
            backend,
            cpu,
            step,
            op: String::from(op),
            what: format!(
                "page-table rules broken: {} (first: {})",
                broken.summary(),
                first.map_or("", |v| v.what.as_str())
            ),
            rule: first.map(|v| v.rule),
        }),
    }
}

/// Task names of the fuzzers on several CPUs.
const NAMES: [&str; MAX_CPUS] = ["fuzz/0", "fuzz/1", "fuzz/2", "fuzz/3", "fuzz/4", "fuzz/5", "fuzz/6", "fuzz/7"];

/// One backend: the fuzzers' steps, then the sweep of all their pages,
/// their teardown, and the frame count and area list back where they were.
fn campaign(config: &Config, backend: Backend, progress: Progress) -> Result<Vec<Counts>, Divergence> {
    let _selected = lazy_mmu::use_backend(backend);
    let last = config.ops.saturating_sub(1);
    let diverged = |cpu: usize, step: u64, op: &str, what: String| Divergence {
        backend,
        cpu,
        step,
        op: String::from(op),
        what,
        rule: None,
    };
    // vmalloc's tables stay once made: compare without the empty ones.
    mm::reclaim_page_tables();
    let start = audit::state();
    let linear_tables_before = linear_tables();
    let mut fuzzers = Vec::new();
    for cpu in 0..config.cpus {
        let seed = config.seed.wrapping_add(cpu as u64);
        fuzzers.push(Fuzzer::new(cpu, seed, config.cpus > 1).map_err(|what| diverged(cpu, 0, "setup", what))?);
    }
    STOP.store(false, SeqCst);
    // The last campaign's teardown purged everything.
    AWAITING_PURGE.lock().clear();
    let ops = config.ops;
    let fuzzers = if config.cpus == 1 {
        let mut f = fuzzers.pop().expect("one");
        f.run(backend, ops, None, progress)?;
        Vec::from([f])
    } else {
        // Each on any CPU, moving at its switches; the boot task waits.
        let mut running = Vec::new();
        for mut f in fuzzers {
            let cpu = f.cpu;
            let slot = Arc::new(spin::Mutex::new(None));
            let result = slot.clone();
            let task = sched::spawn_on(NAMES[cpu], Affinity::Any, move || {
                let outcome = f.run(backend, ops, Some(cpu), progress);
                *result.lock() = Some((f, outcome));
            })
            .map_err(|e| diverged(cpu, 0, "setup", format!("spawn: {e:?}")))?;
            running.push((cpu, task, slot));
        }
        let mut done = Vec::new();
        let mut divergences = Vec::new();
        for (cpu, task, slot) in running {
            task.join().map_err(|e| diverged(cpu, 0, "its task", format!("{e:?}")))?;
            let (f, outcome) = slot.lock().take().expect("set by the task");
            divergences.extend(outcome.err());
            done.push(f);
        }
        // The first to diverge stopped the others (which may have seen
        // the same broken rule in the checker's log by then).
        if let Some(i) = divergences.iter().position(|d| d.cpu == FIRST.load(SeqCst)) {
            return Err(divergences.swap_remove(i));
        }
        done
    };
    let counts: Vec<Counts> = fuzzers.iter().map(Fuzzer::counts).collect();
    let at_end = |what: &'static str| move |why: String| diverged(0, last, what, why);
    sweep(&fuzzers).map_err(at_end("final sweep"))?;
    let mut fuzzers = fuzzers;
    for f in &mut fuzzers {
        f.teardown().map_err(at_end("teardown"))?;
    }
    rules_kept(backend, 0, last, "teardown")?;
    for f in fuzzers {
        f.release_irq_page().map_err(at_end("teardown"))?;
    }
    // What was freed lazily comes back at its purge.
    mm::vm_unmap_aliases();
    // A linear-map block split by a permission change stays split, as
    // in Linux: its tables are not counted.
    mm::reclaim_page_tables();
    let end = audit::state();
    let linear_tables_after = linear_tables();
    let kept = |s: &audit::MmState, linear: usize| (s.frames_used - linear, s.areas.clone(), s.table_pages - linear);
    if kept(&end, linear_tables_after) != kept(&start, linear_tables_before) {
        return Err(diverged(
            0,
            last,
            "teardown",
            format!(
                "not everything came back: before {start:?}, after {end:?} (linear-map tables {linear_tables_before} -> {linear_tables_after})"
            ),
        ));
    }
    Ok(counts)
}

/// Table pages of the linear map.
fn linear_tables() -> usize {
    lazymmu::mm::ptdump::region_stats()[0].table_pages()
}

/// All backends, for the default campaign.
pub fn all_backends() -> Vec<Backend> {
    Backend::ALL.to_vec()
}
