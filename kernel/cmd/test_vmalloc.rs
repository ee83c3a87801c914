//! `cargo run -- test_vmalloc [nr_pages=N] [test_loop_count=N]
//! [test_repeat_count=N] [run_test_mask=M]`: Linux's `lib/test_vmalloc.c`
//! (Uladzislau Rezki's vmalloc stress and performance module), ported by
//! behaviour, so that the two kernels can be run side by side: the same
//! tests, the same parameters with the same defaults, the same summary
//! line per test (`Summary: <test> passed: N failed: N repeat: N loops: N
//! avg: N usec`, avg being the time of one repeat of the test).
//!
//! Under QEMU with `-icount shift=0` the virtual clock advances one
//! nanosecond per instruction, so `avg` is then the test's instructions in
//! thousands, the same on every host; the extra `insns/loop` line gives the
//! exact count per loop from the PMU.
//!
//! What differs from Linux, and why:
//! - one worker (Linux's `nr_threads` kthreads), and the tests run in mask
//!   order (`sequential_test_order=1`): one task, reproducible figures;
//! - `pcpu_alloc_test`, `kvfree_rcu_1_arg_vmalloc_test` and
//!   `kvfree_rcu_2_arg_vmalloc_test` are left out: this kernel has no
//!   per-CPU allocator and no RCU; `use_huge` waits for `vmalloc_huge`;
//! - an alignment below a page is a page (`__vmalloc_node` rounds every
//!   area to pages anyway; our `vmalloc_aligned` refuses it as a bad
//!   argument);
//! - random sizes come from a fixed-seed generator, so a run repeats.
//!
//! The test images (tests/test_vmalloc.rs) include this file and run each
//! test with [`Params::verify`]: every page written with a pattern and read
//! back, every alignment checked, the failures Linux expects asserted.

use alloc::vec::Vec;

use lazymmu::cpu;
use lazymmu::mm::{self, Attributes, PAGE_SIZE, PhysAddr, VirtAddr, VmallocError, frame_alloc, phys_to_virt};

use crate::rng::Rng;

/// The parameters, with Linux's names and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Pages of `fix_size_alloc_test` and `vm_map_ram_test` (0: one).
    pub nr_pages: u64,
    pub test_loop_count: u64,
    pub test_repeat_count: u64,
    /// Bit `i` runs test `i` of [`TESTS`].
    pub run_test_mask: u64,
    /// Not Linux's: write and read back every page, check every alignment
    /// (the test images; it changes what is measured).
    pub verify: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            nr_pages: 0,
            test_loop_count: 1_000_000,
            test_repeat_count: 1,
            run_test_mask: i32::MAX as u64,
            verify: false,
        }
    }
}

/// The parameters a user may set, with what each takes.
pub const PARAMS: [(&str, &str); 4] = [
    ("nr_pages", "pages of fix_size_alloc_test and vm_map_ram_test, 0 (one page) to 1048576"),
    ("test_loop_count", "loops of each test, 1 to 4294967295"),
    ("test_repeat_count", "repeats of each test, 1 to 4294967295"),
    ("run_test_mask", "the tests to run, bit i for test i: 1 to 2147483647 (decimal or 0x hex)"),
];

/// Why a parameter was refused: the message names the value and what is valid.
#[derive(Debug, PartialEq, Eq)]
pub struct ParamError(pub alloc::string::String);

impl Params {
    /// Reads `name=value` arguments.
    pub fn parse(args: &[&str]) -> Result<Params, ParamError> {
        use alloc::format;
        let names = || PARAMS.map(|(n, _)| n).join(", ");
        let mut p = Params::default();
        for arg in args {
            let Some((name, value)) = arg.split_once('=') else {
                return Err(ParamError(format!("{arg:?} is not NAME=VALUE; the parameters are {}", names())));
            };
            let Some(&(_, valid)) = PARAMS.iter().find(|(n, _)| *n == name) else {
                return Err(ParamError(format!("no parameter {name:?}; the parameters are {}", names())));
            };
            let parsed = match value.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => value.parse::<u64>().ok(),
            };
            let (lo, hi) = match name {
                "nr_pages" => (0, 1 << 20),
                "run_test_mask" => (1, i32::MAX as u64),
                _ => (1, u32::MAX as u64),
            };
            let Some(v) = parsed.filter(|v| (lo..=hi).contains(v)) else {
                return Err(ParamError(format!("{name}={value}: {name} is {valid}")));
            };
            match name {
                "nr_pages" => p.nr_pages = v,
                "test_loop_count" => p.test_loop_count = v,
                "test_repeat_count" => p.test_repeat_count = v,
                _ => p.run_test_mask = v,
            }
        }
        Ok(p)
    }

    fn pages(&self) -> u64 {
        self.nr_pages.max(1)
    }
}

