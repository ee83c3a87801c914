//! The kernel's pure modules, compiled for the host unchanged.

#![feature(allocator_api)]

extern crate alloc;
extern crate std;

/// The host's stand-ins for the kernel services the kernel files call
/// (printing, IRQ masking, the checker's and debug_pagealloc's hooks):
/// recorded, for the tests to read.
pub mod host;
pub use host::{console, debug_pagealloc, irq, semihosting, task};

/// The lazy MMU state machine alone (`lazy_mmu` below compiles it too,
/// as its private child): tests/lazy_state.rs drives it directly.
#[allow(clippy::duplicate_mod)]
#[path = "../../../../kernel/mm/lazy_mmu/state.rs"]
pub mod state;

#[path = "../../../../kernel/mm/area_alloc.rs"]
pub mod area_alloc;

#[path = "../../../../kernel/mm/span.rs"]
pub mod span;

#[path = "../../../../kernel/mm/tlb_policy.rs"]
pub mod tlb_policy;

/// The walker and the apply planner's count, over the tables a test
/// provides (its `super::span`, `super::addr` and `super::descriptor` are
/// this crate's).
#[path = "../../../../kernel/mm/walk.rs"]
pub mod walk;

/// The descriptor codec, with the address types it encodes (it reads them
/// from `crate::mm::addr`, as in the kernel).
#[path = "../../../../kernel/mm/addr.rs"]
pub mod addr;

// Kernel-internal items (the boot tables' attributes) go unused here.
#[allow(dead_code)]
#[path = "../../../../kernel/_arch/aarch64/descriptor.rs"]
pub mod descriptor;

/// The kernel's virtual address space (the checker asks what is linear map).
#[path = "../../../../kernel/mm/layout.rs"]
pub mod layout;

/// CTR_EL0 and the cache maintenance for code it asks for.
#[path = "../../../../kernel/_arch/aarch64/cache_type.rs"]
pub mod cache_type;

/// System-wide CPU features: the meet of every CPU's, and who is parked.
#[path = "../../../../kernel/cpufeature.rs"]
pub mod cpufeature;

#[path = "../../../../kernel/fixed_text.rs"]
pub mod fixed_text;

/// The page-table rules checker's rules and reports, without its kernel
/// glue (`pgtable_check/mod.rs`): the tests give the events, where each
/// happened, and a [`pgtable_check::shadow::Kernel`] of their own. (A
/// path on an inline module names the folder its modules are read from.)
#[path = "../../../../kernel/mm/pgtable_check"]
pub mod pgtable_check {
    // `Rule::index` serves the kernel's log (`pgtable_check/mod.rs`).
    #[allow(dead_code)]
    pub mod report;
    pub mod shadow;

    pub use crate::host::pgtable_check::*;
}

/// The memory manager: the kernel's paths to what is at this crate's
/// root, and the files that must sit in `mm` (their items are visible to
/// `crate::mm` only): the page tables, TLB maintenance, apply.
#[path = "../../../../kernel/mm"]
pub mod mm {
    pub use crate::{
        addr, descriptor, engine, frame_alloc, layout, lazy_mmu, pgtable_check, slab, span, tlb_policy, walk,
    };

    /// The kernel's page tables: walks and their locks, entries, runs of
    /// PTEs, map and unmap, table reclaim, over tables in host memory.
    /// (`map_leaves` and `linear_map_entry` serve files not compiled here:
    /// vmalloc_huge, pageattr.)
    #[allow(unused_imports, dead_code)]
    pub mod pgtable;

    /// TLB maintenance (the instructions recorded by the host).
    pub mod tlb;

    /// apply_to_page_range and its kin.
    pub mod apply;

    /// The tables as merged ranges, and per-region counts.
    pub mod ptdump;

    use crate::addr::{PhysAddr, VirtAddr};

    /// RAM is host memory here: its "physical" address is where the host
    /// put it, and the kernel reaches it there.
    pub fn phys_to_virt(pa: PhysAddr) -> VirtAddr {
        VirtAddr::new(pa.as_u64())
    }

    pub fn virt_to_phys(va: VirtAddr) -> PhysAddr {
        PhysAddr::new(va.as_u64())
    }

    /// The tests' way to items only `crate::mm` sees: each forwards.
    pub mod internal {
        use crate::addr::PhysAddr;

