//! Limits shared by a fleet of routers through Redis: [`RedisLimiter`] (its docs say how).

mod task;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisResult, Script};
use tokio::sync::mpsc;

use self::task::{Background, Job};
use super::key_store::ApiKeyDigest;
use super::limit::{Admission, KeyLimiter};
use crate::error::{BuildError, Error};
use crate::extensions::{KeyLimits, Principal};

/// How long one Redis call may take unless [`RedisLimiterBuilder::timeout`] says otherwise:
/// far below the auth layer's deadline, so the backend mode decides, not the deadline.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// How long a concurrency lease lives without renewal unless [`RedisLimiterBuilder::lease`]
/// says otherwise.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest lease accepted: renewals run every third of it.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// The prefix of every Redis key unless [`RedisLimiterBuilder::key_prefix`] says otherwise.
const DEFAULT_PREFIX: &str = "ai-router:";

/// The per-minute window, in microseconds (the scripts' unit).
const WINDOW_US: u64 = 60_000_000;

/// The longest token debt a key can run up, in microseconds (as in process: a day).
const MAX_DEBT_US: u64 = 24 * 60 * 60 * 1_000_000;

/// Jobs (token debits, releases) waiting for the background task; past it, they are dropped
/// with a warning (a debit lost, or a lease left to expire).
const QUEUE: usize = 4096;

/// How often a backend that failed is probed until it answers.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// At most one warning per this long about the backend being down or the queue full.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What to do with a request when Redis cannot answer (down, or slower than the timeout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendErrorMode {
    /// Serve it, unchecked ([`Admission::unchecked`]: counted, and warned about at most once
    /// every 10 s). The default: an outage of the limits store is not an outage of the router.
    #[default]
    Allow,
    /// Refuse it: 503 `limits_unavailable` ([`Error::limits_unavailable`]).
    Deny,
}

/// Builds a [`RedisLimiter`]; see [`RedisLimiter::builder`].
pub struct RedisLimiterBuilder {
    url: String,
    timeout: Duration,
    mode: BackendErrorMode,
    lease: Duration,
    prefix: String,
}

impl RedisLimiterBuilder {
    /// How long one Redis call may take before the backend counts as failed (default
    /// [`DEFAULT_REDIS_TIMEOUT`], 250 ms).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do while Redis cannot answer (default [`BackendErrorMode::Allow`]).
    #[must_use]
    pub fn on_backend_error(mut self, mode: BackendErrorMode) -> Self {
        self.mode = mode;
        self
    }

    /// How long a concurrency slot outlives a process that died holding it (default
    /// [`DEFAULT_LEASE`], 30 s; at least 1 s). Live leases are renewed every third of it.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The prefix of the limiter's Redis keys (default `ai-router:`): routers sharing limits
    /// use the same one; another prefix keeps another set of limits on the same Redis.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Builds the limiter and starts its background task. Does not connect: Redis may come
    /// up later (until then, requests go by the [`BackendErrorMode`]). Must be called within
    /// a Tokio runtime. Fails on a URL that is not a plain Redis URL (TLS, `rediss://`, is not
    /// built in; the message never shows the URL, which may hold a password), a zero timeout
    /// or a lease under 1 s.
    pub fn build(self) -> Result<RedisLimiter, BuildError> {
        if self.timeout.is_zero() {
            return Err(BuildError::new(
                "the Redis limiter's timeout must not be zero",
            ));
        }
        if self.lease < MIN_LEASE {
            return Err(BuildError::new(
                "the Redis limiter's lease must be at least 1 s",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::new("the Redis limiter must be built within a Tokio runtime")
        })?;
        if self.url.starts_with("rediss:") {
            return Err(BuildError::new(
                "the Redis limiter does not speak TLS (rediss://): use redis://",
            ));
        }
        let client = Client::open(self.url.as_str()).map_err(|_| {
            BuildError::new(
                "the Redis limiter's URL is not a Redis URL (redis://[user:password@]host[:port][/db])",
            )
        })?;
        // Few reconnection attempts of its own: while Redis is down, the probe asks again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = Arc::new(
            SharedConnection::new(client, config)
                .map_err(|e| BuildError::new(format!("the Redis limiter's connection: {e}")))?,
        );

        let health = Arc::new(Health::new());
        let (jobs, queue) = mpsc::channel(QUEUE);
        let leases = Arc::new(LeaseBook {
            held: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            instance: fastrand::u64(..),
            jobs: jobs.downgrade(),
        });
        let settings = Settings {
            timeout: self.timeout,
            mode: self.mode,
            lease: self.lease,
            prefix: self.prefix,
        };
        let background = Background::new(
            Arc::clone(&connection),
            settings.clone(),
            Arc::clone(&health),
            Arc::clone(&leases),
        );
        runtime.spawn(background.run(queue));
        Ok(RedisLimiter {
            inner: Arc::new(Inner {
                connection,
                admit: Script::new(include_str!("admit.lua")),
                settings,
                health,
                leases,
                jobs,
            }),
        })
    }
}

