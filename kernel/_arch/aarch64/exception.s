// Exception vectors and the fault-recovery trampoline.
//
// Every vector saves the interrupted context as a TrapFrame on the current
// stack (x0-x30, ELR, SPSR), calls `__exception_entry(frame, kind)` and
// restores the (possibly modified) frame with eret.

.equ FRAME_SIZE, 34 * 8     // x0-x30, elr, spsr, padding: 16-byte aligned

.macro VECTOR kind
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #16 * 15]
    mrs     x1, spsr_el1
    str     x1, [sp, #16 * 16]
    mov     x0, sp
    mov     x1, #\kind
    bl      __exception_entry
    b       __exception_return
.endm

.section .text
.balign 2048
.global __exception_vectors
__exception_vectors:
    // kind = 4 * source + type; source: 0 current EL on SP_EL0, 1 current
    // EL on SP_ELx, 2 lower EL AArch64, 3 lower EL AArch32; type: 0 sync,
    // 1 IRQ, 2 FIQ, 3 SError.
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

__exception_return:
    ldr     x1, [sp, #16 * 16]
    msr     spsr_el1, x1
    ldp     x30, x1, [sp, #16 * 15]
    msr     elr_el1, x1
    ldp     x0, x1, [sp, #16 * 0]
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    add     sp, sp, #FRAME_SIZE
    eret

// u64 __recovery_call(RecoveryPoint *point, void (*f)(void *), void *ctx)
//
// Saves the callee-saved registers and SP in *point, then calls f(ctx).
// Returns 0 when f returns normally. When a fault or a panic inside f is
// recovered, control comes back through __recovery_resume and this call
// returns 1 instead, as if f had returned: f's frames are abandoned.
.global __recovery_call
__recovery_call:
    stp     x29, x30, [sp, #-16]!
    mov     x29, sp
    stp     x19, x20, [x0, #16 * 0]
    stp     x21, x22, [x0, #16 * 1]
    stp     x23, x24, [x0, #16 * 2]
    stp     x25, x26, [x0, #16 * 3]
    stp     x27, x28, [x0, #16 * 4]
    mov     x9, sp
    stp     x29, x9, [x0, #16 * 5]
    mov     x0, x2
    blr     x1
    mov     x0, #0
    ldp     x29, x30, [sp], #16
    ret

// __recovery_resume(RecoveryPoint *point): reached by eret from the
// exception handler (or a plain branch from the panic handler) with x0 =
// the point saved by __recovery_call.
.global __recovery_resume
__recovery_resume:
    ldp     x19, x20, [x0, #16 * 0]
    ldp     x21, x22, [x0, #16 * 1]
    ldp     x23, x24, [x0, #16 * 2]
    ldp     x25, x26, [x0, #16 * 3]
    ldp     x27, x28, [x0, #16 * 4]
    ldp     x29, x9, [x0, #16 * 5]
    mov     sp, x9
    mov     x0, #1
    ldp     x29, x30, [sp], #16
    ret
