//! Lazy MMU mode: the generic layer's state machine and what each backend
//! emits, counted exactly.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::testing::run_tests)]
#![reexport_test_harness_main = "test_main"]

extern crate alloc;

use alloc::vec::Vec;

use lazymmu::arch::barrier::{self, BarrierCounts};
use lazymmu::mm::lazy_mmu::backend_name;
use lazymmu::mm::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use lazymmu::mm::descriptor::{Attributes, Descriptor, Level};
use lazymmu::mm::layout::VMALLOC_START;
use lazymmu::mm::lazy_mmu::*;
use lazymmu::mm::pgtable::{self, EntryRef};
use lazymmu::mm::translate::{Access, HwTranslation, hw_translate};
use lazymmu::mm::{frame_alloc, tlb};
use lazymmu::task;

#[unsafe(no_mangle)]
fn kernel_main() -> ! {
    test_main();
    unreachable!("the test runner exits QEMU");
}

/// `pages` level-3 slots in the vmalloc region, their tables made up front
/// (so the writes under test allocate nothing), and one frame to map.
struct Scratch {
    entries: Vec<EntryRef>,
    frame: PhysAddr,
}

const SCRATCH: VirtAddr = VMALLOC_START.add(0x4000_0000);

impl Scratch {
    fn new(pages: u64) -> Scratch {
        let entries = (0..pages)
            .map(|i| pgtable::walk_create(pgtable::kernel_root(), SCRATCH.add(i * PAGE_SIZE), Level::L3).unwrap())
            .collect();
        Scratch { entries, frame: frame_alloc::alloc_frame().unwrap() }
    }

