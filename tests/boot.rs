//! Boot: what the kernel found out about the machine, and the harness's
//! expected-fault and expected-panic support.

#![no_std]
#![no_main]
#![feature(custom_test_frameworks)]
#![test_runner(lazymmu::run_tests)]
#![reexport_test_harness_main = "test_main"]

use lazymmu::boot_args::{parse_size, qemu_param};
use lazymmu::exception::{Caught, ExceptionClass, FaultStatus, catch};
use lazymmu::expect_panic;
use lazymmu::mm::{PAGE_SIZE, VirtAddr, frame_alloc, probe};
use lazymmu::{cpu, dtb, init};

lazymmu::test_image!();

#[test_case]
fn device_tree_memory_matches_the_size_qemu_was_given() {
    let given = qemu_param("mem").and_then(parse_size).expect("the runner passes qemu.mem");
    let info = dtb::info();
    assert_eq!(info.ram_size, given, "device tree says {:#x} bytes, QEMU was given {given:#x}", info.ram_size);
    // QEMU virt puts RAM at 1 GiB; the kernel read it, it did not assume it.
    assert_eq!(info.ram_start.as_u64(), 0x4000_0000);
    assert_eq!(frame_alloc::stats().total as u64, given / PAGE_SIZE);
}

#[test_case]
fn kernel_was_entered_at_the_level_qemu_chose_and_runs_at_el1() {
    let expected: u64 = qemu_param("el").and_then(|el| el.parse().ok()).expect("the runner passes qemu.el");
    assert_eq!(init::entry_el(), expected);
    assert_eq!(lazymmu::cpu::current_el(), 1, "the kernel always runs at EL1");
}

/// SCTLR_EL1 as boot writes it whole (boot.rs, `SCTLR_EL1_MMU_ON`): M, C,
/// SA, I; EIS and EOS; SPAN, TSCXT, LSMAOE, nTLSMD, SED, ITD; nothing else.
pub const SCTLR_EL1_EXPECTED: u64 = 0x30d0_198d;

#[test_case]
fn sctlr_el1_is_written_whole_with_exception_entry_and_return_synchronizing() {
    let sctlr = cpu::sctlr_el1();
    assert_eq!(
        sctlr,
        SCTLR_EL1_EXPECTED,
        "SCTLR_EL1 is {sctlr:#x}, differing in bits {:#x}",
        sctlr ^ SCTLR_EL1_EXPECTED
    );
}

/// SCTLR_EL2 as boot.s writes it whole at EL2 entry (boot.rs,
/// `SCTLR_EL2_MMU_OFF`, Linux's `INIT_SCTLR_EL2_MMU_OFF`): EIS and EOS, and
/// the bits RES1 without VHE (4, 5, 16, 18, 23, 28, 29); MMU, caches and EE off.
pub const SCTLR_EL2_EXPECTED: u64 = 0x30c5_0830;

#[test_case]
fn sctlr_el2_is_written_whole_at_el2_entry_with_exception_entry_and_return_synchronizing() {
    match init::entry_el() {
        2 => {
            let sctlr = init::sctlr_el2_at_entry().expect("read back at EL2 entry");
            assert_eq!(
                sctlr,
                SCTLR_EL2_EXPECTED,
                "SCTLR_EL2 was {sctlr:#x}, differing in bits {:#x}",
                sctlr ^ SCTLR_EL2_EXPECTED
            );
        }
        _ => assert_eq!(init::sctlr_el2_at_entry(), None, "entered at EL1: EL2 was never touched"),
    }
}

unsafe extern "C" {
    static __bss_start: u8;
    static __bss_end: u8;
}

#[test_case]
fn bss_written_with_the_caches_off_was_invalidated_before_the_mmu_went_on() {
    // The exact range, at its physical addresses, line by line (a line
    // only partly in .bss counts once): 64-byte data cache lines on every
    // model the suite runs on but the A64FX, whose lines are 256 bytes.
    let voffset = init::image().kimage_voffset;
    // Only the linker symbols' addresses are taken.
    let (start, end) = (&raw const __bss_start as u64 - voffset, &raw const __bss_end as u64 - voffset);
    let line = lazymmu::mm::cache_type().d_line();
    let model = qemu_param("cpu").expect("the runner passes qemu.cpu");
    assert_eq!(line, if model == "a64fx" { 256 } else { 64 }, "{model}: CTR_EL0.DminLine");
    let lines = (end.next_multiple_of(line) - (start & !(line - 1))) / line;
    assert!(lines >= 4 * 4096 / line, ".bss holds the four boot tables: {lines} lines");
    assert_eq!(init::boot_invalidated(), init::Invalidated { start, end, lines });
}

