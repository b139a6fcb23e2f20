//! The helper binary on the host, run as root, confined so nothing leaks: mounts happen in a
//! private mount namespace (`unshare --mount --propagation private`), workloads get unique
//! cgroup names and are killed, state lives in a temporary directory, and a guard cleans up
//! whatever a failing test left. Tests that need what the host lacks say so and skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crashrig_guest::{Detail, OutputLine, PlanEnd, StepReport, PROTOCOL_VERSION};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_crashrig-guest");

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            panic!("cannot run: needs root (the suite runs as root on a Debian host with these; see scripts/setup.sh)");
        }
    };
}

/// A cgroup2 mount where child cgroups have cgroup.kill (the guest's /sys/fs/cgroup; on a
/// hybrid host, /sys/fs/cgroup/unified).
fn cgroup2_with_kill() -> Option<PathBuf> {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let root = PathBuf::from(root);
        let probe = root.join(format!("crashrig-probe-{}", std::process::id()));
        if std::fs::create_dir(&probe).is_ok() {
            let has_kill = probe.join("cgroup.kill").exists();
            let _ = std::fs::remove_dir(&probe);
            if has_kill {
                return Some(root);
            }
        }
    }
    None
}

/// One test's sandbox: state directory, cgroup root, and cleanup of leftovers on drop.
struct Sandbox {
    dir: PathBuf,
    cgroup_root: Option<PathBuf>,
    workloads: Vec<String>,
    loops: Vec<String>,
    /// Pid of the last helper started.
    helper_pid: std::cell::Cell<u32>,
}

impl Sandbox {
    fn new(tag: &str, cgroups: bool) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("crashrig-guest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cgroup_root = if cgroups { cgroup2_with_kill() } else { None };
        Sandbox {
            dir,
            cgroup_root,
            workloads: Vec::new(),
            loops: Vec::new(),
            helper_pid: std::cell::Cell::new(0),
        }
    }

    /// A workload name unique to this test run (cgroups are global on the host).
    fn workload(&mut self, name: &str) -> String {
        let n = format!("{name}-{}", std::process::id());
        self.workloads.push(n.clone());
        n
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }

    fn run_raw(&self, input: &[u8], unshare: bool) -> (i32, String) {
        let mut cmd = if unshare {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", BIN, "exec"]);
            c
        } else {
            let mut c = Command::new(BIN);
            c.arg("exec");
            c
        };
        cmd.env("CRASHRIG_RUN_DIR", self.dir.join("run"));
        // Never the host's own RNG and clock: a refresh here must fail at the RNG.
        cmd.env("CRASHRIG_RANDOM_DEV", "/dev/null");
        cmd.env(
            "CRASHRIG_CGROUP_ROOT",
            self.cgroup_root
                .clone()
                .unwrap_or_else(|| self.dir.join("no-cgroup")),
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the helper");
        self.helper_pid.set(child.id());
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
        )
    }

