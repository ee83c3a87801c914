//! Linux's lib/test_vmalloc.c as ported for `cargo run -- test_vmalloc`
//! (kernel/cmd/test_vmalloc.rs, included here): each test with a few
//! loops and its checks on (`Params::verify`): every page of every area
//! written with a pattern and read back, every alignment honoured, zeroed
//! areas zero, a `vm_map_ram`-like mapping reaching its own frames, and
//! the one test Linux means to fail failing where it must.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

#[allow(dead_code, reason = "the command's printing helpers")]
#[path = "../kernel/cmd/test_vmalloc.rs"]
mod test_vmalloc;

#[allow(dead_code, reason = "the fuzzer's draws")]
#[path = "../kernel/cmd/rng.rs"]
mod rng;

use lazymmu::barrier::cost;
use lazymmu::mm::{
    self, ApplyMode, PAGE_SIZE, VmallocError, apply_mode,
    lazy_mmu::{Backend, use_backend},
    set_apply_mode,
};
use test_vmalloc::{Failure, Params, Summary, TESTS, run_one};

lazymmu::test_image!();

/// Small loops, checks on, test `name` twice (two repeats).
fn run(name: &str, nr_pages: u64, loops: u64) -> Summary {
    run_with(name, nr_pages, loops, 0)
}

/// [`run`] with `held` 1-page areas live at the region's start meanwhile:
/// the lowest free address is then aligned to no more than two pages, and
/// an alignment the search ignores shows.
fn run_with(name: &str, nr_pages: u64, loops: u64, held: usize) -> Summary {
    let index = TESTS.iter().position(|(n, _)| *n == name).expect("a test of TESTS");
    let p = Params { nr_pages, test_loop_count: loops, test_repeat_count: 2, verify: true, ..Params::default() };
    let before = lazymmu::mm::audit::state();
    let held: alloc::vec::Vec<_> = (0..held).map(|_| mm::vmalloc(PAGE_SIZE).expect("a page")).collect();
    let summary = run_one(&p, index, false);
    held.into_iter().for_each(|va| mm::vfree(va).expect("held above"));
    assert_eq!(mm::area_count(), 0, "{name}: every area given back");
    // Lazily freed areas hold their frames and ranges until a purge.
    mm::vm_unmap_aliases();
    mm::reclaim_page_tables();
    assert_eq!(lazymmu::mm::audit::state(), before, "{name}: nothing left behind");
    summary
}

fn passed(s: Summary) {
    assert_eq!((s.passed, s.failed, s.failure), (2, 0, None), "{s:?}");
}

#[test_case]
fn fix_size_alloc_test_gets_its_patterns_back() {
    for pages in [1, 16, 513] {
        passed(run("fix_size_alloc_test", pages, 8));
    }
}

/// The command's 1-page `fix_size_alloc_test`, 1000 loops, as Linux runs
/// it (the lazy purge on, batched, no pattern checks): each vfree leaves its
/// flush to the purge, and 1000 pages are far below `lazy_max_pages`, so
/// the loop flushes nothing: no TLBI, no `dsb ish`; each vmalloc pays its
/// own pair. The purge after it flushes the thousand areas once.
#[test_case]
fn a_thousand_fix_size_loops_flush_nothing_until_one_purge() {
    let index = TESTS.iter().position(|(n, _)| *n == "fix_size_alloc_test").expect("a test of TESTS");
    let p = Params { nr_pages: 1, test_loop_count: 1000, test_repeat_count: 1, ..Params::default() };
    let lazy = mm::set_vmap_lazy_purge(true);
    let _backend = use_backend(Backend::Batched);
    let mode = apply_mode();
    set_apply_mode(ApplyMode::WholeCall);
    mm::vm_unmap_aliases();
    let before = lazymmu::mm::audit::state();
    assert!(1000 < mm::lazy_max_pages(), "the loop stays below the purge threshold");
    let mut summary = Summary::default();
    let looped = cost(|| summary = run_one(&p, index, false));
    assert_eq!((summary.passed, summary.failed), (1, 0), "{summary:?}");
    let flushes = (looped.tlbi_page, looped.tlbi_range, looped.tlbi_all, looped.dsb_ish);
    assert_eq!(flushes, (0, 0, 0, 0), "no flush in the loop: {looped:?}");
    assert_eq!((looped.dsb_ishst, looped.isb), (1000, 1000), "each vmalloc's own pair: {looped:?}");
    assert_eq!(mm::lazy_pages(), 1000, "every vfree waits for the purge");
    let purge = cost(mm::vm_unmap_aliases);
    assert_eq!(purge.dsb_ish, 1, "one flush for the thousand: {purge:?}");
    assert_eq!(mm::lazy_pages(), 0);
    set_apply_mode(mode);
    mm::set_vmap_lazy_purge(lazy);
    mm::reclaim_page_tables();
    assert_eq!(lazymmu::mm::audit::state(), before, "nothing left behind");
}

