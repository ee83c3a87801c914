//! The page-table rules checker (`pgtable_check=on`, the default): makes
//! the bugs QEMU cannot show fail under QEMU.
//!
//! QEMU walks the tables straight from memory and never caches a failed
//! walk, so a missing or misplaced `dsb`/`dmb`/`isb` never faults there:
//! barrier *counts* can be tested, barrier *placement* cannot. The checker
//! watches the two things the architecture's rules are about, every
//! descriptor store (`arch::lazy_mmu`'s one store) and every ordering
//! instruction and TLBI (`arch::barrier`), through `arch::observe`, keeps
//! shadow state per entry, per table page, per CPU and per task (or
//! interrupt handler), and reports each broken rule as it happens:
//!
//! - **publish**: a valid entry stored by a CPU is followed, on that CPU,
//!   by `dsb ishst` (or `dsb ish`) and then `isb` before the lazy MMU
//!   section that made it ends (leave, nested flush, pause), before a write
//!   made outside any section returns, before an interrupt handler returns,
//!   before a stack it maps is handed to another task, and before the task
//!   is switched out (the dsb; its isb may follow on the next CPU).
//! - **link-order**: a table is linked into a live table only when every
//!   store into it, and into the tables below it that are not live yet
//!   (their zeroing included), has been ordered by a `dmb ishst` or a
//!   `dsb` on the CPU that made it.
//! - **break-before-make**: a live entry is replaced by a different valid
//!   one (another output address or memory type, block <-> table, a
//!   not-global page made global) only through invalid + TLBI + `dsb ish`;
//!   the one exception is a block split
//!   into a table that maps the same memory, on a CPU with BBML2_NOABORT.
//!   Breaking a linear-map block, or the linear-map page of a live page
//!   table or of the heap, is a violation on any CPU: the kernel may touch
//!   that memory at any moment, from any CPU.
//! - **invalidate**: an entry cleared, or a leaf made less or more
//!   permissive in place, is covered by a TLBI (one that drops cached
//!   walks, for a cleared table entry), completed by `dsb ish` on the CPU
//!   that issued it, before the operation that changed it returns, and a
//!   cleared one before the frame or table it mapped is freed. (An upgrade
//!   too: the kernel forgives no permission fault; `shadow/perms.rs`.)
//!   An entry cleared by a lazy free (`vfree`, `vunmap`) is the purge's to
//!   invalidate: until it is, the address is not mapped again and the
//!   frame not freed.
//! - **table-lifetime**: descriptors are stored only into live (or not yet
//!   linked) tables; a table is unlinked only while no walk is in progress
//!   (`pgtable::exclusive`), freed only once unlinked and invalidated, never
//!   with stores queued into it; a walk guard is not dropped while the
//!   task's deferred stores are still queued.
//! - **barrier-order**: `dsb ishst` comes before the `isb` that completes a
//!   publish, and before a TLBI of the entry it must make visible; `dsb ish`
//!   then `isb` follow a TLBI.
//! - **publish-receiver**: a CPU that takes a task whose stack another
//!   CPU mapped (or that last ran on another CPU) issues `isb` between
//!   taking it and switching to its stack: the spurious-fault fixup
//!   cannot catch a fault on a stack (`shadow/handover.rs`).
//! - **mismatched-alias**: RAM is mapped Device or non-cacheable only
//!   while no cacheable linear-map alias of it is live (never, here: the
//!   linear map holds all RAM; `vmalloc::vmap_range` refuses it).
//! - **icache**: instructions written as data (`cacheflush::
//!   write_instructions` says where) are cleaned to the point of
//!   unification and their instruction lines invalidated, each completed
//!   by `dsb ish`, before an entry makes their memory executable; what
//!   CTR_EL0's IDC and DIC say is not needed is not asked
//!   (`shadow/icache.rs`).
//! - **freed-while-mapped**: a frame goes back to the allocator only once
//!   no valid entry maps it, the linear map's aside (it maps all RAM, free
//!   or not): unmap, flush, then free (`shadow/mapped.rs`).
//!
//! Everything is checked under one lock. The checker watches and never
//! stores: the store path tells it of a run of stores before making them
//! (`arch::observe::Observer::storing`), and then makes them exactly as
//! it does with the checker off. Told first, the checker has judged a new
//! entry before another CPU can read it from memory (a table linked by
//! one CPU is shared by the next), so that CPU's use of it is never
//! checked before the store that made it.
//!
//! A violation is recorded with the rule, a sentence, the entry (its VA,
//! level, old and new descriptor), the CPU, the task and the call chain,
//! and printed. The test harness fails the test it happened in, commands
//! exit with `ExitCode::RuleViolated`, and the fuzzer stops at the step.
//! `bench` turns the checker off before it measures.

