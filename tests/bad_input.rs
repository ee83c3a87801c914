//! The bad-input table: every public mapping API, given input it must
//! refuse, returns the named error and changes nothing (frames, areas,
//! every table entry, the lazy MMU state). docs/bad-input.md lists the same
//! rows; tests/host/docs_lint.py checks that the two lists are equal.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use alloc::format;
use core::convert::Infallible;
use core::fmt::Debug;

use lazymmu::dtb::DtbError;
use lazymmu::mm::{
    ApplyError, Attributes, BLOCK_1G, BLOCK_2M, Level, MMIO_BASE, MemoryType, PAGE_SIZE, PhysAddr, SwTranslation,
    VMALLOC_END, VMALLOC_START, VirtAddr, VmallocError, apply_to_existing_page_range,
    apply_to_existing_page_range_by_table, apply_to_page_range, apply_to_page_range_by_table,
    apply_to_page_range_nolazy, audit,
    frame_alloc::{self, FrameError},
    free_vm_area, get_vm_area, get_vm_area_range,
    lazy_mmu::{LazyMmuMisuse, lazy_mmu_mode_disable, lazy_mmu_mode_enable, lazy_mmu_mode_pause, lazy_mmu_mode_resume},
    pgtable::{EntryRef, MapError, Operand, Ptes},
    set_linear_map_rw, set_memory_nx, set_memory_ro, set_memory_rw, set_memory_x, sw_translate, vfree,
    vm_unmap_aliases, vmalloc, vmalloc_aligned, vmalloc_range, vmap_contiguous, vmap_pages, vmap_range, vunmap,
    vunmap_range, vzalloc, vzalloc_aligned,
};
use lazymmu::smp::PsciError;
use lazymmu::smp::SmpError;
use lazymmu::{dtb, println};

lazymmu::test_image!();

/// One row: `call` must fail with `want` and leave everything as it was.
fn case<T: Debug, E: Debug + PartialEq>(label: &str, call: impl FnOnce() -> Result<T, E>, want: E) {
    let before = audit::state();
    let got = call();
    assert_eq!(got.as_ref().err(), Some(&want), "{label}: got {got:?}");
    assert_eq!(audit::state(), before, "{label}: the state changed");
    println!("  {label} -> {want:?}");
}

fn nop(_: &EntryRef) -> Result<(), Infallible> {
    Ok(())
}

fn nop_run(_: &Ptes) -> Result<(), Infallible> {
    Ok(())
}

#[test_case]
fn vmalloc_family() {
    case("vmalloc(0)", || vmalloc(0), VmallocError::ZeroSize);
    case("vmalloc(u64::MAX)", || vmalloc(u64::MAX), VmallocError::NoVirtualSpace);
    case("vmalloc(larger than the region)", || vmalloc(1 << 41), VmallocError::NoVirtualSpace);
    case("vzalloc(0)", || vzalloc(0), VmallocError::ZeroSize);
    case("vmalloc_aligned(align 3000)", || vmalloc_aligned(PAGE_SIZE, 3000), VmallocError::BadAlignment(3000));
    case("vmalloc_aligned(align 2048)", || vmalloc_aligned(PAGE_SIZE, 2048), VmallocError::BadAlignment(2048));
    case("vzalloc_aligned(0)", || vzalloc_aligned(0, PAGE_SIZE), VmallocError::ZeroSize);
    case("vzalloc_aligned(align 3000)", || vzalloc_aligned(PAGE_SIZE, 3000), VmallocError::BadAlignment(3000));
    case("get_vm_area(0)", || get_vm_area(0, PAGE_SIZE), VmallocError::ZeroSize);
    case("get_vm_area(align 0)", || get_vm_area(PAGE_SIZE, 0), VmallocError::BadAlignment(0));
    let (lo, hi) = (VMALLOC_START.add(BLOCK_1G), VMALLOC_START.add(BLOCK_1G + BLOCK_2M));
    case("vmalloc_range(0)", || vmalloc_range(0, PAGE_SIZE, lo, hi), VmallocError::ZeroSize);
    case("vmalloc_range(align 3000)", || vmalloc_range(PAGE_SIZE, 3000, lo, hi), VmallocError::BadAlignment(3000));
    case(
        "vmalloc_range(an empty window)",
        || vmalloc_range(PAGE_SIZE, PAGE_SIZE, hi, lo),
        VmallocError::Map(MapError::BadRange { start: hi, size: 0 }),
    );
    case(
        "vmalloc_range(a window outside the region)",
        || vmalloc_range(PAGE_SIZE, PAGE_SIZE, MMIO_BASE, MMIO_BASE.add(BLOCK_2M)),
        VmallocError::Map(MapError::BadRange { start: MMIO_BASE, size: BLOCK_2M }),
    );
    case(
        "vmalloc_range(larger than the window)",
        || vmalloc_range(BLOCK_2M, PAGE_SIZE, lo, hi),
        VmallocError::NoVirtualSpace,
    );

    let live = vmalloc(2 * PAGE_SIZE).unwrap();
    let inside = live.add(PAGE_SIZE);
    case("vfree(an address inside an area)", || vfree(inside), VmallocError::NotAnArea(inside));
    let nowhere = VirtAddr::new(VMALLOC_END.as_u64() - PAGE_SIZE);
    case("vfree(an address in no area)", || vfree(nowhere), VmallocError::NotAnArea(nowhere));
    case("vunmap(a vmalloc area)", || vunmap(live), VmallocError::NotAnArea(live));
    case("free_vm_area(a vmalloc area)", || free_vm_area(live), VmallocError::NotAnArea(live));
    vfree(live).unwrap();
    case("vfree(an area already freed)", || vfree(live), VmallocError::NotAnArea(live));
}

