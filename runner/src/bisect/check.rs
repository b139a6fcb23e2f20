//! Exit codes of `crashrig check`, the `git bisect run` helper.

use super::model::BatchOutcome;

/// The target did not show: `git bisect good`.
pub const EXIT_GOOD: i32 = 0;
/// The target showed at least once: `git bisect bad`.
pub const EXIT_BAD: i32 = 1;
/// The candidate cannot be tested (build, boot or an unrelated failure): `git bisect skip`.
pub const EXIT_SKIP: i32 = 125;

/// Map one batch to `git bisect run`'s convention: 0 good, 1 bad, 125 cannot test. A batch
/// that ran no iteration tested nothing, so it is a skip, never a "good".
pub fn check_exit_code(outcome: &BatchOutcome) -> i32 {
    match outcome {
        BatchOutcome::Ran { failures, .. } if *failures > 0 => EXIT_BAD,
        BatchOutcome::Ran { iterations, .. } if *iterations > 0 => EXIT_GOOD,
        BatchOutcome::Ran { .. } | BatchOutcome::Unknown { .. } => EXIT_SKIP,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        let ran = |iterations, failures| BatchOutcome::Ran {
            iterations,
            failures,
        };
        let cases = [
            (ran(10, 0), 0),
            (ran(10, 1), 1),
            (ran(1, 1), 1),
            (ran(0, 0), 125),
            (
                BatchOutcome::Unknown {
                    reason: "build failed".into(),
                },
                125,
            ),
        ];
        for (outcome, code) in cases {
            assert_eq!(check_exit_code(&outcome), code, "{outcome:?}");
        }
    }
}
