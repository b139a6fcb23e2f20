//! Builds `debian-source:6.1` with `base` + `fs-xfs` and a marker patch, for real.
//!
//! Slow (a from-scratch build took 16 minutes on this project's 2-core machine; later runs hit
//! the cache in `$CRASHRIG_CACHE`, and ccache), so ignored by default:
//! `cargo test -p crashrig --test kernel_build -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crashrig::cache::Cache;
use crashrig::kernel::{self, BuildOptions, BuildProgress, KernelError, KernelSpec, Stage};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

const MARKER: &[u8] = b"crashrig-marker: patched kernel booted";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn build(
    opts: &BuildOptions,
    cache: &Cache,
) -> (Result<kernel::ResolvedKernel, KernelError>, Vec<Stage>, f64) {
    let spec = KernelSpec::DebianSource {
        series: "6.1".into(),
    };
    let stages = Mutex::new(Vec::new());
    let progress = |p: BuildProgress| {
        let mut s = stages.lock().unwrap();
        if s.last() != Some(&p.stage) {
            eprintln!("[{:>6.1}s] {}", p.elapsed.as_secs_f64(), p.stage);
            s.push(p.stage);
        }
    };
    let start = Instant::now();
    let result = kernel::resolve(&spec, opts, cache, &progress).await;
    let secs = start.elapsed().as_secs_f64();
    (result, stages.into_inner().unwrap(), secs)
}

fn git_status(dir: &Path) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "builds a kernel (minutes); run with --ignored"]
async fn debian_source_with_a_marker_patch_builds_caches_and_rebuilds_incrementally() {
    let cache = Cache::from_env();
    let opts = BuildOptions {
        kconfig: vec!["fs-xfs".into()],
        patches: vec![fixture("marker.patch")],
        scenario_kconfig: vec![],
    };

    let (first, _, secs) = build(&opts, &cache).await;
    let k = first.unwrap_or_else(|e| panic!("build failed: {e}"));
    eprintln!(
        "first build (or earlier cache entry): {secs:.1}s -> {}",
        k.image.display()
    );
    assert!(k.image.is_file());
    let vmlinux = std::fs::read(k.vmlinux.as_ref().unwrap()).unwrap();
    assert!(contains(&vmlinux, MARKER), "marker not in vmlinux");
    assert!(k.release.as_deref().unwrap().starts_with("6.1."), "{k:?}");
    assert!(k.version.ends_with("+1 patches"), "{}", k.version);
    let entry = k.image.parent().unwrap();
    let config = std::fs::read_to_string(entry.join("config")).unwrap();
    assert!(config.contains("\nCONFIG_XFS_FS=y\n"));
    assert!(config.contains("\nCONFIG_IO_URING=y\n"));
    assert!(entry.join("build.log").is_file());

    // a second identical build is a hit: no stage runs at all
    let (again, stages, secs) = build(&opts, &cache).await;
    let again = again.unwrap();
    eprintln!("cache hit: {secs:.2}s");
    assert_eq!(again.build_key, k.build_key);
    assert_eq!(again.image_sha256, k.image_sha256);
    assert_eq!(stages, []);
    assert!(secs < 5.0, "cache hit took {secs:.1}s");

    // A patch that does not apply (its context is not in the tree), and one the tree already
    // has: each named, and the worktree is left clean.
    let tmp = tempfile::tempdir().unwrap();
    let conflict = tmp.path().join("conflict.patch");
    std::fs::write(
        &conflict,
        "--- a/init/main.c\n+++ b/init/main.c\n@@ -1507,6 +1507,7 @@\n \n \
         \trcu_end_inkernel_boot();\n \n+\tpr_info(\"never applied\\n\");\n \
         \tno_such_call_in_main_c();\n \n \tif (ramdisk_execute_command) {\n",
    )
    .unwrap();
    for (extra, says) in [
        (conflict, "init/main.c"),
        (fixture("marker.patch"), "it is already applied"),
    ] {
        let mut broken = opts.clone();
        broken.patches.push(extra.clone());
        let (err, _, _) = build(&broken, &cache).await;
        let err = err.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, KernelError::PatchDoesNotApply { .. }),
            "{text}"
        );
        let name = extra.file_name().unwrap().to_str().unwrap();
        assert!(text.contains(name) && text.contains(says), "{text}");
        let worktrees = cache.root().join("worktrees");
        for wt in std::fs::read_dir(&worktrees).unwrap() {
            assert_eq!(git_status(&wt.unwrap().path()), "");
        }
    }

    // an option whose dependency cannot hold: listed with its `depends on`
    let dir = tempfile::tempdir().unwrap();
    let impossible = dir.path().join("impossible.config");
    std::fs::write(&impossible, "CONFIG_KASAN_SW_TAGS=y\n").unwrap();
    let mut bad_config = opts.clone();
    bad_config.kconfig.push(impossible.display().to_string());
    let (err, _, _) = build(&bad_config, &cache).await;
    let text = err.unwrap_err().to_string();
    assert!(
        text.starts_with("configure the kernel: 1 requested kconfig option did not hold"),
        "{text}"
    );
    assert!(
        text.contains("CONFIG_KASAN_SW_TAGS=y (impossible.config:1)"),
        "{text}"
    );
    assert!(text.contains("depends on"), "{text}");

    // one more patch touching one .c file: the build directory is reused
    let mut one_file = opts.clone();
    one_file.patches.push(fixture("one-file.patch"));
    let (rebuilt, stages, secs) = build(&one_file, &cache).await;
    let rebuilt = rebuilt.unwrap_or_else(|e| panic!("rebuild failed: {e}"));
    eprintln!("one-file rebuild: {secs:.1}s");
    assert!(
        rebuilt.version.ends_with("+2 patches"),
        "{}",
        rebuilt.version
    );
    assert_ne!(rebuilt.build_key, k.build_key);
    if stages.contains(&Stage::Compile) {
        let log =
            std::fs::read_to_string(rebuilt.image.parent().unwrap().join("build.log")).unwrap();
        let compiled: Vec<&str> = log.lines().filter(|l| l.starts_with("  CC ")).collect();
        assert!(
            compiled.iter().any(|l| l.ends_with("fs/namespace.o")),
            "{compiled:?}"
        );
        assert!(compiled.len() < 20, "rebuilt too much: {compiled:?}");
        // The build directory is a direct child of crashrig's worktree, so kbuild names
        // sources relative to it and ccache entries serve every repository of the same
        // source: the command recorded for the object holds no absolute worktree path.
        let mut checked = 0;
        for wt in std::fs::read_dir(cache.root().join("worktrees")).unwrap() {
            let wt = wt.unwrap().path();
            for obj in std::fs::read_dir(&wt).unwrap() {
                let obj = obj.unwrap().path();
                let Ok(cmd) = std::fs::read_to_string(obj.join("fs/.namespace.o.cmd")) else {
                    continue;
                };
                assert!(
                    obj.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".crashrig-obj-"),
                    "{}",
                    obj.display()
                );
                assert!(cmd.contains(" ../fs/namespace.c"), "{cmd}");
                assert!(!cmd.contains(wt.to_str().unwrap()), "{cmd}");
                checked += 1;
            }
        }
        assert!(
            checked > 0,
            "no fs/.namespace.o.cmd in a worktree's build directory"
        );
    }
}
