//! Timer events on the virtual timer, one comparator per CPU shared by
//! two users: the scheduler's time slice (preemption) and one-shot
//! callbacks that run in interrupt context (tests and demos use them to
//! land an interrupt inside a lazy MMU section).

use crate::arch::{cpu, timer as arch_timer};
use crate::percpu::{MAX_CPUS, this_cpu, with_this_cpu};
use crate::sched;
use crate::sync::IrqSpinLock;

#[derive(Clone, Copy)]
struct Deadlines {
    /// When the running task's time slice ends.
    slice: Option<u64>,
    /// A callback and when to call it.
    oneshot: Option<(u64, fn())>,
    /// A watchdog's callback and when to call it (the test harness's
    /// per-test time limit): kept apart from `oneshot`, which tests use.
    watchdog: Option<(u64, fn())>,
}

static DEADLINES: [IrqSpinLock<Deadlines>; MAX_CPUS] =
    [const { IrqSpinLock::new(Deadlines { slice: None, oneshot: None, watchdog: None }) }; MAX_CPUS];

/// Counter ticks now.
pub fn now() -> u64 {
    cpu::counter()
}

/// Counter ticks in `us` microseconds.
pub fn ticks_from_us(us: u64) -> u64 {
    cpu::counter_frequency() * us / 1_000_000
}

fn program(d: &Deadlines) {
    match [d.slice, d.oneshot.map(|(at, _)| at), d.watchdog.map(|(at, _)| at)].into_iter().flatten().min() {
        Some(deadline) => arch_timer::arm(deadline),
        None => arch_timer::disarm(),
    }
}

/// Calls `f` in interrupt context on this CPU, `ticks` from now.
/// Replaces a callback not yet called.
pub fn call_after(ticks: u64, f: fn()) {
    with_this_cpu(|cpu| {
        let mut d = DEADLINES[cpu.id].lock();
        d.oneshot = Some((now() + ticks, f));
        program(&d);
    });
}

/// Calls `f` in interrupt context on this CPU `ticks` from now, unless
/// called again first (None: never). One watchdog per CPU: the test
/// harness's per-test time limit (debug builds only).
#[cfg(debug_assertions)]
pub(crate) fn set_watchdog(deadline: Option<(u64, fn())>) {
    with_this_cpu(|cpu| {
        let mut d = DEADLINES[cpu.id].lock();
        d.watchdog = deadline.map(|(ticks, f)| (now() + ticks, f));
        program(&d);
    });
}

/// Ends the running task's time slice `ticks` from now (None: never).
pub(crate) fn set_slice(ticks: Option<u64>) {
    with_this_cpu(|cpu| {
        let mut d = DEADLINES[cpu.id].lock();
        d.slice = ticks.map(|t| now() + t);
        program(&d);
    });
}

/// The timer interrupt: whatever is due runs, the comparator is set for
/// what is left.
pub(crate) fn handle_interrupt() {
    let t = now();
    let (slice_over, callback) = {
        let mut d = DEADLINES[this_cpu().id].lock();
        let slice_over = d.slice.is_some_and(|at| at <= t);
        if slice_over {
            d.slice = None;
        }
        let callback = match d.oneshot {
            Some((at, f)) if at <= t => {
                d.oneshot = None;
                Some(f)
            }
            _ => None,
        };
        let watchdog = match d.watchdog {
            Some((at, f)) if at <= t => {
                d.watchdog = None;
                Some(f)
            }
            _ => None,
        };
        program(&d);
        (slice_over, callback.into_iter().chain(watchdog))
    };
    for f in callback {
        f();
    }
    if slice_over {
        sched::slice_expired();
    }
}
