//! The lazy MMU state machine under random call sequences: the arch hooks
//! it asks for are exactly the changes of "is the mode active", every
//! refused call changes nothing, and the counts match a model that simply
//! counts accepted calls.

use lazymmu_props::state::{Counts, Hook, LazyMmuMisuse};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Call {
    Enable,
    Disable,
    Pause,
    Resume,
}

fn calls() -> impl Strategy<Value = Vec<Call>> {
    // Long runs of one call reach the 255 limits.
    let one = prop_oneof![Just(Call::Enable), Just(Call::Disable), Just(Call::Pause), Just(Call::Resume)];
    prop::collection::vec((one, 1usize..300), 0..40)
        .prop_map(|runs| runs.into_iter().flat_map(|(c, n)| std::iter::repeat_n(c, n)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn hooks_are_exactly_the_changes_of_the_active_state(calls in calls()) {
        let mut counts = Counts::default();
        // The model: plain integers, and a record of whether the arch is "on".
        let (mut depth, mut pauses, mut arch_on) = (0u32, 0u32, false);
        for call in calls {
            let before = counts;
            let result = match call {
                Call::Enable => counts.enable(),
                Call::Disable => counts.disable(),
                Call::Pause => counts.pause(),
                Call::Resume => counts.resume(),
            };
            let expected_refusal = match call {
                Call::Enable if pauses == 0 && depth == 255 => Some(LazyMmuMisuse::EnableOverflow),
                Call::Disable if pauses == 0 && depth == 0 => Some(LazyMmuMisuse::DisableWithoutEnable),
                Call::Pause if pauses == 255 => Some(LazyMmuMisuse::PauseOverflow),
                Call::Resume if pauses == 0 => Some(LazyMmuMisuse::ResumeWithoutPause),
                _ => None,
            };
            let (after, hook) = match (result, expected_refusal) {
                (Err(e), Some(want)) => {
                    prop_assert_eq!(e, want);
                    continue;
                }
                (Ok(step), None) => step,
                (got, want) => return Err(TestCaseError::fail(format!("{call:?} at {before:?}: got {got:?}, expected refusal {want:?}"))),
            };
            match call {
                Call::Enable if pauses == 0 => depth += 1,
                Call::Disable if pauses == 0 => depth -= 1,
                Call::Pause => pauses += 1,
                Call::Resume => pauses -= 1,
                _ => {}
            }
            prop_assert_eq!((after.enable as u32, after.pause as u32), (depth, pauses));
            let (was, is) = (before.is_active(), after.is_active());
            prop_assert_eq!(is, depth > 0 && pauses == 0);
            match hook {
                Hook::Enter | Hook::Resume => prop_assert!(!was && is && !arch_on, "{call:?}: {hook:?} from {before:?}"),
                Hook::Leave | Hook::Pause => prop_assert!(was && !is && arch_on, "{call:?}: {hook:?} from {before:?}"),
                Hook::Flush => prop_assert!(was && is && after.enable < before.enable, "{call:?}: flush from {before:?}"),
                Hook::None => prop_assert_eq!(was, is, "{:?}: the mode changed with no hook", call),
            }
            prop_assert_eq!(hook == Hook::Enter, matches!(call, Call::Enable) && before.enable == 0 && pauses == 0);
            arch_on = is;
            counts = after;
        }
    }
}
