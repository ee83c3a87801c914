//! Locks safe against this CPU's own interrupt handlers.

use core::ops::{Deref, DerefMut};

use crate::arch::cpu;

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

    pub fn lock(&self) -> IrqSpinLockGuard<'_, T> {
        let daif = cpu::irq_save();
        IrqSpinLockGuard { guard: Some(self.inner.lock()), daif }
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
