//! What a simulated backend is: how long it takes, how many it serves at
//! once, how often it fails, and what happens to it over time.
//!
//! A model is a pure function of a request's draws and the time: the
//! backend service ([`super::backends`]) turns it into sleeps in tokio's
//! paused clock. Each request carries its draws ([`Job`]) from the load
//! generator, so every strategy meets the very same requests (common random
//! numbers): a difference between two rows of the table is the strategies',
//! not the dice's.

use std::time::Duration;

/// The quantile of the standard normal distribution at 0.99: the log-normal's
/// p99 is `median × exp(σ × Z99)`.
const Z99: f64 = 2.326_348;

/// How long a request takes a backend once it has a slot, before any event.
#[derive(Clone, Copy, Debug)]
pub enum ServiceTime {
    /// Always the same.
    Fixed(Duration),
    /// Exponential with this mean (memoryless: the classic M/M/c queue).
    Exponential { mean: Duration },
    /// Log-normal with this median and p99: what measured service times of
    /// web backends look like (a body of quick answers, a long right tail).
    LogNormal { median: Duration, p99: Duration },
}

impl ServiceTime {
    /// The service time of a request with these draws, in seconds.
    pub fn seconds(&self, job: &Job) -> f64 {
        match *self {
            ServiceTime::Fixed(time) => time.as_secs_f64(),
            ServiceTime::Exponential { mean } => -mean.as_secs_f64() * (1.0 - job.uniform).ln(),
            ServiceTime::LogNormal { median, p99 } => {
                let median = median.as_secs_f64();
                let sigma = (p99.as_secs_f64() / median).ln().max(0.0) / Z99;
                median * (sigma * job.normal).exp()
            }
        }
    }

    /// The mean, in seconds (for capacity arithmetic in scenario docs).
    pub fn mean_seconds(&self) -> f64 {
        match *self {
            ServiceTime::Fixed(time) => time.as_secs_f64(),
            ServiceTime::Exponential { mean } => mean.as_secs_f64(),
            ServiceTime::LogNormal { median, p99 } => {
                let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln().max(0.0) / Z99;
                median.as_secs_f64() * (sigma * sigma / 2.0).exp()
            }
        }
    }
}

/// Something that happens to a backend during a run (times from the start).
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// Requests that start in `[from, until)` take `factor` times as long
    /// (a noisy neighbour, a cold cache, a slow disk).
    Slow {
        from: Duration,
        until: Duration,
        factor: f64,
    },
    /// Every `every` the backend stops for `pause` (a stop-the-world GC):
    /// requests in service make no progress, new ones wait.
    Gc { every: Duration, pause: Duration },
    /// The process is gone in `[from, until)`: connections are refused, and
    /// requests in service when it died are broken off.
    Down { from: Duration, until: Duration },
}

/// One backend of a scenario.
#[derive(Clone, Debug)]
pub struct BackendModel {
    /// Its weight in the set.
    pub weight: u32,
    /// How long a request takes it.
    pub service: ServiceTime,
    /// Requests it serves at once; more wait in its queue (FIFO), which is
    /// where a backend slows down under load.
    pub concurrency: usize,
    /// The share of requests it answers 503 at once (before queueing: a
    /// failing backend is usually fast at failing).
    pub error_rate: f64,
    /// What happens to it.
    pub events: Vec<Event>,
    /// When it joins the set (`None`: from the start).
    pub joins_at: Option<Duration>,
}

impl BackendModel {
    /// A backend with this service time and concurrency, weight 1, no
    /// errors, no events.
    pub fn new(service: ServiceTime, concurrency: usize) -> Self {
        Self {
            weight: 1,
            service,
            concurrency,
            error_rate: 0.0,
            events: Vec::new(),
            joins_at: None,
        }
    }

