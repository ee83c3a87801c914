//! Cache maintenance for code (kernel/_arch/aarch64/cache_type.rs): what
//! `flush_icache_range` issues for made-up CTR_EL0 values, against Linux's
//! `caches_clean_inval_pou` written out by hand.

use lazymmu_props::cache_type::{CacheOp, CacheOp::*, CacheType, icache_sync_ops};

/// Cortex-A72's CTR_EL0: 64-byte lines both sides, IDC and DIC clear.
const A72: u64 = 0x8444_c004;
const IDC: u64 = 1 << 28;
const DIC: u64 = 1 << 29;

fn ops(ctr: u64, start: u64, end: u64) -> Vec<CacheOp> {
    icache_sync_ops(CacheType(ctr), start, end).collect()
}

#[test]
fn a72_cleans_and_invalidates_every_64_byte_line_of_a_page() {
    let ctr = CacheType(A72);
    assert_eq!((ctr.d_line(), ctr.i_line(), ctr.idc(), ctr.dic()), (64, 64, false, false));
    let mut want: Vec<CacheOp> = (0x1000..0x2000).step_by(64).map(DcCvau).collect();
    want.push(DsbIsh);
    want.extend((0x1000..0x2000).step_by(64).map(IcIvau));
    want.extend([DsbIsh, Isb]);
    assert_eq!(ops(A72, 0x1000, 0x2000), want);
}

#[test]
fn an_unaligned_range_covers_every_line_it_touches() {
    // [0x1030, 0x1050) touches the lines at 0x1000 and 0x1040.
    assert_eq!(
        ops(A72, 0x1030, 0x1050),
        [DcCvau(0x1000), DcCvau(0x1040), DsbIsh, IcIvau(0x1000), IcIvau(0x1040), DsbIsh, Isb]
    );
    // One byte: one line each side.
    assert_eq!(ops(A72, 0x107f, 0x1080), [DcCvau(0x1040), DsbIsh, IcIvau(0x1040), DsbIsh, Isb]);
}

#[test]
fn data_and_instruction_lines_are_stepped_by_their_own_sizes() {
    // DminLine 4 (64 bytes), IminLine 3 (32 bytes).
    let ctr = (A72 & !0xf) | 3;
    assert_eq!(ops(ctr, 0x2000, 0x2040), [DcCvau(0x2000), DsbIsh, IcIvau(0x2000), IcIvau(0x2020), DsbIsh, Isb]);
}

#[test]
fn idc_replaces_the_clean_by_a_dsb_ishst() {
    let want: Vec<CacheOp> =
        [DsbIshst].into_iter().chain((0x1000..0x1100).step_by(64).map(IcIvau)).chain([DsbIsh, Isb]).collect();
    assert_eq!(ops(A72 | IDC, 0x1000, 0x1100), want);
}

#[test]
fn dic_drops_the_invalidation_but_not_the_isb() {
    let want: Vec<CacheOp> = (0x1000..0x1100).step_by(64).map(DcCvau).chain([DsbIsh, Isb]).collect();
    assert_eq!(ops(A72 | DIC, 0x1000, 0x1100), want);
}

#[test]
fn idc_and_dic_leave_a_dsb_ishst_and_an_isb() {
    assert_eq!(ops(A72 | IDC | DIC, 0x1000, 0x9000), [DsbIshst, Isb]);
}
