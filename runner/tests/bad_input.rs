//! Bad input as a new user gives it, through the real binary: every case ends with exit 2,
//! a message that says where the problem is, a short stderr, and nothing of the user's
//! touched. None of these boots QEMU (input is checked before anything starts).

use std::path::{Path, PathBuf};
use std::process::Command;

struct Tried {
    code: Option<i32>,
    stderr: String,
    stdout: String,
}

fn crashrig(home: &Path, args: &[&str]) -> Tried {
    let out = Command::new(env!("CARGO_BIN_EXE_crashrig"))
        .args(args)
        .current_dir(home)
        // A private cache: these runs must not touch the user's.
        .env("HOME", home)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("CRASHRIG_CACHE")
        .output()
        .expect("start crashrig");
    Tried {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// Runs crashrig and checks the common promises; returns stderr for case checks.
fn refused(home: &Path, args: &[&str], want: &[&str]) -> String {
    let t = crashrig(home, args);
    assert_eq!(t.code, Some(2), "{args:?}: exit {:?}\n{}", t.code, t.stderr);
    for w in want {
        assert!(t.stderr.contains(w), "{args:?}: no `{w}` in\n{}", t.stderr);
    }
    assert!(
        !t.stderr.contains("panicked"),
        "{args:?} panicked:\n{}",
        t.stderr
    );
    // One problem is a few lines, even for a 200 KB line of brackets.
    assert!(
        t.stderr.len() < 4096,
        "{args:?}: {} bytes of stderr",
        t.stderr.len()
    );
    t.stderr
}

/// A shard's results.json with one finished run of one iteration taking `duration` ms, in
/// `cell` (an unfinished run, as an interrupted shard leaves, would make a merge exit 2).
fn shard_results(duration: &str, cell: &str) -> String {
    format!(
        r#"{{"schema":1,"crashrig_version":"0","started":"t","finished":null,
        "host":{{"qemu":null,"accel":"tcg","accel_reason":""}},
        "runs":[{{"scenario":{{"name":"s","path":"s.yaml"}},
        "kernel":{{"spec":"k","version":"v","release":null,"image_sha256":""}},
        "accel":"tcg","seed":1,"started":"t","finished":"2026-11-25T10:00:00Z","dir":"r","boots":[],"setup":[],
        "error":null,"summary":{{"iterations":1,"passed":1,"failed":0,"hangs":0,"panics":0,
        "errors":0,"failure_rate":0.0,"failure_ci95":[0.0,0.0],"errno_counts":{{}},"steps":{{}},
        "findings":[]}},
        "iterations":[{{"iteration":1,"verdict":"pass","reasons":[],"steps":[],"findings":[],
        "duration_ms":{duration},"seed":1}}],"cell":{cell}}}]}}"#
    )
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `s.yaml`, a scenario of one `sync`, and `m.yaml`, a matrix of it on one kernel.
fn one_cell_matrix(home: &Path) {
    write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    write(
        home,
        "m.yaml",
        "name: m\nkernels: [debian:6.1]\nscenarios: [s.yaml]\n",
    );
}

/// A billion laughs: nine levels of nine aliases each, under an otherwise good file.
fn laughs(head: &str) -> String {
    let mut s = format!("{head}x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*x{}", i - 1); 9].join(", ");
        s.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    s
}

