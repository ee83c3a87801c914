//! The arm64 encodings the kernel builds or decodes besides descriptors
//! (`descriptor.rs`), as typed fields declared once: the operands of the
//! TLBI instructions, PAR_EL1 after an `at`, the SCTLR_EL1 and SCTLR_EL2
//! bits boot writes, and the ID-register fields the kernel's feature checks read
//! (those `aarch64-cpu` leaves out; the rest are its own definitions). Bit
//! positions are the Arm ARM's (DDI 0487): D8.14 "TLB maintenance"
//! operands, D23.2 "General system control registers" (PAR_EL1,
//! SCTLR_EL1, ID_AA64ISAR0_EL1).

use aarch64_cpu::registers::{ID_AA64DFR0_EL1, ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, ID_AA64MMFR2_EL1, MIDR_EL1};
use tock_registers::{LocalRegisterCopy, register_bitfields};

register_bitfields! {u64,
    /// `tlbi va*e1is, Xt`: the page's virtual address, VA[55:12], and no
    /// ASID (the `aa` forms ignore it).
    pub TLBI_VA [
        ADDR OFFSET(0) NUMBITS(44) []
    ],
    /// `tlbi rva*e1is, Xt` (FEAT_TLBIRANGE): (NUM + 1) << (5 * SCALE + 1)
    /// pages from BaseADDR.
    pub TLBI_RANGE [
        /// Translation granule: 0b01 is 4 KiB.
        TG OFFSET(46) NUMBITS(2) [
            Granule4K = 0b01
        ],
        SCALE OFFSET(44) NUMBITS(2) [],
        NUM OFFSET(39) NUMBITS(5) [],
        /// The level of the last entries, 0: any level.
        TTL OFFSET(37) NUMBITS(2) [],
        /// VA[48:12]; the hardware sign-extends bit 48.
        BADDR OFFSET(0) NUMBITS(37) []
    ],
    /// PAR_EL1 after `at s1e1r` / `at s1e1w`.
    pub PAR [
        /// Memory attributes of the translation, as a MAIR_EL1 byte (F = 0).
        ATTR OFFSET(56) NUMBITS(8) [],
        /// Output address PA[47:12] (F = 0).
        PA OFFSET(12) NUMBITS(36) [],
        /// Fault status code, as ESR's DFSC (F = 1).
        FST OFFSET(1) NUMBITS(6) [],
        /// The translation faulted.
        F OFFSET(0) NUMBITS(1) []
    ],
    /// SCTLR_EL1, the bits the kernel writes (aarch64-cpu lacks EIS, EOS,
    /// TSCXT, SPAN, LSMAOE, nTLSMD and ITD). Every bit not named here is
    /// written 0.
    pub SCTLR [
        /// Load/store multiple atomicity and ordering (AArch32 EL0 only);
        /// RES1 without FEAT_LSMAOC.
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// No trap of AArch32 EL0 load/store multiple to Device memory;
        /// RES1 without FEAT_LSMAOC.
        NTLSMD OFFSET(28) NUMBITS(1) [],
        /// PSTATE.PAN left unchanged on exception entry to EL1; RES1
        /// without FEAT_PAN.
        SPAN OFFSET(23) NUMBITS(1) [],
        /// Exception entry is context synchronizing; RES1 without FEAT_ExS.
        EIS OFFSET(22) NUMBITS(1) [],
        /// EL0 access to SCXTNUM_EL0 traps; RES1 without FEAT_CSV2_2.
        TSCXT OFFSET(20) NUMBITS(1) [],
        /// Instruction cache enable.
        I OFFSET(12) NUMBITS(1) [],
        /// Exception return is context synchronizing; RES1 without FEAT_ExS.
        EOS OFFSET(11) NUMBITS(1) [],
        /// SETEND disabled at AArch32 EL0; RES1 without AArch32 EL0.
        SED OFFSET(8) NUMBITS(1) [],
        /// Some IT uses disabled at AArch32 EL0; RES1 without AArch32 EL0.
        ITD OFFSET(7) NUMBITS(1) [],
        /// SP alignment check at EL1.
        SA OFFSET(3) NUMBITS(1) [],
        /// Data cache enable (stage-1 cacheability of data and walks).
        C OFFSET(2) NUMBITS(1) [],
        /// Stage-1 translation of the EL1&0 regime.
        M OFFSET(0) NUMBITS(1) []
    ],
    /// SCTLR_EL2 with HCR_EL2.E2H 0 (no VHE), the bits boot writes at EL2
    /// entry. Those named after their VHE meaning are RES1 in this layout;
    /// every bit not named is written 0 (M, C, I, EE, WXN among them).
    pub SCTLR_EL2_NVHE [
        /// LSMAOE with VHE; RES1 here.
        LSMAOE OFFSET(29) NUMBITS(1) [],
        /// nTLSMD with VHE; RES1 here.
        NTLSMD OFFSET(28) NUMBITS(1) [],
        /// SPAN with VHE; RES1 here.
        SPAN OFFSET(23) NUMBITS(1) [],
        /// Exception entry to EL2 is context synchronizing; RES1 without
        /// FEAT_ExS.
        EIS OFFSET(22) NUMBITS(1) [],
        /// nTWE with VHE; RES1 here.
        NTWE OFFSET(18) NUMBITS(1) [],
        /// nTWI with VHE; RES1 here.
        NTWI OFFSET(16) NUMBITS(1) [],
        /// Exception return from EL2 is context synchronizing; RES1
        /// without FEAT_ExS.
        EOS OFFSET(11) NUMBITS(1) [],
        /// CP15BEN with VHE; RES1 here.
        CP15BEN OFFSET(5) NUMBITS(1) [],
        /// SA0 with VHE; RES1 here.
        SA0 OFFSET(4) NUMBITS(1) []
    ],
    /// ID_AA64ISAR0_EL1's TLB field (not in aarch64-cpu).
    pub ID_AA64ISAR0 [
        /// 0b0001: TLBI outer-shareable; 0b0010: and range TLBIs.
        TLB OFFSET(56) NUMBITS(4) [
            Range = 0b0010
        ]
    ]
}

