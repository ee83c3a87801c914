//! Interrupt context, and the one interrupt the kernel takes: the timer.
//!
//! `in_interrupt()` is what lazy MMU mode asks: in an interrupt handler
//! every lazy_mmu call does nothing and every page-table write pays its
//! barriers at once, whatever the interrupted task was doing. The handler
//! runs on the interrupted task's stack, and a reschedule it asks for
//! happens only after it has left interrupt context (as Linux preempts on
//! the way out of `el1_interrupt`).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::arch::timer as arch_timer;
use crate::console::emergency;
use crate::drivers::gic;
use crate::mm::pgtable_check;
use crate::percpu::this_cpu;
use crate::semihosting::{ExitCode, exit};
use crate::{sched, task, timer, trace};

static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

/// Is this CPU running an interrupt handler? (Read with IRQs masked: a
/// task moved to another CPU mid-read would see that CPU's handler.)
pub fn in_interrupt() -> bool {
    task::current().in_irq()
}

/// Interrupts handled so far, on every CPU.
pub fn interrupt_count() -> u64 {
    INTERRUPTS.load(Relaxed)
}

/// Sets up the interrupt controller for this CPU and unmasks IRQs.
pub(crate) fn init_this_cpu(boot_cpu: bool) {
    if boot_cpu {
        gic::init_distributor();
    }
    gic::init_cpu_interface();
    gic::enable(arch_timer::INTID);
    crate::arch::cpu::irq_enable();
}

/// Called from the IRQ vector, with IRQs masked.
pub(crate) fn handle() {
    let cpu = this_cpu();
    cpu.irq_enter();
    INTERRUPTS.fetch_add(1, Relaxed);
    let interrupted = task::current();
    interrupted.irq_enter();
    trace::emit(format_args!("interrupt: enter (task {} interrupted)", interrupted.name));
    while let Some(iar) = gic::acknowledge() {
        match gic::intid(iar) {
            arch_timer::INTID => timer::handle_interrupt(),
            other => {
                emergency(format_args!("\n*** kernel fault: unexpected interrupt, INTID {other} ***\n"));
                exit(ExitCode::Fault);
            }
        }
        gic::end_of_interrupt(iar);
    }
    trace::emit(format_args!("interrupt: exit"));
    pgtable_check::interrupt_exit();
    interrupted.irq_exit();
    cpu.irq_exit();
    if cpu.take_need_resched() {
        sched::schedule();
    }
}
