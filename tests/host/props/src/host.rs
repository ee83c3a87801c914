//! The host's stand-ins for the kernel services the compiled kernel files
//! call: what the kernel would execute (mask IRQs, print, tell the checker,
//! map a frame back under debug_pagealloc) is recorded here, per test
//! thread, for the tests to read back ([`take_events`]). Nothing here is
//! the kernel's logic: the tests judge the kernel's files, not these.

use std::cell::{Cell, RefCell};
use std::string::String;
use std::vec::Vec;

use crate::addr::PhysAddr;

/// Something a kernel file asked of a service the host stands in for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A line printed with `println!` (without its newline).
    Printed(String),
    /// A report through the console's emergency path.
    Emergency(String),
    /// `debug_pagealloc::map_pages(pa, count)`, and whether it failed.
    MapBack { pa: PhysAddr, count: usize, failed: bool },
    /// `debug_pagealloc::unmap_pages(pa, count)`.
    Unmap { pa: PhysAddr, count: usize },
    /// `pgtable_check::frames_freed(pa, count)`.
    FramesFreed { pa: PhysAddr, count: usize },
    /// `pgtable_check::handed_over()`.
    HandedOver,
    /// `pgtable_check::section_ended(why)`.
    SectionEnded(&'static str),
    /// `pgtable_check::wrote_outside_section()`.
    WroteOutsideSection,
    /// `pgtable_check::table_allocated(pa)`.
    TableAllocated(PhysAddr),
    /// `pgtable_check::claimed_empty(pa)`.
    ClaimedEmpty(PhysAddr),
}

thread_local! {
    static EVENTS: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
    /// IRQs masked on this "CPU" (the DAIF.I bit the kernel would set).
    static IRQS_MASKED: Cell<bool> = const { Cell::new(false) };
    /// Most IRQ-masking nests seen since the last [`take_events`].
    static MASK_SAVES: Cell<u64> = const { Cell::new(0) };
    static DEBUG_PAGEALLOC: Cell<bool> = const { Cell::new(false) };
    static CHECKER: Cell<bool> = const { Cell::new(false) };
    /// The map-back that fails: 1 = the next one; 0 = none.
    static MAP_BACK_FAILS_AT: Cell<u64> = const { Cell::new(0) };
}

pub(crate) fn record(event: Event) {
    EVENTS.with(|e| e.borrow_mut().push(event));
}

/// What this thread's kernel code asked of the host since the last call.
pub fn take_events() -> Vec<Event> {
    EVENTS.with(|e| core::mem::take(&mut *e.borrow_mut()))
}

/// Are IRQs masked now (inside an `IrqSpinLock`'s guard)?
pub fn irqs_masked() -> bool {
    IRQS_MASKED.get()
}

/// `irq_save` calls since the last [`take_irq_saves`].
pub fn take_irq_saves() -> u64 {
    MASK_SAVES.replace(0)
}

/// Turns this thread's debug_pagealloc stand-in on or off.
pub fn set_debug_pagealloc(on: bool) {
    DEBUG_PAGEALLOC.set(on);
}

/// Makes the `k`-th map-back from now fail (None: none does).
pub fn fail_map_back(k: Option<u64>) {
    MAP_BACK_FAILS_AT.set(k.unwrap_or(0));
}

/// Turns this thread's page-table checker stand-in on or off (whether
/// `pgtable_check::enabled()` says it listens).
pub fn set_checker(on: bool) {
    CHECKER.set(on);
}

/// `println!`, recorded.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => ($crate::host::record($crate::host::Event::Printed(std::format!($($arg)*))));
}

pub mod cpu {
    use std::sync::OnceLock;
    use std::time::Instant;

    use super::{IRQS_MASKED, MASK_SAVES};

    /// Masks IRQs and returns the previous state (1: they were masked).
    pub fn irq_save() -> u64 {
        MASK_SAVES.set(MASK_SAVES.get() + 1);
        u64::from(IRQS_MASKED.replace(true))
    }

    pub fn irq_restore(daif: u64) {
        IRQS_MASKED.set(daif != 0);
    }

    static START: OnceLock<Instant> = OnceLock::new();

    /// The generic timer, in nanoseconds of the host's clock.
    pub fn counter() -> u64 {
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }

    pub fn counter_frequency() -> u64 {
        1_000_000_000
    }

    pub fn relax() {
        std::thread::yield_now();
    }
}

pub mod console {
    use core::fmt;

    pub fn emergency(args: fmt::Arguments) {
        super::record(super::Event::Emergency(std::format!("{args}")));
    }
}

pub mod debug_pagealloc {
    use super::{DEBUG_PAGEALLOC, Event, MAP_BACK_FAILS_AT, record};
    use crate::addr::PhysAddr;
    use crate::engine::MapError;

    pub fn enabled() -> bool {
        DEBUG_PAGEALLOC.get()
    }