mod report;
mod shadow;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};

use report::BACKTRACE_DEPTH;
pub use report::{EntryChange, Rule, Violation};
use shadow::{Checker, CodeCaches, Ctx, Here, Kernel, Start};

use crate::arch::cpu;
use crate::arch::observe::{self, Issued, Observer, QueueEvent, Run, Watcher};
use crate::mm::addr::{PhysAddr, VirtAddr};
use crate::mm::descriptor::Descriptor;
use crate::mm::{frame_alloc, heap, lazy_mmu, pgtable};
use crate::percpu::this_cpu;
use crate::sync::IrqSpinLock;
use crate::{boot_args, println};

static ENABLED: AtomicBool = AtomicBool::new(false);
static CHECKER: IrqSpinLock<Option<Checker<Live>>> = IrqSpinLock::new(None);
/// Events checked so far: stores, barriers, TLBIs and checkpoints.
static CHECKS: AtomicU64 = AtomicU64::new(0);

/// Violations since the last [`take_violations`]: a count per rule and the
/// first few in full.
struct Log {
    by_rule: [u64; Rule::ALL.len()],
    first: Vec<Violation>,
    printed: u64,
}

static LOG: IrqSpinLock<Log> = IrqSpinLock::new(Log { by_rule: [0; Rule::ALL.len()], first: Vec::new(), printed: 0 });
static TOTAL: AtomicU64 = AtomicU64::new(0);
/// Of TOTAL, those broken on purpose (see [`expecting`]).
static EXPECTED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// The rule being broken on purpose (`expecting`), not printed; NONE if none.
static EXPECTED: AtomicU8 = AtomicU8::new(NONE);
const NONE: u8 = u8::MAX;

/// Violations kept in full; the rest are only counted.
const KEPT: usize = 32;
/// Violations printed as they happen, per boot.
const PRINTED: u64 = 16;

/// Was the checker asked for? `pgtable_check=off` on the command line (or
/// in an image's built-in one) is the only way to say no.
pub(crate) fn requested() -> bool {
    boot_args::bool_option("pgtable_check")
}

/// Starts checking, at boot, once the heap exists: learns every table the
/// kernel has built so far, then watches from here on.
pub(crate) fn init() {
    if !requested() {
        return;
    }
    let start = Start {
        root: pgtable::kernel_root(),
        frames: frame_alloc::managed(),
        heap: heap::phys_range(),
        bbml2_noabort: crate::cpu::features().bbml2_noabort,
        caches: {
            let ctr = crate::arch::cache::cache_type();
            CodeCaches { d_line: ctr.d_line(), i_line: ctr.i_line(), idc: ctr.idc(), dic: ctr.dic() }
        },
    };
    *CHECKER.lock() = Some(Checker::new(Live, start));
    observe::install(Watcher::Checker, &HOOKS);
    ENABLED.store(true, Relaxed);
}

/// Is every store and barrier being checked?
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// Stops checking for the rest of the boot (the bench measures without
/// it). It cannot be turned back on: tables made meanwhile are unknown.
pub fn disable() {
    ENABLED.store(false, Relaxed);
    observe::set_listening(Watcher::Checker, false);
}

