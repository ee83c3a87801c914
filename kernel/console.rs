//! The kernel console: `print!` and `println!` to the PL011 UART.
//!
//! Output is serialized by a spinlock taken with interrupts masked, so an
//! interrupt handler that prints cannot deadlock against the task it
//! interrupted. Fault and panic reports bypass the lock ([`emergency`]): the
//! lock may be held by the very code that failed.

use core::fmt::{self, Write};

use crate::drivers::pl011;
use crate::sync::IrqSpinLock;

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                pl011::write_byte(b'\r');
            }
            pl011::write_byte(byte);
        }
        Ok(())
    }
}

static CONSOLE: IrqSpinLock<()> = IrqSpinLock::new(());

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    let _guard = CONSOLE.lock();
    let _ = Uart.write_fmt(args);
}

/// Writes without taking the console lock: for fault and panic reports.
pub fn emergency(args: fmt::Arguments) {
    let _ = Uart.write_fmt(args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => ($crate::_print(format_args!($($arg)*)));
}

#[macro_export]
macro_rules! println {
    () => ($crate::print!("\n"));
    ($($arg:tt)*) => ($crate::_print(format_args!("{}\n", format_args!($($arg)*))));
}