#[test]
fn bad_scenario_files_are_refused_with_a_location() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    // A results directory with the user's own file in it: it must survive every attempt.
    let out = home.join("out");
    std::fs::create_dir(&out).unwrap();
    let mine = write(&out, "notes.txt", "mine");
    let deep = "name: x\nsteps: ".to_string() + &"[".repeat(100_000) + &"]".repeat(100_000);
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("empty.yaml", vec![], vec!["empty.yaml:1:1: empty scenario"]),
        (
            "binary.yaml",
            b"name: t\nsteps: [\xff\xfe\x00\x01]\n".to_vec(),
            vec!["binary.yaml", "UTF-8"],
        ),
        (
            "laughs.yaml",
            laughs("name: t\nsteps: [sync]\n").into_bytes(),
            vec!["laughs.yaml:", "too large"],
        ),
        ("deep.yaml", deep.into_bytes(), vec!["deep.yaml:2:"]),
        (
            "dup.yaml",
            b"name: a\nsteps: [sync]\nname: b\n".to_vec(),
            vec!["dup.yaml:3:1: duplicate field `name`"],
        ),
        (
            "tabs.yaml",
            b"name: t\nsteps:\n\t- sync\n".to_vec(),
            vec!["tabs.yaml:3:"],
        ),
        (
            "numbers.yaml",
            b"name: t\niterations: 99999999999999999999999\nvm: { memory: 16000T, cpus: 4294967296 }\n\
              steps: [{ sleep: 1000000000h }, { umount: { retry: 90000s } }]\n"
                .to_vec(),
            vec![
                "numbers.yaml:2:13:",
                "numbers.yaml:3:15:",
                "numbers.yaml:3:29:",
                "numbers.yaml:4:",
            ],
        ),
    ];
    for (name, bytes, want) in cases {
        let path = write(home, name, bytes);
        refused(
            home,
            &[
                "run",
                path.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &want,
        );
    }
    let dir = home.join("dir.yaml");
    std::fs::create_dir(&dir).unwrap();
    refused(home, &["run", "dir.yaml"], &["dir.yaml", "directory"]);
    refused(home, &["run", "missing.yaml"], &["missing.yaml"]);
    // read until the OOM killer ended crashrig (22 GB), and a FIFO blocked it for good
    refused(
        home,
        &["run", "/dev/zero"],
        &["/dev/zero", "a character device, not a regular file"],
    );
    refused(
        home,
        &["matrix", "/dev/zero"],
        &["/dev/zero", "a character device, not a regular file"],
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn out_of_range_numbers_on_the_command_line_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let scenario = write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    let s = scenario.to_str().unwrap();
    for (args, want) in [
        (vec!["run", s, "-n", "0"], "0 is not in 1..=1000000"),
        (vec!["run", s, "-n", "4294967296"], "not in 1..=1000000"),
        (vec!["matrix", "m.yaml", "-j", "0"], "0 is not in 1..=256"),
        (vec!["matrix", "m.yaml", "-j", "1000000"], "not in 1..=256"),
        // every count a user writes has a sane bound (`--repeat 0` printed NaN, exit 0)
        (
            vec!["bench", "boot", "--repeat", "0"],
            "0 is not in 1..=100",
        ),
        (
            vec!["bench", "bisect", "--max-batch", "0"],
            "0 is not in 1..=10000",
        ),
        (
            vec!["bench", "bisect", "--max-iterations", "0"],
            "0 is not in 1..=10000000",
        ),
        (
            vec!["bench", "bisect", "--confidence", "1.5"],
            "0.5 <= confidence < 1",
        ),
        (
            vec!["bench", "bisect", "--build-cost=-1"],
            "from 0 to 1000000",
        ),
        (
            vec!["bench", "amplify-sim", "--budgets", "150,0"],
            "0 is not in 1..=10000000",
        ),
        (
            vec!["bench", "amplify-sim", "--tolerance", "2"],
            "from 0 to 1",
        ),
        (
            vec!["bench", "baseline", "--cells", "0"],
            "0 is not in 1..=10000",
        ),
        (
            vec!["bench", "baseline", "--rate", "1.5"],
            "a failure rate from 0 to 1",
        ),
        (
            vec!["bench", "baseline", "--rise-to", "NaN"],
            "a failure rate from 0 to 1",
        ),
        (
            vec!["bench", "baseline", "--runs", "0"],
            "0 is not in 1..=100000",
        ),
    ] {
        refused(home, &args, &[want]);
    }
}

/// `bisect --confidence 1` (or NaN, or 0.3) was taken, wrote a journal of it into --out and
/// only then was refused: the corrected command was then refused too, the directory "holds
/// results of another run". It is a command-line error now, and --out stays untouched.
#[test]
fn bisect_refuses_a_confidence_outside_its_domain_before_any_results() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let scenario = write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    let s = scenario.to_str().unwrap();
    let out = home.join("out");
    for c in ["1", "0.3", "NaN", "inf"] {
        refused(
            home,
            &[
                "bisect",
                s,
                "--good",
                "tree@a",
                "--bad",
                "tree@b",
                "--confidence",
                c,
                "--out",
                out.to_str().unwrap(),
            ],
            &["--confidence", "0.5 <= confidence < 1"],
        );
        assert!(!out.exists(), "--confidence {c} created {}", out.display());
    }
}

