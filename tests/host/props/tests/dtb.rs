//! The device tree reader (`dtb.rs`) on blobs built here, as the
//! devicetree specification lays them out (header, memory reservation
//! block, structure block, strings): exact values, and the typed error of
//! a blob without a header or without a memory node.

use lazymmu_props::addr::{PhysAddr, VirtAddr};
use lazymmu_props::arch::psci::Conduit;
use lazymmu_props::dtb::{self, DtbError};

const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const END: u32 = 9;

/// A flattened device tree, built node by node.
#[derive(Default)]
struct Fdt {
    structure: Vec<u8>,
    strings: Vec<u8>,
}

impl Fdt {
    fn word(&mut self, w: u32) {
        self.structure.extend(w.to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }

    fn begin(&mut self, name: &str) -> &mut Self {
        self.word(BEGIN_NODE);
        self.structure.extend(name.as_bytes());
        self.structure.push(0);
        self.pad();
        self
    }

    fn end(&mut self) -> &mut Self {
        self.word(END_NODE);
        self
    }

    fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let offset = self.strings.len() as u32;
        self.strings.extend(name.as_bytes());
        self.strings.push(0);
        self.word(PROP);
        self.word(value.len() as u32);
        self.word(offset);
        self.structure.extend(value);
        self.pad();
        self
    }

    fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
        let bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
        self.prop(name, &bytes)
    }

    fn string(&mut self, name: &str, value: &str) -> &mut Self {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.prop(name, &bytes)
    }

    /// The blob, 8-byte aligned in memory (leaked: the reader keeps it).
    fn blob(&mut self) -> &'static [u8] {
        self.word(END);
        let header = 40;
        let reserve = header;
        let structure = reserve + 16;
        let strings = structure + self.structure.len();
        let total = strings + self.strings.len();
        let mut out = Vec::with_capacity(total);
        for w in [
            0xd00d_feed,
            total as u32,
            structure as u32,
            strings as u32,
            reserve as u32,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            out.extend(u32::to_be_bytes(w));
        }
        out.extend([0; 16]);
        out.extend(&self.structure);
        out.extend(&self.strings);
        let words: &'static mut [u64] = Box::leak(vec![0u64; total.div_ceil(8)].into_boxed_slice());
        let bytes = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), total) };
        bytes.copy_from_slice(&out);
        bytes
    }
}

/// QEMU virt's shape: RAM at 1 GiB, `cpus` CPUs, PSCI by `method`.
/// `ram`: None, no memory node; Some(None), one without `reg`.
fn machine(ram: Option<Option<(u64, u64)>>, cpus: u32, method: &str) -> &'static [u8] {
    let mut f = Fdt::default();
    f.begin("").cells("#address-cells", &[2]).cells("#size-cells", &[2]);
    if let Some(reg) = ram {
        f.begin("memory@40000000").string("device_type", "memory");
        if let Some((base, size)) = reg {
            f.cells("reg", &[(base >> 32) as u32, base as u32, (size >> 32) as u32, size as u32]);
        }
        f.end();
    }
    f.begin("cpus").cells("#address-cells", &[1]).cells("#size-cells", &[0]);
    for i in 0..cpus {
        f.begin(&format!("cpu@{i}")).string("device_type", "cpu").cells("reg", &[i * 0x100]).end();
    }
    f.end();
    f.begin("psci").string("compatible", "arm,psci-1.0").string("method", method).end();
    f.end();
    f.blob()
}

/// RAM at 1 GiB and `/cpus` as given: None, no node; each cpu node's
/// `reg` cells (None: no `reg`), under `#address-cells = <cells>`.
fn with_cpus(cpus: Option<Vec<Option<Vec<u32>>>>, cells: u32) -> &'static [u8] {
    let mut f = Fdt::default();
    f.begin("").cells("#address-cells", &[2]).cells("#size-cells", &[2]);
    f.begin("memory@40000000").string("device_type", "memory").cells("reg", &[0, 0x4000_0000, 0, 1 << 30]).end();
    if let Some(cpus) = cpus {
        f.begin("cpus").cells("#address-cells", &[cells]).cells("#size-cells", &[0]);
        for (i, reg) in cpus.iter().enumerate() {
            f.begin(&format!("cpu@{i}")).string("device_type", "cpu");
            if let Some(reg) = reg {
                f.cells("reg", reg);
            }
            f.end();
        }
        f.end();
    }
    f.end();
    f.blob()
}

fn at(blob: &[u8]) -> (PhysAddr, VirtAddr) {
    let a = blob.as_ptr() as u64;
    (PhysAddr::new(a), VirtAddr::new(a))
}

/// One process, one machine (the reader keeps the first it parses).
#[test]
fn the_machine_as_the_device_tree_describes_it() {
    // No header.
    let junk: &'static [u8] = Box::leak(vec![0u8; 64].into_boxed_slice());
    let (pa, va) = at(junk);
    assert_eq!(unsafe { dtb::parse(pa, va) }.map(|_| ()), Err(DtbError::BadHeader(pa)));
    // No memory node.
    let blob = machine(None, 1, "hvc");
    let (pa, va) = at(blob);
    assert_eq!(unsafe { dtb::parse(pa, va) }.map(|_| ()), Err(DtbError::NoMemoryNode));
    // A memory node without `reg`.
    let blob = machine(Some(None), 1, "hvc");
    let (pa, va) = at(blob);
    assert_eq!(unsafe { dtb::parse(pa, va) }.map(|_| ()), Err(DtbError::NoMemoryNode));
    assert_eq!(DtbError::NoMemoryNode.to_string(), "the device tree has no memory node with a base and size");
    // No /cpus, an empty one, a cpu node without `reg`, one whose `reg`
    // is shorter than #address-cells says: typed errors, not panics.
    for (cpus, want) in [
        (None, DtbError::NoCpus),
        (Some(vec![]), DtbError::NoCpus),
        (Some(vec![Some(vec![0, 0]), None]), DtbError::BadCpuReg(1)),
        (Some(vec![Some(vec![0, 0]), Some(vec![0x100])]), DtbError::BadCpuReg(1)),
    ] {
        let blob = with_cpus(cpus, 2);
        let (pa, va) = at(blob);
        assert_eq!(unsafe { dtb::parse(pa, va) }.map(|_| ()), Err(want));
    }
    assert_eq!(DtbError::NoCpus.to_string(), "the device tree has no /cpus node with a cpu node in it");
    assert_eq!(
        DtbError::BadCpuReg(1).to_string(),
        "cpu node 1 under /cpus has no reg of the size #address-cells gives"
    );
    // The machine: 2 GiB at 1 GiB, 3 CPUs, PSCI through smc.
    let blob = machine(Some(Some((0x4000_0000, 2 << 30))), 3, "smc");
    let (pa, va) = at(blob);
    let info = unsafe { dtb::parse(pa, va) }.unwrap();
    assert_eq!(info.ram_start, PhysAddr::new(0x4000_0000));
    assert_eq!(info.ram_size, 2 << 30);
    assert_eq!((info.dtb_start, info.dtb_size), (pa, blob.len() as u64));
    assert_eq!(info.cpus, 3);
    assert_eq!(info.cpu_ids[..4], [0, 0x100, 0x200, 0]);
    assert_eq!(info.psci, Some(Conduit::Smc));
    assert_eq!(dtb::info().ram_size, 2 << 30);
}
