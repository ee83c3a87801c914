//! Stage-1 translation table descriptors, 4 KiB granule (Arm ARM D8.3).
//!
//! One 64-bit format serves three kinds of entry:
//! - a *table* descriptor (levels 0-2) points to the next-level table;
//! - a *block* descriptor (levels 1-2) maps 1 GiB or 2 MiB directly;
//! - a *page* descriptor (level 3) maps 4 KiB.
//!
//! Bit 0 says valid. Bit 1 says table (levels 0-2) or page (level 3); a
//! block has bit 1 clear. The attribute bits are the same for blocks and
//! pages, so [`Attributes`] describes both.

use tock_registers::{LocalRegisterCopy, register_bitfields};

use crate::mm::addr::{PAGE_SHIFT, PhysAddr};

register_bitfields! {u64,
    pub STAGE1_DESCRIPTOR [
        /// Unprivileged execute-never.
        UXN OFFSET(54) NUMBITS(1) [],
        /// Privileged execute-never: EL1 cannot fetch instructions here.
        PXN OFFSET(53) NUMBITS(1) [],
        /// Hint that 16 adjacent entries map one contiguous, aligned range.
        CONTIGUOUS OFFSET(52) NUMBITS(1) [],
        /// Output address bits [47:12]: next table, block or page.
        OUTPUT_ADDR OFFSET(12) NUMBITS(36) [],
        /// Not global: the entry is tagged with the current ASID.
        NG OFFSET(11) NUMBITS(1) [],
        /// Access flag. Clear means the first access faults (no FEAT_HAFDBS use here).
        AF OFFSET(10) NUMBITS(1) [],
        /// Shareability for Normal memory.
        SH OFFSET(8) NUMBITS(2) [
            NonShareable = 0b00,
            OuterShareable = 0b10,
            InnerShareable = 0b11
        ],
        /// Data access permissions.
        AP OFFSET(6) NUMBITS(2) [
            RW_EL1 = 0b00,
            RW_EL1_EL0 = 0b01,
            RO_EL1 = 0b10,
            RO_EL1_EL0 = 0b11
        ],
        /// Index into MAIR_EL1; see [`MemoryType`].
        ATTR_INDX OFFSET(2) NUMBITS(3) [],
        /// Table/page (1) or block (0).
        TYPE OFFSET(1) NUMBITS(1) [
            Block = 0,
            TableOrPage = 1
        ],
        VALID OFFSET(0) NUMBITS(1) []
    ]
}

type Raw = LocalRegisterCopy<u64, STAGE1_DESCRIPTOR::Register>;

/// The memory types the kernel programs into MAIR_EL1, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryType {
    /// Normal, inner/outer write-back, read/write-allocate.
    NormalWriteBack = 0,
    /// Normal, non-cacheable.
    NormalNonCacheable = 1,
    /// Device-nGnRE: MMIO.
    Device = 2,
}

impl MemoryType {
    fn from_index(index: u64) -> Option<MemoryType> {
        match index {
            0 => Some(MemoryType::NormalWriteBack),
            1 => Some(MemoryType::NormalNonCacheable),
            2 => Some(MemoryType::Device),
            _ => None,
        }
    }
}

/// What a block or page mapping allows, in the terms the kernel cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub memory: MemoryType,
    pub writable: bool,
    pub executable: bool,
    /// Tagged with an ASID (nG). Kernel mappings are global.
    pub not_global: bool,
    pub contiguous: bool,
}

impl Attributes {
    /// Kernel data: read/write, never executable.
    pub const KERNEL_RW: Attributes = Attributes::normal(true, false);
    /// Kernel read-only data.
    pub const KERNEL_RO: Attributes = Attributes::normal(false, false);
    /// Kernel text: read-only and executable.
    pub const KERNEL_RX: Attributes = Attributes::normal(false, true);
    /// MMIO: device memory, read/write, never executable.
    pub const DEVICE: Attributes = Attributes {
        memory: MemoryType::Device,
        writable: true,
        executable: false,
        not_global: false,
        contiguous: false,
    };

    /// Only for the temporary boot tables (see `_arch/aarch64/boot.rs`): one
    /// 1 GiB block must hold both the image's text and its data before the
    /// real tables exist. Nothing after boot is mapped writable and executable.
    pub(crate) const BOOT_RWX: Attributes = Attributes::normal(true, true);

    const fn normal(writable: bool, executable: bool) -> Attributes {
        Attributes { memory: MemoryType::NormalWriteBack, writable, executable, not_global: false, contiguous: false }
    }

