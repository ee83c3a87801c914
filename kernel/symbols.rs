//! Names for code addresses in fault reports.
//!
//! QEMU loads only the image's segments, not its symbol table, so the kernel
//! reads the symbol table from its own ELF file on the host, through
//! semihosting (the runner passes the file's path as the program name).
//! This only runs when a report is printed, and needs no heap.
//! Names are demangled with the `rustc-demangle` crate (v0 and legacy).

use core::fmt;

use crate::boot_args;
use crate::semihosting::HostFile;

const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;
const SYM_SIZE: usize = 24;

fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}
fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4])) as u64
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// The function symbol containing `addr`: its (mangled) name, in `name`,
/// and the offset of `addr` into it.
fn lookup(addr: u64, name: &mut [u8; 256]) -> Option<(usize, u64)> {
    let file = HostFile::open(boot_args::program()?)?;
    let mut header = [0u8; 64];
    if file.read_at(0, &mut header) != 64 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let (shoff, shentsize, shnum) = (u64_at(&header, 0x28), u16_at(&header, 0x3a), u16_at(&header, 0x3c));

    let mut section = [0u8; 64];
    let (mut symtab, mut strtab) = (None, None);
    for i in 0..shnum {
        if file.read_at(shoff + i * shentsize, &mut section) != 64 {
            return None;
        }
        if u32_at(&section, 4) as u32 == SHT_SYMTAB {
            symtab = Some((u64_at(&section, 24), u64_at(&section, 32)));
            let link = u32_at(&section, 40);
            let mut linked = [0u8; 64];
            if file.read_at(shoff + link * shentsize, &mut linked) == 64 {
                strtab = Some(u64_at(&linked, 24));
            }
            break;
        }
    }
    let ((sym_offset, sym_size), strtab) = (symtab?, strtab?);

    let mut best: Option<(u64, u64)> = None; // (name offset, symbol start)
    let mut chunk = [0u8; SYM_SIZE * 64];
    let mut at = 0;
    while at < sym_size {
        let got = file.read_at(sym_offset + at, &mut chunk);
        if got < SYM_SIZE {
            break;
        }
        for sym in chunk[..got - got % SYM_SIZE].chunks_exact(SYM_SIZE) {
            let (value, size) = (u64_at(sym, 8), u64_at(sym, 16));
            if sym[4] & 0xf == STT_FUNC && value <= addr && addr < value + size.max(1) {
                best = Some((u32_at(sym, 0), value));
            }
        }
        at += (got - got % SYM_SIZE) as u64;
    }
    let (name_offset, start) = best?;
    let len = file.read_at(strtab + name_offset, name);
    let len = name[..len].iter().position(|&b| b == 0).unwrap_or(len);
    Some((len, addr - start))
}

/// `<symbol+0xoffset>` for an address, or nothing when it is not known.
pub struct Symbolized(pub u64);

impl fmt::Display for Symbolized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut name = [0u8; 256];
        let Some((len, offset)) = lookup(self.0, &mut name) else {
            return Ok(());
        };
        let Ok(mangled) = core::str::from_utf8(&name[..len]) else {
            return Ok(());
        };
        // `{:#}` leaves out the hash that makes the name unique.
        write!(f, "<{:#}+{offset:#x}>", rustc_demangle::demangle(mangled))
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::Symbolized;

    #[inline(never)]
    fn a_function_with_a_findable_name() -> u64 {
        a_function_with_a_findable_name as *const () as u64
    }

    #[test_case]
    fn code_addresses_are_named_from_the_elf() {
        let addr = a_function_with_a_findable_name();
        let text = format!("{}", Symbolized(addr + 4));
        assert!(text.contains("symbols::tests::a_function_with_a_findable_name+0x4>"), "got {text:?}");
    }
}
