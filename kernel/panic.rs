//! The panic handler. Inside [`crate::exception::catch`] a panic is
//! recovered (that is how a failing test assertion fails only its test, and
//! a panicking task or `run_on` job only itself: what it held is let go by
//! `exception::release_abandoned`); anywhere else, and under
//! `pgtable::Exclusive` (which cannot be given back safely), it is reported
//! with its location and QEMU exits non-zero.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::arch::exception::__recovery_resume;
use crate::console::emergency;
use crate::exception::{Caught, PanicMessage, unrecoverable};
use crate::semihosting::{ExitCode, exit};
use crate::{irq, task};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let location = info.location().map(|l| (l.file(), l.line(), l.column())).unwrap_or(("<unknown>", 0, 0));
    let unrecoverable = unrecoverable();
    let recovery = if irq::in_interrupt() || unrecoverable.is_some() { None } else { task::current().take_recovery() };
    if let Some(point) = recovery {
        let message =
            PanicMessage::new(format_args!("{}:{}:{}:\n{}", location.0, location.1, location.2, info.message()));
        task::current().set_caught(Caught::Panic(message));
        // SAFETY: `point` was saved by the `catch` that is still running below us.
        unsafe { __recovery_resume(point) };
    }
    if PANICKING.swap(true, Relaxed) {
        emergency(format_args!("\n*** kernel panic while panicking ***\n"));
        exit(ExitCode::Panic);
    }
    emergency(format_args!(
        "\n*** kernel panic at {}:{}:{} ***\n{}\n",
        location.0,
        location.1,
        location.2,
        info.message()
    ));
    if let Some(why) = unrecoverable {
        emergency(format_args!("({why})\n"));
    }
    exit(ExitCode::Panic)
}
