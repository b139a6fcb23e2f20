//! Judging an iteration: step reports against the scenario's expectations, plus dmesg
//! findings. Pure.

use crashrig_guest::{Detail, StepReport};

use crate::outcome::Finding;
use crate::report::{StepRecord, Verdict};
use crate::scenario::{FindingSelector, Scenario, Step};

use super::plan::StepRef;

/// Whether a step's report meets its expectation, and a note saying why not.
pub fn judge_step(step: &Step, r: &StepReport) -> (bool, Option<String>) {
    if let Some(e) = &r.error {
        return (false, Some(e.clone()));
    }
    let errno_text = |e: &Option<String>| e.clone().unwrap_or_else(|| "ok".into());
    match step {
        Step::Mkfs(m) => {
            // mkfs reports an exit status, not an errno: only `expect: any` tolerates failure.
            let any = m.expect.allows(None)
                && m.expect.allows(Some("EIO"))
                && m.expect.allows(Some("EBUSY"));
            let ok = r.exit_status == Some(0) || any;
            (
                ok,
                (!ok).then(|| {
                    format!(
                        "mkfs exited with {}",
                        r.exit_status.map_or("no status".into(), |s| s.to_string())
                    )
                }),
            )
        }
        Step::Mount(m) => expect(&m.expect, r, errno_text),
        Step::Umount(u) => expect(&u.expect, r, errno_text),
        Step::Shutdown(s) => expect(&s.expect, r, errno_text),
        Step::Run(run) => {
            let ok = r.exit_status == Some(run.exit);
            (
                ok,
                (!ok).then(|| {
                    format!(
                        "exited with {} (expected {}){}",
                        r.exit_status.map_or("nothing".into(), |s| s.to_string()),
                        run.exit,
                        last_output(&r.stdout, &r.stderr)
                    )
                }),
            )
        }
        Step::Kill(_) => match &r.detail {
            Some(Detail::Killed {
                timed_out: true, ..
            }) => (
                false,
                Some("the workload still had tasks when the wait ran out".into()),
            ),
            _ => (true, None),
        },
        Step::Fsck(f) => match &r.detail {
            Some(Detail::Fsck { clean: false }) if f.must_be_clean => {
                (false, Some("the checker found problems".into()))
            }
            _ => (true, None),
        },
        Step::VerifyData(_) => match &r.detail {
            Some(Detail::Data {
                missing, corrupted, ..
            }) if !missing.is_empty() || !corrupted.is_empty() => (
                false,
                Some(format!(
                    "{} files missing, {} corrupted",
                    missing.len(),
                    corrupted.len()
                )),
            ),
            _ => (true, None),
        },
        _ => (true, None),
    }
}

fn expect(
    e: &crate::scenario::Expect,
    r: &StepReport,
    text: impl Fn(&Option<String>) -> String,
) -> (bool, Option<String>) {
    if e.allows(r.errno.as_deref()) {
        (true, None)
    } else {
        let mut note = format!("returned {}", text(&r.errno));
        if let Some(w) = r.busy_window_ms {
            if r.busy_gave_up {
                note.push_str(&format!(", still busy after {w:.0} ms"));
            } else {
                note.push_str(&format!(", busy for {w:.1} ms"));
            }
        }
        (false, Some(note))
    }
}

/// Builds the step record of a report.
/// The record of a step with no report of the guest's: a host step, or one a plan never
/// finished. Passing, with no duration, until the caller says otherwise.
pub fn bare_step_record(s: &Scenario, r: StepRef) -> StepRecord {
    StepRecord {
        id: r.id(s),
        kind: r.phase.steps(s)[r.index].kind().into(),
        phase: r.phase.name().into(),
        errno: None,
        final_errno: None,
        attempts: 1,
        busy_window_ms: None,
        busy_gave_up: false,
        duration_ms: 0.0,
        exit_status: None,
        ok: true,
        note: None,
        detail: None,
        output: String::new(),
    }
}

