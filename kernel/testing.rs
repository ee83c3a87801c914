//! The in-kernel test harness: runs `#[test_case]` functions under QEMU and
//! reports in libtest's format, so `cargo test` and CI read the results the
//! same way as for host tests.
//!
//! Each test runs inside [`exception::catch`], so a failing assertion (a
//! panic) or an unexpected fault fails that test, is reported, and the run
//! goes on with the next one. The run exits non-zero if any test failed.
//! Arguments after `cargo test --` that do not start with `-` are name
//! filters, as with libtest.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::exception::{self, Caught};
use crate::mm::{lazy_mmu, pgtable_check};
use crate::semihosting::{ExitCode, exit};
use crate::{arch, boot_args, print, println, sched};

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

fn selected(name: &str) -> bool {
    let mut filters = boot_args::args().filter(|a| !a.starts_with('-')).peekable();
    filters.peek().is_none() || filters.any(|f| name.contains(f))
}

/// Runs the tests and exits QEMU: 0 when all passed, 101 otherwise.
pub fn run_tests(tests: &[&dyn Testable]) -> ! {
    let start = arch::cpu::counter();
    let chosen: Vec<&&dyn Testable> = tests.iter().filter(|t| selected(t.name())).collect();
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
        let preemption = sched::set_preemption(true);
        let mut why = String::new();
        if let Err(caught) = exception::catch(|| test.run()) {
            let _ = write!(why, "{caught}");
        }
        // A test abandoned inside a lazy MMU section must not leave the
        // next one running in it; one that returns with a section open has
        // a bug of its own.
        // A test abandoned by a failure does not leave a bug planted or
        // preemption off for the next one.
        crate::planted::plant(None);
        sched::set_preemption(preemption);
        let (enabled, paused) = lazy_mmu::recover_abandoned();
        if why.is_empty() && (enabled, paused) != (0, 0) {
            let _ =
                write!(why, "returned with lazy MMU mode still open (enable count {enabled}, pause count {paused})");
        }
        // Everything the test changed is published and invalidated by now,
        // and no rule was broken on the way (a test that breaks one on
        // purpose takes what it broke with `pgtable_check::expecting`).
        pgtable_check::quiescent();
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
    use crate::mm::descriptor::Level;
    use crate::mm::{frame_alloc, pgtable, phys_to_virt};
    assert!(crate::cpu::features().bbml2_noabort, "only a CPU with BBML2_NOABORT has linear-map blocks");
    let mut split = Vec::new();
    let run = loop {
        let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).expect("2 MiB of free frames");
        if pgtable::walk(pgtable::kernel_root(), phys_to_virt(run)).level == Level::L2 {
            break run;
        }
        split.push(run);
    };
    for r in split {
        frame_alloc::free_frames(r, 512).expect("allocated above");
    }
    run
}
