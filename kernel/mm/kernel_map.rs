//! Builds the kernel's own address space (see `layout`) and switches to it.
//!
//! - linear map: all RAM, read/write, never executable, with 1 GiB and
//!   2 MiB blocks and contiguous runs of 16 pages wherever alignment allows
//!   on a CPU with BBML2_NOABORT, with pages on any other (see [`linear_map_leaves`]). The kernel image's text and
//!   rodata appear here too (every byte of RAM does); that alias is mapped
//!   read-only, as Linux does, so the text cannot be written through it.
//! - kernel image, by section: text RX, rodata R, data/bss RW (W^X).
//! - MMIO: the UART and the GIC, Device memory, never executable.
//! - the vmalloc region and stack region start empty.
//!
//! The new tables are built while the boot tables are live, then TTBR1 is
//! switched from the identity map, and TTBR0 walks are turned off so that
//! any low address faults.

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::Attributes;
use super::layout::{LINEAR_MAP_SIZE, MMIO_BASE, PAGE_OFFSET};
use super::pgtable::{self, LeafSizes, MapError, alloc_table, map_range};
use super::use_linear_map;
use crate::arch::mmu;
use crate::cpu;
use crate::drivers::{gic, pl011};

/// MMIO ranges of QEMU `virt` that the kernel maps: (name, physical base, size).
pub(crate) const MMIO_DEVICES: &[(&str, u64, u64)] = &[
    ("GIC distributor", gic::DISTRIBUTOR_PHYS, 0x1_0000),
    ("GIC CPU interface", gic::CPU_INTERFACE_PHYS, 0x1_0000),
    ("PL011 UART", pl011::PHYS_BASE, 0x1000),
];

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

/// The image's sections as virtual address ranges.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    pub text: (VirtAddr, VirtAddr),
    pub rodata: (VirtAddr, VirtAddr),
    pub data: (VirtAddr, VirtAddr),
    /// Link address minus load address.
    pub kimage_voffset: u64,
}

/// The image's layout, given the physical address it was loaded at.
pub(crate) fn image_layout(loaded_at: PhysAddr) -> ImageLayout {
    fn va(symbol: &u8) -> VirtAddr {
        VirtAddr::from_ptr(symbol)
    }
    // SAFETY: only the linker symbols' addresses are taken.
    unsafe {
        let kimage_voffset = va(&__kernel_start).as_u64() - loaded_at.as_u64();
        ImageLayout {
            text: (va(&__text_start), va(&__text_end)),
            rodata: (va(&__rodata_start), va(&__rodata_end)),
            data: (va(&__data_start), va(&__kernel_end)),
            kimage_voffset,
        }
    }
}

/// Where the image was loaded, from its link address.
pub fn image_phys(layout: &ImageLayout, va: VirtAddr) -> PhysAddr {
    PhysAddr::new(va.as_u64() - layout.kimage_voffset)
}

fn size(range: (VirtAddr, VirtAddr)) -> u64 {
    range.1.offset_from(range.0)
}

/// The leaves the linear map is built from: blocks and contiguous runs
/// where alignment allows if the CPU has BBML2_NOABORT (a block or run that
/// must change later is split in place), pages otherwise, so that
/// `set_memory_*` and `debug_pagealloc` never have to break a live block or
/// run (Linux's `force_pte_mapping()`: `NO_BLOCK_MAPPINGS | NO_CONT_MAPPINGS`).
pub fn linear_map_leaves() -> LeafSizes {
    if cpu::features().bbml2_noabort { LeafSizes::Blocks } else { LeafSizes::PagesOnly }
}

/// Builds the kernel's tables and switches TTBR1 to them.
pub(crate) fn build_and_switch(ram_start: PhysAddr, ram_size: u64, image: &ImageLayout) -> Result<PhysAddr, MapError> {
    let root = alloc_table()?;
    let ram_size = ram_size.min(LINEAR_MAP_SIZE);
    let linear = |pa: PhysAddr| PAGE_OFFSET.add(pa.offset_from(ram_start));

    // Linear map, with the image's text and rodata read-only.
    let ro_start = image_phys(image, image.text.0);
    let ro_end = image_phys(image, image.rodata.1);
    let ram_end = ram_start.add(ram_size);
    for (start, end, attrs) in [
        (ram_start, ro_start, Attributes::KERNEL_RW),
        (ro_start, ro_end, Attributes::KERNEL_RO),
        (ro_end, ram_end, Attributes::KERNEL_RW),
    ] {
        if end > start {
            // SAFETY: RAM from the device tree, at its linear-map address,
            // in tables nobody else uses yet.
            unsafe { map_range(root, linear(start), start, end.offset_from(start), attrs, linear_map_leaves()) }?;
        }
    }

    // The image at its link address, section by section.
    for (range, attrs) in [
        (image.text, Attributes::KERNEL_RX),
        (image.rodata, Attributes::KERNEL_RO),
        (image.data, Attributes::KERNEL_RW),
    ] {
        // SAFETY: the image's own section at its link address.
        unsafe { map_range(root, range.0, image_phys(image, range.0), size(range), attrs, LeafSizes::PagesOnly) }?;
    }

    for &(_, pa, len) in MMIO_DEVICES {
        // SAFETY: a device's registers, as device memory, at their fixed
        // place in the MMIO window.
        unsafe {
            map_range(root, MMIO_BASE.add(pa), PhysAddr::new(pa), len, Attributes::DEVICE, LeafSizes::PagesOnly)
        }?;
    }

    let empty = alloc_table()?;
    // SAFETY: the boot tables identity-map the image (boot.rs), and the new
    // tables map the image, its boot stack and the RAM we reach after this.
    unsafe { mmu::replace_ttbr1(root.as_u64(), empty.as_u64(), image.kimage_voffset) };
    super::frame_alloc::free_frame(empty).expect("allocated above");
    pgtable::set_kernel_root(root);
    use_linear_map(ram_start);
    pl011::set_base(MMIO_BASE.add(pl011::PHYS_BASE).as_u64());
    mmu::disable_ttbr0_walks();
    Ok(root)
}
