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

/// The kernel's paths to what is at this crate's root.
pub mod mm {
    pub use crate::addr;
}

/// The mapping engine: the one range walker behind every mapper (plan,
/// allocate, write runs, clear, split), over tables a test provides.
#[path = "../../../../kernel/mm/engine.rs"]
pub mod engine;
