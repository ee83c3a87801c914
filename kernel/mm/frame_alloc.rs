//! The physical frame allocator: 4 KiB frames of RAM, one bit each.
//!
//! A bitmap is simple to check ("is this frame free?" is one bit), makes a
//! double free detectable, and serves contiguous, aligned runs (block
//! mappings and the heap need them) with a linear scan. Its statistics are
//! what tests use to prove that an operation leaked no frame.

use core::alloc::Allocator;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use alloc::vec::Vec;

use super::addr::{PAGE_SIZE, PhysAddr};
use super::{debug_pagealloc, lazy_mmu, pgtable_check};
use crate::sync::{IrqSpinLock, IrqsMasked};
use crate::{println, task};

/// The most RAM the bitmap can describe (8 GiB); more is left unused.
pub(crate) const MAX_FRAMES: usize = (8 << 30) / PAGE_SIZE as usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free run of the requested size and alignment.
    OutOfMemory,
    /// A request for zero frames.
    ZeroCount,
    /// Alignment not a power of two, or below one frame.
    BadAlignment(u64),
    /// Freeing a frame that is not allocated (double free, or never was).
    NotAllocated(PhysAddr),
    /// An address outside the RAM this allocator manages.
    OutOfRange(PhysAddr),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::OutOfMemory => write!(f, "no free physical frames (or run of frames) are left for the request"),
            FrameError::ZeroCount => write!(f, "the request asks for zero frames"),
            FrameError::BadAlignment(a) => {
                write!(f, "alignment {a:#x} is not a power of two of a page or more")
            }
            FrameError::NotAllocated(pa) => write!(f, "frame {pa} is not allocated"),
            FrameError::OutOfRange(pa) => write!(f, "frame {pa} is outside RAM"),
        }
    }
}

/// How many frames are free and used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameStats {
    pub total: usize,
    pub free: usize,
    pub used: usize,
}

pub(crate) struct FrameAllocator {
    base: PhysAddr,
    frames: usize,
    free: usize,
    /// Bit set = frame in use (or reserved).
    bitmap: [u64; MAX_FRAMES / 64],
    /// Where the next single-frame search starts.
    hint: usize,
}

impl FrameAllocator {
    const fn empty() -> FrameAllocator {
        FrameAllocator { base: PhysAddr::new(0), frames: 0, free: 0, bitmap: [0; MAX_FRAMES / 64], hint: 0 }
    }

    fn is_used(&self, frame: usize) -> bool {
        self.bitmap[frame / 64] & (1 << (frame % 64)) != 0
    }

    fn set_used(&mut self, frame: usize, used: bool) {
        if used {
            self.bitmap[frame / 64] |= 1 << (frame % 64);
        } else {
            self.bitmap[frame / 64] &= !(1 << (frame % 64));
        }
    }

    fn frame_of(&self, pa: PhysAddr) -> Result<usize, FrameError> {
        if pa < self.base || !pa.is_aligned(PAGE_SIZE) {
            return Err(FrameError::OutOfRange(pa));
        }
        let frame = (pa.offset_from(self.base) / PAGE_SIZE) as usize;
        if frame >= self.frames {
            return Err(FrameError::OutOfRange(pa));
        }
        Ok(frame)
    }

    fn init(&mut self, base: PhysAddr, bytes: u64, reserved: &[(PhysAddr, u64)]) {
        self.base = base;
        self.frames = ((bytes / PAGE_SIZE) as usize).min(MAX_FRAMES);
        self.free = self.frames;
        for &(start, len) in reserved {
            let first = start.align_down(PAGE_SIZE);
            let end = start.as_u64() + len;
            let mut pa = first;
            while pa.as_u64() < end {
                if let Ok(frame) = self.frame_of(pa)
                    && !self.is_used(frame)
                {
                    self.set_used(frame, true);
                    self.free -= 1;
                }
                pa = pa.add(PAGE_SIZE);
            }
        }
    }

