//! Fault injection with real QEMU: what a killed crashrig, a frozen or dead QEMU, a full disk,
//! a loaded host and a curious guest do to a run. Each test says which fault it injects and
//! what crashrig must do; docs/reliability.md lists them with the figures they measured
//! (printed by these tests with `--nocapture`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{crashrig, results, workspace};
use serde_json::Value;

/// How long crashrig's children may outlive it (the issue's bound).
const DIE_TOGETHER: Duration = Duration::from_secs(10);

/// A scenario file in `dir` (tests write the ones that need a value known only at run time).
fn scenario(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// crashrig in the background, output to files in `dir`.
fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crashrig"));
    cmd.args(args)
        .current_dir(workspace())
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("stdout")).unwrap())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn output(dir: &Path) -> String {
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"))
}

/// (pid, ppid, state, command name) of every process.
fn processes() -> Vec<(u32, u32, char, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let state = rest[0].chars().next().unwrap_or('?');
        let ppid = rest[1].parse().unwrap_or(0);
        out.push((pid, ppid, state, comm));
    }
    out
}

/// Every live descendant of `root`: (pid, command name).
fn descendants(root: u32) -> Vec<(u32, String)> {
    let all = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    all.into_iter()
        .filter(|p| p.0 != root && found.contains(&p.0) && p.2 != 'Z')
        .map(|p| (p.0, p.3))
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid this test found.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Polls `f` every 100 ms until it gives a value or `limit` passes.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for crashrig to end; one that is still running after `limit` is killed and the
/// test fails (a run stuck on a fault must not hang the suite).
fn finish_within(child: &mut Child, limit: Duration, dir: &Path) -> std::process::ExitStatus {
    let t = Instant::now();
    let status = wait_for(limit, || child.try_wait().unwrap());
    match status {
        Some(s) => {
            eprintln!(
                "figure: the run ended {:.0} s after the fault",
                t.elapsed().as_secs_f64()
            );
            s
        }
        None => {
            let pid = child.id();
            for (p, _) in descendants(pid) {
                signal(p, libc::SIGKILL);
            }
            signal(pid, libc::SIGKILL);
            let _ = child.wait();
            panic!(
                "crashrig still running {limit:?} after the fault\n{}",
                output(dir)
            );
        }
    }
}

fn read_results(dir: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).ok()?).ok()
}

fn iterations(r: &Value) -> Vec<Value> {
    r["runs"][0]["iterations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Kills crashrig with SIGKILL and waits until every process it started is gone; returns
/// how long that took, or the survivors (killed afterwards, so a failing test leaks nothing).
fn kill_9_and_watch(child: &mut Child) -> Result<Duration, Vec<(u32, String)>> {
    let pid = child.id();
    let started = descendants(pid);
    assert!(!started.is_empty(), "crashrig had started nothing yet");
    signal(pid, libc::SIGKILL);
    child.wait().unwrap();
    let t = Instant::now();
    let gone = wait_for(DIE_TOGETHER, || {
        started.iter().all(|(p, _)| !alive(*p)).then_some(())
    });
    match gone {
        Some(()) => Ok(t.elapsed()),
        None => {
            let survivors: Vec<_> = started.into_iter().filter(|(p, _)| alive(*p)).collect();
            for (p, _) in &survivors {
                signal(*p, libc::SIGKILL);
            }
            Err(survivors)
        }
    }
}

/// The scratch-disk directories `pid` has files open in.
fn scratch_dirs(pid: u32) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|t| t.to_string_lossy().contains("crashrig-disks-"))
                .filter_map(|t| t.parent().map(Path::to_path_buf))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// One QMP command on a test monitor socket (`CRASHRIG_TEST_QMP_DIR`).
fn qmp(socket: &Path, command: &str) -> Value {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap(); // greeting
    let mut answer = |cmd: &str| -> Value {
        writeln!(writer, "{{\"execute\": \"{cmd}\"}}").unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("return").is_some() || v.get("error").is_some() {
                return v;
            }
        }
    };
    answer("qmp_capabilities");
    answer(command)
}

/// The newest test monitor socket in `dir` (the VM booted last).
fn newest_monitor(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .max_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.strip_prefix("qmp-"))
                .and_then(|n| n.parse::<u32>().ok())
        })
}