impl fmt::Debug for RedisLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("RedisLimiterBuilder")
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .field("lease", &self.lease)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Per-key limits kept in Redis, exact across every router that uses the same Redis and
/// [prefix](RedisLimiterBuilder::key_prefix).
///
/// Each check is one round trip: a Lua script (`EVALSHA`, loaded again after a `NOSCRIPT`)
/// that checks the key's tokens per minute, takes a concurrency lease and spends a request of
/// its rpm window atomically, on the Redis server's clock, so any number of routers agree.
/// The semantics are [`InProcessLimiter`](super::InProcessLimiter)'s: GCRA for `rpm` (a burst
/// of `rpm`, then one per `60 s / rpm`), tokens debited after each answer for `tpm`, at most
/// `max_concurrent` requests in flight across the fleet. A refusal changes no state.
///
/// Concurrency slots are leases (a sorted set per key, scored by expiry): a permit's drop
/// releases its lease, a background task renews the leases this process holds every third of
/// the [lease](RedisLimiterBuilder::lease), and a process that dies holding slots frees them
/// when its leases expire. Token debits and releases go through the same task, in batches
/// (one round trip each), so neither blocks a request.
///
/// Every Redis call is bounded by the [timeout](RedisLimiterBuilder::timeout). When Redis
/// fails or is slow, requests are admitted unchecked or refused (503 `limits_unavailable`)
/// according to the [`BackendErrorMode`], without waiting for Redis again until a background
/// probe gets an answer: then limits apply again, without a restart.
///
/// Keys are `<prefix>{<key digest in hex>}:rpm|tpm|leases` (one hash slot per key) and expire
/// when idle. One Redis server (or a primary with replicas); not Redis Cluster.
///
/// Clones share one connection and one background task, which ends when the last clone is
/// dropped (the leases still held then expire after the lease).
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use ai_router::AiRouter;
/// use ai_router::auth::{BackendErrorMode, MemoryKeyStore, Principal, RedisLimiter};
///
/// # async fn demo() -> Result<(), ai_router::BuildError> {
/// let limiter = RedisLimiter::builder("redis://127.0.0.1:6379/0")
///     .timeout(Duration::from_millis(250))
///     .on_backend_error(BackendErrorMode::Deny)
///     .lease(Duration::from_secs(30))
///     .build()?;
/// let keys = MemoryKeyStore::new().with_key(
///     "sk-router-team-a",
///     Principal::new("team-a").rpm(600).tpm(100_000).max_concurrent(32),
/// );
/// let router = AiRouter::builder().keys(keys).limiter(limiter);
/// # let _ = router; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

/// What every clone of a limiter shares.
struct Inner {
    connection: Arc<SharedConnection>,
    admit: Script,
    settings: Settings,
    health: Arc<Health>,
    leases: Arc<LeaseBook>,
    /// The only strong sender: the background task ends when the last clone is dropped.
    jobs: mpsc::Sender<Job>,
}

