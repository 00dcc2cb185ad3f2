//! Whether the inner service hands request heads back, learned from its
//! answers, so that failover copies a head in advance only when it must.
//!
//! A retry needs the request's head. Copying it before every first try
//! costs five heap allocations a request (the header map's two, the
//! extension map's three) for the few requests that are ever retried. A
//! service that honours [`ReturnHead`](crate::extensions::ReturnHead)
//! (tower-lb's `Forward` does) hands the head back in its answer instead,
//! so a retry is built from what the failed try returned. Failover starts
//! by copying (and asking for the head back); once a head has come back it
//! stops copying. If a head it counted on does not come back (an inner
//! layer that answers `Err`, or rebuilds responses), that request is not
//! retried, the warning says so once, and this service copies from then on.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Not known yet: copy, and ask for the head back.
const UNKNOWN: u8 = 0;
/// Heads come back: ask, and copy nothing.
const RETURNED: u8 = 1;
/// A head did not come back when it was needed: copy for good.
const NOT_RETURNED: u8 = 2;

/// What a [`Failover`](super::Failover) service and its clones learned
/// about their inner service. One relaxed load a request; written at most
/// twice in the service's life.
#[derive(Debug, Default)]
pub(crate) struct HeadBack(AtomicU8);

impl HeadBack {
    /// Whether a first try may go without a copy of its head.
    pub(crate) fn returned(&self) -> bool {
        self.0.load(Relaxed) == RETURNED
    }

    /// Whether to ask the inner service for the head back at all.
    pub(crate) fn worth_asking(&self) -> bool {
        self.0.load(Relaxed) != NOT_RETURNED
    }

    /// A head came back.
    pub(crate) fn saw_returned(&self) {
        // Only from not known: a service that failed once to return one
        // stays copied for, so no request of it loses a retry twice.
        let _ = self.0.compare_exchange(UNKNOWN, RETURNED, Relaxed, Relaxed);
    }

    /// A head that a retry needed did not come back.
    pub(crate) fn saw_missing(&self) {
        self.0.store(NOT_RETURNED, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::Empty;
    use tower::{Layer, Service, ServiceExt, service_fn};

    use super::*;
    use crate::balance::RoundRobin;
    use crate::extensions::{RequestHead, ReturnHead};
    use crate::failover::{Attempts, FailoverLayer, ReplayBody};
    use crate::{BackendSet, Error, ErrorKind, LoadBalanceLayer};

    /// The application's own extension, which a retry must still carry.
    #[derive(Clone, Debug, PartialEq)]
    struct Mine(u32);

    type Body = ReplayBody<Empty<Bytes>>;

    /// What the sender saw of each try: the port, the client's extension,
    /// whether an `Error` rode along.
    type Seen = Arc<std::sync::Mutex<Vec<(u16, Option<u32>, bool)>>>;

    /// An innermost service as `Forward` is: it hands the head back when
    /// asked, with the request's extensions on its answer. Port 1 fails
    /// (502 with an `Error`), others answer 200. `honour` off: it ignores
    /// `ReturnHead` (an application's service).
    fn sender(
        honour: Arc<std::sync::atomic::AtomicBool>,
        seen: Seen,
    ) -> impl Service<Request<Body>, Response = Response<Empty<Bytes>>, Error = Infallible> + Clone
    {
        service_fn(move |request: Request<Body>| {
            let honour = honour.load(Relaxed);
            let seen = Arc::clone(&seen);
            async move {
                let (mut parts, _) = request.into_parts();
                let port = parts.uri.port_u16().unwrap_or(0);
                let asked = parts.extensions.remove::<ReturnHead>();
                seen.lock().unwrap().push((
                    port,
                    parts.extensions.get::<Mine>().map(|m| m.0),
                    parts.extensions.get::<Error>().is_some(),
                ));
                let mut response = Response::new(Empty::new());
                if port == 1 {
                    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
                    parts.extensions.insert(Error::new(ErrorKind::Upstream));
                }
                if honour {
                    *response.extensions_mut() = std::mem::take(&mut parts.extensions);
                    if let Some(marker) = asked {
                        marker.answer(&mut parts, &mut response);
                    }
                }
                Ok::<_, Infallible>(response)
            }
        })
    }

    fn get() -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        request.extensions_mut().insert(Mine(7));
        request
    }

    #[tokio::test]
    async fn a_retry_is_built_from_the_head_the_failed_try_hands_back() {
        let honour = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let seen = Arc::default();
        // Round-robin over 2 then 1: the first request learns, the second
        // fails on port 1 and is retried on port 2 from the returned head.
        let set = BackendSet::new(
            ["http://127.0.0.1:2", "http://127.0.0.1:1"].map(|a| a.parse().unwrap()),
        );
        let mut service = FailoverLayer::new().layer(
            LoadBalanceLayer::new(&set, RoundRobin::new())
                .layer(sender(Arc::clone(&honour), Arc::clone(&seen))),
        );
        let first = service.ready().await.unwrap().call(get()).await.unwrap();
        assert!(
            first.extensions().get::<RequestHead>().is_none(),
            "never leaves"
        );
        assert!(
            service.shared.head_back.returned(),
            "learned from the first answer"
        );

        let second = service.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(second.status(), 200);
        assert_eq!(Attempts::of(&second).retries(), 1);
        assert!(second.extensions().get::<RequestHead>().is_none());
        let seen = seen.lock().unwrap().clone();
        // The retry went to port 2 with the client's extension and without
        // the failed try's `Error`.
        assert_eq!(
            seen,
            vec![
                (2, Some(7), false),
                (1, Some(7), false),
                (2, Some(7), false)
            ]
        );
    }

    #[tokio::test]
    async fn a_head_that_does_not_come_back_costs_one_retry_then_copies() {
        let honour = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let seen = Arc::default();
        let set = BackendSet::new(
            ["http://127.0.0.1:2", "http://127.0.0.1:1"].map(|a| a.parse().unwrap()),
        );
        let mut service = FailoverLayer::new().layer(
            LoadBalanceLayer::new(&set, RoundRobin::new()).layer(sender(Arc::clone(&honour), seen)),
        );
        service.ready().await.unwrap().call(get()).await.unwrap();
        assert!(service.shared.head_back.returned());
        // The inner service stops handing heads back (say, a layer that
        // rebuilds responses went in): the failed try cannot be retried.
        honour.store(false, Relaxed);
        let lost = service.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(lost.status(), 502);
        assert!(!service.shared.head_back.worth_asking());
        // From now on heads are copied, and failures are retried again.
        let calls = AtomicUsize::new(0);
        for _ in 0..2 {
            let response = service.ready().await.unwrap().call(get()).await.unwrap();
            assert_eq!(response.status(), 200);
            calls.fetch_add(1, Relaxed);
        }
        assert_eq!(calls.load(Relaxed), 2);
    }

    #[test]
    fn learns_once_and_a_missing_head_ends_it_for_good() {
        let learned = HeadBack::default();
        assert!(!learned.returned() && learned.worth_asking());
        learned.saw_returned();
        assert!(learned.returned());
        learned.saw_missing();
        assert!(!learned.returned() && !learned.worth_asking());
        learned.saw_returned();
        assert!(
            !learned.returned(),
            "a service that failed once is copied for"
        );
    }
}
