// Entry of the boot CPU, at its physical address with the MMU off.
//
// QEMU enters an ELF at EL1 (or EL2 with virtualization=on) with x0 = 0, or
// x0 = the device tree address under the Linux boot protocol. We keep x0,
// drop to EL1 if needed, take the boot stack, clear .bss, let Rust build the
// boot page tables (and invalidate .bss, written with the caches off), switch
// the MMU on, then jump to the image's virtual (upper-half) address and never
// come back down.

// A 64-bit constant into a register, by move-immediates (no literal load:
// some run before SCTLR_ELx says how memory is accessed).
.macro mov_q reg, value
    movz    \reg, #((\value) & 0xffff)
    movk    \reg, #(((\value) >> 16) & 0xffff), lsl #16
    movk    \reg, #(((\value) >> 32) & 0xffff), lsl #32
    movk    \reg, #(((\value) >> 48) & 0xffff), lsl #48
.endm

// SCTLR_EL1 written whole (boot.rs, SCTLR_EL1_MMU_OFF): on hardware its
// reset value is UNKNOWN, M among it, and entry at EL2 leaves it untouched.
// Before the first memory access at EL1, so none runs with an unknown EE,
// A or C.
.macro init_sctlr_el1
    mov_q   x0, {SCTLR_EL1_MMU_OFF}
    msr     sctlr_el1, x0
    isb
.endm

// EL2 -> EL1, if we are at EL2 (as Linux's init_el2, head.S): first
// SCTLR_EL2 written whole (boot.rs, SCTLR_EL2_MMU_OFF: its reset value is
// UNKNOWN, and its EOS makes the eret below context synchronizing), and
// read back into x22 for the boot test (0: entered at EL1). Then EL1 is
// AArch64 (HCR_EL2.RW), EL1 may use the physical counter and timer
// (CNTHCTL_EL2.EL1PCTEN/EL1PCEN), no virtual offset, and SCTLR_EL1 is
// written whole before the eret lands at EL1 under it. Leaves the entry
// exception level in x21.
.macro drop_to_el1
    mov     x22, xzr
    mrs     x21, CurrentEL
    lsr     x21, x21, #2
    cmp     x21, #2
    b.ne    1f
    mov_q   x0, {SCTLR_EL2_MMU_OFF}
    msr     sctlr_el2, x0
    isb
    mrs     x22, sctlr_el2
    mov     x0, #(1 << 31)
    msr     hcr_el2, x0
    mov     x0, #3
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    init_sctlr_el1
    mov     x0, #0x3c5                  // EL1h with D, A, I, F masked
    msr     spsr_el2, x0
    adr     x0, 1f
    msr     elr_el2, x0
    eret
1:
.endm

// The MMU on: SCTLR_EL1 written whole (boot.rs, SCTLR_EL1_MMU_ON), once the
// Rust code that prepared it has returned, so that no frame it wrote with
// the MMU off is read back through the caches (boot.rs's module doc).
.macro enable_mmu
    mov_q   x0, {SCTLR_EL1_MMU_ON}
    msr     sctlr_el1, x0
    isb
.endm

// The per-CPU pointer (TPIDR_EL1) and the current task (SP_EL0, free: the
// kernel runs on SP_EL1) reset to UNKNOWN values on hardware: zero means
// "not set yet" to the code that reads them.
.macro clear_task_registers
    msr     tpidr_el1, xzr
    msr     sp_el0, xzr
.endm

.section .text.boot, "ax"
.global _start
_start:
    mov     x19, x0                     // device tree pointer, or 0

    mrs     x0, mpidr_el1               // only CPU 0 boots here; the others
    and     x0, x0, #0xff               // are started later through PSCI
    cbnz    x0, .Lpark

    drop_to_el1
    init_sctlr_el1
    clear_task_registers
    adrp    x0, __boot_stack_top        // adrp is PC-relative: physical here
    add     x0, x0, :lo12:__boot_stack_top
    mov     sp, x0

    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
1:  cmp     x0, x1
    b.hs    2f
    stp     xzr, xzr, [x0], #16
    b       1b
2:
    adrp    x20, __kernel_start         // physical address of the image
    mov     x0, x20
    bl      __boot_prepare_mmu          // Rust, still at physical addresses
    enable_mmu

    ldr     x0, =.Lvirtual              // absolute: the upper-half address
    br      x0
.Lvirtual:
    ldr     x0, =KIMAGE_VOFFSET
    add     sp, sp, x0
    mov     x29, xzr                    // end of the frame-pointer chain
    mov     x30, xzr
    mov     x0, x19                     // device tree pointer, or 0
    mov     x1, x20                     // physical address of the image
    mov     x2, x21                     // entry exception level
    mov     x3, x22                     // SCTLR_EL2 as written, or 0
    bl      __kernel_init               // never returns
.Lpark:
    wfe
    b       .Lpark

// Entry of a secondary CPU, started by PSCI CPU_ON (smp.rs) at its physical
// address with the MMU off; x0 = its CPU number. It takes a small early
// stack, switches the MMU on with the kernel's own tables in TTBR1 (and the
// boot identity map in TTBR0 for the jump), moves to its guarded kernel
// stack and its virtual address, and never returns.
.global _secondary_start
_secondary_start:
    mov     x19, x0                     // CPU number
    drop_to_el1
    init_sctlr_el1
    clear_task_registers
    adrp    x0, __secondary_boot_stacks // physical: MMU off
    add     x0, x0, :lo12:__secondary_boot_stacks
    add     x1, x19, #1
    add     x0, x0, x1, lsl #12         // top of this CPU's 4 KiB early stack
    mov     sp, x0
    bl      __secondary_prepare_mmu     // Rust, still at physical addresses
    enable_mmu

    ldr     x0, =.Lsecondary_virtual
    br      x0
.Lsecondary_virtual:
    mov     x0, x19
    bl      __secondary_stack_top       // this CPU's kernel stack
    mov     sp, x0
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    bl      __secondary_init            // never returns
.ltorg
