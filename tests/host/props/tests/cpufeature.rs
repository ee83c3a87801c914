//! System-wide CPU features with made-up CPUs: the system uses only what
//! every online CPU has, a CPU that lacks a feature in use is parked (and
//! changes nothing), and the order the CPUs come up in does not matter.

use lazymmu_props::cpufeature::{Features, Joined, Missing, join};
use proptest::prelude::*;

fn cpu() -> impl Strategy<Value = Features> {
    (
        any::<bool>(),
        0u8..3,
        any::<bool>(),
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec![32u8, 36, 40, 44, 48, 52]),
    )
        .prop_map(|(tlbi_range, bbm_level, bbml2_noabort, hafdbs, granule_4k, lpa2, pa_bits)| Features {
            midr: 0x410f_d083,
            tlbi_range,
            bbm_level,
            bbml2_noabort,
            hafdbs,
            granule_4k,
            granule_4k_lpa2: granule_4k && lpa2,
            pa_bits,
        })
}

/// Does `a` have everything `b` has?
fn covers(a: &Features, b: &Features) -> bool {
    b.missing_in(a).is_empty()
}

/// Brings the CPUs up in order after `boot`: the system's features at the
/// end, and which were parked.
fn bring_up(boot: &Features, cpus: &[Features]) -> (Features, Vec<bool>) {
    let in_use = boot.in_use_at_boot();
    let mut system = *boot;
    let parked = cpus
        .iter()
        .map(|c| match join(&system, &in_use, c) {
            Joined::Online(s) => {
                system = s;
                false
            }
            Joined::Parked(_) => true,
        })
        .collect();
    (system, parked)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_system_uses_only_what_every_online_cpu_has(boot in cpu(), cpus in prop::collection::vec(cpu(), 0..8)) {
        let (system, parked) = bring_up(&boot, &cpus);
        prop_assert!(covers(&boot, &system));
        for (c, parked) in cpus.iter().zip(&parked) {
            if *parked {
                // Parked for a reason: it lacks what the boot CPU committed to.
                prop_assert!(!covers(c, &boot.in_use_at_boot()));
            } else {
                prop_assert!(covers(c, &system), "{c:?} online without {:?}", system.missing_in(c));
            }
        }
        // Nothing more is dropped than some online CPU lacks: the meet.
        let online = cpus.iter().zip(&parked).filter(|(_, p)| !**p).map(|(c, _)| c);
        let meet = online.fold(boot, |s, c| s.meet(c));
        prop_assert_eq!(system, meet);
    }

    #[test]
    fn the_meet_is_commutative_associative_and_idempotent(a in cpu(), b in cpu(), c in cpu()) {
        // (midr is the first CPU's: compared without it.)
        let same = |x: Features, y: Features| Features { midr: 0, ..x } == Features { midr: 0, ..y };
        prop_assert!(same(a.meet(&b), b.meet(&a)));
        prop_assert!(same(a.meet(&b).meet(&c), a.meet(&b.meet(&c))));
        prop_assert_eq!(a.meet(&a), a);
    }

    #[test]
    fn a_parked_cpu_changes_nothing_and_a_late_one_needs_everything(boot in cpu(), late in cpu()) {
        // Once the secondaries are up, every system feature is in use.
        match join(&boot, &boot, &late) {
            Joined::Online(system) => {
                prop_assert!(covers(&late, &boot));
                prop_assert_eq!(system, boot);
            }
            Joined::Parked(missing) => prop_assert_eq!(missing, boot.missing_in(&late)),
        }
    }
}

#[test]
fn a_secondary_without_bbml2_noabort_is_parked_when_the_linear_map_has_blocks() {
    let max = Features {
        midr: 0x000f_0510,
        tlbi_range: true,
        bbm_level: 2,
        bbml2_noabort: true,
        hafdbs: 2,
        granule_4k: true,
        granule_4k_lpa2: true,
        pa_bits: 48,
    };
    let a72 = Features {
        midr: 0x410f_d083,
        tlbi_range: false,
        bbm_level: 0,
        bbml2_noabort: false,
        hafdbs: 0,
        granule_4k: true,
        granule_4k_lpa2: false,
        pa_bits: 44,
    };
    assert_eq!(join(&max, &max.in_use_at_boot(), &a72), Joined::Parked(Missing::BBML2_NOABORT));
    assert_eq!(Missing::BBML2_NOABORT.to_string(), "BBML2_NOABORT");
    // The other way round, nothing is committed that the A72 lacks: it is
    // the system that loses TLBIRANGE, BBM and HAFDBS.
    assert_eq!(join(&a72, &a72.in_use_at_boot(), &max), Joined::Online(a72));
    let late = join(&max.meet(&a72), &max.meet(&a72), &a72);
    assert_eq!(late, Joined::Online(max.meet(&a72)));
    assert_eq!(
        max.missing_in(&a72).to_string(),
        "FEAT_TLBIRANGE, FEAT_BBM level, BBML2_NOABORT, FEAT_HAFDBS level, the 4 KiB granule with LPA2, the physical address size"
    );
}
