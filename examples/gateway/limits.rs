//! The gateway's limiter: `[limits] backend = "memory"` (this process) or `"redis"` (shared by
//! a fleet; built with the `redis` feature), chosen once at start and kept across reloads.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use ai_router::Error;
use ai_router::auth::{
    Admission, ApiKeyDigest, ConcurrencyPermit, InProcessLimiter, KeyLimiter, Principal,
};
#[cfg(feature = "redis")]
use ai_router::auth::{BackendErrorMode, RedisAdmitFuture, RedisLimiter, RedisPermit};

#[cfg(feature = "redis")]
use crate::config::OnBackendError;
use crate::config::{ConfigError, LimitsBackend, LimitsConfig};

/// The limiter every router of the gateway shares (rpm windows, token budgets and slots
/// survive reloads).
#[derive(Clone, Debug)]
pub(crate) enum GatewayLimiter {
    /// `backend = "memory"`.
    Memory(InProcessLimiter),
    /// `backend = "redis"`.
    #[cfg(feature = "redis")]
    Redis(RedisLimiter),
}

impl GatewayLimiter {
    /// The limiter `[limits]` describes; the Redis URL may come from the environment (`env`).
    /// A Redis that is down at start is not an error: requests get `on_backend_error` until
    /// it answers.
    pub(crate) fn new(
        limits: &LimitsConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        match limits.backend {
            LimitsBackend::Memory => Ok(Self::Memory(InProcessLimiter::new())),
            #[cfg(feature = "redis")]
            LimitsBackend::Redis => {
                let mut builder = RedisLimiter::builder(limits.redis_url(env)?).on_backend_error(
                    match limits.on_backend_error {
                        OnBackendError::Allow => BackendErrorMode::Allow,
                        OnBackendError::Deny => BackendErrorMode::Deny,
                    },
                );
                if let Some(secs) = limits.lease_secs {
                    builder = builder.lease(std::time::Duration::from_secs(secs));
                }
                if let Some(ms) = limits.timeout_ms {
                    builder = builder.timeout(std::time::Duration::from_millis(ms));
                }
                // The error names the setting, never the URL (it may hold a password).
                builder
                    .build()
                    .map(Self::Redis)
                    .map_err(|e| ConfigError(format!("limits.redis_url: {e}")))
            }
            #[cfg(not(feature = "redis"))]
            LimitsBackend::Redis => {
                let _ = env;
                Err(ConfigError(
                    "limits.backend = \"redis\" needs the gateway built with the `redis` \
                     feature: cargo run --example gateway --features redis"
                        .into(),
                ))
            }
        }
    }
}

/// What an admitted request holds: a slot of the backend it was admitted by.
#[derive(Debug)]
pub(crate) enum GatewayPermit {
    /// An in-process slot.
    Memory(#[allow(dead_code)] ConcurrencyPermit),
    /// A Redis lease.
    #[cfg(feature = "redis")]
    Redis(#[allow(dead_code)] RedisPermit),
}

/// The check's future, of either backend (both are `Unpin`: no projection needed).
pub(crate) enum GatewayAdmit {
    /// The in-process answer (always at once).
    Memory(Ready<Result<Admission<ConcurrencyPermit>, Error>>),
    /// Redis's (one round trip).
    #[cfg(feature = "redis")]
    Redis(RedisAdmitFuture),
}

impl Future for GatewayAdmit {
    type Output = Result<Admission<GatewayPermit>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Memory(future) => Pin::new(future)
                .poll(cx)
                .map(|r| r.map(|a| a.map_permit(GatewayPermit::Memory))),
            #[cfg(feature = "redis")]
            Self::Redis(future) => Pin::new(future)
                .poll(cx)
                .map(|r| r.map(|a| a.map_permit(GatewayPermit::Redis))),
        }
    }
}

impl KeyLimiter for GatewayLimiter {
    type Permit = GatewayPermit;
    type Future = GatewayAdmit;

    fn admit(&self, key: &ApiKeyDigest, principal: &Principal) -> GatewayAdmit {
        match self {
            Self::Memory(limiter) => GatewayAdmit::Memory(limiter.admit(key, principal)),
            #[cfg(feature = "redis")]
            Self::Redis(limiter) => GatewayAdmit::Redis(limiter.admit(key, principal)),
        }
    }

    fn spend_tokens(&self, key: &ApiKeyDigest, principal: &Principal, tokens: u64) {
        match self {
            Self::Memory(limiter) => limiter.spend_tokens(key, principal, tokens),
            #[cfg(feature = "redis")]
            Self::Redis(limiter) => limiter.spend_tokens(key, principal, tokens),
        }
    }
}
