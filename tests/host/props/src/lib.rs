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

/// The descriptor codec, with the address types it encodes (its
/// `super::addr` is this crate's `addr`, as it is `mm::addr` in the kernel).
#[path = "../../../../kernel/mm/addr.rs"]
pub mod addr;

// Kernel-internal items (the boot tables' attributes) go unused here.
#[allow(dead_code)]
#[path = "../../../../kernel/mm/descriptor.rs"]
pub mod descriptor;
