//! What the kernel does with exceptions: recover a fault that code asked to
//! catch ([`catch`]), or print a decoded report and stop QEMU with a
//! non-zero exit code.

use core::fmt;

use crate::arch::cpu;
use crate::arch::exception::{__recovery_call, RecoveryPoint, TrapFrame, redirect_to_recovery, vector_description};
pub use crate::arch::exception::{ExceptionClass, FaultStatus, Syndrome};
use crate::console::emergency;
use crate::irq;
use crate::semihosting::{ExitCode, exit};
use crate::symbols;
use crate::task;

/// A panic message, kept in a fixed buffer: a recovered panic must not need
/// the heap, which may be what failed.
pub type PanicMessage = crate::fixed_text::FixedText;

/// What [`catch`] caught.
#[derive(Clone, Copy, Debug)]
pub enum Caught {
    Fault(Syndrome),
    Panic(PanicMessage),
}

impl fmt::Display for Caught {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caught::Panic(message) => write!(f, "panicked at {}", message.as_str()),
            Caught::Fault(s) => {
                write!(f, "{} (ESR {:#x})", s.class.name(), s.esr)?;
                if let Some(status) = s.status {
                    write!(f, ": {status}, {} at FAR {:#x}", if s.write { "write" } else { "read" }, s.far)?;
                }
                write!(f, ", ELR {:#x}", s.elr)
            }
        }
    }
}

/// Runs `f`; if it faults or panics, abandons it and returns what happened.
///
/// This is setjmp/longjmp, so `f` must be written for it: whatever `f` holds
/// when it is abandoned (locks, heap memory) is not dropped. What the
/// kernel tracks per task, its lazy MMU sections and walk guards, the
/// caller lets go of with `release_abandoned` (the harness, a task's and a
/// `run_on` job's end do); the rest is leaked. A fault or panic under
/// `pgtable::Exclusive` is not recovered: it stops the kernel.
/// Tests use it to assert that an access faults in exactly the expected way,
/// and the test harness uses it to keep going after a failed test.
pub fn catch<R, F: FnOnce() -> R>(f: F) -> Result<R, Caught> {
    extern "C" fn trampoline<F: FnOnce() -> R, R>(ctx: *mut u8) {
        // SAFETY: ctx is the `state` below, alive for the whole call.
        let state = unsafe { &mut *(ctx as *mut (Option<F>, Option<R>)) };
        let f = state.0.take().expect("called once");
        state.1 = Some(f());
    }

    let mut point = RecoveryPoint::default();
    let mut state: (Option<F>, Option<R>) = (Some(f), None);
    let daif = cpu::irq_state();
    let task = task::current();
    let previous = task.set_recovery(&mut point);
    // SAFETY: __recovery_call saves the callee-saved registers in `point`
    // and calls the trampoline with `state`; both outlive the call.
    let recovered = unsafe {
        __recovery_call(&mut point, trampoline::<F, R>, &mut state as *mut (Option<F>, Option<R>) as *mut u8)
    };
    task.set_recovery(previous);
    if recovered == 0 {
        return Ok(state.1.expect("trampoline stored the result"));
    }
    // The abandoned code may have masked interrupts: put them back as they were.
    cpu::irq_restore(daif);
    Err(task.take_caught().expect("recovery always records what it caught"))
}

/// What code abandoned by [`catch`] still held, found and let go of by
/// [`release_abandoned`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// The lazy MMU counts it left (its sections are closed now, and what
    /// they owed is paid).
    pub enabled: u8,
    pub paused: u8,
    /// Walk guards it held (let go now).
    pub walks: u32,
}

impl Abandoned {
    /// Did it hold nothing?
    pub fn is_empty(&self) -> bool {
        *self == Abandoned::default()
    }
}

impl fmt::Display for Abandoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if (self.enabled, self.paused) != (0, 0) {
            write!(f, "lazy MMU mode open (enable count {}, pause count {})", self.enabled, self.paused)?;
            sep = ", ";
        }
        if self.walks > 0 {
            write!(f, "{sep}{} walk guard(s) held", self.walks)?;
        }
        Ok(())
    }
}

/// Lets go of what the current task's code held when [`catch`] abandoned
/// it (recovery skips every drop): its lazy MMU sections are closed and
/// what they owed is paid (the pair, the queued stores), then its walk
/// guards are let go, so that no later `exclusive()` waits for them
/// forever. Call it only once the abandoned code is gone (after `catch`
/// returned its error, or at a task's end): a live guard let go this way
/// would let its tables be freed under it. An `Exclusive` is never
/// abandoned: a fault or panic under it stops the kernel.
pub(crate) fn release_abandoned() -> Abandoned {
    // Sections first: under `deferred-writes` their queued stores go into
    // tables that the walk guards still keep.
    let (enabled, paused) = crate::mm::lazy_mmu::recover_abandoned();
    let walks = crate::mm::pgtable::recover_abandoned_walks();
    Abandoned { enabled, paused, walks }
}

