//! Per-key limits: requests per minute (GCRA, from `governor`), tokens per minute (GCRA over
//! tokens, debited when an answer ends) and requests in flight.

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::num::NonZeroU32;
use std::ops::Add;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::key_store::ApiKeyDigest;
use crate::error::{Error, RateUnit, write_rate_headers};
use crate::extensions::{KeyLimits, Principal};

/// Admits or refuses a request for a key, before its body is read.
///
/// [`InProcessLimiter`] is the default; a shared backend (e.g. Redis, for a fleet of routers)
/// implements this trait and plugs in with
/// [`AiRouterBuilder::limiter`](crate::AiRouterBuilder::limiter) or [`AuthLayer::limiter`](super::AuthLayer::limiter).
/// Refusals are an [`Error`]: 429 `rate_limit_exceeded` (made with [`Error::rate_limited`],
/// [`Error::tokens_limited`] or [`Error::concurrency_limited`]), or
/// [`Error::limits_unavailable`] when the backend cannot answer (or
/// [`Admission::unchecked`], to serve anyway). A check that takes longer than the auth layer's
/// deadline is answered 503 `limits_unavailable`.
///
/// Tokens per minute are counted after the fact: once an admitted request's answer has ended,
/// the auth layer hands the tokens its usage reported to [`spend_tokens`](Self::spend_tokens),
/// and `admit` refuses while the key's last minute is over budget.
pub trait KeyLimiter: Clone + Send + Sync + 'static {
    /// What an admitted request holds until its response body ends (a concurrency slot):
    /// released when dropped. `()` for a limiter without concurrency limits.
    type Permit: Send + Sync + 'static;

    /// The check's future.
    type Future: Future<Output = Result<Admission<Self::Permit>, Error>> + Send + 'static;

    /// Checks one request made with the key of digest `key`, for `principal`, against the
    /// principal's [`KeyLimits`]. Limits are per key: state is kept by `key`, never by the
    /// principal's name (two keys may share a name).
    fn admit(&self, key: &ApiKeyDigest, principal: &Principal) -> Self::Future;

    /// Debits `tokens` (input + output) from the key's tokens-per-minute budget: called once
    /// per admitted request of a key with a `tpm` limit, when its answer has ended (or was
    /// dropped), if the answer reported its usage. Runs on the response path: it must not
    /// block (queue or spawn any I/O). The default does nothing.
    fn spend_tokens(&self, key: &ApiKeyDigest, principal: &Principal, tokens: u64) {
        let _ = (key, principal, tokens);
    }
}

/// What an admitted request carries: the rate-limit figures to report and a permit (a
/// concurrency slot), held until the response body ends.
#[derive(Debug)]
pub struct Admission<P> {
    rate: Option<RateSnapshot>,
    tokens: Option<RateSnapshot>,
    permit: Option<P>,
    unchecked: bool,
}

impl<P> Default for Admission<P> {
    fn default() -> Self {
        Self {
            rate: None,
            tokens: None,
            permit: None,
            unchecked: false,
        }
    }
}

impl<P> Admission<P> {
    /// Admitted with nothing to report (an unlimited key).
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Admitted; `limit` requests per window, `remaining` left, the window full again after
    /// `reset`.
    #[must_use]
    pub fn with_rate(mut self, limit: u32, remaining: u32, reset: Duration) -> Self {
        self.rate = Some(RateSnapshot {
            limit,
            remaining,
            reset,
        });
        self
    }

    /// Admitted without a check: the backend could not answer and its policy is to serve
    /// anyway. Counted (`RequestSummary::limits_unchecked`) so operators see it.
    pub fn unchecked() -> Self {
        Self {
            unchecked: true,
            ..Self::default()
        }
    }

    /// Admitted; `limit` tokens per minute, `remaining` left, the budget full again after
    /// `reset` (`x-ratelimit-*-tokens`).
    #[must_use]
    pub fn with_tokens(mut self, limit: u32, remaining: u32, reset: Duration) -> Self {
        self.tokens = Some(RateSnapshot {
            limit,
            remaining,
            reset,
        });
        self
    }

    /// Whether the request was admitted without a check ([`Admission::unchecked`]).
    pub fn is_unchecked(&self) -> bool {
        self.unchecked
    }

    /// Admitted holding `permit` until the response body ends.
    #[must_use]
    pub fn with_permit(mut self, permit: P) -> Self {
        self.permit = Some(permit);
        self
    }

