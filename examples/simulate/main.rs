//! Runs every strategy of tower-lb through every built-in scenario in
//! virtual time, and prints what each did to latency, errors and the
//! backends' shares: evidence for choosing a strategy.
//!
//! ```sh
//! cargo run --release --example simulate                      # the table on stdout, the chart in target/simulate.svg
//! cargo run --release --example simulate -- --seed 7 --scenario slow-5x --svg slow.svg
//! ```
//!
//! The crate's own `LoadBalance`, `PassiveHealth`, slow start and
//! `Failover` run against simulated backends (tower services sleeping in
//! tokio's paused clock; see `sim/`), so a run is the crate's behaviour, not
//! a model of it. The same seed gives the same table.

#![forbid(unsafe_code)]

// Shared with `tests/simulate.rs`, which uses other parts of it.
#[allow(dead_code)]
mod sim;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use sim::run::{Layers, Outcome, strategies};
use sim::scenario::Scenario;

/// Simulates every strategy in every scenario, in virtual time.
#[derive(Debug, Parser)]
struct Args {
    /// The seed of the arrivals, the requests' draws and the crate's random
    /// picks: the same seed, the same table.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "target/simulate.svg")]
    svg: PathBuf,
    /// Only this scenario (repeat for more); all by default.
    #[arg(long)]
    scenario: Vec<String>,
    /// Run each scenario this long instead of its own duration (e.g. `10s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Threads to run scenarios on (each run is single-threaded and
    /// deterministic on its own); default: the cores this process may use.
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match simulate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("simulate: {error}");
            ExitCode::from(2)
        }
    }
}

fn simulate(args: &Args) -> Result<(), String> {
    let mut scenarios: Vec<Scenario> = sim::scenario::all();
    if !args.scenario.is_empty() {
        for name in &args.scenario {
            if !scenarios.iter().any(|s| s.name == name) {
                let known: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
                return Err(format!(
                    "unknown scenario `{name}` (known: {})",
                    known.join(", ")
                ));
            }
        }
        scenarios.retain(|s| args.scenario.iter().any(|n| n == s.name));
    }
    if let Some(duration) = args.duration {
        scenarios = scenarios
            .into_iter()
            .map(|s| s.with_duration(duration))
            .collect();
    }
    let strategies = strategies();
    let jobs: Vec<(usize, &Scenario, &'static str, Layers)> = scenarios
        .iter()
        .flat_map(|s| {
            strategies
                .iter()
                .flat_map(move |&st| Layers::ALL.iter().map(move |&l| (s, st, l)))
        })
        .enumerate()
        .map(|(i, (s, st, l))| (i, s, st, l))
        .collect();
    let threads = args
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .clamp(1, jobs.len().max(1));
    let started = std::time::Instant::now();
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<Result<Outcome, String>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
                        let index = *next;
                        *next += 1;
                        index
                    };
                    let Some(&(i, scenario, strategy, layers)) = jobs.get(index) else {
                        break;
                    };
                    let outcome = sim::run::run(scenario, strategy, layers, args.seed);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(outcome);
                }
            });
        }
    });
    let outcomes: Vec<Outcome> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("a run did not finish".into())))
        .collect::<Result<_, _>>()?;
    let requests: usize = outcomes.iter().map(|o| o.latencies.len()).sum();
    let simulated: Duration = scenarios
        .iter()
        .map(|s| s.duration * (strategies.len() * Layers::ALL.len()) as u32)
        .sum();
    println!("Seed {}. Scenarios:\n", args.seed);
    for s in &scenarios {
        println!(
            "- `{}`: {} ({:.0} requests/s, {:.0} % of nominal capacity, {} s)",
            s.name,
            s.about,
            s.load.arrivals.mean_rate(),
            s.nominal_load() * 100.0,
            s.duration.as_secs()
        );
    }
    println!();
    println!("p99 latency in ms, and the share of requests failed where any did:\n");
    print!("{}", sim::report::summary(&outcomes));
    println!("\nEvery run:\n");
    print!("{}", sim::report::table(&outcomes));
    if let Some(parent) = args.svg.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(&args.svg, sim::report::svg(&outcomes))
        .map_err(|e| format!("{}: {e}", args.svg.display()))?;
    eprintln!(
        "{} runs, {requests} requests, {:.0} s simulated in {:.1} s on {threads} threads; chart: {}",
        outcomes.len(),
        simulated.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        args.svg.display()
    );
    Ok(())
}
