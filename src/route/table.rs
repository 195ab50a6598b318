//! The route table: which providers and aliases exist, and what a model id resolves to.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;
use serde::Serialize;

use super::policy::{AliasPolicy, Strategy};
use crate::error::Error;
use crate::extensions::{Endpoint, Principal, RouteTarget};

/// A `provider/model` pair an alias points to.
#[derive(Clone, Debug)]
struct ModelRef {
    provider: Arc<str>,
    model: Arc<str>,
    /// `provider/model`, for allow-lists.
    id: Arc<str>,
    /// The same as a header value, made once.
    label: HeaderValue,
}

impl ModelRef {
    fn target(&self, endpoint: Endpoint) -> RouteTarget {
        RouteTarget::new(self.provider.clone(), self.model.clone(), endpoint)
            .with_label(self.label.clone())
    }
}

/// An alias: its targets in configured order, its policy, and whose turn it is.
#[derive(Debug)]
struct Alias {
    targets: Vec<ModelRef>,
    policy: AliasPolicy,
    /// Cumulative weights (for [`Strategy::Weighted`]), normalised to end at 1.
    cumulative: Vec<f64>,
    /// The next first target (for [`Strategy::RoundRobin`]); shared by every clone.
    turn: AtomicUsize,
}

impl Alias {
    /// The index of the target tried first this time.
    fn first(&self) -> usize {
        let n = self.targets.len();
        match self.policy.strategy {
            Strategy::Fallback => 0,
            Strategy::RoundRobin => self.turn.fetch_add(1, Ordering::Relaxed) % n,
            Strategy::Weighted(_) => {
                let draw = fastrand::f64();
                self.cumulative
                    .iter()
                    .position(|&edge| draw < edge)
                    .unwrap_or(n - 1)
            }
        }
    }
}

/// What a model id resolved to, for one request.
#[derive(Debug)]
pub(crate) enum Resolved<'t> {
    /// One target and nothing else to try (a `provider/model` id, or a plain one-target
    /// alias): no plan needed.
    One(RouteTarget),
    /// An alias's allowed targets, in the order to try them this time, and its policy.
    Alias {
        targets: Vec<RouteTarget>,
        policy: &'t AliasPolicy,
    },
}

/// Providers, their listed models and the aliases: what model ids resolve to.
///
/// A model id is an alias (exact match) or `provider/upstream-model`, split at the first
/// `/` (the rest may hold more slashes). Build one with [`RouteTable::builder`].
///
/// ```
/// use ai_router::route::RouteTable;
///
/// let table = RouteTable::builder()
///     .provider("openai", ["gpt-4o-mini"])
///     .provider("openrouter", [] as [&str; 0])
///     .alias("fast", ["openai/gpt-4o-mini"])
///     .build()?;
/// assert!(table.has_provider("openrouter"));
/// # Ok::<(), ai_router::BuildError>(())
/// ```
#[derive(Clone)]
pub struct RouteTable {
    providers: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Providers that route only their listed models.
    listed_only: Vec<Arc<str>>,
    aliases: HashMap<Arc<str>, Arc<Alias>>,
    /// The `GET /models` answer, rendered once.
    catalogue: Bytes,
    created: u64,
}

impl RouteTable {
    /// A [`RouteTableBuilder`].
    pub fn builder() -> RouteTableBuilder {
        RouteTableBuilder::default()
    }

    /// Whether a provider of this name is configured.
    pub fn has_provider(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    /// The configured providers' names.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(|name| &**name)
    }

    /// Resolves a model id for `endpoint`: an alias gives its first configured target,
    /// otherwise the id is `provider/model` with a configured provider.
    pub fn resolve(&self, model: &str, endpoint: Endpoint) -> Result<RouteTarget, Error> {
        if let Some(target) = self.aliases.get(model).and_then(|a| a.targets.first()) {
            return Ok(target.target(endpoint));
        }
        self.resolve_direct(model, endpoint)
    }

