//! Slab caches: objects of one size carved from frames (Linux's
//! `kmem_cache`, mm/slub.c), and `kmalloc` over a cache per size class.
//!
//! Why not the heap: `linked_list_allocator` keeps its free holes in one
//! list sorted by address, walks it on every deallocation to find the
//! hole's place, and first-fit scans it on every allocation. vmalloc's
//! bookkeeping (a tree node per area and per free range, a frame list per
//! vmalloc'd area) went there; with 40 000 1-page areas live, freeing
//! every other one took about 6 ms a vfree under QEMU, growing with the
//! number of holes. A cache makes both O(1) whatever is live:
//!
//! - a **slab** is one frame: a header at its start ([`Slab`]), then as
//!   many objects as fit; its free objects are a list threaded through
//!   themselves, so taking or giving one is a few stores;
//! - an object's slab is found from its address alone (round down to the
//!   frame), as Linux finds it through `virt_to_slab`;
//! - the cache lists its slabs with a free object first (Linux's *partial*
//!   list) and its full ones apart, so an allocation never searches.
//!
//! An empty slab goes back to the frame allocator unless it is the cache's
//! only slab with room (Linux keeps `min_partial` empty slabs for the same
//! reason: a cache at the edge of a slab would otherwise take and give
//! back a frame on every call). So a cache holds at most one empty slab,
//! and only when every other one is full: memory freed is given back, and
//! the frames a cache holds once everything allocated has been freed are
//! the frames it held before (tests compare frame counts).
//!
//! A new slab is one frame request: under fault injection it fails, and
//! the allocation with it (`AllocError`), with nothing changed.

use core::alloc::Layout;
use core::ptr::{self, NonNull};

use alloc::alloc::{AllocError, Allocator, Global};
#[cfg(debug_assertions)]
use alloc::vec::Vec;

use super::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use super::{frame_alloc, phys_to_virt, virt_to_phys};
use crate::sync::IrqSpinLock;

/// The start of a slab's frame.
struct Slab {
    /// The first free object (each free object holds the next).
    free: *mut FreeObject,
    /// Objects handed out.
    inuse: usize,
    /// The neighbours in the cache's partial or full list.
    prev: *mut Slab,
    next: *mut Slab,
}

struct FreeObject {
    next: *mut FreeObject,
}

/// Where a slab's objects start: past its header, 16-byte aligned.
const FIRST_OBJECT: usize = size_of::<Slab>().next_multiple_of(16);

/// A list of slabs, linked through their headers.
struct SlabList {
    head: *mut Slab,
}

impl SlabList {
    const fn new() -> SlabList {
        SlabList { head: ptr::null_mut() }
    }

    /// # Safety
    /// `slab` is a live slab on no list.
    unsafe fn push(&mut self, slab: *mut Slab) {
        // SAFETY: `slab` and the head (if any) are live slab headers, ours
        // under the cache's lock.
        unsafe {
            (*slab).prev = ptr::null_mut();
            (*slab).next = self.head;
            if let Some(head) = self.head.as_mut() {
                head.prev = slab;
            }
        }
        self.head = slab;
    }

    /// # Safety
    /// `slab` is on this list.
    unsafe fn unlink(&mut self, slab: *mut Slab) {
        // SAFETY: `slab` and its neighbours are live slab headers on this
        // list, ours under the cache's lock.
        unsafe {
            let (prev, next) = ((*slab).prev, (*slab).next);
            match prev.as_mut() {
                Some(prev) => prev.next = next,
                None => self.head = next,
            }
            if let Some(next) = next.as_mut() {
                next.prev = prev;
            }
        }
    }

    /// The slabs' frames.
    #[cfg(debug_assertions)]
    fn frames(&self, out: &mut Vec<PhysAddr>) {
        let mut at = self.head;
        while !at.is_null() {
            out.push(virt_to_phys(VirtAddr::new(at as u64)));
            // SAFETY: a live slab header on this list.
            at = unsafe { (*at).next };
        }
    }
}

struct Slabs {
    /// Slabs with a free object; at most one of them empty, and then the
    /// only one.
    partial: SlabList,
    full: SlabList,
}

// SAFETY: the slabs are frames the cache owns, reached only under its lock.
unsafe impl Send for Slabs {}

/// Objects of `size` bytes (a multiple of 16), 16-byte aligned.
pub struct KmemCache {
    size: usize,
    slabs: IrqSpinLock<Slabs>,
}

impl KmemCache {
    pub const fn new(size: usize) -> KmemCache {
        assert!(size.is_multiple_of(16) && size >= 16, "objects hold a free-list link and keep 16-byte alignment");
        assert!((PAGE_SIZE as usize - FIRST_OBJECT) / size >= 2, "a slab holds two objects at least");
        KmemCache { size, slabs: IrqSpinLock::new(Slabs { partial: SlabList::new(), full: SlabList::new() }) }
    }

