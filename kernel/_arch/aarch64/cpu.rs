//! CPU identification, interrupt masking and per-CPU register access.

use aarch64_cpu::registers::*;
use core::arch::asm;

/// The raw ID registers that `crate::cpu::Features` decodes.
pub struct IdRegisters {
    pub midr: u64,
    pub isar0: u64,
    pub mmfr0: u64,
    pub mmfr1: u64,
    pub mmfr2: u64,
}

pub fn id_registers() -> IdRegisters {
    IdRegisters {
        midr: MIDR_EL1.get(),
        isar0: ID_AA64ISAR0_EL1.get(),
        mmfr0: ID_AA64MMFR0_EL1.get(),
        mmfr1: ID_AA64MMFR1_EL1.get(),
        mmfr2: ID_AA64MMFR2_EL1.get(),
    }
}

/// The exception level this code runs at.
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// SCTLR_EL1 as boot left it: the tests compare it with its exact value.
pub fn sctlr_el1() -> u64 {
    SCTLR_EL1.get()
}

/// This CPU's affinity (MPIDR_EL1.Aff0-2), as the device tree names CPUs.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_ffff
}

/// The stack pointer now.
#[inline(always)]
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads a register.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// The frame pointer (x29) now: the head of the chain of frame records
/// that a backtrace follows.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let fp: u64;
    // SAFETY: reads a register.
    unsafe { asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags)) };
    fp
}

/// Masks IRQs and returns the previous DAIF, for [`irq_restore`].
#[inline]
pub fn irq_save() -> u64 {
    let daif = DAIF.get();
    // SAFETY: masking interrupts on this CPU has no memory effect.
    unsafe { asm!("msr daifset, #2", options(nostack, preserves_flags)) };
    daif
}

/// DAIF as it is now, for a later [`irq_restore`].
#[inline]
pub fn irq_state() -> u64 {
    DAIF.get()
}

#[inline]
pub fn irq_restore(daif: u64) {
    DAIF.set(daif);
}

/// The current task's TCB (SP_EL0, which the kernel, running on SP_EL1,
/// does not use as a stack: Linux keeps `current` there too). One
/// register read, no masking: the scheduler sets it on the CPU it
/// switches to, so a task reads its own TCB wherever it runs. 0 until set.
#[inline(always)]
pub fn current_task_pointer() -> u64 {
    let ptr: u64;
    // SAFETY: reads a system register; no memory is touched.
    unsafe { asm!("mrs {}, sp_el0", out(reg) ptr, options(nomem, nostack, preserves_flags)) };
    ptr
}

/// Sets [`current_task_pointer`] on this CPU (the scheduler, with IRQs
/// masked, for the task it switches to; each CPU's init, for its boot task).
#[inline(always)]
pub fn set_current_task_pointer(ptr: u64) {
    // SAFETY: writes a system register the kernel uses only for this.
    unsafe { asm!("msr sp_el0, {}", in(reg) ptr, options(nomem, nostack, preserves_flags)) };
}

/// This CPU's per-CPU data pointer (TPIDR_EL1).
#[inline]
pub fn percpu_pointer() -> u64 {
    TPIDR_EL1.get()
}

pub fn set_percpu_pointer(ptr: u64) {
    TPIDR_EL1.set(ptr);
}

/// The virtual counter and its frequency, for timing.
pub fn counter() -> u64 {
    CNTVCT_EL0.get()
}

pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// PMU common event 0x08, INST_RETIRED: instructions architecturally
/// executed.
const INST_RETIRED: u64 = 0x08;

/// Starts event counter 0 of this CPU's PMU counting retired instructions
/// at EL1, if the PMU implements that event (PMCEID0_EL0 bit 8); false if
/// not. QEMU implements it only under `-icount`, where it counts exactly
/// the instructions QEMU executed: the same number on every run and every
/// host, which is what the bench's instruction budgets rest on.
pub fn start_instruction_counter() -> bool {
    let (dfr0, events): (u64, u64);
    // SAFETY: reads two ID registers; no memory is touched.
    unsafe {
        asm!("mrs {}, id_aa64dfr0_el1", out(reg) dfr0, options(nomem, nostack, preserves_flags));
    }
    // No PMU, or an IMPLEMENTATION DEFINED one.
    if matches!(super::sysreg::pmu_version(dfr0), 0 | 0xf) {
        return false;
    }
    // SAFETY: as above.
    unsafe { asm!("mrs {}, pmceid0_el0", out(reg) events, options(nomem, nostack, preserves_flags)) };
    if events & (1 << INST_RETIRED) == 0 {
        return false;
    }
    // SAFETY: programs this CPU's PMU, which nothing else in the kernel
    // uses: counter 0 counts INST_RETIRED at EL1 and EL0 (PMEVTYPER0's
    // filter bits clear), the PMU is enabled (PMCR_EL0.E) and counter 0
    // with it (PMCNTENSET_EL0 bit 0).
    unsafe {
        asm!(
            "msr pmevtyper0_el0, {event}",
            "mrs {pmcr}, pmcr_el0",
            "orr {pmcr}, {pmcr}, #1",
            "msr pmcr_el0, {pmcr}",
            "msr pmcntenset_el0, {one}",
            "isb",
            event = in(reg) INST_RETIRED,
            pmcr = out(reg) _,
            one = in(reg) 1u64,
            options(nostack, preserves_flags),
        );
    }
    true
}

