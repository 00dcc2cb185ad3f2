//! The response body that stops the request timer.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::recorder::{BackendMetrics, Recorder};
use crate::body_end::body_end;
use crate::clock::{self, Nanos};
use crate::replica::Replica;

pin_project! {
    /// The inner body; when it ends (or is dropped) the request's duration
    /// goes into the histograms.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        timer: Option<Timer>,
    }
}

struct Timer {
    recorder: Replica<Recorder>,
    backend: Option<Arc<BackendMetrics>>,
    started: Nanos,
}

impl Drop for Timer {
    fn drop(&mut self) {
        let elapsed = Duration::from_nanos(clock::now().saturating_sub(self.started));
        self.recorder.latency.observe(elapsed);
        if let Some(backend) = &self.backend {
            backend.observe(elapsed);
        }
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(
        inner: B,
        recorder: Replica<Recorder>,
        backend: Option<Arc<BackendMetrics>>,
        started: Nanos,
    ) -> Self {
        Self {
            inner,
            timer: Some(Timer {
                recorder,
                backend,
                started,
            }),
        }
    }
}

impl<B: From<Bytes>> From<Bytes> for ResponseBody<B> {
    /// A local body, not timed.
    fn from(data: Bytes) -> Self {
        Self {
            inner: B::from(data),
            timer: None,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if body_end(&frame, || this.inner.is_end_stream()).is_some() {
            this.timer.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("timing", &self.timer.is_some())
            .finish()
    }
}
