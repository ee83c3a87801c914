//! Spurious kernel faults: an access that faulted although the tables, as
//! the MMU walks them now, allow it.
//!
//! A CPU that maps a page and hands it to another (a new task's stack
//! through `sched::spawn_on`, the data of a `smp::run_on` job) makes the
//! entry visible to every walker with its own `dsb ishst`, but the other
//! CPU has done no context synchronization of its own since: a walk it
//! began before the store may still have read the old, invalid entry, and
//! its access faults. Linux handles that window in the fault path, not
//! with barriers on the receiving CPU: "arm64: mm: Ignore spurious
//! translation faults taken from the kernel" (42f91093b043) re-checks the
//! address with `at s1e1r`, and if the translation now succeeds (or fails
//! with another kind of fault, which the retried access will then report)
//! the fault is ignored and the access retried. The exception entry and
//! return in between are context synchronizing (SCTLR_EL1.EIS/EOS, set at
//! boot), so the retry walks afresh.
//!
//! The same re-check serves a permission fault on a kernel data access
//! whose entry now allows it (a permission upgrade, RO to RW, seen by a
//! TLB that still holds the old entry): then the page's stale translation
//! is invalidated before the retry, as Linux's user fault path does with
//! `flush_tlb_fix_spurious_fault()`, or the retry would fault again from
//! the same TLB entry. Only data aborts are checked: `at` cannot ask about
//! an instruction fetch, and Linux checks data aborts only.
//!
//! A fault at the same place (ELR, FAR and ESR) as the one a CPU last took for
//! spurious is not spurious a second time: it is reported, not retried
//! forever.

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::arch::exception::{ExceptionClass, FaultStatus, Syndrome};
use crate::arch::mmu;
use crate::arch::sysreg::Par;
use crate::mm::addr::{PAGE_SIZE, VirtAddr};
use crate::mm::tlb;
use crate::percpu::{MAX_CPUS, this_cpu};

static SPURIOUS: AtomicU64 = AtomicU64::new(0);
/// The fault each CPU last took for spurious (ELR, FAR and ESR folded
/// into one word; 0: none), so that
/// the same fault again is reported instead of retried forever.
static LAST: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// What the fault path makes of a kernel fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultFix {
    /// The tables allow the access now: return, and the access is retried.
    Retry,
    /// A real fault: recover it into its `catch`, or report it.
    Fault,
}

/// Kernel faults taken for spurious and retried so far (what the unit test
/// below counts).
#[cfg(test)]
fn spurious_fault_count() -> u64 {
    SPURIOUS.load(Relaxed)
}

/// Decides whether the kernel fault `s` is spurious (see the module's
/// notes): Linux's `is_spurious_el1_translation_fault()`, and the same
/// re-check for a permission fault. The exception handler calls it first
/// for every synchronous exception; tests call it with a made-up syndrome.
pub fn fixup_spurious_el1_fault(s: &Syndrome) -> FaultFix {
    let permission = match (s.class, s.status) {
        (ExceptionClass::DataAbortCurrentEl, Some(FaultStatus::Translation { .. })) => false,
        (ExceptionClass::DataAbortCurrentEl, Some(FaultStatus::Permission { .. })) => true,
        _ => return FaultFix::Fault,
    };
    let cpu = this_cpu().id;
    let token = (s.elr ^ s.far.rotate_left(20) ^ s.esr.rotate_left(40)) | 1;
    if LAST[cpu].swap(0, Relaxed) == token {
        // The retry faulted again, at the same place: a real fault.
        return FaultFix::Fault;
    }
    let daif = crate::arch::cpu::irq_save();
    let par = Par::decode(mmu::at_s1e1_in_fault(s.far, s.write));
    crate::arch::cpu::irq_restore(daif);
    let spurious = match par {
        Par::Translated { .. } => true,
        // A translation fault that is now another kind of fault: the
        // retried access reports that one (Linux does the same).
        Par::Fault { status } => !permission && !matches!(FaultStatus::decode(status), FaultStatus::Translation { .. }),
    };
    if !spurious {
        return FaultFix::Fault;
    }
    if permission {
        // The TLB may still hold the entry that faulted.
        let page = VirtAddr::new(s.far & !(PAGE_SIZE - 1));
        tlb::flush_tlb_kernel_range(page, page.add(PAGE_SIZE));
    }
    LAST[cpu].store(token, Relaxed);
    if SPURIOUS.fetch_add(1, Relaxed) == 0 {
        crate::console::emergency(format_args!(
            "fault: ignoring a spurious kernel {} fault at {:#x} (ELR {:#x}); reported once\n",
            if permission { "permission" } else { "translation" },
            s.far,
            s.elr
        ));
    }
    FaultFix::Retry
}