    fn alloc_run(&mut self, count: usize, align: u64) -> Result<PhysAddr, FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        if !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(FrameError::BadAlignment(align));
        }
        if count > self.free {
            return Err(FrameError::OutOfMemory);
        }
        if count == 1 && align == PAGE_SIZE {
            return self.alloc_from_hint();
        }
        let step = (align / PAGE_SIZE) as usize;
        // Alignment is of the physical address, and RAM's base may itself
        // be unaligned: find the first frame whose address is aligned.
        let first_aligned = ((self.base.as_u64().next_multiple_of(align) - self.base.as_u64()) / PAGE_SIZE) as usize;
        let start_from = if count == 1 && step == 1 { self.hint } else { first_aligned };
        let mut frame = start_from;
        let mut wrapped = count != 1 || step != 1;
        loop {
            if frame + count > self.frames {
                if wrapped {
                    return Err(FrameError::OutOfMemory);
                }
                wrapped = true;
                frame = first_aligned;
                continue;
            }
            match (frame..frame + count).find(|&f| self.is_used(f)) {
                None => break,
                // Skip past the used frame, to the next aligned start.
                Some(used) => frame = first_aligned + (used + 1 - first_aligned).next_multiple_of(step),
            }
        }
        for f in frame..frame + count {
            self.set_used(f, true);
        }
        self.free -= count;
        if count == 1 {
            self.hint = frame + 1;
        }
        Ok(self.base.add(frame as u64 * PAGE_SIZE))
    }

    /// `count` single frames, wherever they are free, pushed onto `out`:
    /// the bitmap is read a word (64 frames) at a time, from the hint on,
    /// and each free bit is taken with a few bit operations. All or none.
    fn alloc_bulk(&mut self, count: usize, mut out: impl FnMut(PhysAddr)) -> Result<(), FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        if count > self.free {
            return Err(FrameError::OutOfMemory);
        }
        let words = self.frames.div_ceil(64);
        let mut word = (self.hint / 64).min(words - 1);
        let mut left = count;
        while left > 0 {
            // Bits past the last frame count as used.
            let beyond = (word + 1) * 64;
            let tail = if beyond > self.frames { !0u64 << (self.frames % 64) } else { 0 };
            let mut free = !(self.bitmap[word] | tail);
            let mut taken = 0u64;
            while free != 0 && left > 0 {
                let bit = free.trailing_zeros() as usize;
                free &= free - 1;
                taken |= 1 << bit;
                out(self.base.add(((word * 64 + bit) as u64) * PAGE_SIZE));
                left -= 1;
            }
            self.bitmap[word] |= taken;
            self.hint = word * 64;
            // `free` frames are known to be enough: the search wraps once at most.
            word = if word + 1 == words { 0 } else { word + 1 };
        }
        self.free -= count;
        Ok(())
    }

    /// One frame for [`FrameAllocator::alloc_run`]: the first free one at
    /// or after the hint, wrapping to the first frame, found a word of the
    /// bitmap at a time (the frames below the hint in its word masked as
    /// used); the hint moves past it.
    fn alloc_from_hint(&mut self) -> Result<PhysAddr, FrameError> {
        if self.free == 0 {
            return Err(FrameError::OutOfMemory);
        }
        let words = self.frames.div_ceil(64);
        let start = if self.hint < self.frames { self.hint } else { 0 };
        let mut word = start / 64;
        let mut below = !(!0u64 << (start % 64));
        loop {
            let tail = if (word + 1) * 64 > self.frames { !0u64 << (self.frames % 64) } else { 0 };
            let free = !(self.bitmap[word] | tail | below);
            if free != 0 {
                let frame = word * 64 + free.trailing_zeros() as usize;
                self.set_used(frame, true);
                self.free -= 1;
                self.hint = frame + 1;
                return Ok(self.base.add(frame as u64 * PAGE_SIZE));
            }
            // A free frame is known to exist: past the last word, the
            // search starts again from the first, with nothing masked
            // (the hint's own word is looked at whole then).
            below = 0;
            word = if word + 1 == words { 0 } else { word + 1 };
        }
    }

    /// One frame, wherever it is free: [`FrameAllocator::alloc_bulk`] of
    /// one (the same frame), with no callback and no count to keep.
    fn alloc_one(&mut self) -> Result<PhysAddr, FrameError> {
        if self.free == 0 {
            return Err(FrameError::OutOfMemory);
        }
        let words = self.frames.div_ceil(64);
        let mut word = (self.hint / 64).min(words - 1);
        loop {
            // Bits past the last frame count as used.
            let tail = if (word + 1) * 64 > self.frames { !0u64 << (self.frames % 64) } else { 0 };
            let free = !(self.bitmap[word] | tail);
            if free != 0 {
                let bit = free.trailing_zeros() as usize;
                self.bitmap[word] |= 1 << bit;
                self.hint = word * 64;
                self.free -= 1;
                return Ok(self.base.add(((word * 64 + bit) as u64) * PAGE_SIZE));
            }
            // A free frame is known to exist: the search wraps once at most.
            word = if word + 1 == words { 0 } else { word + 1 };
        }
    }

    /// Gives back every frame of `frames`, or none if one of them is not
    /// allocated (or is listed twice).
    fn free_bulk(&mut self, frames: &[PhysAddr]) -> Result<(), FrameError> {
        for (i, &pa) in frames.iter().enumerate() {
            let frame = self.frame_of(pa)?;
            if !self.is_used(frame) {
                // Put back the ones already cleared: nothing is freed.
                for &earlier in &frames[..i] {
                    let f = self.frame_of(earlier).expect("checked above");
                    self.set_used(f, true);
                }
                return Err(FrameError::NotAllocated(pa));
            }
            self.set_used(frame, false);
        }
        self.free += frames.len();
        Ok(())
    }

    /// Would [`FrameAllocator::free_bulk`] take `frames` (every one
    /// allocated, none listed twice)? Changes nothing.
    fn check_bulk(&mut self, frames: &[PhysAddr]) -> Result<(), FrameError> {
        self.free_bulk(frames)?;
        for &pa in frames {
            let frame = self.frame_of(pa).expect("freed just above");
            self.set_used(frame, true);
        }
        self.free -= frames.len();
        Ok(())
    }

    /// The first frame of a run that is wholly allocated, or why not.
    fn check_allocated(&self, pa: PhysAddr, count: usize) -> Result<usize, FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        let first = self.frame_of(pa)?;
        let last = pa.checked_add((count as u64 - 1) * PAGE_SIZE).ok_or(FrameError::OutOfRange(pa))?;
        self.frame_of(last)?;
        if let Some(f) = (first..first + count).find(|&f| !self.is_used(f)) {
            return Err(FrameError::NotAllocated(self.base.add(f as u64 * PAGE_SIZE)));
        }
        Ok(first)
    }

    /// The runs of free frames, in address order.
    fn free_runs(&self) -> Vec<(PhysAddr, usize)> {
        let mut runs = Vec::new();
        let mut frame = 0;
        while frame < self.frames {
            if self.is_used(frame) {
                frame += 1;
                continue;
            }
            let start = frame;
            while frame < self.frames && !self.is_used(frame) {
                frame += 1;
            }
            runs.push((self.base.add(start as u64 * PAGE_SIZE), frame - start));
        }
        runs
    }

    fn free_run(&mut self, pa: PhysAddr, count: usize) -> Result<(), FrameError> {
        let first = self.check_allocated(pa, count)?;
        for f in first..first + count {
            self.set_used(f, false);
        }
        self.free += count;
        Ok(())
    }
}

