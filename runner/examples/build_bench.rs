//! Kernel build benchmark (issue 3): on the same tree and config, plain `make -j$(nproc)` from
//! scratch vs crashrig's from-scratch build (cold ccache), a cache hit, and a rebuild after a
//! patch touching one `.c` file.
//!
//! ```text
//! cargo run -p crashrig --example build_bench [-- WORKDIR]
//! ```
//!
//! WORKDIR (default: a new directory under /var/tmp) holds its own crashrig cache and ccache
//! directory, so nothing is warm; it is kept for inspection. Uses `debian-source:6.1`,
//! `base` + `fs-xfs` and `runner/tests/fixtures/{marker,one-file}.patch`. CPU-heavy (two
//! full kernel builds): run it once, on an otherwise idle machine; CPU seconds are printed
//! beside wall times because wall times on a shared machine mostly measure the neighbours.
//! `CCACHE_DISABLE=1` in the environment measures crashrig without ccache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crashrig::cache::Cache;
use crashrig::kernel::{self, build, exec::Exec, kconfig, source, BuildOptions, KernelSpec};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(cmd: &mut Command) -> Result<(), Box<dyn std::error::Error>> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed:\n{}{}",
            cmd,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// CPU seconds (user + system) of waited-for child processes so far: unlike wall time, it
/// does not grow when other work shares the machine.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let work = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => tempfile::Builder::new()
            .prefix("crashrig-bench-")
            .tempdir_in("/var/tmp")?
            .keep(),
    };
    std::fs::create_dir_all(&work)?;
    let cache = Cache::at(work.join("cache"));
    // a cold compiler cache for crashrig's from-scratch build; plain make does not use it
    std::env::set_var("CCACHE_DIR", work.join("ccache"));
    let jobs = std::thread::available_parallelism()?.get();
    let exec = Exec::default();
    println!("workdir {}  jobs {jobs}", work.display());

    let t = Instant::now();
    let src = source::debian_source(&exec, "6.1", &cache, &mut |_| {})?;
    let t_source = t.elapsed().as_secs_f64();
    println!(
        "source: {} ({t_source:.1}s, once per package version)",
        src.identity
    );

    // plain make: its own checkout of the same commit + the same patch and fragments
    let plain_src = work.join("plain-src");
    let plain_obj = work.join("plain-obj");
    if !plain_src.exists() {
        run(Command::new("git")
            .arg("-C")
            .arg(&src.repo)
            .args(["worktree", "add", "--detach"])
            .arg(&plain_src)
            .arg(&src.commit))?;
        run(Command::new("git")
            .arg("-C")
            .arg(&plain_src)
            .arg("apply")
            .arg(fixture("marker.patch")))?;
    }
    std::fs::create_dir_all(&plain_obj)?;
    let fragments = kconfig::load_fragments(
        &["base".to_string(), "fs-xfs".to_string()],
        &kconfig::kconfigs_dir(),
    )?;
    run(Command::new("make")
        .arg("-C")
        .arg(&plain_src)
        .arg(format!("O={}", plain_obj.display()))
        .arg("tinyconfig"))?;
    let mut merge = Command::new(plain_src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&plain_obj)
        .args(["-m", "-O"])
        .arg(&plain_obj)
        .arg(plain_obj.join(".config"));
    for f in &fragments {
        merge.arg(&f.path);
    }
    run(&mut merge)?;
    run(Command::new("make")
        .arg("-C")
        .arg(&plain_src)
        .arg(format!("O={}", plain_obj.display()))
        .arg("olddefconfig"))?;
    let (t, cpu) = (Instant::now(), children_cpu());
    run(Command::new("make")
        .arg("-C")
        .arg(&plain_src)
        .arg(format!("O={}", plain_obj.display()))
        .arg(format!("-j{jobs}"))
        .arg("bzImage"))?;
    let t_plain = t.elapsed().as_secs_f64();
    let cpu_plain = children_cpu() - cpu;
    println!("plain make -j{jobs} bzImage from scratch: {t_plain:.1}s ({cpu_plain:.0} CPU s)");

    let spec = KernelSpec::DebianSource {
        series: "6.1".into(),
    };
    let opts = BuildOptions {
        kconfig: vec!["fs-xfs".into()],
        patches: vec![fixture("marker.patch")],
        scenario_kconfig: vec![],
    };
    let quiet = |_: build::BuildProgress| {};
    let (t, cpu) = (Instant::now(), children_cpu());
    let k = kernel::resolve(&spec, &opts, &cache, &quiet).await?;
    let t_scratch = t.elapsed().as_secs_f64();
    let cpu_scratch = children_cpu() - cpu;
    println!(
        "crashrig from scratch (worktree, patch, config, make, install; cold ccache): {t_scratch:.1}s ({:+.1}% vs plain make), {cpu_scratch:.0} CPU s ({:+.1}%)",
        (t_scratch / t_plain - 1.0) * 100.0,
        (cpu_scratch / cpu_plain - 1.0) * 100.0
    );

    let t = Instant::now();
    let hit = kernel::resolve(&spec, &opts, &cache, &quiet).await?;
    let t_hit = t.elapsed().as_secs_f64();
    assert_eq!(hit.build_key, k.build_key);
    println!("crashrig cache hit: {t_hit:.2}s");

    let mut one = opts.clone();
    one.patches.push(fixture("one-file.patch"));
    let t = Instant::now();
    let r = kernel::resolve(&spec, &one, &cache, &quiet).await?;
    let t_one = t.elapsed().as_secs_f64();
    let log =
        std::fs::read_to_string(r.image.parent().unwrap_or(Path::new(".")).join("build.log"))?;
    let compiled = log.lines().filter(|l| l.starts_with("  CC ")).count();
    println!("crashrig one-file rebuild: {t_one:.1}s ({compiled} CC lines)");

    println!(
        "\n| step | seconds |\n|---|---|\n| source prep (download, unpack, commit) | {t_source:.1} |\n| plain make from scratch | {t_plain:.1} (CPU {cpu_plain:.0}) |\n| crashrig from scratch | {t_scratch:.1} (CPU {cpu_scratch:.0}) |\n| cache hit | {t_hit:.2} |\n| one-file rebuild | {t_one:.1} |"
    );
    Ok(())
}
