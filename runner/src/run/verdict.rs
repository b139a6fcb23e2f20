//! Judging an iteration: step reports against the scenario's expectations, plus dmesg
//! findings. Pure.

use crashrig_guest::{Detail, StepReport};

use crate::outcome::Finding;
use crate::report::{StepRecord, Verdict};
use crate::scenario::{FindingSelector, Scenario, Step};

use super::plan::{Phase, StepRef};

/// How a step's report measures up against the scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// The expectation held; with what happened, when that is worth saying.
    Held(Option<String>),
    /// The kernel's answer broke the expectation.
    Violated(String),
    /// The step could not test what it meant, and that is not the kernel's answer (a disk
    /// too small for the data, a workload that exited with an error before its kill, a
    /// filesystem without the shutdown ioctl): the iteration is an error, not a failure.
    Error(String),
}

/// Whether a step's report meets its expectation.
pub fn judge_step(s: &Scenario, step: &Step, r: &StepReport) -> Judged {
    use Judged::{Error, Held, Violated};
    if let Some(e) = &r.error {
        return Violated(e.clone());
    }
    let errno_text = |e: &Option<String>| e.clone().unwrap_or_else(|| "ok".into());
    match step {
        Step::Mkfs(m) => {
            // mkfs reports an exit status, not an errno: `ok` is status 0, `any` takes all.
            if r.exit_status == Some(0) || m.expect.takes_any() {
                Held(None)
            } else {
                Violated(format!(
                    "mkfs exited with {}{}",
                    r.exit_status
                        .map_or("no status".into(), |s| format!("status {s}")),
                    last_output(&r.stdout, &r.stderr)
                ))
            }
        }
        Step::Mount(m) => expect(&m.expect, r, errno_text),
        Step::Umount(u) => expect(&u.expect, r, errno_text),
        Step::Shutdown(sh) => match r.errno.as_deref() {
            // ENOTTY: the filesystem has no FS_IOC_SHUTDOWN on this kernel (btrfs before it
            // got one). The step never shut anything down: not the kernel's failure.
            Some("ENOTTY") if !sh.expect.allows(Some("ENOTTY")) => {
                let what = first_line(&r.stderr).unwrap_or_else(|| {
                    format!(
                        "{} on this kernel has no FS_IOC_SHUTDOWN",
                        s.filesystem
                            .as_ref()
                            .map_or("the filesystem", |f| f.fstype.as_str())
                    )
                });
                Error(format!(
                    "returned ENOTTY: {what}, so this scenario cannot run over it (not a \
                     failure of the kernel under test)"
                ))
            }
            _ => expect(&sh.expect, r, errno_text),
        },
        Step::Run(run) => {
            if r.exit_status == Some(run.exit) {
                Held(None)
            } else if let Some(program) = shell_missed(r) {
                // The shell never found the program: nothing ran, and the kernel gave no
                // answer. A path (`/mnt/script: not found`) may be a file the kernel lost,
                // so only a bare name counts.
                Error(format!(
                    "exited with {} (expected {}): the guest's shell found no program `{program}` \
                     (not in the image or mistyped; a program of the image recipe is in \
                     /tools/bin), so the command never ran (not the kernel's answer)",
                    r.exit_status.unwrap_or(127),
                    run.exit
                ))
            } else {
                Violated(format!(
                    "exited with {} (expected {}){}",
                    r.exit_status.map_or("nothing".into(), |s| s.to_string()),
                    run.exit,
                    last_output(&r.stdout, &r.stderr)
                ))
            }
        }
        Step::Kill(k) => match &r.detail {
            Some(Detail::Killed {
                timed_out: true, ..
            }) => Violated("the workload still had tasks when the wait ran out".into()),
            // Ended on its own before the kill: a workload that failed (a typo in its
            // options, a program not in the image) never loaded the filesystem, so the
            // iteration did not test what it meant. One that finished its work (status 0)
            // may be a short workload.
            Some(Detail::Killed {
                exited_before: true,
                exit_status,
                ..
            }) => match exit_status {
                Some(0) => Held(Some(format!(
                    "workload `{}` had already exited with status 0 before the kill",
                    k.name
                ))),
                status => Error(early_exit_error(&k.name, *status, "", &r.stdout)),
            },
            _ => Held(None),
        },
        Step::Fsck(f) => match &r.detail {
            Some(Detail::Fsck { clean: false }) if f.must_be_clean => {
                Violated("the checker found problems".into())
            }
            _ => Held(None),
        },
        Step::WriteData(d) => match r.errno.as_deref() {
            None => Held(None),
            Some(e) => {
                let written = match &r.detail {
                    Some(Detail::Written { written, .. }) => written.to_string(),
                    _ => "some".into(),
                };
                let what = format!(
                    "{e} after writing {written} of {} files of {} in `{}`",
                    d.files, d.size, d.dir
                );
                if e == "ENOSPC" || e == "EDQUOT" {
                    // A full disk is the scenario's doing, not the kernel's answer.
                    Error(format!(
                        "{what}: the filesystem is full; the step writes {}{}: make the \
                         device larger or write less (not the kernel's answer)",
                        crate::scenario::Size(u64::from(d.files) * d.size.0),
                        fs_device_size(s)
                            .map(|(dev, size)| format!(" onto device `{dev}` of {size}"))
                            .unwrap_or_default()
                    ))
                } else {
                    Violated(format!("returned {what}"))
                }
            }
        },
        Step::VerifyData(_) => match &r.detail {
            Some(Detail::Data {
                checked,
                missing,
                corrupted,
            }) if !missing.is_empty() || !corrupted.is_empty() => Violated(format!(
                "lost {} of {checked} files ({} missing, {} corrupted)",
                missing.len() + corrupted.len(),
                missing.len(),
                corrupted.len()
            )),
            _ => Held(None),
        },
        _ => Held(None),
    }
}