/// What the rules ask of the kernel, answered from the live tables.
struct Live;

impl Kernel for Live {
    fn entry(&self, table: PhysAddr, index: u64) -> u64 {
        // SAFETY: `table` is a page-table page the checker knows, reached
        // through the linear map; a volatile read of one descriptor.
        unsafe { core::ptr::read_volatile(crate::mm::phys_to_virt(table).as_ptr::<u64>().add(index as usize)) }
    }
    fn phys_to_virt(&self, pa: PhysAddr) -> VirtAddr {
        crate::mm::phys_to_virt(pa)
    }
    fn virt_to_phys(&self, va: VirtAddr) -> PhysAddr {
        crate::mm::virt_to_phys(va)
    }
    fn exclusive_held(&self) -> bool {
        pgtable::exclusive_held()
    }
}

/// Where the event being checked happens: this CPU, and the task or the
/// interrupt handler running on it (asked with interrupts masked).
fn here() -> Here {
    let cpu = this_cpu();
    let task = Ctx::Task(cpu.current_task() as *const _ as usize);
    let irq = cpu.irq_depth() > 0;
    Here { cpu: cpu.id, ctx: if irq { Ctx::Irq(cpu.id) } else { task }, task, name: cpu.current_task().name, irq }
}

/// Runs `f` on the checker with the context it was called in, then
/// records what it found. `fp` is the caller's frame pointer, where a
/// violation's backtrace starts.
fn check(fp: u64, f: impl FnOnce(&mut Checker<Live>)) {
    if !enabled() {
        return;
    }
    let mut found = {
        let mut guard = CHECKER.lock();
        let Some(checker) = guard.as_mut() else { return };
        CHECKS.fetch_add(1, Relaxed);
        checker.begin(here());
        f(checker);
        checker.take_found()
    };
    if !found.is_empty() {
        let backtrace = backtrace_from(fp);
        for v in &mut found {
            v.backtrace = backtrace;
        }
    }
    record(found);
}

/// The return addresses of the frame-pointer chain (the kernel is built
/// with frame pointers) from the frame record at `fp`, innermost first.
fn backtrace_from(mut fp: u64) -> [u64; BACKTRACE_DEPTH] {
    let mut out = [0; BACKTRACE_DEPTH];
    let mut n = 0;
    while n < BACKTRACE_DEPTH && fp != 0 && fp.is_multiple_of(16) && fp >> 48 == 0xffff {
        // SAFETY: `fp` is a frame record of this stack (a kernel address,
        // aligned, above the one before it): the caller's frame pointer
        // and the return address.
        let (next, lr) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
        if lr == 0 {
            break;
        }
        out[n] = lr;
        n += 1;
        if next <= fp || next - fp > 64 << 10 {
            break;
        }
        fp = next;
    }
    out
}

fn record(found: Vec<Violation>) {
    if found.is_empty() {
        return;
    }
    let to_print: Vec<Violation> = {
        let mut log = LOG.lock();
        let mut to_print = Vec::new();
        for v in found {
            TOTAL.fetch_add(1, Relaxed);
            log.by_rule[v.rule.index()] += 1;
            if log.first.len() < KEPT {
                log.first.push(v);
            }
            if EXPECTED.load(Relaxed) != v.rule as u8 && log.printed < PRINTED {
                log.printed += 1;
                to_print.push(v);
            }
        }
        to_print
    };
    for v in &to_print {
        println!("\n{v}");
    }
    if to_print.last().is_some() && LOG.lock().printed == PRINTED {
        println!("pgtable_check: further violations are counted, not printed");
    }
}

/// The hooks `arch::observe` calls.
struct Hooks;

static HOOKS: Hooks = Hooks;