    pub fn map_pages(pa: PhysAddr, count: usize) -> Result<(), MapError> {
        let at = MAP_BACK_FAILS_AT.get();
        if at > 0 {
            MAP_BACK_FAILS_AT.set(at - 1);
        }
        let failed = at == 1;
        record(Event::MapBack { pa, count, failed });
        if failed { Err(MapError::OutOfMemory) } else { Ok(()) }
    }

    pub fn unmap_pages(pa: PhysAddr, count: usize) {
        record(Event::Unmap { pa, count });
    }
}

/// The checker's kernel glue (`pgtable_check/mod.rs`): each checkpoint
/// is recorded.
pub mod pgtable_check {
    use super::{CHECKER, Event, record};
    use crate::addr::PhysAddr;

    pub fn enabled() -> bool {
        CHECKER.get()
    }

    pub fn handed_over() {
        record(Event::HandedOver);
    }

    pub fn frames_freed(pa: PhysAddr, count: usize) {
        record(Event::FramesFreed { pa, count });
    }

    pub fn section_ended(why: &'static str) {
        record(Event::SectionEnded(why));
    }

    pub fn wrote_outside_section() {
        record(Event::WroteOutsideSection);
    }

    pub fn table_allocated(pa: PhysAddr) {
        record(Event::TableAllocated(pa));
    }

    pub fn claimed_empty(pa: PhysAddr) {
        record(Event::ClaimedEmpty(pa));
    }

    pub fn walk_ended() {}

    /// An operation's bracket (the checker counts them): nothing here.
    pub struct Operation;

    pub fn operation() -> Operation {
        Operation
    }
}

/// The semihosting call the command line comes from: the host's line is
/// the test's ([`set_cmdline`]), read once as the kernel reads it.
pub mod semihosting {
    use std::sync::Mutex;

    static CMDLINE: Mutex<Option<&'static str>> = Mutex::new(None);

    /// The line the "runner" passes (before the kernel first reads it).
    pub fn set_cmdline(line: &'static str) {
        *CMDLINE.lock().unwrap() = Some(line);
    }

    pub fn cmdline(buf: &mut [u8]) -> Option<&str> {
        let line = (*CMDLINE.lock().unwrap())?;
        let len = line.len().min(buf.len());
        buf[..len].copy_from_slice(&line.as_bytes()[..len]);
        core::str::from_utf8(&buf[..len]).ok()
    }
}

/// Host memory for the frame allocator: `frames` frames from
/// `offset_frames` frames past a 2 MiB boundary (RAM whose base is not
/// itself aligned), leaked, handed to `frame_alloc::init` with `reserved`.
/// Addresses are host addresses (`phys_to_virt` is the identity here), so
/// what the kernel writes into a frame lands in this memory.
pub fn init_ram(frames: usize, offset_frames: usize, reserved: &dyn Fn(PhysAddr) -> Vec<(PhysAddr, u64)>) -> PhysAddr {
    const ALIGN: usize = 2 << 20;
    let bytes = (frames + offset_frames) * 4096 + ALIGN;
    let buf = std::boxed::Box::leak(std::vec![0u8; bytes].into_boxed_slice());
    let aligned = (buf.as_ptr() as usize).next_multiple_of(ALIGN);
    let base = PhysAddr::new((aligned + offset_frames * 4096) as u64);
    crate::frame_alloc::init(base, frames as u64 * 4096, &reserved(base));
    base
}

// The image's built-in command line (`builtin_cmdline!`, in the
// `.builtin_cmdline` section linker.ld bounds): the host's has one, for
// `boot_args`'s tests to read under the runner's.
core::arch::global_asm!(
    ".pushsection .rodata.lazymmu_builtin_cmdline,\"a\"",
    ".globl __builtin_cmdline_start",
    "__builtin_cmdline_start:",
    ".ascii \"vmap_lazy_purge=maybe test_time_limit=9 debug_pagealloc=off\"",
    ".globl __builtin_cmdline_end",
    "__builtin_cmdline_end:",
    ".popsection",
);

thread_local! {
    static ISSUED: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// The instructions this thread "issued" (barriers, TLBIs) since the last
/// call, in order.
pub fn take_issued() -> Vec<&'static str> {
    ISSUED.with(|i| core::mem::take(&mut *i.borrow_mut()))
}

fn issue(name: &'static str) {
    ISSUED.with(|i| i.borrow_mut().push(name));
}

/// `barrier::raw`: each instruction recorded instead of issued.
pub mod barrier_raw {
    use super::issue;

    pub fn dsb_ishst() {
        issue("dsb ishst");
    }
    pub fn dsb_ish() {
        issue("dsb ish");
    }
    pub fn isb() {
        issue("isb");
    }
    pub fn dmb_ishst() {
        issue("dmb ishst");
    }
    pub fn dmb_sy() {
        issue("dmb sy");
    }
    pub fn dsb_sy() {
        issue("dsb sy");
    }
    pub fn tlbi_vmalle1() {
        issue("tlbi vmalle1");
    }
}

