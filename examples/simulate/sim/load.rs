//! The clients: when requests arrive, from whom, and how costly they are.

use std::time::Duration;

use super::model::Job;

/// When requests arrive.
#[derive(Clone, Copy, Debug)]
pub enum Arrivals {
    /// A Poisson process at this rate (requests per second): many
    /// independent clients.
    Poisson { rate: f64 },
    /// Bursts: `on` long at `rate_on`, then `off` long at `rate_off`, and
    /// again (each phase Poisson).
    OnOff {
        on: Duration,
        rate_on: f64,
        off: Duration,
        rate_off: f64,
    },
}

impl Arrivals {
    /// The phases: the first's length and rate, the second's (Poisson: one
    /// phase without end).
    fn phases(&self) -> ((f64, f64), (f64, f64)) {
        match *self {
            Arrivals::Poisson { rate } => ((f64::INFINITY, rate), (0.0, rate)),
            Arrivals::OnOff {
                on,
                rate_on,
                off,
                rate_off,
            } => ((on.as_secs_f64(), rate_on), (off.as_secs_f64(), rate_off)),
        }
    }

    /// The rate at `t`, and when that rate next changes.
    fn rate_at(&self, t: f64) -> (f64, f64) {
        let ((on, rate_on), (off, rate_off)) = self.phases();
        if !on.is_finite() {
            return (rate_on, f64::INFINITY);
        }
        let period = on + off;
        let cycle = (t / period).floor() * period;
        if t - cycle < on {
            (rate_on, cycle + on)
        } else {
            (rate_off, cycle + period)
        }
    }

    /// The mean rate.
    pub fn mean_rate(&self) -> f64 {
        let ((on, rate_on), (off, rate_off)) = self.phases();
        if !on.is_finite() {
            return rate_on;
        }
        (rate_on * on + rate_off * off) / (on + off)
    }
}

/// The load of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// When requests arrive.
    pub arrivals: Arrivals,
    /// How many clients (distinct IPs) send them, each request from one
    /// chosen uniformly: what ip-hash spreads.
    pub clients: u32,
    /// The share of requests that are uploads (POST, not retried).
    pub upload_share: f64,
    /// How much more work an upload is than an ordinary read.
    pub upload_cost: f64,
}

/// One request of a run, drawn before the run starts.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// When it is sent, in seconds from the start.
    pub at: f64,
    /// Which client sends it.
    pub client: u32,
    /// Whether it is an upload.
    pub upload: bool,
    /// Its draws.
    pub job: Job,
}

impl Load {
    /// Every request of a run of `duration`, from `seed`. The same seed
    /// gives the same requests, whatever strategy serves them.
    pub fn arrivals(&self, duration: Duration, seed: u64) -> Vec<Arrival> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let end = duration.as_secs_f64();
        let mut arrivals = Vec::new();
        let mut t = 0.0;
        loop {
            let (rate, changes_at) = self.arrivals.rate_at(t);
            if rate <= 0.0 {
                if !changes_at.is_finite() {
                    break;
                }
                t = changes_at;
                continue;
            }
            let gap = -(1.0 - rng.f64()).ln() / rate;
            if t + gap >= changes_at {
                // Memoryless: start the next phase's clock at its boundary.
                t = changes_at;
                continue;
            }
            t += gap;
            if t >= end {
                break;
            }
            let upload = rng.f64() < self.upload_share;
            arrivals.push(Arrival {
                at: t,
                client: rng.u32(..self.clients.max(1)),
                upload,
                job: Job {
                    uniform: rng.f64(),
                    normal: normal(&mut rng),
                    error: rng.f64(),
                    cost: if upload { self.upload_cost } else { 1.0 },
                },
            });
        }
        arrivals
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u = 1.0 - rng.f64();
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_have_the_rate_and_bursts_their_phases() {
        let load = Load {
            arrivals: Arrivals::Poisson { rate: 500.0 },
            clients: 10,
            upload_share: 0.0,
            upload_cost: 1.0,
        };
        let n = load.arrivals(Duration::from_secs(20), 7).len() as f64;
        assert!((n / 20.0 - 500.0).abs() < 25.0, "{n}");
        let bursty = Load {
            arrivals: Arrivals::OnOff {
                on: Duration::from_secs(1),
                rate_on: 1000.0,
                off: Duration::from_secs(1),
                rate_off: 0.0,
            },
            ..load
        };
        let arrivals = bursty.arrivals(Duration::from_secs(10), 7);
        assert!(arrivals.iter().all(|a| a.at % 2.0 < 1.0), "none while off");
        assert!((arrivals.len() as f64 / 5.0 - 1000.0).abs() < 60.0);
    }
}
