//! Bugs planted on purpose, one at a time, to show that the checks catch
//! them: `cargo run -- fuzz --break NAME`, and the page-table rules
//! checker's own tests. Each is a one-line switch at the place it breaks;
//! none is planted unless asked for.
//!
//! | name | what it breaks | the rule the checker names |
//! |---|---|---|
//! | `skip-table-dmb` | `alloc_table` links a table without the `dmb ishst` after zeroing it | link-order |
//! | `swap-pair` | the backends' pair is issued `isb; dsb ishst` | barrier-order |
//! | `skip-leave-pair` | `batched` forgets what is pending when a section is left | publish |
//! | `skip-tlb-flush` | TLB flushes return without invalidating anything | invalidate |
//! | `break-live-block` | a linear-map block is split by break-before-make while live | break-before-make |
//! | `free-before-flush` | empty tables are freed before the flush of their walks | invalidate |
//! | `early-guard-drop` | a walk guard goes with the walk's deferred stores still queued | table-lifetime |

use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    SkipTableDmb,
    SwapPair,
    SkipLeavePair,
    SkipTlbFlush,
    BreakLiveBlock,
    FreeBeforeFlush,
    EarlyGuardDrop,
}

impl Bug {
    pub const ALL: [Bug; 7] = [
        Bug::SkipTableDmb,
        Bug::SwapPair,
        Bug::SkipLeavePair,
        Bug::SkipTlbFlush,
        Bug::BreakLiveBlock,
        Bug::FreeBeforeFlush,
        Bug::EarlyGuardDrop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipTableDmb => "skip-table-dmb",
            Bug::SwapPair => "swap-pair",
            Bug::SkipLeavePair => "skip-leave-pair",
            Bug::SkipTlbFlush => "skip-tlb-flush",
            Bug::BreakLiveBlock => "break-live-block",
            Bug::FreeBeforeFlush => "free-before-flush",
            Bug::EarlyGuardDrop => "early-guard-drop",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }

    /// What the broken kernel does, in a few words.
    pub fn what(self) -> &'static str {
        match self {
            Bug::SkipTableDmb => "new tables linked without the dmb ishst after their zeroing",
            Bug::SwapPair => "the barrier pair issued as isb; dsb ishst",
            Bug::SkipLeavePair => "batched leaves its sections without the pending pair",
            Bug::SkipTlbFlush => "TLB flushes skipped",
            Bug::BreakLiveBlock => "live linear-map blocks split by break-before-make",
            Bug::FreeBeforeFlush => "empty tables freed before their walk flush",
            Bug::EarlyGuardDrop => "walk guards dropped with stores still queued",
        }
    }
}

static PLANTED: AtomicU8 = AtomicU8::new(0);

/// Plants `bug` (None: removes whatever was planted).
pub fn plant(bug: Option<Bug>) {
    PLANTED.store(bug.map_or(0, |b| 1 << b as u8), Relaxed);
    // The arch layer's bugs are its own to make (it calls nothing above it).
    use crate::arch::lazy_mmu::planted as arch;
    arch::plant(match bug {
        Some(Bug::SwapPair) => arch::SWAP_PAIR,
        Some(Bug::SkipLeavePair) => arch::SKIP_LEAVE_PAIR,
        _ => 0,
    });
}

/// Is `bug` planted?
#[inline]
pub fn planted(bug: Bug) -> bool {
    PLANTED.load(Relaxed) & (1 << bug as u8) != 0
}

/// `bug` planted while `f` runs.
pub fn with<R>(bug: Bug, f: impl FnOnce() -> R) -> R {
    plant(Some(bug));
    let result = f();
    plant(None);
    result
}