/// The kernel's task, as much of it as the memory code reads: its name,
/// its lazy MMU state, whether an interrupt handler runs on top of it and
/// the walk guards it holds. Each host thread runs its own.
pub mod task {
    use core::cell::Cell;

    use crate::lazy_mmu::{LazyMmuState, LazySnapshot};

    pub struct Task {
        pub name: &'static str,
        pub(crate) lazy_mmu: LazyMmuState,
        irq_depth: Cell<u32>,
        walks: Cell<u32>,
        exclusive: Cell<bool>,
    }

    impl Task {
        pub fn lazy_state(&self) -> LazySnapshot {
            self.lazy_mmu.snapshot()
        }

        pub fn in_irq(&self) -> bool {
            self.irq_depth.get() > 0
        }

        /// An interrupt handler starts on top of this task (the kernel's
        /// `irq_enter`, as the exception entry calls it).
        pub fn irq_enter(&self) {
            self.irq_depth.set(self.irq_depth.get() + 1);
            self.refresh_store_mode();
        }

        pub fn irq_exit(&self) {
            self.irq_depth.set(self.irq_depth.get() - 1);
            self.refresh_store_mode();
        }

        /// As the kernel's (`task.rs`).
        pub fn refresh_store_mode(&self) {
            self.lazy_mmu.arch.set_store_mode(!self.in_irq() && self.lazy_mmu.is_active());
        }

        pub fn count_walk(&self, up: bool) {
            self.walks.set(if up { self.walks.get() + 1 } else { self.walks.get() - 1 });
        }

        pub fn walks(&self) -> u32 {
            self.walks.get()
        }

        pub fn take_walks(&self) -> u32 {
            self.walks.replace(0)
        }

        pub fn set_exclusive(&self, held: bool) {
            self.exclusive.set(held);
        }

        pub fn holds_exclusive(&self) -> bool {
            self.exclusive.get()
        }
    }

    thread_local! {
        static CURRENT: &'static Task = std::boxed::Box::leak(std::boxed::Box::new(Task {
            name: "host",
            lazy_mmu: LazyMmuState::new(),
            irq_depth: Cell::new(0),
            walks: Cell::new(0),
            exclusive: Cell::new(false),
        }));
    }

    pub fn current() -> &'static Task {
        CURRENT.with(|t| *t)
    }
}

/// The interrupt layer: in interrupt context when the task says so.
pub mod irq {
    pub fn in_interrupt() -> bool {
        super::task::current().in_irq()
    }
}

thread_local! {
    static TLBIS: RefCell<Vec<(&'static str, u64)>> = const { RefCell::new(Vec::new()) };
    static TLBI_RANGE: Cell<bool> = const { Cell::new(true) };
}

/// The TLBIs this thread issued since the last call: (name, operand).
pub fn take_tlbis() -> Vec<(&'static str, u64)> {
    TLBIS.with(|t| core::mem::take(&mut *t.borrow_mut()))
}

fn tlbi(name: &'static str, operand: u64) {
    issue(name);
    TLBIS.with(|t| t.borrow_mut().push((name, operand)));
}

/// Whether this thread's "CPU" has FEAT_TLBIRANGE (default: yes).
pub fn set_tlbi_range(on: bool) {
    TLBI_RANGE.set(on);
}

/// The TLB maintenance instructions (`_arch/aarch64/tlbi.rs`, whose
/// instructions are `asm!`): counted and told through the kernel's
/// barrier module, as there, and recorded with their operands.
pub mod tlbi_raw {
    pub fn vaale1is(va: u64) {
        super::tlbi("tlbi vaale1is", va);
    }
    pub fn vaale1(va: u64) {
        super::tlbi("tlbi vaale1", va);
    }
    pub fn rvaale1is(operand: u64) {
        super::tlbi("tlbi rvaale1is", operand);
    }
    pub fn vaae1is(va: u64) {
        super::tlbi("tlbi vaae1is", va);
    }
    pub fn rvaae1is(operand: u64) {
        super::tlbi("tlbi rvaae1is", operand);
    }
    pub fn vmalle1is() {
        super::tlbi("tlbi vmalle1is", 0);
    }
}

/// The CPU features the memory code reads (`cpu::features()`): the
/// host's CPU has range TLBIs unless a test says not.
pub mod cpu_features {
    use crate::cpufeature::Features;

    const fn with(tlbi_range: bool) -> Features {
        Features {
            midr: 0,
            tlbi_range,
            bbm_level: 0,
            bbml2_noabort: false,
            hafdbs: 0,
            granule_4k: true,
            granule_4k_lpa2: false,
            pa_bits: 48,
        }
    }

    static WITH_RANGE: Features = with(true);
    static WITHOUT_RANGE: Features = with(false);

    pub fn features() -> &'static Features {
        if super::TLBI_RANGE.get() { &WITH_RANGE } else { &WITHOUT_RANGE }
    }
}
