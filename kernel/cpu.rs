//! What this CPU is and which optional features that matter to page-table
//! code it has, decoded from its ID registers; and which of them the
//! system uses: those every CPU has (`cpufeature.rs`).

use core::fmt;

/// The CPU's own registers and controls that code outside the kernel
/// needs: the clock and instruction counter (the bench), interrupt
/// masking, the exception level, the system control register, waiting.
pub use crate::arch::cpu::{
    counter, counter_frequency, current_el, instructions, irq_restore, irq_save, irq_state, mpidr, sctlr_el1,
    stack_pointer, start_instruction_counter, wait_until,
};

pub(crate) use crate::arch::cpu::IdRegisters;
use crate::arch::cpu::id_registers;
use crate::arch::sysreg;
pub use crate::cpufeature::{Features, Missing};
pub(crate) use crate::cpufeature::{Joined, join};
/// Whether this CPU is handling an interrupt, and how many it has taken
/// (`irq.rs`).
pub use crate::irq::{in_interrupt, interrupt_count};
use spin::{Mutex, Once};

impl Features {
    pub(crate) fn decode(id: &IdRegisters) -> Features {
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

/// MIDR_EL1's Implementer field, named (the values of Linux's
/// `ARM_CPU_IMP_*`, arch/arm64/include/asm/cputype.h).
const IMPLEMENTERS: [(u64, &str); 2] = [(0x41, "Arm"), (0x46, "Fujitsu")];

/// Implementer and PartNum, named (Linux's `*_CPU_PART_*`): every core
/// QEMU models that this kernel runs on (`scripts/test` runs the suite on
/// each), and two Neoverse cores that newer QEMUs model.
const PARTS: [(u64, u64, &str); 9] = [
    (0x41, 0xd03, "Cortex-A53"),
    (0x41, 0xd04, "Cortex-A35"),
    (0x41, 0xd07, "Cortex-A57"),
    (0x41, 0xd08, "Cortex-A72"),
    (0x41, 0xd0b, "Cortex-A76"),
    (0x41, 0xd0c, "Neoverse-N1"),
    (0x41, 0xd40, "Neoverse-V1"),
    (0x41, 0xd49, "Neoverse-N2"),
    (0x46, 0x001, "A64FX"),
];

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (implementer, variant, part, revision) = sysreg::midr_fields(self.0);
        let by = IMPLEMENTERS.iter().find(|(id, _)| *id == implementer).map(|(_, name)| *name);
        let name = PARTS.iter().find(|(imp, id, _)| (*imp, *id) == (implementer, part)).map(|(_, _, name)| *name);
        match (by, name) {
            (Some(by), Some(name)) => write!(f, "{by} {name} r{variant}p{revision}"),
            (Some(by), None) => write!(f, "{by} part {part:#05x} r{variant}p{revision}"),
            // Implementer 0x00 is reserved for software: QEMU's `max` uses it.
            (None, _) if implementer == 0 => {
                write!(f, "software-defined CPU (QEMU max?), part {part:#05x} r{variant}p{revision}")
            }
            (None, _) => write!(f, "implementer {implementer:#04x} part {part:#05x} r{variant}p{revision}"),
        }
    }
}

/// The boot CPU's features, read once at boot: the system's until the
/// secondaries are up.
static BOOT: Once<Features> = Once::new();
/// While the secondaries come up: what every CPU up so far has, and what
/// the kernel already relies on.
static EARLY: Mutex<Option<(Features, Features)>> = Mutex::new(None);
/// The system's features once every secondary is up (or parked).
static SYSTEM: Once<Features> = Once::new();

/// The features the kernel uses: the boot CPU's while it runs alone,
/// then those every online CPU has ([`finalize_features`]).
pub fn features() -> &'static Features {
    match SYSTEM.get() {
        Some(system) => system,
        None => BOOT.call_once(|| Features::decode(&id_registers())),
    }
}

/// This CPU, coming up, reads its ID registers: it joins the system, whose
/// features become what it has in common with the CPUs up so far, or it
/// lacks a feature in use and must be parked (the message says which).
pub(crate) fn cpu_up(n: usize) -> Joined {
    let mine = Features::decode(&id_registers());
    let mut early = EARLY.lock();
    let (system, in_use) = match (SYSTEM.get(), *early) {
        // Late: every system feature is in use.
        (Some(system), _) => (*system, *system),
        (None, Some(state)) => state,
        (None, None) => {
            let boot = *features();
            (boot, boot.in_use_at_boot())
        }
    };
    let joined = join(&system, &in_use, &mine);
    match joined {
        Joined::Online(system) if SYSTEM.get().is_none() => *early = Some((system, in_use)),
        Joined::Online(_) => {}
        Joined::Parked(missing) => {
            crate::println!("cpu {n}: {} lacks {missing}, which the kernel uses: parked", mine.model())
        }
    }
    joined
}

/// Every secondary is up or parked: from now on the kernel uses what all
/// online CPUs have, and a CPU that comes up later must have all of it.
pub(crate) fn finalize_features() {
    let early = EARLY.lock().map(|(system, _)| system);
    SYSTEM.call_once(|| early.unwrap_or(*features()));
}

/// Has [`finalize_features`] run? Secondaries take no work before.
pub(crate) fn features_final() -> bool {
    SYSTEM.get().is_some()
}

#[cfg(test)]
mod tests {
    #[test_case]
    fn a_cpu_decoded_from_made_up_id_registers_joins_or_is_parked() {
        use super::{Features, IdRegisters, Joined, Missing, join};

        // A software-defined CPU (implementer 0x00, as QEMU's max) with
        // FEAT_TLBIRANGE (ID_AA64ISAR0.TLB = 0b0010), FEAT_BBM level 2, 48-bit
        // PAs, the 4 KiB granule; and a Cortex-A72 r0p3 with none of these.
        let max = Features::decode(&IdRegisters {
            midr: 0x000f_0510,
            isar0: 0b0010 << 56,
            mmfr0: 5,
            mmfr1: 2,
            mmfr2: 2 << 52,
        });
        let a72 = Features::decode(&IdRegisters { midr: 0x410f_d083, isar0: 0, mmfr0: 4, mmfr1: 0, mmfr2: 0 });
        assert!(max.tlbi_range && max.bbml2_noabort && !a72.tlbi_range && !a72.bbml2_noabort, "{max:?} {a72:?}");
        // The boot CPU built the linear map with blocks: an A72 beside it is parked.
        assert_eq!(join(&max, &max.in_use_at_boot(), &a72), Joined::Parked(Missing::BBML2_NOABORT));
        // An A72 boot CPU committed to nothing the max lacks: the max joins,
        // and the system keeps what both have.
        assert_eq!(join(&a72, &a72.in_use_at_boot(), &max), Joined::Online(a72.meet(&max)));
    }
}
