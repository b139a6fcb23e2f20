//! `crashrig matrix`: the async loop that runs matrix cells (in parallel up to `-j`), around
//! the pure planning in `crate::matrix`.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::cache::Cache;
use crate::cli::{prepare_image, resolve_kernel_with, CliError, CommonVmArgs};
use crate::kernel::ResolvedKernel;
use crate::matrix::{self, MatrixArgs};
use crate::report::durable::write_json_atomic;
use crate::report::events::{Event, EventSink, Forward, Reporter};
use crate::report::terminal::Terminal;
use crate::report::writer::ResultsWriter;
use crate::report::HostInfo;
use crate::run::{run_scenario, LoadedScenario, RunOptions};

pub async fn matrix(args: MatrixArgs, vm: CommonVmArgs) -> Result<i32, CliError> {
    let m = matrix::load(&args.matrix)
        .map_err(|e| CliError::Scenario(crate::report::error_chain(&e)))?;
    if !vm.kernels.is_empty() {
        return Err(CliError::Other(
            "a matrix names its kernels in the matrix file; --kernel does not apply".into(),
        ));
    }
    let all = m.cells();
    let mut cells = match &args.partition {
        Some(p) => p.select(&all),
        None => all.clone(),
    };
    let out = crate::report::durable::claim_results_dir(
        vm.out.as_deref(),
        &crate::cli::default_out(),
        args.resume,
    )?;
    let existing = if args.resume {
        crate::cli::read_for_resume(&out)?
    } else {
        None
    };
    if let Some(existing) = &existing {
        cells = matrix::pending_cells(&cells, existing);
    }

    // Validate every scenario (with its parameters) before booting anything.
    let mut scenarios: HashMap<usize, LoadedScenario> = HashMap::new();
    let mut problems = Vec::new();
    for cell in &cells {
        match crate::cli::load_scenario(&cell.scenario.path) {
            Ok(loaded) => match matrix::cell_scenario(&loaded.scenario, cell) {
                Ok(s) => {
                    scenarios.insert(
                        cell.index,
                        LoadedScenario {
                            scenario: s,
                            path: loaded.path,
                        },
                    );
                }
                Err(e) => problems.push(format!("{}: {e}", cell.id())),
            },
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        eprintln!("{}", problems.join("\n"));
        return Ok(crate::exit::CONFIG_OR_INFRA);
    }

    let cache = Cache::from_env();
    let mut kernels: HashMap<String, Arc<ResolvedKernel>> = HashMap::new();
    let mut build_sink = EventSink::new(vec![
        Box::new(Terminal::new(vm.verbose)) as Box<dyn Reporter>
    ]);
    crate::cli::sweep_leftovers(&cache, &mut build_sink);
    for cell in &cells {
        let k = &cell.kernel;
        if kernels.contains_key(&k.label) {
            continue;
        }
        let scenario_kconfig: Vec<String> = cells
            .iter()
            .filter(|c| c.kernel.label == k.label)
            .flat_map(|c| scenarios[&c.index].scenario.kconfig.clone())
            .collect();
        let mut resolved = resolve_kernel_with(
            &k.spec_text,
            &k.kconfig,
            &k.patches,
            &scenario_kconfig,
            &cache,
            &mut build_sink,
        )
        .await?;
        resolved.spec = k.label.clone();
        kernels.insert(k.label.clone(), Arc::new(resolved));
    }
    let Some(first) = cells.first() else {
        eprintln!("crashrig: every cell of this matrix (or shard) has finished; nothing to run");
        return finish(&out, &args, &m);
    };
    let bare = crate::image::bare_initramfs(&cache)?;
    let (accel, reason) =
        crate::vm::choose_accel(vm.accel, &kernels[&first.kernel.label].image, &bare).await?;
    let image = Arc::new(prepare_image(vm.recipe.clone(), &cache).await?);

    let (cores, mem) = matrix::host_resources();
    let per_vm = cells
        .iter()
        .map(|c| scenarios[&c.index].scenario.vm.memory.0)
        .max()
        .unwrap_or(2 << 30);
    let jobs = args
        .jobs
        .unwrap_or_else(|| matrix::default_jobs(cores, mem.unwrap_or(u64::MAX), per_vm))
        .max(1);

    let host = HostInfo {
        qemu: crate::vm::qemu::qemu_version().await,
        accel: accel.to_string(),
        accel_reason: reason.clone(),
    };
    let writer = match existing.clone() {
        Some(existing) => {
            let mut kept = existing.clone();
            kept.runs = matrix::finished_runs(&all, &existing);
            ResultsWriter::with_existing(&out, kept)
        }
        None => ResultsWriter::new(&out, host),
    };
    let reporters: Vec<Box<dyn Reporter>> =
        vec![Box::new(Terminal::new(vm.verbose)), Box::new(writer)];
    let mut sink = EventSink::new(reporters);
    sink.info(format!("accelerator: {accel} ({reason})"));
    sink.info(format!(
        "{} cells to run, {jobs} at a time; results: {}",
        cells.len(),
        out.display()
    ));

    let opts = RunOptions {
        iterations: args.iterations.or(m.iterations),
        ..RunOptions::new(accel, out.clone(), cache)
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let semaphore = Arc::new(Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    for cell in cells {
        let loaded = scenarios.remove(&cell.index).expect("loaded above");
        let kernel = kernels[&cell.kernel.label].clone();
        let image = image.clone();
        let mut opts = opts.clone();
        opts.cell = Some(cell.info());
        // A cell a killed run left unfinished continues with its finished iterations.
        opts.resume = existing.as_ref().and_then(|r| {
            r.runs
                .iter()
                .find(|run| run.cell.as_ref().is_some_and(|c| c.id == cell.id()))
                .cloned()
        });
        // --iterations beats the matrix file, which beats the scenario.
        opts.iterations = args.iterations.or(cell.iterations).or(m.iterations);
        let tx = tx.clone();
        let semaphore = semaphore.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let mut sink = EventSink::new(vec![Box::new(Forward(tx))]);
            run_scenario(&loaded, &kernel, &image, &opts, cell.index, &mut sink).await
        });
    }
    drop(tx);
    // Events arrive as cells make progress; the channel closes when every cell is done.
    while let Some(event) = rx.recv().await {
        sink.emit(event);
    }
    while tasks.join_next().await.is_some() {}
    crate::cli::finish_sink(&mut sink, 0)?;
    finish(&out, &args, &m)
}

/// Orders the runs as the matrix expands, writes junit.xml, summary.md and the baseline, and
/// decides the exit code.
fn finish(out: &std::path::Path, args: &MatrixArgs, m: &matrix::Matrix) -> Result<i32, CliError> {
    let path = out.join("results.json");
    let mut results = matrix::read_results(&path).map_err(|e| CliError::Other(e.to_string()))?;
    matrix::sort_runs(&mut results);
    write_json_atomic(&path, &results).map_err(|source| CliError::Out {
        path: path.clone(),
        source,
    })?;
    let baseline_path = args.baseline.clone().or_else(|| m.baseline.clone());
    let baseline = baseline_path
        .as_deref()
        .map(matrix::load_baseline)
        .transpose()
        .map_err(|e| CliError::Other(e.to_string()))?;
    if let Some(p) = &args.write_baseline {
        matrix::write_json(p, &matrix::baseline_from(&results))
            .map_err(|e| CliError::Other(e.to_string()))?;
    }
    let outcome = matrix::write_reports(out, &results, baseline.as_ref())
        .map_err(|e| CliError::Other(e.to_string()))?;
    println!("{}", outcome.markdown);
    if !outcome.missing_cells.is_empty() {
        eprintln!(
            "crashrig: note: {} cells of the matrix are not in these results (other shards?)",
            outcome.missing_cells.len()
        );
    }
    Ok(outcome.exit_code)
}
