//! The lazy MMU trace: when switched on, each step that matters to barrier
//! batching prints one line as it happens: a page-table entry written,
//! a barrier deferred, queued or emitted, a section entered, flushed or
//! left, an interrupt, a context switch. `cargo run -- demo lazy` reads as
//! an annotated trace because of it.
//!
//! Lines carry the running task's name and are indented by its lazy MMU
//! depth; lines from an interrupt handler say so instead.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::{irq, println, task};

static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
    // The barriers and TLBIs are issued below this layer, which tells it
    // of each through a hook while the trace is on.
    crate::arch::barrier::set_issue_hook(on.then_some(issued as fn(&'static str)));
}

/// A barrier or TLBI issued: its own line.
fn issued(name: &'static str) {
    emit(format_args!("{name}"));
}

#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Prints one trace line, if tracing is on.
#[inline]
pub fn emit(args: fmt::Arguments) {
    if enabled() {
        line(args);
    }
}

#[cold]
fn line(args: fmt::Arguments) {
    if irq::in_interrupt() {
        println!("  [  irq   ]   | {args}");
        return;
    }
    let task = task::current();
    let depth = task.lazy_state().enable_count as usize;
    println!("  [{:<8}] {:width$}{args}", task.name, "", width = 2 * depth.min(8));
}