/// The connection manager in use. It reconnects by itself when its connection breaks, not
/// when it hangs (a half-open connection after a failover or a NAT timeout): then the
/// background task replaces it.
struct SharedConnection {
    current: RwLock<ConnectionManager>,
    client: Client,
    config: ConnectionManagerConfig,
}

impl SharedConnection {
    /// A manager that connects on first use.
    fn new(client: Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let current = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            current: RwLock::new(current),
            client,
            config,
        })
    }

    /// The manager in use (a handle on it).
    fn get(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Drops the manager in use (and its connection, once no call holds it) for a new one.
    fn replace(&self) -> RedisResult<()> {
        let fresh =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// The builder's settings, as the limiter and its task use them.
#[derive(Clone, Debug)]
struct Settings {
    timeout: Duration,
    mode: BackendErrorMode,
    lease: Duration,
    prefix: String,
}

impl Settings {
    /// The Redis key of one of a key's limits (`rpm`, `tpm` or `leases`).
    fn key(&self, digest: &ApiKeyDigest, limit: &str) -> String {
        format!("{}{{{}}}:{limit}", self.prefix, digest.to_hex())
    }
}

impl RedisLimiter {
    /// A builder for a limiter on the Redis at `url` (`redis://[user:password@]host[:port][/db]`).
    pub fn builder(url: impl Into<String>) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            url: url.into(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            mode: BackendErrorMode::default(),
            lease: DEFAULT_LEASE,
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }

    /// Whether the limiter is waiting for Redis to answer again (it failed or was too slow;
    /// requests go by the [`BackendErrorMode`] meanwhile).
    pub fn is_backend_down(&self) -> bool {
        self.inner.health.is_down()
    }
}

impl Inner {
    /// A request's check, in one round trip; `permit` is its lease, if the key has a
    /// concurrency limit.
    async fn check(
        self: Arc<Self>,
        keys: [String; 3],
        limits: KeyLimits,
        mut permit: Option<RedisPermit>,
    ) -> Result<Admission<RedisPermit>, Error> {
        let member = permit.as_ref().map(RedisPermit::member).unwrap_or_default();
        let mut invocation = self.admit.prepare_invoke();
        for key in &keys {
            invocation.key(key.as_str());
        }
        invocation
            .arg(limits.rpm.map_or(0, NonZeroU32::get))
            .arg(limits.rpm.map_or(0, period_us))
            .arg(limits.tpm.map_or(0, NonZeroU32::get))
            .arg(limits.tpm.map_or(0, period_us))
            .arg(limits.max_concurrent.map_or(0, NonZeroU32::get))
            .arg(micros(self.settings.lease))
            .arg(member);
        let mut connection = self.connection.get();
        let reply = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<Vec<i64>>(&mut connection),
        )
        .await;
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return self.failed(&error),
            Err(_) => return self.failed(&"no answer within the timeout"),
        };
        match verdict(&reply, limits) {
            Some(Ok(mut admission)) => {
                if let Some(permit) = permit {
                    // In Redis now: renewals may put it back if Redis loses it.
                    self.leases.confirm(permit.id);
                    admission = admission.with_permit(permit);
                }
                Ok(admission)
            }
            Some(Err(refusal)) => {
                // Refused: the script took no lease.
                if let Some(permit) = &mut permit {
                    permit.taken = false;
                }
                Err(refusal)
            }
            None => self.failed(&format_args!("unexpected reply {reply:?}")),
        }
    }

    /// Redis failed: no call waits for it again until the probe gets an answer.
    fn failed(&self, reason: &dyn fmt::Display) -> Result<Admission<RedisPermit>, Error> {
        if self.health.trip() {
            // At most one line per period, even if Redis keeps failing between probes.
            if self.health.warn_gate.open() {
                tracing::warn!(
                    reason = %reason,
                    mode = ?self.settings.mode,
                    "the Redis limits backend failed; until it answers, requests are {}",
                    self.settings.mode.verb(),
                );
            }
            // Wake the task to probe; a full queue means it is awake anyway.
            let _ = self.jobs.try_send(Job::Probe);
        }
        self.unavailable()
    }

    /// The answer while the backend is down.
    fn unavailable(&self) -> Result<Admission<RedisPermit>, Error> {
        self.health.skipped.fetch_add(1, Ordering::Relaxed);
        match self.settings.mode {
            BackendErrorMode::Allow => Ok(Admission::unchecked()),
            BackendErrorMode::Deny => Err(Error::limits_unavailable()),
        }
    }
}

