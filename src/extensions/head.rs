//! A request's head handed back by the service that sent it, so that a
//! retry needs no copy made in advance.

use http::{HeaderMap, Method, Request, Uri, Version};

/// A request extension asking the innermost service to hand the request's
/// head back: once it is done with the request, it puts the head in the
/// response's extensions as a [`RequestHead`], whatever the answer (the
/// backend's, or one made from a failure).
///
/// [`Failover`](crate::failover::Failover) sets it so that the first try
/// can take the client's own head and a retry can be built from the head
/// the failed try hands back, instead of copying every head in advance for
/// the rare request that is retried (five heap allocations a request: the
/// header map's two and the extension map's three). [`Forward`](crate::Forward)
/// honours it; an application's own innermost service may too, and one
/// that does not costs nothing but the copy, which failover then goes back
/// to making.
///
/// It is zero-sized: inserting it allocates nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnHead;

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
