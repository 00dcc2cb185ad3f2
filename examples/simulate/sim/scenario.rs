//! The built-in scenarios: backends like real ones, and the load on them.
//!
//! Unless a scenario says otherwise: four backends, each serving 8 requests
//! at once with a log-normal service time of median 20 ms and p99 80 ms
//! (mean 24 ms: about 335 requests/s each, 1340 together); 600 requests/s
//! (45 % of capacity) from 500 clients, Poisson; 30 s; the proxy's timeout
//! per try 2 s. Tokio's timer counts in milliseconds, so every latency is
//! too; service times of tens of milliseconds keep that fine enough.

use std::time::Duration;

use super::load::{Arrivals, Load};
use super::model::{BackendModel, Event, ServiceTime};

/// A situation to run every strategy in.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its short name (the table's first column).
    pub name: &'static str,
    /// What it is, in a line.
    pub about: &'static str,
    /// The backends.
    pub backends: Vec<BackendModel>,
    /// The clients.
    pub load: Load,
    /// How long it runs.
    pub duration: Duration,
    /// The proxy's timeout per try (504 past it).
    pub timeout: Duration,
}

impl Scenario {
    /// The offered load as a share of the backends' nominal capacity (their
    /// slots over their mean service time, events and late joins aside).
    pub fn nominal_load(&self) -> f64 {
        let capacity: f64 = self
            .backends
            .iter()
            .map(|b| b.concurrency as f64 / b.service.mean_seconds())
            .sum();
        let work = 1.0 + self.load.upload_share * (self.load.upload_cost - 1.0);
        self.load.arrivals.mean_rate() * work / capacity.max(f64::MIN_POSITIVE)
    }

    /// The same scenario, run for `duration` (the tests' shorter runs).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The usual service time.
pub const SERVICE: ServiceTime = ServiceTime::LogNormal {
    median: ms(20),
    p99: ms(80),
};

fn backend() -> BackendModel {
    BackendModel::new(SERVICE, 8)
}

fn load(rate: f64) -> Load {
    Load {
        arrivals: Arrivals::Poisson { rate },
        clients: 500,
        upload_share: 0.0,
        upload_cost: 1.0,
    }
}

fn scenario(name: &'static str, about: &'static str, backends: Vec<BackendModel>) -> Scenario {
    Scenario {
        name,
        about,
        backends,
        load: load(600.0),
        duration: secs(30),
        timeout: secs(2),
    }
}

/// Four equal backends.
pub fn equal() -> Scenario {
    scenario("equal", "four equal backends", vec![backend(); 4])
}

/// One of four backends takes five times as long, all along.
pub fn slow() -> Scenario {
    let mut backends = vec![backend(); 4];
    backends[3] = backend().event(Event::Slow {
        from: secs(0),
        until: secs(3600),
        factor: 5.0,
    });
    scenario("slow-5x", "one backend 5x slower", backends)
}

/// One backend stops the world for 100 ms every 2 s.
pub fn gc() -> Scenario {
    let mut backends = vec![backend(); 4];
    backends[3] = backend().event(Event::Gc {
        every: secs(2),
        pause: ms(100),
    });
    scenario("gc", "one backend pauses 100 ms every 2 s", backends)
}

/// One backend answers 20 % of its requests 503.
pub fn errors() -> Scenario {
    let mut backends = vec![backend(); 4];
    backends[3] = backend().errors(0.2);
    scenario("errors-20", "one backend fails 20 % (fast 503s)", backends)
}

/// One backend's process is gone from 5 s to 12 s.
pub fn dies() -> Scenario {
    let mut backends = vec![backend(); 4];
    backends[3] = backend().event(Event::Down {
        from: secs(5),
        until: secs(12),
    });
    scenario("dies", "one backend down from 5 s to 12 s", backends)
}

/// Three backends; a fourth joins at 10 s, cold (3x slower for 5 s).
pub fn added() -> Scenario {
    added_at(ADDED_AT)
}

/// The time the added backend joins.
pub const ADDED_AT: Duration = secs(10);

/// [`added`], the fourth backend joining at `at` (the tests' shorter runs).
pub fn added_at(at: Duration) -> Scenario {
    let mut backends = vec![backend(); 3];
    backends.push(backend().joins_at(at).event(Event::Slow {
        from: at,
        until: at + secs(5),
        factor: 3.0,
    }));
    scenario("added", "a cold 4th backend joins at 10 s", backends)
}

/// Three backends of sizes 5, 1, 1, weighted so.
pub fn weights() -> Scenario {
    let backends = vec![
        BackendModel::new(SERVICE, 20).weight(5),
        BackendModel::new(SERVICE, 4).weight(1),
        BackendModel::new(SERVICE, 4).weight(1),
    ];
    let mut scenario = scenario("weights", "sizes and weights 5/1/1", backends);
    // 28 slots: about 1170 requests/s; 600 is half.
    scenario.load = load(600.0);
    scenario
}

/// 1 % of requests are uploads a hundred times the work of a read, on
/// backends of 4 workers each (a worker-pool app: an upload holds a worker).
pub fn costs() -> Scenario {
    let mut scenario = scenario(
        "costs-100x",
        "1 % uploads of 100x the work, 4 workers each",
        vec![BackendModel::new(SERVICE, 4); 4],
    );
    // Mean work per request 1.99 reads: 180/s is 54 % of the 16 workers.
    scenario.load = Load {
        upload_share: 0.01,
        upload_cost: 100.0,
        ..load(180.0)
    };
    // Uploads take seconds; the timeout is set for them.
    scenario.timeout = secs(20);
    scenario
}

/// Equal backends, the load in bursts: 1 s at 1200/s, 1 s of nothing.
pub fn bursts() -> Scenario {
    let mut scenario = scenario("bursts", "1 s at 1200/s, 1 s idle", vec![backend(); 4]);
    scenario.load.arrivals = Arrivals::OnOff {
        on: secs(1),
        rate_on: 1200.0,
        off: secs(1),
        rate_off: 0.0,
    };
    scenario
}

/// Every built-in scenario, in the table's order.
pub fn all() -> Vec<Scenario> {
    vec![
        equal(),
        slow(),
        gc(),
        errors(),
        dies(),
        added(),
        weights(),
        costs(),
        bursts(),
    ]
}
