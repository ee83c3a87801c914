//! The lazymmu boot binary: `cargo run -- [COMMAND]`. A package of its
//! own (`kernel/cmd/Cargo.toml`), so that what only it needs (the demos,
//! the bench and its aarch64-paging peer, the fuzzer) is no part of the
//! kernel library: it reaches the kernel through the library's public API
//! alone, as any user would. The KASAN model (`kasan_shadow.rs`) is also a
//! workload of the test images that race it, which include the file.

#![no_std]
// As the library (kernel/lib.rs): unsafe is small, local and documented
// (the workspace's lints, Cargo.toml), and a caught fault's message travels
// in large, fixed-size values.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;

use lazymmu::Bug;
use lazymmu::cpu;
use lazymmu::dtb;
use lazymmu::init;
use lazymmu::mm::{debug_pagealloc, frame_alloc, heap_usage, lazy_mmu::Backend, pgtable_check, ptdump};
use lazymmu::semihosting::{ExitCode, exit};
use lazymmu::{boot_args, println};

mod bench;
mod demo;
mod fuzz;
mod kasan_shadow;
mod rng;
mod test_vmalloc;

/// The demos, for a message.
const DEMOS: [&str; 3] = ["lazy", "kasan", "pagealloc"];

/// What `cargo run -- COMMAND` can do.
const COMMANDS: &[(&str, &str)] = &[
    ("(none)", "boot, print the CPU, its features and the memory map, then this menu"),
    ("ptdump", "print the kernel page tables as merged ranges"),
    ("demo lazy [--backend NAME]", "an annotated trace of lazy MMU mode under each backend (or NAME)"),
    ("demo kasan", "the KASAN shadow race: double mappings per backend, without and with pause"),
    ("demo pagealloc", "allocating inside lazy mode (boot with debug_pagealloc=on): both cures, counted"),
    (
        "bench [--tlb-only | --gib] [--quick] [--csv PATH]",
        "every workload under every backend: exact counts and times; prints a summary and writes the CSV to PATH on the host (default target/bench.csv; --quick: small N, counts checked; --tlb-only: the TLB flush strategies, with the CPUs online; --gib: 1 GiB of vmalloc_huge and of vmalloc, on a machine with 3 GiB)",
    ),
    (
        "fuzz [--seed S] [--ops N] [--cpus N] [--backend NAME] [--break BUG]",
        "random mapping operations checked against a model and the page-table rules, under each backend (default seed 1, 2000 ops); --cpus N runs N at once over the shared tables, seeds S to S+N-1, each with its own model (the interleaving differs from run to run; LAZYMMU_SMP sets the CPUs QEMU starts); BUG plants a bug to catch (debug builds only, see `planted.rs`)",
    ),
    (
        "test_vmalloc [nr_pages=N] [test_loop_count=N] [test_repeat_count=N] [run_test_mask=M]",
        "Linux's lib/test_vmalloc.c, ported: its tests, parameters, defaults and summary lines (under -icount shift=0, usec are instructions in thousands)",
    ),
    ("help", "print this menu"),
];

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    let args: Vec<&str> = boot_args::args().collect();
    match args.as_slice() {
        [] => {
            banner();
            menu();
        }
        ["ptdump"] => {
            struct Console;
            impl core::fmt::Write for Console {
                fn write_str(&mut self, s: &str) -> core::fmt::Result {
                    lazymmu::print!("{s}");
                    Ok(())
                }
            }
            let _ = ptdump::dump(&mut Console);
        }
        ["ptdump", option, ..] => {
            println!("lazymmu: ptdump: unknown option {option:?}; it takes none");
            exit(ExitCode::Usage);
        }
        ["demo"] => {
            println!("lazymmu: demo: which one? The demos are {}.", DEMOS.join(", "));
            exit(ExitCode::Usage);
        }
        ["demo", "lazy"] => demo_lazy(None),
        ["demo", "lazy", "--backend", name] => demo_lazy(Some(name)),
        ["demo", "lazy", "--backend"] => {
            println!("lazymmu: demo lazy: --backend needs a name; the backends are {}", backend_names());
            exit(ExitCode::Usage);
        }
        ["demo", "lazy", option, ..] => {
            println!("lazymmu: demo lazy: unknown option {option:?}; it takes --backend NAME");
            exit(ExitCode::Usage);
        }
        ["demo", "kasan"] => {
            if let Err(e) = demo::kasan(100) {
                println!("lazymmu: demo kasan: {e:?}");
                exit(ExitCode::Usage);
            }
        }
        ["demo", "pagealloc"] => {
            if let Err(e) = demo::pagealloc(8) {
                println!("lazymmu: demo pagealloc: {e:?}");
                exit(ExitCode::Usage);
            }
        }
        ["bench", options @ ..] => bench(options),
        ["fuzz", options @ ..] => fuzz(options),
        ["test_vmalloc", params @ ..] => run_test_vmalloc(params),
        ["help"] | ["--help"] | ["-h"] => menu(),
        [option, ..] if option.starts_with('-') => {
            println!(
                "lazymmu: unknown option {option:?}: options come after a command (`cargo run -- help` lists them)"
            );
            exit(ExitCode::Usage);
        }
        ["demo", name, rest @ ..] => {
            match rest.first() {
                Some(option) if DEMOS.contains(name) => {
                    println!("lazymmu: demo {name}: unknown option {option:?}; it takes none")
                }
                _ => println!("lazymmu: no demo {name:?}; the demos are {}", DEMOS.join(", ")),
            }
            exit(ExitCode::Usage);
        }
        [command, ..] => {
            println!("lazymmu: unknown command {command:?}");
            menu();
            exit(ExitCode::Usage);
        }
    }
    finish()
}

