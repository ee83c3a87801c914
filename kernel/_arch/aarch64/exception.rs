//! Exception entry and the syndrome (ESR_EL1) decoder.

use aarch64_cpu::registers::*;
use core::arch::global_asm;
use core::fmt;
use tock_registers::LocalRegisterCopy;

global_asm!(include_str!("exception.s"));

/// The interrupted context, as exception.s saves it.
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    _pad: u64,
}

/// Where the callee-saved registers of a `__recovery_call` are kept.
#[repr(C)]
#[derive(Default)]
pub struct RecoveryPoint {
    regs: [u64; 12],
}

unsafe extern "C" {
    static __exception_vectors: u8;
    /// See exception.s.
    pub fn __recovery_call(point: *mut RecoveryPoint, f: extern "C" fn(*mut u8), ctx: *mut u8) -> u64;
    pub fn __recovery_resume(point: *mut RecoveryPoint) -> !;
}

/// Makes this CPU take exceptions through our vector table.
pub fn install_vectors() {
    // SAFETY: only the symbol's address is used.
    let vectors = unsafe { &__exception_vectors as *const u8 as u64 };
    VBAR_EL1.set(vectors);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Which vector was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorKind {
    /// Synchronous exception from EL1 on SP_EL1: the kernel's own faults.
    KernelSync,
    KernelIrq,
    /// Anything else: the kernel never runs on SP_EL0 nor has lower ELs,
    /// and FIQ and SError are not expected.
    Unexpected(u64),
}

fn vector_kind(kind: u64) -> VectorKind {
    match kind {
        4 => VectorKind::KernelSync,
        5 => VectorKind::KernelIrq,
        other => VectorKind::Unexpected(other),
    }
}

/// "IRQ from current EL, SP_ELx" and the like, for reports.
pub fn vector_description(kind: u64) -> (&'static str, &'static str) {
    const TYPES: [&str; 4] = ["synchronous", "IRQ", "FIQ", "SError"];
    const SOURCES: [&str; 4] = ["current EL, SP_EL0", "current EL, SP_ELx", "lower EL, AArch64", "lower EL, AArch32"];
    (TYPES[(kind & 3) as usize], SOURCES[((kind >> 2) & 3) as usize])
}

#[unsafe(no_mangle)]
extern "C" fn __exception_entry(frame: &mut TrapFrame, kind: u64) {
    let esr = ESR_EL1.get();
    let far = FAR_EL1.get();
    match vector_kind(kind) {
        VectorKind::KernelSync => crate::exception::handle_sync(frame, kind, Syndrome::new(esr, far, frame.elr)),
        VectorKind::KernelIrq => crate::irq::handle(),
        VectorKind::Unexpected(_) => {
            crate::exception::handle_unexpected(frame, kind, Syndrome::new(esr, far, frame.elr))
        }
    }
}

/// Sends a trapped context back to `__recovery_resume` with `point`.
pub fn redirect_to_recovery(frame: &mut TrapFrame, point: *mut RecoveryPoint) {
    frame.x[0] = point as u64;
    frame.elr = __recovery_resume as *const () as u64;
}

/// Why an abort happened: the data/instruction fault status code (DFSC/IFSC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    AddressSize {
        level: u8,
    },
    /// No valid entry at this level.
    Translation {
        level: u8,
    },
    AccessFlag {
        level: u8,
    },
    /// The entry at this level does not allow the access.
    Permission {
        level: u8,
    },
    Alignment,
    TlbConflict,
    SynchronousExternal,
    Other(u8),
}