#[test_case]
fn vmap_family() {
    let ram = dtb::info().ram_start;
    // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
    case("vmap_pages(no pages)", || unsafe { vmap_pages(&[], Attributes::KERNEL_RW) }, VmallocError::EmptyPageList);
    let odd = ram.add(0x10);
    case(
        "vmap_pages(an unaligned frame)",
        // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
        || unsafe { vmap_pages(&[odd], Attributes::KERNEL_RW) },
        VmallocError::Misaligned { what: Operand::Page, value: odd.as_u64() },
    );
    // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
    case(
        "vmap_contiguous(size 0)",
        || unsafe { vmap_contiguous(ram, 0, Attributes::KERNEL_RO) },
        VmallocError::ZeroSize,
    );

    let area = get_vm_area(4 * PAGE_SIZE, PAGE_SIZE).unwrap();
    case(
        "vmap_range(unaligned end)",
        // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
        || unsafe { vmap_range(area, area.add(100), ram, Attributes::KERNEL_RO) },
        VmallocError::Misaligned { what: Operand::End, value: area.as_u64() + 100 },
    );
    let va = area.add(8);
    case(
        "vmap_range(unaligned virtual address)",
        // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
        || unsafe { vmap_range(va, va.add(PAGE_SIZE), ram, Attributes::KERNEL_RO) },
        VmallocError::Misaligned { what: Operand::VirtualAddress, value: va.as_u64() },
    );
    case(
        "vmap_range(unaligned physical address)",
        // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
        || unsafe { vmap_range(area, area.add(PAGE_SIZE), odd, Attributes::KERNEL_RO) },
        VmallocError::Misaligned { what: Operand::PhysicalAddress, value: odd.as_u64() },
    );
    // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
    unsafe { vmap_range(area, area.add(PAGE_SIZE), ram, Attributes::KERNEL_RO) }.unwrap();
    case(
        "vmap_range(a slot already mapped)",
        // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
        || unsafe { vmap_range(area, area.add(2 * PAGE_SIZE), ram, Attributes::KERNEL_RO) },
        VmallocError::AlreadyMapped(area),
    );
    case("vunmap(a get_vm_area area)", || vunmap(area), VmallocError::NotAnArea(area));
    // Safe code unmaps only inside a get_vm_area area of its own.
    case("vunmap_range(an empty range)", || vunmap_range(area, area), VmallocError::ZeroSize);
    case(
        "vunmap_range(unaligned end)",
        || vunmap_range(area, area.add(100)),
        VmallocError::Misaligned { what: Operand::End, value: area.as_u64() + 100 },
    );
    case(
        "vunmap_range(end before start)",
        || vunmap_range(area.add(PAGE_SIZE), area),
        VmallocError::Map(MapError::BadRange { start: area.add(PAGE_SIZE), size: PAGE_SIZE.wrapping_neg() }),
    );
    let nowhere = VirtAddr::new(VMALLOC_END.as_u64() - PAGE_SIZE);
    case(
        "vunmap_range(no area there)",
        || vunmap_range(nowhere, nowhere.add(PAGE_SIZE)),
        VmallocError::NotAnArea(nowhere),
    );
    let tail = area.add(2 * PAGE_SIZE);
    case(
        "vunmap_range(past the area's end)",
        || vunmap_range(tail, tail.add(4 * PAGE_SIZE)),
        VmallocError::NotAnArea(tail),
    );
    let linear = lazymmu::mm::phys_to_virt(ram);
    case(
        "vunmap_range(the linear map)",
        || vunmap_range(linear, linear.add(PAGE_SIZE)),
        VmallocError::NotAnArea(linear),
    );
    let live = vmalloc(PAGE_SIZE).unwrap();
    case("vunmap_range(a vmalloc area)", || vunmap_range(live, live.add(PAGE_SIZE)), VmallocError::NotAnArea(live));
    vfree(live).unwrap();
    case(
        "vmap_range(no area there)",
        // SAFETY: refused before anything is mapped.
        || unsafe { vmap_range(nowhere, nowhere.add(PAGE_SIZE), ram, Attributes::KERNEL_RO) },
        VmallocError::NotAnArea(nowhere),
    );
    case(
        "vmap_range(past the area's end)",
        // SAFETY: refused before anything is mapped.
        || unsafe { vmap_range(tail, tail.add(4 * PAGE_SIZE), ram, Attributes::KERNEL_RO) },
        VmallocError::NotAnArea(tail),
    );
    // Linux's ioremap refuses RAM: its linear-map alias is cacheable.
    case(
        "vmap_range(RAM as Device memory)",
        // SAFETY: refused before anything is mapped.
        || unsafe { vmap_range(area.add(PAGE_SIZE), area.add(2 * PAGE_SIZE), ram, Attributes::DEVICE) },
        VmallocError::RamNotDevice(ram),
    );
    let non_cacheable = Attributes { memory: MemoryType::NormalNonCacheable, ..Attributes::KERNEL_RW };
    case(
        "vmap_contiguous(RAM as non-cacheable memory)",
        // SAFETY: refused before anything is mapped.
        || unsafe { vmap_contiguous(ram, PAGE_SIZE, non_cacheable) },
        VmallocError::RamNotDevice(ram),
    );
    let outside = VMALLOC_END;
    case(
        "get_vm_area_range(a window outside the region)",
        || get_vm_area_range(PAGE_SIZE, PAGE_SIZE, outside, outside.add(BLOCK_2M)),
        VmallocError::Map(MapError::BadRange { start: outside, size: BLOCK_2M }),
    );
    vunmap_range(area, area.add(4 * PAGE_SIZE)).unwrap();
    free_vm_area(area).unwrap();
}

