//! Response body of [`Auth`](super::Auth): holds what the key's admission holds until the
//! answer ends.

use std::fmt;

use crate::observe::RequestLog;

/// The inner service's body (or a refusal), holding the key's [`KeyGuard`] until it is done
/// with: a stream counts until its last byte. See the [module docs](super).
pub type ResponseBody<B, P> = crate::body::Guarded<B, KeyGuard<P>>;

/// What an admitted request holds until its answer ends (or is dropped): the limiter's permit
/// `P` (a concurrency slot), and, for a key with a tokens-per-minute limit, the debit of the
/// tokens the answer's usage reported (handed to
/// [`KeyLimiter::spend_tokens`](super::KeyLimiter::spend_tokens) when the guard goes).
pub struct KeyGuard<P> {
    // Dropped in this order: the tokens are debited before the slot is freed, so the next
    // request of a key at its concurrency limit sees the debit.
    debit: Option<TokenDebit>,
    _permit: Option<P>,
}

impl<P> KeyGuard<P> {
    /// A guard, or nothing when there is nothing to hold.
    pub(crate) fn new(permit: Option<P>, debit: Option<TokenDebit>) -> Option<Self> {
        (permit.is_some() || debit.is_some()).then_some(Self {
            debit,
            _permit: permit,
        })
    }
}

impl<P> fmt::Debug for KeyGuard<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyGuard")
            .field("permit", &self._permit.is_some())
            .field("debits_tokens", &self.debit.is_some())
            .finish()
    }
}

/// Debits the tokens an answer used from its key's budget when dropped: the answer's usage,
/// as the layers below recorded it on the request's [`RequestLog`].
pub(crate) struct TokenDebit {
    log: RequestLog,
    spend: Box<dyn FnOnce(u64) + Send + Sync>,
}

impl TokenDebit {
    /// Calls `spend` with the tokens `log` holds when the answer is over.
    pub(crate) fn new(log: RequestLog, spend: impl FnOnce(u64) + Send + Sync + 'static) -> Self {
        Self {
            log,
            spend: Box::new(spend),
        }
    }
}

impl Drop for TokenDebit {
    fn drop(&mut self) {
        if let Some(usage) = self.log.usage() {
            let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
            let spend = std::mem::replace(&mut self.spend, Box::new(|_| {}));
            spend(tokens);
        }
    }
}