/// The filesystem's device and its size.
fn fs_device_size(s: &Scenario) -> Option<(String, crate::scenario::Size)> {
    let fs = s.filesystem.as_ref()?;
    let dev = match &fs.device {
        Some(d) => s.devices.iter().find(|x| &x.name == d)?,
        None => s.devices.first()?,
    };
    Some((dev.name.clone(), dev.size))
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

/// The step of the scenario a record names.
fn step_by_id<'a>(s: &'a Scenario, id: &str) -> Option<&'a Step> {
    [Phase::Setup, Phase::Steps, Phase::Cleanup]
        .into_iter()
        .flat_map(|phase| (0..phase.steps(s).len()).map(move |index| StepRef { phase, index }))
        .find(|r| r.id(s) == id)
        .map(|r| &r.phase.steps(s)[r.index])
}

/// The files a verify-data may hold the kernel to: those the last write-data to its
/// directory among `earlier` (the records of this iteration, or of setup, so far) reported
/// as acknowledged. `None` when that write-data is not among them (it ran in setup, which
/// passed, so it wrote everything).
fn acknowledged_by(s: &Scenario, dir: &str, earlier: &[StepRecord]) -> Option<(String, u32)> {
    let rec = earlier.iter().rev().find(|rec| {
        rec.kind == "write-data"
            && matches!(step_by_id(s, &rec.id), Some(Step::WriteData(w)) if w.dir == dir)
    })?;
    match &rec.detail {
        Some(Detail::Written { acknowledged, .. }) => Some((rec.id.clone(), *acknowledged)),
        _ => None,
    }
}

/// The index of a data file from its name (`f0012`).
fn data_file_index(name: &str) -> Option<u32> {
    name.strip_prefix('f')?.parse().ok()
}

/// A verify-data report cut down to the files the write-data before it acknowledged:
/// files it never wrote (it ran out of space, or failed) are not lost by the kernel.
/// Returns the report to judge and a note naming what was checked.
fn limit_to_acknowledged(
    s: &Scenario,
    step: &Step,
    report: &StepReport,
    earlier: &[StepRecord],
) -> Option<(StepReport, String)> {
    let Step::VerifyData(d) = step else {
        return None;
    };
    let Some(Detail::Data {
        checked,
        missing,
        corrupted,
    }) = &report.detail
    else {
        return None;
    };
    let (writer, acknowledged) = acknowledged_by(s, &d.dir, earlier)?;
    if acknowledged >= *checked {
        return None;
    }
    let keep = |names: &Vec<String>| -> Vec<String> {
        names
            .iter()
            .filter(|n| data_file_index(n).is_none_or(|i| i < acknowledged))
            .cloned()
            .collect()
    };
    let mut limited = report.clone();
    limited.detail = Some(Detail::Data {
        checked: acknowledged,
        missing: keep(missing),
        corrupted: keep(corrupted),
    });
    let note = format!(
        "checked the {acknowledged} of {checked} files {writer} wrote and had acknowledged"
    );
    Some((limited, note))
}

