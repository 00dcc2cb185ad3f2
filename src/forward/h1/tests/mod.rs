//! Exchange and property tests of the codec, and what they share.

mod exchange;
mod head_memory;
mod mock;
mod props;
mod steady;

use std::pin::pin;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Answer, BodyFraming, Conn, Error, RequestHead};

/// What one exchange gave: the head, the whole body, and the connection
/// if it was handed back.
#[derive(Debug)]
pub(super) struct Outcome<S> {
    pub(super) response: http::response::Parts,
    pub(super) body: Vec<u8>,
    pub(super) conn: Option<Box<Conn<S>>>,
}

/// Sends a bodiless `method` request and reads the response to its end.
pub(super) async fn exchange<S>(conn: Box<Conn<S>>, method: &str) -> Result<Outcome<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let parts = request(method, &[]);
    let mut body = pin!(Empty::<Bytes>::new());
    let head = head(&parts, BodyFraming::Empty);
    match conn.send(&head, body.as_mut()).await? {
        Answer::Response(response) => read_all(response).await,
        // Random bytes can spell a valid `101`: the exchange ends there,
        // with no body and no connection to reuse (the caller, not the
        // codec, refuses an upgrade it did not ask for).
        Answer::Upgrade { response, .. } => Ok(Outcome {
            response: response.into_parts().0,
            body: Vec::new(),
            conn: None,
        }),
    }
}

/// Reads a response's body to its end (checking `is_end_stream` and the
/// size hint on the way) and takes the connection back.
pub(super) async fn read_all<S>(
    response: http::Response<super::BodyReader<S>>,
) -> Result<Outcome<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (response, mut reader) = response.into_parts();
    let mut body = Vec::new();
    while !http_body::Body::is_end_stream(&reader) {
        let hint = http_body::Body::size_hint(&reader);
        let Some(frame) = reader.frame().await else {
            break;
        };
        let data = frame?.into_data().unwrap_or_default();
        assert!(!data.is_empty(), "an empty data frame");
        assert!(data.len() as u64 <= hint.upper().unwrap_or(u64::MAX));
        body.extend_from_slice(&data);
    }
    assert_eq!(http_body::Body::size_hint(&reader).exact(), Some(0));
    let conn = reader.take_reusable();
    Ok(Outcome {
        response,
        body,
        conn,
    })
}

/// A request to the test backend.
pub(super) fn request(method: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = Request::builder()
        .method(method)
        .uri("http://backend.test:8080/path");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(())
        .map(|request| request.into_parts().0)
        .unwrap_or_else(|error| panic!("bad test request: {error}"))
}

static BACKEND: LazyLock<Authority> = LazyLock::new(|| Authority::from_static("backend.test:8080"));
static PROTO: HeaderValue = HeaderValue::from_static("http");

pub(super) fn head(parts: &http::request::Parts, framing: BodyFraming) -> RequestHead<'_> {
    RequestHead {
        parts,
        backend: Some(&BACKEND),
        client_ip: None,
        proto: &PROTO,
        upgrade: None,
        framing,
    }
}

/// Runs `future` on a fresh current-thread runtime, failing if it has not
/// finished within 5 s (a hang).
pub(super) fn run<F: std::future::Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|error| panic!("runtime: {error}"));
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), future).await })
        .unwrap_or_else(|_| panic!("the exchange hung"))
}
