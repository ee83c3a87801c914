//! Kernel stacks in their own region, each with unmapped pages below it.
//!
//! A stack that overflows runs into the guard page and takes a translation
//! fault instead of silently overwriting whatever lies below it.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use super::descriptor::Attributes;
use super::layout::{KSTACK_PAGES, KSTACK_SLOT_SIZE, KSTACK_SLOTS, KSTACK_START};
use super::pgtable::{self, LeafSizes, MapError};
use super::translate::{SwTranslation, sw_translate};
use super::{frame_alloc, lazy_mmu, pgtable_check};

/// Which stack slots are taken, one bit each.
static SLOTS: AtomicU64 = AtomicU64::new(0);

/// A mapped kernel stack; unmapped and freed on drop.
#[derive(Debug)]
pub struct KernelStack {
    slot: u64,
    /// The CPU that mapped and published it: another CPU owes an `isb`
    /// before it first runs on it (`sched::schedule`).
    mapped_on: usize,
}

impl KernelStack {
    /// Maps a new stack: KSTACK_PAGES frames at the top of a free slot.
    pub fn new() -> Result<KernelStack, MapError> {
        let slot = loop {
            let taken = SLOTS.load(Relaxed);
            let free = (!taken).trailing_zeros() as u64;
            if free >= KSTACK_SLOTS {
                return Err(MapError::OutOfMemory);
            }
            if SLOTS.compare_exchange(taken, taken | 1 << free, Relaxed, Relaxed).is_ok() {
                break free;
            }
        };
        let _op = pgtable_check::operation();
        let mut stack = KernelStack { slot, mapped_on: 0 };
        let bottom = stack.bottom();
        for page in 0..KSTACK_PAGES {
            let mapped = frame_alloc::alloc_frame().map_err(MapError::from).and_then(|pa| {
                let va = bottom.add(page * PAGE_SIZE);
                // SAFETY: a frame just allocated, in this stack's own slot.
                unsafe {
                    pgtable::map_range(
                        pgtable::kernel_root(),
                        va,
                        pa,
                        PAGE_SIZE,
                        Attributes::KERNEL_RW,
                        LeafSizes::PagesOnly,
                    )
                }
                .inspect_err(|_| frame_alloc::free_frame(pa).expect("just allocated"))
            });
            if let Err(e) = mapped {
                stack.release(page);
                core::mem::forget(stack);
                return Err(e);
            }
        }
        // The stack is for another task, which may run on another CPU
        // before the caller leaves a lazy MMU section it is in: what the
        // mapping deferred is paid now (stores made, `dsb ishst; isb`).
        lazy_mmu::flush_section();
        // Which CPU published it, as the checker and the scheduler see it:
        // asked with interrupts masked, so that both hear of the same one.
        let daif = crate::arch::cpu::irq_save();
        pgtable_check::handed_over();
        pgtable_check::stack_handed_over(stack.bottom(), stack.top());
        stack.mapped_on = crate::percpu::this_cpu().id;
        crate::arch::cpu::irq_restore(daif);
        Ok(stack)
    }

    /// The CPU that mapped and published it.
    pub fn mapped_on(&self) -> usize {
        self.mapped_on
    }

    /// The lowest mapped address.
    pub fn bottom(&self) -> VirtAddr {
        VirtAddr::new(self.top().as_u64() - KSTACK_PAGES * PAGE_SIZE)
    }

    /// One past the highest mapped address: the initial stack pointer.
    pub fn top(&self) -> VirtAddr {
        KSTACK_START.add((self.slot + 1) * KSTACK_SLOT_SIZE)
    }

    /// The page just below the stack, never mapped.
    pub fn guard_page(&self) -> VirtAddr {
        VirtAddr::new(self.bottom().as_u64() - PAGE_SIZE)
    }

    /// Unmaps the first `pages` pages and frees their frames and the slot.
    fn release(&self, pages: u64) {
        let _op = pgtable_check::operation();
        let bottom = self.bottom();
        let frames: [Option<PhysAddr>; KSTACK_PAGES as usize] = core::array::from_fn(|i| {
            let va = bottom.add(i as u64 * PAGE_SIZE);
            match sw_translate(va) {
                SwTranslation::Mapped { pa, .. } if (i as u64) < pages => Some(pa),
                _ => None,
            }
        });
        if pages > 0 {
            // SAFETY: this stack's own pages; it is no longer in use, and
            // unmap_range flushes them before the frames are freed.
            unsafe { pgtable::unmap_range(pgtable::kernel_root(), bottom, pages * PAGE_SIZE) }
                .expect("mapped by new()");
        }
        for pa in frames.into_iter().flatten() {
            frame_alloc::free_frame(pa).expect("allocated by new()");
        }
        SLOTS.fetch_and(!(1 << self.slot), Relaxed);
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        self.release(KSTACK_PAGES);
    }
}
