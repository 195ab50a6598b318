//! Cooldowns: targets that keep failing are skipped for a while.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::extensions::RouteTarget;

/// How a provider's targets cool down: after `failures` consecutive failed attempts, a
/// target is skipped for `duration` (unless every candidate of a request is cooling down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cooldown {
    /// Consecutive failures that cool a target down (at least 1).
    pub failures: u32,
    /// How long it stays cooled down.
    pub duration: Duration,
}

impl Cooldown {
    /// Cool a target down for `duration` after `failures` consecutive failures.
    pub fn new(failures: u32, duration: Duration) -> Self {
        Self {
            failures: failures.max(1),
            duration,
        }
    }
}

/// A target as `(provider, upstream model)`.
type TargetKey = (Arc<str>, Arc<str>);

/// One target's recent record.
#[derive(Debug, Default)]
struct TargetHealth {
    /// Consecutive failures since the last success or cooldown.
    failures: AtomicU32,
    /// Until when it is skipped, in milliseconds since the table's epoch (0: not cooling).
    cooled_until: AtomicU64,
}

/// The health of every target of the providers that have a [`Cooldown`]; shared by every
/// clone of the layer. Lock-free on the hot path once a target has been seen (a read lock to
/// find it, atomics to read and update it); a request to a provider without a cooldown never
/// touches it.
#[derive(Debug)]
pub(super) struct Health {
    cooldowns: HashMap<Arc<str>, Cooldown>,
    targets: RwLock<HashMap<TargetKey, Arc<TargetHealth>>>,
    epoch: Instant,
}

/// The longest a 429's `retry-after` cools a target down.
const MAX_RETRY_AFTER_COOLDOWN: Duration = Duration::from_secs(3600);

/// The most targets tracked: beyond it (and once the healthy ones are forgotten), new ones are not (a client can name any model of a
/// provider that routes any model; memory must stay bounded).
const MAX_TRACKED: usize = 10_000;