fn expect(
    e: &crate::scenario::Expect,
    r: &StepReport,
    text: impl Fn(&Option<String>) -> String,
) -> Judged {
    if e.allows(r.errno.as_deref()) {
        Judged::Held(None)
    } else {
        let mut note = format!("returned {}", text(&r.errno));
        if let Some(w) = r.busy_window_ms {
            if r.busy_gave_up {
                note.push_str(&format!(", still busy after {w:.0} ms"));
            } else {
                note.push_str(&format!(", busy for {w:.1} ms"));
            }
        }
        Judged::Violated(note)
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
        started_ms: None,
        exit_status: None,
        ok: true,
        error: false,
        note: None,
        detail: None,
        output: String::new(),
    }
}

/// How much earlier than a fault step's start a workload's end must be to be called before
/// it: the end comes from its status file's time, which the kernel keeps to a coarse tick.
const BEFORE_THE_FAULT_MS: f64 = 100.0;

/// A workload that failed before its `kill` after a step of the iteration made I/O fail
/// under it (`dm-error`, `dm-flakey`, `shutdown`, `unplug`): its failure is what that fault
/// does to a workload (fio exits 1 on EIO), so the kill held, with a note. Without such a
/// step, or when the helper saw the workload end before every such step began (a fio typo
/// ahead of a `dm-error`), [`judge_step`] makes it an error: the workload never ran what the
/// scenario meant. A step whose start the guest did not time (`unplug`, a host step) is
/// taken as a possible cause.
fn fault_explains_early_exit(
    step: &Step,
    report: &StepReport,
    earlier: &[StepRecord],
) -> Option<Judged> {
    let Step::Kill(k) = step else { return None };
    let Some(Detail::Killed {
        exited_before: true,
        exit_status,
        exited_ms,
        ..
    }) = &report.detail
    else {
        return None;
    };
    if *exit_status == Some(0) {
        return None;
    }
    let faults: Vec<&StepRecord> = earlier
        .iter()
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "dm-error" | "dm-flakey" | "shutdown" | "unplug"
            )
        })
        .collect();
    let first = faults.first()?;
    let explains = |e: &StepRecord| match (exited_ms, e.started_ms) {
        (Some(end), Some(start)) => *end >= start - BEFORE_THE_FAULT_MS,
        _ => true,
    };
    let Some(fault) = faults.iter().find(|e| explains(e)) else {
        let (end, start) = (exited_ms.unwrap_or(0.0), first.started_ms.unwrap_or(0.0));
        return Some(Judged::Error(early_exit_error(
            &k.name,
            *exit_status,
            &format!(
                " (it ended {:.1} s before `{}` ({}) began)",
                (start - end) / 1000.0,
                first.id,
                first.kind
            ),
            &report.stdout,
        )));
    };
    Some(Judged::Held(Some(format!(
        "workload `{}` had already exited with {} before the kill, after `{}` ({}) made I/O \
         fail: taken as that fault's effect{}",
        k.name,
        exit_status.map_or("an unknown status".into(), |st| format!("status {st}")),
        fault.id,
        fault.kind,
        last_output(&report.stdout, "")
    ))))
}

/// The error of a `kill` whose workload had failed on its own before it; `when` follows the
/// status (empty, or what the failure came before).
fn early_exit_error(name: &str, status: Option<i32>, when: &str, output: &str) -> String {
    format!(
        "workload `{name}` had already exited with {}{when} before the kill: it did not run \
         what the scenario meant{}",
        status.map_or("an unknown status".into(), |s| format!("status {s}")),
        last_output(output, "")
    )
}