impl Observer for Hooks {
    fn issued(&self, what: Issued) {
        check(cpu::frame_pointer(), |c| c.issued(what));
    }
    /// The run's stores and their judgement, one step under the checker's
    /// lock: a CPU that reads a new entry from memory (to share a table it
    /// links) can only be checked after the store that put it there. The
    /// stores are the store path's own loop, as it runs when nothing
    /// watches; the checker reads the old entries first and learns the new
    /// ones from `new`.
    fn storing(&self, run: &Run, new: &dyn Fn(usize) -> Option<Descriptor>, store: &mut dyn FnMut()) {
        let mut stored = false;
        // `new` is the caller's code: it is asked before the checker's lock
        // is taken, so that a panic in it (which abandons the code, and
        // any lock it holds) leaves the checker free. Nothing is stored then.
        let descs: Vec<(usize, u64)> = (0..run.len).filter_map(|i| new(i).map(|d| (i, d.0))).collect();
        check(cpu::frame_pointer(), |c| {
            let changes: Vec<(u64, u64, u64)> = descs
                .iter()
                .map(|&(i, desc)| {
                    let slot = run.first.wrapping_add(i);
                    // SAFETY: an entry of the live page table the store path
                    // is about to write (its caller's contract); reading it
                    // is harmless.
                    let old = unsafe { core::ptr::read_volatile(slot) };
                    (slot as u64, old, desc)
                })
                .collect();
            store();
            stored = true;
            for (slot, old, new) in changes {
                c.stored(slot, old, new);
            }
        });
        if !stored {
            store();
        }
    }
    fn queue(&self, event: QueueEvent) {
        match event {
            QueueEvent::Queued { slot, .. } => check(cpu::frame_pointer(), |c| c.queued(slot as u64, true)),
            QueueEvent::Dequeued { slot } => check(cpu::frame_pointer(), |c| c.queued(slot as u64, false)),
            QueueEvent::Full | QueueEvent::Applying { .. } => {}
        }
    }
}

// ---- checkpoints: where the rules say "by now" -------------------------

/// A page-table page was allocated and zeroed (`pgtable::alloc_table`).
#[inline(never)]
pub(crate) fn table_allocated(pa: PhysAddr) {
    check(cpu::frame_pointer(), |c| c.table_allocated(pa.as_u64()));
}

/// A level-3 table is taken as empty without a look, on its caller's word
/// (`pgtable::Cleared::Leaves`): the checker looks.
#[inline(never)]
pub(crate) fn claimed_empty(pa: PhysAddr) {
    check(cpu::frame_pointer(), |c| c.claimed_empty(pa.as_u64()));
}

/// Frames are about to go back to the allocator.
#[inline(never)]
pub(crate) fn frames_freed(pa: PhysAddr, count: usize) {
    check(cpu::frame_pointer(), |c| c.frames_freed(pa.as_u64(), count as u64));
}

/// [va, va + size) was cleared by a lazy free (`vfree`, `vunmap`): its
/// TLB flush is the purge's, not the freeing operation's. Until then the
/// range may not be mapped again, nor its frames freed.
#[inline(never)]
pub(crate) fn lazily_freed(va: VirtAddr, size: u64) {
    check(cpu::frame_pointer(), |c| c.lazily_freed(va.as_u64(), va.as_u64() + size));
}

/// Instructions were just stored at [va, va + bytes): their memory may be
/// made executable only once they are cleaned and invalidated as CTR_EL0
/// asks (`flush_icache_range`).
#[inline(never)]
pub(crate) fn code_written(va: VirtAddr, bytes: u64) {
    check(cpu::frame_pointer(), |c| c.code_written(va.as_u64(), bytes));
}

/// Cleared entries that wait for a purge's flush: 0 once
/// `vm_unmap_aliases` has returned (and with the checker off).
pub fn awaiting_purge() -> u64 {
    CHECKER.lock().as_ref().map_or(0, |c| c.awaiting_purge())
}

/// A lazy MMU section ended for good (`why`: the call that ended it:
/// outermost disable, nested disable, pause).
///
/// Inlined to its test of [`enabled`]: with the checker off (the bench,
/// test_vmalloc) a section's end, a walk's end and an operation cost a
/// load and a branch, not a call (the bodies stay out of line, so that
/// their frame pointer starts the backtrace).
#[inline(always)]
pub(crate) fn section_ended(why: &'static str) {
    if enabled() {
        section_ended_checked(why);
    }
}