/// Ends a command: nothing it changed may still be owed, and no page-table
/// rule may have been broken on the way (the demos take the violations
/// they show on purpose).
fn finish() -> ! {
    pgtable_check::quiescent();
    let broken = pgtable_check::take_violations();
    if pgtable_check::enabled() {
        println!("{}", pgtable_check::stats());
    }
    if broken.total() > 0 {
        println!("lazymmu: page-table rules broken: {}", broken.summary());
        exit(ExitCode::RuleViolated);
    }
    exit(ExitCode::Success)
}

fn banner() {
    let f = cpu::features();
    let m = dtb::info();
    println!("lazymmu {}: Linux's lazy MMU mode on arm64, measured", env!("CARGO_PKG_VERSION"));
    println!("cpu:      {} ({} in the device tree, {} online)", f.model(), m.cpus, lazymmu::smp::online_cpus());
    println!("features: FEAT_TLBIRANGE {}", if f.tlbi_range { "yes" } else { "no" });
    println!(
        "          FEAT_BBM level {}, BBML2_NOABORT {}",
        f.bbm_level,
        if f.bbml2_noabort {
            "yes (live linear-map blocks may be split in place)"
        } else {
            "no (the linear map is made of pages)"
        }
    );
    println!(
        "          FEAT_HAFDBS {}",
        match f.hafdbs {
            0 => "no",
            1 => "access flag only",
            _ => "access flag and dirty state",
        }
    );
    println!(
        "          4K granule {}{}",
        if f.granule_4k { "yes" } else { "NO" },
        if f.granule_4k_lpa2 { " (TGran4 = 0b0001: also 52-bit with LPA2)" } else { "" }
    );
    println!("          {}-bit physical addresses", f.pa_bits);
    let image = init::image();
    let image_pa = lazymmu::mm::image_phys(image, image.text.0);
    println!("memory map (from the device tree):");
    println!("  RAM          {}-{:#x} ({} MiB)", m.ram_start, m.ram_start.as_u64() + m.ram_size, m.ram_size >> 20);
    println!("  device tree  {}-{:#x}", m.dtb_start, m.dtb_start.as_u64() + m.dtb_size);
    println!(
        "  kernel image {}-{:#x}, linked at {}",
        image_pa,
        image_pa.as_u64() + image.data.1.offset_from(image.text.0),
        image.text.0
    );
    if debug_pagealloc::enabled() {
        let boot = debug_pagealloc::boot_stats();
        println!(
            "debug_pagealloc: on ({} linear-map blocks split, {} free frames unmapped)",
            boot.blocks_split, boot.frames_unmapped
        );
    }
    let frames = frame_alloc::stats();
    let (heap_used, heap_free) = heap_usage();
    println!("  frames       {} total, {} free, {} used (4 KiB each)", frames.total, frames.free, frames.used);
    println!("  heap         {} KiB ({} KiB used)", (heap_used + heap_free) >> 10, heap_used >> 10);
}

