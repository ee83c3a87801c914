//! Device drivers: the UART and the interrupt controller.

pub mod gic;
pub mod pl011;
