//! Address-range arithmetic shared by the page-table walker and TLB
//! maintenance, as pure functions (no kernel dependencies: the same file
//! is property-tested on the host, tests/host/props).

/// [start, end) cut at multiples of `block` (a power of two): the pieces
/// one table entry of that size covers. `end` may be 0, meaning the range
/// runs to the top of the address space.
pub fn chunks(start: u64, end: u64, block: u64) -> impl Iterator<Item = (u64, u64)> {
    let mut at = start;
    core::iter::from_fn(move || {
        if at == end {
            return None;
        }
        let next = (at & !(block - 1)).wrapping_add(block);
        let stop = if next.wrapping_sub(start) >= end.wrapping_sub(start) || next == 0 { end } else { next };
        let chunk = (at, stop);
        at = stop;
        Some(chunk)
    })
}

/// One TLB invalidation of a range flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlbiOp {
    /// One page at this address.
    Page(u64),
    /// (num + 1) << (5 * scale + 1) pages from `va` (FEAT_TLBIRANGE's
    /// encoding: num 0..=31, scale 0..=3).
    Range { va: u64, scale: u64, num: u64 },
}

/// The fewest range operations covering `pages` 4 KiB pages from `va`:
/// the count is read five bits at a time, one scale per group, smallest
/// first; an odd count leaves one page for a plain page TLBI. Covers up to
/// 32 << 16 pages (more needs a full flush).
pub fn tlbi_range_ops(va: u64, pages: u64) -> impl Iterator<Item = TlbiOp> {
    let (mut va, mut pages, mut scale) = (va, pages, 0);
    core::iter::from_fn(move || {
        while pages > 0 && scale <= 3 {
            if pages % 2 == 1 {
                let op = TlbiOp::Page(va);
                va += 4096;
                pages -= 1;
                return Some(op);
            }
            // At the last scale what is left (a multiple of 1 << 16 pages,
            // at most 32 << 16) may need NUM + 1 = 32: no masking there, or
            // exactly 32 << 16 pages would be covered by nothing.
            let num = if scale == 3 { pages >> 16 } else { (pages >> (5 * scale + 1)) & 0x1f };
            let this_scale = scale;
            scale += 1;
            if num > 0 {
                let covered = num << (5 * this_scale + 1);
                let op = TlbiOp::Range { va, scale: this_scale, num: num - 1 };
                va += covered * 4096;
                pages -= covered;
                return Some(op);
            }
        }
        None
    })
}
