//! The in-kernel test harness: runs `#[test_case]` functions under QEMU and
//! reports in libtest's format, so `cargo test` and CI read the results the
//! same way as for host tests.
//!
//! Each test runs inside [`exception::catch`], so a failing assertion (a
//! panic) or an unexpected fault fails that test, is reported, and the run
//! goes on with the next one; what the failed test left behind is put back
//! first (see [`run_tests`]). The run exits non-zero if any test failed.
//! Arguments after `cargo test --` are read as libtest reads them: name
//! filters, `--exact`, `--skip FILTER`, `--list`.
//!
//! A test image is one file of `#[test_case]`s under five crate
//! attributes and one line, [`test_image!`](crate::test_image) (the
//! attributes cannot come from a macro: Rust reads them at the crate root):
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! #![feature(custom_test_frameworks)]
//! #![test_runner(lazymmu::run_tests)]
//! #![reexport_test_harness_main = "test_main"]
//!
//! lazymmu::test_image!();
//! ```
//!
//! Debug builds only, as the planted bugs and fault injection it resets:
//! see `planted.rs`.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::convert::Infallible;
use core::fmt::Write;
use core::ptr::read_volatile;

use crate::arch::barrier::{BarrierCounts, cost};
use crate::exception::{self, Caught};
use crate::mm::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mm::apply::apply_to_page_range;
use crate::mm::descriptor::{Attributes, Descriptor, Entry, Level};
use crate::mm::layout::{KSTACK_SLOT_SIZE, KSTACK_SLOTS, KSTACK_START, VMALLOC_END, VMALLOC_START};
use crate::mm::pgtable::{EntryRef, Walking};
use crate::mm::vmalloc::{self, AreaInfo};
use crate::mm::{frame_alloc, lazy_mmu, pgtable, pgtable_check, phys_to_virt, ptdump, tlb};
use crate::semihosting::{ExitCode, exit};
use crate::{arch, boot_args, print, println, sched, timer};

/// The rest of a test image's harness: its entry point, which runs the
/// image's `#[test_case]`s, `alloc` for its code, and, given a literal,
/// the boot options built into the image (see
/// [`builtin_cmdline!`](crate::builtin_cmdline)), e.g.
/// `lazymmu::test_image!("debug_pagealloc=on");`.
#[macro_export]
macro_rules! test_image {
    () => {
        extern crate alloc;

        #[unsafe(no_mangle)]
        fn kernel_main() -> ! {
            test_main();
            unreachable!("the test runner exits QEMU");
        }
    };
    ($cmdline:literal) => {
        $crate::test_image!();
        $crate::builtin_cmdline!($cmdline);
    };
}

/// A test: a function whose name is its path.
pub trait Testable {
    fn run(&self);
    fn name(&self) -> &'static str;
}

impl<T: Fn()> Testable for T {
    fn run(&self) {
        self()
    }

    fn name(&self) -> &'static str {
        // "lazymmu::mm::frame_alloc::tests::x" -> "mm::frame_alloc::tests::x",
        // as libtest names tests by their path inside the crate.
        let path = core::any::type_name::<T>();
        path.split_once("::").map_or(path, |(_, rest)| rest)
    }
}

/// What `cargo test -- ARGS` asked for, as libtest reads it: name
/// filters (a test runs if its name contains one, or equals one with
/// `--exact`), `--skip FILTER` (repeatable), and `--list`.
struct Options {
    filters: Vec<&'static str>,
    skips: Vec<&'static str>,
    exact: bool,
    list: bool,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options { filters: Vec::new(), skips: Vec::new(), exact: false, list: false };
        let mut args = boot_args::args();
        while let Some(arg) = args.next() {
            match arg {
                "--exact" => options.exact = true,
                "--list" => options.list = true,
                "--skip" => options.skips.extend(args.next()),
                _ => match arg.strip_prefix("--skip=") {
                    Some(skip) => options.skips.push(skip),
                    // Other libtest options (--nocapture, ...) mean nothing here.
                    None if arg.starts_with('-') => {}
                    None => options.filters.push(arg),
                },
            }
        }
        options
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |f: &&str| if self.exact { name == *f } else { name.contains(*f) };
        (self.filters.is_empty() || self.filters.iter().any(matches)) && !self.skips.iter().any(matches)
    }
}

