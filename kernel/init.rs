//! Bring-up, from the first Rust code at the upper-half address to
//! `kernel_main` on a guarded stack.

use spin::Once;

/// What boot invalidated with the MMU off (.bss), for the boot test.
pub use crate::arch::boot::{Invalidated, boot_invalidated};
use crate::arch::{cpu, exception};
use crate::dtb;
use crate::mm::addr::{BLOCK_1G, PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mm::kernel_map::{self, ImageLayout};
use crate::mm::stack::KernelStack;
use crate::mm::{debug_pagealloc, frame_alloc, heap, pgtable_check, vmalloc};
use crate::{irq, percpu, smp};

unsafe extern "Rust" {
    /// Provided by each kernel image: the boot binary or a test image.
    fn kernel_main() -> !;
}

static IMAGE: Once<ImageLayout> = Once::new();
static ENTRY_EL: Once<u64> = Once::new();
static SCTLR_EL2: Once<u64> = Once::new();
static BOOT_STACK: Once<KernelStack> = Once::new();

/// The kernel image's sections, as linked and loaded.
pub fn image() -> &'static ImageLayout {
    IMAGE.get().expect("set at boot")
}

/// The exception level QEMU entered the kernel at: 1, or 2 (then boot.s
/// dropped to EL1).
pub fn entry_el() -> u64 {
    *ENTRY_EL.get().expect("set at boot")
}

/// SCTLR_EL2 as boot.s wrote it at EL2 entry (read back there), or None
/// if the kernel was entered at EL1.
pub fn sctlr_el2_at_entry() -> Option<u64> {
    Some(*SCTLR_EL2.get().expect("set at boot")).filter(|_| entry_el() == 2)
}

/// The boot CPU's kernel stack (the one `kernel_main` runs on).
pub fn boot_stack() -> &'static KernelStack {
    BOOT_STACK.get().expect("set at boot")
}

/// Bytes of heap: a sixteenth of RAM, between 1 MiB and 64 MiB.
fn heap_size(ram: u64) -> u64 {
    (ram / 16).clamp(1 << 20, 64 << 20) & !(PAGE_SIZE - 1)
}

/// Entered from boot.s, at the upper-half address, on the boot stack, with
/// the boot tables live: TTBR0 identity-maps the GiB of RAM holding the
/// image (and the first GiB of the physical map, for the UART).
#[unsafe(no_mangle)]
extern "C" fn __kernel_init(dtb_pointer: u64, kernel_phys: u64, entry_el: u64, sctlr_el2: u64) -> ! {
    exception::install_vectors();
    percpu::init_this_cpu(0);
    ENTRY_EL.call_once(|| entry_el);
    SCTLR_EL2.call_once(|| sctlr_el2);

    // Linked at __kernel_start, loaded at kernel_phys.
    let image = IMAGE.call_once(|| kernel_map::image_layout(PhysAddr::new(kernel_phys)));

    // QEMU gives an ELF kernel no device tree pointer, but copies the blob to
    // the start of RAM, which is the start of the GiB that holds the image.
    let dtb_pa = PhysAddr::new(if dtb_pointer != 0 { dtb_pointer } else { kernel_phys & !(BLOCK_1G - 1) });
    // SAFETY: the boot tables identity-map that GiB.
    let machine = match unsafe { dtb::parse(dtb_pa, VirtAddr::new(dtb_pa.as_u64())) } {
        Ok(machine) => machine,
        Err(e) => panic!("no usable device tree: {e:?}"),
    };

    let image_pa = kernel_map::image_phys(image, image.text.0);
    let image_size = image.data.1.offset_from(image.text.0);
    frame_alloc::init(
        machine.ram_start,
        machine.ram_size,
        &[(machine.dtb_start, machine.dtb_size), (image_pa, image_size)],
    );

    if let Err(e) = kernel_map::build_and_switch(machine.ram_start, machine.ram_size, image) {
        panic!("cannot build the kernel page tables: {e}");
    }
    if let Err(e) = heap::init(heap_size(machine.ram_size)) {
        panic!("cannot allocate the kernel heap: {e}");
    }
    // A boot option the kernel cannot read is refused, not guessed at.
    if let Err(bad) = crate::boot_args::check_options() {
        crate::println!(
            "lazymmu: {}={}: not a boolean (Linux's kstrtobool reads 1/0, y/n, yes/no, on/off, true/false, enable/disable)",
            bad.name,
            bad.value
        );
        crate::semihosting::exit(crate::semihosting::ExitCode::Usage);
    }
    pgtable_check::init();
    if let Err(e) = vmalloc::init() {
        panic!("cannot set up the vmalloc region: {e:?}");
    }
    if debug_pagealloc::requested()
        && let Err(e) = debug_pagealloc::init()
    {
        panic!("debug_pagealloc: cannot unmap the free frames: {e}");
    }

    let stack = match KernelStack::new() {
        Ok(stack) => BOOT_STACK.call_once(|| stack),
        Err(e) => panic!("cannot map the boot CPU's kernel stack: {e}"),
    };
    // SAFETY: a freshly mapped stack, used by nothing else.
    unsafe { cpu::call_on_stack(stack.top().as_u64(), on_kernel_stack) }
}

extern "C" fn on_kernel_stack() -> ! {
    irq::init_this_cpu(true);
    smp::bring_up_secondaries();
    // SAFETY: every kernel image defines kernel_main.
    unsafe { kernel_main() }
}
