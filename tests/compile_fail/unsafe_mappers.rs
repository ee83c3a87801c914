//! What can map any physical memory, or write any entry, is `unsafe fn`:
//! safe code cannot call it. (Unmapping through safe code goes through
//! `vunmap_range`, which refuses what is not a `get_vm_area` area.)
//!
//! case: write_entry E0133
//! case: set_ptes E0133
//! case: map_range E0133
//! case: unmap_range E0133
//! case: clear_range E0133
//! case: vmap_range E0133
//! case: vmap_pages E0133
//! case: vmap_contiguous E0133
//! case: table_entry E0133
//! case: free_empty_tables E0133
//! case: engine_pool E0603
//! case: reclaim_empty_tables E0603
#![no_std]

extern crate alloc;

use lazymmu::mm::{self, PAGE_SIZE, PhysAddr, VirtAddr, Attributes, Descriptor, Level, pgtable::{self, LeafSizes}};


/// The kernel's own text, mapped writable somewhere: what the `unsafe`
/// is there to stop.
pub fn map_the_kernel_writable(va: VirtAddr, text: PhysAddr) {
    let rw = Attributes::KERNEL_RW;
    let root = pgtable::kernel_root();
    #[cfg(case = "write_entry")]
    pgtable::write_entry(&pgtable::walking().walk(va), Descriptor::leaf(Level::L3, text, rw));
    #[cfg(case = "set_ptes")]
    let _ = lazymmu::mm::apply_to_page_range_by_table(va, PAGE_SIZE, |ptes: &pgtable::Ptes| {
        pgtable::set_ptes(ptes, Descriptor::leaf(Level::L3, text, rw));
        Ok::<(), ()>(())
    });
    #[cfg(case = "map_range")]
    let _ = pgtable::map_range(root, va, text, PAGE_SIZE, rw, LeafSizes::PagesOnly);
    #[cfg(case = "unmap_range")]
    let _ = pgtable::unmap_range(root, va, PAGE_SIZE);
    #[cfg(case = "clear_range")]
    let _ = pgtable::clear_range(root, va, PAGE_SIZE);
    #[cfg(case = "vmap_range")]
    let _ = mm::vmap_range(va, va.add(PAGE_SIZE), text, rw);
    #[cfg(case = "vmap_pages")]
    let _ = mm::vmap_pages(&[text], rw);
    #[cfg(case = "vmap_contiguous")]
    let _ = mm::vmap_contiguous(text, PAGE_SIZE, rw);
    #[cfg(case = "table_entry")]
    let _ = pgtable::walking().table_entry(text, Level::L3, va);
    // Freeing tables below any root (the linear map's, say), or linking
    // pages the caller made up as tables.
    #[cfg(case = "free_empty_tables")]
    pgtable::free_empty_tables(root, va, PAGE_SIZE);
    #[cfg(case = "engine_pool")]
    let _ = lazymmu::mm::engine::Pool::INLINE;
    #[cfg(case = "reclaim_empty_tables")]
    let _ = unsafe {
        pgtable::reclaim_empty_tables(pgtable::exclusive(), root, va, PAGE_SIZE, Default::default(), Default::default())
    };
    // The safe ones: refused unless the range is the caller's own area.
    let _ = mm::vunmap_range(va, va.add(PAGE_SIZE));
    let _ = (root, rw, Descriptor::leaf(Level::L3, text, rw), LeafSizes::PagesOnly);
}