/// How long one test may run, in seconds, before the harness reports it by
/// name and stops the image (the runner's own limit, 300 s, is for the
/// whole image); `test_time_limit=SECONDS` on the command line changes it.
pub const TEST_TIME_LIMIT_S: u64 = 120;

fn test_time_limit() -> u64 {
    boot_args::option("test_time_limit").and_then(|s| s.parse().ok()).unwrap_or(TEST_TIME_LIMIT_S)
}

/// The test running now, for the watchdog.
static RUNNING: spin::Mutex<&'static str> = spin::Mutex::new("");

/// The per-test time limit ran out: the test hangs. Runs in interrupt
/// context; nothing can be recovered from here, so the run ends.
fn test_timed_out() {
    let name = RUNNING.try_lock().map_or("(unknown)", |n| *n);
    println!("TIMED OUT");
    println!("\n---- {name} ----\ndid not finish within {} s (the harness's per-test limit)\n", test_time_limit());
    println!("test result: FAILED. the run stopped at {name}, which hung\n");
    exit(ExitCode::TestsFailed)
}

/// Puts back what every test may assume at its start and a failing test
/// may have left otherwise: no bug planted, preemption as it was, no lazy
/// MMU section open, no walk guard held, the default backend and apply
/// mode, tracing off, debug_pagealloc's map-back in a section of its own,
/// no frame request set to fail. Returns what was not at its default
/// (a test that returns normally must have put it back itself).
fn reset_after_test(preemption: bool) -> Vec<String> {
    use crate::mm::apply::{ApplyMode, apply_mode, set_apply_mode};
    use crate::mm::debug_pagealloc::{self, MapBack};
    let mut left = Vec::new();
    crate::planted::plant(None);
    crate::mm::pgtable::set_reclaim_race(None);
    sched::set_preemption(preemption);
    let abandoned = exception::release_abandoned();
    if (abandoned.enabled, abandoned.paused) != (0, 0) {
        left.push(format!(
            "lazy MMU mode still open (enable count {}, pause count {})",
            abandoned.enabled, abandoned.paused
        ));
    }
    if abandoned.walks > 0 {
        left.push(format!("{} walk guard(s) held", abandoned.walks));
    }
    let backend = lazy_mmu::selected_backend();
    if backend != lazy_mmu::Backend::DEFAULT {
        left.push(format!("backend {backend} selected"));
        lazy_mmu::select_backend(lazy_mmu::Backend::DEFAULT);
    }
    if apply_mode() != ApplyMode::WholeCall {
        left.push(String::from("apply mode PerLeafTable"));
        set_apply_mode(ApplyMode::WholeCall);
    }
    if crate::trace::enabled() {
        left.push(String::from("tracing on"));
        crate::trace::set_enabled(false);
    }
    if debug_pagealloc::set_map_back(MapBack::NestedSection) != MapBack::NestedSection {
        left.push(String::from("debug_pagealloc's map-back in the caller's section"));
    }
    frame_alloc::fail_request(None);
    left
}

