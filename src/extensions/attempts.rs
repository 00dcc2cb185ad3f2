//! How many tries a request took, as a response extension.

/// How a response came about under [`Failover`](crate::failover::Failover): which
/// attempt answered (1 is the first try) and how many retries were sent.
/// Metrics and tests read it from the response extensions.
///
/// A response that the first try answered, with no retry withheld by the
/// budget, carries none (see [`Attempts::of`]): that is nearly every
/// response, and an extension is a heap allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempts {
    pub(crate) answered_by: u32,
    pub(crate) retries: u32,
    pub(crate) budget_exhausted: bool,
}

impl Attempts {
    /// The first try answered; no retry was wanted or withheld.
    pub const FIRST_TRY: Self = Self {
        answered_by: 1,
        retries: 0,
        budget_exhausted: false,
    };

    /// How `response` came about: its extension, or [`FIRST_TRY`](Self::FIRST_TRY)
    /// when it carries none (under [`Failover`](crate::failover::Failover), that is
    /// what no extension means).
    pub fn of<B>(response: &http::Response<B>) -> Self {
        response
            .extensions()
            .get::<Self>()
            .copied()
            .unwrap_or(Self::FIRST_TRY)
    }

    /// The attempt whose response this is (1 = the first try).
    pub fn answered_by(&self) -> u32 {
        self.answered_by
    }

    /// Retries sent (attempts after the first), whether or not they answered.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Whether a retry was wanted but the retry budget had none left.
    pub fn budget_exhausted(&self) -> bool {
        self.budget_exhausted
    }
}
