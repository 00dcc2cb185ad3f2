//! A request's head handed back by the service that sent it, so that a
//! retry needs no copy made in advance.

use http::{HeaderMap, Method, Request, Uri, Version};

/// A request extension asking the innermost service to hand the request's
/// head back when it may be retried: on an answer made from a failure, and
/// on a response whose status is one of those failover retries
/// ([`wants`](Self::wants)), the service puts the head in the response's
/// extensions as a [`RequestHead`], with the request's extensions on the
/// response.
///
/// [`Failover`](crate::failover::Failover) sets it so that the first try
/// can take the client's own head and a retry can be built from the head
/// the failed try hands back, instead of copying every head in advance for
/// the rare request that is retried (five heap allocations a request: the
/// header map's two and the extension map's three). [`Forward`](crate::Forward)
/// honours it: a response that will not be retried gets the request's
/// header map for its own headers (no map allocated per exchange), one that
/// may be gets a new map and leaves the request's to the retry. An
/// application's own innermost service may honour it too; one that does
/// not costs nothing but the copy, which failover then goes back to making.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReturnHead {
    /// The statuses that may be retried; `len` of them are set. More than
    /// fit: every status counts (the head always comes back).
    statuses: [u16; INLINE],
    len: u8,
}

/// How many retried statuses the marker holds inline (the default policy
/// has three): the extension is boxed, so it stays a small copy.
const INLINE: usize = 8;

impl ReturnHead {
    /// Asks for the head back on failures and on responses with one of
    /// `statuses`.
    pub fn new(statuses: &[u16]) -> Self {
        let mut marker = Self {
            statuses: [0; INLINE],
            len: u8::MAX,
        };
        if statuses.len() <= INLINE {
            marker.statuses[..statuses.len()].copy_from_slice(statuses);
            marker.len = statuses.len() as u8;
        }
        marker
    }

    /// Answers the marker, for a sender done with the request whose parts
    /// are `parts`: a [`RequestHead`] taken from them when `response` may
    /// be retried, [`HeadConsumed`] otherwise (its header map, which the
    /// sender may have reused for the response's headers, stays behind).
    /// A sender that made its answer from a failure inserts the
    /// [`RequestHead`] whatever the status.
    pub fn answer<B>(self, parts: &mut http::request::Parts, response: &mut http::Response<B>) {
        if self.wants(response.status()) {
            response.extensions_mut().insert(RequestHead::take(parts));
        } else {
            response.extensions_mut().insert(HeadConsumed);
        }
    }

    /// Whether a response with `status` may be retried, so that the head
    /// must come back with it.
    pub fn wants(&self, status: http::StatusCode) -> bool {
        match self.statuses.get(..usize::from(self.len)) {
            Some(statuses) => statuses.contains(&status.as_u16()),
            None => true,
        }
    }
}

/// The sender honoured [`ReturnHead`] but handed no head back: the
/// response's status is not one that is retried, and the request's header
/// map now holds the response's headers. Zero-sized (no allocation); it
/// tells [`Failover`](crate::failover::Failover) that heads come back when
/// they are wanted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadConsumed;

/// The head of the request a response answers (method, target, version,
/// headers as the client sent them), handed back in the response's
/// extensions by a service that found [`ReturnHead`] on the request.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The request method.
    pub method: Method,
    /// The request target, as the layers above the sender left it.
    pub uri: Uri,
    /// The HTTP version the client spoke.
    pub version: Version,
    /// The request's headers, before the sender's own rules (hop-by-hop
    /// removal, `X-Forwarded-*`) were applied.
    pub headers: HeaderMap,
}

impl RequestHead {
    /// The head of a request, taken out of its parts.
    pub fn take(parts: &mut http::request::Parts) -> Self {
        Self {
            method: std::mem::take(&mut parts.method),
            uri: std::mem::take(&mut parts.uri),
            version: parts.version,
            headers: std::mem::take(&mut parts.headers),
        }
    }

    /// A request with this head, `body` and `extensions`.
    pub fn into_request<B>(self, body: B, extensions: http::Extensions) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        *request.extensions_mut() = extensions;
        request
    }
}