    /// The same admission holding `f(permit)`: for a limiter made of others (e.g. one of two
    /// backends chosen at start), whose permit is theirs wrapped.
    pub fn map_permit<Q>(self, f: impl FnOnce(P) -> Q) -> Admission<Q> {
        Admission {
            rate: self.rate,
            tokens: self.tokens,
            permit: self.permit.map(f),
            unchecked: self.unchecked,
        }
    }

    /// Writes `x-ratelimit-*-requests` and `-tokens` (replacing an upstream's) for the limits
    /// the key has.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(rate) = &self.rate {
            write_rate_headers(
                headers,
                RateUnit::Requests,
                rate.limit,
                rate.remaining,
                rate.reset,
            );
        }
        if let Some(tokens) = &self.tokens {
            write_rate_headers(
                headers,
                RateUnit::Tokens,
                tokens.limit,
                tokens.remaining,
                tokens.reset,
            );
        }
    }

    pub(crate) fn take_permit(&mut self) -> Option<P> {
        self.permit.take()
    }
}

/// A slot among a key's concurrent requests in this process; freed on drop.
#[derive(Debug)]
pub struct ConcurrencyPermit {
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, Copy)]
struct RateSnapshot {
    limit: u32,
    remaining: u32,
    reset: Duration,
}

/// A clock on tokio's time, so tests can pause and advance it.
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Self(self.0 + Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, StateInformationMiddleware>;

fn new_gcra(rpm: NonZeroU32) -> Arc<Gcra> {
    Arc::new(
        RateLimiter::direct_with_clock(Quota::per_minute(rpm), TokioClock)
            .with_middleware::<StateInformationMiddleware>(),
    )
}

/// The longest debt a key can run up: one huge answer makes its key wait at most this long.
const MAX_TOKEN_DEBT: Duration = Duration::from_secs(24 * 60 * 60);

/// A key's tokens-per-minute budget: GCRA over tokens, debited after each answer. `tat` is
/// when the budget would be full again; the key is over budget while not one token of the
/// minute is free (`tat` more than a minute less one token's time away).
#[derive(Debug)]
struct TokenBudget {
    tpm: NonZeroU32,
    /// The time one token takes to come back: a minute / `tpm`.
    per_token: Duration,
    tat: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl TokenBudget {
    fn new(tpm: NonZeroU32) -> Self {
        Self {
            tpm,
            per_token: WINDOW / tpm.get(),
            tat: std::sync::Mutex::new(None),
        }
    }

    /// Time until the budget is full again (the tokens owed, in time).
    fn owed(&self, now: tokio::time::Instant) -> Duration {
        let tat = *self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        tat.map_or(Duration::ZERO, |tat| tat.saturating_duration_since(now))
    }

    /// Refuses while not one token of the minute is free (so a refusal and
    /// `x-ratelimit-remaining-tokens: 0` go together); else the figures to report.
    fn check(&self) -> Result<RateSnapshot, Error> {
        let owed = self.owed(tokio::time::Instant::now());
        if owed + self.per_token > WINDOW {
            return Err(Error::tokens_limited(
                self.tpm.get(),
                owed + self.per_token - WINDOW,
            ));
        }
        let free = (WINDOW - owed).as_nanos() / self.per_token.as_nanos().max(1);
        Ok(RateSnapshot {
            limit: self.tpm.get(),
            remaining: u32::try_from(free).unwrap_or(u32::MAX).min(self.tpm.get()),
            reset: owed,
        })
    }

    fn spend(&self, tokens: u64) {
        let now = tokio::time::Instant::now();
        let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        let debt = self.per_token.saturating_mul(tokens);
        let mut tat = self.tat.lock().unwrap_or_else(PoisonError::into_inner);
        let from = tat.map_or(now, |tat| tat.max(now));
        let owed = (from - now).saturating_add(debt).min(MAX_TOKEN_DEBT);
        *tat = Some(now + owed);
    }
}

/// The window of the per-minute limits.
const WINDOW: Duration = Duration::from_secs(60);

fn new_slots(max: NonZeroU32) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max.get() as usize))
}

/// One key's limit state.
struct KeyState {
    limits: KeyLimits,
    rate: Option<Arc<Gcra>>,
    slots: Option<Arc<Semaphore>>,
    tokens: Option<Arc<TokenBudget>>,
}

