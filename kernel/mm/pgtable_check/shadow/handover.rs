//! The receiving CPU's half of publishing (**publish-receiver**).
//!
//! The publish rule asks the CPU that made a valid entry for `dsb ishst`
//! then `isb`: its own walker sees the entry from then on. A mapping handed
//! to another CPU (a new task's stack, which `sched::spawn_on` lets any
//! CPU pick up) needs one thing more on the receiving CPU: a context
//! synchronization event after it has observed the handover and before it
//! relies on the mapping. Without one, a walk it began earlier (the
//! architecture lets translation run ahead of loads and stores) may still
//! have read the old, invalid entry, and its access takes a translation
//! fault although the tables are right.
//!
//! Linux's answer for data accesses is the fault path: "arm64: mm: Ignore
//! spurious translation faults taken from the kernel" (42f91093b043)
//! re-checks the address with `at` and retries, the exception entry and
//! return being the context synchronization (`mm/fault.rs` does the same).
//! That net cannot catch a stack: the exception entry writes its frame to
//! the stack that faulted, which faults again. So a CPU that switches to a
//! task whose stack another CPU mapped, or that last ran on another CPU,
//! issues `isb` between taking it from the run queue (the acquire that
//! observes the handover) and switching to its stack (`sched::schedule`).
//!
//! What the checker sees, and so what it checks: not the receiving CPU's
//! loads and stores, but the three points the kernel reports. A stack is
//! handed over on the CPU that mapped it (after the publish rule's check
//! there); it is received on the CPU that took its task; it is about to
//! be used on that CPU. Between the last two, that CPU must report an
//! `isb` (the barrier observer), unless the mapping is published to it
//! already: it is the CPU that mapped the stack, or it has synchronized
//! for it before. An exception return is context synchronizing too
//! (SCTLR_EL1.EOS), but a switch made in an interrupt handler uses the
//! stack before the handler returns, so it does not count here.
//!
//! Other handovers need no `isb`: a `run_on` job, or the data a task is
//! given, is reached by data accesses, which the fixup covers (counted in
//! `fault::spurious_fault_count`), as Linux's are.

use alloc::collections::BTreeMap;

use super::super::report::Rule;
use super::{Checker, Kernel, sentence};
use crate::percpu::MAX_CPUS;

/// A mapping received from another CPU, not yet used.
#[derive(Clone, Copy)]
struct Received {
    start: u64,
    /// Its key in `made_on`.
    made: u64,
    end: u64,
    from: usize,
    /// An `isb` came since it was received.
    synchronized: bool,
}

/// A mapping handed over: where it ends, the CPU that mapped it, and the
/// CPUs it is published to (a bit each: that CPU, and each that has
/// synchronized for it since).
#[derive(Clone, Copy)]
struct Made {
    end: u64,
    on: usize,
    published_to: u64,
}

/// Mappings handed over, and what each CPU still owes for one it received.
pub(super) struct Handovers {
    /// By the first address.
    made_on: BTreeMap<u64, Made>,
    owed: [Option<Received>; MAX_CPUS],
}

impl Handovers {
    pub(super) fn new() -> Handovers {
        Handovers { made_on: BTreeMap::new(), owed: [None; MAX_CPUS] }
    }
}

impl<K: Kernel> Checker<K> {
    /// [start, end) was mapped and published on this CPU and is handed to
    /// a task that may run on another (a new task's stack).
    pub fn mapping_handed_over(&mut self, start: u64, end: u64) {
        let cpu = self.here.cpu;
        self.handovers.made_on.insert(start, Made { end, on: cpu, published_to: 1 << cpu });
    }

    /// This CPU took a task whose stack is [start, end) from the run
    /// queue: if the mapping is not published to it yet, an `isb` is owed
    /// before its use.
    pub fn mapping_received(&mut self, start: u64, end: u64) {
        let cpu = self.here.cpu;
        let made = self.handovers.made_on.range(..end).next_back().filter(|(_, m)| m.end > start);
        // (A mapping the checker was not told of, a CPU's boot stack, is
        // its own CPU's.)
        self.handovers.owed[cpu] = match made {
            Some((&key, m)) if m.published_to & (1 << cpu) == 0 => {
                Some(Received { start, made: key, end, from: m.on, synchronized: false })
            }
            _ => None,
        };
    }

    /// An `isb` on `cpu`: what it received is published to it.
    pub(super) fn context_synchronized(&mut self, cpu: usize) {
        if let Some(r) = &mut self.handovers.owed[cpu] {
            r.synchronized = true;
        }
    }

    /// This CPU is about to use [start, end), received earlier.
    pub fn using_received(&mut self, start: u64, end: u64) {
        let cpu = self.here.cpu;
        let Some(r) = self.handovers.owed[cpu].take() else { return };
        if !(r.start < end && start < r.end) {
            return;
        }
        if !r.synchronized {
            self.violation(
                Rule::PublishReceiver,
                sentence(format_args!(
                    "cpu {cpu} switched to a stack [{:#x}, {:#x}) that cpu {} mapped, with no isb since it took the task: a walk begun earlier may have seen it invalid, and a fault on a stack is not fixed up",
                    r.start, r.end, r.from
                )),
                None,
                None,
            );
        }
        // Reported once: from now on it counts as published to this CPU.
        if let Some(m) = self.handovers.made_on.get_mut(&r.made) {
            m.published_to |= 1 << cpu;
        }
    }
}