/// Builds the step record of a report; `earlier` are the records of the same iteration (or
/// of setup) before it, in order.
pub fn step_record(
    s: &Scenario,
    r: StepRef,
    report: &StepReport,
    earlier: &[StepRecord],
) -> StepRecord {
    let step = &r.phase.steps(s)[r.index];
    let limited = limit_to_acknowledged(s, step, report, earlier);
    let (report, checked_note) = match &limited {
        Some((rep, note)) => (rep, Some(note.clone())),
        None => (report, None),
    };
    let (ok, error, note) = match fault_explains_early_exit(step, report, earlier)
        .unwrap_or_else(|| judge_step(s, step, report))
    {
        Judged::Held(note) => (true, false, note),
        Judged::Violated(note) => (false, false, Some(note)),
        Judged::Error(note) => (false, true, Some(note)),
    };
    let note = match (note, checked_note) {
        (Some(n), Some(c)) => Some(format!("{n}; {c}")),
        (n, c) => n.or(c),
    };
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
        started_ms: Some(report.started_ms),
        exit_status: report.exit_status,
        ok,
        error,
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

/// The failure note of a step that was running when its guest hung or its kernel ended.
pub(crate) fn unfinished_note(a: &Abort) -> Option<&'static str> {
    match a {
        Abort::Hang(_) => Some("did not finish: the guest hung"),
        Abort::Panic(_) => Some("did not finish: the kernel ended"),
        Abort::Infra(_) => None,
    }
}

/// The verdict of an iteration and the reasons for it.
pub fn verdict(
    s: &Scenario,
    steps: &[StepRecord],
    findings: &[Finding],
    abort: Option<&Abort>,
) -> (Verdict, Vec<String>) {
    // The step that was running when the guest hung or its kernel ended: the abort's own
    // reason names it and says why, so its record's short note would only repeat it.
    let unfinished = abort.and_then(unfinished_note);
    let mut reasons: Vec<String> = steps
        .iter()
        .filter(|st| !st.ok && (unfinished.is_none() || st.note.as_deref() != unfinished))
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
    // A step that could not test what it meant makes the iteration an error (not in the
    // rate), unless the kernel gave an answer of its own: a failing dmesg finding, a hang,
    // a panic.
    let step_error = steps.iter().any(|st| st.error);
    let kernel_finding = findings
        .iter()
        .any(|f| !f.expected && fails_on(s, &f.kind.to_string()));
    let v = match abort {
        Some(a) => {
            reasons.insert(0, a.to_string());
            match a {
                Abort::Infra(_) => Verdict::Error,
                Abort::Hang(_) => Verdict::Hang,
                Abort::Panic(_) => Verdict::Panic,
            }
        }
        None if step_error && !kernel_finding => {
            // The error first: it is why the other reasons do not count.
            reasons.sort_by_key(|r| {
                !steps
                    .iter()
                    .any(|st| st.error && r.starts_with(&format!("{} (", st.id)))
            });
            Verdict::Error
        }
        None if reasons.is_empty() => Verdict::Pass,
        None => Verdict::Fail,
    };
    (v, reasons)
}