/// `git bisect run crashrig check ...` reads every exit from 1 to 127 except 125 as "bad": a
/// command line clap refuses (which exits 2 for the other commands) used to mark every commit
/// bad and name a culprit. Every one of them is 125, with clap's message kept.
#[test]
fn check_refuses_a_wrong_command_line_with_125_not_bad() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let scenario = write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    let s = scenario.to_str().unwrap();
    let k = ["--kernel", "debian:6.1"];
    for (args, want) in [
        (
            vec!["check", s, "--reference-rate", "0.95"],
            "expected a rate from 0 to 0.9",
        ),
        (
            vec!["check", s, "--confidence", "1.5"],
            "0.5 <= confidence < 1",
        ),
        (vec!["check", s, "-n", "0"], "0 is not in 1..=1000000"),
        (vec!["check", s, "-n", "2000000"], "not in 1..=1000000"),
        (vec!["check", s, "--bogus"], "--bogus"),
        (vec!["check"], "required"),
        (vec!["check", s, "--bad-rate", "0.5", "-n", "2"], "required"),
        (
            vec![
                "check",
                s,
                "--reference-rate",
                "0.1",
                "--reference",
                "debian:6.12",
            ],
            "cannot be used with",
        ),
    ] {
        let args: Vec<&str> = args.iter().copied().chain(k).collect();
        let t = crashrig(home, &args);
        assert_eq!(t.code, Some(125), "{args:?}\n{}", t.stderr);
        assert!(
            t.stderr.contains(want),
            "{args:?}: no `{want}` in\n{}",
            t.stderr
        );
        assert!(
            t.stderr
                .contains("exit 125, so that `git bisect run` skips the commit"),
            "{args:?}\n{}",
            t.stderr
        );
    }
    // The other commands keep exit 2 for a wrong command line; help is not an error.
    refused(home, &["run", s, "--bogus"], &["--bogus"]);
    assert_eq!(crashrig(home, &["check", "--help"]).code, Some(0));
}

#[test]
fn a_target_the_scenario_cannot_show_is_refused_before_any_build() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let scenario = write(
        home,
        "s.yaml",
        "name: t\nsteps:\n  - sync\n  - run: { id: probe, command: \"true\" }\n",
    );
    let s = scenario.to_str().unwrap();
    let git = "linux@v1";
    for (args, want) in [
        (
            vec![
                "bisect",
                s,
                "--good",
                git,
                "--bad",
                "linux@v2",
                "--target",
                "umount:EBUSY",
            ],
            "scenario `t` has no step `umount`; its step ids are sync#1, probe",
        ),
        (
            vec![
                "bisect",
                s,
                "--kernel",
                "debian-source:6.1",
                "--patches",
                "p",
                "--target",
                "probe:EBUZY",
            ],
            "`EBUZY` is no errno name",
        ),
        (
            vec!["amplify", s, "--target", "nosuch"],
            "has no step `nosuch`",
        ),
    ] {
        refused(home, &args, &[want]);
    }
    // Nothing was built or cached for it.
    assert!(
        !home.join("cache").exists()
            || std::fs::read_dir(home.join("cache/crashrig/builds")).is_err()
    );
}

#[test]
fn bad_matrix_files_are_refused_with_a_location() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    let head = "name: m\nkernels: [debian:6.1]\nscenarios: [s.yaml]\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "empty.yaml",
            String::new(),
            vec!["empty.yaml:1:1: empty matrix"],
        ),
        (
            "laughs.yaml",
            laughs(&format!("{head}parameters:\n  a: [1]\n")),
            vec!["laughs.yaml:"],
        ),
        (
            "dup.yaml",
            format!("{head}name: again\n"),
            vec!["dup.yaml:4:1: duplicate field `name`"],
        ),
        (
            "iterations.yaml",
            format!("{head}iterations: 2000000\n"),
            vec!["iterations.yaml:4:13:", "at most 1000000"],
        ),
        (
            "huge.yaml",
            format!("{head}iterations: 99999999999999999999\n"),
            vec!["huge.yaml:4:13:"],
        ),
        (
            "deep.yaml",
            format!(
                "{head}parameters: {}{}",
                "[".repeat(50_000),
                "]".repeat(50_000)
            ),
            vec!["deep.yaml:4:"],
        ),
    ];
    for (name, text, want) in cases {
        let path = write(home, name, text);
        refused(home, &["matrix", path.to_str().unwrap()], &want);
    }
}

