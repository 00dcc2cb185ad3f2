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
/// application's own innermost service may honour it too, by calling
/// [`answer`](Self::answer); one that does not costs nothing but the copy,
/// which failover then goes back to making.
///
/// The answer is kept in the marker itself, which travels back with the
/// request's extensions: no other extension is made for it, and a marker
/// left in an extension map that a server reuses for its connection's next
/// request is set again in place (its box is made once per map, not once
/// per request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReturnHead {
    /// The statuses that may be retried; `len` of them are set. More than
    /// fit: every status counts (the head always comes back).
    statuses: [u16; INLINE],
    len: u8,
    answered: Answered,
}

/// What the sender answered to a [`ReturnHead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answered {
    /// Nothing yet (or the sender did not honour the marker).
    Not,
    /// The head is not wanted back: the request's header map may hold the
    /// response's headers.
    Consumed,
    /// The head is in the response's extensions, as a [`RequestHead`].
    Returned,
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
            answered: Answered::Not,
        };
        if statuses.len() <= INLINE {
            marker.statuses[..statuses.len()].copy_from_slice(statuses);
            marker.len = statuses.len() as u8;
        }
        marker
    }

    /// Answers the marker, for a sender done with the request whose parts
    /// are `parts` and whose extensions `response` carries (the marker
    /// among them, answered in place; inserted when they are not there): a
    /// [`RequestHead`] taken from the parts when `response` may be retried;
    /// otherwise the head stays behind (its header map, which the sender
    /// may have reused for the response's headers, with it). A sender that
    /// made its answer from a failure inserts the [`RequestHead`] whatever
    /// the status.
    pub fn answer<B>(self, parts: &mut http::request::Parts, response: &mut http::Response<B>) {
        let head = self
            .wants(response.status())
            .then(|| RequestHead::take(parts));
        self.reply(head, response.extensions_mut());
    }

    /// Answers the marker in `extensions` (a response's, which carry the
    /// request's): with `head` handed back, or none.
    pub(crate) fn reply(self, head: Option<RequestHead>, extensions: &mut http::Extensions) {
        let answered = match head {
            Some(head) => {
                extensions.insert(head);
                Answered::Returned
            }
            None => Answered::Consumed,
        };
        match extensions.get_mut::<Self>() {
            Some(marker) => marker.answered = answered,
            None => {
                extensions.insert(Self { answered, ..self });
            }
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

    /// Sets `extensions`' marker to ask as this one does: in place when
    /// one is there (from an earlier request whose map is reused), so
    /// that no box is made.
    pub(crate) fn ask(self, extensions: &mut http::Extensions) {
        match extensions.get_mut::<Self>() {
            Some(marker) => *marker = self,
            None => {
                extensions.insert(self);
            }
        }
    }

    /// What the sender answered, read off `extensions` and reset (so that
    /// a marker left in a reused map says nothing of the next request):
    /// `None` when it did not answer; else the head it handed back, if
    /// any (taken out of the extensions).
    pub(crate) fn take_answer(extensions: &mut http::Extensions) -> Option<Option<RequestHead>> {
        let marker = extensions.get_mut::<Self>()?;
        let answered = std::mem::replace(&mut marker.answered, Answered::Not);
        match answered {
            Answered::Not => None,
            Answered::Consumed => Some(None),
            Answered::Returned => Some(extensions.remove::<RequestHead>()),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use http::{Extensions, Request, Response, StatusCode};

    use super::*;

    fn parts() -> http::request::Parts {
        let mut request = Request::new(());
        request.headers_mut().insert("x-a", "1".parse().unwrap());
        request.into_parts().0
    }

    #[test]
    fn the_answer_is_kept_in_the_marker_and_read_once() {
        let marker = ReturnHead::new(&[502]);
        let mut extensions = Extensions::new();
        marker.ask(&mut extensions);
        assert!(
            ReturnHead::take_answer(&mut extensions).is_none(),
            "not answered yet"
        );

        marker.reply(None, &mut extensions);
        assert_eq!(extensions.len(), 1, "no entry besides the marker");
        assert!(matches!(
            ReturnHead::take_answer(&mut extensions),
            Some(None)
        ));
        assert!(
            ReturnHead::take_answer(&mut extensions).is_none(),
            "read once: a reused map says nothing of the next request"
        );

        let mut parts = parts();
        marker.reply(Some(RequestHead::take(&mut parts)), &mut extensions);
        let Some(Some(head)) = ReturnHead::take_answer(&mut extensions) else {
            panic!("the head handed back");
        };
        assert_eq!(head.headers["x-a"], "1");
        assert!(extensions.get::<RequestHead>().is_none(), "taken out");
        assert!(extensions.get::<ReturnHead>().is_some(), "the marker stays");
    }

    #[test]
    fn answer_hands_the_head_back_only_when_the_status_is_retried() {
        let marker = ReturnHead::new(&[502]);
        // The request's extensions (the marker among them) on the response.
        let mut response = Response::new(());
        marker.ask(response.extensions_mut());
        let mut parts = parts();
        marker.answer(&mut parts, &mut response);
        assert!(matches!(
            ReturnHead::take_answer(response.extensions_mut()),
            Some(None)
        ));
        assert_eq!(parts.headers["x-a"], "1", "the head stays with the sender");

        // A sender that took the marker out: it is put back, answered.
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        marker.answer(&mut parts, &mut response);
        let Some(Some(head)) = ReturnHead::take_answer(response.extensions_mut()) else {
            panic!("a 502 hands the head back");
        };
        assert_eq!(head.headers["x-a"], "1");
    }
}
