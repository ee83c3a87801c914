//! The kernel's pure modules, compiled for the host unchanged.

#![feature(allocator_api)]

extern crate alloc;

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
}

/// What the barrier module reports issuing, which the checker judges.
#[path = "../../../../kernel/_arch/aarch64/observe/issued.rs"]
mod issued;

/// The kernel's paths to what is at this crate's root.
pub mod mm {
    pub use crate::{addr, descriptor, layout};
}

pub mod arch {
    pub mod observe {
        pub use crate::issued::Issued;
    }
}

/// Stand-in for the kernel's per-CPU data: only the number of CPUs it has
/// room for (the checker's shadow keeps that many), as in the kernel.
pub mod percpu {
    pub const MAX_CPUS: usize = 8;
}

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