    /// Maps every slot to the frame; returns what that cost.
    fn write_all(&self) -> BarrierCounts {
        cost(|| {
            for entry in &self.entries {
                pgtable::write_entry(entry, Descriptor::leaf(Level::L3, self.frame, Attributes::KERNEL_RW));
            }
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for entry in &self.entries {
            pgtable::write_entry(entry, Descriptor::INVALID);
        }
        let size = self.entries.len() as u64 * PAGE_SIZE;
        pgtable::free_empty_tables(pgtable::kernel_root(), SCRATCH, size);
        tlb::flush_tlb_kernel_range(SCRATCH, SCRATCH.add(size));
        frame_alloc::free_frame(self.frame).unwrap();
    }
}

/// Selects a backend for a test and puts the previous one back after.
struct Backend {
    previous: &'static str,
}

impl Backend {
    fn select(name: &str) -> Backend {
        let previous = backend_name();
        assert!(select_backend(name), "no backend {name}");
        Backend { previous }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        select_backend(self.previous);
    }
}

fn pairs(c: BarrierCounts) -> (u64, u64) {
    (c.dsb_ishst, c.isb)
}

fn cost(f: impl FnOnce()) -> BarrierCounts {
    let before = barrier::counts();
    f();
    barrier::counts() - before
}

fn depth() -> (u8, u8) {
    let s = &task::current().lazy_mmu;
    (s.enable_count.get(), s.pause_count.get())
}

#[test_case]
fn kunit_sequence_active_nested_paused_resumed() {
    assert!(!is_lazy_mmu_mode_active());
    lazy_mmu_mode_enable().unwrap();
    assert!(is_lazy_mmu_mode_active(), "active after enable");
    lazy_mmu_mode_enable().unwrap();
    lazy_mmu_mode_disable().unwrap();
    assert!(is_lazy_mmu_mode_active(), "still active after a nested enable/disable");
    lazy_mmu_mode_pause().unwrap();
    assert!(!is_lazy_mmu_mode_active(), "inactive after pause");
    lazy_mmu_mode_enable().unwrap();
    lazy_mmu_mode_disable().unwrap();
    lazy_mmu_mode_pause().unwrap();
    lazy_mmu_mode_resume().unwrap();
    assert!(!is_lazy_mmu_mode_active(), "calls while paused leave it inactive");
    assert_eq!(depth(), (1, 1));
    lazy_mmu_mode_resume().unwrap();
    assert!(is_lazy_mmu_mode_active(), "active after resume");
    lazy_mmu_mode_disable().unwrap();
    assert!(!is_lazy_mmu_mode_active(), "inactive after the last disable");
    assert_eq!(depth(), (0, 0));
}

#[test_case]
fn batched_n_writes_in_one_section_cost_one_pair() {
    let _b = Backend::select("batched");
    for n in [1, 512, 4096] {
        let scratch = Scratch::new(n);
        let mut inside = BarrierCounts::default();
        let total = cost(|| {
            let _section = enable();
            inside = scratch.write_all();
        });
        assert_eq!(pairs(inside), (0, 0), "N = {n}: nothing emitted inside the section");
        assert_eq!(pairs(total), (1, 1), "N = {n}: one dsb ishst + one isb at leave");
        // The entries really are in memory, as the hardware walk shows.
        let last = SCRATCH.add((n - 1) * PAGE_SIZE);
        assert_eq!(hw_translate(last, Access::Read), HwTranslation::Mapped { pa: scratch.frame, mair_attr: 0xff });
    }
}

#[test_case]
fn a_section_without_writes_costs_nothing() {
    let _b = Backend::select("batched");
    let c = cost(|| {
        let _outer = enable();
        let _inner = enable();
    });
    assert_eq!(pairs(c), (0, 0));
}

#[test_case]
fn a_nested_exit_with_pending_writes_flushes_and_stays_active() {
    let _b = Backend::select("batched");
    let scratch = Scratch::new(8);
    let _outer = enable();
    let inner = enable();
    assert_eq!(inner.kind(), SectionKind::Nested);
    scratch.write_all();
    assert!(task::current().arch_lazy.pending());
    let c = cost(|| drop(inner));
    assert_eq!(pairs(c), (1, 1), "nested exit flushes");
    assert!(is_lazy_mmu_mode_active(), "and the mode stays on");
    assert!(!task::current().arch_lazy.pending());
    let nothing = cost(|| drop(enable()));
    assert_eq!(pairs(nothing), (0, 0), "a nested exit with nothing pending emits nothing");
}

#[test_case]
fn pause_flushes_pending_writes_and_writes_while_paused_are_eager() {
    let _b = Backend::select("batched");
    let scratch = Scratch::new(4);
    let _section = enable();
    scratch.write_all();
    let paused_cost = cost(|| {
        let _paused = pause();
        assert!(!is_lazy_mmu_mode_active());
        let eager = scratch.write_all();
        assert_eq!(pairs(eager), (4, 4), "while paused every write pays its pair");
    });
    // The pause flushed the 4 earlier writes (1 pair) + 4 eager pairs; resume emits nothing.
    assert_eq!(pairs(paused_cost), (5, 5));
}

#[test_case]
fn eager_costs_two_barriers_per_write_in_every_case() {
    let _b = Backend::select("eager");
    let scratch = Scratch::new(16);
    assert_eq!(pairs(scratch.write_all()), (16, 16), "outside a section");
    let total = cost(|| {
        let _outer = enable();
        assert_eq!(pairs(scratch.write_all()), (16, 16), "inside a section");
        let _inner = enable();
        assert_eq!(pairs(scratch.write_all()), (16, 16), "nested");
        let _paused = pause();
        assert_eq!(pairs(scratch.write_all()), (16, 16), "paused");
    });
    assert_eq!(pairs(total), (48, 48), "and nothing extra at the section ends");
}

#[test_case]
fn guards_record_outermost_nested_and_paused_sections() {
    let outer = enable();
    let inner = enable();
    let paused = pause();
    let while_paused = enable();
    assert_eq!(
        (outer.kind(), inner.kind(), while_paused.kind()),
        (SectionKind::Outermost, SectionKind::Nested, SectionKind::WhilePaused)
    );
    assert_eq!(depth(), (2, 1));
    drop(while_paused);
    drop(paused);
    drop(inner);
    assert_eq!(depth(), (1, 0));
    drop(outer);
    assert_eq!(depth(), (0, 0));
}

#[test_case]
fn misuse_is_refused_and_leaves_the_state_usable() {
    let before = misuse_count();
    assert_eq!(lazy_mmu_mode_disable(), Err(LazyMmuMisuse::DisableWithoutEnable));
    assert_eq!(lazy_mmu_mode_resume(), Err(LazyMmuMisuse::ResumeWithoutPause));
    assert_eq!(depth(), (0, 0));

    for _ in 0..255 {
        lazy_mmu_mode_enable().unwrap();
    }
    assert_eq!(lazy_mmu_mode_enable(), Err(LazyMmuMisuse::EnableOverflow));
    assert_eq!(enable().kind(), SectionKind::Refused);
    assert_eq!(depth(), (255, 0));
    for _ in 0..255 {
        lazy_mmu_mode_pause().unwrap();
    }
    assert_eq!(lazy_mmu_mode_pause(), Err(LazyMmuMisuse::PauseOverflow));
    assert_eq!(depth(), (255, 255));
    for _ in 0..255 {
        lazy_mmu_mode_resume().unwrap();
    }
    for _ in 0..255 {
        lazy_mmu_mode_disable().unwrap();
    }
    assert_eq!(depth(), (0, 0));
    assert!(!is_lazy_mmu_mode_active());
    assert_eq!(misuse_count() - before, 5);
    // Still works normally.
    let section = enable();
    assert_eq!(section.kind(), SectionKind::Outermost);
    assert!(is_lazy_mmu_mode_active());
}