    /// With weight `weight`.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Failing this share of requests.
    pub fn errors(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// With `event`.
    pub fn event(mut self, event: Event) -> Self {
        self.events.push(event);
        self
    }

    /// Joining the set at `at`.
    pub fn joins_at(mut self, at: Duration) -> Self {
        self.joins_at = Some(at);
        self
    }

    /// Whether the process is down at `t`.
    pub fn is_down(&self, t: f64) -> bool {
        self.events.iter().any(|event| match *event {
            Event::Down { from, until } => (from.as_secs_f64()..until.as_secs_f64()).contains(&t),
            _ => false,
        })
    }

    /// When, after `t`, the process next dies (if it does).
    pub fn next_death(&self, t: f64) -> Option<f64> {
        self.events
            .iter()
            .filter_map(|event| match *event {
                Event::Down { from, .. } if from.as_secs_f64() > t => Some(from.as_secs_f64()),
                _ => None,
            })
            .reduce(f64::min)
    }

    /// Whether a request with these draws fails here.
    pub fn fails(&self, job: &Job) -> bool {
        job.error < self.error_rate
    }

    /// When a request with these draws, taking a slot at `start`, is done
    /// (seconds from the run's start).
    pub fn finish(&self, start: f64, job: &Job) -> f64 {
        let factor: f64 = self
            .events
            .iter()
            .map(|event| match *event {
                Event::Slow {
                    from,
                    until,
                    factor,
                } if (from.as_secs_f64()..until.as_secs_f64()).contains(&start) => factor,
                _ => 1.0,
            })
            .product();
        let work = self.service.seconds(job) * job.cost * factor;
        self.progress(start, work)
    }

    /// The time `work` seconds of progress from `start` end, GC pauses
    /// holding progress still.
    fn progress(&self, start: f64, work: f64) -> f64 {
        let mut now = start;
        let mut left = work;
        for event in &self.events {
            let Event::Gc { every, pause } = *event else {
                continue;
            };
            let (every, pause) = (every.as_secs_f64(), pause.as_secs_f64());
            if every <= pause || pause <= 0.0 {
                continue;
            }
            loop {
                // Pauses sit at [k × every, k × every + pause), k ≥ 1.
                let k = (now / every).floor();
                let pause_end = k * every + pause;
                if k >= 1.0 && now < pause_end {
                    now = pause_end;
                }
                let next_pause = (k + 1.0) * every;
                if now + left <= next_pause {
                    return now + left;
                }
                left -= next_pause - now;
                now = next_pause;
            }
        }
        now + left
    }
}

/// A request's draws, made by the load generator and carried in its
/// extensions: the same request is as long, and fails alike, on any backend
/// and under any strategy.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    /// Uniform in [0, 1): the exponential's draw.
    pub uniform: f64,
    /// Standard normal: the log-normal's draw.
    pub normal: f64,
    /// Uniform in [0, 1): below a backend's error rate, it fails there.
    pub error: f64,
    /// How much work it is, relative to an ordinary request (an upload: 100).
    pub cost: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cost: f64) -> Job {
        Job {
            uniform: 0.5,
            normal: 0.0,
            error: 0.5,
            cost,
        }
    }

    #[test]
    fn log_normal_has_the_given_median_and_p99() {
        let service = ServiceTime::LogNormal {
            median: Duration::from_millis(20),
            p99: Duration::from_millis(80),
        };
        let at = |normal| service.seconds(&Job { normal, ..job(1.0) });
        assert!((at(0.0) - 0.020).abs() < 1e-9);
        assert!((at(Z99) - 0.080).abs() < 1e-9);
    }

    #[test]
    fn gc_pauses_hold_progress() {
        let model =
            BackendModel::new(ServiceTime::Fixed(Duration::from_millis(50)), 1).event(Event::Gc {
                every: Duration::from_secs(2),
                pause: Duration::from_millis(100),
            });
        // Clear of a pause: 50 ms.
        assert!((model.finish(1.0, &job(1.0)) - 1.05).abs() < 1e-9);
        // Straddling the pause at 2.0 s: 30 ms before it, 20 ms after 2.1 s.
        assert!((model.finish(1.97, &job(1.0)) - 2.12).abs() < 1e-9);
        // Starting inside a pause: waits for its end.
        assert!((model.finish(2.05, &job(1.0)) - 2.15).abs() < 1e-9);
    }

    #[test]
    fn slow_events_multiply_the_work() {
        let model = BackendModel::new(ServiceTime::Fixed(Duration::from_millis(10)), 1).event(
            Event::Slow {
                from: Duration::from_secs(1),
                until: Duration::from_secs(2),
                factor: 5.0,
            },
        );
        assert!((model.finish(0.5, &job(2.0)) - 0.52).abs() < 1e-9);
        assert!((model.finish(1.5, &job(1.0)) - 1.55).abs() < 1e-9);
    }
}
