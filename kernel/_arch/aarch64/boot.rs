//! Early boot: the minimal page tables that let the kernel switch the MMU on
//! and run at its upper-half link address.
//!
//! This code runs at the image's *physical* address with the MMU off, called
//! from boot.s. It must only use PC-relative addressing (adrp/adr: any
//! static's address then comes out physical), must not panic (a panic
//! message holds absolute, virtual pointers) and must not touch the barrier
//! counters. Everything here is temporary: `mm::kernel_map` builds the real
//! tables, and the boot tables are dropped when TTBR1 is switched.
//!
//! What boot.s and this code write with the MMU off goes to memory,
//! around the caches (data accesses are non-cacheable then), and is read
//! cacheable once the MMU is on if it is .bss: zeroed by boot.s, and the
//! boot tables are in it. A cache may still hold a line of it from before
//! (left by firmware, or a speculative fill), which the first cacheable
//! read would hit instead of memory. So, as Linux's head.S does for the ID
//! map it builds with the MMU off (`create_idmap`: `dmb sy`, then
//! `dcache_inval_poc` over the tables), .bss is invalidated to the point
//! of coherency once written and before the MMU goes on. Nothing brings a
//! line back meanwhile: no other CPU runs yet, and this one allocates none
//! with its MMU off. The stacks used with the MMU off (the boot CPU's, a
//! secondary's early one) hold only the frames of the functions here,
//! which have returned when boot.s turns the MMU on (`enable_mmu`, after
//! them): after that a stack is written before it is read, so no stale
//! line of it is ever read, and neither needs invalidating. A secondary
//! writes nothing else with its MMU off.
//!
//! The boot tables map two things with one 1 GiB block each:
//! - TTBR1: KIMAGE_VADDR -> the GiB of RAM that holds the image, so the
//!   kernel can jump up to its link address;
//! - TTBR0: that same GiB at its physical address (identity), so the
//!   instruction after the MMU switch-on still fetches, and so that early
//!   code can read the device tree and its first page-table frames; plus the
//!   first GiB of the physical map as Device memory, for the early UART.

use aarch64_cpu::registers::*;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use super::barrier::raw;
use super::sysreg::{SCTLR, SCTLR_EL2_NVHE};
use crate::mm::addr::{BLOCK_1G, PhysAddr};
use crate::mm::descriptor::{Attributes, Descriptor, Level};
use crate::mm::layout::KIMAGE_VADDR;
use crate::percpu::MAX_CPUS;

#[repr(C, align(4096))]
struct BootTable([u64; 512]);

static mut BOOT_TTBR0_L0: BootTable = BootTable([0; 512]);
static mut BOOT_TTBR0_L1: BootTable = BootTable([0; 512]);
static mut BOOT_TTBR1_L0: BootTable = BootTable([0; 512]);
static mut BOOT_TTBR1_L1: BootTable = BootTable([0; 512]);

unsafe extern "C" {
    // linker.ld: where .bss starts and ends.
    static __bss_start: u8;
    static __bss_end: u8;
}

/// A range boot invalidated with the MMU off, at its physical addresses,
/// and the cache lines that took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invalidated {
    pub start: u64,
    pub end: u64,
    pub lines: u64,
}

/// What the boot CPU invalidated before its MMU went on (.bss). Written
/// with the MMU off after the invalidation of its own line, so read back
/// as written.
static mut BOOT_INVALIDATED: Invalidated = Invalidated { start: 0, end: 0, lines: 0 };

/// What the boot CPU invalidated with its MMU off: .bss.
pub fn boot_invalidated() -> Invalidated {
    // SAFETY: written once, before the MMU went on; only read since.
    unsafe { read_volatile(addr_of!(BOOT_INVALIDATED)) }
}

