//! Built kernels end to end through the CLI: debian-source:6.1 with base + the scenario's
//! fs-xfs and a marker patch, booted by `run`; a cache hit; bad input (a patch that does not
//! apply, an impossible config option); bisections of real patch series (a deliberate
//! regression of the seed's class, and a rate change); and `check` against a reference rate.
//! The first build is minutes (ccache and the build cache make later runs fast).

mod common;

use common::{boots_and_kernels, crashrig};

use serde_json::Value;

const MARKER_PATCH: &str = "runner/tests/fixtures/marker.patch";
const MARKER: &str = "crashrig-marker: patched kernel booted";

#[test]
fn patched_debian_source_kernel_boots_and_runs_and_is_cached() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let (code, stdout, stderr) = crashrig(&[
        "run",
        "tests/smoke.yaml",
        "--kernel",
        "debian-source:6.1",
        "--patches",
        MARKER_PATCH,
        "-n",
        "1",
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let run = &r["runs"][0];
    assert_eq!(run["kernel"]["spec"], "debian-source:6.1");
    // by absolute path: `crashrig repro` finds it from any directory
    let patches = run["kernel"]["patches"].as_array().unwrap();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let recorded = std::path::Path::new(patches[0].as_str().unwrap());
    assert!(
        recorded.is_absolute() && recorded.ends_with(MARKER_PATCH),
        "{recorded:?}"
    );
    assert!(
        run["kernel"]["build_key"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{}",
        run["kernel"]
    );
    assert_eq!(run["summary"]["failed"], 0);
    let console = std::fs::read_to_string(
        out.path()
            .join(run["boots"][0]["console_log"].as_str().unwrap()),
    )
    .unwrap();
    assert!(
        console.contains(MARKER),
        "the patch's pr_info reached the console"
    );

    // The same build again is a cache hit: no compile stage.
    let (code, stdout, stderr) = crashrig(&[
        "build",
        "debian-source:6.1",
        "--kconfig",
        "fs-xfs",
        "--patches",
        MARKER_PATCH,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "cache key: {}",
            run["kernel"]["build_key"].as_str().unwrap()
        )),
        "{stdout}"
    );
    assert!(
        !stderr.contains(": compile ("),
        "a cache hit runs no make:\n{stderr}"
    );
}

#[test]
fn a_patch_that_does_not_apply_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("0001-broken.patch");
    std::fs::write(
        &bad,
        "From: t <t@t>\nSubject: [PATCH] broken\n\n---\n--- a/init/main.c\n+++ b/init/main.c\n@@ -1,3 +1,3 @@\n-this line is not in main.c\n+neither is this\n context that is not there\n either\n",
    )
    .unwrap();
    let (code, stdout, stderr) = crashrig(&[
        "build",
        "debian-source:6.1",
        "--patches",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("0001-broken.patch"),
        "the message names the patch:\n{stderr}"
    );
    assert!(
        stderr.contains("init/main.c"),
        "and the file that failed:\n{stderr}"
    );
}

#[test]
fn an_impossible_config_option_is_listed_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let frag = dir.path().join("impossible.config");
    // KASAN needs a compiler and arch support tinyconfig does not give without its
    // dependencies; a made-up option cannot exist at all.
    std::fs::write(&frag, "CONFIG_CRASHRIG_NO_SUCH_OPTION=y\n").unwrap();
    let (code, stdout, stderr) = crashrig(&[
        "build",
        "debian-source:6.1",
        "--kconfig",
        frag.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("CONFIG_CRASHRIG_NO_SUCH_OPTION"),
        "{stderr}"
    );
}

#[test]
fn bisect_names_the_patch_that_defers_fput() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let (code, stdout, stderr) = crashrig(&[
        "bisect",
        "tests/bisect/close-umount.yaml",
        "--kernel",
        "debian-source:6.1",
        "--patches",
        "tests/bisect/fput-regression-series",
        "--iterations",
        "8",
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("bisect.json")).unwrap())
            .unwrap();
    assert_eq!(report["report"]["status"], "found", "{stdout}");
    assert_eq!(report["report"]["culprit"], 2, "{stdout}");
    assert!(
        report["candidates"][2]
            .as_str()
            .unwrap()
            .contains("hand the last fput()"),
        "{}",
        report["candidates"]
    );
    assert!(report["report"]["confidence"].as_f64().unwrap() >= 0.95);
    assert_eq!(report["target"]["step"], "umount");
    assert_eq!(report["target"]["errno"], "EBUSY");
    assert!(stdout.contains("culprit: patch 2/4"), "{stdout}");
    let (boots, kernels) = boots_and_kernels(&common::results(out.path()));
    assert!(
        boots <= kernels,
        "{boots} boots for {kernels} kernels: {stdout}"
    );
    // Every step is in the journal.
    let journal = std::fs::read_to_string(out.path().join("bisect.journal")).unwrap();
    assert!(journal.lines().count() >= 3, "{journal}");
}