/// The program a `run` command's shell could not find (status 127 and busybox sh's
/// `sh: NAME: not found`), when it is a bare name, not a path.
fn shell_missed(r: &StepReport) -> Option<String> {
    if r.exit_status != Some(127) {
        return None;
    }
    r.stderr.lines().chain(r.stdout.lines()).find_map(|l| {
        let name = l.trim().strip_prefix("sh: ")?.strip_suffix(": not found")?;
        let name = name.rsplit(": ").next().unwrap_or(name);
        (!name.is_empty() && !name.contains('/') && !name.contains(' ')).then(|| name.to_string())
    })
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

    fn load(yaml: &str) -> Scenario {
        crate::scenario::load_str(yaml, "t.yaml").unwrap()
    }

    const DATA: &str = "name: t\ndevices: [{name: scratch, size: 64M}]\n\
        filesystem: {type: ext4}\nsteps:\n- mount\n- write-data: {files: 40, size: 4M}\n\
        - power-cut\n- mount: {id: replay}\n- verify-data: {files: 40, size: 4M}\n";

    fn at(index: usize) -> StepRef {
        StepRef {
            phase: Phase::Steps,
            index,
        }
    }

    fn written(index: usize, errno: Option<&str>, written: u32, acknowledged: u32) -> StepReport {
        StepReport {
            index,
            errno: errno.map(Into::into),
            attempts: 1,
            detail: Some(Detail::Written {
                written,
                acknowledged,
            }),
            ..StepReport::default()
        }
    }

    fn verified(index: usize, checked: u32, missing: &[u32]) -> StepReport {
        StepReport {
            index,
            attempts: 1,
            detail: Some(Detail::Data {
                checked,
                missing: missing.iter().map(|i| format!("f{i:04}")).collect(),
                corrupted: vec![],
            }),
            ..StepReport::default()
        }
    }

    #[test]
    fn write_data_out_of_space_is_an_error_of_the_scenario_not_the_kernels_failure() {
        let s = load(DATA);
        let rec = step_record(&s, at(1), &written(1, Some("ENOSPC"), 13, 13), &[]);
        assert!(!rec.ok && rec.error, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some(
                "ENOSPC after writing 13 of 40 files of 4M in `crashrig-data`: the filesystem \
                 is full; the step writes 160M onto device `scratch` of 64M: make the device \
                 larger or write less (not the kernel's answer)"
            )
        );
        let (v, reasons) = verdict(&s, &[rec], &[], None);
        assert_eq!(v, Verdict::Error, "{reasons:?}");
    }

    #[test]
    fn write_data_eio_is_the_kernels_answer_and_fails_the_step() {
        let s = load(DATA);
        let rec = step_record(&s, at(1), &written(1, Some("EIO"), 0, 0), &[]);
        assert!(!rec.ok && !rec.error, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some("returned EIO after writing 0 of 40 files of 4M in `crashrig-data`")
        );
        assert_eq!(verdict(&s, &[rec], &[], None).0, Verdict::Fail);
    }

    #[test]
    fn verify_data_checks_only_what_write_data_acknowledged() {
        let s = load(DATA);
        let write = step_record(&s, at(1), &written(1, Some("ENOSPC"), 13, 13), &[]);
        // The 27 files never written are not lost; files 0..13 are checked.
        let rec = step_record(
            &s,
            at(4),
            &verified(4, 40, &(13..40).collect::<Vec<_>>()),
            std::slice::from_ref(&write),
        );
        assert!(rec.ok, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some("checked the 13 of 40 files write-data#2 wrote and had acknowledged")
        );
        assert_eq!(
            rec.detail,
            Some(Detail::Data {
                checked: 13,
                missing: vec![],
                corrupted: vec![]
            })
        );
        // One acknowledged file missing is the kernel's loss.
        let rec = step_record(
            &s,
            at(4),
            &verified(4, 40, &[2, 20]),
            std::slice::from_ref(&write),
        );
        assert!(!rec.ok && !rec.error, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some(
                "lost 1 of 13 files (1 missing, 0 corrupted); checked the 13 of 40 files \
                 write-data#2 wrote and had acknowledged"
            )
        );
        // Everything acknowledged: everything checked, as before.
        let full = step_record(&s, at(1), &written(1, None, 40, 40), &[]);
        let rec = step_record(&s, at(4), &verified(4, 40, &[39]), &[full]);
        assert_eq!(
            rec.note.as_deref(),
            Some("lost 1 of 40 files (1 missing, 0 corrupted)")
        );
    }

    fn killed(exited_before: bool, status: Option<i32>, log: &str) -> StepReport {
        StepReport {
            index: 3,
            attempts: 1,
            stdout: log.into(),
            detail: Some(Detail::Killed {
                tasks: 0,
                exit_wait_ms: Some(0.1),
                exit_status: status,
                timed_out: false,
                exited_before,
                exited_ms: None,
            }),
            ..StepReport::default()
        }
    }

    /// [`killed`] with the time the helper saw the workload end.
    fn killed_at(ended_ms: f64, status: i32, log: &str) -> StepReport {
        let mut r = killed(true, Some(status), log);
        if let Some(Detail::Killed { exited_ms, .. }) = &mut r.detail {
            *exited_ms = Some(ended_ms);
        }
        r
    }

    #[test]
    fn a_workload_that_failed_before_its_kill_makes_the_iteration_an_error() {
        let s = load(
            "name: t\ndevices: [{name: scratch, size: 1G}]\nfilesystem: {type: xfs}\nsteps:\n\
             - mount\n- spawn: {name: load, command: fio}\n- sleep: 1s\n- kill: {name: load}\n\
             - umount\n",
        );
        let rec = step_record(
            &s,
            at(3),
            &killed(true, Some(1), "fio: unknown rw mode randwirte\n"),
            &[],
        );
        assert!(!rec.ok && rec.error, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some(
                "workload `load` had already exited with status 1 before the kill: it did not \
                 run what the scenario meant; last output: fio: unknown rw mode randwirte"
            )
        );
        assert!(rec.output.contains("randwirte"), "{rec:?}");
        let (v, reasons) = verdict(&s, &[rec], &[], None);
        assert_eq!(v, Verdict::Error);
        assert!(reasons[0].starts_with("kill#4 (kill): workload `load` had already exited"));
        // Status 0: a short workload, worth a note only.
        let rec = step_record(&s, at(3), &killed(true, Some(0), ""), &[]);
        assert!(rec.ok, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some("workload `load` had already exited with status 0 before the kill")
        );
        // Ended by the kill (or an earlier one): nothing to say.
        let rec = step_record(&s, at(3), &killed(false, Some(137), ""), &[]);
        assert!(rec.ok && rec.note.is_none(), "{rec:?}");
    }

    /// A fio workload, then a `dm-error` fault (step 3), then its kill.
    const FIO_THEN_DM_ERROR: &str = "name: t\ndevices: [{name: scratch, size: 1G, dm: true}]\n\
         filesystem: {type: xfs, device: scratch}\nsteps:\n\
         - mount\n- spawn: {name: load, command: fio}\n- dm-error: {}\n- kill: {name: load}\n\
         - umount: {expect: any}\n";

    /// tests/crash/dm-error.yaml: fio exits 1 on EIO once the error table is in, before its
    /// kill. That is the fault's effect, not a workload that never ran.
    #[test]
    fn a_workload_that_failed_after_an_io_fault_step_is_the_faults_effect() {
        let s = load(FIO_THEN_DM_ERROR);
        let dm = StepRecord {
            id: "dm-error#3".into(),
            kind: "dm-error".into(),
            ..crate::report::results::tests::step("dm-error#3", "dm-error", None, true, None)
        };
        let log = "fio: pid=0, err=5/file:filesetup.c:174, func=open, error=Input/output error\n";
        let rec = step_record(&s, at(3), &killed(true, Some(1), log), &[dm]);
        assert!(rec.ok && !rec.error, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some(
                "workload `load` had already exited with status 1 before the kill, after \
                 `dm-error#3` (dm-error) made I/O fail: taken as that fault's effect; last \
                 output: fio: pid=0, err=5/file:filesetup.c:174, func=open, \
                 error=Input/output error"
            )
        );
        // The same exit without a fault before it is still an error.
        let rec = step_record(&s, at(3), &killed(true, Some(1), log), &[]);
        assert!(rec.error, "{rec:?}");
    }

    /// A fio typo ends the workload at once; a `dm-error` seconds later did not cause it. With
    /// the helper's end time the kill tells the two apart.
    #[test]
    fn a_workload_that_failed_before_the_fault_began_is_still_an_error() {
        let s = load(FIO_THEN_DM_ERROR);
        let dm = |started: Option<f64>| StepRecord {
            started_ms: started,
            ..crate::report::results::tests::step("dm-error#3", "dm-error", None, true, None)
        };
        let typo = "fio: unknown rw mode randwirte\n";
        // Ended 2.9 s before the error table went in: an error, as without a fault.
        let rec = step_record(
            &s,
            at(3),
            &killed_at(1_100.0, 1, typo),
            &[dm(Some(4_000.0))],
        );
        assert!(rec.error && !rec.ok, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some(
                "workload `load` had already exited with status 1 (it ended 2.9 s before \
                 `dm-error#3` (dm-error) began) before the kill: it did not run what the \
                 scenario meant; last output: fio: unknown rw mode randwirte"
            ),
            "{rec:?}"
        );
        // Ended after it began (or within the status file's tick before): its effect.
        for ended in [4_350.0, 3_950.0] {
            let rec = step_record(&s, at(3), &killed_at(ended, 1, typo), &[dm(Some(4_000.0))]);
            assert!(rec.ok && !rec.error, "{ended}: {rec:?}");
        }
        // A fault whose start the guest did not time may be the cause.
        let rec = step_record(&s, at(3), &killed_at(1_100.0, 1, typo), &[dm(None)]);
        assert!(rec.ok, "{rec:?}");
        // Two faults: the later one, begun before the end, explains it.
        let rec = step_record(
            &s,
            at(3),
            &killed_at(5_000.0, 1, typo),
            &[dm(Some(6_000.0)), dm(Some(4_500.0))],
        );
        assert!(rec.ok, "{rec:?}");
    }

    #[test]
    fn mkfs_with_expect_any_passes_whatever_its_exit_status() {
        let s = load(
            "name: t\ndevices: [{name: scratch, size: 1G}]\nfilesystem: {type: xfs}\nsteps:\n\
             - mkfs: {expect: any}\n- mkfs\n",
        );
        let failed = |index| StepReport {
            index,
            attempts: 1,
            exit_status: Some(1),
            stderr: "label too long\n".into(),
            ..StepReport::default()
        };
        assert!(step_record(&s, at(0), &failed(0), &[]).ok);
        let rec = step_record(&s, at(1), &failed(1), &[]);
        assert!(!rec.ok && !rec.error);
        assert_eq!(
            rec.note.as_deref(),
            Some("mkfs exited with status 1; last output: label too long")
        );
    }

    /// A newcomer's typo (`fiio`) was counted as the kernel's failure, exit 1.
    #[test]
    fn a_run_whose_program_the_shell_did_not_find_is_an_error_not_a_failure() {
        let s = load(
            "name: t\nsteps:\n- run: {command: fiio --version}\n\
             - run: {command: /mnt/script}\n- run: {command: 'exit 127'}\n\
             - run: {command: nope, exit: 127}\n",
        );
        let status = |index, stderr: &str| StepReport {
            index,
            attempts: 1,
            exit_status: Some(127),
            stderr: stderr.into(),
            ..StepReport::default()
        };
        let rec = step_record(&s, at(0), &status(0, "sh: fiio: not found\n"), &[]);
        assert!(!rec.ok && rec.error, "{rec:?}");
        assert!(
            rec.note
                .as_deref()
                .unwrap()
                .contains("found no program `fiio`"),
            "{rec:?}"
        );
        // A missing path may be the kernel's loss: a failure, as before.
        let rec = step_record(&s, at(1), &status(1, "sh: /mnt/script: not found\n"), &[]);
        assert!(!rec.ok && !rec.error, "{rec:?}");
        // 127 of the command's own: a failure.
        let rec = step_record(&s, at(2), &status(2, ""), &[]);
        assert!(!rec.ok && !rec.error, "{rec:?}");
        // Expected: held.
        let rec = step_record(&s, at(3), &status(3, "sh: nope: not found\n"), &[]);
        assert!(rec.ok && !rec.error, "{rec:?}");
    }

    #[test]
    fn shutdown_enotty_means_no_shutdown_on_this_filesystem_not_a_kernel_failure() {
        let s = load(
            "name: t\ndevices: [{name: scratch, size: 1G}]\nfilesystem: {type: btrfs}\nsteps:\n\
             - mount\n- shutdown\n- shutdown: {id: want-enotty, expect: ENOTTY}\n",
        );
        let enotty = |index| StepReport {
            index,
            attempts: 1,
            errno: Some("ENOTTY".into()),
            stderr: "btrfs on Linux 6.1.0-57-cloud-amd64 has no FS_IOC_SHUTDOWN\n".into(),
            ..StepReport::default()
        };
        let rec = step_record(&s, at(1), &enotty(1), &[]);
        assert!(!rec.ok && rec.error, "{rec:?}");
        assert_eq!(
            rec.note.as_deref(),
            Some(
                "returned ENOTTY: btrfs on Linux 6.1.0-57-cloud-amd64 has no FS_IOC_SHUTDOWN, \
                 so this scenario cannot run over it (not a failure of the kernel under test)"
            )
        );
        assert_eq!(verdict(&s, &[rec], &[], None).0, Verdict::Error);
        assert!(step_record(&s, at(2), &enotty(2), &[]).ok);
    }

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