/// Builds the boot tables and readies the MMU; boot.s then turns it on.
///
/// # Safety
/// Called once, from boot.s, on the boot CPU with the MMU off.
#[unsafe(no_mangle)]
unsafe extern "C" fn __boot_prepare_mmu(kernel_phys: u64) {
    let ram_gib = kernel_phys & !(BLOCK_1G - 1);
    // SAFETY: MMU off, one CPU, nothing else uses these tables yet; the
    // addresses come from adrp and so are physical, as the walker needs.
    unsafe {
        let ttbr0_l0 = addr_of_mut!(BOOT_TTBR0_L0) as *mut u64;
        let ttbr0_l1 = addr_of_mut!(BOOT_TTBR0_L1) as *mut u64;
        let ttbr1_l0 = addr_of_mut!(BOOT_TTBR1_L0) as *mut u64;
        let ttbr1_l1 = addr_of_mut!(BOOT_TTBR1_L1) as *mut u64;

        // Identity: the GiB holding the image, and GiB 0 as device memory.
        let image_block = Descriptor::leaf(Level::L1, PhysAddr::new(ram_gib), Attributes::BOOT_RWX).0;
        write_volatile(ttbr0_l0.add(Level::L0.index(ram_gib)), Descriptor::table(PhysAddr::new(ttbr0_l1 as u64)).0);
        write_volatile(ttbr0_l1.add(Level::L1.index(ram_gib)), image_block);
        if Level::L1.index(ram_gib) != 0 && Level::L0.index(ram_gib) == 0 {
            write_volatile(ttbr0_l1, Descriptor::leaf(Level::L1, PhysAddr::new(0), Attributes::DEVICE).0);
        }

        // Upper half: KIMAGE_VADDR -> the same GiB.
        let va = KIMAGE_VADDR.as_u64();
        write_volatile(ttbr1_l0.add(Level::L0.index(va)), Descriptor::table(PhysAddr::new(ttbr1_l1 as u64)).0);
        write_volatile(ttbr1_l1.add(Level::L1.index(va)), image_block);

        // .bss and the tables in it were written around the caches: drop
        // any line of it a cache may hold (see the module doc).
        raw::dmb_sy();
        let (start, end) = (addr_of!(__bss_start) as u64, addr_of!(__bss_end) as u64);
        let lines = super::cache::dcache_inval_poc(start, end);
        write_volatile(addr_of_mut!(BOOT_INVALIDATED), Invalidated { start, end, lines });

        prepare_mmu(ttbr0_l0 as u64, ttbr1_l0 as u64);
    }
}

/// Translation set up, both tables in, stale TLB entries dropped: what
/// boot.s's `enable_mmu` (SCTLR_EL1 written whole: MMU, caches and stack
/// alignment checks on) needs, once this function's frame is done with.
fn prepare_mmu(ttbr0: u64, ttbr1: u64) {
    configure_translation();
    TTBR0_EL1.set(ttbr0);
    TTBR1_EL1.set(ttbr1);
    raw::dsb_ish();
    raw::isb();
    raw::tlbi_vmalle1();
    raw::dsb_ish();
    raw::isb();
}

/// SCTLR_EL2 from the first instruction at EL2 (entry there, with
/// virtualization on), written whole by boot.s before anything else: its
/// reset value is UNKNOWN on hardware, EE and the EIS/EOS pair among it.
/// Linux's `INIT_SCTLR_EL2_MMU_OFF` (`SCTLR_EL2_RES1 | ENDIAN_SET_EL2`,
/// arch/arm64/include/asm/sysreg.h, written by `init_el2_state` in
/// el2_setup.h) for a little-endian kernel: EL2's own MMU, caches and
/// alignment checks off, little-endian, and the bits RES1 without VHE
/// set. Among those are EIS and EOS: exception entry to EL2 and the `eret`
/// that drops to EL1 are context synchronizing on a FEAT_ExS core only
/// with them (Linux, head.S: "we cannot always rely on ERET synchronizing
/// writes to sysregs (e.g. if SCTLR_ELx.EOS is clear)").
pub const SCTLR_EL2_MMU_OFF: u64 = SCTLR_EL2_NVHE::EIS::SET.value
    | SCTLR_EL2_NVHE::EOS::SET.value
    | SCTLR_EL2_NVHE::LSMAOE::SET.value
    | SCTLR_EL2_NVHE::NTLSMD::SET.value
    | SCTLR_EL2_NVHE::SPAN::SET.value
    | SCTLR_EL2_NVHE::NTWE::SET.value
    | SCTLR_EL2_NVHE::NTWI::SET.value
    | SCTLR_EL2_NVHE::CP15BEN::SET.value
    | SCTLR_EL2_NVHE::SA0::SET.value;