    /// W^X: nothing the kernel maps is both writable and executable.
    pub fn is_wx(&self) -> bool {
        self.writable && self.executable
    }
}

/// Which translation level an entry sits at: 0 (512 GiB per entry) to 3 (4 KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub u8);

impl Level {
    pub const L0: Level = Level(0);
    pub const L1: Level = Level(1);
    pub const L2: Level = Level(2);
    pub const L3: Level = Level(3);

    /// Bytes covered by one entry at this level.
    #[inline]
    pub const fn entry_size(self) -> u64 {
        1u64 << self.shift()
    }

    /// Which of a table's 512 entries at this level covers `va`.
    #[inline]
    pub const fn index(self, va: u64) -> usize {
        ((va >> self.shift()) & 511) as usize
    }

    /// Bit position of this level's index in a virtual address.
    #[inline]
    pub const fn shift(self) -> u32 {
        12 + 9 * (3 - self.0 as u32)
    }

    #[inline]
    pub fn next(self) -> Option<Level> {
        (self.0 < 3).then(|| Level(self.0 + 1))
    }
}

/// What an entry means at the level it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not valid: an access through it takes a translation fault.
    Invalid,
    /// Points to a next-level table.
    Table(PhysAddr),
    /// Maps `level.entry_size()` bytes at this output address.
    Leaf { addr: PhysAddr, attrs: Attributes },
}

/// A raw 64-bit descriptor, as stored in a table.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub struct Descriptor(pub u64);

impl core::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Descriptor({:#018x})", self.0)
    }
}

impl Descriptor {
    pub const INVALID: Descriptor = Descriptor(0);

    #[inline]
    pub fn is_valid(self) -> bool {
        self.0 & 1 != 0
    }

    /// Does this descriptor map memory at `level`, a block or a page (what
    /// [`Descriptor::decode`] calls [`Entry::Leaf`])? Two bits, no decoding:
    /// for loops that only need to know whether there is something to clear.
    #[inline]
    pub fn is_leaf(self, level: Level) -> bool {
        match level.0 {
            0 => false,
            3 => self.0 & 0b11 == 0b11,
            _ => self.0 & 0b11 == 0b01,
        }
    }

    /// A table descriptor pointing at the next-level table at `table`.
    pub fn table(table: PhysAddr) -> Descriptor {
        let mut d = Raw::new(0);
        d.write(
            STAGE1_DESCRIPTOR::VALID::SET
                + STAGE1_DESCRIPTOR::TYPE::TableOrPage
                + STAGE1_DESCRIPTOR::OUTPUT_ADDR.val(table.as_u64() >> 12),
        );
        Descriptor(d.get())
    }

    /// A leaf: a block at levels 1-2, a page at level 3.
    pub fn leaf(level: Level, addr: PhysAddr, attrs: Attributes) -> Descriptor {
        let mut d = Raw::new(0);
        let shareability = match attrs.memory {
            MemoryType::Device => STAGE1_DESCRIPTOR::SH::NonShareable,
            _ => STAGE1_DESCRIPTOR::SH::InnerShareable,
        };
        let access = if attrs.writable { STAGE1_DESCRIPTOR::AP::RW_EL1 } else { STAGE1_DESCRIPTOR::AP::RO_EL1 };
        let kind =
            if level == Level::L3 { STAGE1_DESCRIPTOR::TYPE::TableOrPage } else { STAGE1_DESCRIPTOR::TYPE::Block };
        d.write(
            STAGE1_DESCRIPTOR::VALID::SET
                + kind
                + STAGE1_DESCRIPTOR::OUTPUT_ADDR.val(addr.as_u64() >> 12)
                + STAGE1_DESCRIPTOR::ATTR_INDX.val(attrs.memory as u64)
                + shareability
                + access
                + STAGE1_DESCRIPTOR::AF::SET
                + STAGE1_DESCRIPTOR::NG.val(attrs.not_global as u64)
                + STAGE1_DESCRIPTOR::CONTIGUOUS.val(attrs.contiguous as u64)
                // EL0 never executes kernel memory; EL1 only where asked.
                + STAGE1_DESCRIPTOR::UXN::SET
                + STAGE1_DESCRIPTOR::PXN.val(!attrs.executable as u64),
        );
        Descriptor(d.get())
    }

    /// The leaves of `attrs` at `level` as a template: [`Descriptor::leaf`]
    /// with output address 0, encoded once, so that a loop over many pages
    /// makes each one with [`Descriptor::with_output`], a mask and an OR.
    #[inline]
    pub fn leaf_template(level: Level, attrs: Attributes) -> Descriptor {
        Descriptor::leaf(level, PhysAddr::new(0), attrs)
    }

