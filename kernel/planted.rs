//! Bugs planted on purpose, one at a time, to show that the checks catch
//! them: `cargo run -- fuzz --break NAME`, and the page-table rules
//! checker's own tests. Each is a one-line switch at the place it breaks;
//! none is planted unless asked for.
//!
//! Debug builds only, with fault injection (`frame_alloc::fail_request`)
//! and the test harness (`testing`: its baseline and the recovery hooks
//! that put back what a failed test left). The switch is
//! `cfg(debug_assertions)`: on in the dev profile, the one `cargo test` and
//! `cargo run` build, so the tests, the fuzzer's `--break` and the
//! exercises have them; off in a release build, the one `scripts/bench`
//! measures, which has none of their code or atomics
//! (`tests/host/commands.sh` checks its symbols). There [`planted`] is a
//! constant `false` that each check folds away, and planting a bug is an
//! error (`fuzz --break` exits 2 saying so). Not a cargo feature: cargo
//! cannot turn one on per profile, so every `cargo test` and every command
//! the docs quote would have to name it, and one left on would be measured
//! by the bench. (`cargo test --release` does not build: the test images
//! need the harness.)
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
//! | `reuse-before-purge` | a lazily freed area's range is handed out again before the purge flushed it | break-before-make |
//! | `cont-partial-write` | the last entry of every contiguous run is written without the bit | contiguous |
//! | `cont-misaligned` | every whole run of 16 pages written at once outside the linear map gets the bit, aligned or not | contiguous |
//! | `cont-split-live` | `set_memory_*` changes part of a live run without splitting it | contiguous |
//! | `upgrade-unflushed` | a permission change that only grants (`set_memory_rw`/`_x`, `set_linear_map_rw`) returns without its TLB flush | invalidate |
//! | `device-alias` | `vmap_range`/`vmap_contiguous` map RAM as Device memory beside its cacheable linear alias | mismatched-alias |
//! | `skip-icache` | `flush_icache_range` returns without cleaning or invalidating anything | icache |
//! | `skip-receiver-isb` | the scheduler switches to a stack another CPU mapped without its `isb` | publish-receiver |
//! | `local-tlb-flush` | TLB flushes invalidate this CPU's TLB only (`tlbi vaale1` per page, `tlbi vmalle1`; not broadcast) | invalidate (the checker has no per-CPU TLB: it hears of no invalidation); with the checker off, only `fuzz --cpus 2` sees it |
//! | `vfree-frees-early` | `vfree` gives its frames back before it unmaps them | freed-while-mapped |

#[cfg(debug_assertions)]
use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    SkipTableDmb,
    SwapPair,
    SkipLeavePair,
    SkipTlbFlush,
    BreakLiveBlock,
    FreeBeforeFlush,
    EarlyGuardDrop,
    ReuseBeforePurge,
    ContPartialWrite,
    ContMisaligned,
    ContSplitLive,
    UpgradeUnflushed,
    DeviceAlias,
    SkipIcache,
    SkipReceiverIsb,
    LocalTlbFlush,
    VfreeFreesEarly,
}

impl Bug {
    pub const ALL: [Bug; 17] = [
        Bug::SkipTableDmb,
        Bug::SwapPair,
        Bug::SkipLeavePair,
        Bug::SkipTlbFlush,
        Bug::BreakLiveBlock,
        Bug::FreeBeforeFlush,
        Bug::EarlyGuardDrop,
        Bug::ReuseBeforePurge,
        Bug::ContPartialWrite,
        Bug::ContMisaligned,
        Bug::ContSplitLive,
        Bug::UpgradeUnflushed,
        Bug::DeviceAlias,
        Bug::SkipIcache,
        Bug::SkipReceiverIsb,
        Bug::LocalTlbFlush,
        Bug::VfreeFreesEarly,
    ];

