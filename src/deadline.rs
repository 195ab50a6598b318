//! Deadlines armed only when they may matter. A leaf module.
//!
//! Most waits the router bounds (a key lookup, a request body already in the buffer) are over
//! on their first poll; a timer registered for them would cost a wheel insertion and a
//! removal per request for nothing. [`expired`] arms the timer the first time the guarded
//! future is found pending.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::Sleep;

/// Whether `wait` has passed since the guarded future was first found pending: call it when
/// that future is pending, with the same `deadline` each time.
pub(crate) fn expired(
    mut deadline: Pin<&mut Option<Sleep>>,
    wait: Duration,
    cx: &mut Context<'_>,
) -> bool {
    if deadline.is_none() {
        deadline.set(Some(tokio::time::sleep(wait)));
    }
    deadline
        .as_pin_mut()
        .is_some_and(|sleep| sleep.poll(cx).is_ready())
}
