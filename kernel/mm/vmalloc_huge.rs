//! `vmalloc_huge`: vmalloc'd memory in huge leaves, where the caller allows
//! them (Linux's `VM_ALLOW_HUGE_VMAP`).
//!
//! Plain `vmalloc` maps one 4 KiB page per frame, the frames anywhere.
//! A caller that allows huge mappings gets physically contiguous *chunks*
//! instead, as Linux's `__vmalloc_node_range_noprof` chooses them:
//! - 2 MiB and more: 2 MiB chunks (`arch_vmap_pmd_supported`), each mapped
//!   as one level-2 block; the size is rounded up to 2 MiB and the area
//!   aligned to 2 MiB, so every chunk lands on a block's slot.
//! - 64 KiB to 2 MiB: 64 KiB chunks (arm64's
//!   `arch_vmap_pte_supported_shift`, 06fc959fcff7 "arm64/mm: Support huge
//!   pte-mapped pages in vmap", 6.16), each mapped as one contiguous run of
//!   16 pages with the contiguous bit (`arch_vmap_pte_range_map_size`);
//!   the size rounded up to 64 KiB, the area aligned to 64 KiB.
//! - Below 64 KiB, or when the chunks cannot be had: pages, as `vmalloc`
//!   (Linux's `fail:` path tries again with `shift = PAGE_SHIFT`, the size
//!   and alignment the caller asked for).
//!
//! Plain `vmalloc` keeps pages, as in Linux 6.16 and later: only an area
//! with `VM_ALLOW_HUGE_VMAP` gets a `shift` above `PAGE_SHIFT`, and with
//! `PAGE_SHIFT` `vmap_pages_range_noflush` maps small pages one by one
//! (`vmap_small_pages_range_noflush`), never a contiguous run.
//!
//! The area is an ordinary vmalloc area: it lists every 4 KiB frame of its
//! chunks, as Linux's `area->pages` does after `split_page`, so `vfree`
//! takes it apart unchanged: the engine's clear takes each block and each
//! run whole (one store per entry), one TLB flush covers the area, and
//! every frame goes back.

use alloc::vec::Vec;

use super::addr::{BLOCK_2M, CONT_PTE_SIZE, PAGE_SIZE, PhysAddr, VirtAddr};
use super::descriptor::Attributes;
use super::engine::{Chunks, LeafSizes};
use super::layout::{VMALLOC_END, VMALLOC_START};
use super::slab::Kmalloc;
use super::vmalloc::{self, VmallocError};
use super::{apply, frame_alloc, pgtable, pgtable_check};

/// What a vmalloc caller allows (Linux's `vm_flags`, the one that changes
/// the mapping).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmFlags {
    /// Huge leaves may map the area (`VM_ALLOW_HUGE_VMAP`): blocks and
    /// contiguous runs, each backed by one physically contiguous chunk.
    pub allow_huge_vmap: bool,
}

impl VmFlags {
    /// Pages only: `vmalloc`'s default.
    pub const NONE: VmFlags = VmFlags { allow_huge_vmap: false };
    /// Linux's `VM_ALLOW_HUGE_VMAP`.
    pub const ALLOW_HUGE_VMAP: VmFlags = VmFlags { allow_huge_vmap: true };
}

/// The leaves `vmalloc_huge` maps `size` bytes with: the chunk size, and
/// the leaf sizes inside a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugeShape {
    /// 2 MiB chunks, each a level-2 block (`shift = PMD_SHIFT`).
    Blocks,
    /// 64 KiB chunks, each a contiguous run of 16 pages (`shift =
    /// CONT_PTE_SHIFT`).
    ContPtes,
    /// 4 KiB pages, as `vmalloc` maps them (`shift = PAGE_SHIFT`).
    Pages,
}

impl HugeShape {
    /// Linux's choice for `size` bytes: a 2 MiB block if the size reaches
    /// one (`arch_vmap_pmd_supported(prot) && size >= PMD_SIZE`), else
    /// arm64's `arch_vmap_pte_supported_shift(size)`.
    pub fn for_size(size: u64) -> HugeShape {
        if size >= BLOCK_2M {
            HugeShape::Blocks
        } else if size >= CONT_PTE_SIZE {
            HugeShape::ContPtes
        } else {
            HugeShape::Pages
        }
    }

    /// Bytes per chunk (Linux's `1 << shift`).
    pub fn chunk_size(self) -> u64 {
        match self {
            HugeShape::Blocks => BLOCK_2M,
            HugeShape::ContPtes => CONT_PTE_SIZE,
            HugeShape::Pages => PAGE_SIZE,
        }
    }