/// A scenario that does not fit one parameter's value fails the same way in every cell of
/// that value: the problem was printed once per setting of the other parameters (2900
/// blocks for 29 filesystem types). Each problem is printed once, with how many settings
/// show it.
#[test]
fn a_matrix_scenario_problem_is_reported_once_not_per_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    let m = write(
        home,
        "m.yaml",
        "name: m\nkernels: [debian:6.1]\nscenarios: [s.yaml]\n\
         parameters: { filesystem: [xfs, ext4], cpus: [1, 2, 3], memory: [1G, 2G] }\n",
    );
    let stderr = refused(
        home,
        &["matrix", m.to_str().unwrap()],
        &[
            "cells with cpus=1,filesystem=xfs,memory=1G (and 5 other settings): ",
            "s.yaml:1:1: parameter `filesystem` = `xfs` sets the filesystem type",
            "(2 problems above)",
        ],
    );
    assert_eq!(
        stderr.matches("declares no `filesystem`").count(),
        2,
        "{stderr}"
    );
}

/// `--kconfig my.cfg` names kconfigs/my.cfg.config; with ./my.cfg right there the error
/// only said "No such file or directory". It now says how to name the file.
#[test]
fn a_kconfig_file_named_like_a_fragment_name_gets_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let tree = home.join("tree");
    std::fs::create_dir(&tree).unwrap();
    write(&tree, "Makefile", "all:\n");
    for args in [
        &["init", "-q"][..],
        &["add", "Makefile"],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "t",
        ],
    ] {
        let ok = Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }
    write(home, "my.cfg", "CONFIG_XFS_FS=y\n");
    refused(
        home,
        &["build", "tree", "--kconfig", "my.cfg"],
        &[
            "read kconfig fragment `my.cfg`",
            "no named fragment `my.cfg`; for the file `my.cfg` in the current directory \
             write `./my.cfg`",
        ],
    );
}

/// `matrix --out DIR` with the user's own `DIR/summary.md` (and no results) replaced it with
/// the matrix's summary, exit 0. The directory is refused and the file kept.
#[test]
fn matrix_out_with_a_users_summary_is_refused_and_the_file_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    one_cell_matrix(home);
    let out = home.join("out");
    std::fs::create_dir(&out).unwrap();
    let mine = write(&out, "summary.md", "the user's notes");
    // an empty shard: it writes its reports at once, without a kernel
    refused(
        home,
        &["matrix", "m.yaml", "--partition", "2/2", "--out", "out"],
        &["it holds `summary.md`, which crashrig writes there and would replace"],
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "the user's notes");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn report_merge_refuses_damaged_results_and_keeps_its_out_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let shard = home.join("shard");
    std::fs::create_dir(&shard).unwrap();
    let out = home.join("merged");
    std::fs::create_dir(&out).unwrap();
    let mine = write(&out, "results.json", "the user's own file");
    let cell = r#"{"id":"k/s","matrix":"m","digest":"d","index":0,"total":4294967295,"kernel":"k","scenario":"s"}"#;
    let run = shard_results;
    for (results, want) in [
        (run("1e300", cell), "duration_ms is 1e300"),
        (run("5", cell), "cell.total is 4294967295"),
        (
            run("5", &cell.replace("4294967295", "2")).replace("\"passed\":1", "\"passed\":7"),
            "passed 7",
        ),
        ("{".to_string(), "parse"),
        (String::new(), "parse"),
    ] {
        write(&shard, "results.json", results);
        refused(
            home,
            &["report", "merge", "shard", "--out", "merged"],
            &["shard/results.json", want],
        );
        assert_eq!(
            std::fs::read_to_string(&mine).unwrap(),
            "the user's own file"
        );
    }
    // A good shard merged into itself would replace its own results.
    let good = run("5", &cell.replace("4294967295", "1"));
    write(&shard, "results.json", &good);
    refused(
        home,
        &["report", "merge", "shard", "--out", "shard"],
        &["it is one of the shards"],
    );
    assert_eq!(
        std::fs::read_to_string(shard.join("results.json")).unwrap(),
        good
    );
}

/// Probe 12: `run s.yaml --kernel /nonexistent` exited 2 and left an empty
/// `crashrig-results/<date-time>` behind. A command that fails before anything ran creates
/// nothing: neither the default results directory (nor its parent) nor a new `--out`.
#[test]
fn a_run_refused_before_it_starts_leaves_no_results_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    refused(
        home,
        &["run", "s.yaml", "--kernel", "/nonexistent"],
        &["/nonexistent"],
    );
    assert!(!home.join("crashrig-results").exists());
    refused(
        home,
        &[
            "run",
            "s.yaml",
            "--kernel",
            "/nonexistent",
            "--out",
            "new/out",
        ],
        &["/nonexistent"],
    );
    assert!(!home.join("new").exists());
    // A directory the user made is theirs: it stays, empty or not.
    std::fs::create_dir(home.join("mine")).unwrap();
    refused(
        home,
        &["run", "s.yaml", "--kernel", "/nonexistent", "--out", "mine"],
        &["/nonexistent"],
    );
    assert!(home.join("mine").is_dir());
}

