//! Helpers for strategy unit tests: a fixed set of backends and one table.

use std::sync::Arc;

use http::Request;

use super::{Candidates, RequestRef, Strategy};
use crate::backend::{Backend, BackendId, Snapshot};
use crate::clock;

pub(crate) struct Fixture<S: Strategy> {
    pub(crate) backends: Vec<Backend>,
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) strategy: S,
    pub(crate) table: S::Table,
}

pub(crate) fn backends(weights: &[u32]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!("http://10.0.{}.{}:80,weight={w}", i / 250, i % 250 + 1)
                .parse()
                .unwrap()
        })
        .collect()
}

impl<S: Strategy> Fixture<S> {
    pub(crate) fn new(strategy: S, weights: &[u32]) -> Self {
        Self::with_backends(strategy, backends(weights))
    }

    pub(crate) fn with_backends(strategy: S, backends: Vec<Backend>) -> Self {
        let table = strategy.build(&backends);
        Self {
            snapshot: Snapshot::new(backends.clone(), 0),
            backends,
            strategy,
            table,
        }
    }

    pub(crate) fn pick(&self) -> Option<usize> {
        self.pick_request(&Request::new(()), &[])
    }

    pub(crate) fn pick_excluding(&self, tried: &[usize]) -> Option<usize> {
        self.pick_request(&Request::new(()), tried)
    }

    pub(crate) fn pick_request(&self, request: &Request<()>, tried: &[usize]) -> Option<usize> {
        let tried: Vec<BackendId> = tried.iter().map(|&i| self.backends[i].id()).collect();
        let candidates = Candidates::new(
            &self.snapshot,
            RequestRef::from(request),
            &tried,
            Some(clock::now()),
        );
        let pick = self.strategy.pick(&self.table, &candidates);
        if let Some(index) = pick {
            assert!(
                candidates.is_available(index),
                "picked an unavailable backend"
            );
        }
        pick
    }

    /// Counts where `picks` requests go.
    pub(crate) fn tally(&self, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; self.backends.len()];
        for _ in 0..picks {
            counts[self.pick().unwrap()] += 1;
        }
        counts
    }

    /// Takes backend `index` out of rotation for the test.
    pub(crate) fn eject(&self, index: usize) {
        self.backends[index].state().eject(0, u64::MAX, 0);
    }
}