    /// This descriptor with output address `addr` (bits 47:12) instead of
    /// its own: `leaf_template(level, attrs).with_output(addr)` is
    /// `leaf(level, addr, attrs)`.
    #[inline]
    pub fn with_output(self, addr: PhysAddr) -> Descriptor {
        let mut d = Raw::new(self.0);
        d.modify(STAGE1_DESCRIPTOR::OUTPUT_ADDR.val(addr.as_u64() >> 12));
        Descriptor(d.get())
    }

    /// This page with its output address `pages` pages further on (Linux's
    /// `pte_advance_pfn`): one add on the word, nothing masked, so that a
    /// loop over consecutive pages (`pgtable::set_ptes`) keeps a running
    /// descriptor. The new address must still fit bits 47:12, as any page
    /// of RAM does: a carry out of them would land in the attributes.
    #[inline(always)]
    pub fn advance_pfn(self, pages: u64) -> Descriptor {
        let next = Descriptor(self.0 + (pages << PAGE_SHIFT));
        debug_assert_eq!(next.output(), self.output().add(pages << PAGE_SHIFT), "{self:?} advanced {pages} pages");
        next
    }

    /// The output address (bits 47:12): the next table, block or page.
    #[inline]
    pub fn output(self) -> PhysAddr {
        PhysAddr::new(Raw::new(self.0).read(STAGE1_DESCRIPTOR::OUTPUT_ADDR) << 12)
    }

    /// Is the contiguous bit set (a leaf of a run of 16, `CONT_PTES`)?
    #[inline]
    pub fn is_contiguous(self) -> bool {
        Raw::new(self.0).is_set(STAGE1_DESCRIPTOR::CONTIGUOUS)
    }

    /// This leaf with the contiguous bit set, the rest unchanged.
    #[inline]
    pub fn with_contiguous(self) -> Descriptor {
        let mut d = Raw::new(self.0);
        d.modify(STAGE1_DESCRIPTOR::CONTIGUOUS::SET);
        Descriptor(d.get())
    }

    /// This leaf with the contiguous bit cleared, the rest unchanged: what
    /// a run becomes when it is split into 16 plain pages.
    #[inline]
    pub fn without_contiguous(self) -> Descriptor {
        let mut d = Raw::new(self.0);
        d.modify(STAGE1_DESCRIPTOR::CONTIGUOUS::CLEAR);
        Descriptor(d.get())
    }

    /// This leaf read-only at EL1 (AP = `RO_EL1`), the rest unchanged: the
    /// change `set_memory_ro` makes, as one bit operation.
    #[inline]
    pub fn read_only(self) -> Descriptor {
        let mut d = Raw::new(self.0);
        d.modify(STAGE1_DESCRIPTOR::AP::RO_EL1);
        Descriptor(d.get())
    }

