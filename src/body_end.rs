//! When a response body is over: the one rule every body wrapper applies.
//!
//! A wrapper that holds something until the exchange ends (an in-flight
//! count, a timer, a deferred health outcome) must agree with the others on
//! when that is, or a request would count as in flight after its latency
//! was recorded, say. The exchange is over when a poll returns no frame,
//! when the frame it returned leaves the body at its end
//! (`is_end_stream`: a server need not poll again after the last frame),
//! or when it returns an error.

use http_body::Frame;

/// How a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyEnd {
    /// The whole body was read.
    Complete,
    /// The body broke off with an error.
    Broken,
}

/// What the poll that returned `frame` says of the exchange: `None` while
/// more may come. `is_end_stream` is asked only after a data or trailers
/// frame.
#[inline]
pub(crate) fn body_end<D, E>(
    frame: &Option<Result<Frame<D>, E>>,
    is_end_stream: impl FnOnce() -> bool,
) -> Option<BodyEnd> {
    match frame {
        None => Some(BodyEnd::Complete),
        Some(Err(_)) => Some(BodyEnd::Broken),
        Some(Ok(_)) if is_end_stream() => Some(BodyEnd::Complete),
        Some(Ok(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_body_ends_at_no_frame_at_its_last_frame_or_at_an_error() {
        let data = || Some(Ok::<_, ()>(Frame::data(Bytes::from_static(b"x"))));
        assert_eq!(body_end(&data(), || false), None);
        assert_eq!(body_end(&data(), || true), Some(BodyEnd::Complete));
        assert_eq!(
            body_end(&None::<Result<Frame<Bytes>, ()>>, || false),
            Some(BodyEnd::Complete)
        );
        assert_eq!(
            body_end(&Some(Err::<Frame<Bytes>, _>(())), || true),
            Some(BodyEnd::Broken)
        );
    }
}