/// Why a test failed (Linux's tests return -1 and say no more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The allocation of `pages` pages aligned to `align` at loop `at` was
    /// refused (Linux's NULL).
    Refused { at: u64, pages: u64, align: u64, error: VmallocError },
    /// A word read back is not the one written (verify only).
    Pattern { va: VirtAddr, wrote: u64, read: u64 },
    /// A zeroed allocation was not zero (verify only).
    NotZero { va: VirtAddr, read: u64 },
    /// An area not aligned as asked (verify only).
    Misaligned { va: VirtAddr, align: u64 },
    /// Frames for vm_map_ram_test could not be had.
    NoFrames,
}

type Outcome = Result<(), Failure>;

/// A test: its name (Linux's) and body, None where it does not apply here.
pub type Test = (&'static str, Option<fn(&Params, &mut Rng) -> Outcome>);

/// Linux's tests, in its order (the mask's bits).
pub const TESTS: [Test; 11] = [
    ("fix_size_alloc_test", Some(fix_size_alloc_test)),
    ("full_fit_alloc_test", Some(full_fit_alloc_test)),
    ("long_busy_list_alloc_test", Some(long_busy_list_alloc_test)),
    ("random_size_alloc_test", Some(random_size_alloc_test)),
    ("fix_align_alloc_test", Some(fix_align_alloc_test)),
    ("random_size_align_alloc_test", Some(random_size_align_alloc_test)),
    ("align_shift_alloc_test", Some(align_shift_alloc_test)),
    ("pcpu_alloc_test", None),
    ("kvfree_rcu_1_arg_vmalloc_test", None),
    ("kvfree_rcu_2_arg_vmalloc_test", None),
    ("vm_map_ram_test", Some(vm_map_ram_test)),
];

/// Why a test of [`TESTS`] is left out.
pub fn left_out(name: &str) -> &'static str {
    match name {
        "pcpu_alloc_test" => "no per-CPU allocator in this kernel",
        _ => "no RCU in this kernel",
    }
}

/// arm64's `THREAD_ALIGN` (`2 * THREAD_SIZE`, 16 KiB stacks, VMAP_STACK).
const THREAD_ALIGN: u64 = 32 * 1024;

/// `vmalloc`/`__vmalloc_node` as the test calls it; under `verify`, checks
/// the alignment and (zeroed) the content, then writes every page and
/// reads it back.
fn alloc(p: &Params, at: u64, pages: u64, align: u64, zeroed: bool) -> Result<VirtAddr, Failure> {
    let align = align.max(PAGE_SIZE);
    let size = pages * PAGE_SIZE;
    let va = match (zeroed, align) {
        (false, PAGE_SIZE) => mm::vmalloc(size),
        (false, _) => mm::vmalloc_aligned(size, align),
        (true, _) => mm::vzalloc_aligned(size, align),
    }
    .map_err(|error| Failure::Refused { at, pages, align, error })?;
    if p.verify {
        let checked = check_area(va, pages, align, zeroed);
        if checked.is_err() {
            mm::vfree(va).expect("just allocated");
        }
        checked?;
    }
    Ok(va)
}

/// The verify checks of a fresh area (see [`alloc`]).
fn check_area(va: VirtAddr, pages: u64, align: u64, zeroed: bool) -> Outcome {
    if !va.is_aligned(align) {
        return Err(Failure::Misaligned { va, align });
    }
    for page in 0..pages {
        let words = va.add(page * PAGE_SIZE).as_mut_ptr::<u64>();
        for w in 0..PAGE_SIZE / 8 {
            // SAFETY: a word of the area just mapped for this test alone.
            let word = unsafe { words.add(w as usize) };
            let wrote = va.as_u64() ^ (page << 32) ^ w;
            // SAFETY: as above.
            let read = unsafe { word.read_volatile() };
            if zeroed && read != 0 {
                return Err(Failure::NotZero { va: VirtAddr::new(word as u64), read });
            }
            // SAFETY: as above.
            let read = unsafe {
                word.write_volatile(wrote);
                word.read_volatile()
            };
            if read != wrote {
                return Err(Failure::Pattern { va: VirtAddr::new(word as u64), wrote, read });
            }
        }
    }
    Ok(())
}