#[test_case]
fn full_fit_alloc_test_fills_the_holes_it_made() {
    passed(run("full_fit_alloc_test", 0, 8));
}

#[test_case]
fn long_busy_list_alloc_test_allocates_among_fifteen_thousand_areas() {
    passed(run("long_busy_list_alloc_test", 0, 8));
}

#[test_case]
fn random_size_alloc_test_gets_its_patterns_back() {
    passed(run("random_size_alloc_test", 0, 16));
}

#[test_case]
fn fix_align_alloc_test_honours_its_alignment_and_zeroes() {
    for held in [0, 1] {
        passed(run_with("fix_align_alloc_test", 0, 8, held));
    }
}

#[test_case]
fn random_size_align_alloc_test_honours_every_alignment() {
    for held in [0, 1] {
        passed(run_with("random_size_align_alloc_test", 0, 32, held));
    }
}

/// Meant to fail (Linux's comment): 1 << 47 is the largest alignment an
/// address of the region has (VMALLOC_START, 0xffff_8000_0000_0000); at
/// 1 << 48 no slot exists, and the allocation is refused (Linux's NULL),
/// in each repeat.
#[test_case]
fn align_shift_alloc_test_fails_first_at_an_alignment_the_region_lacks() {
    let s = run("align_shift_alloc_test", 0, 1);
    let refused = Failure::Refused { at: 48, pages: 1, align: 1 << 48, error: VmallocError::NoVirtualSpace };
    assert_eq!((s.passed, s.failed, s.failure), (0, 2, Some(refused)), "{s:?}");
}

#[test_case]
fn vm_map_ram_test_reaches_its_own_frames() {
    for pages in [1, 16] {
        passed(run("vm_map_ram_test", pages, 8));
    }
}

#[test_case]
fn the_tests_linux_has_and_this_kernel_cannot_run_are_listed_as_left_out() {
    let left_out: alloc::vec::Vec<&str> = TESTS.iter().filter(|(_, t)| t.is_none()).map(|(n, _)| *n).collect();
    assert_eq!(left_out, ["pcpu_alloc_test", "kvfree_rcu_1_arg_vmalloc_test", "kvfree_rcu_2_arg_vmalloc_test"]);
    assert_eq!(TESTS.len(), 11, "Linux's run_test_mask bits 0 to 10");
}

#[test_case]
fn parameters_are_linuxs_and_a_bad_one_is_named() {
    assert_eq!(
        Params::default(),
        Params {
            nr_pages: 0,
            test_loop_count: 1_000_000,
            test_repeat_count: 1,
            run_test_mask: i32::MAX as u64,
            verify: false
        }
    );
    let p = Params::parse(&["nr_pages=16", "test_loop_count=10", "test_repeat_count=3", "run_test_mask=0x401"]);
    assert_eq!(
        p,
        Ok(Params { nr_pages: 16, test_loop_count: 10, test_repeat_count: 3, run_test_mask: 0x401, verify: false })
    );
    let error = |args: &[&str]| Params::parse(args).unwrap_err().0;
    assert_eq!(
        error(&["test_loop_count=0"]),
        "test_loop_count=0: test_loop_count is loops of each test, 1 to 4294967295"
    );
    assert_eq!(
        error(&["nr_threads=2"]),
        "no parameter \"nr_threads\"; the parameters are nr_pages, test_loop_count, test_repeat_count, run_test_mask"
    );
    assert_eq!(
        error(&["16"]),
        "\"16\" is not NAME=VALUE; the parameters are nr_pages, test_loop_count, test_repeat_count, run_test_mask"
    );
    assert!(error(&["run_test_mask=0x80000000"]).starts_with("run_test_mask=0x80000000: run_test_mask is the tests"));
}
