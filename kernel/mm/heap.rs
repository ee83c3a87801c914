//! The kernel heap: linked_list_allocator over contiguous frames, reached
//! through the linear map.

use linked_list_allocator::LockedHeap;

use super::addr::PAGE_SIZE;
use super::{frame_alloc, phys_to_virt};

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Takes `bytes` of contiguous RAM for the heap. Needs the linear map.
pub fn init(bytes: u64) -> Result<(), frame_alloc::FrameError> {
    let frames = (bytes / PAGE_SIZE) as usize;
    let pa = frame_alloc::alloc_contiguous(frames, PAGE_SIZE)?;
    let va = phys_to_virt(pa);
    // SAFETY: the frames are ours alone from now on, mapped RW at `va`.
    unsafe { HEAP.lock().init(va.as_mut_ptr(), frames * PAGE_SIZE as usize) };
    Ok(())
}

/// Bytes in use and free on the heap.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.free())
}