impl BackendErrorMode {
    /// What happens to requests in this mode, for logs.
    fn verb(self) -> &'static str {
        match self {
            Self::Allow => "admitted unchecked",
            Self::Deny => "refused (503 limits_unavailable)",
        }
    }
}

/// The time one unit of a per-minute `limit` takes to come back, in whole microseconds (at
/// least 1).
fn period_us(limit: NonZeroU32) -> u64 {
    (WINDOW_US / u64::from(limit.get())).max(1)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A non-negative script figure in microseconds as a duration.
fn duration_us(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

/// A script figure as a header count.
fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// Reads the admit script's reply: an admission without its permit, a refusal, or `None`
/// for a reply of another shape.
fn verdict(reply: &[i64], limits: KeyLimits) -> Option<Result<Admission<RedisPermit>, Error>> {
    let limit = |limit: Option<NonZeroU32>| limit.map_or(0, NonZeroU32::get);
    match *reply {
        [1, requests_left, requests_reset, tokens_left, tokens_reset] => {
            let mut admission = Admission::unlimited();
            if let Some(rpm) = limits.rpm {
                admission = admission.with_rate(
                    rpm.get(),
                    count(requests_left),
                    duration_us(requests_reset),
                );
            }
            if let Some(tpm) = limits.tpm {
                admission =
                    admission.with_tokens(tpm.get(), count(tokens_left), duration_us(tokens_reset));
            }
            Some(Ok(admission))
        }
        [0, 1, wait] => Some(Err(Error::tokens_limited(
            limit(limits.tpm),
            duration_us(wait),
        ))),
        [0, 2, _] => Some(Err(Error::concurrency_limited(limit(
            limits.max_concurrent,
        )))),
        [0, 3, wait] => Some(Err(Error::rate_limited(
            limit(limits.rpm),
            duration_us(wait),
        ))),
        _ => None,
    }
}

impl KeyLimiter for RedisLimiter {
    type Permit = RedisPermit;
    type Future = RedisAdmitFuture;

    fn admit(&self, key: &ApiKeyDigest, principal: &Principal) -> Self::Future {
        let limits = principal.limits();
        if !limits.is_limited() {
            return RedisAdmitFuture::ready(Ok(Admission::unlimited()));
        }
        let inner = &self.inner;
        if inner.health.is_down() {
            return RedisAdmitFuture::ready(inner.unavailable());
        }
        let settings = &inner.settings;
        let leases = settings.key(key, "leases");
        // Registered before the call: were this future dropped after the script took the
        // lease, the permit's drop still releases it.
        let permit = limits
            .max_concurrent
            .map(|_| inner.leases.register(leases.clone()));
        let keys = [settings.key(key, "rpm"), settings.key(key, "tpm"), leases];
        RedisAdmitFuture {
            state: State::Pending(Box::pin(Arc::clone(inner).check(keys, limits, permit))),
        }
    }

    fn spend_tokens(&self, key: &ApiKeyDigest, principal: &Principal, tokens: u64) {
        let Some(tpm) = principal.limits().tpm else {
            return;
        };
        let inner = &self.inner;
        if tokens == 0 || inner.health.is_down() {
            // Nothing to debit, or nowhere to debit it.
            return;
        }
        let debt_us = tokens.saturating_mul(period_us(tpm)).min(MAX_DEBT_US);
        let job = Job::Spend {
            key: inner.settings.key(key, "tpm"),
            debt_us,
        };
        if inner.jobs.try_send(job).is_err() && inner.health.warn_gate.open() {
            tracing::warn!(
                "the Redis limiter's queue is full: token debits are dropped (Redis too slow?)"
            );
        }
    }
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the connection: its address may hold a password.
        f.debug_struct("RedisLimiter")
            .field("settings", &self.inner.settings)
            .field("backend_down", &self.inner.health.is_down())
            .finish_non_exhaustive()
    }
}

/// [`RedisLimiter`]'s check: ready at once for a key without limits or while Redis is down,
/// else one Redis round trip bounded by the timeout.
pub struct RedisAdmitFuture {
    state: State,
}

type Check = Pin<Box<dyn Future<Output = Result<Admission<RedisPermit>, Error>> + Send>>;

enum State {
    Ready(Option<Result<Admission<RedisPermit>, Error>>),
    Pending(Check),
}

impl RedisAdmitFuture {
    fn ready(result: Result<Admission<RedisPermit>, Error>) -> Self {
        Self {
            state: State::Ready(Some(result)),
        }
    }
}

impl Future for RedisAdmitFuture {
    type Output = Result<Admission<RedisPermit>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &mut self.get_mut().state;
        match state {
            State::Ready(result) => Poll::Ready(result.take().unwrap_or_else(|| {
                // Polled again after it was ready: a caller's bug, answered safely.
                Err(Error::limits_unavailable())
            })),
            State::Pending(check) => {
                let result = std::task::ready!(check.as_mut().poll(cx));
                *state = State::Ready(None);
                Poll::Ready(result)
            }
        }
    }
}