/// SCTLR_EL1 from the first instruction at EL1 until the MMU goes on,
/// written whole by boot.s on both entry paths: its reset value is UNKNOWN
/// on hardware (EE, A, C, M among it), and entry at EL2 never set it. As
/// Linux's `INIT_SCTLR_EL1_MMU_OFF` (arch/arm64/include/asm/sysreg.h) for a
/// little-endian kernel, plus SPAN, SED and ITD. Every bit not named is 0:
/// little-endian (EE, E0E), no alignment checks on normal accesses (A),
/// no WXN (the boot tables map the image RWX), no pointer authentication
/// or BTI, and every EL0 control at its trapping value (no EL0 here).
pub const SCTLR_EL1_MMU_OFF: u64 =
    // Exception entry and return are context synchronizing. Without them
    // on a FEAT_ExS core they are not, and the course relies on both;
    // RES1 where FEAT_ExS is absent, so right on every core.
    SCTLR::EIS::SET.value
        | SCTLR::EOS::SET.value
        // PSTATE.PAN unchanged by exceptions: the kernel does not use PAN.
        // RES1 without FEAT_PAN. Linux sets it once the MMU is on.
        | SCTLR::SPAN::SET.value
        // Controls of AArch32 EL0 (never run) and SCXTNUM_EL0 (never
        // used), each RES1 where its feature is absent: set, as Linux.
        | SCTLR::LSMAOE::SET.value
        | SCTLR::NTLSMD::SET.value
        | SCTLR::TSCXT::SET.value
        | SCTLR::SED::SET.value
        // Linux leaves ITD 0 to run AArch32 EL0 code; with no EL0 here,
        // 1 is right both where it is a control and where it is RES1.
        | SCTLR::ITD::SET.value;

/// SCTLR_EL1 with the MMU on, as [`SCTLR_EL1_MMU_OFF`] plus the four bits
/// of Linux's `INIT_SCTLR_EL1_MMU_ON` that concern EL1 alone.
pub const SCTLR_EL1_MMU_ON: u64 = SCTLR_EL1_MMU_OFF
    // Stage-1 translation, through the tables just installed.
    | SCTLR::M::SET.value
    // Data and instruction caches: memory types come from MAIR_EL1.
    | SCTLR::C::SET.value
    | SCTLR::I::SET.value
    // SP alignment fault at EL1: catches a misaligned stack at once.
    | SCTLR::SA::SET.value;

/// The kernel's root table, for secondary CPUs to switch their MMU on
/// with. Written by the boot CPU before it starts them, and cleaned to
/// memory: a CPU with its MMU off reads memory, not caches.
static mut SECONDARY_TTBR1: u64 = 0;

/// Early stacks for secondary CPUs, used with the MMU off until they move
/// to their guarded kernel stacks.
#[unsafe(no_mangle)]
static mut __secondary_boot_stacks: [[u8; 4096]; MAX_CPUS] = [[0; 4096]; MAX_CPUS];

/// Records the kernel root for [`__secondary_prepare_mmu`]. Boot CPU only,
/// before any secondary starts.
pub fn set_secondary_ttbr1(root: u64) {
    // SAFETY: no secondary CPU runs yet; the clean makes the value visible
    // to a CPU whose accesses bypass the caches.
    unsafe {
        let slot = addr_of_mut!(SECONDARY_TTBR1);
        write_volatile(slot, root);
        super::mmu::clean_dcache_to_poc(slot as u64);
    }
}

/// # Safety
/// Called once per secondary CPU, from boot.s, with the MMU off, after the
/// boot CPU's [`set_secondary_ttbr1`]; boot.s then turns the MMU on.
#[unsafe(no_mangle)]
unsafe extern "C" fn __secondary_prepare_mmu() {
    // SAFETY: adrp gives the physical addresses the MMU-off CPU needs; the
    // boot identity map still covers the image, for the jump up.
    unsafe {
        let root = read_volatile(addr_of!(SECONDARY_TTBR1));
        prepare_mmu(addr_of_mut!(BOOT_TTBR0_L0) as u64, root);
    }
}

/// MAIR, TCR: the memory types of `MemoryType` and a 48-bit, 4 KiB-granule
/// layout in both halves, with table walks cacheable and inner shareable.
#[inline(always)]
fn configure_translation() {
    MAIR_EL1.write(
        MAIR_EL1::Attr0_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr0_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr1_Normal_Outer::NonCacheable
            + MAIR_EL1::Attr1_Normal_Inner::NonCacheable
            + MAIR_EL1::Attr2_Device::nonGathering_nonReordering_EarlyWriteAck,
    );
    // Our descriptors hold 48-bit output addresses; ask for no more.
    let ips = core::cmp::min(ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange), 0b101);
    TCR_EL1.write(
        TCR_EL1::T0SZ.val(16)
            + TCR_EL1::T1SZ.val(16)
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::TG1::KiB_4
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::SH0::Inner
            + TCR_EL1::IRGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN1::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::SH1::Inner
            + TCR_EL1::IPS.val(ips)
            + TCR_EL1::EPD0::EnableTTBR0Walks
            + TCR_EL1::EPD1::EnableTTBR1Walks,
    );
}