/// Two commands with one `--out`: the second used to be accepted, and results.json kept only
/// one run's results. Now whichever comes second is refused while the first holds the
/// directory, whatever the command.
#[test]
fn a_results_directory_another_crashrig_holds_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    one_cell_matrix(home);
    let out = home.join("same");
    std::fs::create_dir(&out).unwrap();
    let mine = write(&out, "notes.txt", "the first run's file");
    // The first run, as the kernel sees it: a process holding flock(2) on the directory.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(&out)
        .args(["sleep", "60"])
        .spawn()
        .expect("flock(1) from util-linux");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let f = std::fs::File::open(&out).unwrap();
        if f.try_lock().is_err() {
            break;
        }
        f.unlock().unwrap();
        assert!(std::time::Instant::now() < deadline, "flock never locked");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let want = [
        "same as the results directory: another crashrig is writing to it",
        "give another --out",
    ];
    refused(home, &["run", "s.yaml", "--out", "same"], &want);
    refused(home, &["run", "s.yaml", "--out", "same", "--resume"], &want);
    refused(home, &["matrix", "m.yaml", "--out", "same"], &want);
    std::fs::create_dir(home.join("shard")).unwrap();
    let cell =
        r#"{"id":"k/s","matrix":"m","digest":"d","index":0,"total":1,"kernel":"k","scenario":"s"}"#;
    write(
        &home.join("shard"),
        "results.json",
        shard_results("5", cell),
    );
    refused(home, &["report", "merge", "shard", "--out", "same"], &want);
    assert_eq!(
        std::fs::read_to_string(&mine).unwrap(),
        "the first run's file"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    // kill -9 of the holder leaves no stale lock: the directory is free at once.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let t = crashrig(home, &["report", "merge", "shard", "--out", "same"]);
    assert_eq!(t.code, Some(0), "{}", t.stderr);
}

/// `check` is `git bisect run`'s helper, so its refusals are "cannot test" (125), but a
/// --bad-rate that is not above --reference-rate is refused before a kernel is resolved or
/// built: it used to fail only after building `.` (or measuring the reference).
#[test]
fn check_refuses_a_bad_rate_below_the_reference_before_any_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    for kernel in [&[][..], &["--kernel", "/nonexistent/linux"]] {
        let mut args = vec![
            "check",
            "s.yaml",
            "--reference-rate",
            "0.3",
            "--bad-rate",
            "0.2",
        ];
        args.extend(kernel);
        let t = crashrig(home, &args);
        assert_eq!(t.code, Some(125), "{args:?}\n{}", t.stderr);
        assert_eq!(
            t.stderr.trim_end(),
            "crashrig: check: cannot test: set up the rate test: accept bisection setting \
             `bad-rate` = 0.2: expected a rate above the reference rate, at most 1"
        );
    }
}

