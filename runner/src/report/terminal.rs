//! The terminal reporter: a progress bar on a TTY outside CI, plain lines elsewhere, and a
//! summary per scenario and kernel.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};

use super::events::{BisectStep, Event, Level, Reporter, Stamped};
use super::results::{RunRecord, Summary, Verdict};

pub struct Terminal {
    progress: Option<ProgressBar>,
    /// Runs under way (index -> "scenario@kernel"); with more than one (a parallel matrix),
    /// lines name their run.
    active: std::collections::HashMap<usize, String>,
    /// The build stage last shown for each kernel being built, and when (seconds into its
    /// build).
    build_stages: std::collections::HashMap<String, (String, f64)>,
    fancy: bool,
    verbose: bool,
    /// A bisection is running: its batches get the short summary unless `verbose`.
    bisecting: bool,
}

impl Terminal {
    pub fn new(verbose: bool) -> Self {
        let fancy = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Terminal {
            progress: None,
            active: Default::default(),
            build_stages: Default::default(),
            fancy,
            verbose,
            bisecting: false,
        }
    }

    fn prefix(&self, index: usize) -> String {
        match self.active.get(&index) {
            Some(label) if self.active.len() > 1 => format!("[{label}] "),
            _ => String::new(),
        }
    }

    fn line(&self, text: &str) {
        match &self.progress {
            Some(bar) => bar.println(text),
            None => errln!("{text}"),
        }
    }
}

/// Without a spinner (CI logs, a pipe), a build still in one stage says so this often: a
/// kernel compile is silent for many minutes otherwise, and a log that looks stuck gets killed.
const BUILD_HEARTBEAT_S: f64 = 60.0;

