//! The simulator held to results known from queueing theory and from the
//! crate's own promises: if these fail, either the simulator or the crate
//! is wrong, and the README's table with it.
//!
//! Each runs the crate's real layers in tokio's paused clock (the
//! simulator's runs build their own paused runtimes), for a few simulated
//! seconds: the whole file takes seconds of real time.

#[path = "../examples/simulate/sim/mod.rs"]
#[allow(dead_code)]
mod sim;

use std::time::Duration;

use sim::run::{Layers, Outcome, run};
use sim::scenario::{self, Scenario};

const SEED: u64 = 1;

fn outcome(scenario: &Scenario, strategy: &'static str, layers: Layers) -> Outcome {
    match run(scenario, strategy, layers, SEED) {
        Ok(outcome) => outcome,
        Err(error) => panic!("{} / {strategy}: {error}", scenario.name),
    }
}

fn p99(o: &Outcome) -> Duration {
    o.percentile(0.99)
}

#[test]
fn with_one_slow_backend_p2c_and_least_connections_beat_round_robin_on_p99() {
    let slow = scenario::slow().with_duration(Duration::from_secs(8));
    let rr = outcome(&slow, "round-robin", Layers::Bare);
    let p2c = outcome(&slow, "p2c", Layers::Bare);
    let lc = outcome(&slow, "least-connections", Layers::Bare);
    // Round-robin sends the slow backend a full quarter, more than it can
    // serve: its queue grows until the timeout.
    assert!(p99(&rr) >= Duration::from_secs(1), "{:?}", p99(&rr));
    for o in [&p2c, &lc] {
        assert!(
            p99(o) * 4 < p99(&rr),
            "{} {:?} vs {:?}",
            o.strategy,
            p99(o),
            p99(&rr)
        );
        assert_eq!(o.errors, 0, "{}", o.strategy);
        // They send the slow backend less than its quarter.
        assert!(o.shares()[3] < 0.15, "{} {:?}", o.strategy, o.shares());
    }
    assert!(rr.errors > 0, "round-robin's timeouts");
}

#[test]
fn with_varied_request_costs_least_connections_beats_round_robin() {
    let costs = scenario::costs().with_duration(Duration::from_secs(15));
    let rr = outcome(&costs, "round-robin", Layers::Bare);
    let lc = outcome(&costs, "least-connections", Layers::Bare);
    // Round-robin queues reads behind uploads on whichever backend they
    // landed; least-connections sends reads to the backends without.
    assert!(p99(&lc) * 3 < p99(&rr), "{:?} vs {:?}", p99(&lc), p99(&rr));
    // The uploads themselves take what they take under any strategy.
    let p999 = |o: &Outcome| o.percentile(0.999).as_secs_f64();
    assert!((p999(&lc) / p999(&rr) - 1.0).abs() < 0.25);
}

#[test]
fn with_equal_backends_every_strategy_is_within_noise_of_the_others() {
    let equal = scenario::equal().with_duration(Duration::from_secs(5));
    let outcomes: Vec<Outcome> = sim::run::strategies()
        .into_iter()
        .map(|strategy| outcome(&equal, strategy, Layers::Bare))
        .collect();
    let spread = |q: f64| {
        let values: Vec<f64> = outcomes
            .iter()
            .map(|o| o.percentile(q).as_secs_f64())
            .collect();
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        max / min
    };
    assert!(spread(0.5) < 1.1, "p50 spread {}", spread(0.5));
    assert!(spread(0.99) < 1.25, "p99 spread {}", spread(0.99));
    for o in &outcomes {
        assert_eq!(o.errors, 0, "{}", o.strategy);
        assert!(
            o.shares().iter().all(|s| (0.2..0.3).contains(s)),
            "{} {:?}",
            o.strategy,
            o.shares()
        );
    }
}

/// The added backend's tries in second `k` over the mean of the others':
/// its share of a full member's traffic.
fn relative_share(o: &Outcome, second: usize) -> f64 {
    let at = |b: usize| f64::from(o.tries_per_second[b].get(second).copied().unwrap_or(0));
    let others = (at(0) + at(1) + at(2)) / 3.0;
    at(3) / others.max(1.0)
}

#[test]
fn slow_start_ramps_as_configured() {
    let at = Duration::from_secs(1);
    let added = scenario::added_at(at).with_duration(at + Duration::from_secs(13));
    let ramped = outcome(&added, "round-robin", Layers::Guarded);
    let joined = at.as_secs() as usize;
    let window = sim::run::SLOW_START.as_secs_f64();
    for k in 0..sim::run::SLOW_START.as_secs() as usize {
        // The crate's ramp: 10 % at once, then linear to full over the
        // window; round-robin gives a ramping backend exactly that share
        // of a full member's traffic.
        let expected = 0.1 + 0.9 * (k as f64 + 0.5) / window;
        let measured = relative_share(&ramped, joined + k);
        assert!(
            (measured - expected).abs() < 0.1,
            "second {k} of the ramp: {measured:.3}, configured {expected:.3}"
        );
    }
    for k in 11..13 {
        let measured = relative_share(&ramped, joined + k);
        assert!(
            (measured - 1.0).abs() < 0.1,
            "after the ramp, second {k}: {measured:.3}"
        );
    }
    // Without slow start the cold backend takes a full share at once.
    let bare = outcome(
        &added.clone().with_duration(at + Duration::from_secs(6)),
        "round-robin",
        Layers::Bare,
    );
    let first = relative_share(&bare, joined);
    assert!((first - 1.0).abs() < 0.1, "{first}");
    assert!(
        p99(&ramped) < p99(&bare),
        "{:?} vs {:?}",
        p99(&ramped),
        p99(&bare)
    );
}

#[test]
fn passive_health_and_failover_hide_a_dead_backend() {
    let dies = scenario::dies().with_duration(Duration::from_secs(14));
    let bare = outcome(&dies, "round-robin", Layers::Bare);
    let guarded = outcome(&dies, "round-robin", Layers::Guarded);
    // Down 7 s of 14, a quarter of the traffic: about 12 % fail bare.
    assert!(bare.error_rate() > 0.08, "{}", bare.error_rate());
    assert_eq!(guarded.errors, 0);
    assert!(guarded.retries > 0);
    assert_eq!(guarded.ejections, 1);
}

#[test]
fn the_same_seed_gives_the_same_table() {
    // The strategies that draw random numbers: through an ejection and its
    // retries (dies), and through queueing and timeouts (slow-5x).
    let runs = [
        (
            scenario::dies().with_duration(Duration::from_secs(6)),
            "p2c",
        ),
        (
            scenario::slow().with_duration(Duration::from_secs(2)),
            "random",
        ),
        (
            scenario::slow().with_duration(Duration::from_secs(2)),
            "least-connections",
        ),
    ];
    let table = |seed: u64| {
        let mut outcomes = Vec::new();
        for (scenario, strategy) in &runs {
            for layers in Layers::ALL {
                outcomes.push(run(scenario, strategy, layers, seed).unwrap());
            }
        }
        (sim::report::table(&outcomes), sim::report::svg(&outcomes))
    };
    let first = table(SEED);
    assert_eq!(first, table(SEED));
    let other = run(&runs[0].0, runs[0].1, Layers::Guarded, SEED + 1).unwrap();
    assert_ne!(
        sim::report::table(&[other]),
        sim::report::table(&[outcome(&runs[0].0, runs[0].1, Layers::Guarded)]),
        "another seed, other draws"
    );
}
