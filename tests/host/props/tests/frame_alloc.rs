//! The frame allocator (`mm/frame_alloc.rs`) over host memory, against a
//! model of which frames are in use: every answer is the model's (first
//! fit for runs, exact error variants in the kernel's order of checks), a
//! refused call changes nothing, no frame is handed out twice, the free
//! runs and statistics are the model's after every call, and under
//! debug_pagealloc and the checker each frame is mapped back, unmapped and
//! told exactly once, in order.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, OnceLock};

use lazymmu_props::addr::PhysAddr;
use lazymmu_props::frame_alloc::{self, FrameError, FrameStats};
use lazymmu_props::host::{self, Event};
use lazymmu_props::internal;
use proptest::prelude::*;

const FRAMES: usize = 300;
/// RAM starts 5 frames past a 2 MiB boundary: aligned runs start later.
const OFFSET: usize = 5;
const PAGE: u64 = 4096;

struct Ram {
    base: PhysAddr,
    /// Frames reserved at init (the model's starting point).
    reserved: BTreeSet<usize>,
    /// The bitmap right after init.
    baseline: Vec<u64>,
}

/// One allocator per process: the tests take turns.
fn ram() -> (MutexGuard<'static, ()>, &'static Ram) {
    static TURN: Mutex<()> = Mutex::new(());
    static RAM: OnceLock<Ram> = OnceLock::new();
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let ram = RAM.get_or_init(|| {
        // Reserved: frame 0 whole, part of frame 7 (the whole frame goes),
        // frames 40..43 from a range that starts inside 40, and a range
        // outside RAM (ignored).
        let base = host::init_ram(FRAMES, OFFSET, &|base| {
            vec![
                (base, PAGE),
                (base.add(7 * PAGE + 100), 8),
                (base.add(40 * PAGE + 12), 2 * PAGE),
                (PhysAddr::new(0x1000), PAGE),
            ]
        });
        Ram { base, reserved: [0, 7, 40, 41, 42].into_iter().collect(), baseline: internal::used_bitmap() }
    });
    (turn, ram)
}

/// The model: frames in use, by index.
#[derive(Clone, Debug)]
struct Model {
    base: u64,
    used: BTreeSet<usize>,
    /// Where the next single-frame search starts, once the model knows
    /// (the allocator's is left by earlier tests).
    hint: Option<usize>,
}

impl Model {
    fn pa(&self, frame: usize) -> PhysAddr {
        PhysAddr::new(self.base + frame as u64 * PAGE)
    }

    fn frame_of(&self, pa: PhysAddr) -> Result<usize, FrameError> {
        let a = pa.as_u64();
        if a < self.base || !a.is_multiple_of(PAGE) || (a - self.base) / PAGE >= FRAMES as u64 {
            return Err(FrameError::OutOfRange(pa));
        }
        Ok(((a - self.base) / PAGE) as usize)
    }

    fn stats(&self) -> FrameStats {
        FrameStats { total: FRAMES, free: FRAMES - self.used.len(), used: self.used.len() }
    }

