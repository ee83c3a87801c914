//! The system-register encodings (`_arch/aarch64/sysreg.rs`), against the
//! Arm ARM's bit positions written out here: TLBI operands, PAR_EL1, and
//! the ID-register fields the feature checks read, with real CPUs' values.

use lazymmu_props::arch::sysreg::{self, Par};
use proptest::prelude::*;

/// A kernel address, page aligned (bits 63..48 all ones).
fn kernel_va() -> impl Strategy<Value = u64> {
    (0u64..1 << 36).prop_map(|page| 0xffff_0000_0000_0000 | page << 12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn range_operands_encode_base_scale_num_and_decode_back(va in kernel_va(), scale in 0u64..4, num in 0u64..32) {
        let op = sysreg::tlbi_range_operand(va, scale, num);
        // TG [47:46] = 0b01 (4 KiB), SCALE [45:44], NUM [43:39], TTL [38:37]
        // = 0, BaseADDR [36:0] = VA[48:12].
        prop_assert_eq!(op >> 46 & 3, 1);
        prop_assert_eq!(op >> 44 & 3, scale);
        prop_assert_eq!(op >> 39 & 31, num);
        prop_assert_eq!(op >> 37 & 3, 0);
        prop_assert_eq!(op & ((1 << 37) - 1), va >> 12 & ((1 << 37) - 1));
        prop_assert_eq!(op >> 48, 0);
        prop_assert_eq!(sysreg::tlbi_range_of(op), (va, (num + 1) << (5 * scale + 1)));
    }

    #[test]
    fn page_operands_hold_va_55_12(va in any::<u64>()) {
        prop_assert_eq!(sysreg::tlbi_va_operand(va), va >> 12 & ((1 << 44) - 1));
    }

    #[test]
    fn par_decodes_a_translation_or_a_fault(pa in 0u64..1 << 36, attr: u8, fst in 0u64..64) {
        // Success: PA [47:12], ATTR [63:56]; fault: F [0], FST [6:1].
        prop_assert_eq!(Par::decode(pa << 12 | (attr as u64) << 56), Par::Translated { page: pa << 12, attr });
        prop_assert_eq!(Par::decode(fst << 1 | 1), Par::Fault { status: fst });
    }
}

#[test]
fn id_register_fields_of_real_cpus() {
    // QEMU -cpu max: ISAR0.TLB = 0b0010 (range TLBIs), cortex-a72: 0.
    assert!(sysreg::tlbi_range(0x0221_1000_1021_1120));
    assert!(!sysreg::tlbi_range(0x0000_0000_0001_1120));
    assert!(!sysreg::tlbi_range(1 << 56), "outer-shareable TLBIs only");
    // MMFR2.BBM [55:52], MMFR1.HAFDBS [3:0], MMFR0.TGran4 [31:28] and
    // PARange [3:0], DFR0.PMUVer [11:8].
    assert_eq!(sysreg::bbm_level(2 << 52), 2);
    assert_eq!(sysreg::hafdbs(0x1012_2102), 2);
    assert_eq!(sysreg::tgran4(0xf << 28), 0xf);
    assert_eq!(sysreg::tgran4(0x1 << 28 | 0x5), 1);
    for (range, bits) in [(0, 32), (1, 36), (2, 40), (3, 42), (4, 44), (5, 48), (6, 52)] {
        assert_eq!(sysreg::pa_bits(range), bits);
    }
    assert_eq!(sysreg::pmu_version(0x4 << 8), 4);
    // Cortex-A72 r0p3: implementer 0x41 ('A'), part 0xd08.
    assert_eq!(sysreg::midr_fields(0x410f_d083), (0x41, 0, 0xd08, 3));
}