#[inline(never)]
fn section_ended_checked(why: &'static str) {
    check(cpu::frame_pointer(), |c| c.publish_point(why));
}

/// An entry was written outside any active section: it is paid for now.
#[inline(never)]
pub(crate) fn wrote_outside_section() {
    check(cpu::frame_pointer(), |c| c.publish_point("a write outside any lazy MMU section returned"));
}

/// A walk guard (`pgtable::walking`) is going: the current task's
/// deferred stores must all be made.
/// Inlined to its test of [`enabled`] (see [`section_ended`]).
#[inline(always)]
pub(crate) fn walk_ended() {
    if enabled() {
        walk_ended_checked();
    }
}

#[inline(never)]
fn walk_ended_checked() {
    let queued = lazy_mmu::queued_stores();
    check(cpu::frame_pointer(), |c| c.walk_ended(queued));
}

/// A mapping (a new task's stack) is handed to another task, which may run
/// on another CPU at once: it must be published now.
#[inline(never)]
pub fn handed_over() {
    let queued = lazy_mmu::queued_stores();
    check(cpu::frame_pointer(), |c| c.handed_over(queued));
}

/// The stack [bottom, top), mapped and published on this CPU, is handed
/// to a task that may run on another CPU (`KernelStack::new`).
#[inline(never)]
pub(crate) fn stack_handed_over(bottom: VirtAddr, top: VirtAddr) {
    check(cpu::frame_pointer(), |c| c.mapping_handed_over(bottom.as_u64(), top.as_u64()));
}

/// This CPU took a task whose stack is [bottom, top) from the run queue.
/// Inlined to its test of [`enabled`] (see [`section_ended`]).
#[inline(always)]
pub(crate) fn stack_received(bottom: VirtAddr, top: VirtAddr) {
    if enabled() {
        stack_received_checked(bottom, top);
    }
}

#[inline(never)]
fn stack_received_checked(bottom: VirtAddr, top: VirtAddr) {
    check(cpu::frame_pointer(), |c| c.mapping_received(bottom.as_u64(), top.as_u64()));
}

/// This CPU is about to switch to the stack [bottom, top) it received.
/// Inlined to its test of [`enabled`] (see [`section_ended`]).
#[inline(always)]
pub(crate) fn stack_entering(bottom: VirtAddr, top: VirtAddr) {
    if enabled() {
        stack_entering_checked(bottom, top);
    }
}

#[inline(never)]
fn stack_entering_checked(bottom: VirtAddr, top: VirtAddr) {
    check(cpu::frame_pointer(), |c| c.using_received(bottom.as_u64(), top.as_u64()));
}

/// The scheduler is about to switch the current task out (after its
/// `dsb ish`).
#[inline(never)]
pub(crate) fn switching_out() {
    check(cpu::frame_pointer(), |c| c.switching_out());
}

/// The current task has finished.
#[inline(never)]
pub(crate) fn task_exited() {
    let queued = lazy_mmu::queued_stores();
    check(cpu::frame_pointer(), |c| c.quiescent(queued, true));
}

/// An interrupt handler is about to return.
#[inline(never)]
pub(crate) fn interrupt_exit() {
    check(cpu::frame_pointer(), |c| c.quiescent(0, true));
}

/// The current task is between operations (a test ended, a fuzz step or
/// a command finished): nothing it changed may still be owed.
#[inline(never)]
pub fn quiescent() {
    let queued = lazy_mmu::queued_stores();
    check(cpu::frame_pointer(), |c| c.quiescent(queued, false));
}

/// A page-table operation in progress: when the outermost one of a task
/// ends, everything it changed must be published and invalidated.
#[must_use = "the operation ends when this is dropped"]
pub struct Operation {
    counted: bool,
}