    /// First fit, the lowest `align`-aligned start of `count` free frames;
    /// next fit for one frame (from the hint, then from the start). None:
    /// a frame the model cannot name (the hint is not known yet).
    fn alloc_run(&self, count: usize, align: u64) -> Result<Option<usize>, FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        if !align.is_power_of_two() || align < PAGE {
            return Err(FrameError::BadAlignment(align));
        }
        if count > FRAMES - self.used.len() {
            return Err(FrameError::OutOfMemory);
        }
        if count == 1 && align == PAGE {
            let Some(hint) = self.hint else { return Ok(None) };
            let free = |f: &usize| !self.used.contains(f);
            return Ok(Some((hint..FRAMES).find(free).or_else(|| (0..FRAMES).find(free)).expect("one is free")));
        }
        (0..FRAMES)
            .filter(|&f| self.pa(f).as_u64().is_multiple_of(align) && f + count <= FRAMES)
            .find(|&f| (f..f + count).all(|g| !self.used.contains(&g)))
            .map(Some)
            .ok_or(FrameError::OutOfMemory)
    }

    /// The frames `alloc_frames_bulk(count)` hands out, in order: from the
    /// hint's word of the bitmap on, wrapping once, lowest bit first.
    fn bulk(&self, count: usize) -> Option<Vec<usize>> {
        let words = FRAMES.div_ceil(64);
        let start = (self.hint? / 64).min(words - 1);
        let order = (start..words).chain(0..start).flat_map(|w| w * 64..((w + 1) * 64).min(FRAMES));
        Some(order.filter(|f| !self.used.contains(f)).take(count).collect())
    }

    /// `free_frames(pa, count)`'s verdict, in the kernel's order of checks.
    fn check_free(&self, pa: PhysAddr, count: usize) -> Result<usize, FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        let first = self.frame_of(pa)?;
        let last = pa.as_u64().checked_add((count as u64 - 1) * PAGE).ok_or(FrameError::OutOfRange(pa))?;
        self.frame_of(PhysAddr::new(last))?;
        match (first..first + count).find(|f| !self.used.contains(f)) {
            Some(f) => Err(FrameError::NotAllocated(self.pa(f))),
            None => Ok(first),
        }
    }

    /// `free_frames_bulk(list)`'s verdict: the first frame out of RAM, not
    /// allocated, or listed a second time.
    fn check_bulk(&self, list: &[PhysAddr]) -> Result<Vec<usize>, FrameError> {
        let mut seen = BTreeSet::new();
        let mut frames = Vec::new();
        for &pa in list {
            let f = self.frame_of(pa)?;
            if !self.used.contains(&f) || !seen.insert(f) {
                return Err(FrameError::NotAllocated(pa));
            }
            frames.push(f);
        }
        Ok(frames)
    }

    /// The free runs, as `free_runs` lists them.
    fn free_runs(&self) -> Vec<(PhysAddr, usize)> {
        let mut runs: Vec<(PhysAddr, usize)> = Vec::new();
        for f in (0..FRAMES).filter(|f| !self.used.contains(f)) {
            match runs.last_mut() {
                Some((start, len)) if self.frame_of(*start).unwrap() + *len == f => *len += 1,
                _ => runs.push((self.pa(f), 1)),
            }
        }
        runs
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// `alloc_contiguous(count, 1 << align_log)`, or an odd alignment.
    Run { count: usize, align: u64 },
    /// `alloc_frame()`.
    One,
    /// `alloc_frames_bulk(count)`.
    Bulk { count: usize },
    /// `free_frames` of part of live allocation `which`: `skip` frames in,
    /// `count` frames (past its end: some not allocated).
    Free { which: usize, skip: usize, count: usize },
    /// `free_frames` of an address that is not a frame of RAM.
    FreeBogus { pa: u64, count: usize },
    /// `free_frames_bulk` of some live single frames, maybe one twice, or
    /// one already free.
    FreeBulk { which: Vec<usize>, twice: bool, stale: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let align = prop_oneof![
        4 => (12u32..=17).prop_map(|l| 1u64 << l),
        1 => prop_oneof![Just(0u64), Just(2048), Just(3 * PAGE), Just(1 << 11)],
    ];
    prop_oneof![
        4 => (0usize..24, align).prop_map(|(count, align)| Op::Run { count, align }),
        3 => Just(Op::One),
        3 => (0usize..40).prop_map(|count| Op::Bulk { count }),
        5 => (any::<usize>(), 0usize..4, 0usize..6).prop_map(|(which, skip, count)| Op::Free { which, skip, count }),
        1 => (any::<u64>(), 1usize..3).prop_map(|(pa, count)| Op::FreeBogus { pa, count }),
        3 => (prop::collection::vec(any::<usize>(), 0..6), any::<bool>(), any::<bool>())
            .prop_map(|(which, twice, stale)| Op::FreeBulk { which, twice, stale }),
    ]
}

/// Runs `ops` against the allocator and the model; every frame taken is
/// given back at the end (the allocator is shared by the process's tests).
fn run(ram: &Ram, ops: &[Op], debug_pagealloc: bool, checker: bool) -> Result<(), TestCaseError> {
    // What a failed case left (the shrinking runs it again): given back.
    frame_alloc::free_frames_bulk(&internal::used_since(&ram.baseline)).ok();
    let mut model = Model { base: ram.base.as_u64(), used: ram.reserved.clone(), hint: None };
    prop_assert_eq!(frame_alloc::stats(), model.stats());
    host::set_debug_pagealloc(debug_pagealloc);
    host::set_checker(checker);
    host::take_events();
    // Live allocations: (first frame, frames).
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut freed_singles: Vec<PhysAddr> = Vec::new();
    for op in ops {
        let before = frame_alloc::stats();
        match *op {
            Op::Run { count, align } => {
                let want = model.alloc_run(count, align);
                let got = frame_alloc::alloc_contiguous(count, align);
                match want {
                    Ok(Some(f)) => prop_assert_eq!(got, Ok(model.pa(f)), "alloc_contiguous({}, {:#x})", count, align),
                    Ok(None) => prop_assert!(got.is_ok()),
                    Err(e) => prop_assert_eq!(got, Err(e), "alloc_contiguous({}, {:#x})", count, align),
                }
                let want = got.map(|pa| model.frame_of(pa).expect("in RAM"));
                if let Ok(f) = want {
                    for g in f..f + count {
                        prop_assert!(model.used.insert(g), "frame {} handed out twice", g);
                    }
                    live.push((f, count));
                    if count == 1 {
                        model.hint = Some(f + 1);
                    }
                }
                let events = host::take_events();
                if debug_pagealloc && let Ok(f) = want {
                    prop_assert_eq!(
                        events,
                        vec![Event::MapBack { pa: model.pa(f), count, failed: false }, Event::HandedOver]
                    );
                } else {
                    prop_assert_eq!(events, vec![]);
                }
            }
            Op::One => {
                let want = model.alloc_run(1, PAGE);
                let got = frame_alloc::alloc_frame();
                match want {
                    Ok(Some(f)) => prop_assert_eq!(got, Ok(model.pa(f)), "alloc_frame()"),
                    Ok(None) => prop_assert!(got.is_ok()),
                    Err(e) => prop_assert_eq!(got, Err(e)),
                }
                if let Ok(pa) = got {
                    let f = model.frame_of(pa).expect("in RAM");
                    prop_assert!(model.used.insert(f), "frame {} handed out twice", f);
                    live.push((f, 1));
                    model.hint = Some(f + 1);
                }
                host::take_events();
            }
            Op::Bulk { count } => {
                let mut frames = vec![PhysAddr::new(1)];
                let got = frame_alloc::alloc_frames_bulk(count, &mut frames);
                if count == 0 {
                    prop_assert_eq!(got, Err(FrameError::ZeroCount));
                } else if count > FRAMES - model.used.len() {
                    prop_assert_eq!(got, Err(FrameError::OutOfMemory));
                } else {
                    prop_assert_eq!(got, Ok(()));
                }
                if got.is_err() {
                    prop_assert_eq!(&frames, &vec![PhysAddr::new(1)], "a refused bulk request leaves the list");
                } else {
                    prop_assert_eq!(frames.len(), count + 1);
                    if let Some(want) = model.bulk(count) {
                        let want: Vec<PhysAddr> = want.into_iter().map(|f| model.pa(f)).collect();
                        prop_assert_eq!(&frames[1..], &want[..], "alloc_frames_bulk({})", count);
                    }
                    let last = model.frame_of(*frames.last().unwrap()).expect("in RAM");
                    model.hint = Some(last / 64 * 64);
                    for &pa in &frames[1..] {
                        let f = model.frame_of(pa).expect("in RAM");
                        prop_assert!(model.used.insert(f), "frame {} handed out twice", f);
                        live.push((f, 1));
                    }
                }
                let events = host::take_events();
                if debug_pagealloc && got.is_ok() {
                    let mut want: Vec<Event> =
                        frames[1..].iter().map(|&pa| Event::MapBack { pa, count: 1, failed: false }).collect();
                    want.push(Event::HandedOver);
                    prop_assert_eq!(events, want);
                } else {
                    prop_assert_eq!(events, vec![]);
                }
            }
            Op::Free { which, skip, count } => {
                if live.is_empty() {
                    continue;
                }
                let i = which % live.len();
                let (first, len) = live[i];
                let pa = model.pa(first + skip.min(len - 1));
                let want = model.check_free(pa, count);
                if want.is_ok_and(|f| f + count > first + len) {
                    // Into the next allocation: the bookkeeping of `live`
                    // would not follow.
                    continue;
                }
                let got = frame_alloc::free_frames(pa, count);
                prop_assert_eq!(got, want.map(|_| ()), "free_frames({:?}, {})", pa, count);
                let events = host::take_events();
                if let Ok(f) = want {
                    for g in f..f + count {
                        model.used.remove(&g);
                    }
                    // What is left of the allocation stays live, in pieces.
                    live.swap_remove(i);
                    if f > first {
                        live.push((first, f - first));
                    }
                    if f + count < first + len {
                        live.push((f + count, first + len - f - count));
                    }
                    let mut want = vec![Event::FramesFreed { pa, count }];
                    if debug_pagealloc {
                        want.push(Event::Unmap { pa, count });
                    }
                    prop_assert_eq!(events, want);
                } else {
                    prop_assert_eq!(events, vec![]);
                }
            }
            Op::FreeBogus { pa, count } => {
                let pa = PhysAddr::new(pa);
                let want = model.check_free(pa, count);
                if want.is_ok() {
                    // A random address that is a live frame (unlikely).
                    continue;
                }
                prop_assert_eq!(frame_alloc::free_frames(pa, count), want.map(|_| ()));
                prop_assert_eq!(host::take_events(), vec![]);
            }
            Op::FreeBulk { ref which, twice, stale } => {
                let singles: Vec<usize> =
                    live.iter().enumerate().filter(|(_, (_, len))| *len == 1).map(|(i, _)| i).collect();
                let mut picks: Vec<usize> = Vec::new();
                if !singles.is_empty() {
                    for w in which {
                        let i = singles[w % singles.len()];
                        if !picks.contains(&i) {
                            picks.push(i);
                        }
                    }
                }
                let mut list: Vec<PhysAddr> = picks.iter().map(|&i| model.pa(live[i].0)).collect();
                if twice && !list.is_empty() {
                    list.push(list[0]);
                }
                if stale
                    && let Some(&pa) = freed_singles.last()
                    && !model.used.contains(&model.frame_of(pa).expect("in RAM"))
                {
                    list.insert(list.len() / 2, pa);
                }
                let want = model.check_bulk(&list);
                let got = frame_alloc::free_frames_bulk(&list);
                prop_assert_eq!(got, want.as_ref().map(|_| ()).map_err(|e| *e), "free_frames_bulk({:?})", &list);
                let events = host::take_events();
                if let Ok(frames) = want {
                    for f in &frames {
                        model.used.remove(f);
                    }
                    picks.sort_unstable();
                    for &i in picks.iter().rev() {
                        live.swap_remove(i);
                    }
                    freed_singles.extend(&list);
                    let mut want: Vec<Event> = Vec::new();
                    if checker {
                        want.extend(list.iter().map(|&pa| Event::FramesFreed { pa, count: 1 }));
                    }
                    if debug_pagealloc {
                        want.extend(list.iter().map(|&pa| Event::Unmap { pa, count: 1 }));
                    }
                    prop_assert_eq!(events, want);
                } else {
                    prop_assert_eq!(events, vec![]);
                }
            }
        }
        let after = frame_alloc::stats();
        prop_assert_eq!(after, model.stats(), "after {:?} (before: {:?})", op, before);
        prop_assert_eq!(internal::free_runs(), model.free_runs());
        prop_assert!(!host::irqs_masked(), "the allocator's lock left IRQs masked");
    }
    // Everything back: the allocator is as it started.
    for &(first, len) in &live {
        frame_alloc::free_frames(model.pa(first), len).expect("live");
    }
    host::take_events();
    prop_assert_eq!(frame_alloc::stats(), Model { used: ram.reserved.clone(), ..model }.stats());
    host::set_debug_pagealloc(false);
    host::set_checker(false);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn frame_allocator_matches_the_model(ops in prop::collection::vec(op(), 1..60), dpa: bool, checker: bool) {
        let (_turn, ram) = ram();
        run(ram, &ops, dpa, checker)?;
    }
}

#[test]
fn init_reserves_whole_frames_and_manages_what_it_was_given() {
    let (_turn, ram) = ram();
    assert_eq!(internal::managed(), (ram.base, FRAMES));
    assert_eq!(frame_alloc::stats(), FrameStats { total: FRAMES, free: FRAMES - 5, used: 5 });
    let runs = internal::free_runs();
    let base = ram.base.as_u64();
    let at = |f: u64| PhysAddr::new(base + f * PAGE);
    assert_eq!(runs, vec![(at(1), 6), (at(8), 32), (at(43), FRAMES - 43)]);
}

#[test]
fn aligned_runs_start_at_aligned_addresses_though_ram_does_not() {
    let (_turn, ram) = ram();
    // 64 KiB alignment: RAM starts 5 frames past a 2 MiB boundary, so the
    // first aligned frame is frame 11 (5 + 11 = 16 frames = 64 KiB).
    let pa = frame_alloc::alloc_contiguous(4, 64 << 10).unwrap();
    assert_eq!(pa, ram.base.add(11 * PAGE));
    assert!(pa.as_u64().is_multiple_of(64 << 10));
    // The next 64 KiB run skips past it: frame 27.
    let pb = frame_alloc::alloc_contiguous(1, 64 << 10).unwrap();
    assert_eq!(pb, ram.base.add(27 * PAGE));
    frame_alloc::free_frames(pa, 4).unwrap();
    frame_alloc::free_frame(pb).unwrap();
    // A 2 MiB-aligned frame: none in 300 frames past the boundary but the
    // one 2 MiB further on (frame 507) is outside RAM.
    assert_eq!(frame_alloc::alloc_contiguous(1, 2 << 20), Err(FrameError::OutOfMemory));
}

#[test]
fn exhaustion_is_out_of_memory_and_frees_make_room_again() {
    let (_turn, _ram) = ram();
    let free = frame_alloc::stats().free;
    let mut all = Vec::new();
    frame_alloc::alloc_frames_bulk(free, &mut all).unwrap();
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), free, "no frame twice");
    assert_eq!(frame_alloc::stats().free, 0);
    assert_eq!(frame_alloc::alloc_frame(), Err(FrameError::OutOfMemory));
    assert_eq!(frame_alloc::alloc_contiguous(1, 1 << 16), Err(FrameError::OutOfMemory));
    let mut more = Vec::new();
    assert_eq!(frame_alloc::alloc_frames_bulk(1, &mut more), Err(FrameError::OutOfMemory));
    // One back: exactly that one is found again, by both searches.
    let back = all.swap_remove(17);
    frame_alloc::free_frame(back).unwrap();
    assert_eq!(frame_alloc::alloc_frame(), Ok(back));
    frame_alloc::free_frame(back).unwrap();
    frame_alloc::alloc_frames_bulk(1, &mut more).unwrap();
    assert_eq!(more, vec![back]);
    all.push(back);
    frame_alloc::free_frames_bulk(&all).unwrap();
    assert_eq!(frame_alloc::stats().free, free);
}

