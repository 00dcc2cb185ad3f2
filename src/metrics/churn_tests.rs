//! Bounded memory under churn: the registry forgets the backends that left.

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::recorder::Recorder;
use crate::backend::InFlight;
use crate::{Backend, BackendSet};

/// The series in the registry's text that name a backend.
fn backend_series(registry: &Registry) -> usize {
    let mut text = String::new();
    encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && line.contains("backend=\""))
        .count()
}

fn nth(i: u32) -> Backend {
    let [_, a, b, c] = (i + 1).to_be_bytes();
    format!("http://10.{a}.{b}.{c}:8000").parse().unwrap()
}

#[test]
fn ten_thousand_backends_in_and_out_leave_the_registry_as_it_was() {
    let steady: Backend = "http://127.0.0.1:1".parse().unwrap();
    let set = BackendSet::new([steady.clone()]);
    let mut registry = Registry::default();
    let recorder = Recorder::register(&set, &mut registry);
    recorder.backend(&steady).count(200);
    let start = (recorder.tracked(), backend_series(&registry), set.claimed());
    for i in 0..10_000 {
        let passing = nth(i);
        set.insert(passing.clone());
        let member = set.snapshot().get(passing.address()).unwrap().clone();
        // One request finishes before the removal; another is in flight
        // across it (the backend drains with its series kept).
        recorder.backend(&member).count(200);
        let in_flight = InFlight::begin(member.clone());
        set.remove(passing.address());
        assert_eq!(
            recorder.tracked(),
            2,
            "a draining backend keeps its handles"
        );
        recorder.backend(&member).count(503);
        drop(in_flight);
    }
    // The last one drained after the last change; the next change forgets it.
    set.insert(Backend::weighted(steady.address().clone(), 2).unwrap());
    assert_eq!(
        (recorder.tracked(), backend_series(&registry), set.claimed()),
        start
    );
}