impl fmt::Debug for RedisAdmitFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ready = matches!(self.state, State::Ready(_));
        f.debug_struct("RedisAdmitFuture")
            .field("ready", &ready)
            .finish()
    }
}

/// A concurrency lease held by a request of a key with `max_concurrent`, until its answer
/// ends: renewed by the limiter's background task while held, released on drop.
pub struct RedisPermit {
    id: u64,
    leases: Arc<LeaseBook>,
    /// Whether the lease may be in Redis (false once the script refused it).
    taken: bool,
}

impl RedisPermit {
    fn member(&self) -> String {
        self.leases.member(self.id)
    }
}

impl Drop for RedisPermit {
    fn drop(&mut self) {
        let held = self
            .leases
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
        if let (Some((set, _)), true) = (held, self.taken) {
            let member = self.member();
            // No task (the limiter is gone) or a full queue: the lease expires by itself.
            if let Some(jobs) = self.leases.jobs.upgrade() {
                let _ = jobs.try_send(Job::Release { set, member });
            }
        }
    }
}

impl fmt::Debug for RedisPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPermit")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The leases this process holds (by permit id: the lease set's key), for renewals.
struct LeaseBook {
    /// By permit id: the lease set's key, and whether the admit script took the lease.
    held: Mutex<HashMap<u64, (String, bool)>>,
    next_id: AtomicU64,
    /// Random per limiter: lease members of two processes never collide.
    instance: u64,
    jobs: mpsc::WeakSender<Job>,
}

impl LeaseBook {
    /// A new permit whose lease is in the set `set`.
    fn register(self: &Arc<Self>, set: String) -> RedisPermit {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (set, false));
        RedisPermit {
            id,
            leases: Arc::clone(self),
            taken: true,
        }
    }

    /// The member of permit `id` in its lease set.
    fn member(&self, id: u64) -> String {
        format!("{:016x}:{id:x}", self.instance)
    }

    /// The admit script took permit `id`'s lease.
    fn confirm(&self, id: u64) {
        if let Some((_, taken)) = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&id)
        {
            *taken = true;
        }
    }

    /// Every lease held now whose admission went through: (set, member). (One whose check is
    /// still on its way is left to its script: renewing it first would count it twice.)
    fn snapshot(&self) -> Vec<(String, String)> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.iter()
            .filter(|(_, (_, taken))| *taken)
            .map(|(id, (set, _))| (set.clone(), self.member(*id)))
            .collect()
    }
}

/// Whether Redis answers, as the last call saw it.
struct Health {
    down: AtomicBool,
    /// Requests answered by the mode since the last warning.
    skipped: AtomicU64,
    warn_gate: WarnGate,
}