fn demo_lazy(name: Option<&str>) {
    let backend = name.map(|name| {
        Backend::from_name(name).unwrap_or_else(|| {
            println!("lazymmu: no backend {name:?}; the backends are {}", backend_names());
            exit(ExitCode::Usage)
        })
    });
    if let Err(e) = demo::lazy(backend) {
        println!("lazymmu: demo lazy: {e:?}");
        exit(ExitCode::Usage);
    }
}

/// The backends' names, for a usage message.
fn backend_names() -> alloc::string::String {
    Backend::ALL.map(Backend::name).join(", ")
}

/// What `bench` takes, for its messages.
const BENCH_OPTIONS: &str = "--tlb-only, --gib, --quick and --csv PATH";

/// Where `bench` writes its CSV unless told (`--csv PATH`): a host path,
/// relative to the directory QEMU runs in (`cargo run` runs it where it
/// was called, usually the repository).
const BENCH_CSV: &str = "target/bench.csv";

fn bench(options: &[&str]) {
    let (mut quick, mut tlb_only, mut gib, mut csv_path) = (false, false, false, BENCH_CSV);
    let mut rest = options.iter();
    while let Some(&option) = rest.next() {
        match option {
            "--quick" => quick = true,
            "--tlb-only" => tlb_only = true,
            "--gib" => gib = true,
            "--csv" => match rest.next() {
                Some(path) => csv_path = path,
                None => {
                    println!("lazymmu: bench: --csv needs a path on the host");
                    exit(ExitCode::Usage);
                }
            },
            other => {
                println!("lazymmu: bench: unknown option {other:?}; it takes {BENCH_OPTIONS}");
                exit(ExitCode::Usage);
            }
        }
    }
    // The figures are the kernel's own cost, not the checker's, unless
    // `pgtable_check=on` asks to see what checking costs.
    let checked = boot_args::option("pgtable_check").and_then(boot_args::kstrtobool) == Some(true);
    if !checked {
        pgtable_check::disable();
    }
    let cpus = lazymmu::smp::online_cpus();
    println!(
        "lazymmu bench{}{}{}: counter at {} Hz, {cpus} {} online",
        if tlb_only { " --tlb-only" } else { "" },
        if gib { " --gib" } else { "" },
        if quick { " --quick" } else { "" },
        lazymmu::cpu::counter_frequency(),
        if cpus == 1 { "CPU" } else { "CPUs" }
    );
    if cfg!(debug_assertions) {
        println!(
            "bench: a debug build: its times include the debug build's checks and unoptimised code; they are not for \
             quoting (scripts/bench runs the release build)"
        );
    }
    let run = match (tlb_only, gib) {
        (true, _) => bench::run_tlb_only,
        (false, true) => bench::run_gib,
        (false, false) => bench::run,
    };
    let results = match run(quick) {
        Ok(results) => results,
        Err(e) => {
            println!("lazymmu: bench: {e:?}");
            exit(ExitCode::Usage);
        }
    };
    println!("pgtable_check: {} while measuring", if checked { "on (the figures include its cost)" } else { "off" });
    if tlb_only || gib {
        bench::print_table(&results);
    } else {
        bench::print_headline(&results);
        bench::print_reserve(&results);
    }
    let csv = bench::csv(&results);
    match lazymmu::semihosting::HostFile::create(csv_path) {
        Some(file) => {
            file.write(csv.as_bytes());
            println!("bench: {} rows written to {csv_path} (on the host)", results.rows.len());
        }
        None => {
            println!("bench: cannot write {csv_path} on the host; the CSV follows");
            println!("--- results.csv ---");
            lazymmu::print!("{csv}");
            println!("--- end results.csv ---");
        }
    }
    if !results.failures.is_empty() {
        for failure in &results.failures {
            println!("bench: count check FAILED: {failure}");
        }
        exit(ExitCode::TestsFailed);
    }
    if quick {
        let budgets = if bench::budgets_apply(&results) { " and every instruction budget held" } else { "" };
        println!("bench: every count check passed{budgets}");
    }
}

