//! Memory management: physical frames, the kernel heap, and the kernel's
//! stage-1 page tables.

pub(crate) mod addr;
pub(crate) mod apply;
mod area_alloc;
pub mod audit;
pub(crate) mod cacheflush;
pub mod debug_pagealloc;
pub(crate) mod engine;
pub(crate) mod fault;
pub mod frame_alloc;
pub(crate) mod heap;
pub(crate) mod kernel_map;
pub(crate) mod layout;
pub mod lazy_mmu;
pub(crate) mod pageattr;
pub mod pgtable;
pub mod pgtable_check;
pub mod probe;
pub mod ptdump;
pub(crate) mod slab;
mod span;
pub(crate) mod stack;
pub(crate) mod tlb;
mod tlb_policy;
pub(crate) mod translate;
pub(crate) mod vmalloc;
pub(crate) mod vmalloc_huge;
mod walk;

/// The stage-1 descriptor format, arm64's (`_arch/aarch64/descriptor.rs`),
/// where the memory manager's code looks for it.
pub(crate) mod descriptor {
    pub use crate::arch::descriptor::{Attributes, Descriptor, Entry, Level, MemoryType};
}

// The memory manager's API, flat as Linux's (`<linux/vmalloc.h>`,
// `<asm/memory.h>`, `<asm/set_memory.h>`, ...): the files above are how it
// is built, not where a caller looks. What stays a module below is a
// namespace of its own (`frame_alloc`, `lazy_mmu`, `pgtable`, the debug
// features), whose names would clash here.
pub use addr::{BLOCK_1G, BLOCK_2M, CONT_PTE_SIZE, PAGE_SIZE, PhysAddr, VirtAddr};
pub use apply::{
    Applied, ApplyError, ApplyMode, apply_mode, apply_to_existing_page_range, apply_to_existing_page_range_by_table,
    apply_to_existing_page_range_nolazy, apply_to_page_range, apply_to_page_range_by_table, apply_to_page_range_nolazy,
    set_apply_mode,
};
pub use cacheflush::{CacheCounts, cache_type, counts as cache_counts, flush_icache_range, write_instructions};
pub use descriptor::{Attributes, Descriptor, Entry, Level, MemoryType};
/// The heap's bytes in use and free (the boot binary's `meminfo`).
pub use heap::usage as heap_usage;
pub use kernel_map::{ImageLayout, image_phys, linear_map_leaves};
pub use layout::{
    KIMAGE_VADDR, KSTACK_SLOT_SIZE, KSTACK_SLOTS, KSTACK_START, MMIO_BASE, REGIONS, VMALLOC_END, VMALLOC_START,
};
pub use pageattr::{set_linear_map_ro, set_linear_map_rw, set_memory_nx, set_memory_ro, set_memory_rw, set_memory_x};
pub use stack::KernelStack;
pub use tlb::{
    FlushStrategy, MAX_DVM_OPS, MAX_TLBI_RANGE_PAGES, flush_tlb_kernel_pgtables, flush_tlb_kernel_range,
    flush_tlb_kernel_range_with, flush_tlb_kernel_ranges, strategy as flush_strategy,
};
pub use translate::{
    Access, HwTranslation, SwTranslation, Translation, hw_translate, mair_attr, sw_translate, translate,
};
pub use vmalloc::{
    AreaInfo, GUARD_SIZE, VmallocError, area_count, areas, find_area, free_vm_area, get_vm_area, get_vm_area_range,
    lazy_max_pages, lazy_pages, reclaim_page_tables, set_vmap_lazy_purge, vfree, vm_unmap_aliases, vmalloc,
    vmalloc_aligned, vmalloc_range, vmap_contiguous, vmap_pages, vmap_range, vunmap, vunmap_range, vunmap_warnings,
    vzalloc, vzalloc_aligned,
};
pub use vmalloc_huge::{HugeShape, VmFlags, vmalloc_flags, vmalloc_huge};

/// The bench's peer (the aarch64-paging crate) loads its own tables into
/// TTBR0, which the kernel otherwise keeps the MMU from walking.
pub use crate::arch::mmu::{disable_ttbr0_walks, enable_ttbr0_walks};

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
