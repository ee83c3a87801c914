//! Talking to QEMU (the "host") through Arm semihosting: exit with a code,
//! read the command line, and read host files (the kernel's own ELF, for
//! symbol names in fault reports).
//!
//! Every exit is recorded before it is made: QEMU ended by a signal, or by
//! a guest that powered the machine off, exits 0 as well, so the code
//! alone cannot tell a passing run from a killed one. The runner names a
//! host file (`qemu.exit_status=PATH`) and fails any run whose file does
//! not hold the code QEMU exited with.

use crate::arch::semihosting::call;

const SYS_OPEN: u32 = 0x01;
const SYS_CLOSE: u32 = 0x02;
const SYS_WRITE: u32 = 0x05;
const SYS_READ: u32 = 0x06;
const SYS_SEEK: u32 = 0x0a;
const SYS_GET_CMDLINE: u32 = 0x15;
const SYS_EXIT: u32 = 0x18;

/// ADP_Stopped_ApplicationExit: with SYS_EXIT's extended block, QEMU exits
/// with the code we give.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// The exit codes the kernel uses. QEMU passes them through the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0,
    /// Bad command line.
    Usage = 2,
    /// A panic outside a test.
    Panic = 3,
    /// An exception the kernel did not expect.
    Fault = 4,
    /// The page-table rules checker (`mm::pgtable_check`) saw a rule broken.
    RuleViolated = 5,
    /// At least one test failed (libtest uses the same code).
    TestsFailed = 101,
}

/// Ends the QEMU run with `code`, after writing it to the runner's exit
/// status file (see the module docs).
pub fn exit(code: ExitCode) -> ! {
    if let Some(path) = crate::boot_args::qemu_param("exit_status")
        && let Some(file) = HostFile::create(path)
    {
        // Three decimal digits ("005"): the runner reads them as a number.
        let n = code as u8;
        file.write(&[b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10, b'\n']);
    }
    let block = [ADP_STOPPED_APPLICATION_EXIT, code as u64];
    // SAFETY: SYS_EXIT reads two words from the block.
    unsafe { call(SYS_EXIT, block.as_ptr() as u64) };
    // Without semihosting the call above returns: stop here.
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Fills `buf` with the command line ("program arg1 arg2 ...") and returns
/// the part used, or None without semihosting.
pub(crate) fn cmdline(buf: &mut [u8]) -> Option<&str> {
    let mut block = [buf.as_mut_ptr() as u64, buf.len() as u64];
    // SAFETY: SYS_GET_CMDLINE writes at most block[1] bytes into buf and
    // stores the length back into block[1].
    let ret = unsafe { call(SYS_GET_CMDLINE, block.as_mut_ptr() as u64) };
    if ret != 0 {
        return None;
    }
    let len = (block[1] as usize).min(buf.len());
    core::str::from_utf8(&buf[..len]).ok()
}

/// A host file opened for reading, or for writing (the exit status, the
/// bench's CSV).
pub struct HostFile(u64);

/// SYS_OPEN's modes are fopen()'s, numbered: 1 is "rb", 4 is "w".
const MODE_READ: u64 = 1;
const MODE_WRITE: u64 = 4;

impl HostFile {
    pub fn open(path: &str) -> Option<HostFile> {
        HostFile::open_mode(path, MODE_READ)
    }

    /// Opens `path` for writing, emptying it first.
    pub fn create(path: &str) -> Option<HostFile> {
        HostFile::open_mode(path, MODE_WRITE)
    }

    fn open_mode(path: &str, mode: u64) -> Option<HostFile> {
        // QEMU reads the name up to its NUL, whatever length is given.
        let mut name = [0u8; 512];
        if path.len() >= name.len() {
            return None;
        }
        name[..path.len()].copy_from_slice(path.as_bytes());
        let block = [name.as_ptr() as u64, mode, path.len() as u64];
        // SAFETY: SYS_OPEN reads the name and the two words after it.
        let handle = unsafe { call(SYS_OPEN, block.as_ptr() as u64) };
        (handle as i64 >= 0).then_some(HostFile(handle))
    }

    /// Writes `bytes` at the file's current position.
    pub fn write(&self, bytes: &[u8]) {
        let block = [self.0, bytes.as_ptr() as u64, bytes.len() as u64];
        // SAFETY: SYS_WRITE reads the three words and then bytes.len()
        // bytes from `bytes`.
        unsafe { call(SYS_WRITE, block.as_ptr() as u64) };
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many arrived.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> usize {
        let seek = [self.0, offset];
        // SAFETY: SYS_SEEK reads two words.
        if unsafe { call(SYS_SEEK, seek.as_ptr() as u64) } != 0 {
            return 0;
        }
        let read = [self.0, buf.as_mut_ptr() as u64, buf.len() as u64];
        // SAFETY: SYS_READ writes at most buf.len() bytes into buf and
        // returns how many it did *not* read.
        let not_read = unsafe { call(SYS_READ, read.as_ptr() as u64) } as usize;
        buf.len().saturating_sub(not_read)
    }
}

impl Drop for HostFile {
    fn drop(&mut self) {
        let block = [self.0];
        // SAFETY: SYS_CLOSE reads one word.
        unsafe { call(SYS_CLOSE, block.as_ptr() as u64) };
    }
}