impl KeyState {
    fn new(limits: KeyLimits) -> Self {
        Self {
            limits,
            rate: limits.rpm.map(new_gcra),
            slots: limits.max_concurrent.map(new_slots),
            tokens: limits.tpm.map(|tpm| Arc::new(TokenBudget::new(tpm))),
        }
    }

    /// The state for `limits`, keeping what did not change: a changed `rpm` starts a new
    /// window, a changed `max_concurrent` a new slot count, a changed `tpm` a new budget; the
    /// other parts carry on.
    fn with_limits(&self, limits: KeyLimits) -> Self {
        let tokens = if limits.tpm == self.limits.tpm {
            self.tokens.clone()
        } else {
            limits.tpm.map(|tpm| Arc::new(TokenBudget::new(tpm)))
        };
        let rate = if limits.rpm == self.limits.rpm {
            self.rate.clone()
        } else {
            limits.rpm.map(new_gcra)
        };
        let slots = if limits.max_concurrent == self.limits.max_concurrent {
            self.slots.clone()
        } else {
            limits.max_concurrent.map(new_slots)
        };
        Self {
            limits,
            rate,
            slots,
            tokens,
        }
    }

    fn admit(&self) -> Result<Admission<ConcurrencyPermit>, Error> {
        let mut admission = Admission::unlimited();
        // Tokens first (a read), then concurrency: a refusal must not spend a rate token.
        if let Some(tokens) = &self.tokens {
            let budget = tokens.check()?;
            admission = admission.with_tokens(budget.limit, budget.remaining, budget.reset);
        }
        if let Some(slots) = &self.slots {
            let max = self.limits.max_concurrent.map_or(0, NonZeroU32::get);
            let permit = slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::concurrency_limited(max))?;
            admission = admission.with_permit(ConcurrencyPermit { _permit: permit });
        }
        if let (Some(rate), Some(rpm)) = (&self.rate, self.limits.rpm) {
            let period = WINDOW / rpm.get();
            match rate.check() {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    let reset = period * (rpm.get() - remaining.min(rpm.get()));
                    admission = admission.with_rate(rpm.get(), remaining, reset);
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    return Err(Error::rate_limited(rpm.get(), wait));
                }
            }
        }
        Ok(admission)
    }
}

/// Limits kept in this process: a GCRA rate limiter and a slot count per key (by digest).
///
/// State is made on a key's first request and kept by the key's digest, so two keys never
/// share a window even when they share a name. Time is tokio's, so tests can pause it.
#[derive(Clone, Default)]
pub struct InProcessLimiter {
    keys: Arc<RwLock<HashMap<ApiKeyDigest, Arc<KeyState>>>>,
}

impl InProcessLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self, key: &ApiKeyDigest, limits: KeyLimits) -> Arc<KeyState> {
        {
            let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(state) = keys.get(key).filter(|s| s.limits == limits) {
                return state.clone();
            }
        }
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let state = keys
            .entry(*key)
            .or_insert_with(|| Arc::new(KeyState::new(limits)));
        if state.limits != limits {
            // The key's limits changed (its store was reloaded).
            *state = Arc::new(state.with_limits(limits));
        }
        state.clone()
    }
}

impl KeyLimiter for InProcessLimiter {
    type Permit = ConcurrencyPermit;
    type Future = Ready<Result<Admission<ConcurrencyPermit>, Error>>;

    fn admit(&self, key: &ApiKeyDigest, principal: &Principal) -> Self::Future {
        let limits = principal.limits();
        if !limits.is_limited() {
            return ready(Ok(Admission::unlimited()));
        }
        ready(self.state(key, limits).admit())
    }

    fn spend_tokens(&self, key: &ApiKeyDigest, principal: &Principal, tokens: u64) {
        let limits = principal.limits();
        if limits.tpm.is_some() {
            if let Some(budget) = &self.state(key, limits).tokens {
                budget.spend(tokens);
            }
        }
    }
}