/// What `fuzz` takes, for its messages.
const FUZZ_OPTIONS: &str = "--seed N, --ops N, --cpus N, --backend NAME and --break BUG";

/// Ends the command with a message about one of `fuzz`'s options.
fn fuzz_usage(what: core::fmt::Arguments) -> ! {
    println!("lazymmu: fuzz: {what}");
    exit(ExitCode::Usage);
}

fn fuzz(options: &[&str]) {
    let mut config = fuzz::Config { seed: 1, ops: 2000, backends: fuzz::all_backends(), broken: None, cpus: 1 };
    let mut rest = options;
    while let [flag, tail @ ..] = rest {
        let known = ["--seed", "--ops", "--cpus", "--backend", "--break"];
        if !known.contains(flag) {
            fuzz_usage(format_args!("unknown option {flag:?}; it takes {FUZZ_OPTIONS}"));
        }
        let [value, tail @ ..] = tail else { fuzz_usage(format_args!("{flag} needs a value")) };
        let number = |what: &str| -> u64 {
            value.parse().unwrap_or_else(|_| {
                fuzz_usage(format_args!("{flag} {value}: {what} is a whole number from 0 to {}", u64::MAX))
            })
        };
        match *flag {
            "--seed" => config.seed = number("the seed"),
            "--ops" => config.ops = number("the number of operations per backend"),
            "--cpus" => {
                let online = lazymmu::smp::online_cpus();
                config.cpus = match value.parse::<usize>() {
                    Ok(n) if (1..=online).contains(&n) => n,
                    _ => fuzz_usage(format_args!(
                        "--cpus {value}: a number of CPUs from 1 to the {online} online (LAZYMMU_SMP sets how many QEMU starts)"
                    )),
                }
            }
            "--backend" => match Backend::from_name(value) {
                Some(backend) => config.backends = Vec::from([backend]),
                None => fuzz_usage(format_args!("no backend {value:?}; the backends are {}", backend_names())),
            },
            _ if !cfg!(debug_assertions) => fuzz_usage(format_args!(
                "--break {value}: {}; build without --release",
                lazymmu::PLANTED_BUGS_DEBUG_ONLY
            )),
            _ => match Bug::from_name(value) {
                Some(bug) => config.broken = Some(bug),
                None => {
                    let bugs = Bug::ALL.iter().map(|bug| bug.name()).collect::<Vec<_>>().join(", ");
                    fuzz_usage(format_args!("no planted bug {value:?}; the bugs are {bugs}"))
                }
            },
        }
        rest = tail;
    }
    let seeds = match config.cpus {
        1 => format!("seed {}", config.seed),
        n => format!(
            "{n} CPUs at once, seeds {} to {} (one per CPU: each CPU's operations are its seed's, their interleaving differs from run to run)",
            config.seed,
            config.seed.wrapping_add(n as u64 - 1)
        ),
    };
    println!(
        "lazymmu fuzz: {seeds}, {} ops under each of {}{}",
        config.ops,
        config.backends.iter().map(|b| b.name()).collect::<Vec<_>>().join(", "),
        config
            .broken
            .map(|bug| format!(" (kernel deliberately broken, {}: {})", bug.name(), bug.what()))
            .unwrap_or_default()
    );
    let progress = |backend: Backend, cpu: Option<usize>, ops: u64, checks: u64| match cpu {
        None => println!("fuzz: {backend}: {ops} ops, {checks} page checks"),
        Some(cpu) => println!("fuzz: {backend}: cpu {cpu}: {ops} ops, {checks} page checks"),
    };
    match fuzz::run(&config, progress) {
        Ok(report) => {
            for (backend, runs) in &report.runs {
                if let [one] = runs[..] {
                    println!(
                        "fuzz: {backend}: {} ops, {} page checks, final sweep and teardown: ok",
                        one.ops, one.checks
                    );
                    continue;
                }
                for (cpu, run) in runs.iter().enumerate() {
                    println!(
                        "fuzz: {backend}: cpu {cpu} (seed {}): {} ops, {} page checks, {} steps ended on another CPU, {} pages given back were another's by their check",
                        config.seed.wrapping_add(cpu as u64),
                        run.ops,
                        run.checks,
                        run.migrations,
                        run.handed_on
                    );
                }
                let total: u64 = runs.iter().map(|r| r.ops).sum();
                println!("fuzz: {backend}: {total} ops on {} CPUs, final sweep and teardown: ok", runs.len());
            }
            println!("fuzz: no divergence");
        }
        Err(d) => {
            let (seed, at) = match config.cpus {
                1 => (config.seed, alloc::string::String::new()),
                _ => (config.seed.wrapping_add(d.cpu as u64), format!(" on cpu {}", d.cpu)),
            };
            match d.rule {
                Some(rule) => println!(
                    "fuzz: PAGE-TABLE RULE `{rule}` BROKEN under {} at op #{}{at} ({}), seed {seed}:",
                    d.backend, d.step, d.op
                ),
                None => println!("fuzz: DIVERGENCE under {} at op #{}{at} ({}), seed {seed}:", d.backend, d.step, d.op),
            }
            println!("  {}", d.what);
            let broken = config.broken.map(|bug| format!(" --break {}", bug.name())).unwrap_or_default();
            let off = if pgtable_check::enabled() { "" } else { "pgtable_check=off " };
            let cpus = match config.cpus {
                1 => alloc::string::String::new(),
                n => format!(" --cpus {n}"),
            };
            println!(
                "  reproduce: cargo run -- {off}fuzz{cpus} --seed {} --ops {} --backend {}{broken}",
                config.seed,
                d.step + 1,
                d.backend
            );
            if config.cpus > 1 {
                println!(
                    "  (the same operations on each CPU; not the same interleaving, so it may take more ops or runs)"
                );
            }
            exit(if d.rule.is_some() { ExitCode::RuleViolated } else { ExitCode::TestsFailed });
        }
    }
}