/// The line a build event prints, if any: the first event of a stage, and with `heartbeat`
/// one more every `heartbeat` seconds while the stage lasts, with what it is doing.
fn build_line(
    spec: &str,
    last: Option<(&str, f64)>,
    stage: &str,
    detail: &str,
    elapsed: std::time::Duration,
    heartbeat: Option<f64>,
) -> Option<String> {
    let at = elapsed.as_secs_f64();
    match last {
        Some((shown, shown_at)) if shown == stage => {
            let every = heartbeat?;
            (at - shown_at >= every).then(|| {
                let doing = if detail.is_empty() {
                    String::new()
                } else {
                    format!(", now {detail}")
                };
                format!("crashrig: build {spec}: still {stage} (at {at:.0} s{doing})")
            })
        }
        _ => Some(format!("crashrig: build {spec}: {stage} (at {at:.0} s)")),
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// How the run's guests started, when any was restored from a snapshot (`--restore`).
fn starts_line(run: &RunRecord) -> Option<String> {
    let restored = run.boots.iter().filter(|b| b.restored.is_some()).count();
    let booted = run.boots.len() - restored;
    // A single boot says nothing; after crash steps the count is what `--restore` changes, so
    // a `never` run says it too, to be read next to an `auto` one.
    if restored == 0 && booted < 2 {
        return None;
    }
    let plural = |n: usize, what| super::plural(n as u64, what);
    let how = if run.independent_iterations {
        "independent starts: every iteration began from the same restored set-up guest on fresh disks"
    } else {
        "iterations ran one after another on one guest"
    };
    // Where each restore came from: saved in this run, or by an earlier one (the cache).
    let origins: Vec<String> = [
        ("set-up", "the set-up guest"),
        ("booted", "the booted guest"),
    ]
    .into_iter()
    .filter_map(|(kind, what)| {
        let of_kind = run
            .boots
            .iter()
            .filter(|b| b.restored.as_deref() == Some(kind));
        let (n, cached) = of_kind.fold((0, 0), |(n, c), b| (n + 1, c + b.from_cache as usize));
        let from = match cached {
            0 => "saved in this run".to_string(),
            c if c == n => "saved by an earlier run".to_string(),
            c => format!("{c} saved by an earlier run"),
        };
        (n > 0).then(|| format!("{n} of {what} ({from})"))
    })
    .collect();
    let origins = if origins.is_empty() {
        String::new()
    } else {
        format!(": {}", origins.join(", "))
    };
    Some(format!(
        "  {how}; {}, {}{origins} (--restore {})\n",
        plural(booted, "boot"),
        plural(restored, "restore"),
        run.restore
    ))
}

/// `, with a=1 b=x`: the parameter setting a run used (runs of one scenario with different
/// `--param`s otherwise print the same header); empty for a scenario without parameters.
fn setting_suffix(run: &RunRecord) -> String {
    if run.setting.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = run
        .setting
        .iter()
        .map(|(k, v)| {
            if v.is_empty() || v.contains(char::is_whitespace) {
                format!("{k}='{v}'")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    format!(", with {}", pairs.join(" "))
}

/// The line a run starts with; `only`: the one iteration a `repro` replays; `until_target`:
/// the run ends at the first iteration that shows a target.
fn run_header(run: &RunRecord, planned: u32, only: Option<u32>, until_target: bool) -> String {
    let iterations = match only {
        Some(n) => format!("iteration {n} of {planned} alone"),
        None if until_target => format!("up to {planned} iterations until one shows the target"),
        None => format!("{planned} iteration{}", if planned == 1 { "" } else { "s" }),
    };
    format!(
        "== {} on {} ({}), {iterations}, {}{}",
        run.scenario.name,
        run.kernel.spec,
        run.kernel.version,
        run.accel,
        setting_suffix(run)
    )
}

/// `: A | B | C`: every reason an iteration failed for, on its one line (results.json and
/// junit.xml hold them all; the terminal showed only the first).
fn reasons_text(reasons: &[String]) -> String {
    if reasons.is_empty() {
        return String::new();
    }
    format!(": {}", reasons.join(" | "))
}

/// The summary block for one run (also used by `crashrig report`): its iterations, every
/// step whose outcome is an errno or an expectation, the errno counts and the kernel's
/// findings.
pub fn summary_text(run: &RunRecord) -> String {
    summary(run, false)
}

/// A bisection batch's summary: what the full one says that changes the verdict (the
/// iterations, violated steps, unexpected kernel findings, an error). A bisection runs dozens
/// of short batches, each headed by its step line; the full summary after each buried them.
pub fn batch_summary_text(run: &RunRecord) -> String {
    summary(run, true)
}

fn summary(run: &RunRecord, batch: bool) -> String {
    let mut out = String::new();
    let s: &Summary = &run.summary;
    if !batch {
        out.push_str(&format!(
            "{} on {} ({}, {}){}\n",
            run.scenario.name,
            run.kernel.spec,
            run.kernel.version,
            run.accel,
            setting_suffix(run)
        ));
    }
    if let Some(err) = &run.error {
        out.push_str(&format!("  error: {err}\n"));
    }
    if let Some(d) = &run.setup_dmesg {
        let groups = crate::outcome::group(d.findings.iter().filter(|f| !f.expected));
        if !groups.is_empty() {
            out.push_str(&format!(
                "  setup's dmesg ({}; in no iteration's count):",
                if d.failed() {
                    "FAIL"
                } else {
                    "pass: not in dmesg.fail-on"
                }
            ));
            for g in groups {
                out.push_str(&format!("\n    {} x{}: {}", g.kind, g.count, g.signature));
            }
            out.push('\n');
        }
    }
    // No iteration judged (the run failed before one finished, or every one was an
    // infrastructure error): there is no rate, and 0/0 is not 0%.
    let rate = if s.iterations > s.errors {
        format!(
            "{}, 95% CI {}-{}",
            pct(s.failure_rate),
            pct(s.failure_ci95[0]),
            pct(s.failure_ci95[1])
        )
    } else {
        "no rate: no iteration judged".into()
    };
    out.push_str(&format!(
        "  iterations {}: {} passed, {} failed ({rate}), {} hangs, {} panics, {} errors (not judged)\n",
        s.iterations, s.passed, s.failed, s.hangs, s.panics, s.errors
    ));
    if let Some(line) = starts_line(run).filter(|_| !batch) {
        out.push_str(&line);
    }
    if let Some(busy) = run.busy_host().filter(|_| !batch) {
        out.push_str(&format!(
            "  {}: a slowed guest can show a timing-dependent rate unlike a quiet host's\n",
            busy.text()
        ));
    }
    for (id, st) in &s.steps {
        let outcome_step = matches!(
            st.kind.as_str(),
            "mount"
                | "umount"
                | "shutdown"
                | "run"
                | "fsck"
                | "write-data"
                | "verify-data"
                | "kill"
        );
        if st.violations == 0 && st.errors == 0 && st.unjudged == 0 && (batch || !outcome_step) {
            continue;
        }
        // Steps that make a system call whose errno is the outcome show the errno counts; the
        // others only whether their expectation held ("ok 3/3; violated 3/3" read as both).
        let counts: Vec<String> = if matches!(
            st.kind.as_str(),
            "mount" | "umount" | "shutdown" | "write-data"
        ) {
            st.errno_counts
                .iter()
                .map(|(e, n)| format!("{e} {n}/{}", st.runs))
                .collect()
        } else if st.violations < st.judged() {
            vec![format!("held {}/{}", st.judged() - st.violations, st.runs)]
        } else {
            vec![]
        };
        let mut line = format!("  {id} ({}): {}", st.kind, counts.join(", "));
        if st.violations > 0 {
            if !counts.is_empty() {
                line.push_str("; ");
            }
            line.push_str(&format!(
                "violated {}/{} ({}, 95% CI {}-{})",
                st.violations,
                st.judged(),
                pct(st.violation_rate),
                pct(st.violation_ci95[0]),
                pct(st.violation_ci95[1])
            ));
        }
        if st.errors > 0 {
            if !line.ends_with(": ") {
                line.push_str("; ");
            }
            // Runs that could not test what they meant: not the kernel's answer.
            line.push_str(&format!("error {}/{} (not judged)", st.errors, st.runs));
        }
        if st.unjudged > 0 {
            if !line.ends_with(": ") {
                line.push_str("; ");
            }
            // Its iteration was an error for another reason: what it returned is in the
            // counts above, but no rate counts it.
            line.push_str(&format!(
                "{}/{} in iterations not judged",
                st.unjudged, st.runs
            ));
        }
        if let Some(b) = &st.busy_window_ms {
            if b.count > 0 {
                line.push_str(&format!(
                    "; busy window median {:.1} ms, max {:.1} ms",
                    b.median, b.max
                ));
                if b.gave_up > 0 {
                    line.push_str(&format!(", {} still busy at the bound", b.gave_up));
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    if !s.errno_counts.is_empty() && !batch {
        let counts: Vec<String> = s
            .errno_counts
            .iter()
            .map(|(e, n)| format!("{e} {n}"))
            .collect();
        out.push_str(&format!("  errno counts: {}\n", counts.join(", ")));
    }
    let findings: Vec<_> = s.findings.iter().filter(|f| !f.expected).collect();
    if findings.is_empty() {
        if batch {
            return out;
        }
        out.push_str("  dmesg findings: none");
    } else {
        out.push_str("  dmesg findings:");
        for f in findings {
            let its: Vec<String> = f.iterations.iter().map(u32::to_string).collect();
            out.push_str(&format!(
                "\n    {} x{} (iterations {}): {}",
                f.kind,
                f.count,
                its.join(","),
                f.signature
            ));
        }
    }
    let expected = s
        .findings
        .iter()
        .filter(|f| f.expected)
        .map(|f| f.count)
        .sum::<u32>();
    if expected > 0 && !batch {
        out.push_str(&format!(
            "\n  ({} caused by the scenario's own crash steps)",
            super::plural(u64::from(expected), "expected message")
        ));
    }
    out.push('\n');
    out
}

/// The line `crashrig amplify` starts with: the space searched, the budget and the target.
fn amplify_started_text(
    settings: u64,
    knobs: &[(String, Vec<String>)],
    budget: u64,
    batch: u32,
    target: Option<&str>,
) -> String {
    format!(
        "crashrig: amplify: {} over {} ({}); budget {budget} iterations, batches of {batch}; {}",
        super::plural(settings, "setting"),
        super::plural(knobs.len() as u64, "knob"),
        knobs
            .iter()
            .map(|(name, values)| format!("{name}: {}", values.join("/")))
            .collect::<Vec<_>>()
            .join(", "),
        match target {
            Some(t) => format!("target {t}"),
            None => "target: the first violation seen".into(),
        }
    )
}

/// `crashrig bench boot`'s table: each figure beside its baseline.
fn boot_bench_text(f: &super::events::BootBenchFigures) -> String {
    let stages = |phases: &[super::results::BootPhase]| {
        if phases.is_empty() {
            return String::new();
        }
        let each: Vec<String> = phases
            .iter()
            .map(|p| format!("{} {:.2} s", p.name, p.ms / 1000.0))
            .collect();
        format!(
            "  of which:                                  {}\n",
            each.join(", ")
        )
    };
    let goals = "goals <= 0.5 s, <= 0.2x";
    let agent = match f.restore_s {
        Some(s) => format!(
            "restore to first command (agent channel):   {s:.2} s  ({:.2}x crashrig's boot; {goals})\n{}\
             same restore, first command over SSH:       {:.2} s  ({:.2}x; the agent saves {:.2} s)\n{}",
            s / f.ready_s,
            stages(&f.restore_phases),
            f.ssh_restore_s,
            f.ssh_restore_s / f.ready_s,
            f.ssh_restore_s - s,
            stages(&f.ssh_restore_phases),
        ),
        None => format!(
            "restore to first command over SSH:          {:.2} s  ({:.2}x crashrig's boot; {goals}; \
             the guest has no agent channel)\n{}",
            f.ssh_restore_s,
            f.ssh_restore_s / f.ready_s,
            stages(&f.ssh_restore_phases),
        ),
    };
    format!(
        "kernel {} ({}), accelerator {} ({}), {} repetitions\n\
         bare boot (init powers off at once):        {:.2} s\n\
         crashrig start to first SSH command:        {:.2} s  ({:.2}x bare; goal <= 1.6x)\n\
         {}\
         {}\
         saving the guest (paused, device state):    {:.2} s, {:.2} MB\n\
         its RAM image as a sparse file (cache):     {:.2} s, {:.0} MB\n\
         mount+umount loop as a guest shell script:  {:.1} ms/iteration\n\
         same as crashrig iterations (plan + dmesg): {:.1} ms/iteration  (+{:.1} ms overhead)\n",
        f.kernel,
        f.kernel_version,
        f.accel,
        f.accel_reason,
        f.repeat,
        f.bare_boot_s,
        f.ready_s,
        f.ready_s / f.bare_boot_s,
        stages(&f.boot_phases),
        agent,
        f.save_s,
        f.state_bytes / 1e6,
        f.ram_image_s,
        f.ram_image_bytes / 1e6,
        f.shell_loop_ms,
        f.helper_loop_ms,
        f.helper_loop_ms - f.shell_loop_ms
    )
}

/// The search's spending and its three leading settings.
fn amplify_progress_text(r: &crate::amplify::Report) -> String {
    let lead: Vec<String> = r
        .rows
        .iter()
        .take(3)
        .map(|row| format!("{} {}", row.label, row.rates_text()))
        .collect();
    format!(
        "crashrig: amplify: {}/{} iterations; leading: {}",
        r.spent,
        r.budget,
        lead.join("; ")
    )
}

fn bisect_step_text(s: &BisectStep) -> String {
    let batch = crate::report::plural(u64::from(s.iterations), "iteration");
    format!(
        "crashrig: step: {} ({}); {}, {} so far; {} range {}-{}{}",
        s.candidate,
        if s.until_target && s.iterations > 1 {
            format!("up to {batch}, until one shows the target")
        } else {
            batch
        },
        crate::report::plural(s.builds, "build"),
        crate::report::plural(s.iterations_so_far, "iteration"),
        if s.fix { "fix" } else { "culprit" },
        s.range.0,
        s.range.1,
        s.leader
            .map(|(c, p)| format!(", leader {c} at {p:.2}"))
            .unwrap_or_default()
    )
}

impl Reporter for Terminal {
    fn report(&mut self, e: &Stamped) {
        match &e.event {
            Event::Message { level, text } => match level {
                Level::Info => self.line(&format!("crashrig: {text}")),
                Level::Warn => self.line(&format!("crashrig: warning: {text}")),
            },
            Event::Diagnostics { text } => self.line(text),
            Event::Report { text } => {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }
            Event::Build {
                spec,
                stage,
                detail,
                elapsed,
            } => {
                let last = self.build_stages.get(spec).map(|(s, at)| (s.as_str(), *at));
                let heartbeat = (!self.fancy).then_some(BUILD_HEARTBEAT_S);
                if let Some(text) = build_line(spec, last, stage, detail, *elapsed, heartbeat) {
                    self.line(&text);
                    self.build_stages
                        .insert(spec.clone(), (stage.clone(), elapsed.as_secs_f64()));
                }
                // Stage changes are printed as messages; on a TTY a spinner shows what is
                // compiling.
                if self.fancy {
                    let bar = self.progress.get_or_insert_with(|| {
                        let bar = ProgressBar::new_spinner();
                        bar.enable_steady_tick(std::time::Duration::from_millis(200));
                        bar
                    });
                    bar.set_message(format!("build {spec}: {stage} {detail}"));
                }
            }
            Event::Host(host) => self.line(&format!(
                "crashrig: accelerator: {} ({})",
                host.accel, host.accel_reason
            )),
            Event::ResultsDir { path } => {
                self.line(&format!("crashrig: results: {}", path.display()))
            }
            Event::MatrixPlanned { cells, jobs } => {
                self.line(&format!(
                    "crashrig: {} to run, {} at a time",
                    crate::report::plural(*cells as u64, "cell"),
                    (*jobs).min(*cells).max(1)
                ))
            }
            Event::MissingCells { count } => self.line(&format!(
                "crashrig: note: {count} cells of the matrix are not in these results (other shards?)"
            )),
            Event::BisectStarted {
                scenario,
                range,
                candidates,
                journal,
            } => {
                self.bisecting = true;
                self.line(&format!(
                    "crashrig: bisecting {scenario} over {range}: {candidates} candidates; journal {}",
                    journal.display()
                ))
            }
            Event::BisectTarget { target } => self.line(&format!(
                "crashrig: target: {target} (the first violation the bad end showed)"
            )),
            Event::BisectStep(step) => self.line(&bisect_step_text(step)),
            Event::BisectAlias { candidate, same_as } => self.line(&format!(
                "crashrig: candidate {candidate} builds the same kernel image as candidate \
                 {same_as}: reusing its evidence"
            )),
            Event::BisectUncounted { candidate, why } => self.line(&format!(
                "crashrig: warning: candidate {candidate}: not counted (failed without the \
                 target): {why}"
            )),
            Event::BootBench(f) => {
                let _ = write!(std::io::stdout().lock(), "{}", boot_bench_text(f));
            }
            Event::AmplifyStarted {
                settings,
                knobs,
                budget,
                batch,
                target,
            } => self.line(&amplify_started_text(
                *settings,
                knobs,
                *budget,
                *batch,
                target.as_deref(),
            )),
            Event::AmplifyTarget { target } => self.line(&format!(
                "crashrig: amplify: target {target} (the first violation seen)"
            )),
            Event::AmplifyUnusable { setting, why } => self.line(&format!(
                "crashrig: warning: amplify: {setting}: no usable iteration ({why})"
            )),
            Event::AmplifyProgress(report) => self.line(&amplify_progress_text(report)),
            Event::AmplifyConfirm {
                settings,
                iterations,
                batch,
            } => self.line(&format!(
                "crashrig: bench amplify: {iterations} fresh iterations each of {}, in \
                 alternating batches of {batch}",
                settings.join(" and ")
            )),
            Event::KernelReady { spec, version } => {
                if let Some(bar) = self.progress.take() {
                    bar.finish_and_clear();
                }
                self.line(&format!("kernel {spec}: {version}"))
            }
            Event::ImageReady { key } => {
                if self.verbose {
                    self.line(&format!("guest image {key}"))
                }
            }
            Event::RunStarted {
                index,
                run,
                planned,
                only,
                until_target,
            } => {
                self.active
                    .insert(*index, format!("{}@{}", run.scenario.name, run.kernel.spec));
                self.line(&run_header(run, *planned, *only, *until_target));
                if self.fancy {
                    let bar = ProgressBar::new(u64::from(if only.is_some() { 1 } else { *planned }));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.enable_steady_tick(std::time::Duration::from_millis(200));
                    self.progress = Some(bar);
                }
            }
            Event::BootFinished { index, boot } => self.line(&format!(
                "   {}{} ({}): guest ready after {:.1} s",
                self.prefix(*index),
                match (boot.restored.as_deref(), boot.from_cache) {
                    (Some("set-up"), false) => "restore of the set-up guest",
                    (Some("set-up"), true) => "restore of the set-up guest saved by an earlier run",
                    (Some(_), false) => "restore of the booted guest",
                    (Some(_), true) => "restore of the booted guest saved by an earlier run",
                    (None, _) => "boot",
                },
                boot.reason,
                boot.ready_after_ms as f64 / 1000.0
            )),
            Event::SetupDmesg { index, dmesg } => {
                if dmesg.failed() {
                    let text = format!(
                        "   {}setup: FAIL: {}",
                        self.prefix(*index),
                        dmesg.reasons.join("; ")
                    );
                    match &self.progress {
                        Some(bar) => bar.println(text),
                        None => errln!("{text}"),
                    }
                }
            }
            Event::SetupFinished { steps, .. } => {
                for st in steps.iter().filter(|s| !s.ok) {
                    self.line(&format!(
                        "   setup {} failed: {}",
                        st.id,
                        st.note.as_deref().unwrap_or("")
                    ));
                }
            }
            Event::IterationFinished {
                index,
                record,
                planned,
            } => {
                let tag = match record.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "FAIL",
                    Verdict::Hang => "HANG",
                    Verdict::Panic => "PANIC",
                    Verdict::Error => "ERROR",
                };
                // "HANG: hang: ..." says it twice; results.json keeps the reason whole.
                let mut reasons = record.reasons.clone();
                if let Some(first) = reasons.first_mut() {
                    let word = format!("{}: ", tag.to_lowercase());
                    if let Some(rest) = first.strip_prefix(&word) {
                        *first = rest.to_string();
                    }
                }
                let text = format!(
                    "   {}iteration {}/{planned}: {tag}{}",
                    self.prefix(*index),
                    record.iteration,
                    reasons_text(&reasons)
                );
                match &self.progress {
                    Some(bar) => {
                        bar.inc(1);
                        if record.verdict != Verdict::Pass || self.verbose {
                            bar.println(text);
                        }
                    }
                    None => errln!("{text}"),
                }
            }
            Event::RunFinished { index, run } => {
                self.active.remove(index);
                if let Some(bar) = self.progress.take() {
                    bar.finish_and_clear();
                }
                let mut out = std::io::stdout().lock();
                let _ = if self.bisecting && !self.verbose {
                    write!(out, "{}", batch_summary_text(run))
                } else {
                    writeln!(out, "{}", summary_text(run))
                };
            }
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.progress.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::seed_iterations;
    use crate::report::summarize;

    #[test]
    fn a_long_build_stage_says_it_is_still_going_only_without_a_spinner() {
        let secs = std::time::Duration::from_secs;
        let line = |last, stage, at, heartbeat| {
            build_line("k", last, stage, "CC fs/namei.o", secs(at), heartbeat)
        };
        // A new stage is always shown.
        assert_eq!(
            line(None, "compile", 15, None).as_deref(),
            Some("crashrig: build k: compile (at 15 s)")
        );
        assert_eq!(
            line(Some(("config", 1.0)), "compile", 15, Some(60.0)).as_deref(),
            Some("crashrig: build k: compile (at 15 s)")
        );
        // The same stage: nothing until a heartbeat is due, then what it is doing.
        assert_eq!(
            line(Some(("compile", 15.0)), "compile", 74, Some(60.0)),
            None
        );
        assert_eq!(
            line(Some(("compile", 15.0)), "compile", 75, Some(60.0)).as_deref(),
            Some("crashrig: build k: still compile (at 75 s, now CC fs/namei.o)")
        );
        // On a TTY the spinner shows progress: no heartbeat lines.
        assert_eq!(line(Some(("compile", 15.0)), "compile", 900, None), None);
        assert_eq!(
            build_line(
                "k",
                Some(("compile", 0.0)),
                "compile",
                "",
                secs(60),
                Some(60.0)
            )
            .as_deref(),
            Some("crashrig: build k: still compile (at 60 s)")
        );
    }

    #[test]
    fn boot_bench_figures_are_shown_beside_their_baselines() {
        let f = crate::report::events::BootBenchFigures {
            kernel: "debian:6.1".into(),
            repeat: 3,
            kernel_version: "6.1.0-30-amd64".into(),
            accel: "tcg".into(),
            accel_reason: "requested".into(),
            bare_boot_s: 4.0,
            ready_s: 5.0,
            restore_s: Some(0.25),
            ssh_restore_s: 1.0,
            ssh_restore_phases: vec![crate::report::BootPhase {
                name: "ssh-connect".into(),
                ms: 600.0,
            }],
            restore_phases: vec![
                crate::report::BootPhase {
                    name: "qemu-start".into(),
                    ms: 100.0,
                },
                crate::report::BootPhase {
                    name: "state-load".into(),
                    ms: 350.0,
                },
            ],
            boot_phases: vec![crate::report::BootPhase {
                name: "sshd-started".into(),
                ms: 4200.0,
            }],
            save_s: 0.5,
            state_bytes: 0.3e6,
            ram_image_s: 0.4,
            ram_image_bytes: 180e6,
            shell_loop_ms: 100.0,
            helper_loop_ms: 112.5,
        };
        assert_eq!(
            boot_bench_text(&f),
            "kernel debian:6.1 (6.1.0-30-amd64), accelerator tcg (requested), 3 repetitions\n\
             bare boot (init powers off at once):        4.00 s\n\
             crashrig start to first SSH command:        5.00 s  (1.25x bare; goal <= 1.6x)\n\
             \x20 of which:                                  sshd-started 4.20 s\n\
             restore to first command (agent channel):   0.25 s  (0.05x crashrig's boot; goals <= 0.5 s, <= 0.2x)\n\
             \x20 of which:                                  qemu-start 0.10 s, state-load 0.35 s\n\
             same restore, first command over SSH:       1.00 s  (0.20x; the agent saves 0.75 s)\n\
             \x20 of which:                                  ssh-connect 0.60 s\n\
             saving the guest (paused, device state):    0.50 s, 0.30 MB\n\
             its RAM image as a sparse file (cache):     0.40 s, 180 MB\n\
             mount+umount loop as a guest shell script:  100.0 ms/iteration\n\
             same as crashrig iterations (plan + dmesg): 112.5 ms/iteration  (+12.5 ms overhead)\n"
        );
        // A guest without the agent channel: only the SSH restore, measured against the goals.
        let g = crate::report::events::BootBenchFigures {
            restore_s: None,
            ..f
        };
        assert!(
            boot_bench_text(&g).contains(
                "restore to first command over SSH:          1.00 s  (0.20x crashrig's boot; \
                 goals <= 0.5 s, <= 0.2x; the guest has no agent channel)\n\
                 \x20 of which:                                  ssh-connect 0.60 s\n"
            ),
            "{}",
            boot_bench_text(&g)
        );
    }

    /// A seed-scenario run record on TCG with these iterations; `kernel` is (spec, version).
    fn seed_record(
        path: &str,
        kernel: (&str, &str),
        iterations: Vec<crate::report::IterationRecord>,
    ) -> RunRecord {
        crate::report::results::tests::run_record("seed-kill-umount", path, kernel, iterations)
    }

    #[test]
    fn an_iteration_line_shows_every_reason() {
        assert_eq!(reasons_text(&[]), "");
        assert_eq!(
            reasons_text(&[
                "loud-pass (run): timed out after 60000 ms".into(),
                "loud-fail (run): exited with 3".into()
            ]),
            ": loud-pass (run): timed out after 60000 ms | loud-fail (run): exited with 3"
        );
    }

    #[test]
    fn the_run_header_and_summary_name_the_parameter_setting() {
        let mut run = seed_record("seed.yaml", ("debian:6.1", "6.1.0"), vec![]);
        assert!(summary_text(&run).starts_with("seed-kill-umount on debian:6.1 (6.1.0, tcg)\n"));
        run.setting = [("filesystem", "ext4"), ("nfiles", "64"), ("flags", "a b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(
            summary_text(&run).starts_with(
                "seed-kill-umount on debian:6.1 (6.1.0, tcg), with filesystem=ext4 flags='a b' \
                 nfiles=64\n"
            ),
            "{}",
            summary_text(&run)
        );
        assert_eq!(
            run_header(&run, 3, Some(2), false),
            "== seed-kill-umount on debian:6.1 (6.1.0), iteration 2 of 3 alone, tcg, with \
             filesystem=ext4 flags='a b' nfiles=64"
        );
        assert_eq!(
            run_header(&run, 3, None, false),
            "== seed-kill-umount on debian:6.1 (6.1.0), 3 iterations, tcg, with \
             filesystem=ext4 flags='a b' nfiles=64"
        );
        // A bisection's or a check's batch ends at the first sighting: "9 iterations" over
        // a batch that ran 2 read as a miscount.
        assert_eq!(
            run_header(&run, 9, None, true),
            "== seed-kill-umount on debian:6.1 (6.1.0), up to 9 iterations until one shows \
             the target, tcg, with filesystem=ext4 flags='a b' nfiles=64"
        );
    }

    /// The terminal summary of a run with an infrastructure error, unexpected findings and
    /// expected ones, as users see it; paths redacted.
    #[test]
    fn summary_snapshot() {
        let mut iterations = seed_iterations();
        iterations[1].findings.push(crate::outcome::Finding {
            kind: crate::outcome::FindingKind::Warning,
            title: "WARNING: CPU: 0 PID: 1 at fs/xfs/xfs_inode.c:1 xfs_evict_inode".into(),
            report: String::new(),
            frames: vec!["xfs_evict_inode".into()],
            signature: "warning:xfs_evict_inode".into(),
            expected: false,
            ts_us: None,
            seq: None,
        });
        let mut run = seed_record(
            "/home/someone/tests/seed-kill-umount.yaml",
            ("/home/someone/linux@v6.12", "v6.12-0-gadc218676eef"),
            iterations,
        );
        run.error = Some("QEMU exited before the guest answered on SSH".into());
        run.summary = summarize(&run.iterations);
        insta::with_settings!({filters => vec![(r"(/[\w.-]+)+/", "[path]/")]}, {
            insta::assert_snapshot!(summary_text(&run));
        });
    }

    /// Steps without an errno say whether their expectation held, not "ok" beside
    /// "violated"; a failing cleanup step has its own row, outside the errno totals.
    #[test]
    fn steps_without_an_errno_say_held_or_violated_and_cleanup_steps_are_listed() {
        use crate::report::results::tests::{iteration, step};
        let cleanup = |ok, errno: Option<&str>| {
            let mut st = step("kill-bg", "kill", errno, ok, None);
            st.phase = "cleanup".into();
            st
        };
        let its = vec![
            iteration(
                1,
                Verdict::Fail,
                vec![
                    step("v", "verify-data", None, false, None),
                    step("fsck", "fsck", None, true, None),
                    cleanup(false, Some("ESRCH")),
                ],
            ),
            iteration(
                2,
                Verdict::Fail,
                vec![
                    step("v", "verify-data", None, false, None),
                    step("fsck", "fsck", None, true, None),
                    cleanup(true, None),
                ],
            ),
        ];
        let run = seed_record("t.yaml", ("debian:6.1", "k"), its);
        let text = summary_text(&run);
        assert!(
            text.contains("  v (verify-data): violated 2/2 (100%"),
            "{text}"
        );
        assert!(text.contains("  fsck (fsck): held 2/2\n"), "{text}");
        assert!(
            text.contains("  kill-bg (kill): held 1/2; violated 1/2"),
            "{text}"
        );
        assert!(!text.contains("ok 2/2; violated"), "{text}");
        assert!(!text.contains("errno counts"), "{text}");
    }

    /// probe15c: every iteration an error (the workload never started), yet umount returned
    /// EBUSY in some: the step line said "violated 8/32 (25%, 95% CI 13%-42%)", a rate of
    /// iterations that were not judged.
    #[test]
    fn a_step_in_iterations_not_judged_shows_what_it_returned_but_no_rate() {
        use crate::report::results::tests::{iteration, step};
        let its = [
            (Verdict::Error, Some("EBUSY")),
            (Verdict::Error, None),
            (Verdict::Fail, Some("EBUSY")),
            (Verdict::Pass, None),
        ]
        .into_iter()
        .zip(1..)
        .map(|((v, errno), n)| {
            iteration(
                n,
                v,
                vec![step("u", "umount", errno, errno.is_none(), None)],
            )
        })
        .collect();
        let run = seed_record("t.yaml", ("debian:6.1", "k"), its);
        let u = &run.summary.steps["u"];
        assert_eq!((u.runs, u.violations, u.unjudged, u.judged()), (4, 1, 2, 2));
        assert_eq!(u.violation_rate, 0.5);
        let text = summary_text(&run);
        assert!(
            text.contains(
                "  u (umount): EBUSY 2/4, ok 2/4; violated 1/2 (50%, 95% CI 9%-91%); 2/4 in \
                 iterations not judged\n"
            ),
            "{text}"
        );
    }

    /// "2 settings over 1 knobs": one knob is the usual first search.
    #[test]
    fn the_amplify_start_line_counts_one_knob_in_the_singular() {
        let knobs = vec![("busy".to_string(), vec!["0".to_string(), "1".to_string()])];
        assert_eq!(
            amplify_started_text(2, &knobs, 300, 10, Some("umount:EBUSY")),
            "crashrig: amplify: 2 settings over 1 knob (busy: 0/1); budget 300 iterations, \
             batches of 10; target umount:EBUSY"
        );
    }

    /// A bisection batch's summary keeps what decides the verdict and drops the rest.
    #[test]
    fn a_bisection_batch_summary_keeps_violations_findings_and_errors_only() {
        use crate::report::results::tests::{iteration, step};
        let its = |umount_ok| {
            vec![
                iteration(
                    1,
                    if umount_ok {
                        Verdict::Pass
                    } else {
                        Verdict::Fail
                    },
                    vec![
                        step("mount", "mount", None, true, None),
                        step("kill", "kill", None, true, None),
                        step(
                            "umount",
                            "umount",
                            (!umount_ok).then_some("EBUSY"),
                            umount_ok,
                            None,
                        ),
                    ],
                ),
                iteration(
                    2,
                    Verdict::Pass,
                    vec![
                        step("mount", "mount", None, true, None),
                        step("kill", "kill", None, true, None),
                        step("umount", "umount", None, true, None),
                    ],
                ),
            ]
        };
        let mut run = seed_record("t.yaml", ("debian:6.1", "k"), its(false));
        run.boots = vec![crate::report::BootRecord {
            ready_after_ms: 1,
            console_log: String::new(),
            reason: "start".into(),
            qemu_command: vec![],
            dmesg_file: None,
            restored: Some("booted".into()),
            from_cache: true,
            phases: vec![],
            transport: "ssh".into(),
        }];
        let full = summary_text(&run);
        assert!(full.contains("  mount (mount): ok 2/2\n"), "{full}");
        assert!(full.contains("dmesg findings: none"), "{full}");
        assert_eq!(
            batch_summary_text(&run),
            "  iterations 2: 1 passed, 1 failed (50%, 95% CI 9%-91%), 0 hangs, 0 panics, 0 errors (not judged)\n\
             \x20 umount (umount): EBUSY 1/2, ok 1/2; violated 1/2 (50%, 95% CI 9%-91%)\n"
        );
        // A clean batch is one line; an error and an unexpected finding are kept.
        let mut clean = seed_record("t.yaml", ("debian:6.1", "k"), its(true));
        assert_eq!(batch_summary_text(&clean).lines().count(), 1);
        clean.error = Some("the guest stopped answering".into());
        clean.iterations[0].findings.push(crate::outcome::Finding {
            kind: crate::outcome::FindingKind::Warning,
            title: "WARNING: at fs/namespace.c:1 mntput".into(),
            report: String::new(),
            frames: vec!["mntput".into()],
            signature: "warning:mntput".into(),
            expected: false,
            ts_us: None,
            seq: None,
        });
        clean.summary = summarize(&clean.iterations);
        let text = batch_summary_text(&clean);
        assert!(
            text.starts_with("  error: the guest stopped answering\n"),
            "{text}"
        );
        assert!(
            text.contains("warning x1 (iterations 1): warning:mntput"),
            "{text}"
        );
    }

    #[test]
    fn a_run_that_judged_no_iteration_shows_no_rate() {
        let mut run = seed_record("t.yaml", ("debian:6.1", "k"), vec![]);
        run.error = Some("QEMU exited at start".into());
        let text = summary_text(&run);
        assert!(
            text.contains("  iterations 0: 0 passed, 0 failed (no rate: no iteration judged), "),
            "{text}"
        );
        assert!(!text.contains("0%"), "{text}");
    }

    #[test]
    fn a_bisection_step_says_when_its_batch_stops_at_the_target() {
        let step = |iterations, until_target| BisectStep {
            candidate: "patch 2/7: fs: defer".into(),
            iterations,
            until_target,
            fix: false,
            builds: 3,
            iterations_so_far: 20,
            range: (1, 7),
            leader: Some((2, 0.5)),
        };
        assert_eq!(
            bisect_step_text(&step(8, true)),
            "crashrig: step: patch 2/7: fs: defer (up to 8 iterations, until one shows the \
             target); 3 builds, 20 iterations so far; culprit range 1-7, leader 2 at 0.50"
        );
        assert!(bisect_step_text(&step(8, false)).contains("(8 iterations);"));
        assert!(bisect_step_text(&step(1, true)).contains("(1 iteration);"));
        let fix = BisectStep {
            fix: true,
            ..step(8, true)
        };
        assert!(
            bisect_step_text(&fix).contains("; fix range 1-7, leader 2 at 0.50"),
            "{}",
            bisect_step_text(&fix)
        );
    }

    #[test]
    fn summary_reads_like_the_readme_says() {
        let iterations = seed_iterations();
        let mut run = seed_record(
            "tests/seed-kill-umount.yaml",
            ("debian:6.1", "linux-image-6.1.0-56-cloud-amd64 6.1.192-2"),
            iterations,
        );
        assert_eq!(
            summary_text(&run),
            "seed-kill-umount on debian:6.1 (linux-image-6.1.0-56-cloud-amd64 6.1.192-2, tcg)\n\
             \x20 iterations 4: 1 passed, 3 failed (75%, 95% CI 30%-95%), 1 hangs, 0 panics, 0 errors (not judged)\n\
             \x20 umount (umount): EBUSY 2/3, ok 1/3; violated 2/3 (67%, 95% CI 21%-94%); busy window median 6.0 ms, max 9.0 ms\n\
             \x20 errno counts: EBUSY 2\n\
             \x20 dmesg findings: none\n"
        );
        // Restored from snapshots: the summary says how iterations started.
        let boot = |restored: Option<&str>| crate::report::BootRecord {
            ready_after_ms: 1,
            console_log: String::new(),
            reason: "start".into(),
            qemu_command: vec![],
            dmesg_file: None,
            restored: restored.map(str::to_owned),
            from_cache: false,
            phases: vec![],
            transport: "ssh".into(),
        };
        run.boots = vec![boot(None), boot(Some("set-up")), boot(Some("set-up"))];
        run.restore = "auto".into();
        run.independent_iterations = true;
        assert!(summary_text(&run).contains(
            "\n  independent starts: every iteration began from the same restored set-up guest \
             on fresh disks; 1 boot, 2 restores: 2 of the set-up guest (saved in this run) \
             (--restore auto)\n"
        ));
        // A second run of the same scenario: nothing booted, both snapshots from the cache.
        let cached = |restored: &str| crate::report::BootRecord {
            from_cache: true,
            ..boot(Some(restored))
        };
        run.boots = vec![
            cached("set-up"),
            cached("booted"),
            cached("set-up"),
            boot(Some("booted")),
        ];
        assert!(summary_text(&run).contains(
            "; 0 boots, 4 restores: 2 of the set-up guest (saved by an earlier run), \
             2 of the booted guest (1 saved by an earlier run) (--restore auto)\n"
        ));
        run.independent_iterations = false;
        assert!(summary_text(&run).contains("\n  iterations ran one after another on one guest;"));
        // Booted again after crash steps, never restored: said too, to compare with `auto`.
        run.boots = vec![boot(None), boot(None), boot(None)];
        run.restore = "never".into();
        assert!(summary_text(&run).contains(
            "\n  iterations ran one after another on one guest; 3 boots, 0 restores (--restore never)\n"
        ));
        // The panic of a `panic` step, once: counted, marked expected, in the singular.
        run.summary.findings = vec![crate::report::results::FindingSummary {
            signature: "panic:sysrq".into(),
            kind: "panic".into(),
            count: 1,
            expected: true,
            iterations: vec![1],
            title: "Kernel panic - not syncing: sysrq triggered crash".into(),
        }];
        assert!(summary_text(&run)
            .contains("\n  (1 expected message caused by the scenario's own crash steps)\n"));
    }

    #[test]
    fn a_run_on_a_busy_host_says_so_under_its_counts() {
        let mut run = seed_record(
            "tests/seed-kill-umount.yaml",
            ("debian:6.1", "6.1"),
            seed_iterations(),
        );
        run.host_cpus = Some(2);
        assert!(!summary_text(&run).contains("host load"));
        run.iterations[2].host_load = Some(7.5);
        let text = summary_text(&run);
        assert!(
            text.contains(
                "0 errors (not judged)\n  host load above its 2 CPUs when 1 of 1 iterations ended \
                 (up to 7.5; crashrig's own guests count): a slowed guest can show a \
                 timing-dependent rate unlike a quiet host's\n"
            ),
            "{text}"
        );
        // A bisection's batch summary leaves it to the full report.
        assert!(!batch_summary_text(&run).contains("host load"));
    }
}
