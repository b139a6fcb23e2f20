//! Shared by the integration tests: run the crashrig binary from the workspace root, read
//! results.json.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs crashrig (as CI does: no progress bars); returns exit code, stdout, stderr.
pub fn crashrig(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_crashrig"))
        .args(args)
        .current_dir(workspace())
        .env("CI", "true")
        .output()
        .expect("crashrig runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

pub fn results(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).expect("results.json written");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// The step record with `id` in an iteration record.
pub fn step<'a>(it: &'a Value, id: &str) -> &'a Value {
    it["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {it}"))
}

/// An iteration of tests/crash/power-cut-xfs.yaml: the mount after the cut worked and every
/// fsync'd file came back whole.
pub fn power_cut_kept_fsynced_data(it: &Value) {
    assert_eq!(step(it, "recovery-mount")["errno"], Value::Null, "{it}");
    let data = step(it, "fsynced-data");
    assert_eq!(data["detail"]["checked"], 8, "{data}");
    assert_eq!(data["detail"]["missing"], serde_json::json!([]));
    assert_eq!(data["detail"]["corrupted"], serde_json::json!([]));
}

/// Real boots (not restores) in a results.json, and the distinct kernels its runs used: a
/// bisection or matrix boots each kernel at most once (`--restore auto`: later batches of a
/// kernel restore its booted guest from the cache), so the first is at most the second.
pub fn boots_and_kernels(results: &Value) -> (usize, usize) {
    let runs = results["runs"].as_array().expect("runs");
    let boots = runs
        .iter()
        .flat_map(|r| r["boots"].as_array().expect("boots"))
        .filter(|b| b["restored"].is_null())
        .count();
    let kernels: std::collections::BTreeSet<&str> = runs
        .iter()
        .map(|r| r["kernel"]["image_sha256"].as_str().expect("kernel"))
        .collect();
    (boots, kernels.len())
}
