//! The descriptor codec: what `Descriptor::leaf` and `Descriptor::table`
//! encode, `decode` reads back at the same level; the bit operations the
//! store loops use (`leaf_template` + `with_output`, `read_only`,
//! `is_leaf`, `is_valid`) agree with the full encoder and decoder for every
//! input, including descriptors no encoder made.

use lazymmu_props::addr::PhysAddr;
use lazymmu_props::descriptor::{Attributes, Descriptor, Entry, Level, MemoryType};
use proptest::prelude::*;

/// Output addresses are bits 47:12.
const OUTPUT_MASK: u64 = ((1 << 48) - 1) & !0xfff;

fn memory_type() -> impl Strategy<Value = MemoryType> {
    prop_oneof![Just(MemoryType::NormalWriteBack), Just(MemoryType::NormalNonCacheable), Just(MemoryType::Device)]
}

fn attributes() -> impl Strategy<Value = Attributes> {
    (memory_type(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(memory, writable, executable, not_global, contiguous)| Attributes {
            memory,
            writable,
            executable,
            not_global,
            contiguous,
        },
    )
}

/// The levels a leaf can sit at with a 4 KiB granule.
fn leaf_level() -> impl Strategy<Value = Level> {
    prop_oneof![Just(Level::L1), Just(Level::L2), Just(Level::L3)]
}

/// An output address aligned for a leaf at `level`.
fn aligned(raw: u64, level: Level) -> PhysAddr {
    PhysAddr::new(raw & OUTPUT_MASK & !(level.entry_size() - 1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]

    #[test]
    fn a_leaf_decodes_to_what_it_encoded(level in leaf_level(), raw in any::<u64>(), attrs in attributes()) {
        let pa = aligned(raw, level);
        let d = Descriptor::leaf(level, pa, attrs);
        prop_assert!(d.is_valid());
        prop_assert!(d.is_leaf(level));
        prop_assert_eq!(d.decode(level), Entry::Leaf { addr: pa, attrs }, "{:?}", d);
        // Read one level off, the same bits mean something else (or nothing).
        if level == Level::L3 {
            prop_assert_eq!(d.decode(Level::L2), Entry::Table(pa), "a page is a table one level up");
        } else {
            prop_assert_eq!(d.decode(Level::L3), Entry::Invalid, "a block is the reserved encoding at level 3");
        }
        prop_assert_eq!(d.decode(Level::L0), if level == Level::L3 { Entry::Table(pa) } else { Entry::Invalid });
    }

    #[test]
    fn a_template_with_an_output_address_is_the_leaf(
        level in leaf_level(),
        raw in any::<u64>(),
        other in any::<u64>(),
        attrs in attributes(),
    ) {
        let pa = aligned(raw, level);
        let template = Descriptor::leaf_template(level, attrs);
        prop_assert_eq!(template.with_output(pa), Descriptor::leaf(level, pa, attrs));
        // with_output replaces the address, whatever was there.
        let before = Descriptor::leaf(level, aligned(other, level), attrs);
        prop_assert_eq!(before.with_output(pa), Descriptor::leaf(level, pa, attrs));
    }

    #[test]
    fn read_only_takes_write_away_and_nothing_else(level in leaf_level(), raw in any::<u64>(), attrs in attributes()) {
        let pa = aligned(raw, level);
        let ro = Attributes { writable: false, ..attrs };
        prop_assert_eq!(Descriptor::leaf(level, pa, attrs).read_only(), Descriptor::leaf(level, pa, ro));
    }

    #[test]
    fn a_table_decodes_to_its_address_above_level_3(raw in any::<u64>(), level in 0u8..3) {
        let pa = PhysAddr::new(raw & OUTPUT_MASK);
        let d = Descriptor::table(pa);
        prop_assert!(d.is_valid());
        prop_assert!(!d.is_leaf(Level(level)));
        prop_assert_eq!(d.decode(Level(level)), Entry::Table(pa));
    }

    #[test]
    fn the_two_bit_tests_agree_with_decode_on_any_bits(bits in any::<u64>(), level in 0u8..4) {
        let level = Level(level);
        let d = Descriptor(bits);
        let decoded = d.decode(level);
        prop_assert_eq!(d.is_valid(), bits & 1 == 1);
        if !d.is_valid() {
            prop_assert_eq!(decoded, Entry::Invalid);
        }
        prop_assert_eq!(d.is_leaf(level), matches!(decoded, Entry::Leaf { .. }), "{:?} at {:?}: {:?}", d, level, decoded);
    }
}

#[test]
fn the_kernels_attribute_sets_encode_as_the_arm_arm_says() {
    // Bits, for a page at 0x4000_0000 (ARM DDI 0487, D8.3 "Translation
    // table descriptor formats"): valid + page (0b11), AttrIndx 0, SH inner
    // (0b11 << 8), AF (1 << 10), UXN (1 << 54), PXN (1 << 53) unless
    // executable, AP[2] (1 << 7) if read-only.
    let pa = PhysAddr::new(0x4000_0000);
    let base = 0b11 | (0b11 << 8) | (1 << 10) | (1 << 54) | 0x4000_0000;
    assert_eq!(Descriptor::leaf(Level::L3, pa, Attributes::KERNEL_RW).0, base | (1 << 53));
    assert_eq!(Descriptor::leaf(Level::L3, pa, Attributes::KERNEL_RO).0, base | (1 << 53) | (1 << 7));
    assert_eq!(Descriptor::leaf(Level::L3, pa, Attributes::KERNEL_RX).0, base | (1 << 7));
    // Device: AttrIndx 2, not shareable, never executable.
    let device = 0b11 | (2 << 2) | (1 << 10) | (1 << 54) | (1 << 53) | 0x4000_0000;
    assert_eq!(Descriptor::leaf(Level::L3, pa, Attributes::DEVICE).0, device);
    // A block at level 2 has bit 1 clear.
    assert_eq!(Descriptor::leaf(Level::L2, pa, Attributes::KERNEL_RW).0, (base | (1 << 53)) & !0b10);
    assert_eq!(Descriptor::table(pa).0, 0b11 | 0x4000_0000);
}
