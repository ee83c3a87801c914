//! What an operation cost in barriers and TLB invalidations, counted where
//! each instruction is issued (`_arch/aarch64/barrier.rs`, `tlbi.rs`), and
//! the instructions a hand-written mapping loop needs (the bench's ideal
//! loop, a test that orders or invalidates by hand).

pub use crate::arch::barrier::{BarrierCounts, cost, counts, dsb_ish, dsb_ishst, isb, set_issue_hook};
pub use crate::arch::tlbi::tlbi_vaale1is;
