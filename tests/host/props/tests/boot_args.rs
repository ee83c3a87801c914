//! The command line (`boot_args.rs`) as the runner passes it, with the
//! image's built-in line under it (the host's `builtin_cmdline`, in
//! `src/host.rs`: `vmap_lazy_purge=maybe test_time_limit=9
//! debug_pagealloc=off`): exact values, the runner's word over the
//! built-in one, the last of a repeated option, the typed error for a
//! boolean that is not one; and Linux's `kstrtobool` and QEMU's sizes
//! against models.

use lazymmu_props::boot_args::{self, kstrtobool, parse_size};
use lazymmu_props::internal;
use lazymmu_props::semihosting;
use proptest::prelude::*;

/// The line is read once per process (as the kernel reads it): one test.
#[test]
fn the_runners_line_then_the_builtin_one() {
    semihosting::set_cmdline(
        "/tmp/kernel qemu.cpu=cortex-a72 qemu.mem=2G debug_pagealloc=on demo qemu.smp=4 \
         pgtable_check=0 pagealloc pgtable_check=yes extra=1",
    );
    assert_eq!(internal::program(), Some("/tmp/kernel"));
    // The command: neither qemu.* parameters nor boot options.
    assert_eq!(boot_args::args().collect::<Vec<_>>(), ["demo", "pagealloc", "extra=1"]);
    assert_eq!(boot_args::qemu_param("cpu"), Some("cortex-a72"));
    assert_eq!(boot_args::qemu_param("mem").and_then(parse_size), Some(2 << 30));
    assert_eq!(boot_args::qemu_param("smp"), Some("4"));
    assert_eq!(boot_args::qemu_param("sm"), None);
    // The runner's word wins; of a repeated option, the last.
    assert_eq!(boot_args::option("debug_pagealloc"), Some("on"));
    assert_eq!(boot_args::option("pgtable_check"), Some("yes"));
    // Not on the runner's line: the built-in one's.
    assert_eq!(boot_args::option("test_time_limit"), Some("9"));
    assert_eq!(boot_args::option("vmap_lazy_purge"), Some("maybe"));
    assert_eq!(boot_args::option("nothing"), None);
    assert!(internal::bool_option("debug_pagealloc"));
    assert!(internal::bool_option("pgtable_check"));
    // Not a boolean: its default (on), and refused by the boot check.
    assert!(internal::bool_option("vmap_lazy_purge"));
    assert_eq!(internal::check_options(), Err(("vmap_lazy_purge", "maybe")));
    // Every boolean option is a kernel option.
    for (name, _) in internal::BOOLEAN_OPTIONS {
        assert!(internal::KERNEL_OPTIONS.contains(name));
    }
}

#[test]
fn builtin_lines_are_their_bytes() {
    const LINE: [u8; 18] = boot_args::bytes_of("debug_pagealloc=on");
    assert_eq!(&LINE, b"debug_pagealloc=on");
}

/// Linux's kstrtobool, written from its table.
fn model_kstrtobool(s: &[u8]) -> Option<bool> {
    match s.first()? {
        b'e' | b'E' | b'y' | b'Y' | b't' | b'T' | b'1' => Some(true),
        b'd' | b'D' | b'n' | b'N' | b'f' | b'F' | b'0' => Some(false),
        b'o' | b'O' => match s.get(1)? {
            b'n' | b'N' => Some(true),
            b'f' | b'F' => Some(false),
            _ => None,
        },
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn kstrtobool_is_linuxs(s in "[eEyYtT1dDnNfF0oOx2 ]{0,4}[a-z]{0,3}") {
        prop_assert_eq!(kstrtobool(&s), model_kstrtobool(s.as_bytes()));
    }

    #[test]
    fn sizes_are_bytes_or_none(n in 0u64..(1 << 40), unit in prop::sample::select(vec!["", "K", "k", "M", "m", "G", "g", "T", "x"])) {
        let shift = match unit { "" => Some(0), "K" | "k" => Some(10), "M" | "m" => Some(20), "G" | "g" => Some(30), _ => None };
        let want = shift.and_then(|s| n.checked_mul(1 << s));
        prop_assert_eq!(parse_size(&format!("{n}{unit}")), want);
    }
}

#[test]
fn sizes_refuse_what_is_not_a_number() {
    assert_eq!(parse_size(""), None);
    assert_eq!(parse_size("G"), None);
    assert_eq!(parse_size("-1M"), None);
    assert_eq!(parse_size("1.5G"), None);
    assert_eq!(parse_size("17179869184G"), None, "overflows");
    assert_eq!(parse_size("16777215G"), Some(16777215 << 30));
}
