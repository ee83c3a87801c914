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

use crate::arch::lazy_mmu::StoreMode;
use crate::arch::observe::{self, Observer, QueueEvent, Run, Watcher};
use crate::mm::descriptor::{Descriptor, Entry, Level};
use crate::{irq, println, task};

static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
    // The stores and the barriers and TLBIs are made below this layer,
    // which tells it of each while the trace is on: the stores through
    // the observer seam, the instructions by name through a hook.
    observe::install(Watcher::Trace, &TRACE);
    observe::set_listening(Watcher::Trace, on);
    crate::arch::barrier::set_issue_hook(on.then_some(issued as fn(&'static str)));
}

/// What the trace prints of the store path.
struct Trace;

static TRACE: Trace = Trace;

impl Observer for Trace {
    fn writing(&self, run: &Run, mode: StoreMode, new: &dyn Fn(usize) -> Option<Descriptor>) {
        for i in 0..run.len {
            let Some(desc) = new(i) else { continue };
            let va = crate::mm::addr::VirtAddr::new(run.va + i as u64 * run.level.entry_size());
            emit(format_args!("write L{} entry for {va}: {}", run.level.0, Described(desc, run.level)));
            if mode == StoreMode::Pending && desc.is_valid() {
                emit(format_args!("  barriers deferred (pending)"));
            }
        }
    }

    fn queue(&self, event: QueueEvent) {
        match event {
            QueueEvent::Queued { waiting, .. } => {
                emit(format_args!("  store queued ({waiting} waiting), memory still holds the old entry"))
            }
            QueueEvent::Full => emit(format_args!("  queue full")),
            QueueEvent::Applying { count } => {
                emit(format_args!("apply {count} queued store{}", if count == 1 { "" } else { "s" }))
            }
            QueueEvent::Dequeued { .. } => {}
        }
    }
}

/// A descriptor in words.
struct Described(Descriptor, Level);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.decode(self.1) {
            Entry::Invalid => write!(f, "invalid (clears it)"),
            Entry::Table(pa) => write!(f, "table at {pa}"),
            Entry::Leaf { addr, attrs } => {
                let size = match self.1.0 {
                    1 => "1G block",
                    2 => "2M block",
                    _ => "page",
                };
                let perm = match (attrs.writable, attrs.executable) {
                    (true, _) => "RW",
                    (false, true) => "RX",
                    (false, false) => "RO",
                };
                write!(f, "{size} -> {addr} {perm}")
            }
        }
    }
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