#[test_case]
fn apply_family() {
    let area = get_vm_area(4 * PAGE_SIZE, PAGE_SIZE).unwrap();
    case(
        "apply_to_page_range(size 0)",
        || apply_to_page_range(area, 0, nop),
        ApplyError::Map(MapError::BadRange { start: area, size: 0 }),
    );
    let top = VirtAddr::new(0xffff_ffff_ffff_f000);
    case(
        "apply_to_page_range(wrapping range)",
        || apply_to_page_range(top, 2 * PAGE_SIZE, nop),
        ApplyError::Map(MapError::BadRange { start: top, size: 2 * PAGE_SIZE }),
    );
    let odd = area.add(0x800);
    case(
        "apply_to_page_range(unaligned start)",
        || apply_to_page_range(odd, PAGE_SIZE, nop),
        ApplyError::Map(MapError::Misaligned { what: Operand::VirtualAddress, value: odd.as_u64() }),
    );
    case(
        "apply_to_page_range(unaligned size)",
        || apply_to_page_range(area, 100, nop),
        ApplyError::Map(MapError::Misaligned { what: Operand::Size, value: 100 }),
    );
    let user = VirtAddr::new(0x4000_0000);
    case(
        "apply_to_page_range(user half)",
        || apply_to_page_range(user, PAGE_SIZE, nop),
        ApplyError::Map(MapError::NotKernelAddress(user)),
    );
    // 2 MiB of contiguous memory mapped as one block (the linear map has
    // blocks only on a CPU with BBML2_NOABORT).
    let run = frame_alloc::alloc_contiguous(512, BLOCK_2M).unwrap();
    // SAFETY: refused before anything is mapped, or RAM read-only in the test's own area.
    let block = unsafe { vmap_contiguous(run, BLOCK_2M, Attributes::KERNEL_RW) }.unwrap();
    case(
        "apply_to_page_range(a block in the way)",
        || apply_to_page_range(block, PAGE_SIZE, nop),
        ApplyError::Map(MapError::BlockInTheWay { va: block, level: Level::L2 }),
    );
    case(
        "apply_to_existing_page_range(a block in the way)",
        || apply_to_existing_page_range(block, PAGE_SIZE, nop),
        ApplyError::Map(MapError::BlockInTheWay { va: block, level: Level::L2 }),
    );
    case(
        "apply_to_existing_page_range_by_table(a block in the way)",
        || apply_to_existing_page_range_by_table(block, PAGE_SIZE, nop_run),
        ApplyError::Map(MapError::BlockInTheWay { va: block, level: Level::L2 }),
    );
    vunmap(block).unwrap();
    // Its flush waits for the purge; the frames go after it.
    vm_unmap_aliases();
    frame_alloc::free_frames(run, 512).unwrap();
    case(
        "apply_to_page_range_by_table(size 0)",
        || apply_to_page_range_by_table(area, 0, nop_run),
        ApplyError::Map(MapError::BadRange { start: area, size: 0 }),
    );
    case(
        "apply_to_page_range_nolazy(size 0)",
        || apply_to_page_range_nolazy(area, 0, nop),
        ApplyError::Map(MapError::BadRange { start: area, size: 0 }),
    );
    free_vm_area(area).unwrap();
}

