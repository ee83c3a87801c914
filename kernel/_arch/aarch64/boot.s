// Entry of the boot CPU, at its physical address with the MMU off.
//
// QEMU enters an ELF at EL1 (or EL2 with virtualization=on) with x0 = 0, or
// x0 = the device tree address under the Linux boot protocol. We keep x0,
// drop to EL1 if needed, take the boot stack, clear .bss, let Rust build the
// boot page tables and switch the MMU on, then jump to the image's virtual
// (upper-half) address and never come back down.

.section .text.boot, "ax"
.global _start
_start:
    mov     x19, x0                     // device tree pointer, or 0

    mrs     x0, mpidr_el1               // only CPU 0 boots here; the others
    and     x0, x0, #0xff               // are started later through PSCI
    cbnz    x0, .Lpark

    mrs     x21, CurrentEL
    lsr     x21, x21, #2                // the exception level we were entered at
    cmp     x21, #2
    b.ne    .Lat_el1

    // EL2 -> EL1: EL1 is AArch64 (HCR_EL2.RW), EL1 may use the physical
    // counter and timer (CNTHCTL_EL2.EL1PCTEN/EL1PCEN), no virtual offset.
    mov     x0, #(1 << 31)
    msr     hcr_el2, x0
    mov     x0, #3
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    mov     x0, #0x3c5                  // EL1h with D, A, I, F masked
    msr     spsr_el2, x0
    adr     x0, .Lat_el1
    msr     elr_el2, x0
    eret

.Lat_el1:
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
    bl      __boot_enable_mmu           // Rust, still at physical addresses

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
    bl      __kernel_init               // never returns
.Lpark:
    wfe
    b       .Lpark
.ltorg