impl Health {
    pub(super) fn new(cooldowns: HashMap<Arc<str>, Cooldown>) -> Self {
        Self {
            cooldowns,
            targets: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// The cooldown of each provider that has one.
    pub(super) fn cooldowns(&self) -> &HashMap<Arc<str>, Cooldown> {
        &self.cooldowns
    }

    /// Whether any provider has a cooldown (if not, nothing here is ever consulted).
    pub(super) fn is_active(&self) -> bool {
        !self.cooldowns.is_empty()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// `target`'s record, made on first use (for providers with a cooldown only).
    fn record(&self, target: &RouteTarget) -> Option<Arc<TargetHealth>> {
        if !self.cooldowns.contains_key(target.provider()) {
            return None;
        }
        let key = (
            target.provider_shared().clone(),
            target.upstream_model_shared().clone(),
        );
        if let Some(found) = self.find(&key) {
            return Some(found);
        }
        let mut targets = self.targets.write().unwrap_or_else(PoisonError::into_inner);
        if targets.len() >= MAX_TRACKED && !targets.contains_key(&key) {
            // Forget the targets with nothing to remember; if none, track no more.
            let now = self.now_ms();
            targets.retain(|_, t| {
                t.failures.load(Ordering::Relaxed) != 0
                    || t.cooled_until.load(Ordering::Relaxed) > now
            });
            if targets.len() >= MAX_TRACKED {
                return None;
            }
        }
        Some(targets.entry(key).or_default().clone())
    }

    /// `key`'s record, if it has one.
    fn find(&self, key: &TargetKey) -> Option<Arc<TargetHealth>> {
        self.targets
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// Whether `target` is cooling down now.
    pub(super) fn is_cooling(&self, target: &RouteTarget) -> bool {
        if !self.is_active() || !self.cooldowns.contains_key(target.provider()) {
            return false;
        }
        let key = (
            target.provider_shared().clone(),
            target.upstream_model_shared().clone(),
        );
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        targets
            .get(&key)
            .is_some_and(|t| t.cooled_until.load(Ordering::Relaxed) > self.now_ms())
    }

    /// An attempt at `target` failed; `wait`: how long the upstream asked to be left alone
    /// (a 429's `retry-after`), if it said.
    pub(super) fn failed(&self, target: &RouteTarget, wait: Option<Duration>) {
        let (Some(cooldown), Some(record)) = (
            self.cooldowns.get(target.provider()).copied(),
            self.record(target),
        ) else {
            return;
        };
        let now = self.now_ms();
        let mut until = 0;
        let failures = record.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= cooldown.failures {
            record.failures.store(0, Ordering::Relaxed);
            until = now + cooldown.duration.as_millis() as u64;
        }
        if let Some(wait) = wait {
            let wait = wait.min(MAX_RETRY_AFTER_COOLDOWN).as_millis() as u64;
            until = until.max(now.saturating_add(wait));
        }
        if until > 0 {
            record.cooled_until.fetch_max(until, Ordering::Relaxed);
            tracing::warn!(
                provider = target.provider(),
                model = target.upstream_model(),
                cooling_ms = until - now,
                "target cooling down"
            );
        }
    }

    /// An attempt at `target` succeeded: its failure count starts again.
    pub(super) fn succeeded(&self, target: &RouteTarget) {
        if !self.cooldowns.contains_key(target.provider()) {
            return;
        }
        // Only a target that has failed has a record worth resetting: successes never add
        // one (an endless variety of models answering well must not fill the table).
        let key = (
            target.provider_shared().clone(),
            target.upstream_model_shared().clone(),
        );
        if let Some(record) = self.find(&key) {
            if record.failures.load(Ordering::Relaxed) != 0 {
                record.failures.store(0, Ordering::Relaxed);
            }
        }
    }

    /// `candidates` without those cooling down, or all of them (in order) if every one is.
    pub(super) fn order(&self, candidates: Vec<RouteTarget>) -> Vec<RouteTarget> {
        if !self.is_active() {
            return candidates;
        }
        let available: Vec<RouteTarget> = candidates
            .iter()
            .filter(|t| !self.is_cooling(t))
            .cloned()
            .collect();
        if available.is_empty() {
            candidates
        } else {
            available
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::extensions::Endpoint;

    fn target(provider: &str) -> RouteTarget {
        RouteTarget::new(provider, "m", Endpoint::ChatCompletions)
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_cool_a_target_down_then_it_recovers() {
        let health = Health::new(HashMap::from([(
            Arc::from("a"),
            Cooldown::new(2, Duration::from_secs(30)),
        )]));
        let (a, b) = (target("a"), target("b"));
        health.failed(&a, None);
        assert!(!health.is_cooling(&a), "one failure is not enough");
        health.succeeded(&a);
        health.failed(&a, None);
        assert!(!health.is_cooling(&a), "a success starts the count again");
        health.failed(&a, None);
        assert!(health.is_cooling(&a));
        // Providers without a cooldown never cool.
        for _ in 0..5 {
            health.failed(&b, None);
        }
        assert!(!health.is_cooling(&b));
        assert_eq!(
            health.order(vec![a.clone(), b.clone()]),
            std::slice::from_ref(&b)
        );
        // Every candidate cooling: all are tried anyway, in order.
        assert_eq!(health.order(vec![a.clone()]), std::slice::from_ref(&a));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(!health.is_cooling(&a));
    }

    #[test]
    fn successes_add_nothing_and_a_full_table_forgets_the_healthy() {
        let health = Health::new(HashMap::from([(
            Arc::from("a"),
            Cooldown::new(2, Duration::from_secs(30)),
        )]));
        let len = || health.targets.read().unwrap().len();
        let model = |i: usize| RouteTarget::new("a", format!("m{i}"), Endpoint::ChatCompletions);
        for i in 0..100 {
            health.succeeded(&model(i));
        }
        assert_eq!(len(), 0, "a success never makes a record");
        // Full of targets that failed once (not cooling, but remembered).
        for i in 0..MAX_TRACKED {
            health.failed(&model(i), None);
        }
        assert_eq!(len(), MAX_TRACKED);
        let newcomer = model(MAX_TRACKED);
        health.failed(&newcomer, None);
        health.failed(&newcomer, None);
        assert!(!health.is_cooling(&newcomer), "no room: not tracked");
        // Once they have succeeded, they have nothing to remember: room is made.
        for i in 0..MAX_TRACKED {
            health.succeeded(&model(i));
        }
        health.failed(&newcomer, None);
        health.failed(&newcomer, None);
        assert!(health.is_cooling(&newcomer));
        assert_eq!(len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_cools_for_that_long() {
        let health = Health::new(HashMap::from([(
            Arc::from("a"),
            Cooldown::new(5, Duration::from_secs(30)),
        )]));
        let a = target("a");
        health.failed(&a, Some(Duration::from_secs(3)));
        assert!(health.is_cooling(&a));
        tokio::time::advance(Duration::from_millis(3001)).await;
        assert!(!health.is_cooling(&a));
    }
}