/// Writes `value` to the first byte of `va` (Linux's `*((u8 *)p) = value`).
fn touch(va: VirtAddr, value: u8) {
    // SAFETY: the first byte of an area the test just allocated.
    unsafe { va.as_mut_ptr::<u8>().write_volatile(value) };
}

fn free(va: VirtAddr) {
    mm::vfree(va).expect("allocated by the test");
}

/// vmalloc(nr_pages), touch, vfree.
pub fn fix_size_alloc_test(p: &Params, _: &mut Rng) -> Outcome {
    for at in 0..p.test_loop_count {
        let va = alloc(p, at, p.pages(), PAGE_SIZE, false)?;
        touch(va, 0);
        free(va);
    }
    Ok(())
}

/// Areas left live by a test, freed whatever happens.
struct Live(Vec<VirtAddr>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.drain(..).for_each(free);
    }
}

/// Fills the region with pairs of 1-page areas (32 MiB worth per bit of
/// the CPU count), frees every second one, then allocates 1 page at a
/// time: each fits a hole exactly.
pub fn full_fit_alloc_test(p: &Params, _: &mut Rng) -> Outcome {
    let junk_length = (usize::BITS - lazymmu::smp::online_cpus().leading_zeros()) as u64 * (32 << 20) / PAGE_SIZE;
    let mut kept = Live(Vec::with_capacity(junk_length as usize));
    let mut junk = Live(Vec::with_capacity(junk_length as usize));
    for at in 0..junk_length {
        kept.0.push(alloc(p, at, 1, PAGE_SIZE, false)?);
        junk.0.push(alloc(p, at, 1, PAGE_SIZE, false)?);
    }
    drop(junk);
    for at in 0..p.test_loop_count {
        let va = alloc(p, at, 1, PAGE_SIZE, false)?;
        touch(va, 1);
        free(va);
    }
    Ok(())
}

/// 15,000 1-page areas live, then a 100-page and a 1-page area at a time.
pub fn long_busy_list_alloc_test(p: &Params, _: &mut Rng) -> Outcome {
    let mut busy = Live(Vec::with_capacity(15_000));
    for at in 0..15_000 {
        busy.0.push(alloc(p, at, 1, PAGE_SIZE, false)?);
    }
    for at in 0..p.test_loop_count {
        let big = alloc(p, at, 100, PAGE_SIZE, false)?;
        let small = match alloc(p, at, 1, PAGE_SIZE, false) {
            Ok(va) => va,
            Err(e) => {
                free(big);
                return Err(e);
            }
        };
        touch(big, 0);
        touch(small, 1);
        free(big);
        free(small);
    }
    Ok(())
}

/// vmalloc of 1 to 100 pages, touch, vfree.
pub fn random_size_alloc_test(p: &Params, rng: &mut Rng) -> Outcome {
    for at in 0..p.test_loop_count {
        let va = alloc(p, at, rng.inclusive(1, 100), PAGE_SIZE, false)?;
        touch(va, 1);
        free(va);
    }
    Ok(())
}

/// 5 zeroed pages aligned to twice arm64's THREAD_ALIGN.
pub fn fix_align_alloc_test(p: &Params, _: &mut Rng) -> Outcome {
    for at in 0..p.test_loop_count {
        free(alloc(p, at, 5, THREAD_ALIGN << 1, true)?);
    }
    Ok(())
}

/// 1 to 10 zeroed pages aligned to 1 << (0..22): one random byte decides both.
pub fn random_size_align_alloc_test(p: &Params, rng: &mut Rng) -> Outcome {
    for at in 0..p.test_loop_count {
        let rnd = rng.next() as u8 as u64;
        free(alloc(p, at, rnd % 10 + 1, 1 << (rnd % 23), true)?);
    }
    Ok(())
}