static ALLOCATOR: IrqSpinLock<FrameAllocator> = IrqSpinLock::new(FrameAllocator::empty());

/// Hands RAM to the allocator, minus the `reserved` byte ranges.
pub(crate) fn init(base: PhysAddr, bytes: u64, reserved: &[(PhysAddr, u64)]) {
    ALLOCATOR.lock().init(base, bytes, reserved);
}

static ALLOCS_IN_LAZY_MODE: AtomicU64 = AtomicU64::new(0);
static LAZY_ALLOC_REPORTED: AtomicBool = AtomicBool::new(false);

/// The debug check of lazy MMU mode: a frame allocation inside an active
/// section is a bug waiting to happen (with debug_pagealloc the allocator
/// itself writes page tables, nesting a section the caller did not expect),
/// so each one is counted and the first is reported.
fn check_lazy_mode() {
    if lazy_mmu::is_lazy_mmu_mode_active() {
        ALLOCS_IN_LAZY_MODE.fetch_add(1, Relaxed);
        if !LAZY_ALLOC_REPORTED.swap(true, Relaxed) {
            println!(
                "frame_alloc: warning: frame allocated in lazy MMU mode (task {}); reported once",
                task::current().name
            );
        }
    }
}

/// Frame allocations made in lazy MMU mode so far.
pub fn allocations_in_lazy_mode() -> u64 {
    ALLOCS_IN_LAZY_MODE.load(Relaxed)
}

/// One frame.
pub fn alloc_frame() -> Result<PhysAddr, FrameError> {
    alloc_contiguous(1, PAGE_SIZE)
}

/// Requests since fault injection was armed, and the one that fails (0:
/// none). For tests: every allocation point of an operation can be made to
/// fail in turn. Debug builds only, as the planted bugs (`planted.rs`):
/// a release build counts nothing.
#[cfg(debug_assertions)]
static REQUESTS: AtomicU64 = AtomicU64::new(0);
#[cfg(debug_assertions)]
static FAIL_AT: AtomicU64 = AtomicU64::new(0);

