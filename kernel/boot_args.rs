//! The kernel's command line, as the QEMU runner passes it through
//! semihosting: "PROGRAM qemu.cpu=.. qemu.mem=.. qemu.smp=.. ARG1 ARG2 ...",
//! where PROGRAM is the path of the kernel's ELF file on the host and the
//! `qemu.*` parameters describe the machine the runner asked QEMU for.

use spin::Once;

use crate::semihosting;

struct CommandLine {
    buf: [u8; 1024],
    len: usize,
}

static CMDLINE: Once<CommandLine> = Once::new();

fn line() -> &'static str {
    let cmdline = CMDLINE.call_once(|| {
        let mut c = CommandLine { buf: [0; 1024], len: 0 };
        c.len = semihosting::cmdline(&mut c.buf).map_or(0, str::len);
        c
    });
    core::str::from_utf8(&cmdline.buf[..cmdline.len]).unwrap_or("")
}

/// The host path of the running kernel image, if the runner gave it.
pub fn program() -> Option<&'static str> {
    line().split_ascii_whitespace().next()
}

const PARAM_PREFIX: &str = "qemu.";

/// The user's arguments: after the program name, without `qemu.*` parameters.
pub fn args() -> impl Iterator<Item = &'static str> {
    line().split_ascii_whitespace().skip(1).filter(|a| !a.starts_with(PARAM_PREFIX))
}

/// The value of a `qemu.NAME=VALUE` parameter from the runner.
pub fn qemu_param(name: &str) -> Option<&'static str> {
    line()
        .split_ascii_whitespace()
        .filter_map(|a| a.strip_prefix(PARAM_PREFIX))
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
}

/// A QEMU size ("128M", "2G", or bytes) in bytes.
pub fn parse_size(size: &str) -> Option<u64> {
    let (digits, shift) = match size.as_bytes().last()? {
        b'K' | b'k' => (&size[..size.len() - 1], 10),
        b'M' | b'm' => (&size[..size.len() - 1], 20),
        b'G' | b'g' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test_case]
    fn qemu_sizes_parse_to_bytes() {
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }
}