fn run_test_vmalloc(args: &[&str]) {
    let p = test_vmalloc::Params::parse(args).unwrap_or_else(|test_vmalloc::ParamError(e)| {
        println!("lazymmu: test_vmalloc: {e}");
        exit(ExitCode::Usage)
    });
    // The figures are vmalloc's own, as Linux's module measures it: the
    // page-table rules checker is off unless `pgtable_check=on` asks.
    let checked = boot_args::option("pgtable_check").and_then(boot_args::kstrtobool) == Some(true);
    if !checked {
        pgtable_check::disable();
    }
    let counting = cpu::start_instruction_counter();
    println!(
        "test_vmalloc: nr_pages={} test_loop_count={} test_repeat_count={} run_test_mask={:#x}, 1 worker, {} CPUs online, pgtable_check {}{}",
        p.nr_pages,
        p.test_loop_count,
        p.test_repeat_count,
        p.run_test_mask,
        lazymmu::smp::online_cpus(),
        if checked { "on" } else { "off" },
        if counting { " (-icount: usec are instructions in thousands)" } else { "" }
    );
    // One worker, never sliced: the figures are the tests' own.
    let preemption = lazymmu::sched::set_preemption(false);
    let start = cpu::counter();
    for (index, &(name, test)) in test_vmalloc::TESTS.iter().enumerate() {
        if p.run_test_mask & (1 << index) == 0 {
            continue;
        }
        if test.is_none() {
            println!("Skipped: {name}: {}", test_vmalloc::left_out(name));
            continue;
        }
        let s = test_vmalloc::run_one(&p, index, counting);
        println!(
            "Summary: {name} passed: {} failed: {} repeat: {} loops: {} avg: {} usec",
            s.passed, s.failed, p.test_repeat_count, p.test_loop_count, s.avg_usec
        );
        if let Some(insns) = s.insns_per_loop {
            println!("Instructions: {name} {insns} per loop");
        }
        if let Some(f) = s.failure {
            println!("Failed: {name}: {f:?}");
        }
    }
    println!("All test took worker0={} cycles", cpu::counter() - start);
    lazymmu::sched::set_preemption(preemption);
}

fn menu() {
    println!("usage: cargo run -- [OPTION=VALUE...] [COMMAND]   (scripts/run ... sets up first)");
    println!("options: debug_pagealloc=on   free frames leave the linear map (use after free faults)");
    println!("         pgtable_check=off    do not check the page-table rules (on by default; bench turns it off)");
    for (name, what) in COMMANDS {
        println!("  {name:<28} {what}");
    }
}
