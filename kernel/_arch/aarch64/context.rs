//! The register half of a context switch: save the callee-saved registers
//! and SP of the task that stops, load those of the task that goes on.
//!
//! Only callee-saved state needs saving: the switch is a function call, so
//! the compiler already keeps everything else on the stack. A task
//! preempted by an interrupt is switched from inside the interrupt handler,
//! so its interrupted registers sit in the TrapFrame on its own stack and
//! come back when the handler returns. (No FP/SIMD state: the kernel is
//! built for soft-float.)

use core::arch::global_asm;

/// What `__cpu_switch_to` saves and loads, in its layout.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Context {
    /// x19-x28.
    callee_saved: [u64; 10],
    fp: u64,
    /// Where the task goes on: the return address of its last switch, or
    /// `__task_start` for a task that never ran.
    lr: u64,
    sp: u64,
    _pad: u64,
}

impl Context {
    pub const fn zeroed() -> Context {
        Context { callee_saved: [0; 10], fp: 0, lr: 0, sp: 0, _pad: 0 }
    }

    /// The context of a task that has not run yet: switching to it starts
    /// `entry(arg)` on the stack whose top is `stack_top`.
    pub fn new_task(stack_top: u64, entry: extern "C" fn(u64) -> !, arg: u64) -> Context {
        let mut context = Context::zeroed();
        context.callee_saved[0] = entry as *const () as u64;
        context.callee_saved[1] = arg;
        context.lr = __task_start as *const () as u64;
        context.sp = stack_top;
        context
    }
}

global_asm!(
    // __cpu_switch_to(prev: *mut Context, next: *const Context)
    ".global __cpu_switch_to",
    "__cpu_switch_to:",
    "    mov x9, sp",
    "    stp x19, x20, [x0, #16 * 0]",
    "    stp x21, x22, [x0, #16 * 1]",
    "    stp x23, x24, [x0, #16 * 2]",
    "    stp x25, x26, [x0, #16 * 3]",
    "    stp x27, x28, [x0, #16 * 4]",
    "    stp x29, x30, [x0, #16 * 5]",
    "    str x9, [x0, #16 * 6]",
    "    ldp x19, x20, [x1, #16 * 0]",
    "    ldp x21, x22, [x1, #16 * 1]",
    "    ldp x23, x24, [x1, #16 * 2]",
    "    ldp x25, x26, [x1, #16 * 3]",
    "    ldp x27, x28, [x1, #16 * 4]",
    "    ldp x29, x30, [x1, #16 * 5]",
    "    ldr x9, [x1, #16 * 6]",
    "    mov sp, x9",
    "    ret",
    // A new task's first instructions: x19 = entry, x20 = its argument.
    // x29 and x30 are zero, which ends the frame-pointer chain.
    ".global __task_start",
    "__task_start:",
    "    mov x0, x20",
    "    br x19",
);

unsafe extern "C" {
    fn __cpu_switch_to(prev: *mut Context, next: *const Context);
    fn __task_start() -> !;
}

/// Saves the running task's registers in `prev` and continues the task
/// saved in `next`. Returns when some later switch loads `prev` again.
///
/// # Safety
/// `next` must hold a context saved by this function or made by
/// [`Context::new_task`], whose stack is still mapped; interrupts must be
/// masked.
pub unsafe fn cpu_switch_to(prev: *mut Context, next: *const Context) {
    // SAFETY: as the caller guarantees.
    unsafe { __cpu_switch_to(prev, next) }
}