        /// Makes `root` the kernel's tables (`kernel_root()`), as boot does.
        pub fn set_kernel_root(root: PhysAddr) {
            super::pgtable::set_kernel_root(root);
        }

        pub fn exclusive_held() -> bool {
            super::pgtable::exclusive_held()
        }

        /// Walk guards the current task holds (and forgets them).
        pub fn recover_abandoned_walks() -> u32 {
            super::pgtable::recover_abandoned_walks()
        }
    }
}
pub use mm::{apply, pgtable, phys_to_virt, ptdump, tlb, virt_to_phys};

/// The arm64 layer: its barrier module (the instructions themselves are
/// the host's, recorded), the observer seam and the lazy MMU backends.
#[path = "../../../../kernel/_arch/aarch64"]
pub mod arch {
    pub use crate::descriptor;
    pub use crate::host::cpu;

    pub mod barrier;
    pub mod lazy_mmu;
    pub mod observe;
    pub mod sysreg;

    /// How PSCI calls reach the firmware (`psci.rs` makes them with `asm!`;
    /// the device tree only names the conduit).
    pub mod psci {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Conduit {
            Hvc,
            Smc,
        }
    }

    /// `tlbi.rs` issues its instructions with `asm!`: here each is counted
    /// and told through the kernel's barrier module as that file does,
    /// and recorded by the host with its operand.
    pub mod tlbi {
        use core::sync::atomic::Ordering::Relaxed;

        use super::barrier::{TLBI_ALL, TLBI_PAGE, TLBI_RANGE, TLBI_WALKS, count, report};
        use super::observe::Issued;
        use super::sysreg;
        use crate::host::tlbi_raw as raw;

        pub fn tlbi_vaale1is(va: u64) {
            count(&TLBI_PAGE, "tlbi vaale1is");
            raw::vaale1is(va);
            report(Issued::Tlbi { start: va, pages: 1, walks: false });
        }

        pub fn tlbi_vaale1_this_cpu(va: u64) {
            raw::vaale1(va);
        }

        pub fn tlbi_rvaale1is(operand: u64) {
            count(&TLBI_RANGE, "tlbi rvaale1is");
            raw::rvaale1is(operand);
            let (start, pages) = sysreg::tlbi_range_of(operand);
            report(Issued::Tlbi { start, pages, walks: false });
        }

        pub fn tlbi_vaae1is(va: u64) {
            TLBI_WALKS.fetch_add(1, Relaxed);
            count(&TLBI_PAGE, "tlbi vaae1is");
            raw::vaae1is(va);
            report(Issued::Tlbi { start: va, pages: 1, walks: true });
        }

        pub fn tlbi_rvaae1is(operand: u64) {
            TLBI_WALKS.fetch_add(1, Relaxed);
            count(&TLBI_RANGE, "tlbi rvaae1is");
            raw::rvaae1is(operand);
            let (start, pages) = sysreg::tlbi_range_of(operand);
            report(Issued::Tlbi { start, pages, walks: true });
        }

        pub fn tlbi_vmalle1is() {
            count(&TLBI_ALL, "tlbi vmalle1is");
            raw::vmalle1is();
            report(Issued::TlbiAll);
        }
    }
}

/// The CPU's features, as the memory code reads them (`cpu.rs`): the
/// host's (see `host::cpu_features`).
pub mod cpu {
    pub use crate::cpufeature::Features;
    pub use crate::host::cpu_features::features;
}

/// Stand-in for the kernel's per-CPU data: the number of CPUs it has room
/// for (the checker's shadow keeps that many), as in the kernel, and this
/// CPU (the host has one).
pub mod percpu {
    pub const MAX_CPUS: usize = 8;

    pub struct PerCpu {
        pub id: usize,
    }

    pub fn this_cpu() -> &'static PerCpu {
        &PerCpu { id: 0 }
    }
}

/// The generic lazy MMU layer (with its state machine and statistics),
/// over the arm64 backends and the current (host) task.
#[path = "../../../../kernel/mm/lazy_mmu/mod.rs"]
pub mod lazy_mmu;

/// The planted bugs' switches (debug builds, as the host tests are).
#[path = "../../../../kernel/planted.rs"]
pub mod planted;

/// The lazy MMU trace: its lines are recorded as printed.
#[path = "../../../../kernel/trace.rs"]
pub mod trace;

