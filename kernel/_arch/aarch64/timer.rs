//! The EL1 virtual timer (CNTV): a comparator against the virtual counter
//! that raises PPI 27 when the counter passes it. The virtual timer needs
//! no set-up from EL2 (boot.s zeroes CNTVOFF_EL2 when we enter there).

use aarch64_cpu::registers::*;

/// The timer's interrupt: PPI 11, INTID 16 + 11.
pub const INTID: u32 = 27;

/// Raises the interrupt once the virtual counter reaches `deadline`.
pub fn arm(deadline: u64) {
    CNTV_CVAL_EL0.set(deadline);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
}

/// Stops the timer; its interrupt (level-triggered) drops.
pub fn disarm() {
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::CLEAR);
}
