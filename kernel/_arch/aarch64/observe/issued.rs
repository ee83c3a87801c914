//! What the barrier module reports issuing. A file of its own, with no
//! dependency, so that the page-table rules checker, which judges these,
//! can be compiled on the host (tests/host/props).

/// An ordering instruction as issued, with what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issued {
    DsbIshst,
    DsbIsh,
    DmbIshst,
    Isb,
    /// A TLBI by address: every page of [start, start + pages * 4 KiB).
    /// `walks`: it also drops cached table walks (`vaae1is`, `rvaae1is`),
    /// not only last-level entries (`vaale1is`, `rvaale1is`).
    Tlbi {
        start: u64,
        pages: u64,
        walks: bool,
    },
    /// `tlbi vmalle1is`: everything, walks included.
    TlbiAll,
    /// `dc cvau` of the data cache line holding `va`: cleaned to the point
    /// of unification once a `dsb ish` on this CPU completes it.
    DcCvau {
        va: u64,
    },
    /// `ic ivau` of the instruction cache line holding `va`: invalidated
    /// once a `dsb ish` on this CPU completes it.
    IcIvau {
        va: u64,
    },
}