#[test_case]
fn set_memory_family() {
    let va = vmalloc(2 * PAGE_SIZE).unwrap();
    case("set_memory_ro(0 pages)", || set_memory_ro(va, 0), MapError::BadRange { start: va, size: 0 });
    case(
        "set_memory_ro(u64::MAX pages)",
        || set_memory_ro(va, u64::MAX),
        MapError::BadRange { start: va, size: u64::MAX },
    );
    let odd = va.add(8);
    case(
        "set_memory_ro(unaligned address)",
        || set_memory_ro(odd, 1),
        MapError::Misaligned { what: Operand::VirtualAddress, value: odd.as_u64() },
    );
    let guard = va.add(2 * PAGE_SIZE);
    case("set_memory_ro(past the end of an area)", || set_memory_ro(va, 3), MapError::NotMapped(va));
    case("set_memory_ro(a guard page)", || set_memory_ro(guard, 1), MapError::NotMapped(guard));
    case("set_memory_ro(MMIO)", || set_memory_ro(MMIO_BASE, 1), MapError::NotVmallocArea(MMIO_BASE));
    case("set_memory_x(a writable page)", || set_memory_x(va, 1), MapError::WritableAndExecutable(va));
    set_memory_ro(va, 1).unwrap();
    set_memory_x(va, 1).unwrap();
    case("set_memory_rw(an executable page)", || set_memory_rw(va, 1), MapError::WritableAndExecutable(va));
    set_memory_nx(va, 1).unwrap();
    set_memory_rw(va, 1).unwrap();
    vfree(va).unwrap();
    // The linear map's alias of the kernel's rodata (where this string
    // is): made writable, safe code could change a `static`.
    static CONSTANT: &str = "never written";
    let SwTranslation::Mapped { pa, .. } = sw_translate(VirtAddr::from_ptr(CONSTANT.as_ptr())) else {
        panic!("rodata is mapped")
    };
    let alias = lazymmu::mm::phys_to_virt(pa).align_down(PAGE_SIZE);
    case("set_memory_rw(the linear alias of rodata)", || set_memory_rw(alias, 1), MapError::NotVmallocArea(alias));
    case(
        "set_linear_map_rw(the linear alias of rodata)",
        // SAFETY: refused before anything changes (else the test would
        // have made rodata writable, which is what it checks cannot be).
        || unsafe { set_linear_map_rw(alias, 1) },
        MapError::KernelImage(alias),
    );
}

#[test_case]
fn lazy_mmu_calls() {
    case("lazy_mmu_mode_disable() with no section", lazy_mmu_mode_disable, LazyMmuMisuse::DisableWithoutEnable);
    case("lazy_mmu_mode_resume() with no pause", lazy_mmu_mode_resume, LazyMmuMisuse::ResumeWithoutPause);
    for _ in 0..u8::MAX {
        lazy_mmu_mode_enable().unwrap();
    }
    case("lazy_mmu_mode_enable() 256 deep", lazy_mmu_mode_enable, LazyMmuMisuse::EnableOverflow);
    for _ in 0..u8::MAX {
        lazy_mmu_mode_disable().unwrap();
    }
    for _ in 0..u8::MAX {
        lazy_mmu_mode_pause().unwrap();
    }
    case("lazy_mmu_mode_pause() 256 deep", lazy_mmu_mode_pause, LazyMmuMisuse::PauseOverflow);
    for _ in 0..u8::MAX {
        lazy_mmu_mode_resume().unwrap();
    }
}

