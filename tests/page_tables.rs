//! The kernel's stage-1 tables, checked against the hardware's own walk
//! (`at s1e1r` / `at s1e1w`) and by touching memory.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use alloc::boxed::Box;
use alloc::vec::Vec;

use lazymmu::barrier::{self, BarrierCounts};
use lazymmu::boot_args::qemu_param;
use lazymmu::exception::{ExceptionClass, FaultStatus};
use lazymmu::init;
use lazymmu::mm::{
    self, Access, Attributes, BLOCK_1G, BLOCK_2M, Descriptor, HwTranslation, Level, MemoryType, PAGE_SIZE, PhysAddr,
    SwTranslation, Translation, VMALLOC_START, VirtAddr, frame_alloc, hw_translate, mair_attr,
    pgtable::{self, LeafSizes, Visitor},
    phys_to_virt, probe, ptdump, sw_translate, translate,
};
use lazymmu::{cpu, dtb, println};

lazymmu::test_image!();

/// Every leaf of the kernel tables, as (va, level, pa, attrs).
fn leaves() -> Vec<(VirtAddr, Level, PhysAddr, Attributes)> {
    struct Collect(Vec<(VirtAddr, Level, PhysAddr, Attributes)>);
    impl Visitor for Collect {
        fn table(&mut self, _: VirtAddr, _: Level) {}
        fn leaf(&mut self, va: VirtAddr, level: Level, pa: PhysAddr, attrs: Attributes) {
            self.0.push((va, level, pa, attrs));
        }
    }
    let mut c = Collect(Vec::new());
    pgtable::visit(&mut c);
    c.0
}

/// The hardware and the software walker agree on `va`.
fn assert_walks_agree(va: VirtAddr) {
    let Translation { read, write, software } = translate(va);
    match software {
        SwTranslation::Mapped { pa, attrs, level } => {
            let mair = mair_attr(attrs.memory);
            assert_eq!(read, HwTranslation::Mapped { pa, mair_attr: mair }, "read at {va:?}");
            if attrs.writable {
                assert_eq!(write, HwTranslation::Mapped { pa, mair_attr: mair }, "write at {va:?}");
            } else {
                assert_eq!(write, HwTranslation::Fault(FaultStatus::Permission { level: level.0 }), "write at {va:?}");
            }
        }
        SwTranslation::Unmapped { level } => {
            assert_eq!(read, HwTranslation::Fault(FaultStatus::Translation { level: level.0 }), "read at {va:?}");
        }
    }
}

#[test_case]
fn software_walk_and_at_s1e1r_agree_on_every_region() {
    let mut samples = 0;
    for (va, level, _, attrs) in leaves() {
        assert!(!attrs.is_wx(), "{va:?} is writable and executable");
        if attrs.memory == MemoryType::Device {
            assert!(!attrs.executable, "MMIO at {va:?} is executable");
        }
        let size = level.entry_size();
        // Each leaf's first and last word; the middle of every block.
        for offset in [0, size / 2, size - 8] {
            if offset == size / 2 && level == Level::L3 {
                continue;
            }
            assert_walks_agree(va.add(offset));
            samples += 1;
        }
    }
    // Holes: the empty vmalloc region, the page below the boot stack.
    assert_walks_agree(VMALLOC_START);
    assert_walks_agree(init::boot_stack().guard_page());
    println!("    ({samples} addresses checked)");
    assert!(samples > 300, "only {samples} samples");
}

static RODATA_WORD: u64 = 0x0123_4567_89ab_cdef;
static mut DATA_RET: u32 = probe::RET_INSTRUCTION;
static RODATA_RET: u32 = probe::RET_INSTRUCTION;

fn assert_fault(fault: lazymmu::exception::Syndrome, class: ExceptionClass, status: FaultStatus) {
    assert_eq!((fault.class, fault.status), (class, Some(status)), "{fault:?}");
}

#[test_case]
fn writing_kernel_text_is_a_level_3_permission_fault() {
    let text = VirtAddr::new(kernel_main as *const () as u64 & !7);
    let word = probe::read(text).expect("text is readable");
    // SAFETY: writes back the value already there, should the write go through.
    let fault = unsafe { probe::write(text, word) }.expect_err("text must not be writable");
    assert_fault(fault, ExceptionClass::DataAbortCurrentEl, FaultStatus::Permission { level: 3 });
    assert!(fault.write);
}

