//! What the device tree says about this machine: where RAM is, how big,
//! how many CPUs and how to start them. Read once at boot, before the kernel's own tables
//! exist, and kept here.

use spin::Once;

use crate::arch::psci::Conduit;
use crate::mm::addr::{PhysAddr, VirtAddr};
use crate::percpu::MAX_CPUS;

#[derive(Clone, Copy, Debug)]
pub struct MachineInfo {
    pub ram_start: PhysAddr,
    pub ram_size: u64,
    /// Where the device tree blob itself lies (it must not be allocated over).
    pub dtb_start: PhysAddr,
    pub dtb_size: u64,
    pub cpus: usize,
    /// Each CPU's MPIDR affinity (its `reg`), in device-tree order.
    pub cpu_ids: [u64; MAX_CPUS],
    /// How PSCI is called, if the machine has it.
    pub psci: Option<Conduit>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// No valid header (magic 0xd00dfeed) at the given address.
    BadHeader(PhysAddr),
    NoMemoryNode,
    /// No `/cpus` node, or one with no `cpu@...` node in it.
    NoCpus,
    /// The CPU node at this position under `/cpus` has no `reg` of the
    /// size its parent's `#address-cells` gives.
    BadCpuReg(usize),
}

impl core::fmt::Display for DtbError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DtbError::BadHeader(pa) => write!(f, "no valid device tree header (magic 0xd00dfeed) at {pa}"),
            DtbError::NoMemoryNode => write!(f, "the device tree has no memory node with a base and size"),
            DtbError::NoCpus => write!(f, "the device tree has no /cpus node with a cpu node in it"),
            DtbError::BadCpuReg(n) => write!(f, "cpu node {n} under /cpus has no reg of the size #address-cells gives"),
        }
    }
}

static INFO: Once<MachineInfo> = Once::new();

/// Parses the blob at `pa`, readable at `va`, and records what it says.
///
/// # Safety
/// `va` must map `pa` and at least the blob's total size of memory.
pub unsafe fn parse(pa: PhysAddr, va: VirtAddr) -> Result<&'static MachineInfo, DtbError> {
    // SAFETY: the caller guarantees the mapping; Fdt checks magic and sizes.
    let fdt = unsafe { fdt::Fdt::from_ptr(va.as_ptr()) }.map_err(|_| DtbError::BadHeader(pa))?;
    // (Not `fdt.memory()`: it panics when there is no memory node, and
    // its `regions()` when the node has no `reg`.)
    let memory = fdt.find_node("/memory").ok_or(DtbError::NoMemoryNode)?;
    let region = memory.reg().and_then(|mut regions| regions.next()).ok_or(DtbError::NoMemoryNode)?;
    // (Not `fdt.cpus()`: it panics without /cpus, and `ids()` on a cpu
    // node without `reg`.)
    let (cpu_ids, cpus) = cpu_ids(&fdt)?;
    let psci =
        fdt.find_node("/psci").and_then(|n| n.property("method")).and_then(|m| m.as_str()).and_then(|m| match m {
            "hvc" => Some(Conduit::Hvc),
            "smc" => Some(Conduit::Smc),
            _ => None,
        });
    let info = MachineInfo {
        ram_start: PhysAddr::new(region.starting_address as u64),
        ram_size: region.size.ok_or(DtbError::NoMemoryNode)? as u64,
        dtb_start: pa,
        dtb_size: fdt.total_size() as u64,
        cpus,
        cpu_ids,
        psci,
    };
    Ok(INFO.call_once(|| info))
}

/// Each `cpu@...` node's first MPIDR (its `reg`, `#address-cells` of
/// `/cpus` wide: 1 or 2 cells), in device-tree order, the first
/// [`MAX_CPUS`] kept; and how many there are.
fn cpu_ids(fdt: &fdt::Fdt) -> Result<([u64; MAX_CPUS], usize), DtbError> {
    let node = fdt.find_node("/cpus").ok_or(DtbError::NoCpus)?;
    let cells = node.property("#address-cells").and_then(|p| p.as_usize()).unwrap_or(2);
    let mut ids = [0; MAX_CPUS];
    let mut count = 0;
    for cpu in node.children().filter(|c| c.name.split('@').next() == Some("cpu")) {
        let reg = cpu.property("reg").map(|p| p.value).unwrap_or(&[]);
        let id = match (cells, reg) {
            (1, [a, b, c, d, ..]) => u64::from(u32::from_be_bytes([*a, *b, *c, *d])),
            (2, [a, b, c, d, e, f, g, h, ..]) => u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]),
            _ => return Err(DtbError::BadCpuReg(count)),
        };
        if let Some(slot) = ids.get_mut(count) {
            *slot = id;
        }
        count += 1;
    }
    if count == 0 {
        return Err(DtbError::NoCpus);
    }
    Ok((ids, count))
}

/// The machine as the device tree described it (after [`parse`]).
pub fn info() -> &'static MachineInfo {
    INFO.get().expect("the device tree is parsed at boot")
}
