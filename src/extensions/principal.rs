//! [`Principal`]: who a router key stands for, and what it may do.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::SystemTime;

use wildmatch::WildMatch;

/// Who is calling: the identity a router key stands for, with its policy. Put in the request
/// extensions by [`Auth`](crate::auth::Auth).
///
/// Its name is safe to log; it never holds the key.
///
/// ```
/// use ai_router::auth::Principal;
///
/// let team = Principal::new("team-a")
///     .allow_models(["openai/*", "*/gpt-4o-mini", "fast"])
///     .rpm(600)
///     .max_concurrent(32)
///     .tpm(100_000);
/// assert!(team.allows_model("openai/gpt-4o"));
/// assert!(team.allows_model("groq/gpt-4o-mini"));
/// assert!(!team.allows_model("groq/llama-3.1-8b-instant"));
/// ```
#[derive(Clone, PartialEq)]
pub struct Principal {
    name: Arc<str>,
    /// Compiled once: a check is a scan, with no allocation.
    models: Option<Arc<[WildMatch]>>,
    expires_at: Option<SystemTime>,
    limits: KeyLimits,
}

/// Per-key request limits; `None` is unlimited. Set with [`Principal`]'s builder methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyLimits {
    /// Requests per minute.
    pub rpm: Option<NonZeroU32>,
    /// Requests in flight at once (a stream counts until it ends).
    pub max_concurrent: Option<NonZeroU32>,
    /// Tokens per minute (input + output, from each answer's usage).
    pub tpm: Option<NonZeroU32>,
}

impl KeyLimits {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.max_concurrent.is_some() || self.tpm.is_some()
    }
}

impl Principal {
    /// A principal with this name, no model restriction, no expiry and no limits.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            models: None,
            expires_at: None,
            limits: KeyLimits::default(),
        }
    }

    /// Restricts the models this key may use: exact ids, aliases, or globs where `*` matches
    /// any run of characters (`openai/*`, `*/gpt-4o-mini`) and `?` any one character.
    #[must_use]
    pub fn allow_models<I, M>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.models = Some(
            patterns
                .into_iter()
                .map(|p| WildMatch::new(&p.into()))
                .collect(),
        );
        self
    }

    /// The key stops working at `at`.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// At most `rpm` requests per minute (0 means unlimited).
    #[must_use]
    pub fn rpm(mut self, rpm: u32) -> Self {
        self.limits.rpm = NonZeroU32::new(rpm);
        self
    }

    /// At most `max` requests in flight at once (0 means unlimited).
    #[must_use]
    pub fn max_concurrent(mut self, max: u32) -> Self {
        self.limits.max_concurrent = NonZeroU32::new(max);
        self
    }

    /// At most `tpm` tokens (input + output, as each answer's usage reports them) per minute
    /// (0 means unlimited). Tokens are counted after an answer ends; a request is refused
    /// while the key's last minute is over budget. The usage is read from the request's
    /// [`RequestLog`](crate::observe::RequestLog) (always there in an
    /// [`AiRouter`](crate::AiRouter); with [`AuthLayer`](crate::auth::AuthLayer) alone, put a
    /// [`SetRequestId`](crate::request_id::SetRequestId) layer above it, or nothing is
    /// debited).
    #[must_use]
    pub fn tpm(mut self, tpm: u32) -> Self {
        self.limits.tpm = NonZeroU32::new(tpm);
        self
    }

    /// The key's name, for logs and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key's name, shared (no copy).
    pub fn name_shared(&self) -> &Arc<str> {
        &self.name
    }

    /// The key's limits.
    pub fn limits(&self) -> KeyLimits {
        self.limits
    }

    /// Whether the key has expired (the clock is read only for keys with an expiry).
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|at| SystemTime::now() >= at)
    }

    /// Whether the key has expired at `now`.
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Whether the allow-list (if any) admits this model id.
    pub fn allows_model(&self, model: &str) -> bool {
        match &self.models {
            None => true,
            Some(patterns) => patterns.iter().any(|pattern| pattern.matches(model)),
        }
    }

    /// Whether the key has a model allow-list.
    pub fn restricts_models(&self) -> bool {
        self.models.is_some()
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("models", &self.models)
            .field("expires_at", &self.expires_at)
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn globs_exact_ids_and_aliases() {
        let p = Principal::new("p").allow_models(["openai/*", "*/gpt-4o-mini", "fast"]);
        for ok in ["openai/gpt-4o", "openai/o1/x", "groq/gpt-4o-mini", "fast"] {
            assert!(p.allows_model(ok), "{ok}");
        }
        for no in ["groq/llama", "faster", "openai", "gpt-4o-mini"] {
            assert!(!p.allows_model(no), "{no}");
        }
        assert!(Principal::new("open").allows_model("anything/at-all"));
        assert!(
            !Principal::new("none")
                .allow_models([] as [&str; 0])
                .allows_model("a/b")
        );
    }

    #[test]
    fn expiry() {
        let now = SystemTime::now();
        let p = Principal::new("p").expires_at(now);
        assert!(p.is_expired_at(now));
        assert!(!p.is_expired_at(now - Duration::from_secs(1)));
        assert!(!Principal::new("q").is_expired_at(now));
    }
}