impl FaultStatus {
    /// Decodes a fault status code (ESR's DFSC/IFSC, PAR_EL1's FST).
    pub fn decode(fsc: u64) -> FaultStatus {
        let level = (fsc & 3) as u8;
        match fsc & 0x3f {
            0b00_0000..=0b00_0011 => FaultStatus::AddressSize { level },
            0b00_0100..=0b00_0111 => FaultStatus::Translation { level },
            0b00_1000..=0b00_1011 => FaultStatus::AccessFlag { level },
            0b00_1100..=0b00_1111 => FaultStatus::Permission { level },
            0b01_0000 => FaultStatus::SynchronousExternal,
            0b10_0001 => FaultStatus::Alignment,
            0b11_0000 => FaultStatus::TlbConflict,
            other => FaultStatus::Other(other as u8),
        }
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultStatus::AddressSize { level } => write!(f, "address size fault, level {level}"),
            FaultStatus::Translation { level } => write!(f, "translation fault, level {level}"),
            FaultStatus::AccessFlag { level } => write!(f, "access flag fault, level {level}"),
            FaultStatus::Permission { level } => write!(f, "permission fault, level {level}"),
            FaultStatus::Alignment => write!(f, "alignment fault"),
            FaultStatus::TlbConflict => write!(f, "TLB conflict abort"),
            FaultStatus::SynchronousExternal => write!(f, "synchronous external abort"),
            FaultStatus::Other(code) => write!(f, "fault status code {code:#04x}"),
        }
    }
}

/// The exception classes the kernel tells apart (ESR_EL1.EC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// EC 0x21: an instruction fetch from EL1 faulted.
    InstructionAbortCurrentEl,
    /// EC 0x25: a load or store from EL1 faulted.
    DataAbortCurrentEl,
    /// EC 0x22: PC not 4-byte aligned.
    PcAlignment,
    /// EC 0x26: SP not 16-byte aligned.
    SpAlignment,
    /// EC 0x3c: a `brk` instruction.
    Breakpoint,
    /// EC 0x00: an undefined instruction, among others.
    Unknown,
    /// EC 0x0e: an illegal exception return.
    IllegalExecutionState,
    Other(u8),
}

impl ExceptionClass {
    fn decode(esr: u64) -> ExceptionClass {
        let esr = LocalRegisterCopy::<u64, ESR_EL1::Register>::new(esr);
        match esr.read_as_enum(ESR_EL1::EC) {
            Some(ESR_EL1::EC::Value::InstrAbortCurrentEL) => ExceptionClass::InstructionAbortCurrentEl,
            Some(ESR_EL1::EC::Value::DataAbortCurrentEL) => ExceptionClass::DataAbortCurrentEl,
            Some(ESR_EL1::EC::Value::PCAlignmentFault) => ExceptionClass::PcAlignment,
            Some(ESR_EL1::EC::Value::SPAlignmentFault) => ExceptionClass::SpAlignment,
            Some(ESR_EL1::EC::Value::Brk64) => ExceptionClass::Breakpoint,
            Some(ESR_EL1::EC::Value::Unknown) => ExceptionClass::Unknown,
            Some(ESR_EL1::EC::Value::IllegalExecutionState) => ExceptionClass::IllegalExecutionState,
            _ => ExceptionClass::Other(esr.read(ESR_EL1::EC) as u8),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ExceptionClass::InstructionAbortCurrentEl => "Instruction Abort (current EL)",
            ExceptionClass::DataAbortCurrentEl => "Data Abort (current EL)",
            ExceptionClass::PcAlignment => "PC alignment fault",
            ExceptionClass::SpAlignment => "SP alignment fault",
            ExceptionClass::Breakpoint => "Breakpoint (BRK)",
            ExceptionClass::Unknown => "Unknown reason (undefined instruction?)",
            ExceptionClass::IllegalExecutionState => "Illegal execution state",
            ExceptionClass::Other(_) => "other exception class",
        }
    }
}

/// Everything the hardware says about a synchronous exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Syndrome {
    pub esr: u64,
    pub far: u64,
    pub elr: u64,
    pub class: ExceptionClass,
    /// For aborts: why.
    pub status: Option<FaultStatus>,
    /// For data aborts: the access was a write (ESR.ISS.WnR).
    pub write: bool,
}

impl Syndrome {
    pub fn new(esr: u64, far: u64, elr: u64) -> Syndrome {
        let class = ExceptionClass::decode(esr);
        let is_abort = matches!(class, ExceptionClass::InstructionAbortCurrentEl | ExceptionClass::DataAbortCurrentEl);
        Syndrome {
            esr,
            far,
            elr,
            class,
            status: is_abort.then(|| FaultStatus::decode(esr)),
            write: class == ExceptionClass::DataAbortCurrentEl && esr & (1 << 6) != 0,
        }
    }
}