/// Runs the tests and exits QEMU: 0 when all passed, 101 otherwise.
///
/// Every test starts from the same state. After each one the harness puts
/// back what a failing test may have left (see `reset_after_test`) and
/// compares the memory manager with a `Baseline` taken before it: a test
/// that leaves areas, frames or vmalloc-region mappings behind fails, and
/// what it left is taken back, so that it cannot make the next test fail.
pub fn run_tests(tests: &[&dyn Testable]) -> ! {
    let options = Options::parse();
    if options.list {
        for test in tests.iter().filter(|t| options.selects(t.name())) {
            println!("{}: test", test.name());
        }
        exit(ExitCode::Success);
    }
    let start = arch::cpu::counter();
    let chosen: Vec<&&dyn Testable> = tests.iter().filter(|t| options.selects(t.name())).collect();
    println!();
    println!("running {} test{}", chosen.len(), if chosen.len() == 1 { "" } else { "s" });

    let mut failures: Vec<(&'static str, String)> = Vec::new();
    // Rules broken while the kernel booted fail the run.
    let at_boot = pgtable_check::take_violations();
    if at_boot.total() > 0 {
        failures.push(("(boot)", format!("page-table rules broken at boot: {}", at_boot.summary())));
    }
    for test in &chosen {
        print!("test {} ... ", test.name());
        *RUNNING.lock() = test.name();
        // vmalloc's spare nodes hold slab frames: none kept across the
        // count (as the audit counts).
        crate::mm::vmalloc::shrink_spares();
        let baseline = Baseline::take();
        let preemption = sched::set_preemption(true);
        let mut why = String::new();
        timer::set_watchdog(Some((timer::ticks_from_us(test_time_limit() * 1_000_000), test_timed_out)));
        let outcome = exception::catch(|| test.run());
        timer::set_watchdog(None);
        if let Err(caught) = &outcome {
            let _ = write!(why, "{caught}");
        }
        let left = reset_after_test(preemption);
        if outcome.is_ok() && !left.is_empty() {
            let _ = write!(why, "returned with {}", left.join(", "));
        }
        // Areas the test freed lazily are purged (their frames and ranges
        // come back), and vmalloc's page tables stay once made: the empty
        // ones the test left go now, so that the next test starts from the
        // same tables.
        crate::mm::vmalloc::vm_unmap_aliases();
        crate::mm::vmalloc::reclaim_page_tables();
        crate::mm::vmalloc::shrink_spares();
        // Everything the test changed is published and invalidated by now,
        // and no rule was broken on the way (a test that breaks one on
        // purpose takes what it broke with `pgtable_check::expecting`).
        pgtable_check::quiescent();
        // W^X across aliases: nothing the test left mapped executable has
        // a writable alias (the linear map's, above all).
        if let Err(wx) = crate::mm::audit::check_wx_aliases() {
            let _ = write!(why, "{}W^X across aliases: {wx:?}", if why.is_empty() { "" } else { "; " });
        }
        let broken = pgtable_check::take_violations();
        if broken.total() > 0 {
            let first = broken.first.first().map(|v| v.what.as_str()).unwrap_or("");
            let _ = write!(
                why,
                "{}page-table rules broken: {} (first: {first})",
                if why.is_empty() { "" } else { "; " },
                broken.summary()
            );
        }
        if let Some(leaked) = baseline.leaks() {
            if outcome.is_ok() {
                let _ = write!(why, "{}left behind: {leaked}", if why.is_empty() { "" } else { "; " });
            }
            baseline.restore();
            // Whatever the restore itself checked is the harness's, not the test's.
            pgtable_check::quiescent();
            pgtable_check::take_violations();
        }
        if why.is_empty() {
            println!("ok");
        } else {
            println!("FAILED");
            failures.push((test.name(), why));
        }
    }

    // A run broken at boot has one failure more than it has failed tests.
    let passed = chosen.len() - failures.iter().filter(|(name, _)| *name != "(boot)").count();
    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, why) in &failures {
            println!("---- {name} ----\n{why}\n");
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    let elapsed = (arch::cpu::counter() - start) as f64 / arch::cpu::counter_frequency() as f64;
    if pgtable_check::enabled() {
        println!("\n{}", pgtable_check::stats());
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        if failures.is_empty() { "ok" } else { "FAILED" },
        passed,
        failures.len(),
        tests.len() - chosen.len(),
        elapsed
    );
    exit(if failures.is_empty() { ExitCode::Success } else { ExitCode::TestsFailed })
}

/// What a test may not leave behind: the areas, the frames in use (but for
/// the linear map's tables: a block split by a permission change stays
/// split), and every mapping of the vmalloc region. The test harness takes
/// one before each test; after it, [`Baseline::leaks`] says what the test
/// left behind and [`Baseline::restore`] takes it back, so that a test that
/// failed half way (its cleanup skipped) cannot poison the next.
struct Baseline {
    areas: Vec<AreaInfo>,
    frames_used: usize,
    used: Vec<u64>,
    vmalloc_leaves: Vec<(u64, u64)>,
}

/// The valid leaves of the vmalloc region: (VA, descriptor).
fn vmalloc_leaves() -> Vec<(u64, u64)> {
    let walk = pgtable::walking();
    walk.walk_range(VMALLOC_START, VMALLOC_END.offset_from(VMALLOC_START))
        .filter(|(_, e)| matches!(e.entry(), Entry::Leaf { .. }))
        .map(|(_, e)| (e.va.as_u64(), e.read().0))
        .collect()
}

/// Frames in use minus the linear map's table pages.
fn frames_used() -> usize {
    frame_alloc::stats().used - ptdump::region_stats()[0].table_pages()
}

impl Baseline {
    fn take() -> Baseline {
        Baseline {
            areas: vmalloc::areas(),
            frames_used: frames_used(),
            used: frame_alloc::used_bitmap(),
            vmalloc_leaves: vmalloc_leaves(),
        }
    }

    /// What is different now, in words; None if nothing is.
    fn leaks(&self) -> Option<String> {
        let mut what = String::new();
        let areas = vmalloc::areas();
        let (new, gone) = (
            areas.iter().filter(|a| !self.areas.contains(a)).count(),
            self.areas.iter().filter(|a| !areas.contains(a)).count(),
        );
        if new + gone > 0 {
            let _ = write!(what, "{new} area(s) left, {gone} gone; ");
        }
        let frames = frames_used();
        if frames != self.frames_used {
            let _ = write!(what, "{} frames in use, {} before; ", frames, self.frames_used);
        }
        let leaves = vmalloc_leaves();
        if leaves != self.vmalloc_leaves {
            let stray = leaves.iter().filter(|l| !self.vmalloc_leaves.contains(l)).count();
            let _ = write!(what, "{stray} vmalloc-region mapping(s) that were not there; ");
        }
        (!what.is_empty()).then(|| String::from(what.trim_end_matches("; ")))
    }

    /// Takes back what the test left: its areas (unmapped, their frames
    /// freed), any other mapping it made in the vmalloc region, and the
    /// frames it took that no table and no stack still uses.
    fn restore(&self) {
        for area in vmalloc::areas() {
            if !self.areas.contains(&area) {
                let _ = vmalloc::release_leaked_area(area.start);
            }
        }
        let stray: Vec<u64> =
            vmalloc_leaves().into_iter().filter(|l| !self.vmalloc_leaves.contains(l)).map(|(va, _)| va).collect();
        if !stray.is_empty() {
            {
                let walk = pgtable::walking();
                for &va in &stray {
                    let entry = walk.walk(VirtAddr::new(va));
                    // SAFETY: a leaf the failed test made or changed (it is
                    // not in the baseline); its code was abandoned, and the
                    // harness runs alone between tests: nobody uses it.
                    unsafe { pgtable::write_entry(&entry, Descriptor::INVALID) };
                }
            }
            let size = VMALLOC_END.offset_from(VMALLOC_START);
            tlb::flush_tlb_kernel_range(VMALLOC_START, VMALLOC_START.add(size));
        }
        // The tables of what was released stay (as vmalloc's do); empty now.
        vmalloc::reclaim_page_tables();
        let in_use = frames_in_use_by_tables_and_stacks();
        for pa in frame_alloc::used_since(&self.used) {
            if !in_use.contains(&pa.as_u64()) {
                let _ = frame_alloc::free_frame(pa);
            }
        }
    }
}

/// Every page-table page, every frame a kernel stack maps, and every slab:
/// frames a leaked task, the linear map's splits or the objects still
/// live (vmalloc's free ranges) use.
fn frames_in_use_by_tables_and_stacks() -> BTreeSet<u64> {
    fn tables(table: PhysAddr, level: Level, out: &mut BTreeSet<u64>) {
        out.insert(table.as_u64());
        let Some(next) = level.next() else { return };
        let entries = phys_to_virt(table).as_ptr::<u64>();
        for i in 0..512 {
            // SAFETY: a live page-table page (the caller holds a walk
            // guard), read through the linear map.
            let raw = unsafe { read_volatile(entries.add(i)) };
            if let Entry::Table(child) = Descriptor(raw).decode(level) {
                tables(child, next, out);
            }
        }
    }
    let mut found: BTreeSet<u64> = crate::mm::slab::frames().iter().map(|pa| pa.as_u64()).collect();
    let walk = pgtable::walking();
    tables(walk.root(), Level::L0, &mut found);
    let stacks = KSTACK_SLOTS * KSTACK_SLOT_SIZE;
    for (_, entry) in walk.walk_range(KSTACK_START, stacks) {
        if let Entry::Leaf { addr, .. } = entry.entry() {
            found.insert(addr.as_u64());
        }
    }
    found
}

/// Asserts that `f` panics with a message containing `expected`.
pub fn expect_panic(expected: &str, f: impl FnOnce()) {
    match exception::catch(f) {
        Ok(()) => panic!("expected a panic containing {expected:?}, but the code returned normally"),
        Err(Caught::Panic(message)) => assert!(
            message.as_str().contains(expected),
            "expected a panic containing {expected:?}, got {:?}",
            message.as_str()
        ),
        Err(fault @ Caught::Fault(_)) => panic!("expected a panic containing {expected:?}, got a fault: {fault}"),
    }
}

/// 2 MiB of frames, 2 MiB aligned, that the linear map still maps with one
/// block (a block split by an earlier test stays split, so runs are taken
/// until one is whole). Only a CPU with BBML2_NOABORT has such blocks.
pub fn linear_map_block() -> crate::mm::addr::PhysAddr {
    use crate::mm::addr::BLOCK_2M;
    assert!(crate::cpu::features().bbml2_noabort, "only a CPU with BBML2_NOABORT has linear-map blocks");
    let mut split = Vec::new();
    let run = loop {
        let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).expect("2 MiB of free frames");
        if pgtable::lookup(phys_to_virt(run)).level == Level::L2 {
            break run;
        }
        split.push(run);
    };
    for r in split {
        frame_alloc::free_frames(r, 512).expect("allocated above");
    }
    run
}

