//! The response timeout of an exchange, on a timer the connection keeps.
//!
//! A `tokio::time::timeout` per exchange puts an entry into the runtime's
//! timer wheel and takes it out again for every request: about 850
//! instructions of the 31,000 a proxied GET cost (callgrind). A
//! connection's exchanges follow one another under the same timeout, so
//! each one's deadline is later than the one before. The connection keeps
//! one `Sleep`, armed at some earlier exchange's deadline; only when it
//! fires is it moved to the current exchange's deadline (if that has not
//! passed yet). A busy connection re-arms its timer about once per
//! timeout period, instead of twice per request.
//!
//! The timer belongs to the runtime the connection was made on, as the
//! connection's socket does.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// A connection's timer: made on its first timed exchange, and kept.
#[derive(Debug, Default)]
pub(crate) struct Timer(Option<Pin<Box<Sleep>>>);

pin_project! {
    /// `exchange`, or `None` once `deadline` has passed.
    pub(crate) struct Within<'t, F> {
        #[pin]
        exchange: F,
        timer: &'t mut Timer,
        deadline: Instant,
    }
}

/// Runs `exchange` until `deadline` on `timer`.
pub(crate) fn within<F: Future>(
    timer: &mut Timer,
    deadline: Instant,
    exchange: F,
) -> Within<'_, F> {
    Within {
        exchange,
        timer,
        deadline,
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.exchange.poll(cx) {
            return Poll::Ready(Some(output));
        }
        let deadline = *this.deadline;
        let sleep = this
            .timer
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            // An earlier exchange had a longer timeout (the pool's users
            // may differ): this one's must not wait for it.
            sleep.as_mut().reset(deadline);
        }
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Poll::Ready(None);
            }
            // It was set for an earlier exchange: on to this one's.
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_exchange_is_cut_at_its_own_deadline_on_a_timer_set_for_an_earlier_one() {
        let mut timer = Timer::default();
        let start = Instant::now();
        // The first exchange arms the timer at start + 10 s and answers at 1 s.
        let first = within(&mut timer, start + Duration::from_secs(10), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            1
        });
        assert_eq!(first.await, Some(1));
        // The second's deadline is 11 s from now (12 s from start): the
        // timer fires at 10 s, is moved on, and cuts the exchange at 12 s.
        let second_deadline = Instant::now() + Duration::from_secs(11);
        let second = within(&mut timer, second_deadline, std::future::pending::<()>());
        assert_eq!(second.await, None);
        assert_eq!(Instant::now(), second_deadline);
        // One that answers before its deadline is not cut.
        let third = within(&mut timer, Instant::now() + Duration::from_secs(5), async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            3
        });
        assert_eq!(third.await, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_deadline_than_the_timer_is_set_is_kept() {
        let mut timer = Timer::default();
        let start = Instant::now();
        let long = within(&mut timer, start + Duration::from_secs(60), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        assert_eq!(long.await, Some(()));
        let short = Instant::now() + Duration::from_secs(2);
        assert_eq!(
            within(&mut timer, short, std::future::pending::<()>()).await,
            None
        );
        assert_eq!(Instant::now(), short);
    }
}
