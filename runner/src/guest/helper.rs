//! The helper protocol driver: turns operations into a [`Plan`] for `crashrig-guest exec` and
//! reads its output lines back (see `crashrig_guest` for the wire format). Pure: the transport
//! that carries plan and lines is the machine's business.

use crashrig_guest::{Op, OutputLine, Plan, PlanStep, Refresh, StepReport, PROTOCOL_VERSION};

/// How the helper is invoked: tools on the tools disk need their PATH and libraries.
pub const HELPER_COMMAND: &str =
    "PATH=/tools/bin:/bin:/sbin:/usr/bin:/usr/sbin LD_LIBRARY_PATH=/tools/lib crashrig-guest exec";

/// A plan of `ops`, each step numbered by its position.
pub fn plan(label: &str, ops: impl IntoIterator<Item = Op>) -> Plan {
    Plan {
        version: PROTOCOL_VERSION,
        label: label.into(),
        refresh: None,
        steps: ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| PlanStep { index, op })
            .collect(),
    }
}

/// Host entropy per refresh: a full ChaCha key and then some.
const ENTROPY_BYTES: usize = 64;

/// What a restored guest's first plan carries ([`Plan::refresh`]): fresh entropy from the host
/// and the host's time, taken now, as the plan is sent.
pub fn refresh() -> Refresh {
    let realtime_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Refresh {
        entropy: (0..ENTROPY_BYTES).map(|_| rand::random::<u8>()).collect(),
        realtime_ns,
    }
}

/// How the helper's output ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// The helper wrote its end line: every step ran.
    Finished,
    /// The helper refused the plan.
    Fatal(String),
    /// The output stopped before the end line (the transport or the guest failed, or the
    /// helper died). `unreadable` holds lines that were not protocol lines.
    Unfinished { unreadable: Vec<String> },
}

/// What the helper's output said.
#[derive(Debug, Clone, PartialEq)]
pub struct HelperOutput {
    /// In the order the helper wrote them; `index` is the step's position in the plan.
    pub reports: Vec<StepReport>,
    pub ending: Ending,
}

/// Reads the helper's stdout lines.
pub fn read_output<'l>(lines: impl IntoIterator<Item = &'l str>) -> HelperOutput {
    let mut reports = Vec::new();
    let mut unreadable = Vec::new();
    let mut ending = None;
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<OutputLine>(line) {
            Ok(OutputLine::Step(r)) => reports.push(*r),
            Ok(OutputLine::End(_)) => ending = Some(Ending::Finished),
            Ok(OutputLine::Fatal { message }) => ending = Some(Ending::Fatal(message)),
            Err(_) => unreadable.push(line.to_string()),
        }
    }
    HelperOutput {
        reports,
        ending: ending.unwrap_or(Ending::Unfinished { unreadable }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crashrig_guest::PlanEnd;

    fn line(l: OutputLine) -> String {
        serde_json::to_string(&l).unwrap()
    }

    #[test]
    fn plan_steps_are_numbered_by_position() {
        let p = plan("iteration 2", [Op::Dmesg, Op::Sync { target: None }]);
        assert_eq!(p.version, PROTOCOL_VERSION);
        assert_eq!(
            p.steps.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(p.steps[1].op, Op::Sync { target: None });
    }

    #[test]
    fn each_refresh_carries_its_own_entropy_and_the_hosts_time() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let (a, b) = (refresh(), refresh());
        assert_eq!(a.entropy.len(), ENTROPY_BYTES);
        assert_ne!(a.entropy, b.entropy);
        assert!(a.realtime_ns >= now && a.realtime_ns - now < 10_000_000_000);
        assert!(plan("x", [Op::Dmesg]).refresh.is_none());
    }

    #[test]
    fn output_with_an_end_line_is_finished_and_keeps_reports_in_order() {
        let a = line(OutputLine::Step(Box::new(StepReport {
            index: 0,
            ..StepReport::default()
        })));
        let b = line(OutputLine::Step(Box::new(StepReport {
            index: 1,
            errno: Some("EBUSY".into()),
            ..StepReport::default()
        })));
        let end = line(OutputLine::End(PlanEnd {
            done: true,
            steps_run: 2,
        }));
        let out = read_output([a.as_str(), "", b.as_str(), end.as_str()]);
        assert_eq!(out.ending, Ending::Finished);
        assert_eq!(out.reports.len(), 2);
        assert_eq!(out.reports[1].errno.as_deref(), Some("EBUSY"));
    }

    #[test]
    fn a_fatal_line_and_a_cut_stream_are_told_apart() {
        let fatal = line(OutputLine::Fatal {
            message: "plan is protocol version 3".into(),
        });
        assert_eq!(
            read_output([fatal.as_str()]).ending,
            Ending::Fatal("plan is protocol version 3".into())
        );
        // A helper of protocol 1 (untagged) is not understood: its line is kept for the error.
        let out = read_output([r#"{"fatal":"old"}"#]);
        assert_eq!(
            out.ending,
            Ending::Unfinished {
                unreadable: vec![r#"{"fatal":"old"}"#.to_string()]
            }
        );
    }
}