/// A shard past the end of a small matrix (`--partition 2/2` of one cell) used to exit 2 with
/// "every cell has finished" and leave no results, so `report merge` failed too. It is valid:
/// exit 0, no cell run, a result set that merges (and that names its matrix: merged alone,
/// it is no result).
#[test]
fn an_empty_matrix_shard_passes_and_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    one_cell_matrix(home);
    let args = ["matrix", "m.yaml", "-n", "1", "--partition", "2/2", "--out"];
    let t = crashrig(home, &[&args[..], &["sh2"]].concat());
    assert_eq!(t.code, Some(0), "{}", t.stderr);
    assert!(
        t.stderr.contains(
            "shard 2/2 of this matrix has no cells (the matrix has 1 cell); nothing to run"
        ),
        "{}",
        t.stderr
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("sh2/results.json")).unwrap())
            .unwrap();
    assert_eq!(results["runs"], serde_json::json!([]));
    for f in ["junit.xml", "junit-cells.xml", "summary.md"] {
        assert!(home.join("sh2").join(f).exists(), "{f}");
    }
    // The empty shard names its matrix, so a merge can tell whose shard it is.
    assert_eq!(results["matrix"]["name"], "m");
    assert_eq!(results["matrix"]["cells"], 1);
    let digest = results["matrix"]["digest"].as_str().unwrap().to_string();
    // Merged alone it is no result: the shard that ran the cell is missing.
    let t = crashrig(home, &["report", "merge", "sh2", "--out", "alone"]);
    assert_eq!(t.code, Some(2), "{}", t.stderr);
    assert!(
        t.stderr.contains("no shard holds a run of a cell"),
        "{}",
        t.stderr
    );
    // Shard 1 as a run of the one cell writes it.
    std::fs::create_dir(home.join("sh1")).unwrap();
    let cell = format!(
        r#"{{"id":"k/s","matrix":"m","digest":"{digest}","index":0,"total":1,"kernel":"k","scenario":"s"}}"#
    );
    write(&home.join("sh1"), "results.json", shard_results("5", &cell));
    for order in [["sh1", "sh2"], ["sh2", "sh1"]] {
        let out = format!("merged-{}", order[0]);
        let t = crashrig(
            home,
            &["report", "merge", order[0], order[1], "--out", &out],
        );
        assert_eq!(t.code, Some(0), "{order:?}: {}", t.stderr);
        let merged: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(home.join(&out).join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(merged["runs"].as_array().unwrap().len(), 1);
        // The host is the shard's that ran the cell.
        assert_eq!(merged["host"]["accel"], "tcg");
    }
}

/// Baseline problems used to surface after every cell had run (hours of CI): a missing or
/// non-JSON baseline, a `--write-baseline` into a missing directory, and `--write-baseline`
/// silently replacing a user's file. All are refused before anything runs or is created; the
/// matrix file's own `baseline` is reported at its line.
#[test]
fn matrix_baseline_problems_are_refused_before_any_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    write(home, "s.yaml", "name: t\nsteps: [sync]\n");
    // Not a kernel: were the cells reached, the run would fail on it, not on the baseline.
    write(home, "notakernel", "x");
    let head = "name: m\nkernels: [notakernel]\nscenarios: [s.yaml]\n";
    write(home, "ok.yaml", head);
    write(
        home,
        "missing.yaml",
        format!("{head}baseline: /nonexistent.json\n"),
    );
    write(home, "passwd.yaml", format!("{head}baseline: notes.txt\n"));
    let notes = write(home, "notes.txt", "the user's notes");
    write(home, "good.json", r#"{"schema": 1, "cells": []}"#);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["missing.yaml"],
            vec![
                "missing.yaml:4:11: baseline: read /nonexistent.json",
                "4 | baseline: /nonexistent.json",
            ],
        ),
        (
            vec!["passwd.yaml"],
            vec!["passwd.yaml:4:11: baseline: parse ", "notes.txt"],
        ),
        (
            vec!["ok.yaml", "--baseline", "/nonexistent.json"],
            vec!["read /nonexistent.json"],
        ),
        (
            vec!["ok.yaml", "--write-baseline", "/nonexistent/dir/b.json"],
            vec!["write a baseline to /nonexistent/dir/b.json: the directory /nonexistent/dir does not exist"],
        ),
        (
            vec!["ok.yaml", "--write-baseline", "notes.txt"],
            vec!["write a baseline to notes.txt: it holds a file that is not a crashrig baseline"],
        ),
        // read until the OOM killer ended crashrig (22 GB)
        (
            vec!["ok.yaml", "--baseline", "/dev/zero"],
            vec!["read /dev/zero", "a character device, not a regular file"],
        ),
        // --baseline beats the matrix's: a good one given, the missing one is not read.
        (
            vec!["missing.yaml", "--baseline", "good.json", "--write-baseline", "notes.txt"],
            vec!["write a baseline to notes.txt"],
        ),
    ];
    for (args, want) in cases {
        let args = [&["matrix"][..], &args].concat();
        let stderr = refused(home, &args, &want);
        assert!(!stderr.contains("notakernel"), "{args:?}: {stderr}");
        assert!(!home.join("crashrig-results").exists(), "{args:?}");
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "the user's notes");
    }
}

