//! Fault injection with real QEMU: what a killed crashrig, a frozen or dead QEMU, a full disk,
//! a loaded host and a curious guest do to a run. Each test says which fault it injects and
//! what crashrig must do; docs/reliability.md lists them with the figures they measured.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::{crashrig, results};

/// A scenario file in `dir` (tests write the ones that need a value known only at run time).
fn scenario(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
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