/// The locks (IRQs masked while held: recorded by the host's `cpu`).
/// (`SpinWait::new` serves the walkers' lock, not compiled here.)
#[allow(dead_code)]
#[path = "../../../../kernel/sync.rs"]
pub mod sync;

/// The physical frame allocator, over host memory (`host::init_ram`).
#[path = "../../../../kernel/mm/frame_alloc.rs"]
pub mod frame_alloc;

/// The slab allocator, over frames of that host memory.
#[path = "../../../../kernel/mm/slab.rs"]
pub mod slab;

/// The device tree: RAM, CPUs, PSCI, from a blob in host memory.
#[path = "../../../../kernel/dtb.rs"]
pub mod dtb;

/// The command line and boot options, from the host's "semihosting".
#[path = "../../../../kernel/boot_args.rs"]
pub mod boot_args;

/// Stand-in for the kernel's symbolizer, which reads the kernel's ELF
/// file: on the host no address is known, so it prints nothing, as the
/// kernel's does for an unknown one.
pub mod symbols {
    use core::fmt;

    pub struct Symbolized(pub u64);

    impl fmt::Display for Symbolized {
        fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
            Ok(())
        }
    }
}

/// The mapping engine: the one range walker behind every mapper (plan,
/// allocate, write runs, clear, split), over tables a test provides.
#[path = "../../../../kernel/mm/engine.rs"]
pub mod engine;

/// The kernel files' crate-internal items the tests call (an integration
/// test sees only what is `pub`): each forwards, nothing more.
pub mod internal {
    use crate::addr::PhysAddr;

    pub fn free_runs() -> std::vec::Vec<(PhysAddr, usize)> {
        crate::frame_alloc::free_runs()
    }

    pub fn managed() -> (PhysAddr, usize) {
        crate::frame_alloc::managed()
    }

    pub fn used_bitmap() -> std::vec::Vec<u64> {
        crate::frame_alloc::used_bitmap()
    }

    pub fn used_since(earlier: &[u64]) -> std::vec::Vec<PhysAddr> {
        crate::frame_alloc::used_since(earlier)
    }

    /// `alloc_frame_masked` under a mask of its own, as a 1-page vmalloc
    /// takes it (one IRQ save for the mask, none for the lock).
    pub fn alloc_frame_masked() -> Result<PhysAddr, crate::frame_alloc::FrameError> {
        let masked = crate::sync::IrqsMasked::mask();
        crate::frame_alloc::alloc_frame_masked(&masked)
    }

    /// `slab::kmalloc_bulk`: every slot of `objects` filled, all or none.
    pub fn kmalloc_bulk(
        layout: core::alloc::Layout,
        objects: &mut [core::ptr::NonNull<u8>],
    ) -> Result<(), core::alloc::AllocError> {
        crate::slab::kmalloc_bulk(layout, objects)
    }

    /// `lazy_mmu::write_run`: the store path.
    ///
    /// # Safety
    /// As the kernel's: `run` is memory the caller may write.
    pub unsafe fn write_run(
        run: crate::arch::observe::Run,
        new: impl Fn(usize) -> Option<crate::descriptor::Descriptor> + Copy,
    ) -> usize {
        // SAFETY: as our caller guarantees.
        unsafe { crate::lazy_mmu::write_run(run, new) }
    }

    pub fn queued_stores() -> usize {
        crate::lazy_mmu::queued_stores()
    }

    pub fn sync_stores() {
        crate::lazy_mmu::sync_stores()
    }

    pub fn flush_section() {
        crate::lazy_mmu::flush_section()
    }

    pub fn recover_abandoned() -> (u8, u8) {
        crate::lazy_mmu::recover_abandoned()
    }

    pub fn program() -> Option<&'static str> {
        crate::boot_args::program()
    }

    pub fn bool_option(name: &str) -> bool {
        crate::boot_args::bool_option(name)
    }

    pub const BOOLEAN_OPTIONS: &[(&str, bool)] = crate::boot_args::BOOLEAN_OPTIONS;
    pub const KERNEL_OPTIONS: &[&str] = crate::boot_args::KERNEL_OPTIONS;

    /// `check_options()`: the first bad boolean option, as (name, value).
    pub fn check_options() -> Result<(), (&'static str, &'static str)> {
        crate::boot_args::check_options().map_err(|bad| (bad.name, bad.value))
    }
}
