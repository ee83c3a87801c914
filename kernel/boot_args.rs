//! The kernel's command line, as the QEMU runner passes it through
//! semihosting: "PROGRAM qemu.cpu=.. qemu.mem=.. qemu.smp=.. ARG1 ARG2 ...",
//! where PROGRAM is the path of the kernel's ELF file on the host and the
//! `qemu.*` parameters describe the machine the runner asked QEMU for.
//!
//! Among the arguments, `NAME=VALUE` for a NAME in [`KERNEL_OPTIONS`] is a
//! boot option (`cargo run -- debug_pagealloc=on demo pagealloc`), read
//! with [`option`]; the rest are the command. An image may also carry a
//! built-in command line ([`builtin_cmdline!`](crate::builtin_cmdline), Linux's CONFIG_CMDLINE):
//! a test image that needs a boot option says so in its own source, and
//! the runner's arguments override it.

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
pub(crate) fn program() -> Option<&'static str> {
    line().split_ascii_whitespace().next()
}

const PARAM_PREFIX: &str = "qemu.";

/// The boot options the kernel knows.
pub(crate) const KERNEL_OPTIONS: &[&str] = &["debug_pagealloc", "pgtable_check", "test_time_limit", "vmap_lazy_purge"];

fn is_kernel_option(arg: &str) -> bool {
    arg.split_once('=').is_some_and(|(name, _)| KERNEL_OPTIONS.contains(&name))
}

/// The user's arguments: after the program name, without `qemu.*`
/// parameters and boot options.
pub fn args() -> impl Iterator<Item = &'static str> {
    line().split_ascii_whitespace().skip(1).filter(|a| !a.starts_with(PARAM_PREFIX) && !is_kernel_option(a))
}

unsafe extern "C" {
    /// linker.ld's bounds of the `.builtin_cmdline` section: empty unless
    /// the image used [`builtin_cmdline!`](crate::builtin_cmdline).
    static __builtin_cmdline_start: u8;
    static __builtin_cmdline_end: u8;
}

fn builtin() -> &'static str {
    // SAFETY: the linker symbols bound the bytes of at most one string
    // literal (from `builtin_cmdline!`), in rodata.
    let bytes = unsafe {
        let start = &raw const __builtin_cmdline_start;
        let len = (&raw const __builtin_cmdline_end).offset_from(start) as usize;
        core::slice::from_raw_parts(start, len)
    };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// The value of boot option `name` (one of [`KERNEL_OPTIONS`]): from the
/// runner's arguments, else from the image's built-in command line.
pub fn option(name: &str) -> Option<&'static str> {
    let value = |line: &'static str| {
        line.split_ascii_whitespace().filter_map(|a| a.strip_prefix(name)?.strip_prefix('=')).next_back()
    };
    value(line()).or_else(|| value(builtin()))
}

/// Linux's `kstrtobool()` (lib/kstrtox.c): true if the value starts with
/// one of `EeYyTt1`, or is `on` in any case (`[oO][nN]`); false if it starts
/// with one of `DdNnFf0`, or is `of...` (`[oO][fF]`); None for anything
/// else, the empty string included.
pub fn kstrtobool(value: &str) -> Option<bool> {
    match value.as_bytes() {
        [b'e' | b'E' | b'y' | b'Y' | b't' | b'T' | b'1', ..] => Some(true),
        [b'd' | b'D' | b'n' | b'N' | b'f' | b'F' | b'0', ..] => Some(false),
        [b'o' | b'O', b'n' | b'N', ..] => Some(true),
        [b'o' | b'O', b'f' | b'F', ..] => Some(false),
        _ => None,
    }
}

/// The boot options that are booleans, and what they are when not given.
pub(crate) const BOOLEAN_OPTIONS: &[(&str, bool)] =
    &[("debug_pagealloc", false), ("pgtable_check", true), ("vmap_lazy_purge", true)];

/// Boolean boot option `name` (one of [`BOOLEAN_OPTIONS`]), read as Linux
/// reads one ([`kstrtobool`]); its default if it is not given or not a
/// boolean (a value that is not is refused at boot, see [`check_options`]).
pub(crate) fn bool_option(name: &str) -> bool {
    let default = BOOLEAN_OPTIONS.iter().find(|(n, _)| *n == name).is_some_and(|&(_, d)| d);
    option(name).and_then(kstrtobool).unwrap_or(default)
}

/// A boot option whose value the kernel cannot take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BadOption {
    pub name: &'static str,
    pub value: &'static str,
}

/// Checks the boot options' values: the first boolean option that is not
/// one, if any (the kernel says so and stops, rather than guess).
pub(crate) fn check_options() -> Result<(), BadOption> {
    for &(name, _) in BOOLEAN_OPTIONS {
        if let Some(value) = option(name)
            && kstrtobool(value).is_none()
        {
            return Err(BadOption { name, value });
        }
    }
    Ok(())
}

/// Gives the kernel image a built-in command line of boot options, e.g.
/// `lazymmu::test_image!("debug_pagealloc=on");` in a test image (which
/// expands to this).
#[macro_export]
macro_rules! builtin_cmdline {
    ($line:literal) => {
        #[used]
        #[unsafe(link_section = ".builtin_cmdline")]
        static BUILTIN_CMDLINE: [u8; $line.len()] = $crate::boot_args::bytes_of($line);
    };
}

/// A string's bytes as an array, for [`builtin_cmdline!`](crate::builtin_cmdline).
pub const fn bytes_of<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = s.as_bytes()[i];
        i += 1;
    }
    out
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
    use super::{kstrtobool, parse_size};

    #[test_case]
    fn booleans_parse_as_linuxs_kstrtobool() {
        for yes in ["1", "y", "Y", "yes", "t", "true", "e", "enable", "on", "ON", "oN"] {
            assert_eq!(kstrtobool(yes), Some(true), "{yes}");
        }
        for no in ["0", "n", "N", "no", "f", "false", "d", "disable", "off", "OFF", "of"] {
            assert_eq!(kstrtobool(no), Some(false), "{no}");
        }
        for neither in ["", "o", "ox", "2", "maybe", "-1", " on"] {
            assert_eq!(kstrtobool(neither), None, "{neither:?}");
        }
    }

    #[test_case]
    fn qemu_sizes_parse_to_bytes() {
        assert_eq!(parse_size("128M"), Some(128 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("99999999999G"), None);
    }
}
