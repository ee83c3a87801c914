//! The kernel's virtual address space: TTBR1's half, 0xffff_0000_0000_0000 up.
//!
//! ```text
//!   0xffff_0000_0000_0000  linear map: all RAM, PAGE_OFFSET + (pa - ram base)
//!   0xffff_8000_0000_0000  vmalloc region (1 TiB)
//!   0xffff_c000_0000_0000  kernel stacks, each with an unmapped guard page below
//!   0xffff_e000_0000_0000  MMIO: device at physical address P is at MMIO_BASE + P
//!   0xffff_ffff_8000_0000  kernel image (linked here, see linker.ld)
//! ```
//!
//! Each region starts on its own level-0 entry (512 GiB), so a ptdump shows
//! them apart and no level-0 table entry is shared between two regions.

use super::addr::VirtAddr;

pub(crate) const PAGE_OFFSET: VirtAddr = VirtAddr::new(0xffff_0000_0000_0000);
/// The linear map's room: one level-0 entry.
pub(crate) const LINEAR_MAP_SIZE: u64 = 512 << 30;

/// Is `va` in the linear map's room?
pub(crate) fn in_linear_map(va: VirtAddr) -> bool {
    va.as_u64().wrapping_sub(PAGE_OFFSET.as_u64()) < LINEAR_MAP_SIZE
}

pub const VMALLOC_START: VirtAddr = VirtAddr::new(0xffff_8000_0000_0000);
pub const VMALLOC_END: VirtAddr = VirtAddr::new(0xffff_8100_0000_0000);

pub const KSTACK_START: VirtAddr = VirtAddr::new(0xffff_c000_0000_0000);
/// Pages in one kernel stack.
pub(crate) const KSTACK_PAGES: u64 = 16;
/// Virtual room per stack: the stack at the top, unmapped below it.
pub const KSTACK_SLOT_SIZE: u64 = 2 * KSTACK_PAGES * super::addr::PAGE_SIZE;
pub const KSTACK_SLOTS: u64 = 64;

pub const MMIO_BASE: VirtAddr = VirtAddr::new(0xffff_e000_0000_0000);
pub(crate) const MMIO_SIZE: u64 = 1 << 32;

/// Where linker.ld puts the image; the boot tables map this 1 GiB with one block.
pub const KIMAGE_VADDR: VirtAddr = VirtAddr::new(0xffff_ffff_8000_0000);

/// The regions, for ptdump and tests that sweep them.
pub const REGIONS: &[(&str, VirtAddr, u64)] = &[
    ("linear map", PAGE_OFFSET, LINEAR_MAP_SIZE),
    ("vmalloc", VMALLOC_START, VMALLOC_END.as_u64() - VMALLOC_START.as_u64()),
    ("kernel stacks", KSTACK_START, KSTACK_SLOTS * KSTACK_SLOT_SIZE),
    ("mmio", MMIO_BASE, MMIO_SIZE),
    ("kernel image", KIMAGE_VADDR, 1 << 30),
];