/// Fault injection: the `k`-th frame request from now on (1 = the next)
/// fails with `OutOfMemory`, once; `None` disarms it. Counting restarts.
#[cfg(debug_assertions)]
pub fn fail_request(k: Option<u64>) {
    REQUESTS.store(0, Relaxed);
    FAIL_AT.store(k.unwrap_or(0), Relaxed);
}

/// Frame requests made since the last [`fail_request`].
#[cfg(debug_assertions)]
pub fn requests() -> u64 {
    REQUESTS.load(Relaxed)
}

/// Counts this request; true if fault injection says it fails.
#[cfg(debug_assertions)]
fn injected_failure() -> bool {
    let n = REQUESTS.fetch_add(1, Relaxed) + 1;
    n == FAIL_AT.load(Relaxed)
}

/// No fault injection in a release build.
#[cfg(not(debug_assertions))]
#[inline(always)]
const fn injected_failure() -> bool {
    false
}

/// `count` physically contiguous frames, the first aligned to `align` bytes.
/// Under `debug_pagealloc` they are mapped back into the linear map first.
pub fn alloc_contiguous(count: usize, align: u64) -> Result<PhysAddr, FrameError> {
    check_lazy_mode();
    if injected_failure() {
        return Err(FrameError::OutOfMemory);
    }
    let pa = ALLOCATOR.lock().alloc_run(count, align)?;
    if debug_pagealloc::enabled() {
        if debug_pagealloc::map_pages(pa, count).is_err() {
            // Nothing was mapped: the frames go straight back.
            ALLOCATOR.lock().free_run(pa, count).expect("allocated above");
            return Err(FrameError::OutOfMemory);
        }
        // The caller may touch the frames as soon as this returns, even
        // inside its own lazy MMU section: their mapping is owed now.
        pgtable_check::handed_over();
    }
    Ok(pa)
}

/// Gives back `count` frames starting at `pa`. All must be allocated, or
/// nothing is freed. Under `debug_pagealloc` they leave the linear map.
pub fn free_frames(pa: PhysAddr, count: usize) -> Result<(), FrameError> {
    ALLOCATOR.lock().check_allocated(pa, count)?;
    pgtable_check::frames_freed(pa, count);
    if debug_pagealloc::enabled() {
        debug_pagealloc::unmap_pages(pa, count);
    }
    ALLOCATOR.lock().free_run(pa, count)
}

/// `count` frames, not necessarily contiguous, appended to `frames` in one
/// request (Linux's `alloc_pages_bulk`): one lazy MMU check, one lock, a
/// word-at-a-time search. All or none: on an error `frames` is as it was.
/// Under `debug_pagealloc` each is mapped back into the linear map first.
pub fn alloc_frames_bulk<A: Allocator>(count: usize, frames: &mut Vec<PhysAddr, A>) -> Result<(), FrameError> {
    frames.try_reserve(count).map_err(|_| FrameError::OutOfMemory)?;
    let first = frames.len();
    frames.resize(first + count, PhysAddr::new(0));
    let allocated = alloc_frames_into(&mut frames[first..]);
    if allocated.is_err() {
        frames.truncate(first);
    }
    allocated
}

/// [`alloc_frames_bulk`] into a slice the caller has: as many frames as
/// it holds. One frame this way is a search from where the last one was
/// found, a word of the bitmap at a time ([`alloc_frame`] looks frame by
/// frame, from after the last frame it handed out, so a frame given back
/// behind it is found again only after a lap of memory).
pub(crate) fn alloc_frames_into(frames: &mut [PhysAddr]) -> Result<(), FrameError> {
    check_lazy_mode();
    if injected_failure() {
        return Err(FrameError::OutOfMemory);
    }
    if let [one] = frames {
        // (A 1-page vmalloc's: the search with nothing to count.)
        *one = ALLOCATOR.lock().alloc_one()?;
    } else {
        let mut next = frames.iter_mut();
        ALLOCATOR.lock().alloc_bulk(next.len(), |pa| *next.next().expect("as many as asked") = pa)?;
    }
    if debug_pagealloc::enabled() {
        let mapped = frames.iter().position(|&pa| debug_pagealloc::map_pages(pa, 1).is_err());
        if let Some(failed) = mapped {
            for &pa in &frames[..failed] {
                debug_pagealloc::unmap_pages(pa, 1);
            }
            ALLOCATOR.lock().free_bulk(frames).expect("allocated above");
            return Err(FrameError::OutOfMemory);
        }
        pgtable_check::handed_over();
    }
    Ok(())
}