    /// Run a plan of `(op json)` steps; returns the reports in order and checks the end line.
    fn run(&self, label: &str, ops: Vec<Value>, unshare: bool) -> Vec<StepReport> {
        let steps: Vec<Value> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| json!({ "index": i, "op": op }))
            .collect();
        let n = steps.len();
        let plan = json!({ "version": PROTOCOL_VERSION, "label": label, "steps": steps });
        let (code, stdout) = self.run_raw(plan.to_string().as_bytes(), unshare);
        assert_eq!(code, 0, "{stdout}");
        let mut reports = Vec::new();
        let mut end = None;
        for line in stdout.lines() {
            match serde_json::from_str::<OutputLine>(line).unwrap_or_else(|e| panic!("{e}: {line}"))
            {
                OutputLine::Step(s) => reports.push(*s),
                OutputLine::End(e) => end = Some(e),
                OutputLine::Fatal { message } => panic!("fatal: {message}"),
            }
        }
        assert_eq!(
            end,
            Some(PlanEnd {
                done: true,
                steps_run: n
            }),
            "{stdout}"
        );
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.index, i);
        }
        reports
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for w in &self.workloads {
            if let Some(root) = &self.cgroup_root {
                let cg = root.join("crashrig").join(w);
                if cg.exists() {
                    let _ = std::fs::write(cg.join("cgroup.kill"), "1");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    let _ = std::fs::remove_dir(&cg);
                }
            }
            let pidfile = self.dir.join("run/spawn").join(format!("{w}.pid"));
            if let Some(pid) = std::fs::read_to_string(pidfile)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<i32>().ok())
            {
                // SAFETY: the workload's own process group (it called setsid).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
        if let Some(root) = &self.cgroup_root {
            // Fails while other tests still have workloads there; the last one removes it.
            let _ = std::fs::remove_dir(root.join("crashrig"));
        }
        for dev in &self.loops {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn killed(r: &StepReport) -> (u32, Option<f64>, Option<i32>, bool) {
    match &r.detail {
        Some(Detail::Killed {
            tasks,
            exit_wait_ms,
            exit_status,
            timed_out,
            ..
        }) => (*tasks, *exit_wait_ms, *exit_status, *timed_out),
        other => panic!("no kill detail: {other:?} in {r:?}"),
    }
}

/// A step that waits until `test` (a test(1) expression) holds: what a step after a spawn
/// needs from the workload, rather than a sleep a loaded host may outlast.
fn until(test: &str) -> Value {
    json!({"op": "run", "command": format!("until [ {test} ]; do sleep 0.01; done"),
           "timeout_ms": 30_000})
}

/// A process that is gone or a zombie holds nothing.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        })
        .unwrap_or(false)
}

#[test]
fn version_prints_the_protocol_version() {
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        PROTOCOL_VERSION.to_string()
    );
}

#[test]
fn malformed_plans_are_fatal_with_exit_2() {
    let sb = Sandbox::new("fatal", false);
    for input in [
        "{\"version\": 1, \"steps\": [".to_string(),
        json!({"version": PROTOCOL_VERSION, "steps": [{"index": 0, "op": {"op": "explode"}}]})
            .to_string(),
        json!({"version": PROTOCOL_VERSION + 1, "steps": []}).to_string(),
        String::new(),
    ] {
        let (code, stdout) = sb.run_raw(input.as_bytes(), false);
        assert_eq!(code, 2, "{input}: {stdout}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{stdout}");
        match serde_json::from_str::<OutputLine>(lines[0]) {
            Ok(OutputLine::Fatal { message }) => assert!(!message.is_empty(), "{stdout}"),
            other => panic!("not a fatal line: {other:?}: {stdout}"),
        }
    }
}