/// A test's own stretch of the vmalloc region: `pages` pages reserved with
/// [`vmalloc::get_vm_area`] (so no other mapping can be there), their
/// tables made up front (so that writes under test allocate nothing), one
/// frame to map, and the walk that reaches the entries, held as long as
/// the scratch lives. Dropping it unmaps the area and gives everything
/// back.
pub struct Scratch {
    walk: Option<Walking>,
    start: VirtAddr,
    pages: u64,
    frame: PhysAddr,
}

impl Scratch {
    pub fn new(pages: u64) -> Scratch {
        let size = pages * PAGE_SIZE;
        let start = vmalloc::get_vm_area(size, PAGE_SIZE).expect("room for a scratch area");
        apply_to_page_range(start, size, |_| Ok::<(), Infallible>(())).expect("the scratch area's tables");
        let frame = frame_alloc::alloc_frame().expect("a frame for the scratch area");
        let scratch = Scratch { walk: Some(pgtable::walking()), start, pages, frame };
        for i in 0..pages {
            assert_eq!(scratch.entry(i).level, Level::L3, "tables for {} exist", scratch.va(i));
        }
        scratch
    }

    /// The address of page `i` (`va(pages)`: the end of the area).
    pub fn va(&self, i: u64) -> VirtAddr {
        assert!(i <= self.pages, "page {i} of a scratch area of {}", self.pages);
        self.start.add(i * PAGE_SIZE)
    }

