//! The limiter's background task: token debits and lease releases in batches, lease
//! renewals, and the probe that finds Redis answering again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ::redis::Script;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Health, LeaseBook, MAX_DEBT_US, PROBE_EVERY, Settings, SharedConnection, micros};

/// Operations per script call (keys and arguments of one `EVALSHA`).
const MAX_BATCH: usize = 256;

/// Debits and releases kept while Redis is down, to run once it answers (a release must
/// not wait out its lease when Redis kept its data through a blip); past it, the oldest go.
const MAX_PENDING: usize = 16 * 1024;

/// Work for the background task.
#[derive(Debug)]
pub(super) enum Job {
    /// Debit `debt_us` (tokens times a token's period) from the tpm budget at `key`.
    Spend {
        /// The tpm key.
        key: String,
        /// The debt, in microseconds.
        debt_us: u64,
    },
    /// Remove `member` from the lease set `set`.
    Release {
        /// The lease set's key.
        set: String,
        /// The lease.
        member: String,
    },
    /// A call failed: probe Redis now.
    Probe,
}

/// What the task owns: a connection, the settings and what it shares with the limiter.
pub(super) struct Background {
    connection: Arc<SharedConnection>,
    settings: Settings,
    health: Arc<Health>,
    leases: Arc<LeaseBook>,
    batch: Script,
    admit: Script,
    /// Probes in a row that got no answer within the timeout.
    unanswered: u32,
}

impl Background {
    pub(super) fn new(
        connection: Arc<SharedConnection>,
        settings: Settings,
        health: Arc<Health>,
        leases: Arc<LeaseBook>,
    ) -> Self {
        Self {
            connection,
            settings,
            health,
            leases,
            batch: Script::new(include_str!("batch.lua")),
            admit: Script::new(include_str!("admit.lua")),
            unanswered: 0,
        }
    }

