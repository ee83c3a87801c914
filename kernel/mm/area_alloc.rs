//! First-fit placement of address ranges, as the vmalloc area allocator
//! does it, as a pure function (no kernel dependencies: the same file is
//! property-tested on the host, tests/host/props, against a brute-force
//! search).

/// The lowest `align`-aligned start in [base, limit) where `span` bytes
/// fit without touching any `busy` range (start, length), or None. `busy`
/// must be sorted by start and non-overlapping.
pub fn first_fit(
    busy: impl IntoIterator<Item = (u64, u64)>,
    span: u64,
    align: u64,
    base: u64,
    limit: u64,
) -> Option<u64> {
    let mut candidate = base.checked_next_multiple_of(align)?;
    for (start, len) in busy {
        if start >= candidate && start - candidate >= span {
            break;
        }
        candidate = candidate.max(start.checked_add(len)?).checked_next_multiple_of(align)?;
    }
    let end = candidate.checked_add(span)?;
    (end <= limit).then_some(candidate)
}