    fn leaf_sizes(self) -> LeafSizes {
        match self {
            HugeShape::Blocks => LeafSizes::Blocks,
            HugeShape::ContPtes => LeafSizes::ContPtes,
            HugeShape::Pages => LeafSizes::PagesOnly,
        }
    }
}

/// `size` bytes of fresh frames mapped read/write with the largest leaves
/// Linux would use when huge mappings are allowed ([`HugeShape`]), else
/// pages (Linux's `vmalloc_huge`).
pub fn vmalloc_huge(size: u64) -> Result<VirtAddr, VmallocError> {
    vmalloc_flags(size, PAGE_SIZE, VmFlags::ALLOW_HUGE_VMAP)
}

/// [`vmalloc`](vmalloc::vmalloc_aligned) with `flags`: with
/// `ALLOW_HUGE_VMAP`, chunks as [`HugeShape::for_size`] says, the size
/// rounded up to a whole chunk and the area aligned to one (or to `align`,
/// if larger); if the chunks cannot be had, pages, at the size and
/// alignment asked for.
pub fn vmalloc_flags(size: u64, align: u64, flags: VmFlags) -> Result<VirtAddr, VmallocError> {
    if !align.is_power_of_two() || align < PAGE_SIZE {
        return Err(VmallocError::BadAlignment(align));
    }
    if flags.allow_huge_vmap && size > 0 {
        let shape = HugeShape::for_size(size);
        if shape != HugeShape::Pages {
            let chunk = shape.chunk_size();
            if let Some(huge) = size.checked_next_multiple_of(chunk) {
                match alloc_and_map_chunks(huge, align.max(chunk), shape) {
                    Err(VmallocError::OutOfMemory | VmallocError::NoVirtualSpace) => {}
                    done => return done,
                }
            }
        }
    }
    vmalloc::vmalloc_aligned(size, align)
}

/// Reserves an area of `size` bytes (whole chunks), takes its chunks and
/// maps them, all or nothing.
fn alloc_and_map_chunks(size: u64, align: u64, shape: HugeShape) -> Result<VirtAddr, VmallocError> {
    let _op = pgtable_check::operation();
    let chunk = shape.chunk_size();
    let (count, per_chunk) = ((size / chunk) as usize, (chunk / PAGE_SIZE) as usize);
    if size >= VMALLOC_END.offset_from(VMALLOC_START) {
        return Err(VmallocError::NoVirtualSpace);
    }
    if (count * per_chunk) as u64 > frame_alloc::stats().total as u64 {
        return Err(VmallocError::OutOfMemory);
    }
    // The lists first, fallibly: the chunks, and every frame of them for
    // the area's record (what vfree gives back).
    let mut chunks = Vec::new();
    chunks.try_reserve_exact(count).map_err(|_| VmallocError::OutOfMemory)?;
    let mut frames = Vec::new_in(Kmalloc);
    frames.try_reserve_exact(count * per_chunk).map_err(|_| VmallocError::OutOfMemory)?;
    for _ in 0..count {
        match frame_alloc::alloc_contiguous(per_chunk, chunk) {
            Ok(pa) => chunks.push(pa),
            Err(_) => {
                free_chunks(&chunks, per_chunk);
                return Err(VmallocError::OutOfMemory);
            }
        }
    }
    let va = match vmalloc::reserve_area(size, align) {
        Ok(va) => va,
        Err(e) => {
            free_chunks(&chunks, per_chunk);
            return Err(e);
        }
    };
    let leaves = Chunks { chunks: &chunks, chunk_size: chunk, sizes: shape.leaf_sizes(), attrs: Attributes::KERNEL_RW };
    // SAFETY: a fresh area of ours, mapping fresh frames of ours.
    let mapped = unsafe { pgtable::map_leaves(pgtable::kernel_root(), va, size, leaves, apply::sections(true)) };
    if let Err(e) = mapped {
        free_chunks(&chunks, per_chunk);
        vmalloc::unreserve_area(va);
        return Err(e.into());
    }
    frames.extend(chunks.iter().flat_map(|&pa| (0..per_chunk as u64).map(move |i| pa.add(i * PAGE_SIZE))));
    vmalloc::set_vmalloc_frames(va, frames);
    Ok(va)
}

fn free_chunks(chunks: &[PhysAddr], per_chunk: usize) {
    for &pa in chunks {
        frame_alloc::free_frames(pa, per_chunk).expect("allocated by vmalloc_huge");
    }
}