#[cfg(test)]
mod tests {
    use super::{FaultFix, fixup_spurious_el1_fault, spurious_fault_count};
    use crate::arch::exception::{FaultStatus, Syndrome};
    use crate::barrier;
    use crate::mm::addr::{PAGE_SIZE, VirtAddr};
    use crate::mm::descriptor::Attributes;
    use crate::mm::vmalloc::{vfree, vm_unmap_aliases, vmalloc, vmap_pages, vunmap};
    use crate::mm::{frame_alloc, probe};

    /// A data abort from EL1 as the hardware would report it (ESR_EL1: EC
    /// 0x25, IL, WnR for a write, and the fault status code), at `va`.
    fn el1_data_abort(va: VirtAddr, write: bool, fsc: u64) -> Syndrome {
        let esr = (0x25 << 26) | (1 << 25) | (u64::from(write) << 6) | fsc;
        Syndrome::new(esr, va.as_u64(), 0xffff_ffff_8000_1000)
    }

    #[test_case]
    fn a_kernel_fault_on_a_mapping_that_exists_now_is_spurious_and_retried() {
        const TRANSLATION_L3: u64 = 0b00_0111;
        const PERMISSION_L3: u64 = 0b00_1111;
        let va = vmalloc(PAGE_SIZE).unwrap();
        let guard = va.add(PAGE_SIZE);
        let before = spurious_fault_count();
        let seen = |s| (fixup_spurious_el1_fault(&s), spurious_fault_count() - before);
        // A translation fault whose page the tables map now: the walk that
        // faulted saw the entry before it was published. Retried, counted.
        assert_eq!(seen(el1_data_abort(va, false, TRANSLATION_L3)), (FaultFix::Retry, 1));
        assert_eq!(seen(el1_data_abort(va, true, TRANSLATION_L3)), (FaultFix::Retry, 2));
        // The same fault again, at once: the retry faulted where the last
        // spurious one was; reported, not retried forever.
        assert_eq!(seen(el1_data_abort(va, true, TRANSLATION_L3)), (FaultFix::Fault, 2));
        // The guard page after the area is mapped by nothing: a real fault.
        assert_eq!(seen(el1_data_abort(guard, false, TRANSLATION_L3)), (FaultFix::Fault, 2));
        // A permission fault on a write the entry allows now (an upgrade seen
        // through a stale TLB entry): the page is invalidated, then retried.
        let c = barrier::cost(|| assert_eq!(seen(el1_data_abort(va, true, PERMISSION_L3)), (FaultFix::Retry, 3)));
        assert_eq!((c.tlbi_page, c.at), (1, 0), "one page invalidated; the re-check is not counted: {c:?}");
        // An instruction abort is never taken for spurious (`at` cannot ask).
        let fetch = Syndrome::new((0x21 << 26) | (1 << 25) | TRANSLATION_L3, va.as_u64(), va.as_u64());
        assert_eq!(seen(fetch), (FaultFix::Fault, 3));
        // A read-only page: a write's permission fault is real; a write's
        // translation fault is spurious (the retry reports the permission
        // fault). Mapped read-only from the start: `set_memory_ro` would make
        // the frame's linear alias read-only too, splitting the linear map's
        // block around it for good (which the test above counts).
        let frame = frame_alloc::alloc_frame().unwrap();
        // SAFETY: the test's own frame, read-only.
        let ro = unsafe { vmap_pages(&[frame], Attributes::KERNEL_RO) }.unwrap();
        assert_eq!(seen(el1_data_abort(ro, true, PERMISSION_L3)), (FaultFix::Fault, 3));
        assert_eq!(seen(el1_data_abort(ro, true, TRANSLATION_L3)), (FaultFix::Retry, 4));
        // A real access to the guard page still faults, through the handler.
        assert_eq!(probe::read(guard).map_err(|s| s.status), Err(Some(FaultStatus::Translation { level: 3 })));
        assert_eq!(spurious_fault_count() - before, 4, "and is not counted");
        vunmap(ro).unwrap();
        // No TLB may still map the frame when it goes.
        vm_unmap_aliases();
        frame_alloc::free_frame(frame).unwrap();
        vfree(va).unwrap();
    }
}
