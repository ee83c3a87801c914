//! Everything that is arm64 itself: the assembly, the system registers,
//! and the encodings the architecture defines (stage-1 descriptors in
//! `descriptor.rs`; TLBI operands, PAR_EL1 and ID-register fields in
//! `sysreg.rs`). The rest of the kernel reaches it through the small
//! generic modules beside `arch`.

pub mod barrier;
pub mod boot;
pub mod cache;
pub mod cache_type;
pub mod context;
pub mod cpu;
pub mod descriptor;
pub mod exception;
pub mod lazy_mmu;
pub mod mmu;
pub mod observe;
pub mod psci;
pub mod semihosting;
pub mod sysreg;
pub mod timer;
pub mod tlbi;

core::arch::global_asm!(
    include_str!("boot.s"),
    SCTLR_EL1_MMU_OFF = const boot::SCTLR_EL1_MMU_OFF,
    SCTLR_EL1_MMU_ON = const boot::SCTLR_EL1_MMU_ON,
    SCTLR_EL2_MMU_OFF = const boot::SCTLR_EL2_MMU_OFF,
);
