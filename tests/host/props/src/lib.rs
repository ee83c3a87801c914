//! The kernel's pure modules, compiled for the host unchanged.

#![feature(allocator_api)]

extern crate alloc;

#[path = "../../../../kernel/mm/lazy_mmu/state.rs"]
pub mod state;

#[path = "../../../../kernel/mm/area_alloc.rs"]
pub mod area_alloc;

#[path = "../../../../kernel/mm/span.rs"]
pub mod span;
