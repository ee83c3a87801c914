//! The kernel's command line, as the QEMU runner passes it through
//! semihosting: "PROGRAM ARG1 ARG2 ...", where PROGRAM is the path of the
//! kernel's ELF file on the host.

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

/// The arguments after the program name.
pub fn args() -> impl Iterator<Item = &'static str> {
    line().split_ascii_whitespace().skip(1)
}