/// results.json of one run of `scenario` (recorded path `path`) on `kernel`, its iteration
/// `iteration` failed, files in `dir`, with `cell` (JSON) and `setting` (JSON).
fn one_run(path: &str, kernel: &str, dir: &str, cell: &str, setting: &str) -> String {
    shard_results("5", cell)
        .replace(r#""path":"s.yaml""#, &format!(r#""path":{path:?}"#))
        .replace(r#""spec":"k""#, &format!(r#""spec":{kernel:?}"#))
        .replace(r#""dir":"r""#, &format!(r#""dir":{dir:?}"#))
        .replace(r#""verdict":"pass""#, r#""verdict":"fail""#)
        .replace(r#""cell":"#, &format!(r#""setting":{setting},"cell":"#))
}

/// `repro --param` reloads the scenario file: it used to run the file as edited since the
/// run (and with the file's iteration count, not the matrix's), and to find a relative path
/// only from the run's old directory. Now the file must still give the recorded copy, and an
/// old relative path is also looked up next to the results directory.
#[test]
fn repro_with_param_refuses_a_scenario_file_edited_since_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let project = home.join("project");
    std::fs::create_dir(&project).unwrap();
    let source = "name: coin\nparameters:\n  pct: { default: 0, values: [0, 50, 100] }\n\
                  iterations: 5\nsteps:\n  - run: { id: coin, command: 'test ${pct} -ge 100' }\n";
    let scenario = write(&project, "coin.yaml", source);
    // The run's copy, as the engine writes it: a matrix cell with pct=100 and iterations: 4.
    let setting = [("pct".to_string(), "100".to_string())]
        .into_iter()
        .collect();
    let mut ran = crashrig::scenario::load_with(&scenario, &setting)
        .unwrap()
        .scenario;
    ran.iterations = 4;
    let results = project.join("s1");
    std::fs::create_dir_all(results.join("runs/01-coin")).unwrap();
    write(
        &results.join("runs/01-coin"),
        "scenario.yaml",
        serde_json::to_string_pretty(&ran).unwrap() + "\n",
    );
    let kernel = home.join("no-such-kernel/bzImage");
    write(
        &results,
        "results.json",
        one_run(
            "coin.yaml",
            kernel.to_str().unwrap(),
            "runs/01-coin",
            "null",
            r#"{"pct":"100"}"#,
        ),
    );
    let args = [
        "repro",
        "project/s1",
        "--iteration",
        "1",
        "--param",
        "pct=50",
    ];
    // The file is as it ran: found next to the results from another directory, accepted,
    // and the replay goes on to the kernel (which does not exist here).
    let t = crashrig(home, &args);
    assert_eq!(t.code, Some(2), "{}", t.stderr);
    assert!(t.stderr.contains("no-such-kernel"), "{}", t.stderr);
    assert!(!t.stderr.contains("changed since"), "{}", t.stderr);
    // Edited since the run: refused, naming the file, before any kernel.
    write(&project, "coin.yaml", source.replace("-ge", "-gt"));
    let stderr = refused(home, &args, &["changed since the run", "coin.yaml"]);
    assert!(!stderr.contains("no-such-kernel"), "{stderr}");
    // Without --param the recorded copy is replayed, whatever the file says now.
    let t = crashrig(home, &args[..4]);
    assert!(t.stderr.contains("no-such-kernel"), "{}", t.stderr);
    // A file that is gone is named with where it was looked for.
    std::fs::remove_file(&scenario).unwrap();
    refused(home, &args, &["`coin.yaml` of run 1 is found neither"]);
}

/// A merged results directory has no run directories (they stay in the shards): repro used
/// to fail with a bare "No such file"; it names the cell and how to find its shard.
#[test]
fn repro_on_a_merged_directory_names_the_cells_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let merged = home.join("merged");
    std::fs::create_dir(&merged).unwrap();
    let cell = r#"{"id":"debian-6.1/coin","matrix":"m","digest":"d","index":3,"total":4,
        "kernel":"debian-6.1","scenario":"coin"}"#;
    write(
        &merged,
        "results.json",
        one_run(
            "coin.yaml",
            "debian:6.1",
            "runs/04-coin-debian_6.1",
            cell,
            "{}",
        ),
    );
    refused(
        home,
        &["repro", "merged", "--iteration", "1"],
        &[
            "merged results directory",
            "crashrig repro SHARD --iteration 1",
            "cell debian-6.1/coin (cell 3 of 4, counted from 0: with `--partition M/N` it is \
             shard 3 mod N + 1)",
        ],
    );
}

/// `doctor` said "everything crashrig needs is installed" with CRASHRIG_GUEST_HELPER naming a
/// missing file, which every run then refuses.
#[test]
fn doctor_checks_the_guest_helper() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crashrig"))
        .arg("doctor")
        .current_dir(tmp.path())
        .env("HOME", tmp.path())
        .env("XDG_CACHE_HOME", tmp.path().join("cache"))
        .env_remove("CRASHRIG_CACHE")
        .env("CRASHRIG_GUEST_HELPER", tmp.path().join("nonexistent"))
        .output()
        .expect("start crashrig");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("MISSING  CRASHRIG_GUEST_HELPER=") && stdout.contains("is not a file"),
        "{stdout}"
    );
    assert!(!stdout.contains("everything crashrig needs"), "{stdout}");
}