/// A `tlbi vaale1is` / `vaae1is` operand for the page at `va`.
#[inline]
pub fn tlbi_va_operand(va: u64) -> u64 {
    // `val` keeps the field's bits only: VA[55:12].
    TLBI_VA::ADDR.val(va >> 12).value
}

/// A `tlbi rvaale1is` / `rvaae1is` operand for the 4 KiB granule, any
/// level: (num + 1) << (5 * scale + 1) pages from `va`.
#[inline]
pub fn tlbi_range_operand(va: u64, scale: u64, num: u64) -> u64 {
    let value = TLBI_RANGE::TG::Granule4K
        + TLBI_RANGE::SCALE.val(scale)
        + TLBI_RANGE::NUM.val(num)
        + TLBI_RANGE::TTL.val(0)
        + TLBI_RANGE::BADDR.val(va >> 12);
    value.value
}

/// The pages a range-TLBI operand covers: (first address, page count).
pub fn tlbi_range_of(operand: u64) -> (u64, u64) {
    let op = LocalRegisterCopy::<u64, TLBI_RANGE::Register>::new(operand);
    // BaseADDR is VA[48:12]: shifted into place, then sign-extended from bit 48.
    let start = (((op.read(TLBI_RANGE::BADDR) << 12) as i64) << 15 >> 15) as u64;
    (start, (op.read(TLBI_RANGE::NUM) + 1) << (5 * op.read(TLBI_RANGE::SCALE) + 1))
}

/// What an `at` found, from PAR_EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Par {
    /// Translated: the page's physical address and its MAIR_EL1 byte.
    Translated { page: u64, attr: u8 },
    /// A fault, with its status code (ESR's DFSC encoding).
    Fault { status: u64 },
}

impl Par {
    pub fn decode(par: u64) -> Par {
        let par = LocalRegisterCopy::<u64, PAR::Register>::new(par);
        if par.is_set(PAR::F) {
            Par::Fault { status: par.read(PAR::FST) }
        } else {
            Par::Translated { page: par.read(PAR::PA) << 12, attr: par.read(PAR::ATTR) as u8 }
        }
    }
}

// The ID-register fields the kernel's feature checks read, each from the
// raw register value (so that a decode can be tested with any values).

/// ID_AA64ISAR0_EL1: FEAT_TLBIRANGE.
pub fn tlbi_range(isar0: u64) -> bool {
    LocalRegisterCopy::<u64, ID_AA64ISAR0::Register>::new(isar0).matches_all(ID_AA64ISAR0::TLB::Range)
}

/// ID_AA64MMFR2_EL1: the FEAT_BBM level.
pub fn bbm_level(mmfr2: u64) -> u8 {
    LocalRegisterCopy::<u64, ID_AA64MMFR2_EL1::Register>::new(mmfr2).read(ID_AA64MMFR2_EL1::BBM) as u8
}

/// ID_AA64MMFR1_EL1: FEAT_HAFDBS, 0 none, 1 Access flag, 2 also dirty state.
pub fn hafdbs(mmfr1: u64) -> u8 {
    LocalRegisterCopy::<u64, ID_AA64MMFR1_EL1::Register>::new(mmfr1).read(ID_AA64MMFR1_EL1::HAFDBS) as u8
}

/// ID_AA64MMFR0_EL1.TGran4: 0b0000 4 KiB, 0b0001 also with 52-bit
/// addresses (LPA2), 0b1111 not implemented.
pub fn tgran4(mmfr0: u64) -> u8 {
    LocalRegisterCopy::<u64, ID_AA64MMFR0_EL1::Register>::new(mmfr0).read(ID_AA64MMFR0_EL1::TGran4) as u8
}

/// ID_AA64MMFR0_EL1.PARange, as a number of address bits.
pub fn pa_bits(mmfr0: u64) -> u8 {
    match LocalRegisterCopy::<u64, ID_AA64MMFR0_EL1::Register>::new(mmfr0).read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

/// ID_AA64DFR0_EL1.PMUVer: 0 no PMU, 0xf IMPLEMENTATION DEFINED.
pub fn pmu_version(dfr0: u64) -> u8 {
    LocalRegisterCopy::<u64, ID_AA64DFR0_EL1::Register>::new(dfr0).read(ID_AA64DFR0_EL1::PMUVer) as u8
}

/// MIDR_EL1's fields: (implementer, variant, part number, revision).
pub fn midr_fields(midr: u64) -> (u64, u64, u64, u64) {
    let m = LocalRegisterCopy::<u64, MIDR_EL1::Register>::new(midr);
    (m.read(MIDR_EL1::Implementer), m.read(MIDR_EL1::Variant), m.read(MIDR_EL1::PartNum), m.read(MIDR_EL1::Revision))
}