    /// Resolves `model` for one request from `principal` (if any): the targets to try, in
    /// order, with the alias's policy. An alias on the caller's allow-list authorises all its
    /// targets; otherwise only the targets that are on it themselves are kept. None kept is
    /// 403 `model_not_allowed`.
    pub(crate) fn resolve_for(
        &self,
        model: &str,
        endpoint: Endpoint,
        principal: Option<&Principal>,
    ) -> Result<Resolved<'_>, Error> {
        let allowed = |id: &str| principal.is_none_or(|p| p.allows_model(id));
        let Some(alias) = self.aliases.get(model) else {
            let target = self.resolve_direct(model, endpoint)?;
            if !allowed(model) {
                return Err(Error::model_not_allowed(model));
            }
            return Ok(Resolved::One(target));
        };
        let whole = allowed(model);
        if alias.targets.len() == 1 && alias.policy.is_plain() {
            let only = &alias.targets[0];
            if !whole && !allowed(&only.id) {
                return Err(Error::model_not_allowed(model));
            }
            return Ok(Resolved::One(only.target(endpoint)));
        }
        let first = alias.first();
        let n = alias.targets.len();
        let order = std::iter::once(first).chain(match alias.policy.strategy {
            // The others wrap around from the one after the first.
            Strategy::RoundRobin => (1..n).map(|k| (first + k) % n).collect::<Vec<_>>(),
            // The others in configured order.
            _ => (0..n).filter(|&i| i != first).collect(),
        });
        let targets: Vec<RouteTarget> = order
            .map(|i| &alias.targets[i])
            .filter(|r| whole || allowed(&r.id))
            .map(|r| r.target(endpoint))
            .collect();
        if targets.is_empty() {
            return Err(Error::model_not_allowed(model));
        }
        Ok(Resolved::Alias {
            targets,
            policy: &alias.policy,
        })
    }

    /// Resolves a `provider/model` id.
    fn resolve_direct(&self, model: &str, endpoint: Endpoint) -> Result<RouteTarget, Error> {
        let (provider, upstream_model) = model
            .split_once('/')
            .ok_or_else(|| Error::model_not_found(model))?;
        let (provider, listed) = self
            .providers
            .get_key_value(provider)
            .filter(|_| !upstream_model.is_empty())
            .ok_or_else(|| Error::model_not_found(model))?;
        if self.listed_only.contains(provider) && !listed.iter().any(|m| &**m == upstream_model) {
            return Err(Error::model_not_found(model));
        }
        Ok(RouteTarget::new(provider.clone(), upstream_model, endpoint))
    }

    /// The `GET /models` body: every listed provider model as `provider/id`, then the aliases;
    /// only those `principal` may use, when it has an allow-list.
    pub(crate) fn catalogue(&self, principal: Option<&Principal>) -> Bytes {
        match principal.filter(|p| p.restricts_models()) {
            None => self.catalogue.clone(),
            Some(principal) => {
                render_catalogue(&self.providers, &self.aliases, self.created, |id| {
                    self.may_use(principal, id)
                })
            }
        }
    }

    /// Whether `principal` may use model id `id`: the id itself is on its allow-list, or `id`
    /// is an alias with a target that is.
    pub(crate) fn may_use(&self, principal: &Principal, id: &str) -> bool {
        principal.allows_model(id)
            || self
                .aliases
                .get(id)
                .is_some_and(|alias| alias.targets.iter().any(|t| principal.allows_model(&t.id)))
    }

    /// The `GET /models/{id}` body, when `id` is listed.
    pub(crate) fn model_object(&self, id: &str) -> Option<Bytes> {
        let owned_by = if self.aliases.contains_key(id) {
            "ai-router"
        } else {
            let (provider, model) = id.split_once('/')?;
            let models = self.providers.get(provider)?;
            models.iter().any(|m| &**m == model).then_some(provider)?
        };
        let object = ModelObject {
            id,
            object: "model",
            created: self.created,
            owned_by,
        };
        serde_json::to_vec(&object).ok().map(Bytes::from)
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("providers", &self.providers)
            .field("aliases", &self.aliases.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

/// Builds a [`RouteTable`]. See [`RouteTable`].
#[derive(Debug, Default)]
#[must_use]
pub struct RouteTableBuilder {
    providers: Vec<(String, Vec<String>)>,
    /// Models listed with [`models`](Self::models), merged into their provider at build.
    more_models: Vec<(String, Vec<String>)>,
    listed_only: Vec<String>,
    aliases: Vec<(String, Vec<String>)>,
    policies: Vec<(String, AliasPolicy)>,
}

impl RouteTableBuilder {
    /// Adds a provider and the models `GET /models` lists for it. Any model id under a
    /// configured provider routes, listed or not.
    pub fn provider<I, M>(mut self, name: impl Into<String>, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.providers
            .push((name.into(), models.into_iter().map(Into::into).collect()));
        self
    }

    /// Lists more models for provider `name` (added with [`provider`](Self::provider), before
    /// or after this call).
    pub fn models<I, M>(mut self, name: impl Into<String>, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.more_models
            .push((name.into(), models.into_iter().map(Into::into).collect()));
        self
    }

    /// Whether provider `name` routes any model id (the default) or only its listed models
    /// (`allow_any_model = false`): other `name/...` ids are then 404 `model_not_found`.
    pub fn allow_any_model(mut self, name: impl Into<String>, allow: bool) -> Self {
        let name = name.into();
        self.listed_only.retain(|listed| *listed != name);
        if !allow {
            self.listed_only.push(name);
        }
        self
    }

    /// Sets the policy of alias `name` (added with [`alias`](Self::alias), before or after
    /// this call): its strategy, retries and timeouts.
    pub fn alias_policy(mut self, name: impl Into<String>, policy: AliasPolicy) -> Self {
        self.policies.push((name.into(), policy));
        self
    }

    /// Adds an alias with its ordered `provider/model` targets: the first is tried first, the
    /// others in order when it fails (see [`AliasPolicy`] for other strategies).
    pub fn alias<I, M>(mut self, name: impl Into<String>, targets: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.aliases
            .push((name.into(), targets.into_iter().map(Into::into).collect()));
        self
    }

    /// Checks names and targets and builds the table.
    pub fn build(self) -> Result<RouteTable, crate::error::BuildError> {
        use crate::error::BuildError;
        let mut providers: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
        for (name, models) in self.providers {
            if !valid_provider_name(&name) {
                return Err(BuildError::new(format!(
                    "provider name `{name}` must be non-empty ASCII letters, digits, `-`, `_` or `.`"
                )));
            }
            if providers.contains_key(name.as_str()) {
                return Err(BuildError::new(format!(
                    "provider `{name}` is configured twice"
                )));
            }
            for model in &models {
                check_model_id(model).map_err(|_| {
                    BuildError::new(format!(
                        "provider `{name}` lists an invalid model id `{model}`"
                    ))
                })?;
            }
            providers.insert(name.into(), models.into_iter().map(Into::into).collect());
        }
        for (name, models) in self.more_models {
            let listed = providers.get_mut(name.as_str()).ok_or_else(|| {
                BuildError::new(format!(
                    "models are listed for provider `{name}`, which is not configured"
                ))
            })?;
            for model in models {
                check_model_id(&model).map_err(|_| {
                    BuildError::new(format!(
                        "provider `{name}` lists an invalid model id `{model}`"
                    ))
                })?;
                listed.push(model.into());
            }
        }
        let mut listed_only = Vec::new();
        for name in self.listed_only {
            let (name, _) = providers
                .get_key_value(name.as_str())
                .ok_or_else(|| BuildError::new(format!("provider `{name}` is not configured")))?;
            listed_only.push(name.clone());
        }
        let mut aliases = HashMap::new();
        for (name, targets) in self.aliases {
            if check_model_id(&name).is_err() {
                return Err(BuildError::new(format!(
                    "alias `{name}` is not a valid model id"
                )));
            }
            if targets.is_empty() {
                return Err(BuildError::new(format!("alias `{name}` has no targets")));
            }
            let mut refs = Vec::with_capacity(targets.len());
            for target in &targets {
                let model_ref = target
                    .split_once('/')
                    .and_then(|(provider, model)| {
                        let (provider, _) = providers.get_key_value(provider)?;
                        let label = HeaderValue::try_from(target.as_str()).ok()?;
                        (!model.is_empty() && check_model_id(model).is_ok()).then(|| ModelRef {
                            provider: provider.clone(),
                            model: model.into(),
                            id: target.as_str().into(),
                            label,
                        })
                    })
                    .ok_or_else(|| {
                        BuildError::new(format!(
                            "alias `{name}`: target `{target}` must be `provider/model` with a configured provider"
                        ))
                    })?;
                refs.push(model_ref);
            }
            let alias = Alias {
                targets: refs,
                policy: AliasPolicy::default(),
                cumulative: Vec::new(),
                turn: AtomicUsize::new(0),
            };
            if aliases
                .insert(Arc::<str>::from(name.as_str()), alias)
                .is_some()
            {
                return Err(BuildError::new(format!(
                    "alias `{name}` is configured twice"
                )));
            }
        }
        for (name, policy) in self.policies {
            let alias = aliases.get_mut(name.as_str()).ok_or_else(|| {
                BuildError::new(format!(
                    "a policy is set for alias `{name}`, which is not configured"
                ))
            })?;
            alias.cumulative = cumulative_weights(&name, &policy.strategy, alias.targets.len())?;
            check_timeouts(&name, &policy)?;
            alias.policy = policy;
        }
        let aliases: HashMap<Arc<str>, Arc<Alias>> = aliases
            .into_iter()
            .map(|(name, alias)| (name, Arc::new(alias)))
            .collect();
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let catalogue = render_catalogue(&providers, &aliases, created, |_| true);
        Ok(RouteTable {
            providers,
            listed_only,
            aliases,
            catalogue,
            created,
        })
    }
}

/// The cumulative weights of a weighted alias (normalised to end at 1), after checking them:
/// one per target, each finite and above 0.
fn cumulative_weights(
    name: &str,
    strategy: &Strategy,
    targets: usize,
) -> Result<Vec<f64>, crate::error::BuildError> {
    use crate::error::BuildError;
    let Strategy::Weighted(weights) = strategy else {
        return Ok(Vec::new());
    };
    if weights.len() != targets {
        return Err(BuildError::new(format!(
            "alias `{name}`: {} weights for {targets} targets (give one per target)",
            weights.len()
        )));
    }
    if weights.iter().any(|w| !w.is_finite() || *w <= 0.0) {
        return Err(BuildError::new(format!(
            "alias `{name}`: weights must be numbers above 0"
        )));
    }
    let total: f64 = weights.iter().sum();
    let mut edge = 0.0;
    Ok(weights
        .iter()
        .map(|w| {
            edge += w / total;
            edge
        })
        .collect())
}

/// Timeouts of zero would fail every attempt.
fn check_timeouts(name: &str, policy: &AliasPolicy) -> Result<(), crate::error::BuildError> {
    let zero = |t: Option<std::time::Duration>| t.is_some_and(|t| t.is_zero());
    if zero(policy.timeout) || zero(policy.first_byte_timeout) {
        return Err(crate::error::BuildError::new(format!(
            "alias `{name}`: timeouts must be longer than zero"
        )));
    }
    Ok(())
}

fn render_catalogue(
    providers: &HashMap<Arc<str>, Vec<Arc<str>>>,
    aliases: &HashMap<Arc<str>, Arc<Alias>>,
    created: u64,
    keep: impl Fn(&str) -> bool,
) -> Bytes {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<ModelObject<'a>>,
    }
    let mut ids: Vec<(String, &str)> = providers
        .iter()
        .flat_map(|(provider, models)| {
            models
                .iter()
                .map(move |model| (format!("{provider}/{model}"), &**provider))
        })
        .collect();
    ids.sort();
    let mut alias_ids: Vec<&str> = aliases.keys().map(|a| &**a).collect();
    alias_ids.sort_unstable();
    ids.extend(alias_ids.into_iter().map(|a| (a.to_owned(), "ai-router")));
    let data = ids
        .iter()
        .filter(|(id, _)| keep(id))
        .map(|(id, owned_by)| ModelObject {
            id,
            object: "model",
            created,
            owned_by,
        })
        .collect();
    let list = List {
        object: "list",
        data,
    };
    serde_json::to_vec(&list)
        .map(Bytes::from)
        .unwrap_or_default()
}

fn valid_provider_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Refuses model ids that are empty, too long, hold control characters or characters with a
/// meaning in URLs (`?`, `#`, `\`, `%`), or path segments such as `.`, `..` or an empty one.
pub(crate) fn check_model_id(model: &str) -> Result<(), Error> {
    let bad_char = |c: char| c.is_control() || matches!(c, '?' | '#' | '\\' | '%');
    let bad_segment = |segment: &str| matches!(segment, "" | "." | "..");
    if model.is_empty()
        || model.len() > 256
        || model.chars().any(bad_char)
        || model.split('/').any(bad_segment)
    {
        return Err(Error::invalid_model());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::builder()
            .provider("openai", ["gpt-4o-mini"])
            .provider("openrouter", [] as [&str; 0])
            .alias(
                "fast",
                ["openai/gpt-4o-mini", "openrouter/meta-llama/llama-3-8b"],
            )
            .alias("team/default", ["openrouter/x"])
            .build()
            .unwrap()
    }

    #[test]
    fn resolves_direct_ids_and_aliases() {
        let table = table();
        let target = table
            .resolve("openai/gpt-4o-mini", Endpoint::ChatCompletions)
            .unwrap();
        assert_eq!(
            (target.provider(), target.upstream_model()),
            ("openai", "gpt-4o-mini")
        );
        let target = table
            .resolve(
                "openrouter/meta-llama/llama-3-8b",
                Endpoint::ChatCompletions,
            )
            .unwrap();
        assert_eq!(target.upstream_model(), "meta-llama/llama-3-8b");
        let target = table.resolve("fast", Endpoint::Embeddings).unwrap();
        assert_eq!(
            (target.provider(), target.upstream_model()),
            ("openai", "gpt-4o-mini")
        );
        let target = table.resolve("team/default", Endpoint::Embeddings).unwrap();
        assert_eq!(target.provider(), "openrouter");
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let table = table();
        for model in ["nope/gpt", "gpt-4o", "openai/", "slow"] {
            let error = table.resolve(model, Endpoint::ChatCompletions).unwrap_err();
            assert_eq!(error.code(), Some("model_not_found"), "{model}");
        }
    }

    #[test]
    fn model_id_checks() {
        for good in ["openai/gpt-4o", "ft:gpt-4o:org::id", "a/b/c", "llama3.1:8b"] {
            assert!(check_model_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/../b",
            "../x",
            "a//b",
            "/a",
            "a/",
            "x\ny",
            "a?b",
            "a#b",
            "a\\b",
            "a%2e",
            &"x".repeat(300),
        ] {
            assert!(check_model_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn listed_only_providers_refuse_unlisted_models() {
        let table = RouteTable::builder()
            .provider("openai", [] as [&str; 0])
            .allow_any_model("openai", false)
            .models("openai", ["gpt-4o-mini"])
            .build()
            .unwrap();
        assert!(
            table
                .resolve("openai/gpt-4o-mini", Endpoint::ChatCompletions)
                .is_ok()
        );
        let error = table
            .resolve("openai/gpt-5", Endpoint::ChatCompletions)
            .unwrap_err();
        assert_eq!(error.code(), Some("model_not_found"));
    }

    #[test]
    fn bad_tables_do_not_build() {
        assert!(
            RouteTable::builder()
                .provider("a/b", [] as [&str; 0])
                .build()
                .is_err()
        );
        assert!(
            RouteTable::builder()
                .alias("x", ["nope/m"])
                .build()
                .is_err()
        );
        assert!(
            RouteTable::builder()
                .alias("x", [] as [&str; 0])
                .build()
                .is_err()
        );
        assert!(
            RouteTable::builder()
                .provider("a", [] as [&str; 0])
                .provider("a", [] as [&str; 0])
                .build()
                .is_err()
        );
    }

    #[test]
    fn catalogue_lists_models_then_aliases() {
        let json: serde_json::Value = serde_json::from_slice(&table().catalogue(None)).unwrap();
        assert_eq!(json["object"], "list");
        let ids: Vec<&str> = json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["openai/gpt-4o-mini", "fast", "team/default"]);
        assert_eq!(json["data"][0]["owned_by"], "openai");
        assert_eq!(json["data"][0]["object"], "model");

        let principal = Principal::new("p").allow_models(["fast"]);
        let json: serde_json::Value =
            serde_json::from_slice(&table().catalogue(Some(&principal))).unwrap();
        let ids: Vec<&str> = json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["fast"]);
        let principal = Principal::new("p").allow_models(["openai/*"]);
        assert!(table().may_use(&principal, "fast"));
        assert!(!table().may_use(&principal, "team/default"));
    }
}
