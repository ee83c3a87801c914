//! Device drivers: just the UART.

pub mod pl011;