/// The count of event counter 0 (see [`start_instruction_counter`]).
#[inline]
pub fn instructions() -> u64 {
    let count: u64;
    // SAFETY: reads a PMU register; no memory is touched.
    unsafe { asm!("isb", "mrs {}, pmevcntr0_el0", out(reg) count, options(nomem, nostack, preserves_flags)) };
    count
}

core::arch::global_asm!(
    ".global __call_on_stack",
    "__call_on_stack:",
    "    mov sp, x0",
    "    mov x29, xzr",
    "    mov x30, xzr",
    "    br x1",
);

unsafe extern "C" {
    fn __call_on_stack(top: u64, f: extern "C" fn() -> !) -> !;
}

/// Moves to the stack whose top is `top` and calls `f` there, never to
/// come back: the old stack's frames are abandoned.
///
/// # Safety
/// `top` must be the 16-byte aligned top of a mapped, unused stack.
pub unsafe fn call_on_stack(top: u64, f: extern "C" fn() -> !) -> ! {
    // SAFETY: the caller vouches for the stack.
    unsafe { __call_on_stack(top, f) }
}

/// Unmasks IRQs on this CPU.
#[inline]
pub fn irq_enable() {
    // SAFETY: taking interrupts has no memory effect by itself.
    unsafe { asm!("msr daifclr, #2", options(nostack, preserves_flags)) };
}

/// Sleeps until an interrupt is pending (returns at once if one is).
#[inline]
pub fn wait_for_interrupt() {
    // SAFETY: wfi only waits.
    unsafe { asm!("wfi", options(nostack, preserves_flags)) };
}

/// One turn of a busy wait for another CPU (Linux's `cpu_relax()`, a
/// `yield` hint; Rust's `spin_loop()` is an `isb` on arm64). Under QEMU's
/// single-threaded round robin (`-icount`, or TCG without multi-threading)
/// a `yield` ends this vCPU's turn, so the CPU waited for runs now; an
/// `isb` does not, and the waiter keeps its whole turn, up to QEMU's
/// 100 ms kick period of virtual time: a wait with a deadline in
/// generic-timer ticks then expires after a few of the other CPU's turns
/// (a secondary's bring-up, whose broadcast TLBIs and `wfe`s each end its
/// turn, needs more than the one second `smp::start` gives it).
#[inline]
pub fn relax() {
    // SAFETY: yield only hints.
    unsafe { asm!("yield", options(nostack, preserves_flags)) };
}

/// Wakes every CPU waiting in [`wait_for_event`] (`sev`).
#[inline]
pub fn send_event() {
    // SAFETY: sev only signals.
    unsafe { asm!("dsb ish", "sev", options(nostack, preserves_flags)) };
}

/// Sleeps until an event (another CPU's `sev`) or an interrupt (`wfe`).
#[inline]
pub fn wait_for_event() {
    // SAFETY: wfe only waits.
    unsafe { asm!("wfe", options(nostack, preserves_flags)) };
}

/// Sleeps until `done()` holds, where only an interrupt can make it hold.
///
/// Checking and then sleeping with IRQs unmasked loses the wake-up when the
/// interrupt lands between the two: `wfi` then waits for one more that may
/// never come. So the check and the `wfi` run with IRQs masked (a pending
/// IRQ still ends `wfi`), and the interrupt is taken when they are unmasked.
pub fn wait_until(mut done: impl FnMut() -> bool) {
    loop {
        let daif = irq_save();
        let finished = done();
        if !finished {
            wait_for_interrupt();
        }
        irq_restore(daif);
        if finished {
            return;
        }
    }
}