/// A scenario whose iterations take a few seconds in the guest (so a fault lands inside one),
/// with a short iteration timeout (so a hang is seen soon: no step's own timeout is longer).
/// Its middle step says on the console that it began ([`MIDDLE`]), so a test can aim at it
/// instead of guessing how long the guest takes to get there.
const SLOW_STEPS: &str = "name: slow\n\
description: a sleep in the guest between two writes, for faults in mid-iteration\n\
iteration-timeout: 40s\n\
iterations: 3\n\
steps:\n  \
  - run: { id: before, timeout: 20s, command: \"echo before > /tmp/f\" }\n  \
  - run: { id: middle, timeout: 20s, command: \"echo crashrig-test-middle > /dev/console; sleep 8\" }\n  \
  - run: { id: after, timeout: 20s, command: \"echo after >> /tmp/f\" }\n";

/// What [`SLOW_STEPS`]' middle step writes to the console as it begins.
const MIDDLE: &str = "crashrig-test-middle";

/// Waits until the guest of the run writing into `out` has begun iteration `n`'s middle step
/// (the console logs hold [`MIDDLE`] `n` times), then 1 s more: the fault lands with about
/// 7 s of the step's 8 left, however slow the host is.
fn in_middle_step(out: &Path, n: usize, dir: &Path) {
    let seen = || -> usize {
        let Ok(runs) = std::fs::read_dir(out.join("runs")) else {
            return 0;
        };
        runs.filter_map(Result::ok)
            .filter_map(|run| std::fs::read_dir(run.path()).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|f| f.file_name().to_string_lossy().starts_with("console-"))
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .map(|text| text.matches(MIDDLE).count())
            .sum()
    };
    wait_for(Duration::from_secs(600), || (seen() >= n).then_some(()))
        .unwrap_or_else(|| panic!("iteration {n}'s middle step never began\n{}", output(dir)));
    std::thread::sleep(Duration::from_secs(1));
}

#[test]
fn guest_cannot_reach_a_host_loopback_port() {
    // A service only the host should see, on 127.0.0.1; QEMU's user network maps it to
    // 10.0.2.2 unless the network is restricted.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = scenario(
        tmp.path(),
        "probe",
        &format!(
            "name: net-probe\n\
             description: the guest tries the host's loopback through the user network\n\
             iterations: 1\n\
             steps:\n  \
               - run: {{ id: probe, exit: 3, command: \"if echo probe | nc -w 5 10.0.2.2 {port}; then exit 0; else exit 3; fi\" }}\n"
        ),
    );
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = crashrig(&["run", &path, "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The probe ran and nc failed to connect (exit 3 is the probe's "could not connect")...
    let r = results(&out);
    let steps = r["runs"][0]["iterations"][0]["steps"].as_array().unwrap();
    let probe = steps.iter().find(|s| s["id"] == "probe").unwrap();
    assert_eq!(probe["exit_status"], 3, "{probe}");
    // ...and nothing reached the host.
    let mut accepted = Vec::new();
    while let Ok((mut conn, peer)) = listener.accept() {
        let mut text = String::new();
        conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = conn.read_to_string(&mut text);
        accepted.push(format!("{peer}: {text:?}"));
    }
    assert!(
        accepted.is_empty(),
        "the guest reached the host: {accepted:?}"
    );
}

/// What [`start_and_kill_9`] saw: iterations recorded at the kill, the run's scratch
/// directories, and whether its children were all gone within 10 s.
type Killed = (
    Vec<Value>,
    Vec<PathBuf>,
    Result<Duration, Vec<(u32, String)>>,
);

/// Starts a 12-iteration smoke run in `out` and kills it (SIGKILL) once an iteration is
/// recorded; returns the iterations recorded at the kill, the scratch directories the run had
/// open, and how its children fared (Ok: all gone within 10 s).
fn start_and_kill_9(dir: &Path, args: &[&str]) -> Killed {
    let out = PathBuf::from(args[args.len() - 1]);
    let mut child = spawn(dir, args, &[]);
    let pid = child.id();
    wait_for(Duration::from_secs(600), || {
        read_results(&out).filter(|r| !iterations(r).is_empty())
    })
    .unwrap_or_else(|| panic!("no iteration finished\n{}", output(dir)));
    let procs = descendants(pid);
    assert!(
        procs.iter().any(|(_, c)| c.starts_with("qemu-system")),
        "{procs:?}"
    );
    let disks = scratch_dirs(pid);
    assert!(!disks.is_empty(), "the run's scratch disks are open");
    let kept = iterations(&read_results(&out).unwrap());
    let gone = kill_9_and_watch(&mut child);
    (kept, disks, gone)
}

fn smoke_args(out: &Path) -> Vec<String> {
    [
        "run",
        "tests/smoke.yaml",
        "-n",
        "12",
        "--seed",
        "7",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.to_str().unwrap().to_string()])
    .collect()
}

