//! The kernel heap: linked_list_allocator over contiguous frames, reached
//! through the linear map.
//!
//! Its lock masks IRQs while held: a task preempted while holding it would
//! otherwise leave every other task on this CPU spinning forever.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{NonNull, null_mut};

use linked_list_allocator::Heap;

use super::addr::{PAGE_SIZE, PhysAddr};
use super::{frame_alloc, phys_to_virt};
use crate::sync::IrqSpinLock;

struct KernelHeap(IrqSpinLock<Heap>);

// SAFETY: linked_list_allocator's Heap is a correct allocator; the lock
// makes each call exclusive.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0.lock().allocate_first_fit(layout).map_or(null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc's contract).
        unsafe { self.0.lock().deallocate(NonNull::new_unchecked(ptr), layout) }
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(IrqSpinLock::new(Heap::empty()));

/// Takes `bytes` of contiguous RAM for the heap. Needs the linear map.
pub(crate) fn init(bytes: u64) -> Result<(), frame_alloc::FrameError> {
    let frames = (bytes / PAGE_SIZE) as usize;
    let pa = frame_alloc::alloc_contiguous(frames, PAGE_SIZE)?;
    PHYS_RANGE.call_once(|| (pa, frames as u64 * PAGE_SIZE));
    let va = phys_to_virt(pa);
    // SAFETY: the frames are ours alone from now on, mapped RW at `va`.
    unsafe { HEAP.0.lock().init(va.as_mut_ptr(), frames * PAGE_SIZE as usize) };
    Ok(())
}

static PHYS_RANGE: spin::Once<(PhysAddr, u64)> = spin::Once::new();

/// Where the heap is in RAM: its first byte and its size (0 bytes before
/// `init`).
pub(crate) fn phys_range() -> (PhysAddr, u64) {
    PHYS_RANGE.get().copied().unwrap_or((PhysAddr::new(0), 0))
}

/// Bytes in use and free on the heap.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.0.lock();
    (heap.used(), heap.free())
}

#[cfg(test)]
mod tests {
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    use super::usage;

    #[test_case]
    fn heap_serves_boxes_vectors_and_maps() {
        let (used_before, _) = usage();
        {
            let b = Box::new(0x1234_5678u64);
            let v: Vec<u64> = (0..100_000).collect();
            let mut m = BTreeMap::new();
            for i in 0..1000u64 {
                m.insert(i, i * i);
            }
            assert_eq!(*b, 0x1234_5678);
            assert_eq!(v.iter().sum::<u64>(), 100_000 * 99_999 / 2);
            assert_eq!(m[&999], 998_001);
            assert!(usage().0 >= used_before + 800_000);
        }
        assert_eq!(usage().0, used_before);
    }
}