    /// Decodes the entry as read from a table at `level`.
    #[inline]
    pub fn decode(self, level: Level) -> Entry {
        let d = Raw::new(self.0);
        if !d.is_set(STAGE1_DESCRIPTOR::VALID) {
            return Entry::Invalid;
        }
        let addr = PhysAddr::new(d.read(STAGE1_DESCRIPTOR::OUTPUT_ADDR) << 12);
        let table_or_page = d.matches_all(STAGE1_DESCRIPTOR::TYPE::TableOrPage);
        if level != Level::L3 && table_or_page {
            return Entry::Table(addr);
        }
        if level == Level::L0 || (level == Level::L3 && !table_or_page) {
            // A block at level 0, or the reserved encoding at level 3: the
            // walker treats both as a translation fault.
            return Entry::Invalid;
        }
        let memory = MemoryType::from_index(d.read(STAGE1_DESCRIPTOR::ATTR_INDX)).unwrap_or(MemoryType::Device);
        let attrs = Attributes {
            memory,
            writable: d.matches_all(STAGE1_DESCRIPTOR::AP::RW_EL1),
            executable: !d.is_set(STAGE1_DESCRIPTOR::PXN),
            not_global: d.is_set(STAGE1_DESCRIPTOR::NG),
            contiguous: d.is_set(STAGE1_DESCRIPTOR::CONTIGUOUS),
        };
        Entry::Leaf { addr, attrs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test_case]
    fn leaf_descriptors_round_trip_at_every_level() {
        let pa = PhysAddr::new(0x4000_0000);
        for level in [Level::L1, Level::L2, Level::L3] {
            for attrs in [Attributes::KERNEL_RW, Attributes::KERNEL_RO, Attributes::KERNEL_RX, Attributes::DEVICE] {
                let d = Descriptor::leaf(level, pa, attrs);
                assert_eq!(d.decode(level), Entry::Leaf { addr: pa, attrs }, "{level:?} {attrs:?} {d:?}");
            }
        }
    }

    #[test_case]
    fn templates_and_bit_operations_encode_as_leaf_does() {
        let pa = PhysAddr::new(0x4020_3000);
        for level in [Level::L1, Level::L2, Level::L3] {
            let pa = PhysAddr::new(pa.as_u64() & !(level.entry_size() - 1));
            for attrs in [Attributes::KERNEL_RW, Attributes::KERNEL_RO, Attributes::KERNEL_RX, Attributes::DEVICE] {
                let made = Descriptor::leaf_template(level, attrs).with_output(pa);
                assert_eq!(made, Descriptor::leaf(level, pa, attrs), "{level:?} {attrs:?}");
                let other = made.with_output(PhysAddr::new(0x8000_0000));
                assert_eq!(other, Descriptor::leaf(level, PhysAddr::new(0x8000_0000), attrs));
                let read_only = Attributes { writable: false, ..attrs };
                assert_eq!(made.read_only(), Descriptor::leaf(level, pa, read_only), "{level:?} {attrs:?}");
            }
        }
    }

    #[test_case]
    fn advancing_a_page_moves_its_output_address_and_nothing_else() {
        let pa = PhysAddr::new(0x4020_3000);
        for attrs in [Attributes::KERNEL_RW, Attributes::KERNEL_RO, Attributes::KERNEL_RX, Attributes::DEVICE] {
            let first = Descriptor::leaf(Level::L3, pa, attrs);
            for pages in [0, 1, 511] {
                let expected = Descriptor::leaf(Level::L3, pa.add(pages << PAGE_SHIFT), attrs);
                assert_eq!(first.advance_pfn(pages), expected, "{attrs:?} advanced {pages} pages");
            }
        }
    }

    #[test_case]
    fn is_leaf_says_what_decode_says() {
        let pa = PhysAddr::new(0x4000_0000);
        let samples = [
            Descriptor::INVALID,
            Descriptor::table(pa),
            Descriptor::leaf(Level::L2, pa, Attributes::KERNEL_RW),
            Descriptor::leaf(Level::L3, pa, Attributes::KERNEL_RO),
            Descriptor(0b10),
        ];
        for level in [Level::L0, Level::L1, Level::L2, Level::L3] {
            for d in samples {
                let leaf = matches!(d.decode(level), Entry::Leaf { .. });
                assert_eq!(d.is_leaf(level), leaf, "{d:?} at {level:?}");
            }
        }
    }

    #[test_case]
    fn page_and_block_differ_in_bit_one() {
        let pa = PhysAddr::new(0x4020_0000);
        let block = Descriptor::leaf(Level::L2, pa, Attributes::KERNEL_RW);
        let page = Descriptor::leaf(Level::L3, pa, Attributes::KERNEL_RW);
        assert_eq!(block.0 & 0b11, 0b01);
        assert_eq!(page.0 & 0b11, 0b11);
        // The same bits mean "table" above level 3, and "reserved" (invalid)
        // as a level-3 block.
        assert_eq!(page.decode(Level::L2), Entry::Table(pa));
        assert_eq!(block.decode(Level::L3), Entry::Invalid);
    }

    #[test_case]
    fn kernel_attributes_encode_as_arm_defines_them() {
        let rx = Descriptor::leaf(Level::L3, PhysAddr::new(0x1000), Attributes::KERNEL_RX).0;
        let rw = Descriptor::leaf(Level::L3, PhysAddr::new(0x1000), Attributes::KERNEL_RW).0;
        assert_eq!(rx >> 53 & 1, 0, "text: PXN clear");
        assert_eq!(rx >> 54 & 1, 1, "text: UXN set");
        assert_eq!(rx >> 6 & 0b11, 0b10, "text: AP = read-only at EL1");
        assert_eq!(rw >> 53 & 1, 1, "data: PXN set");
        assert_eq!(rw >> 6 & 0b11, 0b00, "data: AP = read/write at EL1");
        assert_eq!(rw >> 10 & 1, 1, "AF set");
        assert_eq!(rw >> 8 & 0b11, 0b11, "inner shareable");
        assert!(!Attributes::KERNEL_RX.is_wx() && !Attributes::KERNEL_RW.is_wx());
    }
}