/// One frame as [`alloc_frames_into`] finds it, with IRQs `masked` by
/// the caller, whose other locks of the same call share the mask (a
/// 1-page vmalloc's reservation). Not with `debug_pagealloc` on: the
/// frame's mapping is made there with IRQs as the caller had them.
pub(crate) fn alloc_frame_masked(masked: &IrqsMasked) -> Result<PhysAddr, FrameError> {
    debug_assert!(!debug_pagealloc::enabled(), "alloc_frames_into maps the frame");
    check_lazy_mode();
    if injected_failure() {
        return Err(FrameError::OutOfMemory);
    }
    ALLOCATOR.lock_masked(masked).alloc_one()
}

/// Gives back every frame of `frames` (from [`alloc_frames_bulk`] or any
/// other allocation) in one request: all must be allocated, or nothing is
/// freed. Under `debug_pagealloc` they leave the linear map.
pub fn free_frames_bulk(frames: &[PhysAddr]) -> Result<(), FrameError> {
    if !pgtable_check::enabled() && !debug_pagealloc::enabled() {
        // Nothing to tell and nothing to unmap first: one pass under the
        // lock, which checks each frame as it frees it and puts them all
        // back if one is not allocated.
        return ALLOCATOR.lock().free_bulk(frames);
    }
    // Checked whole (a frame listed twice included) before anything is
    // told or unmapped, so that a refused list changes nothing.
    ALLOCATOR.lock().check_bulk(frames)?;
    if pgtable_check::enabled() {
        for &pa in frames {
            pgtable_check::frames_freed(pa, 1);
        }
    }
    if debug_pagealloc::enabled() {
        for &pa in frames {
            debug_pagealloc::unmap_pages(pa, 1);
        }
    }
    ALLOCATOR.lock().free_bulk(frames)
}

/// The runs of free frames (address, frames), in address order.
pub(crate) fn free_runs() -> Vec<(PhysAddr, usize)> {
    ALLOCATOR.lock().free_runs()
}

pub fn free_frame(pa: PhysAddr) -> Result<(), FrameError> {
    free_frames(pa, 1)
}

/// Which frames are in use now, one bit each (for [`used_since`]): the
/// test harness's baseline (debug builds only).
#[cfg(debug_assertions)]
pub(crate) fn used_bitmap() -> Vec<u64> {
    let a = ALLOCATOR.lock();
    a.bitmap[..a.frames.div_ceil(64)].to_vec()
}

/// The frames in use now that were free in `earlier` (a [`used_bitmap`]).
#[cfg(debug_assertions)]
pub(crate) fn used_since(earlier: &[u64]) -> Vec<PhysAddr> {
    let a = ALLOCATOR.lock();
    let mut found = Vec::new();
    for (word, (&now, &then)) in a.bitmap.iter().zip(earlier).enumerate() {
        let mut new = now & !then;
        while new != 0 {
            let bit = new.trailing_zeros() as usize;
            new &= new - 1;
            found.push(a.base.add(((word * 64 + bit) as u64) * PAGE_SIZE));
        }
    }
    found
}

/// The RAM the allocator manages: its first frame and how many frames.
pub(crate) fn managed() -> (PhysAddr, usize) {
    let a = ALLOCATOR.lock();
    (a.base, a.frames)
}