/// amplify found an existing `OUT/<scenario>.amplified.yaml` only after the whole search,
/// then exited 2 with the search's outcome lost. It is refused before any kernel, and kept.
#[test]
fn amplify_refuses_an_amplified_scenario_in_out_before_the_search() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    write(
        home,
        "coin.yaml",
        "name: coin\nparameters:\n  pct: { default: 0, values: [0, 100] }\n\
         steps:\n  - run: { id: coin, command: 'test ${pct} -ge 100' }\n",
    );
    let out = home.join("o");
    std::fs::create_dir(&out).unwrap();
    let mine = write(&out, "coin.amplified.yaml", "# my hand-tuned version\n");
    let stderr = refused(
        home,
        &[
            "amplify",
            "coin.yaml",
            "--kernel",
            "/nonexistent/bzImage",
            "--out",
            "o",
        ],
        &[
            "o/coin.amplified.yaml: that file exists and is kept",
            "before the search",
        ],
    );
    assert!(!stderr.contains("nonexistent"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(mine).unwrap(),
        "# my hand-tuned version\n"
    );
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

/// `matrix --help` offered `--kernel <SPEC> ... Default: debian:6.1`, which a matrix refuses
/// (its kernels are in the matrix file).
#[test]
fn matrix_help_does_not_offer_the_kernel_it_refuses() {
    let out = Command::new(env!("CARGO_BIN_EXE_crashrig"))
        .args(["matrix", "--help"])
        .output()
        .expect("start crashrig");
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(help.contains("--partition"), "{help}");
    assert!(!help.contains("--kernel"), "{help}");
}

/// `crashrig lint` checks what `run` and `matrix` would check before booting, with no kernel,
/// image or VM: the repository's own scenarios and matrices pass; a bad scenario, a matrix
/// cell its scenario does not fit, and a missing file are each named, and it exits 2.
#[test]
fn lint_checks_files_without_running_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ours: Vec<String> = ["tests/seed-kill-umount.yaml", "tests/matrix/seed.yaml"]
        .iter()
        .map(|p| repo.join(p).display().to_string())
        .collect();
    let args: Vec<&str> = std::iter::once("lint")
        .chain(ours.iter().map(String::as_str))
        .collect();
    let t = crashrig(home, &args);
    assert_eq!(t.code, Some(0), "{}\n{}", t.stdout, t.stderr);
    assert!(
        t.stdout
            .contains("seed-kill-umount.yaml: ok, scenario `seed-kill-umount`")
            && t.stdout
                .contains("seed.yaml: ok, matrix `seed-6.1-vs-6.12`: 4 cells"),
        "{}",
        t.stdout
    );
    write(home, "bad.yaml", "name: t\nsteps:\n  - sleep: often\n");
    write(
        home,
        "p.yaml",
        "name: p\nparameters:\n  n: { default: 1, values: [1, 2] }\nvm:\n  cpus: ${n}\n\
         steps: [sync]\n",
    );
    write(
        home,
        "m.yaml",
        "name: m\nkernels: [debian:6.1]\nscenarios: [p.yaml]\nparameters: { n: [1, 0] }\n",
    );
    let t = crashrig(home, &["lint", "bad.yaml", "m.yaml", "gone.yaml", &ours[0]]);
    assert_eq!(t.code, Some(2), "{}\n{}", t.stdout, t.stderr);
    assert!(
        t.stdout
            .contains("bad.yaml: not a valid scenario:\nbad.yaml:3:"),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout
            .contains("m.yaml: not a valid matrix:\ncells with n=0: p.yaml:5:9:"),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout.contains("gone.yaml: not a valid scenario:"),
        "{}",
        t.stdout
    );
    assert!(
        t.stdout.contains("seed-kill-umount.yaml: ok"),
        "{}",
        t.stdout
    );
    assert!(
        t.stderr.contains("crashrig: 3 of 4 files are not valid"),
        "{}",
        t.stderr
    );
    // Nothing was started or cached.
    assert!(!home.join("cache").exists());
    refused(home, &["lint"], &["FILE"]);
}