impl fmt::Debug for InProcessLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.read().map(|k| k.len()).unwrap_or_default();
        f.debug_struct("InProcessLimiter")
            .field("keys", &keys)
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn admit(
        limiter: &InProcessLimiter,
        principal: &Principal,
    ) -> Result<Admission<ConcurrencyPermit>, Error> {
        limiter
            .admit(&ApiKeyDigest::of(principal.name()), principal)
            .into_inner()
    }

    #[test]
    fn two_keys_with_one_name_keep_their_own_limits() {
        let limiter = InProcessLimiter::new();
        let (a, b) = (ApiKeyDigest::of("sk-a"), ApiKeyDigest::of("sk-b"));
        let (one, two) = (
            Principal::new("team").rpm(1).max_concurrent(1),
            Principal::new("team").rpm(2).max_concurrent(2),
        );
        let mut admitted = 0;
        let mut held = Vec::new();
        for _ in 0..10 {
            for (key, principal) in [(&a, &one), (&b, &two)] {
                if let Ok(admission) = limiter.admit(key, principal).into_inner() {
                    admitted += 1;
                    held.push(admission);
                }
            }
        }
        // One slot for `a`, two for `b`, however the calls interleave.
        assert_eq!(admitted, 3);
        drop(held);
        // Slots are back; rpm windows are not: `a` used its 1, `b` its 2.
        assert!(limiter.admit(&a, &one).into_inner().is_err());
        assert!(limiter.admit(&b, &two).into_inner().is_err());
    }

    #[tokio::test]
    async fn a_changed_limit_keeps_the_unchanged_part() {
        let limiter = InProcessLimiter::new();
        let key = ApiKeyDigest::of("sk-k");
        let before = Principal::new("k").rpm(1).max_concurrent(5);
        let _held = limiter.admit(&key, &before).into_inner().unwrap();
        // Only the slot count changed: the rpm window is not reset.
        let after = Principal::new("k").rpm(1).max_concurrent(6);
        assert!(limiter.admit(&key, &after).into_inner().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_refuses_then_recovers_after_the_announced_wait() {
        let limiter = InProcessLimiter::new();
        let key = Principal::new("k").rpm(2);
        let mut headers = HeaderMap::new();
        admit(&limiter, &key).unwrap().write_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "2");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "1");
        admit(&limiter, &key).unwrap();
        let refused = admit(&limiter, &key).unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let wait = refused.retry_after().unwrap();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        tokio::time::advance(wait).await;
        admit(&limiter, &key).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn tpm_refuses_once_a_minute_of_tokens_is_owed_then_recovers() {
        let limiter = InProcessLimiter::new();
        let key = Principal::new("k").tpm(100);
        let digest = ApiKeyDigest::of(key.name());
        let mut headers = HeaderMap::new();
        admit(&limiter, &key).unwrap().write_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-tokens"], "100");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "100");
        assert!(headers.get("x-ratelimit-limit-requests").is_none());
        limiter.spend_tokens(&digest, &key, 60);
        let mut headers = HeaderMap::new();
        admit(&limiter, &key).unwrap().write_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "40");
        assert_eq!(headers["x-ratelimit-reset-tokens"], "36s");
        // Admitted requests may run past the budget; the next one waits it off.
        limiter.spend_tokens(&digest, &key, 60);
        let refused = admit(&limiter, &key).unwrap_err();
        assert_eq!(refused.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let response = refused.into_response();
        assert_eq!(response.headers()["x-ratelimit-limit-tokens"], "100");
        assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "0");
        // 120 tokens owed at 0.6 s each: 12 s over the minute, plus one token.
        assert_eq!(response.headers()["retry-after-ms"], "12600");
        tokio::time::advance(Duration::from_millis(12_599)).await;
        assert!(admit(&limiter, &key).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        admit(&limiter, &key).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_tpm_refusal_spends_no_slot_and_no_request() {
        let limiter = InProcessLimiter::new();
        let key = Principal::new("k").tpm(10).rpm(2).max_concurrent(1);
        let digest = ApiKeyDigest::of(key.name());
        limiter.spend_tokens(&digest, &key, 1_000_000_000_000);
        for _ in 0..5 {
            assert!(admit(&limiter, &key).is_err());
        }
        // A day of debt at most; once paid, both requests of the minute are still there.
        tokio::time::advance(MAX_TOKEN_DEBT).await;
        let first = admit(&limiter, &key).unwrap();
        drop(first);
        admit(&limiter, &key).unwrap();
    }

    #[tokio::test]
    async fn concurrency_slots_free_on_drop() {
        let limiter = InProcessLimiter::new();
        let key = Principal::new("k").max_concurrent(1);
        let first = admit(&limiter, &key).unwrap();
        assert!(admit(&limiter, &key).is_err());
        drop(first);
        assert!(admit(&limiter, &key).is_ok());
    }
}