#[test]
fn kill_9_in_mid_iteration_leaves_no_qemu_and_no_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let args = smoke_args(&tmp.path().join("out"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, disks, gone) = start_and_kill_9(tmp.path(), &args);
    match gone {
        Ok(t) => eprintln!("figure: after kill -9 in mid-iteration, every child gone in {t:?}"),
        Err(left) => panic!("still running {DIE_TOGETHER:?} after kill -9: {left:?}"),
    }
    // No disk data left: the files were unlinked, and their last holder is gone.
    for dir in &disks {
        let images: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            images
                .iter()
                .all(|n| !n.to_string_lossy().ends_with(".img")),
            "{}: {images:?}",
            dir.display()
        );
    }
}

#[test]
fn resume_after_kill_9_keeps_every_finished_iteration() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let args = smoke_args(&out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Survivors, if any (the test above fails then), are killed by start_and_kill_9.
    let (kept, disks, _) = start_and_kill_9(tmp.path(), &args);
    // Without --resume the directory is not reused.
    let (code, _, stderr) = crashrig(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("give --resume"), "{stderr}");
    let mut resume = args.clone();
    resume.push("--resume");
    let (code, stdout, stderr) = crashrig(&resume);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let after = results(&out);
    let its = iterations(&after);
    let numbers: Vec<u64> = its
        .iter()
        .map(|i| i["iteration"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=12).collect::<Vec<u64>>(), "{after}");
    assert_eq!(
        &its[..kept.len()],
        &kept[..],
        "the iterations finished before the kill are kept as they were"
    );
    eprintln!(
        "figure: resume after kill -9 kept {} finished iterations and ran {}",
        kept.len(),
        12 - kept.len()
    );
    assert_eq!(after["runs"].as_array().unwrap().len(), 1);
    assert_eq!(after["runs"][0]["seed"], 7);
    assert!(after["runs"][0]["finished"].is_string());
    // The killed run's scratch directories were swept (by this resume or another run).
    for dir in &disks {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// Whether `pid` is still there in any state. A zombie counts: once crashrig has exited,
/// a QEMU it did not reap belongs to init, which reaps it when it gets to it (seconds later on
/// a loaded host), and while its leader is a zombie its other threads may still be tearing
/// down its memory (`ps` shows `Zl`).
fn still_there(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A `run` of the slow scenario in `dir`, inside its second iteration's middle step: the crashrig
/// process, its results directory and the QEMUs it runs (at least one).
fn slow_run_in_iteration_2(dir: &Path) -> (Child, PathBuf, Vec<u32>) {
    let path = scenario(dir, "slow", SLOW_STEPS);
    let out = dir.join("out");
    let child = spawn(dir, &["run", &path, "--out", out.to_str().unwrap()], &[]);
    in_middle_step(&out, 2, dir);
    let qemus: Vec<u32> = descendants(child.id())
        .into_iter()
        .filter(|(_, c)| c.starts_with("qemu-system"))
        .map(|(p, _)| p)
        .collect();
    assert!(!qemus.is_empty(), "a QEMU runs iteration 2");
    (child, out, qemus)
}

/// Ctrl-C or SIGTERM (`sig`) in mid-iteration: crashrig exits 130 only after every QEMU it
/// started is gone and reaped, so a script's next command never finds one left re-parented
/// to init (F8: QEMU outlived crashrig by about 2 s).
fn interrupt_in_mid_iteration_leaves_no_qemu_at_exit(sig: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, out, qemus) = slow_run_in_iteration_2(tmp.path());
    let pid = child.id();
    signal(pid, sig);
    // Looked at the moment crashrig's exit is seen (polled every 5 ms).
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!(
                "crashrig still running 60 s after the signal\n{}",
                output(tmp.path())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let left: Vec<u32> = qemus.iter().copied().filter(|&q| still_there(q)).collect();
    for &q in &left {
        signal(q, libc::SIGKILL);
    }
    assert_eq!(
        left,
        Vec::<u32>::new(),
        "QEMU still there as crashrig exited"
    );
    assert_eq!(status.code(), Some(130), "{}", output(tmp.path()));
    assert_eq!(
        iterations(&results(&out)).len(),
        1,
        "the finished iteration is kept"
    );
}

#[test]
fn ctrl_c_in_mid_iteration_leaves_no_qemu_at_exit() {
    interrupt_in_mid_iteration_leaves_no_qemu_at_exit(libc::SIGINT);
}

#[test]
fn sigterm_in_mid_iteration_leaves_no_qemu_at_exit() {
    interrupt_in_mid_iteration_leaves_no_qemu_at_exit(libc::SIGTERM);
}

/// A matrix stopped by SIGTERM in mid-cell (a CI job's timeout) still writes summary.md and
/// the JUnit files of what results.json holds, the cut cell marked unfinished, and writes no
/// baseline: before, it left only results.json, and a CI job had no report at all.
#[test]
fn an_interrupted_matrix_still_writes_its_reports_and_no_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = scenario(tmp.path(), "slow", SLOW_STEPS);
    let matrix = tmp.path().join("cut.yaml");
    std::fs::write(
        &matrix,
        format!("name: cut\nkernels: [debian:6.1]\nscenarios: ['{slow}']\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let baseline = tmp.path().join("baseline.json");
    let mut child = spawn(
        tmp.path(),
        &[
            "matrix",
            matrix.to_str().unwrap(),
            "-j",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--write-baseline",
            baseline.to_str().unwrap(),
        ],
        &[],
    );
    wait_for(Duration::from_secs(600), || {
        read_results(&out).filter(|r| iterations(r).len() == 1)
    })
    .unwrap_or_else(|| panic!("iteration 1 never finished\n{}", output(tmp.path())));
    signal(child.id(), libc::SIGTERM);
    let status = finish_within(&mut child, Duration::from_secs(60), tmp.path());
    assert_eq!(status.code(), Some(130), "{}", output(tmp.path()));
    let md = std::fs::read_to_string(out.join("summary.md"))
        .unwrap_or_else(|_| panic!("no summary.md\n{}", output(tmp.path())));
    assert!(md.contains("| 1 of 3, unfinished |"), "{md}");
    let junit = std::fs::read_to_string(out.join("junit-cells.xml")).expect("junit-cells.xml");
    assert!(junit.contains("slow"), "{junit}");
    assert!(out.join("junit.xml").exists());
    assert!(!baseline.exists(), "a baseline from an interrupted matrix");
    assert!(
        output(tmp.path()).contains("reports of the cells that finished"),
        "{}",
        output(tmp.path())
    );
}

#[test]
fn kill_9_in_mid_build_leaves_no_make() {
    let tmp = tempfile::tempdir().unwrap();
    // A git tree whose every make target takes long: crashrig is killed while make runs.
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("Makefile"), "%:\n\tsleep 300\n").unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .arg("-C")
            .arg(&tree)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "Makefile"]);
    git(&["commit", "-q", "-m", "slow make"]);
    let cache = tmp.path().join("cache");
    let mut child = spawn(
        tmp.path(),
        &["build", tree.to_str().unwrap()],
        &[("CRASHRIG_CACHE", cache.to_str().unwrap())],
    );
    let pid = child.id();
    wait_for(Duration::from_secs(120), || {
        descendants(pid)
            .iter()
            .any(|(_, c)| c == "make")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("make never ran\n{}", output(tmp.path())));
    match kill_9_and_watch(&mut child) {
        Ok(t) => {
            eprintln!("figure: after kill -9 in mid-build, make and its children gone in {t:?}")
        }
        Err(left) => panic!("still running {DIE_TOGETHER:?} after kill -9: {left:?}"),
    }
}

#[test]
fn paused_vcpus_in_mid_iteration_are_a_hang_with_console_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let monitors = tmp.path().join("qmp");
    std::fs::create_dir(&monitors).unwrap();
    let path = scenario(tmp.path(), "slow", SLOW_STEPS);
    let out = tmp.path().join("out");
    let mut child = spawn(
        tmp.path(),
        &["run", &path, "--out", out.to_str().unwrap()],
        &[("CRASHRIG_TEST_QMP_DIR", monitors.to_str().unwrap())],
    );
    // Freeze the guest (QEMU alive, vCPUs stopped) in iteration 2's middle step.
    in_middle_step(&out, 2, tmp.path());
    let monitor = newest_monitor(&monitors).unwrap();
    let answer = qmp(&monitor, "stop");
    assert!(answer.get("return").is_some(), "{answer}");
    let status = finish_within(&mut child, Duration::from_secs(900), tmp.path());
    let text = output(tmp.path());
    let r = results(&out);
    let its = iterations(&r);
    let verdicts: Vec<&str> = its.iter().map(|i| i["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, vec!["pass", "hang", "pass"], "{r}\n{text}");
    let hang = &its[1];
    let why = &hang["reasons"][0];
    eprintln!("figure: the hang's reason: {why}");
    assert!(
        why.as_str()
            .is_some_and(|w| w.contains("guest state `paused`")),
        "QEMU answered and said its guest was paused: {why}"
    );
    assert!(
        !hang["console_tail"].as_array().unwrap().is_empty(),
        "the hang carries the console tail: {hang}"
    );
    let boots = r["runs"][0]["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 2, "booted again after the hang: {boots:?}");
    assert_eq!(status.code(), Some(1), "a hang is a kernel verdict\n{text}");
}

/// QEMU itself fails in mid-iteration (`fault` is applied to its pid): the iteration is an
/// infrastructure error whose first reason holds `says`, never a kernel verdict, and the run
/// goes on with a new VM.
fn qemu_fault_is_an_infrastructure_error(fault: fn(u32), says: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, out, qemus) = slow_run_in_iteration_2(tmp.path());
    let qemu = qemus[0];
    fault(qemu);
    let status = finish_within(&mut child, Duration::from_secs(900), tmp.path());
    let text = output(tmp.path());
    let r = results(&out);
    let verdicts: Vec<String> = iterations(&r)
        .iter()
        .map(|i| i["verdict"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(verdicts, vec!["pass", "error", "pass"], "{r}\n{text}");
    let why = &iterations(&r)[1]["reasons"][0];
    eprintln!("figure: the error's reason: {why}");
    assert!(
        why.as_str().is_some_and(|w| w.contains(says)),
        "the reason says `{says}`: {why}"
    );
    assert_eq!(
        status.code(),
        Some(2),
        "infrastructure, not the kernel\n{text}"
    );
    assert!(!alive(qemu), "the faulty QEMU was reaped");
}

#[test]
fn qemu_sigstopped_in_mid_iteration_is_an_infrastructure_error() {
    qemu_fault_is_an_infrastructure_error(|pid| signal(pid, libc::SIGSTOP), "QEMU is stopped");
}

#[test]
fn qemu_killed_in_mid_iteration_is_an_infrastructure_error() {
    qemu_fault_is_an_infrastructure_error(|pid| signal(pid, libc::SIGKILL), "QEMU exited");
}

/// A step SIGSTOPs the in-guest helper (its parent): the plan misses its deadline while the
/// guest runs and answers; that is the scenario's doing, an infrastructure error naming the
/// stopped helper, never a kernel `hang` in the rate (F4).
#[test]
fn a_stopped_helper_is_an_infrastructure_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let path = scenario(
        tmp.path(),
        "stop-helper",
        "name: stop-helper\n\
         description: a step stops the guest helper with SIGSTOP; the kernel is fine\n\
         iteration-timeout: 20s\n\
         iterations: 1\n\
         steps:\n  \
           - run: { id: stopper, timeout: 5s, command: \"kill -STOP $PPID; sleep 1\" }\n",
    );
    let out = tmp.path().join("out");
    let (code, stdout, stderr) = crashrig(&["run", &path, "--out", out.to_str().unwrap()]);
    let r = results(&out);
    let it = &iterations(&r)[0];
    assert_eq!(it["verdict"], "error", "{it}\n{stderr}");
    let why = it["reasons"][0].as_str().unwrap();
    eprintln!("figure: the stopped helper's reason: {why}");
    assert!(
        why.contains("is stopped by a signal (state T), not blocked in the kernel"),
        "{why}"
    );
    assert_eq!(
        code, 2,
        "infrastructure, not the kernel\n{stdout}\n{stderr}"
    );
}

#[test]
fn full_results_filesystem_is_a_clear_error_and_keeps_earlier_results() {
    // A 4 MiB tmpfs in a mount namespace of its own (nothing to clean up on the host): a run
    // writes there, the filesystem is filled while it runs.
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let saved = tmp.path().join("saved");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&saved).unwrap();
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=4m tmpfs {mnt} || exit 90
"$CRASHRIG" run tests/smoke.yaml -n 3 --out {mnt}/out > {saved}/stdout 2> {saved}/stderr &
pid=$!
# Fill the filesystem once the first iteration is in results.json.
i=0
until grep -q '"iteration": 1' {mnt}/out/results.json 2>/dev/null; do
  kill -0 $pid 2>/dev/null || {{ wait $pid; echo $? > {saved}/code; exit 92; }}
  sleep 0.2; i=$((i+1)); [ $i -lt 3000 ] || {{ kill $pid; exit 91; }}
done
cp {mnt}/out/results.json {saved}/before.json
dd if=/dev/zero of={mnt}/filler bs=64k 2>/dev/null
wait $pid
echo $? > {saved}/code
cp {mnt}/out/results.json {saved}/after.json
"#,
        mnt = mnt.display(),
        saved = saved.display()
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = Command::new("unshare");
    if !root {
        cmd.arg("--user").arg("--map-root-user");
    }
    let status = cmd
        .args(["--mount", "sh", "-c", &script])
        .env("CRASHRIG", env!("CARGO_BIN_EXE_crashrig"))
        .env("CI", "true")
        .current_dir(workspace())
        .status()
        .unwrap();
    let read = |n: &str| std::fs::read_to_string(saved.join(n)).unwrap_or_default();
    let text = format!("stdout:\n{}\nstderr:\n{}", read("stdout"), read("stderr"));
    assert!(status.success(), "{status}\n{text}");
    assert_eq!(read("code").trim(), "2", "exit 2 on a full disk\n{text}");
    assert!(
        read("stderr").contains("No space left on device"),
        "the error says why\n{text}"
    );
    // results.json is whole and holds at least what it held before the disk filled.
    let before: Value = serde_json::from_str(&read("before.json")).unwrap();
    let after: Value = serde_json::from_str(&read("after.json")).expect("results.json whole");
    let (b, a) = (iterations(&before), iterations(&after));
    assert!(!b.is_empty() && a.len() >= b.len(), "{after}");
    assert_eq!(&a[..b.len()], &b[..]);
}

/// Iterations of the smoke scenario with both host cores saturated by busy loops; no
/// iteration may be judged a hang. `n` iterations; prints the figures.
fn smoke_under_cpu_hog(n: u32) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let hogs: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let t = Instant::now();
    let (code, stdout, stderr) = crashrig(&[
        "run",
        "tests/smoke.yaml",
        "-n",
        &n.to_string(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    let r = results(&out);
    let its = iterations(&r);
    let count = |v: &str| its.iter().filter(|i| i["verdict"] == v).count();
    let (hangs, errors, passed) = (count("hang"), count("error"), count("pass"));
    eprintln!(
        "figure: smoke x{n} under {cores} CPU hogs: {passed} passed, {hangs} hangs, \
         {errors} infrastructure errors, {:.0} s",
        secs
    );
    assert_eq!(hangs, 0, "false hangs under load: {r}");
    assert_eq!(errors, 0, "infrastructure errors under load: {r}");
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(passed, n as usize);
    // The load was recorded with every iteration, and the summary says the host was busy:
    // `cores` hogs and the guest's vCPU keep more threads ready than there are CPUs, so the
    // 1-minute average passes `cores` within the run's first minutes.
    let loads: Vec<f64> = its.iter().filter_map(|i| i["host_load"].as_f64()).collect();
    assert_eq!(
        loads.len(),
        its.len(),
        "an iteration without host_load: {r}"
    );
    let max = loads.iter().copied().fold(0.0, f64::max);
    eprintln!("figure: host load up to {max:.1} on {cores} CPUs");
    assert!(max > cores as f64, "{loads:?}");
    assert!(
        stdout.contains(&format!("host load above its {cores} CPU")),
        "stdout:\n{stdout}"
    );
}

/// About 4 minutes on this project's 2-core TCG host (228 s at load 10-14).
#[test]
fn no_false_hang_in_100_iterations_under_cpu_hog() {
    smoke_under_cpu_hog(100);
}

/// Output piped into a reader that goes away (`crashrig run ... 2>&1 | head -1`): writes to
/// the closed pipe fail, and the run must go on and finish its results instead of panicking
/// (it exited 101 with `finished: null` and no iteration, from `eprintln!`).
#[test]
fn closed_output_pipes_do_not_stop_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crashrig"))
        .args(["run", "tests/smoke.yaml", "-n", "2", "--out"])
        .arg(&out)
        .current_dir(workspace())
        .env("CI", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line of its output, then close both pipes, as `head -1` does.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    drop(stderr);
    drop(child.stdout.take());
    let status = finish_within(&mut child, Duration::from_secs(600), tmp.path());
    assert_eq!(status.code(), Some(0), "first line: {first}");
    let r = read_results(&out).expect("results.json");
    assert!(!r["finished"].is_null(), "{r}");
    assert_eq!(iterations(&r).len(), 2, "{r}");
}
