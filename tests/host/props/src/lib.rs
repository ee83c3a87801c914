//! The kernel's pure modules, compiled for the host unchanged.

#![feature(allocator_api)]

extern crate alloc;
extern crate std;

/// The host's stand-ins for the kernel services the kernel files call
/// (printing, IRQ masking, the checker's and debug_pagealloc's hooks):
/// recorded, for the tests to read.
pub mod host;
pub use host::{console, debug_pagealloc, semihosting};

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

/// What the barrier module reports issuing, which the checker judges.
#[path = "../../../../kernel/_arch/aarch64/observe/issued.rs"]
mod issued;

/// The kernel's paths to what is at this crate's root.
pub mod mm {
    pub use crate::{addr, descriptor, frame_alloc, layout, slab};

    use crate::addr::{PhysAddr, VirtAddr};

    /// RAM is host memory here: its "physical" address is where the host
    /// put it, and the kernel reaches it there.
    pub fn phys_to_virt(pa: PhysAddr) -> VirtAddr {
        VirtAddr::new(pa.as_u64())
    }

    pub fn virt_to_phys(va: VirtAddr) -> PhysAddr {
        PhysAddr::new(va.as_u64())
    }
}
pub use mm::{phys_to_virt, virt_to_phys};

pub mod arch {
    pub use crate::host::cpu;

    pub mod observe {
        pub use crate::issued::Issued;
    }
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

/// Stand-in for the kernel's tasks: every host thread runs one.
pub mod task {
    pub struct Task {
        pub name: &'static str,
    }

    pub fn current() -> &'static Task {
        &Task { name: "host" }
    }
}

/// Stand-in for the lazy MMU layer (for the allocators' check).
pub mod lazy_mmu {
    pub fn is_lazy_mmu_mode_active() -> bool {
        false
    }
}

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

    pub fn program() -> Option<&'static str> {
        crate::boot_args::program()
    }

    pub fn bool_option(name: &str) -> bool {
        crate::boot_args::bool_option(name)
    }

    pub const BOOLEAN_OPTIONS: &[(&str, bool)] = crate::boot_args::BOOLEAN_OPTIONS;

    /// `check_options()`: the first bad boolean option, as (name, value).
    pub fn check_options() -> Result<(), (&'static str, &'static str)> {
        crate::boot_args::check_options().map_err(|bad| (bad.name, bad.value))
    }
}