pub fn stats() -> FrameStats {
    let a = ALLOCATOR.lock();
    FrameStats { total: a.frames, free: a.free, used: a.frames - a.free }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_case]
    fn alloc_then_free_restores_the_counts() {
        let before = stats();
        let pa = alloc_frame().unwrap();
        assert!(pa.is_aligned(PAGE_SIZE));
        assert_eq!(stats().used, before.used + 1);
        free_frame(pa).unwrap();
        assert_eq!(stats(), before);
    }

    #[test_case]
    fn freeing_twice_is_an_error_and_changes_nothing() {
        let pa = alloc_frame().unwrap();
        free_frame(pa).unwrap();
        let before = stats();
        assert_eq!(free_frame(pa), Err(FrameError::NotAllocated(pa)));
        assert_eq!(stats(), before);
    }

    #[test_case]
    fn freeing_a_run_with_one_free_frame_frees_nothing() {
        let pa = alloc_contiguous(4, PAGE_SIZE).unwrap();
        free_frame(pa.add(2 * PAGE_SIZE)).unwrap();
        let before = stats();
        assert_eq!(free_frames(pa, 4), Err(FrameError::NotAllocated(pa.add(2 * PAGE_SIZE))));
        assert_eq!(stats(), before);
        free_frames(pa, 2).unwrap();
        free_frame(pa.add(3 * PAGE_SIZE)).unwrap();
    }

    #[test_case]
    fn contiguous_runs_are_aligned_and_disjoint() {
        let before = stats();
        let a = alloc_contiguous(512, 2 << 20).unwrap();
        let b = alloc_contiguous(3, 64 << 10).unwrap();
        assert!(a.is_aligned(2 << 20), "{a:?} is not 2 MiB aligned");
        assert!(b.is_aligned(64 << 10), "{b:?} is not 64 KiB aligned");
        assert!(b.as_u64() >= a.as_u64() + 512 * PAGE_SIZE || b.as_u64() + 3 * PAGE_SIZE <= a.as_u64());
        assert_eq!(stats().used, before.used + 515);
        free_frames(a, 512).unwrap();
        free_frames(b, 3).unwrap();
        assert_eq!(stats(), before);
    }

    #[test_case]
    fn bad_requests_are_typed_errors() {
        let before = stats();
        assert_eq!(alloc_contiguous(0, PAGE_SIZE), Err(FrameError::ZeroCount));
        assert_eq!(alloc_contiguous(1, 3 * PAGE_SIZE), Err(FrameError::BadAlignment(3 * PAGE_SIZE)));
        assert_eq!(alloc_contiguous(1, 512), Err(FrameError::BadAlignment(512)));
        assert_eq!(alloc_contiguous(before.total + 1, PAGE_SIZE), Err(FrameError::OutOfMemory));
        let outside = PhysAddr::new(0x1000);
        assert_eq!(free_frame(outside), Err(FrameError::OutOfRange(outside)));
        assert_eq!(stats(), before);
    }

    #[test_case]
    fn bulk_frames_are_distinct_and_come_back_whole() {
        let before = stats();
        let mut frames = Vec::from([PhysAddr::new(0x1234_5000)]);
        alloc_frames_bulk(300, &mut frames).unwrap();
        assert_eq!(frames.len(), 301, "appended after what was there");
        assert_eq!(stats().used, before.used + 300);
        let mut sorted = frames[1..].to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 300, "300 distinct frames");
        assert!(sorted.iter().all(|pa| pa.is_aligned(PAGE_SIZE)));
        // A list naming one frame twice frees nothing.
        let twice = [frames[1], frames[2], frames[1]];
        assert_eq!(free_frames_bulk(&twice), Err(FrameError::NotAllocated(frames[1])));
        assert_eq!(stats().used, before.used + 300);
        free_frames_bulk(&frames[1..]).unwrap();
        assert_eq!(stats(), before);
        // Bad requests change nothing.
        assert_eq!(alloc_frames_bulk(0, &mut frames), Err(FrameError::ZeroCount));
        assert_eq!(alloc_frames_bulk(before.free + 1, &mut frames), Err(FrameError::OutOfMemory));
        assert_eq!(frames.len(), 301);
        assert_eq!(free_frames_bulk(&frames[1..2]), Err(FrameError::NotAllocated(frames[1])));
        assert_eq!(stats(), before);
    }

    #[test_case]
    fn bulk_allocation_can_take_every_free_frame() {
        let before = stats();
        let mut frames = Vec::new();
        alloc_frames_bulk(before.free, &mut frames).unwrap();
        assert_eq!(stats().free, 0);
        assert_eq!(alloc_frame(), Err(FrameError::OutOfMemory));
        free_frames_bulk(&frames).unwrap();
        assert_eq!(stats(), before);
    }

    #[test_case]
    fn exhaustion_returns_out_of_memory_and_recovers() {
        let before = stats();
        let mut frames = Vec::with_capacity(before.free);
        loop {
            match alloc_frame() {
                Ok(pa) => frames.push(pa),
                Err(e) => {
                    assert_eq!(e, FrameError::OutOfMemory);
                    break;
                }
            }
        }
        assert_eq!(frames.len(), before.free);
        assert_eq!(stats().free, 0);
        assert_eq!(alloc_contiguous(1, PAGE_SIZE), Err(FrameError::OutOfMemory));
        for pa in frames {
            free_frame(pa).unwrap();
        }
        assert_eq!(stats(), before);
    }
}