/// Issue 9: the good end already fails (one deferred close in eight, umount EBUSY about 12%),
/// the culprit raises that to one in two; two patches build the same kernel image as the patch
/// before them (documentation and a comment), which once livelocked the verification.
/// Measured here: 4 builds (the base build of `patched_debian_source_kernel_boots...` is
/// reused incrementally), about 50 iterations and 8 boots; 2 to 4 minutes with the builds cached,
/// 22 minutes with cold builds on a host with load average 10.
#[test]
fn bisect_names_the_patch_that_raises_an_existing_rate() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let (code, stdout, stderr) = crashrig(&[
        "bisect",
        "tests/bisect/one-writer-umount.yaml",
        "--kernel",
        "debian-source:6.1",
        "--base-patches",
        "tests/bisect/fput-rate/base",
        "--patches",
        "tests/bisect/fput-rate/series",
        "--target",
        "umount:EBUSY",
        "--out",
        o,
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("bisect.json")).unwrap())
            .unwrap();
    let r = &report["report"];
    assert_eq!(r["status"], "found", "{stdout}");
    assert_eq!(r["culprit"], 4, "{stdout}");
    assert!(r["confidence"].as_f64().unwrap() >= 0.95, "{stdout}");
    // The good end's own failures were seen, and the ends were shown to differ first.
    assert!(
        r["ends"]["good"]["iterations"].as_u64().unwrap() > 0,
        "{stdout}"
    );
    assert_eq!(r["ends"]["holds"], true, "{stdout}");
    assert_eq!(r["verified"]["holds"], true, "{stdout}");
    // Patch 2 (documentation) and 6 (a comment) build the kernel of the patch before them:
    // never both of a pair run.
    for (a, b) in [(1, 2), (5, 6)] {
        let ran = |k: usize| {
            let row = &r["evidence"][k];
            row["iterations"].as_u64().unwrap() + row["verify-iterations"].as_u64().unwrap() > 0
        };
        assert!(!(ran(a) && ran(b)), "{a} and {b} are one kernel: {stdout}");
    }
    assert!(stdout.contains("culprit: patch 4/6"), "{stdout}");
    let (boots, kernels) = boots_and_kernels(&common::results(out.path()));
    assert!(
        boots <= kernels,
        "{boots} boots for {kernels} kernels: {stdout}"
    );
    assert!(!stdout.contains("Some("), "no Rust debug output: {stdout}");
    assert!(report["wall-seconds"].as_u64().unwrap() > 0, "{report}");
    assert!(stdout.contains("wall time: "), "{stdout}");
    // The search priced builds, boots and iterations at what they took here.
    let prices = &report["prices"];
    assert!(
        prices["iteration-seconds"].as_f64().unwrap() > 0.0,
        "{prices}"
    );
    assert!(prices["build-seconds"].as_f64().is_some(), "{prices}");
    assert!(
        stdout.contains("search prices (measured): a build priced at"),
        "{stdout}"
    );
    eprintln!("figure: search prices: {prices}");
}

/// Issue 9: `crashrig check` as `git bisect run` calls it, against a reference rate (the good
/// end's one deferred close in eight): the kernel with the series up to its culprit (one in
/// two) is bad, exit 1; Debian's prebuilt 6.1 (no deferral) is good, exit 0. Runs after the
/// bisection above, whose candidate 4 is the first kernel here: a build-cache hit. At
/// confidence 0.99 each verdict is wrong at most 1% of the time.
#[test]
fn check_against_a_reference_rate_calls_the_culprit_bad_and_a_clean_kernel_good() {
    let series = |dir: &str| -> Vec<String> {
        let mut p: Vec<String> = std::fs::read_dir(common::workspace().join(dir))
            .unwrap()
            .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        p.sort();
        p
    };
    let patches: Vec<String> = series("tests/bisect/fput-rate/base")
        .into_iter()
        .chain(series("tests/bisect/fput-rate/series").into_iter().take(4))
        .collect();
    assert!(
        patches[4].contains("0004-fs-sample-the-deferred"),
        "{patches:?}"
    );
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let check = |kernel: &str, patches: &[String]| {
        let mut args = vec![
            "check",
            "tests/bisect/one-writer-umount.yaml",
            "--kernel",
            kernel,
            "--reference-rate",
            "0.125",
            "--confidence",
            "0.99",
            "--target",
            "umount:EBUSY",
            "--out",
            o,
        ];
        for p in patches {
            args.extend(["--patches", p.as_str()]);
        }
        crashrig(&args)
    };
    let (code, stdout, stderr) = check("debian-source:6.1", &patches);
    assert_eq!(code, 1, "the culprit is bad: {stdout}\n{stderr}");
    assert!(
        stderr.contains("; bad (sequential test of 12.5% against "),
        "{stderr}"
    );
    let (code, stdout, stderr) = check("debian:6.1", &[]);
    assert_eq!(code, 0, "no deferral: good: {stdout}\n{stderr}");
    assert!(
        stderr.contains("check: 0/") && stderr.contains("; good (sequential test"),
        "{stderr}"
    );
    // Each call keeps its runs apart in --out.
    assert!(out.path().join("check").is_dir() && out.path().join("check-2").is_dir());
    assert!(!stderr.contains("Some("), "no Rust debug output: {stderr}");
}