/// What each QEMU CPU model the suite runs on is (`scripts/test`): the
/// name its MIDR_EL1 gives it, FEAT_TLBIRANGE, the FEAT_BBM level,
/// FEAT_HAFDBS, the physical address size (QEMU 7.2's ID register values).
const MODELS: [(&str, &str, bool, u8, u8, u8); 8] = [
    ("max", "software-defined CPU (QEMU max?), part 0x051 r0p0", true, 2, 2, 52),
    ("cortex-a35", "Arm Cortex-A35 r1p0", false, 0, 0, 40),
    ("cortex-a53", "Arm Cortex-A53 r0p4", false, 0, 0, 40),
    ("cortex-a57", "Arm Cortex-A57 r1p0", false, 0, 0, 44),
    ("cortex-a72", "Arm Cortex-A72 r0p3", false, 0, 0, 44),
    ("cortex-a76", "Arm Cortex-A76 r4p1", false, 0, 2, 40),
    ("neoverse-n1", "Arm Neoverse-N1 r4p1", false, 0, 2, 48),
    ("a64fx", "Fujitsu A64FX r1p0", false, 0, 0, 40),
];

#[test_case]
fn cpu_features_match_the_qemu_model() {
    let f = cpu::features();
    assert!(f.granule_4k, "4 KiB granule must be supported");
    let model = qemu_param("cpu").expect("the runner passes qemu.cpu");
    let Some(&(_, name, tlbi_range, bbm_level, hafdbs, pa_bits)) = MODELS.iter().find(|m| m.0 == model) else {
        panic!("no expectations for CPU model {model}")
    };
    assert_eq!(alloc::format!("{}", f.model()), name, "MIDR_EL1 {:#x}", f.midr);
    assert_eq!(
        (f.tlbi_range, f.bbm_level, f.hafdbs, f.pa_bits),
        (tlbi_range, bbm_level, hafdbs, pa_bits),
        "{model}: FEAT_TLBIRANGE, FEAT_BBM level, FEAT_HAFDBS, PA bits"
    );
    // Only the max may split a live block in place (cpu::bbml2_noabort).
    assert_eq!(f.bbml2_noabort, model == "max");
    // The LPA2 pitfall: the max's TGran4 reads 0b0001, which still means "4K supported".
    assert_eq!(f.granule_4k_lpa2, model == "max");
}

#[test_case]
fn reading_a_low_address_is_an_expected_level_0_translation_fault() {
    let fault = probe::read(VirtAddr::new(0x4000_0000)).expect_err("TTBR0 walks are off after boot");
    assert_eq!(fault.class, ExceptionClass::DataAbortCurrentEl);
    assert_eq!(fault.status, Some(FaultStatus::Translation { level: 0 }));
    assert!(!fault.write);
    assert_eq!(fault.far, 0x4000_0000);
}

#[test_case]
fn an_expected_panic_is_caught_with_its_message() {
    expect_panic("overflow of 41", || panic!("overflow of {}", 41));
}

#[test_case]
fn a_panic_with_another_message_fails_expect_panic() {
    let outer = catch(|| expect_panic("the expected text", || panic!("something else")));
    match outer {
        Err(Caught::Panic(message)) => {
            let text = message.as_str();
            assert!(text.contains("expected a panic containing \"the expected text\""), "{message:?}");
            assert!(text.contains("something else"), "{message:?}");
        }
        other => panic!("expect_panic must fail on the wrong message, got {other:?}"),
    }
}

#[test_case]
fn catches_nest_and_the_outer_one_still_works() {
    let inner = catch(|| probe::read(VirtAddr::new(0x10)));
    assert!(matches!(inner, Ok(Err(_))), "the probe's own catch takes the fault");
    let outer = catch(|| -> u64 { panic!("outer") });
    assert!(matches!(outer, Err(Caught::Panic(_))));
}

#[test_case]
fn every_cpu_of_this_machine_is_alike_and_none_was_parked() {
    assert_eq!(lazymmu::smp::online_cpus(), dtb::info().cpus);
}
