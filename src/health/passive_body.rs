//! The response body under passive health checking: a response whose head
//! looked fine still fails if the backend breaks off its body.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::classify::Outcome;
use super::recorder::Watch;
use crate::body_end::{BodyEnd, body_end};

pin_project! {
    /// The backend's response body. A response whose status passed is
    /// counted when its body is over: a success when it ended (or nothing
    /// was left to read), a failure when the backend broke off mid-body (a
    /// reset or a short body), which the client sees as a cut response.
    /// A body dropped before its end (the client went away) counts for
    /// nothing: that is not the backend's doing. (A body that reached its
    /// end was counted when its last frame came, even if the server then
    /// drops it without asking for more.)
    pub struct ResponseBody<B> {
        #[pin]
        body: B,
        watch: Option<Watch>,
    }
}

impl<B> ResponseBody<B> {
    pub(super) fn new(body: B, watch: Option<Watch>) -> Self {
        Self { body, watch }
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.body.as_mut().poll_frame(cx));
        let outcome = body_end(&frame, || this.body.is_end_stream()).map(|end| match end {
            BodyEnd::Complete => Outcome::Success,
            BodyEnd::Broken => Outcome::Failure,
        });
        if let Some(outcome) = outcome
            && let Some(watch) = this.watch.take()
        {
            watch.record(outcome);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("watching", &self.watch.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, StreamBody};
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::backend::{Backend, BackendSet};
    use crate::balance::Target;
    use crate::health::{OutlierDetection, PassiveHealthLayer};

    type Chunks = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, &'static str>>>,
    >;

    /// Two chunks, the second one a failure when `broken`.
    fn body(broken: bool) -> Chunks {
        let second = if broken {
            Err("reset")
        } else {
            Ok(Frame::data(Bytes::from_static(b"!")))
        };
        StreamBody::new(futures_util::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"hello"))),
            second,
        ]))
    }

    /// Sends one request to `backend` through passive health over a
    /// service answering 200 with `body(broken)`, and reads or drops the
    /// body.
    async fn exchange(set: &BackendSet, backend: &Backend, broken: bool, read: bool) {
        let inner = tower::service_fn(move |_: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(body(broken)))
        });
        let mut service =
            PassiveHealthLayer::new(set.clone(), OutlierDetection::new().consecutive_failures(5))
                .layer(inner);
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(Target::new(backend.clone()));
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        if read {
            let _ = response.into_body().collect().await;
        }
    }

    #[tokio::test]
    async fn a_body_decides_the_outcome_of_a_good_head() {
        let backend: Backend = "http://127.0.0.1:9".parse().unwrap();
        let set = BackendSet::new([backend.clone()]);
        let state = backend.state();
        exchange(&set, &backend, true, true).await;
        exchange(&set, &backend, true, true).await;
        assert_eq!(state.consecutive_failures(), 2, "broken bodies fail");
        exchange(&set, &backend, true, false).await;
        assert_eq!(
            state.consecutive_failures(),
            2,
            "an unread body counts for nothing"
        );
        exchange(&set, &backend, false, true).await;
        assert_eq!(state.consecutive_failures(), 0, "a whole body succeeds");
    }
}