pub fn step_record(s: &Scenario, r: StepRef, report: &StepReport) -> StepRecord {
    let step = &r.phase.steps(s)[r.index];
    let (ok, note) = judge_step(step, report);
    let mut output = report.stderr.clone();
    if !report.stdout.is_empty() && !matches!(step, Step::Run(_)) {
        output = format!("{}{}", report.stdout, output);
    } else if !ok {
        output = format!("{}{}", report.stdout, report.stderr);
    }
    StepRecord {
        id: r.id(s),
        kind: step.kind().into(),
        phase: r.phase.name().into(),
        errno: report.errno.clone(),
        final_errno: report.final_errno.clone(),
        attempts: report.attempts,
        busy_window_ms: report.busy_window_ms,
        busy_gave_up: report.busy_gave_up,
        duration_ms: report.duration_ms,
        exit_status: report.exit_status,
        ok,
        note,
        detail: report.detail.clone(),
        output: if ok {
            String::new()
        } else {
            truncate_tail(&output, 4096)
        },
    }
}

fn truncate_tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[...]{}", &s[start..])
}

/// Whether a finding of `kind` fails an iteration under the scenario's dmesg policy.
pub fn fails_on(s: &Scenario, kind: &str) -> bool {
    match &s.dmesg.fail_on {
        FindingSelector::All => true,
        FindingSelector::None => false,
        FindingSelector::Kinds(kinds) => kinds.iter().any(|k| k == kind),
    }
}

/// What ended an iteration early, if anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Abort {
    /// The guest stopped answering.
    Hang(String),
    /// The kernel panicked without a `panic` step asking for it.
    Panic(String),
    /// crashrig, QEMU or the transport to the guest failed: not a kernel verdict.
    Infra(String),
}

impl Abort {
    /// The same abort, saying which step was running when it came.
    pub fn during(self, step: &str) -> Abort {
        match self {
            Abort::Hang(why) => Abort::Hang(format!("{step} did not finish: {why}")),
            Abort::Panic(why) => Abort::Panic(format!("during {step}: {why}")),
            Abort::Infra(why) => Abort::Infra(format!("during {step}: {why}")),
        }
    }
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Abort::Hang(why) => write!(f, "hang: {why}"),
            Abort::Panic(why) => write!(f, "panic: {why}"),
            Abort::Infra(why) => write!(f, "infrastructure: {why}"),
        }
    }
}

/// The verdict of an iteration and the reasons for it.
pub fn verdict(
    s: &Scenario,
    steps: &[StepRecord],
    findings: &[Finding],
    abort: Option<&Abort>,
) -> (Verdict, Vec<String>) {
    let mut reasons: Vec<String> = steps
        .iter()
        .filter(|st| !st.ok)
        .map(|st| {
            format!(
                "{} ({}): {}",
                st.id,
                st.kind,
                st.note.as_deref().unwrap_or("expectation not met")
            )
        })
        .collect();
    for f in findings
        .iter()
        .filter(|f| !f.expected && fails_on(s, &f.kind.to_string()))
    {
        reasons.push(format!("dmesg {}: {}", f.kind, f.title));
    }
    let v = match abort {
        Some(a) => {
            reasons.insert(0, a.to_string());
            match a {
                Abort::Infra(_) => Verdict::Error,
                Abort::Hang(_) => Verdict::Hang,
                Abort::Panic(_) => Verdict::Panic,
            }
        }
        None if reasons.is_empty() => Verdict::Pass,
        None => Verdict::Fail,
    };
    (v, reasons)
}

/// The end of a failing command's output for its failure line (the whole output stays in
/// results.json): the last non-empty line of stderr, else of stdout, at most 160 characters.
fn last_output(stdout: &str, stderr: &str) -> String {
    let last = |text: &str| {
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
    };
    let Some(line) = last(stderr).or_else(|| last(stdout)) else {
        return String::new();
    };
    let line: String = if line.chars().count() > 160 {
        line.chars().take(157).chain("...".chars()).collect()
    } else {
        line
    };
    format!("; last output: {line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_commands_line_ends_with_the_last_line_it_wrote() {
        assert_eq!(
            last_output("ack=57 lines=58\nbad record 10\n\n", ""),
            "; last output: bad record 10"
        );
        assert_eq!(
            last_output("progress\n", "  warning: x\n"),
            "; last output: warning: x",
            "stderr first"
        );
        assert_eq!(last_output("", " \n"), "");
        let long = "é".repeat(300);
        let cut = last_output(&long, "");
        assert_eq!(cut.chars().count(), "; last output: ".len() + 160);
        assert!(cut.ends_with("..."));
    }
}