/// One zeroed page aligned to 1 << i for i = 0..63: meant to fail (Linux's
/// comment) once no address of the region has the alignment.
pub fn align_shift_alloc_test(p: &Params, _: &mut Rng) -> Outcome {
    for i in 0..u64::BITS as u64 {
        free(alloc(p, i, 1, 1 << i, true)?);
    }
    Ok(())
}

/// vm_map_ram of nr_pages frames the test owns, write one byte, vm_unmap_ram.
pub fn vm_map_ram_test(p: &Params, _: &mut Rng) -> Outcome {
    let pages = p.pages();
    let mut frames = Vec::new();
    if frames.try_reserve_exact(pages as usize).is_err()
        || frame_alloc::alloc_frames_bulk(pages as usize, &mut frames).is_err()
    {
        return Err(Failure::NoFrames);
    }
    let outcome = map_ram_loop(p, &frames);
    // The unmapped areas wait for a purge: no TLB may still reach the
    // frames when they go back (this kernel's contract for vunmap).
    mm::vm_unmap_aliases();
    frame_alloc::free_frames_bulk(&frames).expect("allocated above");
    outcome
}

fn map_ram_loop(p: &Params, frames: &[PhysAddr]) -> Outcome {
    for at in 0..p.test_loop_count {
        // SAFETY: the frames are this test's, mapped read/write while it
        // owns them.
        let va = unsafe { mm::vmap_pages(frames, Attributes::KERNEL_RW) }.map_err(|error| Failure::Refused {
            at,
            pages: frames.len() as u64,
            align: PAGE_SIZE,
            error,
        })?;
        touch(va, b'a');
        let mut outcome = Ok(());
        if p.verify {
            // Each page reaches its own frame: what goes in through the
            // mapping comes out through the linear map.
            for (i, &pa) in frames.iter().enumerate() {
                let wrote = pa.as_u64() ^ at;
                let word = va.add(i as u64 * PAGE_SIZE + 8).as_mut_ptr::<u64>();
                // SAFETY: a word of the test's own mapping, and of its frame.
                let read = unsafe {
                    word.write_volatile(wrote);
                    phys_to_virt(pa).add(8).as_mut_ptr::<u64>().read_volatile()
                };
                if read != wrote {
                    outcome = Err(Failure::Pattern { va: VirtAddr::new(word as u64), wrote, read });
                    break;
                }
            }
        }
        mm::vunmap(va).expect("mapped just above");
        outcome?;
    }
    Ok(())
}

/// One test's results over its repeats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    /// Time of one repeat, on average.
    pub avg_usec: u64,
    /// Instructions per loop, where the PMU counts them (under -icount).
    pub insns_per_loop: Option<u64>,
    /// The first failure.
    pub failure: Option<Failure>,
}

/// Runs test `index` of [`TESTS`] (which applies) `test_repeat_count` times.
pub fn run_one(p: &Params, index: usize, counting: bool) -> Summary {
    let (_, Some(test)) = TESTS[index] else { unreachable!("a test that applies") };
    let mut rng = Rng::new(index as u64 + 1);
    let mut s = Summary::default();
    let (t0, i0) = (cpu::counter(), counting.then(cpu::instructions));
    for _ in 0..p.test_repeat_count {
        match test(p, &mut rng) {
            Ok(()) => s.passed += 1,
            Err(f) => {
                s.failed += 1;
                s.failure.get_or_insert(f);
            }
        }
    }
    let counted = i0.map(|i0| cpu::instructions().wrapping_sub(i0) & 0xffff_ffff);
    let ns = (cpu::counter() - t0) as u128 * 1_000_000_000 / cpu::counter_frequency() as u128;
    s.avg_usec = (ns / 1000) as u64 / p.test_repeat_count;
    // The PMU counts only under -icount shift=0, where a nanosecond is an
    // instruction; its event counter is 32 bits wide: past that, the
    // clock's count (to the counter's tick, 16 instructions at 62.5 MHz).
    let loops = p.test_repeat_count * p.test_loop_count;
    s.insns_per_loop = counted.map(|c| if ns < 1 << 32 { c } else { ns as u64 } / loops);
    s
}
