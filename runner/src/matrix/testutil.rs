//! Synthetic results for the matrix tests: runs built from verdict lists, no QEMU.

use std::path::Path;

use super::model::{load_str, Cell, Matrix};
use super::partition::Partition;
use crate::kernel::spec::PathKind;
use crate::outcome::Finding;
use crate::report::{
    summarize, HostInfo, IterationRecord, KernelInfo, Results, RunRecord, ScenarioInfo, StepRecord,
    Summary, Verdict, SCHEMA_VERSION,
};

pub fn matrix(text: &str) -> Matrix {
    load_str(text, "m.yaml", Path::new("/m"), &|p: &Path| {
        if p.extension().is_some() {
            PathKind::File
        } else {
            PathKind::Missing
        }
    })
    .unwrap_or_else(|e| panic!("test matrix: {e}"))
}

/// 2 kernels x 2 scenarios x 2 filesystems.
pub fn seed_matrix() -> Matrix {
    matrix(
        "name: seed\niterations: 4\nkernels: [debian:6.1, debian:6.12]\n\
         scenarios: [seed-kill-umount.yaml, control-psync.yaml]\n\
         parameters: { filesystem: [xfs, ext4] }\n",
    )
}

/// One iteration: `umount` fails with `errno` when the verdict is Fail (and errno is set).
pub fn iteration(
    n: u32,
    verdict: Verdict,
    errno: Option<&str>,
    busy_ms: Option<f64>,
) -> IterationRecord {
    let failed = verdict == Verdict::Fail;
    IterationRecord {
        iteration: n,
        verdict,
        reasons: if failed {
            vec![format!("umount returned {}", errno.unwrap_or("an error"))]
        } else {
            Vec::new()
        },
        steps: vec![StepRecord {
            id: "umount".into(),
            kind: "umount".into(),
            phase: "steps".into(),
            errno: if failed {
                errno.map(str::to_string)
            } else {
                None
            },
            final_errno: None,
            attempts: 1,
            busy_window_ms: busy_ms,
            busy_gave_up: false,
            duration_ms: 10.0,
            started_ms: None,
            exit_status: None,
            ok: !failed,
            error: false,
            note: None,
            detail: None,
            output: String::new(),
        }],
        findings: Vec::new(),
        duration_ms: 1000.0,
        seed: u64::from(n),
        dmesg_file: None,
        console_tail: Vec::new(),
        host_load: None,
    }
}

pub fn finding(signature: &str) -> Finding {
    Finding {
        kind: crate::outcome::FindingKind::Warning,
        title: format!("WARNING at {signature}"),
        report: format!("WARNING at {signature}"),
        frames: Vec::new(),
        signature: signature.into(),
        expected: false,
        ts_us: None,
        seq: None,
    }
}

/// `failed` failing iterations (umount EBUSY) of `n`; finished, summarized.
pub fn run_for(cell: &Cell, n: u32, failed: u32) -> RunRecord {
    let iterations = (1..=n)
        .map(|i| {
            if i <= failed {
                iteration(i, Verdict::Fail, Some("EBUSY"), Some(40.0 * f64::from(i)))
            } else {
                iteration(i, Verdict::Pass, None, None)
            }
        })
        .collect();
    run_with(cell, iterations)
}

pub fn run_with(cell: &Cell, iterations: Vec<IterationRecord>) -> RunRecord {
    let planned = iterations.len() as u32;
    RunRecord {
        scenario: ScenarioInfo {
            name: cell.scenario.key.clone(),
            path: cell.scenario.path.display().to_string(),
            description: String::new(),
            sha256: Some(format!(
                "sha-of-{}",
                super::model::cell_id("", &cell.scenario.key, &cell.params)
            )),
        },
        kernel: KernelInfo {
            spec: cell.kernel.spec_text.clone(),
            version: format!("{}-test", cell.kernel.spec_text),
            release: None,
            image_sha256: "00".into(),
            build_key: None,
            kconfig: vec![],
            patches: vec![],
        },
        accel: "tcg".into(),
        seed: cell.index as u64,
        started: format!("2026-11-25T10:{:02}:00Z", cell.index),
        finished: Some(format!("2026-11-25T10:{:02}:30Z", cell.index)),
        dir: cell.id(),
        restore: "never".into(),
        independent_iterations: false,
        setup_dmesg: None,
        guest_image: "test-image".into(),
        boots: Vec::new(),
        setup: Vec::new(),
        error: None,
        summary: summarize(&iterations),
        iterations,
        cell: Some(cell.info()),
        setting: cell.params.clone(),
        iterations_planned: Some(planned),
        host_cpus: None,
    }
}

pub fn results(runs: Vec<RunRecord>) -> Results {
    Results {
        schema: SCHEMA_VERSION,
        crashrig_version: "0.1.0".into(),
        started: "2026-11-25T10:00:00Z".into(),
        finished: Some("2026-11-25T11:00:00Z".into()),
        host: HostInfo::default(),
        runs,
        matrix: None,
    }
}

/// Every cell with a different failure count, as one unsharded run writes it.
pub fn unsharded() -> (Vec<Cell>, Results) {
    let cells = seed_matrix().cells();
    let runs = cells
        .iter()
        .map(|c| run_for(c, 4, (c.index % 5) as u32))
        .collect();
    (cells, results(runs))
}

pub fn shard(all: &Results, p: Partition) -> Results {
    let mut r = all.clone();
    r.runs
        .retain(|run| p.contains(run.cell.as_ref().unwrap().index as usize));
    // A shard's own writer may hold stale summaries and any order: merge must not care.
    r.runs.reverse();
    for run in &mut r.runs {
        run.summary = Summary::default();
    }
    r
}