    /// One object, from a slab with room, or from a new slab (one frame
    /// request, made without the cache's lock held).
    pub fn alloc(&self) -> Result<NonNull<u8>, AllocError> {
        let mut slabs = self.slabs.lock();
        while slabs.partial.head.is_null() {
            drop(slabs);
            let frame = frame_alloc::alloc_frame().map_err(|_| AllocError)?;
            slabs = self.slabs.lock();
            if slabs.partial.head.is_null() {
                // SAFETY: a fresh frame, ours alone, on no list.
                unsafe { slabs.partial.push(self.carve(frame)) };
            } else {
                // Another CPU added a slab meanwhile: use that one (if
                // it still has room when the lock is ours again).
                drop(slabs);
                frame_alloc::free_frame(frame).expect("allocated just above");
                slabs = self.slabs.lock();
            }
        }
        let slab = slabs.partial.head;
        // SAFETY: the head of the partial list is a live slab with a free
        // object; the lock makes it ours.
        unsafe {
            let object = (*slab).free;
            (*slab).free = (*object).next;
            (*slab).inuse += 1;
            if (*slab).free.is_null() {
                slabs.partial.unlink(slab);
                slabs.full.push(slab);
            }
            Ok(NonNull::new_unchecked(object.cast()))
        }
    }

    /// Fills every slot of `objects` with an object, in one hold of the
    /// lock while the slabs have room (Linux's `kmem_cache_alloc_bulk`);
    /// a new slab is one frame request, made without the lock. All or
    /// none: if a frame cannot be had, the objects taken go back.
    pub fn alloc_bulk(&self, objects: &mut [NonNull<u8>]) -> Result<(), AllocError> {
        let mut filled = 0;
        while filled < objects.len() {
            let mut slabs = self.slabs.lock();
            while filled < objects.len() && !slabs.partial.head.is_null() {
                let slab = slabs.partial.head;
                // SAFETY: the head of the partial list is a live slab with a
                // free object; the lock makes it ours.
                unsafe {
                    let object = (*slab).free;
                    (*slab).free = (*object).next;
                    (*slab).inuse += 1;
                    if (*slab).free.is_null() {
                        slabs.partial.unlink(slab);
                        slabs.full.push(slab);
                    }
                    objects[filled] = NonNull::new_unchecked(object.cast());
                }
                filled += 1;
            }
            drop(slabs);
            if filled < objects.len() {
                let Ok(frame) = frame_alloc::alloc_frame() else {
                    for &object in &objects[..filled] {
                        // SAFETY: taken from this cache just above.
                        unsafe { self.free(object) };
                    }
                    return Err(AllocError);
                };
                let mut slabs = self.slabs.lock();
                // SAFETY: a fresh frame, ours alone, on no list.
                unsafe { slabs.partial.push(self.carve(frame)) };
            }
        }
        Ok(())
    }

    /// Gives `object` back; an empty slab goes back to the frame allocator
    /// unless it is the only one with room (see the module's doc).
    ///
    /// # Safety
    /// `object` came from this cache's [`KmemCache::alloc`] and has not been
    /// given back since.
    pub unsafe fn free(&self, object: NonNull<u8>) {
        let slab = (object.as_ptr() as usize & !(PAGE_SIZE as usize - 1)) as *mut Slab;
        let mut release = ptr::null_mut();
        {
            let mut slabs = self.slabs.lock();
            // SAFETY: the object's frame starts with its slab's header (the
            // caller's contract); the lock makes the slab and its lists ours.
            unsafe {
                let was_full = (*slab).free.is_null();
                let freed = object.as_ptr().cast::<FreeObject>();
                (*freed).next = (*slab).free;
                (*slab).free = freed;
                (*slab).inuse -= 1;
                if was_full {
                    slabs.full.unlink(slab);
                    // An empty slab is kept only while no other has room.
                    let head = slabs.partial.head;
                    if !head.is_null() && (*head).inuse == 0 {
                        slabs.partial.unlink(head);
                        release = head;
                    }
                    slabs.partial.push(slab);
                } else if (*slab).inuse == 0 && !((*slab).prev.is_null() && (*slab).next.is_null()) {
                    slabs.partial.unlink(slab);
                    release = slab;
                }
            }
        }
        if !release.is_null() {
            frame_alloc::free_frame(virt_to_phys(VirtAddr::new(release as u64))).expect("a slab's own frame");
        }
    }