#[test_case]
fn frame_allocator() {
    case("alloc_contiguous(0 frames)", || frame_alloc::alloc_contiguous(0, PAGE_SIZE), FrameError::ZeroCount);
    case(
        "alloc_contiguous(align 3 pages)",
        || frame_alloc::alloc_contiguous(1, 3 * PAGE_SIZE),
        FrameError::BadAlignment(3 * PAGE_SIZE),
    );
    let total = frame_alloc::stats().total;
    case(
        "alloc_contiguous(more than RAM)",
        || frame_alloc::alloc_contiguous(total + 1, PAGE_SIZE),
        FrameError::OutOfMemory,
    );
    let low = PhysAddr::new(0x1000);
    case("free_frame(outside RAM)", || frame_alloc::free_frame(low), FrameError::OutOfRange(low));
    let pa = frame_alloc::alloc_frame().unwrap();
    frame_alloc::free_frame(pa).unwrap();
    case("free_frame(twice)", || frame_alloc::free_frame(pa), FrameError::NotAllocated(pa));
}

/// What the errors say when printed: a sentence with the values in it, per
/// variant. A `Display` that fell back to the `Debug` form fails here.
#[test_case]
fn errors_display_as_sentences() {
    let va = VirtAddr::new(0xffff_8000_0020_0000);
    let pa = PhysAddr::new(0x4000_0010);
    let messages = [
        (
            format!("{}", MapError::Misaligned { what: Operand::VirtualAddress, value: va.as_u64() + 8 }),
            "virtual address 0xffff800000200008 is not page aligned",
        ),
        (format!("{}", MapError::BadRange { start: va, size: 0 }), "the range at 0xffff800000200000 is empty"),
        (
            format!("{}", MapError::BlockInTheWay { va, level: Level::L2 }),
            "a level-2 block maps 0xffff800000200000 where a page table is needed",
        ),
        (
            format!("{}", VmallocError::SplitsBlock { va, level: Level::L2 }),
            "the range covers only part of the level-2 block at 0xffff800000200000",
        ),
        (
            format!("{}", VmallocError::Misaligned { what: Operand::Page, value: pa.as_u64() }),
            "page 0x40000010 is not page aligned",
        ),
        (
            format!("{}", VmallocError::Map(MapError::NotKernelAddress(VirtAddr::new(0x4000_0000)))),
            "0x40000000 is not a kernel (TTBR1) address",
        ),
        (
            format!("{}", VmallocError::RamNotDevice(PhysAddr::new(0x4000_0000))),
            "0x40000000 is RAM, which the linear map maps cacheable: it may not be mapped as device or non-cacheable memory too",
        ),
        (
            format!("{}", ApplyError::<Infallible>::Map(MapError::AlreadyMapped(va))),
            "0xffff800000200000 is already mapped",
        ),
        (
            format!("{}", ApplyError::Callback(FrameError::NotAllocated(pa))),
            "the callback failed: frame 0x40000010 is not allocated",
        ),
        (format!("{}", MapError::OutOfMemory), "there is not enough free memory for the page tables the change needs"),
        (
            format!("{}", VmallocError::OutOfMemory),
            "there is not enough free memory for the area's pages, page tables or bookkeeping",
        ),
        (format!("{}", VmallocError::EmptyPageList), "the list of pages to map is empty"),
        (format!("{}", FrameError::OutOfMemory), "no free physical frames (or run of frames) are left for the request"),
        (format!("{}", FrameError::ZeroCount), "the request asks for zero frames"),
        (format!("{}", FrameError::BadAlignment(0x3000)), "alignment 0x3000 is not a power of two of a page or more"),
        (format!("{}", LazyMmuMisuse::DisableWithoutEnable), "lazy_mmu_mode_disable with no section open"),
        (format!("{}", SmpError::Psci(PsciError::AlreadyOn)), "PSCI CPU_ON failed: the CPU is already on (ALREADY_ON)"),
        (
            format!("{}", DtbError::BadHeader(PhysAddr::new(0x4800_0000))),
            "no valid device tree header (magic 0xd00dfeed) at 0x48000000",
        ),
    ];
    for (got, want) in &messages {
        assert_eq!(got, want);
        println!("  {want}");
    }
}
