//! What this CPU is and which optional features that matter to page-table
//! code it has, decoded from its ID registers.

use core::fmt;

/// The CPU's own registers and controls that code outside the kernel
/// needs: the clock and instruction counter (the bench), interrupt
/// masking, the exception level, the system control register, waiting.
pub use crate::arch::cpu::{
    counter, counter_frequency, current_el, instructions, irq_restore, irq_save, irq_state, mpidr, sctlr_el1,
    stack_pointer, start_instruction_counter, wait_until,
};

use crate::arch::cpu::{IdRegisters, id_registers};
use crate::arch::sysreg;
use spin::Once;

/// Features that change how the kernel maintains its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// MIDR_EL1, for the model name.
    pub midr: u64,
    /// FEAT_TLBIRANGE: `tlbi rva*` invalidates a range in one instruction.
    pub tlbi_range: bool,
    /// FEAT_BBM level (0-2): level 2 may change block size without
    /// break-before-make, but may still raise a TLB conflict abort.
    pub bbm_level: u8,
    /// Linux's BBML2_NOABORT: this CPU model is known to change a live
    /// block into an equivalent table without any abort (see
    /// [`bbml2_noabort`]).
    pub bbml2_noabort: bool,
    /// FEAT_HAFDBS: 0 none, 1 hardware Access flag, 2 also dirty state.
    pub hafdbs: u8,
    /// The 4 KiB granule is implemented (ID_AA64MMFR0.TGran4 is 0b0000, or
    /// 0b0001 with 52-bit addresses (LPA2); 0b1111 means not implemented).
    pub granule_4k: bool,
    pub granule_4k_lpa2: bool,
    /// Physical address bits (ID_AA64MMFR0.PARange).
    pub pa_bits: u8,
}

impl Features {
    pub fn decode(id: &IdRegisters) -> Features {
        let tgran4 = sysreg::tgran4(id.mmfr0);
        Features {
            midr: id.midr,
            tlbi_range: sysreg::tlbi_range(id.isar0),
            bbm_level: sysreg::bbm_level(id.mmfr2),
            bbml2_noabort: bbml2_noabort(id.midr),
            hafdbs: sysreg::hafdbs(id.mmfr1),
            granule_4k: tgran4 == 0b0000 || tgran4 == 0b0001,
            granule_4k_lpa2: tgran4 == 0b0001,
            pa_bits: sysreg::pa_bits(id.mmfr0),
        }
    }

    /// "Arm Cortex-A72 r0p3" or the raw implementer and part number.
    pub fn model(&self) -> Model {
        Model(self.midr)
    }
}

/// Is this CPU model one that may split a live block in place? As Linux
/// decides `ARM64_HAS_BBML2_NOABORT` (`cpu_supports_bbml2_noabort()`,
/// 5aa4b625762e "arm64: Add BBM Level 2 cpu feature", 6.17): from an
/// allow-list of MIDRs, not from ID_AA64MMFR2.BBM, because FEAT_BBM
/// level 2 alone still permits a TLB conflict abort on the access that
/// meets both the old block and the new table.
///
/// The list is Linux's (6.18), plus QEMU's `max` CPU: TCG has no TLB that
/// could hold two overlapping entries, so it never raises a conflict
/// abort. That is our choice, and it keeps the in-place split exercised;
/// `cortex-a72` (no FEAT_BBM at all) is not on the list.
pub fn bbml2_noabort(midr: u64) -> bool {
    let (implementer, variant, part, revision) = sysreg::midr_fields(midr);
    match (implementer, part) {
        // Arm Cortex-X4 r0p3 and later r0 revisions.
        (0x41, 0xd82) => variant == 0 && revision >= 3,
        // Arm Neoverse-V3 and V3AE, r0p2 and later r0 revisions.
        (0x41, 0xd84) | (0x41, 0xd83) => variant == 0 && revision >= 2,
        // NVIDIA Olympus; AmpereOne and AmpereOne A: every revision.
        (0x4e, 0x010) | (0xc0, 0xac3) | (0xc0, 0xac4) => true,
        // Implementer 0x00 is reserved for software: QEMU's `max` (TCG).
        (0x00, _) => true,
        _ => false,
    }
}

pub struct Model(u64);

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (implementer, variant, part, revision) = sysreg::midr_fields(self.0);
        let name = match (implementer, part) {
            (0x41, 0xd03) => Some("Arm Cortex-A53"),
            (0x41, 0xd07) => Some("Arm Cortex-A57"),
            (0x41, 0xd08) => Some("Arm Cortex-A72"),
            (0x41, 0xd0b) => Some("Arm Cortex-A76"),
            (0x41, 0xd0c) => Some("Arm Neoverse-N1"),
            (0x41, 0xd40) => Some("Arm Neoverse-V1"),
            (0x41, 0xd49) => Some("Arm Neoverse-N2"),
            _ => None,
        };
        match name {
            Some(name) => write!(f, "{name} r{variant}p{revision}"),
            // Implementer 0x00 is reserved for software: QEMU's `max` uses it.
            None if implementer == 0 => {
                write!(f, "software-defined CPU (QEMU max?), part {part:#05x} r{variant}p{revision}")
            }
            None => write!(f, "implementer {implementer:#04x} part {part:#05x} r{variant}p{revision}"),
        }
    }
}

static FEATURES: Once<Features> = Once::new();

/// This system's features, read once at boot.
pub fn features() -> &'static Features {
    FEATURES.call_once(|| Features::decode(&id_registers()))
}
