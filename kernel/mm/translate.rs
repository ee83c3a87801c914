//! Two answers to "what does this virtual address map to?": the hardware's,
//! from `at s1e1r` / `at s1e1w` (a real walk of the tables in memory,
//! reported in PAR_EL1), and the software walker's. Tests hold them side by
//! side; the hardware walk is the oracle for "what the MMU would see".

use super::addr::{PhysAddr, VirtAddr};
use super::descriptor::{Attributes, Entry, Level, MemoryType};
use super::pgtable;
use crate::arch::exception::FaultStatus;
use crate::arch::mmu;
use crate::arch::sysreg::Par;

/// The access `at` checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// PAR_EL1, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HwTranslation {
    /// The walk succeeded: output address and the MAIR attribute byte.
    Mapped { pa: PhysAddr, mair_attr: u8 },
    /// The walk faulted, as the access itself would have.
    Fault(FaultStatus),
}

/// The MAIR_EL1 byte each memory type is programmed with (boot.rs).
pub fn mair_attr(memory: MemoryType) -> u8 {
    match memory {
        MemoryType::NormalWriteBack => 0xff,
        MemoryType::NormalNonCacheable => 0x44,
        MemoryType::Device => 0x04,
    }
}

/// Asks the MMU: may EL1 make this access, and to which physical address?
pub fn hw_translate(va: VirtAddr, access: Access) -> HwTranslation {
    match Par::decode(mmu::at_s1e1(va.as_u64(), access == Access::Write)) {
        Par::Translated { page, attr } => {
            HwTranslation::Mapped { pa: PhysAddr::new(page | (va.as_u64() & 0xfff)), mair_attr: attr }
        }
        // PAR_EL1.FST uses the same fault status codes as ESR.
        Par::Fault { status } => HwTranslation::Fault(FaultStatus::decode(status)),
    }
}

/// What the software walker finds for `va` in the kernel's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwTranslation {
    Mapped {
        pa: PhysAddr,
        attrs: Attributes,
        level: Level,
    },
    /// No valid entry; `level` is where the walk stopped.
    Unmapped {
        level: Level,
    },
}

pub fn sw_translate(va: VirtAddr) -> SwTranslation {
    let found = pgtable::lookup(va);
    match found.entry {
        Entry::Leaf { addr, attrs } => {
            let offset = va.as_u64() & (found.level.entry_size() - 1);
            SwTranslation::Mapped { pa: addr.add(offset), attrs, level: found.level }
        }
        _ => SwTranslation::Unmapped { level: found.level },
    }
}

/// Both answers for one address: the hardware's for a read and for a
/// write, and the software walker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub read: HwTranslation,
    pub write: HwTranslation,
    pub software: SwTranslation,
}

pub fn translate(va: VirtAddr) -> Translation {
    Translation {
        read: hw_translate(va, Access::Read),
        write: hw_translate(va, Access::Write),
        software: sw_translate(va),
    }
}