impl Health {
    fn new() -> Self {
        Self {
            down: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
            warn_gate: WarnGate::new(),
        }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Marks the backend down; true if it was up.
    fn trip(&self) -> bool {
        !self.down.swap(true, Ordering::AcqRel)
    }

    /// Marks the backend up; true if it was down.
    fn recover(&self) -> bool {
        self.down.swap(false, Ordering::AcqRel)
    }
}

/// Lets a warning through at most once per [`WARN_EVERY`].
struct WarnGate {
    start: Instant,
    /// When the gate last opened, in ms since `start` (+1; 0: never).
    last: AtomicU64,
}

impl WarnGate {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Now, as kept in `last`.
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Starts a period now (a warning went out another way).
    fn touch(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Whether a warning may go out now; if so, starts a period.
    fn open(&self) -> bool {
        let now = self.now();
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(rpm: u32, tpm: u32, max_concurrent: u32) -> KeyLimits {
        Principal::new("k")
            .rpm(rpm)
            .tpm(tpm)
            .max_concurrent(max_concurrent)
            .limits()
    }

    #[test]
    fn periods_are_whole_microseconds_and_never_zero() {
        let period = |n| period_us(NonZeroU32::new(n).unwrap());
        assert_eq!(period(1), 60_000_000);
        assert_eq!(period(5), 12_000_000);
        assert_eq!(period(7), 8_571_428);
        assert_eq!(period(u32::MAX), 1);
    }

    #[test]
    fn an_admitted_reply_reports_the_key_s_limits_only() {
        let mut headers = http::HeaderMap::new();
        let admission = verdict(&[1, 4, 12_000_000, -1, 0], limits(5, 0, 0))
            .unwrap()
            .unwrap();
        admission.write_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "5");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "4");
        assert!(headers.get("x-ratelimit-limit-tokens").is_none());

        let mut headers = http::HeaderMap::new();
        verdict(&[1, -1, 0, 70, 15_000_000], limits(0, 100, 0))
            .unwrap()
            .unwrap()
            .write_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-tokens"], "100");
        assert_eq!(headers["x-ratelimit-remaining-tokens"], "70");
        assert!(headers.get("x-ratelimit-limit-requests").is_none());
    }

    #[test]
    fn refusals_name_their_limit() {
        let both = limits(5, 100, 2);
        let tokens = verdict(&[0, 1, 1_500_000], both).unwrap().unwrap_err();
        assert_eq!(tokens.retry_after(), Some(Duration::from_micros(1_500_000)));
        let slots = verdict(&[0, 2, 0], both).unwrap().unwrap_err();
        assert_eq!(slots.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let rate = verdict(&[0, 3, 2_000], both).unwrap().unwrap_err();
        assert_eq!(rate.retry_after(), Some(Duration::from_millis(2)));
        for odd in [&[][..], &[1], &[0, 9, 1], &[2, 0, 0, 0, 0]] {
            assert!(verdict(odd, both).is_none(), "{odd:?}");
        }
    }

    #[test]
    fn keys_share_one_hash_slot_and_never_show_the_key() {
        let settings = Settings {
            timeout: DEFAULT_REDIS_TIMEOUT,
            mode: BackendErrorMode::Allow,
            lease: DEFAULT_LEASE,
            prefix: "p:".to_owned(),
        };
        let digest = ApiKeyDigest::of("sk-secret");
        let key = settings.key(&digest, "rpm");
        assert_eq!(key, format!("p:{{{}}}:rpm", digest.to_hex()));
        assert!(!key.contains("secret"));
    }

    #[test]
    fn the_warn_gate_opens_once_per_period() {
        let gate = WarnGate::new();
        assert!(gate.open());
        assert!(!gate.open());
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        for url in ["http://user:hunter2@example", "rediss://:hunter2@example"] {
            let error = RedisLimiter::builder(url).build().unwrap_err();
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let error = RedisLimiter::builder("redis://127.0.0.1")
            .lease(Duration::from_millis(10))
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("lease"), "{error}");
        drop(_guard);
        assert!(RedisLimiter::builder("redis://127.0.0.1").build().is_err());
    }
}