/// The end of a task's or a `run_on` job's code, run by the task after
/// [`catch`] returned `outcome`: what a fault or panic abandoned is let go
/// of ([`release_abandoned`]) and reported; code that returned with a
/// lazy MMU section open fails (its own bug: the section is closed now).
pub(crate) fn end_of_work(outcome: Result<(), Caught>) -> Result<(), Caught> {
    let name = task::current().name;
    let abandoned = release_abandoned();
    match outcome {
        Err(caught) if !abandoned.is_empty() => {
            crate::println!("{name}: let go of what it held ({abandoned}); it ended: {caught}");
            Err(caught)
        }
        Ok(()) if (abandoned.enabled, abandoned.paused) != (0, 0) => {
            Err(Caught::Panic(PanicMessage::new(format_args!(
                "task {name} exited with lazy MMU mode open (enable count {}, pause count {})",
                abandoned.enabled, abandoned.paused
            ))))
        }
        outcome => outcome,
    }
}

/// Why a fault or panic cannot be recovered into its `catch`, if it cannot.
pub(crate) fn unrecoverable() -> Option<&'static str> {
    if irq::in_interrupt() {
        // The recovery point belongs to the interrupted task, not to the handler.
        None
    } else if task::current().holds_exclusive() {
        Some(
            "while holding pgtable::Exclusive: tables may be half unlinked, and no walk could \
             start again; not recoverable",
        )
    } else {
        None
    }
}

pub(crate) fn handle_sync(frame: &mut TrapFrame, kind: u64, syndrome: Syndrome) {
    // The tables allow the access now: return, and it is retried.
    if crate::mm::fault::fixup_spurious_el1_fault(&syndrome) == crate::mm::fault::FaultFix::Retry {
        return;
    }
    // A fault in an interrupt handler is never recovered: the recovery
    // point belongs to the interrupted task, not to the handler.
    if !irq::in_interrupt() {
        let task = task::current();
        if let Some(why) = unrecoverable() {
            report("unhandled synchronous exception", kind, frame, &syndrome);
            emergency(format_args!("  ({why})\n"));
            exit(ExitCode::Fault);
        }
        if let Some(point) = task.take_recovery() {
            task.set_caught(Caught::Fault(syndrome));
            redirect_to_recovery(frame, point);
            return;
        }
    }
    report("unhandled synchronous exception", kind, frame, &syndrome);
    exit(ExitCode::Fault);
}

pub(crate) fn handle_unexpected(frame: &mut TrapFrame, kind: u64, syndrome: Syndrome) {
    report("unexpected exception vector", kind, frame, &syndrome);
    exit(ExitCode::Fault);
}

fn report(title: &str, kind: u64, frame: &TrapFrame, s: &Syndrome) {
    let (what, from) = vector_description(kind);
    emergency(format_args!("\n*** kernel fault: {title} ***\n"));
    emergency(format_args!("  vector:    {what} from {from}\n"));
    emergency(format_args!("  exception: {} (EC {:#04x}), ESR_EL1 {:#010x}\n", s.class.name(), s.esr >> 26, s.esr));
    if let Some(status) = s.status {
        let access = match s.class {
            ExceptionClass::InstructionAbortCurrentEl => "instruction fetch",
            _ if s.write => "write",
            _ => "read",
        };
        emergency(format_args!("  fault:     {status}, on a {access}\n"));
        emergency(format_args!("  FAR_EL1:   {:#018x}\n", s.far));
    }
    emergency(format_args!("  ELR_EL1:   {:#018x} {}\n", s.elr, symbols::Symbolized(s.elr)));
    emergency(format_args!("  LR (x30):  {:#018x} {}\n", frame.x[30], symbols::Symbolized(frame.x[30])));
    emergency(format_args!("  SPSR_EL1:  {:#018x}\n", frame.spsr));
    for row in 0..8 {
        emergency(format_args!("  "));
        for col in 0..4 {
            let i = row * 4 + col;
            if i < 31 {
                emergency(format_args!("x{i:<2} {:#018x}  ", frame.x[i]));
            }
        }
        emergency(format_args!("\n"));
    }
}