    /// Inlined wherever it is used, as [`plant`] is in a release build:
    /// there the names serve only to refuse `--break` by name, and the
    /// release kernel keeps no symbol of this module (tests/host/commands.sh
    /// reads them with `nm`).
    #[inline(always)]
    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipTableDmb => "skip-table-dmb",
            Bug::SwapPair => "swap-pair",
            Bug::SkipLeavePair => "skip-leave-pair",
            Bug::SkipTlbFlush => "skip-tlb-flush",
            Bug::BreakLiveBlock => "break-live-block",
            Bug::FreeBeforeFlush => "free-before-flush",
            Bug::EarlyGuardDrop => "early-guard-drop",
            Bug::ReuseBeforePurge => "reuse-before-purge",
            Bug::ContPartialWrite => "cont-partial-write",
            Bug::ContMisaligned => "cont-misaligned",
            Bug::ContSplitLive => "cont-split-live",
            Bug::UpgradeUnflushed => "upgrade-unflushed",
            Bug::DeviceAlias => "device-alias",
            Bug::SkipIcache => "skip-icache",
            Bug::SkipReceiverIsb => "skip-receiver-isb",
            Bug::LocalTlbFlush => "local-tlb-flush",
            Bug::VfreeFreesEarly => "vfree-frees-early",
        }
    }

    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }

    /// What the broken kernel does, in a few words.
    #[inline(always)]
    pub fn what(self) -> &'static str {
        match self {
            Bug::SkipTableDmb => "new tables linked without the dmb ishst after their zeroing",
            Bug::SwapPair => "the barrier pair issued as isb; dsb ishst",
            Bug::SkipLeavePair => "batched leaves its sections without the pending pair",
            Bug::SkipTlbFlush => "TLB flushes skipped",
            Bug::BreakLiveBlock => "live linear-map blocks split by break-before-make",
            Bug::FreeBeforeFlush => "empty tables freed before their walk flush",
            Bug::EarlyGuardDrop => "walk guards dropped with stores still queued",
            Bug::ReuseBeforePurge => "lazily freed ranges handed out again before their purge",
            Bug::ContPartialWrite => "the last entry of each contiguous run written without the bit",
            Bug::ContMisaligned => "the contiguous bit on runs of 16 pages that are not one aligned range",
            Bug::ContSplitLive => "part of a live contiguous run changed without splitting it",
            Bug::UpgradeUnflushed => "permission upgrades left without their TLB flush",
            Bug::DeviceAlias => "RAM mapped as Device memory beside its cacheable linear alias",
            Bug::SkipIcache => "code made executable without its cache maintenance",
            Bug::SkipReceiverIsb => "stacks another CPU mapped switched to without the receiving CPU's isb",
            Bug::LocalTlbFlush => "TLB flushes made on this CPU only, not broadcast",
            Bug::VfreeFreesEarly => "vfree giving its frames back before unmapping them",
        }
    }
}

/// Why a release build refuses to plant a bug.
pub const DEBUG_ONLY: &str = "planted bugs exist only in debug builds";

/// One bit per bug: a bug the mask has no bit for fails the build, not a
/// test (a 16-bit mask once overflowed at the seventeenth bug).
#[cfg(debug_assertions)]
static PLANTED: AtomicU32 = AtomicU32::new(0);
#[cfg(debug_assertions)]
const _: () = assert!(Bug::ALL.len() <= u32::BITS as usize);

/// Plants `bug` (None: removes whatever was planted).
#[cfg(debug_assertions)]
pub fn plant(bug: Option<Bug>) {
    PLANTED.store(bug.map_or(0, |b| 1 << b as u32), Relaxed);
    // The arch layer's bugs are its own to make (it calls nothing above it).
    use crate::arch::lazy_mmu::planted as arch;
    arch::plant(match bug {
        Some(Bug::SwapPair) => arch::SWAP_PAIR,
        Some(Bug::SkipLeavePair) => arch::SKIP_LEAVE_PAIR,
        _ => 0,
    });
}

/// Plants nothing: a release build has no planted bugs, and asking for
/// one is a mistake said out loud, not a run that silently proves nothing.
/// Inlined into its callers, so that the release kernel has no symbol of
/// this module (tests/host/commands.sh reads them with `nm`).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn plant(bug: Option<Bug>) {
    if let Some(bug) = bug {
        panic!("cannot plant {}: {DEBUG_ONLY}", bug.name());
    }
}

/// Is `bug` planted?
#[cfg(debug_assertions)]
#[inline]
pub fn planted(bug: Bug) -> bool {
    PLANTED.load(Relaxed) & (1 << bug as u32) != 0
}

/// Never, in a release build: a constant, so each check compiles away.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub const fn planted(_bug: Bug) -> bool {
    false
}

/// `bug` planted while `f` runs.
pub fn with<R>(bug: Bug, f: impl FnOnce() -> R) -> R {
    plant(Some(bug));
    let result = f();
    plant(None);
    result
}