/// Starts an operation (see [`Operation`]).
#[inline(always)]
pub fn operation() -> Operation {
    let counted = enabled();
    if counted {
        check(cpu::frame_pointer(), |c| c.op_begin());
    }
    Operation { counted }
}

impl Drop for Operation {
    /// Inside an active lazy MMU section the publishing is the section's
    /// end's business; the TLB maintenance is owed at once either way.
    #[inline(always)]
    fn drop(&mut self) {
        if self.counted {
            operation_ended();
        }
    }
}

#[inline(never)]
fn operation_ended() {
    let in_section = lazy_mmu::is_lazy_mmu_mode_active();
    check(cpu::frame_pointer(), |c| c.op_end(in_section));
}

// ---- what was found ----------------------------------------------------

/// Violations recorded: how many of each rule, and the first ones in full.
#[derive(Clone, Debug, Default)]
pub struct Violations {
    pub by_rule: [u64; Rule::ALL.len()],
    pub first: Vec<Violation>,
}

impl Violations {
    pub fn total(&self) -> u64 {
        self.by_rule.iter().sum()
    }

    pub fn of(&self, rule: Rule) -> u64 {
        self.by_rule[rule.index()]
    }

    /// "2 publish, 1 invalidate", or "none".
    pub fn summary(&self) -> alloc::string::String {
        use core::fmt::Write;
        let mut s = alloc::string::String::new();
        for rule in Rule::ALL {
            let n = self.of(rule);
            if n > 0 {
                let _ = write!(s, "{}{n} {rule}", if s.is_empty() { "" } else { ", " });
            }
        }
        if s.is_empty() {
            s.push_str("none");
        }
        s
    }
}

/// Takes the violations recorded so far (the log starts empty again).
pub fn take_violations() -> Violations {
    let mut log = LOG.lock();
    let taken = Violations { by_rule: log.by_rule, first: core::mem::take(&mut log.first) };
    log.by_rule = [0; Rule::ALL.len()];
    taken
}

/// Runs `f`, which breaks `rule` on purpose (a demo of a bug, a test of
/// the checker), without printing those violations; returns its result
/// and the violations of `rule` recorded meanwhile, on any CPU. Any other
/// rule broken meanwhile stays recorded (and printed), as an unexpected
/// failure.
pub fn expecting<R>(rule: Rule, f: impl FnOnce() -> R) -> (R, Violations) {
    let earlier = take_violations();
    let previous = EXPECTED.swap(rule as u8, Relaxed);
    let result = f();
    EXPECTED.store(previous, Relaxed);
    let during = take_violations();
    let mut found = Violations::default();
    found.by_rule[rule.index()] = during.of(rule);
    let mut log = LOG.lock();
    log.by_rule = earlier.by_rule;
    log.first = earlier.first;
    for other in Rule::ALL.into_iter().filter(|&r| r != rule) {
        log.by_rule[other.index()] += during.of(other);
    }
    for v in during.first {
        if v.rule == rule {
            found.first.push(v);
        } else if log.first.len() < KEPT {
            log.first.push(v);
        }
    }
    EXPECTED_TOTAL.fetch_add(found.total(), Relaxed);
    (result, found)
}

/// Events checked and violations found since boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub checks: u64,
    /// Rules broken by the kernel: 0 in a correct one.
    pub violations: u64,
    /// Rules broken on purpose, to show a bug (see [`expecting`]).
    pub expected: u64,
}

pub fn stats() -> Stats {
    let expected = EXPECTED_TOTAL.load(Relaxed);
    Stats { checks: CHECKS.load(Relaxed), violations: TOTAL.load(Relaxed) - expected, expected }
}

impl core::fmt::Display for Stats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "pgtable_check: {} checks, {} violations", self.checks, self.violations)?;
        if self.expected > 0 {
            write!(f, " ({} more broken on purpose, to show a bug)", self.expected)?;
        }
        Ok(())
    }
}
