//! PSCI (Arm's Power State Coordination Interface): how a kernel asks the
//! firmware (here, QEMU itself) to start a CPU. The device tree's /psci
//! node says whether calls go through `hvc` (the kernel was entered at EL1)
//! or `smc` (entered at EL2: an `hvc` would trap to our own EL2).

use core::arch::asm;

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

/// PSCI's error codes (negative return values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    NotSupported,
    InvalidParameters,
    Denied,
    AlreadyOn,
    OnPending,
    InternalFailure,
    Other(i64),
}

impl core::fmt::Display for PsciError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PsciError::NotSupported => write!(f, "the firmware does not support the call (NOT_SUPPORTED)"),
            PsciError::InvalidParameters => write!(f, "the firmware refused the arguments (INVALID_PARAMETERS)"),
            PsciError::Denied => write!(f, "the firmware denied the call (DENIED)"),
            PsciError::AlreadyOn => write!(f, "the CPU is already on (ALREADY_ON)"),
            PsciError::OnPending => write!(f, "the CPU is already being turned on (ON_PENDING)"),
            PsciError::InternalFailure => write!(f, "the firmware failed internally (INTERNAL_FAILURE)"),
            PsciError::Other(code) => write!(f, "the firmware returned the unknown error code {code}"),
        }
    }
}

/// CPU_ON, SMC64 calling convention.
const CPU_ON: u64 = 0xc400_0003;

fn call(conduit: Conduit, function: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: i64;
    // SAFETY: a PSCI call: x0-x3 in, x0 out; the firmware preserves the
    // other registers the SMC calling convention says it preserves.
    unsafe {
        match conduit {
            Conduit::Hvc => asm!("hvc #0", inout("x0") function as i64 => ret, in("x1") a1, in("x2") a2, in("x3") a3,
                clobber_abi("C"), options(nostack)),
            Conduit::Smc => asm!("smc #0", inout("x0") function as i64 => ret, in("x1") a1, in("x2") a2, in("x3") a3,
                clobber_abi("C"), options(nostack)),
        }
    }
    ret
}

/// Starts the CPU whose MPIDR affinity is `target` at physical address
/// `entry`, MMU off, with `context` in x0.
pub fn cpu_on(conduit: Conduit, target: u64, entry: u64, context: u64) -> Result<(), PsciError> {
    match call(conduit, CPU_ON, target, entry, context) {
        0 => Ok(()),
        -1 => Err(PsciError::NotSupported),
        -2 => Err(PsciError::InvalidParameters),
        -3 => Err(PsciError::Denied),
        -4 => Err(PsciError::AlreadyOn),
        -5 => Err(PsciError::OnPending),
        -6 => Err(PsciError::InternalFailure),
        other => Err(PsciError::Other(other)),
    }
}
