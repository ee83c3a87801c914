//! The other CPUs: started at boot with PSCI CPU_ON, each on its own
//! guarded kernel stack, with its own exception vectors, per-CPU data, GIC
//! CPU interface and timer interrupt, then waiting for work.
//!
//! Tasks that may run on any CPU (`sched::spawn_on` with `Affinity::Any`)
//! are picked up by whichever CPU is free, and move between CPUs at
//! switches. Work also reaches a CPU through its mailbox ([`run_on`]): a closure, run in
//! that CPU's boot task (`boot/N`) inside `exception::catch`, so a fault or
//! a failed assertion comes back as a value. This is what lets a test keep
//! one CPU reading a page while another unmaps it.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};

use spin::{Mutex, Once};

use crate::arch::{boot, cpu, exception as arch_exception, psci};
use crate::exception::{self, Caught};
use crate::mm::stack::KernelStack;
use crate::percpu::{self, MAX_CPUS};
use crate::{dtb, init, irq, println, sched};

/// Why PSCI refused to start a CPU (in [`SmpError::Psci`]).
pub use crate::arch::psci::PsciError;

type Job = Box<dyn FnOnce() + Send>;

/// One CPU's side of the bring-up and its mailbox.
struct Slot {
    stack: Once<KernelStack>,
    online: AtomicBool,
    /// It came up without a feature the kernel uses, and was parked.
    parked: AtomicBool,
    job: Mutex<Option<Job>>,
    /// Jobs finished, and how the last one ended.
    done: AtomicU64,
    last: Mutex<Option<Result<(), Caught>>>,
}

static SLOTS: [Slot; MAX_CPUS] = [const {
    Slot {
        stack: Once::new(),
        online: AtomicBool::new(false),
        parked: AtomicBool::new(false),
        job: Mutex::new(None),
        done: AtomicU64::new(0),
        last: Mutex::new(None),
    }
}; MAX_CPUS];

static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Why a CPU did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    NoPsci,
    NoStack,
    Psci(psci::PsciError),
    /// PSCI said yes, but the CPU never reported in.
    Silent,
    /// It lacks a feature the kernel uses (`cpu::cpu_up` said which).
    Parked,
}

impl core::fmt::Display for SmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SmpError::NoPsci => write!(f, "the device tree names no PSCI conduit"),
            SmpError::NoStack => write!(f, "no kernel stack could be mapped for the CPU"),
            SmpError::Psci(e) => write!(f, "PSCI CPU_ON failed: {e}"),
            SmpError::Silent => write!(f, "PSCI started the CPU, but it never reported in"),
            SmpError::Parked => write!(f, "it lacks a CPU feature the kernel uses, and is parked"),
        }
    }
}

/// The number of the CPU this runs on (0 for the boot CPU), Linux's
/// `smp_processor_id()`: a task that may migrate reads it once and knows it
/// may be stale at once.
pub fn smp_processor_id() -> usize {
    percpu::this_cpu().id
}

/// CPUs running the kernel (the boot CPU included).
pub fn online_cpus() -> usize {
    ONLINE.load(SeqCst)
}

/// Starts every CPU the device tree lists; returns how many are online.
/// A CPU that does not come up is reported and left out.
pub(crate) fn bring_up_secondaries() -> usize {
    let machine = dtb::info();
    let image = init::image();
    unsafe extern "C" {
        static _secondary_start: u8;
    }
    let entry_va = &raw const _secondary_start as u64;
    let entry = entry_va - image.kimage_voffset;
    boot::set_secondary_ttbr1(crate::mm::pgtable::kernel_root().as_u64());
    for n in 1..machine.cpus.min(MAX_CPUS) {
        if let Err(e) = start(n, machine.cpu_ids[n], machine.psci, entry) {
            println!("smp: cpu {n} (MPIDR {:#x}) did not come up: {e:?}", machine.cpu_ids[n]);
        }
    }
    // What every online CPU has is what the kernel uses from now on.
    crate::cpu::finalize_features();
    cpu::send_event();
    online_cpus()
}

