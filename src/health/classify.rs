//! What one response says of its backend.

use http::Response;

use super::OutlierDetection;
use crate::error::{Error, ErrorKind};

/// What one request says of its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
}

impl OutlierDetection {
    /// What `response` (or the error it carries) says of the backend;
    /// nothing when the client broke its own request (a hostile client must
    /// not get healthy backends ejected).
    pub(crate) fn outcome<B>(&self, response: &Response<B>) -> Option<Outcome> {
        let failed = match response.extensions().get::<Error>() {
            Some(error) if error.is_client() => return None,
            Some(error) => matches!(
                error.kind(),
                ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Upstream
            ),
            None => self.failure_statuses.contains(&response.status().as_u16()),
        };
        Some(if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_status(status: u16) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = status.try_into().unwrap();
        response
    }

    #[test]
    fn gateway_failures_and_backend_errors_fail_client_errors_do_not_count() {
        let detection = OutlierDetection::new();
        assert_eq!(detection.outcome(&with_status(200)), Some(Outcome::Success));
        assert_eq!(detection.outcome(&with_status(500)), Some(Outcome::Success));
        assert_eq!(detection.outcome(&with_status(503)), Some(Outcome::Failure));
        let failed: Response<bytes::Bytes> = Error::new(ErrorKind::Connect).to_response();
        assert_eq!(detection.outcome(&failed), Some(Outcome::Failure));
        let client: Response<bytes::Bytes> = Error::new(ErrorKind::Client).to_response();
        assert_eq!(detection.outcome(&client), None);
        let picky = OutlierDetection::new().failure_statuses([500]);
        assert_eq!(picky.outcome(&with_status(500)), Some(Outcome::Failure));
    }
}
