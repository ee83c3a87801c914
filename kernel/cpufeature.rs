//! System-wide CPU features: what every CPU has, as Linux's cpufeature
//! framework decides it (`arch/arm64/kernel/cpufeature.c`). Pure logic on
//! decoded features, no register access, so the same file is tested on the
//! host with made-up CPUs (tests/host/props).
//!
//! Each CPU's ID registers are read as it comes up (`cpu::cpu_up`). A
//! feature is used only if every CPU has it: the system's features are the
//! meet of every CPU's ([`Features::meet`]). Some uses cannot be taken back
//! once made: the boot CPU builds the linear map with blocks only if it has
//! BBML2_NOABORT (blocks that pageattr then splits in place, on any CPU),
//! and uses the 4 KiB granule from its first table. A CPU that comes up
//! without a feature already in use ([`join`]) is parked with a message,
//! as Linux parks a late CPU that lacks a system capability
//! (`verify_local_cpu_capabilities()`); once the secondaries are up, every
//! system feature counts as in use.

use core::fmt;

/// Features that change how the kernel maintains its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// MIDR_EL1, for the model name (the boot CPU's, system-wide).
    pub midr: u64,
    /// FEAT_TLBIRANGE: `tlbi rva*` invalidates a range in one instruction.
    pub tlbi_range: bool,
    /// FEAT_BBM level (0-2): level 2 may change block size without
    /// break-before-make, but may still raise a TLB conflict abort.
    pub bbm_level: u8,
    /// Linux's BBML2_NOABORT: this CPU model is known to change a live
    /// block into an equivalent table without any abort (see
    /// `cpu::bbml2_noabort`).
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

/// Features a CPU lacks, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing(u8);

impl Missing {
    pub const TLBI_RANGE: Missing = Missing(1 << 0);
    pub const BBM_LEVEL: Missing = Missing(1 << 1);
    pub const BBML2_NOABORT: Missing = Missing(1 << 2);
    pub const HAFDBS: Missing = Missing(1 << 3);
    pub const GRANULE_4K: Missing = Missing(1 << 4);
    pub const GRANULE_4K_LPA2: Missing = Missing(1 << 5);
    pub const PA_BITS: Missing = Missing(1 << 6);
    const NAMES: [&'static str; 7] = [
        "FEAT_TLBIRANGE",
        "FEAT_BBM level",
        "BBML2_NOABORT",
        "FEAT_HAFDBS level",
        "the 4 KiB granule",
        "the 4 KiB granule with LPA2",
        "the physical address size",
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Missing) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Missing {
    type Output = Missing;
    fn bitor(self, other: Missing) -> Missing {
        Missing(self.0 | other.0)
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        for (i, name) in Missing::NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                write!(f, "{sep}{name}")?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

impl Features {
    /// What two CPUs both have: every feature the lesser of the two.
    pub fn meet(&self, other: &Features) -> Features {
        Features {
            midr: self.midr,
            tlbi_range: self.tlbi_range && other.tlbi_range,
            bbm_level: self.bbm_level.min(other.bbm_level),
            bbml2_noabort: self.bbml2_noabort && other.bbml2_noabort,
            hafdbs: self.hafdbs.min(other.hafdbs),
            granule_4k: self.granule_4k && other.granule_4k,
            granule_4k_lpa2: self.granule_4k_lpa2 && other.granule_4k_lpa2,
            pa_bits: self.pa_bits.min(other.pa_bits),
        }
    }

    /// The features of `self` (those in use) that `cpu` lacks.
    pub fn missing_in(&self, cpu: &Features) -> Missing {
        let checks = [
            (self.tlbi_range && !cpu.tlbi_range, Missing::TLBI_RANGE),
            (self.bbm_level > cpu.bbm_level, Missing::BBM_LEVEL),
            (self.bbml2_noabort && !cpu.bbml2_noabort, Missing::BBML2_NOABORT),
            (self.hafdbs > cpu.hafdbs, Missing::HAFDBS),
            (self.granule_4k && !cpu.granule_4k, Missing::GRANULE_4K),
            (self.granule_4k_lpa2 && !cpu.granule_4k_lpa2, Missing::GRANULE_4K_LPA2),
            (self.pa_bits > cpu.pa_bits, Missing::PA_BITS),
        ];
        checks.iter().filter(|(lacks, _)| *lacks).fold(Missing::default(), |m, (_, bit)| m | *bit)
    }

    /// The features the boot CPU's use commits the kernel to before any
    /// other CPU is up: the 4 KiB granule, and BBML2_NOABORT if the linear
    /// map was built with blocks. The rest may still be withdrawn.
    pub fn in_use_at_boot(&self) -> Features {
        Features {
            midr: self.midr,
            tlbi_range: false,
            bbm_level: 0,
            bbml2_noabort: self.bbml2_noabort,
            hafdbs: 0,
            granule_4k: true,
            granule_4k_lpa2: false,
            pa_bits: 0,
        }
    }
}

/// What becomes of a CPU that comes up with features `cpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// It runs the kernel; the system's features are now these.
    Online(Features),
    /// It lacks features in use: it is parked, and the system's stay.
    Parked(Missing),
}

/// A CPU with features `cpu` comes up where every CPU up so far has
/// `system`, and the kernel already relies on `in_use`.
pub fn join(system: &Features, in_use: &Features, cpu: &Features) -> Joined {
    let missing = in_use.missing_in(cpu);
    if missing.is_empty() { Joined::Online(system.meet(cpu)) } else { Joined::Parked(missing) }
}
