//! The GICv2 of QEMU `virt`: distributor at 0x0800_0000, CPU interface at
//! 0x0801_0000 (both mapped as Device memory in the MMIO region). Enough of
//! it to take private peripheral interrupts (the timer) on each CPU.

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

use crate::mm::layout::MMIO_BASE;

pub const DISTRIBUTOR_PHYS: u64 = 0x0800_0000;
pub const CPU_INTERFACE_PHYS: u64 = 0x0801_0000;

/// What GICC_IAR reads when no interrupt is pending.
const SPURIOUS: u32 = 1023;

register_structs! {
    Distributor {
        (0x000 => ctlr: ReadWrite<u32>),
        (0x004 => _reserved0),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => icenabler: [ReadWrite<u32>; 32]),
        (0x200 => _reserved1),
        (0x400 => ipriorityr: [ReadWrite<u32>; 255]),
        (0x7fc => _reserved2),
        (0x1000 => @END),
    }
}

register_structs! {
    CpuInterface {
        (0x00 => ctlr: ReadWrite<u32>),
        (0x04 => pmr: ReadWrite<u32>),
        (0x08 => bpr: ReadWrite<u32>),
        (0x0c => iar: ReadOnly<u32>),
        (0x10 => eoir: WriteOnly<u32>),
        (0x14 => @END),
    }
}

fn distributor() -> &'static Distributor {
    // SAFETY: kernel_map maps the distributor's page at this address, as
    // Device memory, for the kernel's whole life.
    unsafe { &*(MMIO_BASE.add(DISTRIBUTOR_PHYS).as_u64() as *const Distributor) }
}

fn cpu_interface() -> &'static CpuInterface {
    // SAFETY: as for the distributor.
    unsafe { &*(MMIO_BASE.add(CPU_INTERFACE_PHYS).as_u64() as *const CpuInterface) }
}

/// Turns the distributor on (once, by the boot CPU).
pub fn init_distributor() {
    distributor().ctlr.set(1);
}

/// Lets this CPU's interface signal interrupts of any priority.
pub fn init_cpu_interface() {
    let cpu = cpu_interface();
    cpu.pmr.set(0xff);
    cpu.bpr.set(0);
    cpu.ctlr.set(1);
}

/// Enables interrupt `intid` at a middle priority. For a private interrupt
/// (below 32) this is the calling CPU's own copy.
pub fn enable(intid: u32) {
    let d = distributor();
    let shift = (intid % 4) * 8;
    let prio = &d.ipriorityr[(intid / 4) as usize];
    prio.set((prio.get() & !(0xff << shift)) | (0x80 << shift));
    d.isenabler[(intid / 32) as usize].set(1 << (intid % 32));
}

/// Takes the highest-priority pending interrupt, if any; it must be ended
/// with [`end_of_interrupt`].
pub fn acknowledge() -> Option<u32> {
    let iar = cpu_interface().iar.get();
    let intid = iar & 0x3ff;
    (intid != SPURIOUS).then_some(iar)
}

pub fn end_of_interrupt(iar: u32) {
    cpu_interface().eoir.set(iar);
}

/// The INTID an acknowledge value names.
pub fn intid(iar: u32) -> u32 {
    iar & 0x3ff
}