fn start(n: usize, mpidr: u64, conduit: Option<psci::Conduit>, entry: u64) -> Result<(), SmpError> {
    let conduit = conduit.ok_or(SmpError::NoPsci)?;
    let stack = KernelStack::new().map_err(|_| SmpError::NoStack)?;
    SLOTS[n].stack.call_once(|| stack);
    psci::cpu_on(conduit, mpidr, entry, n as u64).map_err(SmpError::Psci)?;
    // It reports in within microseconds; give it a generous second. The
    // wait yields to it at each turn: under QEMU's round robin (-icount)
    // it runs only when this CPU's turn ends (`cpu::relax`).
    let deadline = cpu::counter() + cpu::counter_frequency();
    while !SLOTS[n].online.load(SeqCst) {
        if SLOTS[n].parked.load(SeqCst) {
            return Err(SmpError::Parked);
        }
        if cpu::counter() > deadline {
            return Err(SmpError::Silent);
        }
        cpu::relax();
    }
    ONLINE.fetch_add(1, SeqCst);
    Ok(())
}

/// Called by boot.s on a secondary CPU, MMU on, still on its early stack.
#[unsafe(no_mangle)]
extern "C" fn __secondary_stack_top(n: usize) -> u64 {
    SLOTS[n].stack.get().expect("allocated before CPU_ON").top().as_u64()
}

/// A secondary CPU's first Rust on its kernel stack.
#[unsafe(no_mangle)]
extern "C" fn __secondary_init(n: usize) -> ! {
    arch_exception::install_vectors();
    percpu::init_this_cpu(n);
    // Its ID registers, read as it comes up (before it takes interrupts).
    if let crate::cpu::Joined::Parked(_) = crate::cpu::cpu_up(n) {
        // It lacks a feature the kernel uses: it must run none of its code.
        SLOTS[n].parked.store(true, SeqCst);
        cpu::send_event();
        loop {
            cpu::wait_for_event();
        }
    }
    crate::arch::mmu::disable_ttbr0_walks();
    irq::init_this_cpu(false);
    SLOTS[n].online.store(true, SeqCst);
    cpu::send_event();
    // No work before the system's features are final: they may still lose
    // one that this CPU has and a later one lacks.
    while !crate::cpu::features_final() {
        cpu::wait_for_event();
    }
    // The boot task of this CPU is its idle task: it runs mailbox work,
    // lets tasks that may run here have the CPU, and otherwise sleeps.
    loop {
        let job = SLOTS[n].job.lock().take();
        match job {
            Some(job) => {
                // What a fault or panic abandoned is let go of, as at a
                // task's end: the next job starts with no section open and
                // no walk guard held.
                let outcome = exception::end_of_work(exception::catch(job));
                *SLOTS[n].last.lock() = Some(outcome);
                SLOTS[n].done.fetch_add(1, SeqCst);
            }
            None if sched::has_work_here() => sched::yield_now(),
            None => cpu::wait_for_event(),
        }
    }
}

/// Work sent to another CPU; [`Pending::wait`] returns how it ended.
#[must_use = "wait for the job, or its result is lost"]
pub struct Pending {
    cpu: usize,
    ticket: u64,
}

/// Runs `job` on CPU `n` (not this one). Fails if that CPU is not online
/// or still busy with earlier work.
pub fn run_on(n: usize, job: impl FnOnce() + Send + 'static) -> Option<Pending> {
    let slot = SLOTS.get(n).filter(|s| s.online.load(SeqCst) && n != percpu::this_cpu().id)?;
    let mut mailbox = slot.job.lock();
    if mailbox.is_some() {
        return None;
    }
    let ticket = slot.done.load(SeqCst) + 1;
    *mailbox = Some(Box::new(job));
    drop(mailbox);
    cpu::send_event();
    Some(Pending { cpu: n, ticket })
}

impl Pending {
    /// Has the job finished?
    pub fn is_done(&self) -> bool {
        SLOTS[self.cpu].done.load(SeqCst) >= self.ticket
    }

    /// Waits for the job and returns how it ended: a fault or a panic on
    /// that CPU comes back as the error.
    pub fn wait(self) -> Result<(), Caught> {
        while !self.is_done() {
            cpu::relax();
        }
        SLOTS[self.cpu].last.lock().take().expect("set before done")
    }
}