#[test_case]
fn writing_rodata_is_a_level_3_permission_fault() {
    let va = VirtAddr::from_ptr(&RODATA_WORD);
    // SAFETY: writes back the same value.
    let fault = unsafe { probe::write(va, RODATA_WORD) }.expect_err("rodata must not be writable");
    assert_fault(fault, ExceptionClass::DataAbortCurrentEl, FaultStatus::Permission { level: 3 });
}

#[test_case]
fn the_linear_alias_of_text_is_read_only() {
    let image = init::image();
    let text_pa = mm::image_phys(image, image.text.0);
    let alias = phys_to_virt(text_pa);
    let word = probe::read(alias).expect("the alias is readable");
    assert_eq!(word, probe::read(image.text.0).unwrap());
    // SAFETY: writes back the same value.
    let fault = unsafe { probe::write(alias, word) }.expect_err("the alias must not be writable");
    assert_eq!(fault.class, ExceptionClass::DataAbortCurrentEl);
    assert!(matches!(fault.status, Some(FaultStatus::Permission { .. })));
}

#[test_case]
fn executing_kernel_data_is_an_instruction_abort() {
    let va = VirtAddr::from_ptr(&raw const DATA_RET);
    // SAFETY: DATA_RET holds `ret`.
    let fault = unsafe { probe::exec(va) }.expect_err("data must not be executable");
    assert_fault(fault, ExceptionClass::InstructionAbortCurrentEl, FaultStatus::Permission { level: 3 });
    assert_eq!(fault.elr, va.as_u64());
}

#[test_case]
fn executing_rodata_is_an_instruction_abort() {
    let va = VirtAddr::from_ptr(&RODATA_RET);
    // SAFETY: RODATA_RET holds `ret`.
    let fault = unsafe { probe::exec(va) }.expect_err("rodata must not be executable");
    assert_fault(fault, ExceptionClass::InstructionAbortCurrentEl, FaultStatus::Permission { level: 3 });
}

#[test_case]
fn executing_the_heap_is_an_instruction_abort() {
    let code = Box::new([probe::RET_INSTRUCTION; 4]);
    let va = VirtAddr::from_ptr(code.as_ptr());
    let SwTranslation::Mapped { level, .. } = sw_translate(va) else { panic!("the heap is mapped") };
    // SAFETY: the box holds `ret`.
    let fault = unsafe { probe::exec(va) }.expect_err("the heap must not be executable");
    assert_fault(fault, ExceptionClass::InstructionAbortCurrentEl, FaultStatus::Permission { level: level.0 });
}

#[test_case]
fn reading_below_a_stack_is_a_level_3_translation_fault() {
    let stack = init::boot_stack();
    assert!(probe::read(stack.bottom()).is_ok(), "the stack's lowest word is mapped");
    let fault = probe::read(VirtAddr::new(stack.bottom().as_u64() - 8)).expect_err("guard page");
    assert_fault(fault, ExceptionClass::DataAbortCurrentEl, FaultStatus::Translation { level: 3 });
}

#[test_case]
fn a_low_address_faults_after_boot_in_hardware_and_software_alike() {
    let low = VirtAddr::new(dtb::info().ram_start.as_u64());
    let fault = probe::read(low).expect_err("TTBR0 is off");
    assert_fault(fault, ExceptionClass::DataAbortCurrentEl, FaultStatus::Translation { level: 0 });
    assert_eq!(hw_translate(low, Access::Read), HwTranslation::Fault(FaultStatus::Translation { level: 0 }));
}

