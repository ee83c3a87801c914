//! Locks safe against this CPU's own interrupt handlers, and waits for a
//! lock that say so when they cannot end.

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::panic::Location;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::arch::cpu;
use crate::console::emergency;

/// How long a lock wait spins before it reports itself: far beyond any
/// wait the kernel means (its locks are held for a few table writes), and
/// well inside the runner's and the harness's time limits, so that a wait
/// that cannot end is named before the run is killed.
pub const LOCK_WAIT_REPORT_S: u64 = 2;

static LOCK_WAIT_REPORTS: AtomicU64 = AtomicU64::new(0);

/// Lock waits that reported themselves so far (each reports once).
pub fn lock_wait_reports() -> u64 {
    LOCK_WAIT_REPORTS.load(Relaxed)
}

/// A spin on a lock that is taken: after [`LOCK_WAIT_REPORT_S`] of the
/// generic timer it reports, once, which lock it waits for and where,
/// then goes on waiting (a slow holder may still let go; one that never
/// will is ended by the harness's or the runner's time limit, with this
/// report already printed). Made only once a first try failed, so that a
/// lock taken at once reads no timer.
pub(crate) struct SpinWait {
    lock: &'static str,
    at: &'static Location<'static>,
    deadline: u64,
    reported: bool,
}

impl SpinWait {
    #[track_caller]
    pub(crate) fn new(lock: &'static str) -> SpinWait {
        SpinWait::at(lock, Location::caller())
    }

    pub(crate) fn at(lock: &'static str, at: &'static Location<'static>) -> SpinWait {
        let deadline = cpu::counter() + LOCK_WAIT_REPORT_S * cpu::counter_frequency();
        SpinWait { lock, at, deadline, reported: false }
    }

    /// One turn of the spin; `holders` counts who has the lock (readers
    /// and writer), for the report.
    pub(crate) fn spin(&mut self, holders: impl FnOnce() -> u64) {
        if !self.reported && cpu::counter() > self.deadline {
            self.reported = true;
            LOCK_WAIT_REPORTS.fetch_add(1, Relaxed);
            // Not through the console's lock: it may be the one waited for.
            emergency(format_args!(
                "\n*** lock wait: {} not taken after {LOCK_WAIT_REPORT_S} s ({} holder(s)), waiting at {}:{}:{} \
                 (cpu {}, task {}); still waiting ***\n",
                self.lock,
                holders(),
                self.at.file(),
                self.at.line(),
                self.at.column(),
                crate::percpu::this_cpu().id,
                crate::task::current().name,
            ));
        }
        // The holder may be a vCPU that QEMU runs only when this one's
        // turn ends (`-icount`): yield to it, or the deadline, counted in
        // virtual time, passes in a few of its turns.
        cpu::relax();
    }
}

/// A spinlock that masks IRQs while held, so an interrupt handler on the
/// same CPU can never spin on a lock its interrupted task holds.
pub struct IrqSpinLock<T> {
    inner: spin::Mutex<T>,
}

pub struct IrqSpinLockGuard<'a, T> {
    guard: Option<spin::MutexGuard<'a, T>>,
    daif: u64,
}

impl<T> IrqSpinLock<T> {
    pub const fn new(value: T) -> Self {
        IrqSpinLock { inner: spin::Mutex::new(value) }
    }

    /// Takes the lock; a wait that cannot end reports where it waits.
    #[track_caller]
    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let daif = cpu::irq_save();
        let guard = match self.inner.try_lock() {
            Some(guard) => guard,
            None => self.lock_slow(Location::caller()),
        };
        IrqSpinLockGuard { guard: Some(guard), daif }
    }

    /// Takes the lock with IRQs already masked by `masked`, without a
    /// mask and an unmask of its own: the guard borrows `masked`, so the
    /// lock is let go of before they can come back.
    #[track_caller]
    pub(crate) fn lock_masked<'a>(&'a self, _masked: &'a IrqsMasked) -> spin::MutexGuard<'a, T> {
        match self.inner.try_lock() {
            Some(guard) => guard,
            None => self.lock_slow(Location::caller()),
        }
    }

    #[cold]
    fn lock_slow(&self, at: &'static Location<'static>) -> spin::MutexGuard<'_, T> {
        // The lock is named by what it keeps (`IrqSpinLock<..::Areas>`).
        let mut wait = SpinWait::at(core::any::type_name::<Self>(), at);
        loop {
            if let Some(guard) = self.inner.try_lock() {
                return guard;
            }
            wait.spin(|| 1);
        }
    }
}

impl<T> Deref for IrqSpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_ref().expect("guard is held until drop")
    }
}

impl<T> DerefMut for IrqSpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("guard is held until drop")
    }
}

impl<T> Drop for IrqSpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Release the lock before interrupts can come back.
        self.guard = None;
        cpu::irq_restore(self.daif);
    }
}

/// IRQs masked on this CPU from [`IrqsMasked::mask`] until it is dropped,
/// when they are put back as they were: locks taken one after another
/// under it ([`IrqSpinLock::lock_masked`]) cost one mask and one unmask
/// between them, where each [`IrqSpinLock::lock`] masks and unmasks (an
/// unmask is one of the dearest instructions under TCG: it ends the
/// translated block). Not `Send`: it stays on the CPU it masked.
pub(crate) struct IrqsMasked {
    daif: u64,
    here: PhantomData<*const ()>,
}

impl IrqsMasked {
    #[inline]
    pub(crate) fn mask() -> IrqsMasked {
        IrqsMasked { daif: cpu::irq_save(), here: PhantomData }
    }
}

impl Drop for IrqsMasked {
    #[inline]
    fn drop(&mut self) {
        cpu::irq_restore(self.daif);
    }
}