    /// Makes `frame` a slab of free objects.
    ///
    /// # Safety
    /// `frame` is a fresh frame, ours alone.
    unsafe fn carve(&self, frame: PhysAddr) -> *mut Slab {
        let base = phys_to_virt(frame).as_mut_ptr::<u8>();
        let count = (PAGE_SIZE as usize - FIRST_OBJECT) / self.size;
        let mut free = ptr::null_mut::<FreeObject>();
        // Threaded from the last object down, so the first is handed out first.
        for i in (0..count).rev() {
            // SAFETY: object `i` lies inside the frame, past the header.
            unsafe {
                let object = base.add(FIRST_OBJECT + i * self.size).cast::<FreeObject>();
                object.write(FreeObject { next: free });
                free = object;
            }
        }
        let slab = base.cast::<Slab>();
        // SAFETY: the header's room at the frame's start.
        unsafe { slab.write(Slab { free, inuse: 0, prev: ptr::null_mut(), next: ptr::null_mut() }) };
        slab
    }

    /// Gives the cache its first slab, so that its first object costs no
    /// frame request (and a cache holds the same frames before its first
    /// object and after its last).
    fn prepare(&self) -> Result<(), AllocError> {
        // SAFETY: the object was just allocated, and nothing else has it.
        self.alloc().map(|object| unsafe { self.free(object) })
    }

    /// The frames of the cache's slabs.
    #[cfg(debug_assertions)]
    fn frames(&self, out: &mut Vec<PhysAddr>) {
        let slabs = self.slabs.lock();
        slabs.partial.frames(out);
        slabs.full.frames(out);
    }
}

/// Linux's kmalloc size classes up to 1 KiB (a slab holds three of those).
static KMALLOC_CACHES: [KmemCache; 9] = [
    KmemCache::new(16),
    KmemCache::new(32),
    KmemCache::new(64),
    KmemCache::new(96),
    KmemCache::new(128),
    KmemCache::new(192),
    KmemCache::new(256),
    KmemCache::new(512),
    KmemCache::new(1024),
];

/// The cache for `layout`: the smallest that holds it, if any does.
fn kmalloc_cache(layout: Layout) -> Option<&'static KmemCache> {
    if layout.align() > 16 {
        return None;
    }
    KMALLOC_CACHES.iter().find(|cache| cache.size >= layout.size())
}

/// Linux's `kmalloc` as an [`Allocator`]: an object of the smallest size
/// class that holds the request, from that class's cache. Larger requests
/// (above 1 KiB: a frame list of more than 128 pages) come from the heap,
/// where each stands for at least 512 KiB of vmalloc'd memory, so the heap
/// holds few of them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kmalloc;

// SAFETY: each object is a distinct piece of a slab, 16-byte aligned and
// at least the layout's size, until it is given back to the same cache
// (the layout chooses the cache both ways); the rest is the heap's.
unsafe impl Allocator for Kmalloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match kmalloc_cache(layout) {
            Some(cache) => cache.alloc().map(|object| NonNull::slice_from_raw_parts(object, cache.size)),
            None => Global.allocate(layout),
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match kmalloc_cache(layout) {
            // SAFETY: allocated by `allocate` with this layout, so by this cache.
            Some(cache) => unsafe { cache.free(ptr) },
            // SAFETY: allocated by the heap with this layout.
            None => unsafe { Global.deallocate(ptr, layout) },
        }
    }
}

/// [`KmemCache::alloc_bulk`] from the kmalloc cache for `layout`: as many
/// objects of it as `objects` has slots, all or none, each to be given
/// back through [`Kmalloc`] with that layout.
pub(crate) fn kmalloc_bulk(layout: Layout, objects: &mut [NonNull<u8>]) -> Result<(), AllocError> {
    match kmalloc_cache(layout) {
        Some(cache) => cache.alloc_bulk(objects),
        None => {
            for filled in 0..objects.len() {
                match Kmalloc.allocate(layout) {
                    Ok(object) => objects[filled] = object.cast(),
                    Err(AllocError) => {
                        for &object in &objects[..filled] {
                            // SAFETY: allocated just above with this layout.
                            unsafe { Kmalloc.deallocate(object, layout) };
                        }
                        return Err(AllocError);
                    }
                }
            }
            Ok(())
        }
    }
}

/// Gives every kmalloc cache its first slab (at boot).
pub fn init() -> Result<(), AllocError> {
    KMALLOC_CACHES.iter().try_for_each(KmemCache::prepare)
}

/// The frames every slab cache holds: bookkeeping memory, like the heap's
/// (the test harness's leak check; debug builds only, as the harness).
#[cfg(debug_assertions)]
pub fn frames() -> Vec<PhysAddr> {
    let mut out = Vec::new();
    for cache in &KMALLOC_CACHES {
        cache.frames(&mut out);
    }
    out
}