#[test_case]
fn a_cleared_entry_is_still_used_until_the_tlb_is_flushed() {
    let root = pgtable::kernel_root();
    let va = VMALLOC_START.add(0x1000_0000);
    let frame = frame_alloc::alloc_frame().unwrap();
    let frames_before = frame_alloc::stats();
    // SAFETY: our own fresh frame.
    unsafe { core::ptr::write_volatile(phys_to_virt(frame).as_mut_ptr::<u64>(), 0x5eed) };

    // SAFETY: our own frame, at a place of the vmalloc region no area uses.
    unsafe { pgtable::map_range(root, va, frame, PAGE_SIZE, Attributes::KERNEL_RW, LeafSizes::PagesOnly) }.unwrap();
    assert_eq!(probe::read(va), Ok(0x5eed), "the new mapping works");

    let before = barrier::counts();
    let walk = pgtable::walking();
    // SAFETY: the mapping this test made; the TLB is what it tests.
    unsafe { pgtable::write_entry(&walk.walk(va), Descriptor::INVALID) };
    drop(walk);
    let cost = barrier::counts() - before;
    assert_eq!((cost.dsb(), cost.isb), (0, 0), "clearing an entry needs no barrier of its own: {cost:?}");

    // The tables in memory say "unmapped" ...
    let SwTranslation::Unmapped { level } = sw_translate(va) else { panic!("still mapped in memory") };
    assert_eq!(level, Level::L3);
    assert_eq!(hw_translate(va, Access::Read), HwTranslation::Fault(FaultStatus::Translation { level: 3 }));
    // ... but the TLB still holds the old translation, and it is used.
    assert_eq!(probe::read(va), Ok(0x5eed), "QEMU keeps using a stale TLB entry: this is why we flush");

    mm::flush_tlb_kernel_range(va, va.add(PAGE_SIZE));
    let fault = probe::read(va).expect_err("after the flush the page is gone");
    assert_fault(fault, ExceptionClass::DataAbortCurrentEl, FaultStatus::Translation { level: 3 });

    // Freeing the tables made for the page unlinks them, flushes at every
    // level of the walk, and only then frees them.
    // SAFETY: the kernel's own root; the test's own range of the vmalloc region.
    let free = barrier::cost(|| unsafe { pgtable::free_empty_tables(root, va, PAGE_SIZE) });
    assert_eq!((free.dsb_ishst, free.tlbi(), free.tlbi_walks, free.dsb_ish, free.isb), (1, 1, 1, 1, 1), "{free:?}");
    assert_eq!(frame_alloc::stats(), frames_before, "the tables made for the page were freed");
    frame_alloc::free_frame(frame).unwrap();
}

#[test_case]
fn unmap_range_leaves_nothing_in_the_tlb_and_flushes_once() {
    let root = pgtable::kernel_root();
    let va = VMALLOC_START.add(0x1800_0000);
    let frames = frame_alloc::alloc_contiguous(2, PAGE_SIZE).unwrap();
    let frames_before = frame_alloc::stats();
    // SAFETY: our own fresh frames, at a place of the vmalloc region no area uses.
    unsafe { pgtable::map_range(root, va, frames, 2 * PAGE_SIZE, Attributes::KERNEL_RW, LeafSizes::PagesOnly) }
        .unwrap();
    for page in 0..2 {
        probe::read(va.add(page * PAGE_SIZE)).expect("mapped, and now in the TLB");
    }
    // One page of two: its table stays, so the flush is the leaves' alone.
    // SAFETY: the mapping this test made.
    let one = barrier::cost(|| unsafe { pgtable::unmap_range(root, va, PAGE_SIZE) }.unwrap());
    let fault = probe::read(va).expect_err("flushed: the stale translation is gone");
    assert_fault(fault, ExceptionClass::DataAbortCurrentEl, FaultStatus::Translation { level: 3 });
    assert_eq!((one.tlbi(), one.tlbi_walks, one.dsb_ish), (1, 0, 1), "{one:?}");
    // The last page: the tables go too, and the one flush covers every level.
    // SAFETY: as above.
    let last = barrier::cost(|| unsafe { pgtable::unmap_range(root, va.add(PAGE_SIZE), PAGE_SIZE) }.unwrap());
    let fault = probe::read(va.add(PAGE_SIZE)).expect_err("flushed with the tables");
    // A translation fault at the level of the highest table taken away.
    assert_eq!(fault.class, ExceptionClass::DataAbortCurrentEl, "{fault:?}");
    assert!(matches!(fault.status, Some(FaultStatus::Translation { level: 0..=2 })), "{fault:?}");
    assert_eq!((last.tlbi(), last.tlbi_walks, last.dsb_ish), (1, 1, 1), "{last:?}");
    assert_eq!(frame_alloc::stats(), frames_before, "the tables made for the pages were freed");
    frame_alloc::free_frames(frames, 2).unwrap();
}

fn flush_cost(pages: u64) -> BarrierCounts {
    let va = VMALLOC_START.add(0x2000_0000);
    let before = barrier::counts();
    mm::flush_tlb_kernel_range(va, va.add(pages * PAGE_SIZE));
    barrier::counts() - before
}

