//! Cache maintenance for code: `dc cvau` and `ic ivau`, counted and told
//! to the trace and the observers (the page-table rules checker's `icache`
//! rule) where they are issued, like every barrier (`barrier.rs`),
//! and Linux's `caches_clean_inval_pou` built from them as CTR_EL0 asks
//! (`cache_type.rs` decides the sequence).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::barrier::{self, count, report};
use super::cache_type::{CacheOp, CacheType, icache_sync_ops};
use super::observe::Issued;

static DC_CVAU: AtomicU64 = AtomicU64::new(0);
static IC_IVAU: AtomicU64 = AtomicU64::new(0);

/// How many `dc cvau` and `ic ivau` were issued so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub dc_cvau: u64,
    pub ic_ivau: u64,
}

pub fn counts() -> CacheCounts {
    CacheCounts { dc_cvau: DC_CVAU.load(Relaxed), ic_ivau: IC_IVAU.load(Relaxed) }
}

/// This CPU's CTR_EL0.
pub fn cache_type() -> CacheType {
    let ctr: u64;
    // SAFETY: reads a register.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    CacheType(ctr)
}

/// Makes the bytes of [start, end), written through the data side, what
/// this CPU's instruction fetches see (Linux's `caches_clean_inval_pou`).
/// Every address must be mapped readable: `dc cvau` of an unmapped one
/// faults.
pub fn caches_clean_inval_pou(start: u64, end: u64) {
    for op in icache_sync_ops(cache_type(), start, end) {
        match op {
            CacheOp::DcCvau(addr) => {
                count(&DC_CVAU, "dc cvau");
                // SAFETY: cleaning a data line writes it back, nothing else;
                // the caller's range is mapped.
                unsafe { asm!("dc cvau, {}", in(reg) addr, options(nostack, preserves_flags)) };
                report(Issued::DcCvau { va: addr });
            }
            CacheOp::IcIvau(addr) => {
                count(&IC_IVAU, "ic ivau");
                // SAFETY: invalidating an instruction line only makes later
                // fetches read memory again.
                unsafe { asm!("ic ivau, {}", in(reg) addr, options(nostack, preserves_flags)) };
                report(Issued::IcIvau { va: addr });
            }
            CacheOp::DsbIshst => barrier::dsb_ishst(),
            CacheOp::DsbIsh => barrier::dsb_ish(),
            CacheOp::Isb => barrier::isb(),
        }
    }
}

/// Invalidates [start, end) to the point of coherency, so that a later
/// cacheable read sees what was written with the MMU and caches off (Linux's
/// `dcache_inval_poc`, arch/arm64/mm/cache.S): `dc civac` for a line the
/// range only partly covers (its other bytes may be someone else's, to be
/// kept), `dc ivac` for the others, then `dsb sy`. Returns the lines
/// maintained. Usable with the MMU off: it counts nothing and tells no one
/// (`boot.rs`).
#[inline(always)]
pub(super) fn dcache_inval_poc(start: u64, end: u64) -> u64 {
    let line = cache_type().d_line();
    let mut at = start & !(line - 1);
    let mut lines = 0;
    while at < end {
        let partial = at < start || at + line > end;
        if partial {
            // SAFETY: cleans then invalidates a line: its data reaches memory first.
            unsafe { asm!("dc civac, {}", in(reg) at, options(nostack, preserves_flags)) };
        } else {
            // SAFETY: the caller's whole line, whose memory holds what it wants
            // kept; the cached copy is dropped.
            unsafe { asm!("dc ivac, {}", in(reg) at, options(nostack, preserves_flags)) };
        }
        at += line;
        lines += 1;
    }
    barrier::raw::dsb_sy();
    lines
}
