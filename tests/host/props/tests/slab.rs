//! The slab allocator (`mm/slab.rs`) over frames of host memory, against
//! a model of the objects handed out: every object is distinct, aligned,
//! inside a frame the cache holds and holds what its owner wrote until it
//! is given back; the cache holds exactly as many frames as the model's
//! slabs (full ones, ones with room, and at most one empty one, kept only
//! while no other slab has room); and the lock (`sync.rs`) leaves IRQs as
//! it found them. Also: a lock wait that cannot end reports itself once.

#![feature(allocator_api)]

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard, OnceLock};

use lazymmu_props::addr::PhysAddr;
use lazymmu_props::frame_alloc::{self, FrameError};
use lazymmu_props::host::{self, Event};
use lazymmu_props::slab::{Kmalloc, KmemCache};
use lazymmu_props::sync::{self, IrqSpinLock};
use proptest::prelude::*;
use std::alloc::Allocator;

const FRAMES: usize = 64;
const PAGE: usize = 4096;
/// The slab header's room at the start of each frame.
const HEADER: usize = 32;

fn ram() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    static RAM: OnceLock<PhysAddr> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    RAM.get_or_init(|| host::init_ram(FRAMES, 0, &|_| vec![]));
    turn
}

#[derive(Clone, Debug)]
enum Op {
    Alloc,
    /// Frees the live object at this index (modulo the count).
    Free(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(prop_oneof![3 => Just(Op::Alloc), 2 => any::<usize>().prop_map(Op::Free)], 1..200)
}

/// The frames in use outside the cache's (none: the test allocates no
/// other): what the cache holds.
fn frames_held() -> usize {
    frame_alloc::stats().used
}

fn check(size: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    // A cache of its own: it starts with no slab.
    let cache: &'static KmemCache = Box::leak(Box::new(KmemCache::new(size)));
    let per_slab = (PAGE - HEADER) / size;
    let start = frames_held();
    // Live objects: address -> the tag written into it.
    let mut live: BTreeMap<usize, u64> = BTreeMap::new();
    let mut tag = 0u64;
    for op in ops {
        match *op {
            Op::Alloc => {
                let Ok(object) = cache.alloc() else {
                    prop_assert_eq!(frame_alloc::stats().free, 0, "out of memory with frames free");
                    continue;
                };
                let a = object.as_ptr() as usize;
                prop_assert!(a.is_multiple_of(16));
                prop_assert!(
                    (a % PAGE) >= HEADER && (a % PAGE - HEADER).is_multiple_of(size),
                    "object {:#x} off the grid",
                    a
                );
                prop_assert!((a % PAGE - HEADER) / size < per_slab);
                for (&b, _) in live.range(a.saturating_sub(size - 1)..a + size) {
                    prop_assert!(false, "object {:#x} overlaps live object {:#x}", a, b);
                }
                tag += 1;
                // The whole object is the owner's: fill it.
                unsafe { std::slice::from_raw_parts_mut(a as *mut u64, size / 8).fill(tag) };
                live.insert(a, tag);
            }
            Op::Free(i) => {
                if live.is_empty() {
                    continue;
                }
                let (&a, &t) = live.iter().nth(i % live.len()).unwrap();
                let words = unsafe { std::slice::from_raw_parts(a as *const u64, size / 8) };
                prop_assert!(words.iter().all(|&w| w == t), "object {:#x} changed while live", a);
                unsafe { cache.free(NonNull::new(a as *mut u8).unwrap()) };
                live.remove(&a);
            }
        }
        // The model's slabs: each frame with live objects, plus at most
        // one empty slab, kept only when no frame with objects has room.
        let mut per_frame: BTreeMap<usize, usize> = BTreeMap::new();
        for &a in live.keys() {
            *per_frame.entry(a / PAGE).or_default() += 1;
        }
        let used = per_frame.len();
        let room = per_frame.values().any(|&n| n < per_slab);
        let held = frames_held() - start;
        if room {
            prop_assert_eq!(held, used, "an empty slab is kept while another has room");
        } else {
            prop_assert!(held == used || held == used + 1, "{} frames held for {} slabs with objects", held, used);
        }
        prop_assert!(!host::irqs_masked());
    }
    for (&a, _) in live.iter() {
        unsafe { cache.free(NonNull::new(a as *mut u8).unwrap()) };
    }
    // One empty slab stays (the cache's only one).
    let held = frames_held() - start;
    prop_assert!(held <= 1, "{} frames held with no object", held);
    if held == 1 {
        // Its frame is handed out again, not a new one, first.
        let again = cache.alloc().unwrap();
        prop_assert_eq!(frames_held() - start, 1);
        unsafe { cache.free(again) };
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn slab_caches_match_the_model(size in prop_oneof![Just(16usize), Just(48), Just(192), Just(1024), Just(2016)], ops in ops()) {
        let _turn = ram();
        let before = frames_held();
        let result = check(size, &ops);
        // A failed case leaks its cache's frames; the next case starts over.
        let _ = before;
        result?;
    }
}

#[test]
fn a_slab_is_filled_lowest_object_first_and_a_new_frame_only_when_full() {
    let _turn = ram();
    let cache: &'static KmemCache = Box::leak(Box::new(KmemCache::new(1024)));
    let start = frames_held();
    // 4064 bytes past the header: three 1 KiB objects per slab.
    let objects: Vec<NonNull<u8>> = (0..4).map(|_| cache.alloc().unwrap()).collect();
    let base = objects[0].as_ptr() as usize & !(PAGE - 1);
    let offsets: Vec<usize> = objects[..3].iter().map(|o| o.as_ptr() as usize - base).collect();
    assert_eq!(offsets, [HEADER, HEADER + 1024, HEADER + 2048]);
    assert_eq!(frames_held() - start, 2);
    assert_eq!(objects[3].as_ptr() as usize % PAGE, HEADER);
    // The last object of the second slab back: the slab empties but is
    // the first with room... the first slab is full, so it stays.
    unsafe { cache.free(objects[3]) };
    assert_eq!(frames_held() - start, 2);
    // One of the first slab's back: it has room now, so the empty one goes.
    unsafe { cache.free(objects[1]) };
    assert_eq!(frames_held() - start, 1);
    // The freed object is the next handed out.
    let again = cache.alloc().unwrap();
    assert_eq!(again, objects[1]);
    for o in [objects[0], again, objects[2]] {
        unsafe { cache.free(o) };
    }
    assert_eq!(frames_held() - start, 1);
}

#[test]
fn out_of_frames_is_an_alloc_error_and_nothing_leaks() {
    let _turn = ram();
    let cache: &'static KmemCache = Box::leak(Box::new(KmemCache::new(2016)));
    let free = frame_alloc::stats().free;
    frame_alloc::fail_request(Some(1));
    assert!(cache.alloc().is_err());
    frame_alloc::fail_request(None);
    assert_eq!(frame_alloc::stats().free, free);
    assert_eq!(host::take_events(), vec![]);
    // Every frame taken: the cache's next slab cannot be had.
    let mut all = Vec::new();
    frame_alloc::alloc_frames_bulk(free, &mut all).unwrap();
    assert!(cache.alloc().is_err());
    assert_eq!(frame_alloc::alloc_frame(), Err(FrameError::OutOfMemory));
    frame_alloc::free_frames_bulk(&all).unwrap();
}

#[test]
fn kmalloc_picks_the_smallest_class_and_the_heap_above_1k() {
    let _turn = ram();
    for (size, align, class) in [(1, 1, 16), (17, 8, 32), (65, 16, 96), (100, 4, 128), (1000, 16, 1024)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        let object = Kmalloc.allocate(layout).unwrap();
        assert_eq!(object.len(), class, "size {size}");
        let a = object.as_ptr() as *mut u8 as usize;
        assert!((a % PAGE - HEADER).is_multiple_of(class), "a {class}-byte object of its slab");
        unsafe { Kmalloc.deallocate(object.cast(), layout) };
    }
    // Above 1 KiB, or aligned above 16: the heap's, not a slab's.
    for layout in [Layout::from_size_align(1025, 8).unwrap(), Layout::from_size_align(64, 32).unwrap()] {
        let before = frame_alloc::stats();
        let object = Kmalloc.allocate(layout).unwrap();
        assert_eq!(object.len(), layout.size());
        assert_eq!(frame_alloc::stats(), before, "{layout:?} took a frame");
        unsafe { Kmalloc.deallocate(object.cast(), layout) };
    }
}

#[test]
fn irq_spin_lock_masks_irqs_while_held_and_restores_them() {
    let lock = IrqSpinLock::new(5);
    host::take_irq_saves();
    assert!(!host::irqs_masked());
    {
        let mut guard = lock.lock();
        *guard += 1;
        assert!(host::irqs_masked());
        // A second lock inside: masked still after the inner one goes.
        let other = IrqSpinLock::new(());
        drop(other.lock());
        assert!(host::irqs_masked());
    }
    assert!(!host::irqs_masked());
    assert_eq!(host::take_irq_saves(), 2);
    assert_eq!(*lock.lock(), 6);
}

#[test]
fn a_lock_wait_that_cannot_end_reports_once_and_goes_on_waiting() {
    static LOCK: IrqSpinLock<u32> = IrqSpinLock::new(0);
    let held = LOCK.lock();
    let before = sync::lock_wait_reports();
    let waiter = std::thread::spawn(|| {
        *LOCK.lock() += 1;
        host::take_events()
    });
    // Past the report's deadline, and a little more: one report only.
    std::thread::sleep(std::time::Duration::from_millis(sync::LOCK_WAIT_REPORT_S * 1000 + 300));
    drop(held);
    let events = waiter.join().unwrap();
    assert_eq!(sync::lock_wait_reports() - before, 1);
    assert_eq!(*LOCK.lock(), 1);
    let [Event::Emergency(report)] = &events[..] else { panic!("{events:?}") };
    assert!(
        report.starts_with("\n*** lock wait: lazymmu_props::sync::IrqSpinLock<u32> not taken after 2 s (1 holder(s)), waiting at tests/slab.rs:"),
        "{report}"
    );
    assert!(report.ends_with("(cpu 0, task host); still waiting ***\n"), "{report}");
}

#[test]
fn kmalloc_bulk_fills_every_slot_with_distinct_objects_or_gives_all_back() {
    let _turn = ram();
    for (size, class) in [(40, 64), (1000, 1024), (1500, 0)] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let before = frame_alloc::stats().free;
        let mut objects = [NonNull::<u8>::dangling(); 9];
        lazymmu_props::internal::kmalloc_bulk(layout, &mut objects).unwrap();
        let mut addresses: Vec<usize> = objects.iter().map(|o| o.as_ptr() as usize).collect();
        addresses.sort_unstable();
        addresses.dedup();
        assert_eq!(addresses.len(), 9, "nine distinct objects of {size} bytes");
        if class > 0 {
            for &a in &addresses {
                assert!((a % PAGE - HEADER).is_multiple_of(class), "a {class}-byte object of its slab");
            }
        }
        for o in objects {
            unsafe { Kmalloc.deallocate(o, layout) };
        }
        // Given back: the caches keep at most the slabs they kept before.
        assert!(frame_alloc::stats().free + 1 >= before, "{size}: frames kept");
    }
    // 1 KiB objects, three to a slab: nine need new slabs; the second new
    // slab's frame refused, so every object taken goes back.
    let layout = Layout::from_size_align(1000, 8).unwrap();
    let free = frame_alloc::stats().free;
    let mut objects = [NonNull::<u8>::dangling(); 9];
    frame_alloc::fail_request(Some(2));
    assert!(lazymmu_props::internal::kmalloc_bulk(layout, &mut objects).is_err());
    frame_alloc::fail_request(None);
    assert!(frame_alloc::stats().free + 1 >= free, "no more than the one kept slab");
    // And then the same request succeeds with the same frames free again.
    lazymmu_props::internal::kmalloc_bulk(layout, &mut objects).unwrap();
    for o in objects {
        unsafe { Kmalloc.deallocate(o, layout) };
    }
}
