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
/// that future is pending, with the same `deadline` each time. The timer is boxed: a future
/// holding an unarmed deadline carries a pointer, not a timer entry, as it is moved about.
pub(crate) fn expired(
    deadline: &mut Option<Pin<Box<Sleep>>>,
    wait: Duration,
    cx: &mut Context<'_>,
) -> bool {
    deadline
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)))
        .as_mut()
        .poll(cx)
        .is_ready()
}