    /// Runs until every sender of `queue` (every limiter clone) is gone.
    pub(super) async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let renew_every = self.settings.lease / 3;
        let mut next_renewal = Instant::now() + renew_every;
        // Connect (and load the scripts) at once, so the first request finds a connection.
        let mut next_probe = Instant::now();
        let mut connected = false;
        let mut jobs = Vec::new();
        // Debits and releases not yet written (Redis down, or a batch that failed).
        let mut pending: Vec<Op> = Vec::new();
        loop {
            let wake = if connected && !self.health.is_down() {
                next_renewal
            } else {
                next_probe
            };
            match tokio::time::timeout_at(wake, queue.recv()).await {
                Ok(Some(job)) => {
                    jobs.push(job);
                    while jobs.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                }
                // The last limiter clone is gone; what it queued has been done.
                Ok(None) => return,
                Err(_) => {}
            }
            let now = Instant::now();
            if !connected || self.health.is_down() {
                let asked = jobs.iter().any(|job| matches!(job, Job::Probe));
                if now >= next_probe || asked {
                    connected = self.probe().await;
                    next_probe = Instant::now() + PROBE_EVERY;
                }
            }
            pending.extend(jobs.drain(..).filter_map(Op::from_job));
            if pending.len() > MAX_PENDING {
                let lost = pending.len() - MAX_PENDING;
                pending.drain(..lost);
                if self.health.warn_gate.open() {
                    tracing::warn!(
                        lost,
                        "the Redis limiter dropped token debits and lease releases it could \
                         not write (Redis down too long)"
                    );
                }
            }
            if self.health.is_down() {
                // Nowhere to write yet: kept for when Redis answers.
                continue;
            }
            let mut ops = std::mem::take(&mut pending);
            if now >= next_renewal {
                next_renewal = now + renew_every;
                ops.extend(self.leases.snapshot().into_iter().map(|(set, member)| Op {
                    kind: "renew",
                    key: set,
                    value: member,
                }));
            }
            let mut written = 0;
            for chunk in ops.chunks(MAX_BATCH) {
                if !self.run_batch(chunk).await {
                    break;
                }
                written += chunk.len();
            }
            // What failed is tried again once Redis answers (renewals are made afresh).
            pending.extend(ops.drain(written..).filter(|op| op.kind != "renew"));
        }
    }

    /// Writes a probe key (and loads the scripts); true if Redis took it. A connection
    /// that stays silent for two probes in a row is replaced.
    async fn probe(&mut self) -> bool {
        let mut connection = self.connection.get();
        let answer = tokio::time::timeout(self.settings.timeout, async {
            // A write, not a PING: a replica after a failover (READONLY) or a full Redis
            // (OOM) answers PING but fails every check.
            ::redis::cmd("SET")
                .arg(format!("{}probe", self.settings.prefix))
                .arg(1)
                .arg("PX")
                .arg(60_000)
                .query_async::<()>(&mut connection)
                .await?;
            self.admit.load_async(&mut connection).await?;
            self.batch.load_async(&mut connection).await
        })
        .await;
        match answer {
            Ok(Ok(_)) => {
                self.unanswered = 0;
                if self.health.recover() {
                    let skipped = self.health.skipped.swap(0, Ordering::Relaxed);
                    tracing::info!(
                        skipped,
                        "the Redis limits backend answers again; limits apply"
                    );
                }
                true
            }
            Ok(Err(error)) => {
                // The manager's own response timeout may fire first.
                self.unanswered(error.is_timeout());
                self.still_down(&error);
                false
            }
            Err(_) => {
                self.unanswered(true);
                self.still_down(&"no answer within the timeout");
                false
            }
        }
    }

    /// Counts probes in a row without an answer; replaces the connection at the second.
    fn unanswered(&mut self, timed_out: bool) {
        self.unanswered = if timed_out { self.unanswered + 1 } else { 0 };
        if self.unanswered >= 2 {
            self.unanswered = 0;
            if let Err(error) = self.connection.replace() {
                tracing::warn!(%error, "the Redis limiter could not make a new connection");
            }
        }
    }

    /// The probe failed: marks the backend down, warning at most once per period.
    fn still_down(&self, reason: &dyn std::fmt::Display) {
        let tripped = self.health.trip();
        if tripped {
            self.health.warn_gate.touch();
        }
        if tripped || self.health.warn_gate.open() {
            let skipped = self.health.skipped.swap(0, Ordering::Relaxed);
            tracing::warn!(
                reason = %reason,
                skipped,
                "the Redis limits backend does not answer; requests are {}",
                self.settings.mode.verb(),
            );
        }
    }

    /// Runs `ops` in one script call; false (and the backend marked down) if it failed.
    async fn run_batch(&self, ops: &[Op]) -> bool {
        if ops.is_empty() {
            return true;
        }
        let mut invocation = self.batch.prepare_invoke();
        invocation.arg(micros(self.settings.lease)).arg(MAX_DEBT_US);
        for op in ops {
            invocation
                .key(op.key.as_str())
                .arg(op.kind)
                .arg(op.value.as_str());
        }
        let mut connection = self.connection.get();
        let outcome = tokio::time::timeout(
            self.settings.timeout,
            invocation.invoke_async::<i64>(&mut connection),
        )
        .await;
        let failure: Box<dyn std::fmt::Display + Send> = match outcome {
            Ok(Ok(_)) => return true,
            Ok(Err(error)) => Box::new(error),
            Err(_) => Box::new("no answer within the timeout"),
        };
        if self.health.trip() {
            self.health.warn_gate.touch();
            tracing::warn!(
                reason = %failure,
                "the Redis limits backend failed (token debits and lease renewals); until it \
                 answers, requests are {}",
                self.settings.mode.verb(),
            );
        }
        false
    }
}

/// One operation of the batch script.
struct Op {
    kind: &'static str,
    key: String,
    value: String,
}

impl Op {
    fn from_job(job: Job) -> Option<Self> {
        match job {
            Job::Spend { key, debt_us } => Some(Self {
                kind: "spend",
                key,
                value: debt_us.to_string(),
            }),
            Job::Release { set, member } => Some(Self {
                kind: "release",
                key: set,
                value: member,
            }),
            Job::Probe => None,
        }
    }
}