#[test]
fn a_refresh_that_fails_ends_the_plan_before_its_first_step() {
    let sb = Sandbox::new("refresh", false);
    let ran = sb.path("ran");
    let plan = json!({
        "version": PROTOCOL_VERSION,
        "refresh": { "entropy": [1, 2, 3], "realtime_ns": 1 },
        "steps": [{ "index": 0, "op": { "op": "run", "command": format!("touch {ran}"), "timeout_ms": 10_000 } }],
    });
    let (code, stdout) = sb.run_raw(plan.to_string().as_bytes(), false);
    assert_eq!(code, 2, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    match serde_json::from_str::<OutputLine>(lines[0]) {
        Ok(OutputLine::Fatal { message }) => {
            assert_eq!(message, "reseed the RNG: ENOTTY", "{stdout}")
        }
        other => panic!("not a fatal line: {other:?}: {stdout}"),
    }
    assert!(
        !Path::new(&ran).exists(),
        "the step ran after a failed refresh"
    );
}

#[test]
fn umount_busy_window_is_measured_until_the_holder_closes() {
    require_root!();
    let mut sb = Sandbox::new("busy", true);
    let holder = sb.workload("holder");
    let stuck = sb.workload("stuck");
    let mnt = sb.path("mnt");
    let release = sb.path("release");
    let umount_retry = |max_ms: u64| {
        json!({"op": "umount", "target": mnt, "force": false, "detach": false,
               "retry": {"max_ms": max_ms, "interval_ms": 5}})
    };
    let r = sb.run(
        "busy",
        vec![
            json!({"op": "mount", "device": "crashrig-test", "target": mnt, "fstype": "tmpfs",
                   "options": ["size=1m", "nosuid"], "retry": null}),
            // The holder keeps fd 3 open on the mount until the plan releases it, and for
            // 400 ms after that: the single umount always finds it busy, and the retry, which
            // starts as soon as the release step ends, sees it close 400 ms later at the earliest.
            json!({"op": "spawn", "name": holder, "command": format!(
                "exec 3>{mnt}/held; until [ -e {release} ]; do sleep 0.01; done; sleep 0.4")}),
            until(&format!("-e {mnt}/held")),
            json!({"op": "umount", "target": mnt, "force": false, "detach": false, "retry": null}),
            json!({"op": "run", "command": format!(": > {release}"), "timeout_ms": 10_000}),
            umount_retry(10_000),
            json!({"op": "kill", "name": holder, "signal": "KILL", "wait_ms": 2000}),
            // Never closes: the retry gives up at its bound.
            json!({"op": "mount", "device": "crashrig-test", "target": mnt, "fstype": "tmpfs",
                   "options": [], "retry": null}),
            json!({"op": "spawn", "name": stuck, "command": format!("exec 3>{mnt}/held; exec sleep 1000")}),
            until(&format!("-e {mnt}/held")),
            umount_retry(100),
            json!({"op": "kill", "name": stuck, "signal": "KILL", "wait_ms": 5000}),
            umount_retry(1000),
            // Nothing is left mounted.
            json!({"op": "umount", "target": mnt, "force": false, "detach": false, "retry": null}),
        ],
        true,
    );
    for i in [0, 1, 2, 4, 7, 8, 9] {
        assert_eq!(
            (&r[i].errno, &r[i].error),
            (&None, &None),
            "step {i}: {:?}",
            r[i]
        );
    }
    assert_eq!(
        (r[3].errno.as_deref(), r[3].attempts, r[3].busy_window_ms),
        (Some("EBUSY"), 1, None)
    );
    let w = &r[5];
    assert_eq!(
        (w.errno.as_deref(), w.final_errno.as_deref(), w.busy_gave_up),
        (Some("EBUSY"), None, false)
    );
    let window = w.busy_window_ms.unwrap();
    assert!((150.0..5000.0).contains(&window), "busy window {window} ms");
    assert!(w.attempts > 10, "{w:?}");
    let (tasks, wait, status, timed_out) = killed(&r[6]);
    assert_eq!(
        (tasks, timed_out, status),
        (0, false, Some(0)),
        "the holder had already exited"
    );
    assert!(wait.is_some());

    let g = &r[10];
    assert_eq!(
        (g.errno.as_deref(), g.final_errno.as_deref()),
        (Some("EBUSY"), Some("EBUSY"))
    );
    assert!(g.busy_gave_up);
    assert_eq!(g.busy_window_ms, Some(100.0));
    assert!(g.duration_ms >= 100.0, "{g:?}");
    let (tasks, wait, status, timed_out) = killed(&r[11]);
    assert_eq!(
        (tasks, timed_out, status),
        (1, false, Some(137)),
        "{:?}",
        r[11]
    );
    assert!(wait.unwrap() < 5000.0);
    assert_eq!(
        (r[12].errno.as_deref(), r[12].attempts),
        (None, 1),
        "{:?}",
        r[12]
    );
    assert_eq!(r[13].errno.as_deref(), Some("EINVAL"), "{:?}", r[13]);
}

fn kill_workload_with_forked_child(cgroups: bool) {
    let mut sb = Sandbox::new(if cgroups { "kill-cg" } else { "kill-pg" }, cgroups);
    if cgroups && sb.cgroup_root.is_none() {
        panic!("cannot run: no cgroup2 with cgroup.kill on this host (the suite runs as root on a Debian host with these; see scripts/setup.sh)");
    }
    let name = sb.workload("load");
    let child_pid = sb.path("child.pid");
    let r = sb.run(
        "kill",
        vec![
            json!({"op": "spawn", "name": name,
                   "command": format!("echo started; sleep 1000 & echo $! > {child_pid}; exec sleep 1000")}),
            until(&format!("-s {child_pid}")),
            json!({"op": "kill", "name": name, "signal": "KILL", "wait_ms": 5000}),
            json!({"op": "kill", "name": "no-such-workload", "signal": "KILL", "wait_ms": 0}),
            json!({"op": "kill", "name": name, "signal": "BOGUS", "wait_ms": 0}),
        ],
        false,
    );
    assert_eq!(r[0].error, None);
    let main_pid: i32 = r[0]
        .stdout
        .trim()
        .strip_prefix("pid ")
        .unwrap()
        .parse()
        .unwrap();
    let child: i32 = std::fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (tasks, wait, status, timed_out) = killed(&r[2]);
    assert_eq!(
        (tasks, timed_out, status),
        (2, false, Some(137)),
        "{:?}",
        r[2]
    );
    let wait = wait.unwrap();
    assert!((0.0..5000.0).contains(&wait), "{wait}");
    assert!(
        !alive(main_pid) && !alive(child),
        "workload survived its kill"
    );
    if let Some(root) = &sb.cgroup_root {
        assert!(
            !root.join("crashrig").join(&name).exists(),
            "cgroup left behind"
        );
    }
    assert!(
        r[3].error.as_deref().unwrap().contains("no workload named"),
        "{:?}",
        r[3]
    );
    assert!(
        r[4].error.as_deref().unwrap().contains("unknown signal"),
        "{:?}",
        r[4]
    );
}

#[test]
fn kill_stops_forked_children_through_the_cgroup() {
    require_root!();
    kill_workload_with_forked_child(true);
}

#[test]
fn kill_stops_forked_children_through_the_process_group() {
    require_root!();
    kill_workload_with_forked_child(false);
}

#[test]
fn term_reaches_every_task_and_reports_the_status() {
    require_root!();
    let mut sb = Sandbox::new("term", true);
    let name = sb.workload("term");
    let ready = sb.path("ready");
    let r = sb.run(
        "term",
        vec![
            json!({"op": "spawn", "name": name,
                   "command": format!("sleep 1000 & sleep 1000 & : > {ready}; exec sleep 1000")}),
            until(&format!("-e {ready}")),
            json!({"op": "kill", "name": name, "signal": "TERM", "wait_ms": 5000}),
        ],
        false,
    );
    let (tasks, _, status, timed_out) = killed(&r[2]);
    assert_eq!(
        (tasks, status, timed_out),
        (3, Some(143), false),
        "{:?}",
        r[2]
    );
}

#[test]
fn run_captures_output_status_and_timeout() {
    require_root!();
    let sb = Sandbox::new("run", true);
    let r = sb.run(
        "run",
        vec![
            json!({"op": "run", "command": "echo out; echo err >&2; exit 3", "timeout_ms": 10_000}),
            json!({"op": "run", "command": "sleep 5 & exec sleep 10", "timeout_ms": 300}),
            // A background leftover must not keep the step (or its pipes) open.
            json!({"op": "run", "command": "sleep 1000 &", "timeout_ms": 10_000}),
            json!({"op": "run", "command": "head -c 200000 /dev/zero | tr '\\0' a; kill -9 $$", "timeout_ms": 10_000}),
            json!({"op": "run", "command": "", "timeout_ms": 10_000}),
        ],
        false,
    );
    assert_eq!(
        (r[0].exit_status, r[0].stdout.as_str(), r[0].stderr.as_str()),
        (Some(3), "out\n", "err\n")
    );
    assert_eq!(r[0].error, None);
    assert_eq!(
        (r[1].exit_status, r[1].error.as_deref()),
        (None, Some("timed out after 300 ms"))
    );
    assert!(r[1].duration_ms < 3000.0, "{:?}", r[1]);
    assert_eq!(r[2].exit_status, Some(0));
    assert!(r[2].duration_ms < 3000.0, "{:?}", r[2]);
    assert_eq!(r[3].exit_status, Some(137));
    assert!(
        r[3].stdout.starts_with("[...]\n"),
        "output is cut at the front"
    );
    assert_eq!(r[3].stdout.len(), 64 * 1024 + "[...]\n".len());
    assert_eq!(r[4].exit_status, Some(0));
    if let Some(root) = &sb.cgroup_root {
        // Other tests' helpers may be running; only this helper's cgroups must be gone.
        let prefix = format!("run.{}.", sb.helper_pid.get());
        let left: Vec<_> = std::fs::read_dir(root.join("crashrig"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.iter().all(|n| !n.starts_with(&prefix)),
            "{left:?} ({prefix})"
        );
    }
}

#[test]
fn written_data_verifies_and_losses_are_named() {
    let sb = Sandbox::new("data", false);
    let dir = sb.path("data");
    let write = json!({"op": "write-data", "dir": dir, "files": 4, "size": 10_000, "seed": 7, "fsync": true});
    let verify = json!({"op": "verify-data", "dir": dir, "files": 4, "size": 10_000, "seed": 7});
    let r = sb.run(
        "data",
        vec![
            write,
            verify.clone(),
            json!({"op": "run", "command": format!(": > {dir}/f0001; rm {dir}/f0003"), "timeout_ms": 10_000}),
            verify,
        ],
        false,
    );
    assert_eq!(
        (r[0].errno.clone(), r[0].error.clone()),
        (None, None),
        "{:?}",
        r[0]
    );
    assert_eq!(
        r[1].detail,
        Some(Detail::Data {
            checked: 4,
            missing: vec![],
            corrupted: vec![]
        })
    );
    assert_eq!(r[1].error, None);
    assert_eq!(
        r[3].detail,
        Some(Detail::Data {
            checked: 4,
            missing: vec!["f0003".into()],
            corrupted: vec!["f0001".into()]
        })
    );
    // Lost files are an outcome the host judges against what write-data acknowledged.
    assert_eq!(r[3].error, None);
    assert_eq!(r[3].stdout, "f0001: short: 0 of 10000 bytes\n");
    assert_eq!(
        r[0].detail,
        Some(Detail::Written {
            written: 4,
            acknowledged: 4
        })
    );
}

#[test]
fn write_data_that_runs_out_of_space_says_how_many_files_it_acknowledged() {
    require_root!();
    let sb = Sandbox::new("enospc", false);
    let mnt = sb.path("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs", &mnt])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount a tmpfs");
    let dir = format!("{mnt}/data");
    let r = sb.run(
        "enospc",
        vec![
            // 10 files of 64K into 256K: the fifth cannot be written.
            json!({"op": "write-data", "dir": dir, "files": 10, "size": 65536, "seed": 7, "fsync": true}),
            json!({"op": "write-data", "dir": format!("{mnt}/more"), "files": 2, "size": 65536, "seed": 7, "fsync": false}),
        ],
        false,
    );
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(r[0].errno.as_deref(), Some("ENOSPC"), "{:?}", r[0]);
    assert_eq!(r[0].error, None);
    match r[0].detail {
        Some(Detail::Written {
            written,
            acknowledged,
        }) => {
            assert!((1..10).contains(&written), "{:?}", r[0]);
            assert_eq!(acknowledged, written, "fsync'd before the failure");
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(r[1].errno.as_deref(), Some("ENOSPC"), "{:?}", r[1]);
    assert_eq!(
        r[1].detail,
        Some(Detail::Written {
            written: 0,
            acknowledged: 0
        })
    );
}

#[test]
fn a_workload_that_exited_before_its_kill_is_told_from_one_the_kill_ended() {
    require_root!();
    let mut sb = Sandbox::new("exited", true);
    let gone = sb.workload("gone");
    let twice = sb.workload("twice");
    let r = sb.run(
        "exited",
        vec![
            json!({"op": "spawn", "name": gone, "command": "echo 'fio: bad rw' >&2; exit 1"}),
            json!({"op": "spawn", "name": twice, "command": "exec sleep 1000"}),
            until(&format!(
                "-s {}",
                sb.path(&format!("run/spawn/{gone}.status"))
            )),
            json!({"op": "kill", "name": gone, "signal": "KILL", "wait_ms": 5000}),
            json!({"op": "kill", "name": twice, "signal": "TERM", "wait_ms": 5000}),
            json!({"op": "kill", "name": twice, "signal": "KILL", "wait_ms": 5000}),
        ],
        false,
    );
    let exited = |r: &StepReport| match &r.detail {
        Some(Detail::Killed {
            exited_before,
            exit_status,
            ..
        }) => (*exited_before, *exit_status),
        other => panic!("{other:?}"),
    };
    assert_eq!(exited(&r[3]), (true, Some(1)), "{:?}", r[3]);
    assert!(r[3].stdout.contains("fio: bad rw"), "{:?}", r[3]);
    // Its end is on the steps' clock: after its spawn (the status file's time is coarse, a
    // tick or so), before the kill started.
    let ended = match &r[3].detail {
        Some(Detail::Killed { exited_ms, .. }) => exited_ms.expect("an end time"),
        other => panic!("{other:?}"),
    };
    assert!(
        ended >= r[0].started_ms - 20.0 && ended <= r[3].started_ms,
        "ended at {ended} ms, spawn at {} ms, kill at {} ms: {:?}",
        r[0].started_ms,
        r[3].started_ms,
        r[3]
    );
    let ended_by_kill = match &r[4].detail {
        Some(Detail::Killed { exited_ms, .. }) => *exited_ms,
        other => panic!("{other:?}"),
    };
    assert_eq!(ended_by_kill, None, "only a workload that ended on its own");
    assert_eq!(exited(&r[4]), (false, Some(143)), "{:?}", r[4]);
    // Nothing left for the second kill, but the first one ended it.
    assert!(!exited(&r[5]).0, "{:?}", r[5]);
}

#[test]
fn mkfs_exit_status_is_an_outcome_not_a_helper_error() {
    require_root!();
    let sb = Sandbox::new("mkfs-status", false);
    let img = sb.path("img");
    std::fs::write(&img, b"").unwrap();
    let r = sb.run(
        "mkfs-status",
        vec![json!({"op": "mkfs", "device": img, "fstype": "xfs", "options": ["-f", "-L", "way-too-long-label"]})],
        false,
    );
    assert_eq!(r[0].error, None, "{:?}", r[0]);
    assert!(matches!(r[0].exit_status, Some(s) if s != 0), "{:?}", r[0]);
}

#[test]
fn dmesg_returns_only_records_since_the_last_read() {
    require_root!();
    if std::fs::File::open("/dev/kmsg").is_err() {
        panic!("cannot run: /dev/kmsg not readable (the suite runs as root on a Debian host with these; see scripts/setup.sh)");
    }
    let sb = Sandbox::new("dmesg", false);
    let label = format!("dmesg-test-{}", std::process::id());
    let r = sb.run(
        &label,
        vec![json!({"op": "dmesg"}), json!({"op": "dmesg"})],
        false,
    );
    let records = |i: usize| match &r[i].detail {
        Some(Detail::Dmesg { records }) => records.clone(),
        other => panic!("{other:?}"),
    };
    let (first, second) = (records(0), records(1));
    let marker = |step: usize| format!("crashrig: {label} step {step} dmesg");
    assert!(
        first.iter().any(|rec| rec.text == marker(0)),
        "marker of step 0 missing"
    );
    assert!(
        second.iter().any(|rec| rec.text == marker(1)),
        "marker of step 1 missing"
    );
    let last = first.last().unwrap().seq;
    assert!(
        second.iter().all(|rec| rec.seq > last),
        "old records returned again"
    );
    assert!(!second.iter().any(|rec| rec.text == marker(0)));
    assert!(first.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// Attach a sparse file to a loop device, or None when the host cannot.
fn loop_device(sb: &mut Sandbox, size: u64) -> Option<String> {
    let img = sb.dir.join(format!("disk-{}.img", sb.loops.len()));
    std::fs::File::create(&img).ok()?.set_len(size).ok()?;
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    sb.loops.push(dev.clone());
    Some(dev)
}

fn fs_round_trip(fstype: &str, mkfs_options: &[&str]) {
    require_root!();
    let mut sb = Sandbox::new(&format!("fs-{fstype}"), true);
    if !Path::new(&format!("/sbin/mkfs.{fstype}")).exists()
        && !Path::new(&format!("/usr/sbin/mkfs.{fstype}")).exists()
    {
        panic!("cannot run: no mkfs.{fstype} (the suite runs as root on a Debian host with these; see scripts/setup.sh)");
    }
    let Some(dev) = loop_device(&mut sb, 320 << 20) else {
        panic!("cannot run: losetup does not work here; no mkfs/fsck test (the suite runs as root on a Debian host with these; see scripts/setup.sh)");
    };
    let mnt = sb.path("mnt");
    let data = format!("{mnt}/data");
    let mount = json!({"op": "mount", "device": dev, "target": mnt, "fstype": fstype,
                       "options": ["noatime"], "retry": {"max_ms": 2000, "interval_ms": 10}});
    let umount = json!({"op": "umount", "target": mnt, "force": false, "detach": false,
                        "retry": {"max_ms": 2000, "interval_ms": 10}});
    let fsck = json!({"op": "fsck", "device": dev, "fstype": fstype});
    let r = sb.run(
        fstype,
        vec![
            json!({"op": "mkfs", "device": dev, "fstype": fstype, "options": mkfs_options}),
            fsck.clone(),
            mount.clone(),
            json!({"op": "write-data", "dir": data, "files": 8, "size": 65536, "seed": 1, "fsync": true}),
            json!({"op": "shutdown", "target": mnt, "flag": "no-log-flush"}),
            json!({"op": "write-data", "dir": format!("{mnt}/after"), "files": 1, "size": 4096, "seed": 2, "fsync": true}),
            umount.clone(),
            // Log recovery: what fsync acknowledged before the shutdown is there.
            mount,
            json!({"op": "verify-data", "dir": data, "files": 8, "size": 65536, "seed": 1}),
            json!({"op": "sync", "target": mnt}),
            umount,
            fsck,
        ],
        true,
    );
    assert_eq!(
        (r[0].exit_status, &r[0].error),
        (Some(0), &None),
        "{:?}",
        r[0]
    );
    assert_eq!(
        r[1].detail,
        Some(Detail::Fsck { clean: true }),
        "{:?}",
        r[1]
    );
    // Kernels without a shutdown ioctl for this filesystem (btrfs before it was added) say
    // ENOTTY, which the helper must pass through as it is.
    let has_shutdown = r[4].errno.as_deref() != Some("ENOTTY");
    if !has_shutdown {
        eprintln!("NOTE: {fstype} has no FS_IOC_SHUTDOWN on this kernel (ENOTTY)");
    }
    for i in [2, 3, 4, 6, 7, 9, 10] {
        if i == 4 && !has_shutdown {
            continue;
        }
        assert_eq!(
            (&r[i].errno, &r[i].error),
            (&None, &None),
            "step {i}: {:?}",
            r[i]
        );
    }
    let after = if has_shutdown { Some("EIO") } else { None };
    assert_eq!(
        r[5].errno.as_deref(),
        after,
        "writes after a shutdown: {:?}",
        r[5]
    );
    assert_eq!(r[8].error, None, "{:?}", r[8]);
    assert_eq!(
        r[11].detail,
        Some(Detail::Fsck { clean: true }),
        "{:?}",
        r[11]
    );
}

#[test]
fn xfs_survives_shutdown_with_fsynced_data() {
    fs_round_trip("xfs", &["-f", "-q"]);
}

#[test]
fn ext4_survives_shutdown_with_fsynced_data() {
    fs_round_trip("ext4", &["-q", "-F"]);
}

#[test]
fn btrfs_survives_shutdown_with_fsynced_data() {
    fs_round_trip("btrfs", &["-q", "-f"]);
}

/// xfs with its log on another device: `xfs_repair -n` needs `-l LOGDEV`, which only the
/// fsck step's `options` can give it.
#[test]
fn fsck_options_reach_the_checker_for_an_external_xfs_log() {
    require_root!();
    let mut sb = Sandbox::new("fsck-logdev", true);
    let (Some(data), Some(log)) = (
        loop_device(&mut sb, 320 << 20),
        loop_device(&mut sb, 64 << 20),
    ) else {
        panic!("cannot run: losetup does not work here (the suite runs as root on a Debian host with it; see scripts/setup.sh)");
    };
    let logdev = format!("logdev={log}");
    let r = sb.run(
        "fsck-logdev",
        vec![
            json!({"op": "mkfs", "device": data, "fstype": "xfs", "options": ["-f", "-q", "-l", logdev]}),
            json!({"op": "fsck", "device": data, "fstype": "xfs"}),
            json!({"op": "fsck", "device": data, "fstype": "xfs", "options": ["-l", log]}),
        ],
        true,
    );
    assert_eq!(r[0].exit_status, Some(0), "{:?}", r[0]);
    assert_eq!(
        r[1].detail,
        Some(Detail::Fsck { clean: false }),
        "without -l xfs_repair cannot find the log: {:?}",
        r[1]
    );
    assert_eq!(
        r[2].detail,
        Some(Detail::Fsck { clean: true }),
        "{:?}",
        r[2]
    );
}

#[test]
fn helper_problems_are_errors_not_crashes() {
    let sb = Sandbox::new("errors", false);
    let r = sb.run(
        "errors",
        vec![
            json!({"op": "mount", "device": "no-such-serial", "target": sb.path("m"), "fstype": "xfs",
                   "options": [], "retry": null}),
            json!({"op": "fsck", "device": "/dev/null", "fstype": "vfat"}),
            json!({"op": "wait-device", "device": "no-such-serial", "present": true, "timeout_ms": 50}),
            json!({"op": "wait-device", "device": "no-such-serial", "present": false, "timeout_ms": 50}),
            json!({"op": "dm-swap", "name": "nothing", "table": "error"}),
            json!({"op": "spawn", "name": "../escape", "command": "true"}),
            json!({"op": "shutdown", "target": sb.path("missing"), "flag": "default"}),
        ],
        false,
    );
    assert!(
        r[0].error
            .as_deref()
            .unwrap()
            .contains("no virtio-blk disk with serial"),
        "{:?}",
        r[0]
    );
    assert_eq!(r[0].errno, None);
    assert!(r[1]
        .error
        .as_deref()
        .unwrap()
        .contains("no read-only checker"));
    assert!(r[2]
        .error
        .as_deref()
        .unwrap()
        .contains("did not appear within 50 ms"));
    assert!(r[2].duration_ms >= 50.0);
    assert_eq!(r[3].error, None);
    assert!(r[4]
        .error
        .as_deref()
        .unwrap()
        .contains("no device-mapper device"));
    assert!(r[5]
        .error
        .as_deref()
        .unwrap()
        .contains("invalid workload name"));
    assert!(
        r[6].error.as_deref().unwrap().contains("ENOENT"),
        "{:?}",
        r[6]
    );
}

#[test]
#[ignore = "needs device-mapper in the host kernel (`dmsetup version` fails on this CI VM); the same dm-error path runs in the guest in runner/tests/qemu_crash.rs; run with --ignored on a host with dm"]
fn dm_tables_swap_under_a_mounted_filesystem() {
    require_root!();
    let ok = Command::new("dmsetup")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        panic!("cannot run: device-mapper is not available on this host (the suite runs as root on a Debian host with these; see scripts/setup.sh)");
    }
    let mut sb = Sandbox::new("dm", true);
    let Some(dev) = loop_device(&mut sb, 64 << 20) else {
        panic!("cannot run: losetup does not work here (the suite runs as root on a Debian host with these; see scripts/setup.sh)");
    };
    let name = format!("crashrig-test-{}", std::process::id());
    let r = sb.run(
        "dm",
        vec![
            json!({"op": "dm-create", "name": name, "device": dev}),
            json!({"op": "dm-swap", "name": name, "table": "error"}),
            json!({"op": "run", "command": format!("dd if=/dev/mapper/{name} of=/dev/null bs=4096 count=1 iflag=direct"), "timeout_ms": 10_000}),
            json!({"op": "dm-swap", "name": name, "table": "linear"}),
            json!({"op": "run", "command": format!("dd if=/dev/mapper/{name} of=/dev/null bs=4096 count=1 iflag=direct"), "timeout_ms": 10_000}),
            json!({"op": "dm-remove", "name": name}),
        ],
        false,
    );
    for i in [0, 1, 3, 5] {
        assert_eq!(r[i].error, None, "step {i}: {:?}", r[i]);
    }
    assert_ne!(
        r[2].exit_status,
        Some(0),
        "reads fail through the error table"
    );
    assert_eq!(r[4].exit_status, Some(0), "{:?}", r[4]);
}