fn tlbi(page: u64, range: u64, all: u64) -> (u64, u64, u64) {
    (page, range, all)
}

#[test_case]
fn tlb_flushes_take_the_path_the_cpu_supports() {
    let cpu_model = qemu_param("cpu").expect("the runner passes qemu.cpu");
    let kinds = |c: BarrierCounts| (c.tlbi_page, c.tlbi_range, c.tlbi_all);
    // Of the models the suite runs on, only the max has FEAT_TLBIRANGE.
    assert_eq!(cpu::features().tlbi_range, cpu_model == "max");
    if cpu::features().tlbi_range {
        assert_eq!(kinds(flush_cost(1)), tlbi(1, 0, 0));
        assert_eq!(kinds(flush_cost(2)), tlbi(0, 1, 0));
        assert_eq!(kinds(flush_cost(3)), tlbi(1, 1, 0));
        assert_eq!(kinds(flush_cost(512)), tlbi(0, 1, 0), "512 = 8 << 6: one op at scale 1");
        assert_eq!(kinds(flush_cost(65536)), tlbi(0, 1, 0), "65536 = 2 << 15: one op at scale 3");
        assert_eq!(kinds(flush_cost(2 + 64 + 2048)), tlbi(0, 3, 0), "one op each at scales 0, 1, 2");
        assert_eq!(kinds(flush_cost(mm::MAX_TLBI_RANGE_PAGES + 2)), tlbi(0, 0, 1));
    } else {
        assert_eq!(kinds(flush_cost(1)), tlbi(1, 0, 0));
        assert_eq!(kinds(flush_cost(511)), tlbi(511, 0, 0));
        // Linux flushes everything at MAX_DVM_OPS (512) pages, not above.
        assert_eq!(kinds(flush_cost(512)), tlbi(0, 0, 1));
    }
    // Whatever the path: one dsb ishst before, one dsb ish and one isb after.
    let c = flush_cost(7);
    assert_eq!((c.dsb_ishst, c.dsb_ish, c.isb), (1, 1, 1));
}

/// The fewest table pages a linear map of RAM can use when the image's
/// text and rodata must be mapped read-only inside it: one level-1 table,
/// a level-2 table for each GiB where a boundary is not 1 GiB aligned, a
/// level-3 table for each 2 MiB where one is not 2 MiB aligned. Without
/// BBML2_NOABORT it is made of pages: a level-2 table per GiB and a level-3
/// table per 2 MiB of RAM.
fn minimal_linear_map_tables(boundaries: &[u64]) -> usize {
    if !lazymmu::cpu::features().bbml2_noabort {
        let ram = *boundaries.last().expect("RAM's end");
        return 1 + ram.div_ceil(BLOCK_1G) as usize + ram.div_ceil(BLOCK_2M) as usize;
    }
    let mut gib: Vec<u64> = boundaries.iter().filter(|b| *b % BLOCK_1G != 0).map(|b| b / BLOCK_1G).collect();
    let mut mib2: Vec<u64> = boundaries.iter().filter(|b| *b % BLOCK_2M != 0).map(|b| b / BLOCK_2M).collect();
    gib.dedup();
    mib2.dedup();
    1 + gib.len() + mib2.len()
}

#[test_case]
fn the_linear_map_uses_the_fewest_tables_alignment_allows() {
    let info = dtb::info();
    assert_eq!(info.ram_start.as_u64() % BLOCK_1G, 0, "the formula below assumes RAM starts on a GiB");
    let image = init::image();
    let offset = |va: VirtAddr| mm::image_phys(image, va).offset_from(info.ram_start);
    let boundaries = [0, offset(image.text.0), offset(image.rodata.1), info.ram_size];
    let stats = ptdump::region_stats()[0];
    println!(
        "    ({} MiB RAM: {} table pages, {} x 1G, {} x 2M, {} x 4K)",
        info.ram_size >> 20,
        stats.table_pages(),
        stats.blocks_1g,
        stats.blocks_2m,
        stats.pages
    );
    assert_eq!(stats.table_pages(), minimal_linear_map_tables(&boundaries));
    let mapped = stats.blocks_1g as u64 * BLOCK_1G + stats.blocks_2m as u64 * BLOCK_2M + stats.pages as u64 * PAGE_SIZE;
    assert_eq!(mapped, info.ram_size, "all of RAM, once");
}