#[test]
fn debug_pagealloc_failures_give_the_frames_back() {
    let (_turn, _ram) = ram();
    let before = frame_alloc::stats();
    host::set_debug_pagealloc(true);
    host::take_events();
    // A run whose map-back fails: out of memory, nothing kept.
    host::fail_map_back(Some(1));
    assert_eq!(frame_alloc::alloc_contiguous(3, PAGE), Err(FrameError::OutOfMemory));
    let events = host::take_events();
    assert!(matches!(events[..], [Event::MapBack { count: 3, failed: true, .. }]), "{events:?}");
    assert_eq!(frame_alloc::stats(), before);
    // A bulk request whose third map-back fails: the two before it are
    // unmapped again, in order, and every frame goes back.
    host::fail_map_back(Some(3));
    let mut frames = Vec::new();
    assert_eq!(frame_alloc::alloc_frames_bulk(5, &mut frames), Err(FrameError::OutOfMemory));
    assert!(frames.is_empty());
    let events = host::take_events();
    assert_eq!(events.len(), 5, "{events:?}");
    let mapped: Vec<PhysAddr> = events[..3]
        .iter()
        .map(|e| match *e {
            Event::MapBack { pa, count: 1, .. } => pa,
            ref e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(events[2], Event::MapBack { pa: mapped[2], count: 1, failed: true });
    assert_eq!(events[3..], [Event::Unmap { pa: mapped[0], count: 1 }, Event::Unmap { pa: mapped[1], count: 1 }]);
    assert_eq!(frame_alloc::stats(), before);
    host::fail_map_back(None);
    host::set_debug_pagealloc(false);
}

#[test]
fn fault_injection_fails_exactly_the_kth_request() {
    let (_turn, _ram) = ram();
    let before = frame_alloc::stats();
    frame_alloc::fail_request(Some(3));
    let a = frame_alloc::alloc_frame().unwrap();
    let mut b = Vec::new();
    frame_alloc::alloc_frames_bulk(2, &mut b).unwrap();
    assert_eq!(frame_alloc::alloc_contiguous(1, PAGE), Err(FrameError::OutOfMemory));
    assert_eq!(frame_alloc::requests(), 3);
    let c = frame_alloc::alloc_frame().unwrap();
    assert_eq!(frame_alloc::requests(), 4);
    frame_alloc::fail_request(None);
    b.extend([a, c]);
    frame_alloc::free_frames_bulk(&b).unwrap();
    assert_eq!(frame_alloc::stats(), before);
}

#[test]
fn used_since_names_exactly_the_frames_taken_since_the_baseline() {
    let (_turn, _ram) = ram();
    let baseline = internal::used_bitmap();
    let mut frames = Vec::new();
    frame_alloc::alloc_frames_bulk(3, &mut frames).unwrap();
    let run = frame_alloc::alloc_contiguous(2, PAGE).unwrap();
    let mut want = frames.clone();
    want.extend([run, run.add(PAGE)]);
    want.sort();
    assert_eq!(internal::used_since(&baseline), want);
    frame_alloc::free_frames_bulk(&frames).unwrap();
    frame_alloc::free_frames(run, 2).unwrap();
    assert_eq!(internal::used_since(&baseline), vec![]);
}

#[test]
fn errors_name_the_frame_at_fault() {
    let (_turn, ram) = ram();
    let base = ram.base;
    assert_eq!(frame_alloc::free_frames(base.add(1), 1), Err(FrameError::OutOfRange(base.add(1))));
    assert_eq!(frame_alloc::free_frames(base.add(2 * PAGE), 0), Err(FrameError::ZeroCount));
    assert_eq!(frame_alloc::free_frames(base.add(2 * PAGE), 1), Err(FrameError::NotAllocated(base.add(2 * PAGE))));
    // The run's last frame is outside RAM: that one is named.
    let last = base.add((FRAMES as u64 - 1) * PAGE);
    assert_eq!(frame_alloc::free_frames(last, 2), Err(FrameError::OutOfRange(last.add(PAGE))));
    // Frame 0 is reserved (allocated), frame 1 is not: frame 1 is named.
    assert_eq!(frame_alloc::free_frames(base, 2), Err(FrameError::NotAllocated(base.add(PAGE))));
    assert_eq!(frame_alloc::alloc_contiguous(1, 3 * PAGE), Err(FrameError::BadAlignment(3 * PAGE)));
    assert_eq!(frame_alloc::alloc_contiguous(0, PAGE), Err(FrameError::ZeroCount));
    assert_eq!(
        format!("{}", FrameError::BadAlignment(0x800)),
        "alignment 0x800 is not a power of two of a page or more"
    );
}

#[test]
fn a_frame_taken_under_the_callers_mask_is_the_one_alloc_frame_finds_and_masks_once() {
    let (_turn, _ram) = ram();
    let free = frame_alloc::stats().free;
    let mut all = Vec::new();
    frame_alloc::alloc_frames_bulk(free, &mut all).unwrap();
    // Every frame taken: out of memory, and nothing changes.
    host::take_irq_saves();
    assert_eq!(internal::alloc_frame_masked(), Err(FrameError::OutOfMemory));
    assert_eq!(frame_alloc::stats().free, 0);
    // One back: exactly that one, under one IRQ save (the caller's mask;
    // the lock taken under it saves nothing more).
    let back = all.swap_remove(23);
    frame_alloc::free_frame(back).unwrap();
    host::take_irq_saves();
    assert_eq!(internal::alloc_frame_masked(), Ok(back));
    assert_eq!(host::take_irq_saves(), 1);
    assert!(!host::irqs_masked());
    assert_eq!(frame_alloc::stats().free, 0);
    // An injected failure is out of memory and takes nothing.
    frame_alloc::free_frame(back).unwrap();
    frame_alloc::fail_request(Some(1));
    assert_eq!(internal::alloc_frame_masked(), Err(FrameError::OutOfMemory));
    frame_alloc::fail_request(None);
    assert_eq!(frame_alloc::stats().free, 1);
    frame_alloc::free_frames_bulk(&all).unwrap();
    assert_eq!(frame_alloc::stats().free, free);
}
