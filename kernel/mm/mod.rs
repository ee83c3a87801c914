//! Memory management: physical frames, the kernel heap, and the kernel's
//! stage-1 page tables.

pub mod addr;
pub mod apply;
mod area_alloc;
pub mod audit;
pub mod cacheflush;
pub mod debug_pagealloc;
pub(crate) mod engine;
pub mod fault;
pub mod frame_alloc;
pub mod heap;
pub mod kernel_map;
pub mod layout;
pub mod lazy_mmu;
pub mod pageattr;
pub mod pgtable;
pub mod pgtable_check;
pub mod probe;
pub mod ptdump;
pub(crate) mod slab;
mod span;
pub mod stack;
pub mod tlb;
mod tlb_policy;
pub mod translate;
pub mod vmalloc;
pub mod vmalloc_huge;
mod walk;

/// The stage-1 descriptor format, arm64's (`_arch/aarch64/descriptor.rs`),
/// where the memory manager's code looks for it.
pub mod descriptor {
    pub use crate::arch::descriptor::{Attributes, Descriptor, Entry, Level, MemoryType};
}

/// The bench's peer (the aarch64-paging crate) loads its own tables into
/// TTBR0, which the kernel otherwise keeps the MMU from walking.
pub use crate::arch::mmu::{disable_ttbr0_walks, enable_ttbr0_walks};

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use addr::{PhysAddr, VirtAddr};

/// `va - pa` for memory the kernel reaches by physical address: 0 while
/// the boot tables identity-map RAM, then the linear map's offset.
static PHYS_TO_VIRT: AtomicU64 = AtomicU64::new(0);

/// Where the kernel reads and writes the RAM at `pa`.
#[inline]
pub fn phys_to_virt(pa: PhysAddr) -> VirtAddr {
    VirtAddr::new(pa.as_u64().wrapping_add(PHYS_TO_VIRT.load(Relaxed)))
}

/// The physical address behind a linear-map address.
#[inline]
pub fn virt_to_phys(va: VirtAddr) -> PhysAddr {
    PhysAddr::new(va.as_u64().wrapping_sub(PHYS_TO_VIRT.load(Relaxed)))
}

/// From now on RAM is reached through the linear map.
fn use_linear_map(ram_start: PhysAddr) {
    PHYS_TO_VIRT.store(layout::PAGE_OFFSET.as_u64().wrapping_sub(ram_start.as_u64()), Relaxed);
}
