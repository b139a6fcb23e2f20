//! A small real matrix (debian:6.1 and debian:6.12 x smoke x 2 iterations): shards, resume and
//! merge; and `repro` of one iteration.

mod common;

use common::{boots_and_kernels, crashrig, results};

use serde_json::Value;

fn cell_ids(r: &Value) -> Vec<String> {
    r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["cell"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shards_resume_and_merge_give_the_whole_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, merged) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("merged"),
    );
    let (a_s, b_s, m_s) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        merged.to_str().unwrap(),
    );

    // Shard 1 of 2 holds the first cell only.
    let (code, out, err) = crashrig(&[
        "matrix",
        "tests/matrix/small.yaml",
        "-n",
        "2",
        "--partition",
        "1/2",
        "--out",
        a_s,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(cell_ids(&results(&a)), ["debian-6.1/smoke"]);

    // The same directory resumed without a partition runs only the missing cell.
    let (code, out, err) = crashrig(&[
        "matrix",
        "tests/matrix/small.yaml",
        "-n",
        "2",
        "--resume",
        "--out",
        a_s,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("1 cell to run, 1 at a time"), "{err}");
    let whole = results(&a);
    assert_eq!(cell_ids(&whole), ["debian-6.1/smoke", "debian-6.12/smoke"]);
    assert!(whole["runs"][1]["kernel"]["version"]
        .as_str()
        .unwrap()
        .starts_with("linux-image-6.12."));
    assert!(out.contains("| debian-6.12 | smoke |"), "{out}");
    assert!(out.contains("debian-6.1 vs debian-6.12"), "{out}");
    let (boots, kernels) = boots_and_kernels(&whole);
    assert!(boots <= kernels, "{boots} boots for {kernels} kernels");

    // Shard 2 alone, then merge with shard 1's first run: the cells of the whole matrix.
    let (code, out, err) = crashrig(&[
        "matrix",
        "tests/matrix/small.yaml",
        "-n",
        "2",
        "--partition",
        "2/2",
        "--out",
        b_s,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    // debian:6.12 booted for smoke's VM shape in the resumed run: this shard restores it.
    assert_eq!(boots_and_kernels(&results(&b)), (0, 1), "{err}");
    let mut shard1 = results(&a);
    shard1["runs"].as_array_mut().unwrap().truncate(1);
    std::fs::write(
        a.join("results.json"),
        serde_json::to_string(&shard1).unwrap(),
    )
    .unwrap();
    let (code, out, err) = crashrig(&["report", "merge", a_s, b_s, "--out", m_s]);
    assert_eq!(code, 0, "{out}\n{err}");
    let m = results(&merged);
    assert_eq!(cell_ids(&m), ["debian-6.1/smoke", "debian-6.12/smoke"]);
    for run in m["runs"].as_array().unwrap() {
        assert_eq!(run["summary"]["iterations"], 2);
        assert_eq!(run["summary"]["failed"], 0);
    }
    let junit = std::fs::read_to_string(merged.join("junit-cells.xml")).unwrap();
    assert_eq!(
        junit.matches("<testcase").count(),
        2,
        "one test case per cell: {junit}"
    );
    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    assert_eq!(
        junit.matches("<testcase").count(),
        4,
        "one test case per iteration: {junit}"
    );
    assert!(std::fs::read_to_string(merged.join("summary.md"))
        .unwrap()
        .contains("| debian-6.1 | smoke |"));
}

#[test]
fn repro_replays_one_iteration_with_its_recorded_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    let (code, out, err) = crashrig(&[
        "run",
        "tests/seed-kill-umount.yaml",
        "-n",
        "2",
        "--seed",
        "42",
        "--out",
        first.to_str().unwrap(),
    ]);
    assert!(code == 0 || code == 1, "{out}\n{err}");
    let original = results(&first);
    let again = tmp.path().join("again");
    let (code, out, err) = crashrig(&[
        "repro",
        first.to_str().unwrap(),
        "--iteration",
        "2",
        "--run",
        "1",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(code == 0 || code == 1, "{out}\n{err}");
    let replay = results(&again);
    let run = &replay["runs"][0];
    assert_eq!(run["seed"], 42);
    assert_eq!(run["iterations"].as_array().unwrap().len(), 1);
    let it = &run["iterations"][0];
    assert_eq!(it["iteration"], 2);
    assert_eq!(
        it["seed"], original["runs"][0]["iterations"][1]["seed"],
        "same iteration seed, so the same sleeps"
    );
    let sleep = |it: &Value| {
        it["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "sleep")
            .unwrap()["duration_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(
        (sleep(it) - sleep(&original["runs"][0]["iterations"][1])).abs() < 150.0,
        "same random sleep"
    );
    assert_eq!(
        run["kernel"]["image_sha256"],
        original["runs"][0]["kernel"]["image_sha256"]
    );
    assert_eq!(run["guest_image"], original["runs"][0]["guest_image"]);

    // An iteration the run never recorded is named, not run with a made-up seed.
    let (code, _, err) = crashrig(&["repro", first.to_str().unwrap(), "--iteration", "3"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("find iteration 3 of run 1: it recorded iterations 1 to 2"),
        "{err}"
    );

    // A matrix cell replays too: its results name the kernel by its spec (they named it by
    // the matrix's label, `debian-6.1`, which repro could not resolve).
    let cell = tmp.path().join("cell");
    let (code, out, err) = crashrig(&[
        "matrix",
        "tests/matrix/small.yaml",
        "-n",
        "1",
        "--partition",
        "1/2",
        "--out",
        cell.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let m = results(&cell);
    assert_eq!(m["runs"][0]["kernel"]["spec"], "debian:6.1", "{m}");
    assert_eq!(m["runs"][0]["cell"]["kernel"], "debian-6.1", "{m}");
    let (code, out, err) = crashrig(&["repro", cell.to_str().unwrap(), "--iteration", "1"]);
    assert_eq!(code, 0, "{out}\n{err}");
}