    /// The frame the scratch maps.
    pub fn frame(&self) -> PhysAddr {
        self.frame
    }

    /// The level-3 entry of page `i`.
    pub fn entry(&self, i: u64) -> EntryRef<'_> {
        self.walk.as_ref().expect("held until drop").walk(self.va(i))
    }

    /// Maps page `i` to the scratch's frame, read-write.
    pub fn map(&self, i: u64) {
        self.store(i, Descriptor::leaf(Level::L3, self.frame, Attributes::KERNEL_RW));
    }

    /// Clears page `i`'s entry (no TLB flush: the caller's business).
    pub fn clear(&self, i: u64) {
        self.store(i, Descriptor::INVALID);
    }

    /// Maps every page to the scratch's frame; returns what that cost.
    pub fn map_all(&self) -> BarrierCounts {
        let entries: Vec<EntryRef<'_>> = (0..self.pages).map(|i| self.entry(i)).collect();
        let page = Descriptor::leaf(Level::L3, self.frame, Attributes::KERNEL_RW);
        cost(|| {
            for entry in &entries {
                // SAFETY: an entry of the area this scratch reserved, mapping
                // the frame it allocated.
                unsafe { pgtable::write_entry(entry, page) };
            }
        })
    }

    fn store(&self, i: u64, desc: Descriptor) {
        // SAFETY: an entry of the area this scratch reserved; `desc` maps
        // the frame it allocated, or nothing.
        unsafe { pgtable::write_entry(&self.entry(i), desc) };
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.walk = None;
        let end = self.start.add(self.pages * PAGE_SIZE);
        vmalloc::vunmap_range(self.start, end).expect("the scratch area unmaps");
        vmalloc::free_vm_area(self.start).expect("the scratch area is live");
        frame_alloc::free_frame(self.frame).expect("the scratch frame is in use");
    }
}
