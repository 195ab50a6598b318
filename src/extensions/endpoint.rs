//! The OpenAI endpoints the router serves, and how request paths map to them.

use std::borrow::Cow;

use http::Method;

/// An OpenAI endpoint served by the router (paths as under `/v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /models`
    ListModels,
    /// `GET /models/{model}`
    RetrieveModel,
    /// `POST /chat/completions`
    ChatCompletions,
    /// `POST /completions`
    Completions,
    /// `POST /embeddings`
    Embeddings,
    /// `POST /images/generations`
    ImagesGenerations,
    /// `POST /images/edits` (multipart, or JSON)
    ImagesEdits,
    /// `POST /images/variations` (multipart)
    ImagesVariations,
    /// `POST /moderations`
    Moderations,
    /// `POST /rerank` (Cohere/Jina/vLLM shape)
    Rerank,
    /// `POST /audio/speech`, also reachable as `/speech`
    AudioSpeech,
    /// `POST /audio/transcriptions` (multipart)
    AudioTranscriptions,
    /// `POST /audio/translations` (multipart)
    AudioTranslations,
    /// `POST /responses`
    Responses,
}

/// The request bodies an endpoint takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accepts {
    /// No body (GET).
    Nothing,
    /// A JSON object.
    Json,
    /// A `multipart/form-data` form.
    Multipart,
    /// Either.
    JsonOrMultipart,
}

impl Endpoint {
    /// The path under a provider's base URL, e.g. `/chat/completions`.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ListModels | Self::RetrieveModel => "/models",
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::ImagesGenerations => "/images/generations",
            Self::ImagesEdits => "/images/edits",
            Self::ImagesVariations => "/images/variations",
            Self::AudioTranscriptions => "/audio/transcriptions",
            Self::AudioTranslations => "/audio/translations",
            Self::Moderations => "/moderations",
            Self::Rerank => "/rerank",
            Self::AudioSpeech => "/audio/speech",
            Self::Responses => "/responses",
        }
    }

    /// A short name for logs and spans, e.g. `chat.completions`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ListModels => "models.list",
            Self::RetrieveModel => "models.retrieve",
            Self::ChatCompletions => "chat.completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::ImagesGenerations => "images.generations",
            Self::ImagesEdits => "images.edits",
            Self::ImagesVariations => "images.variations",
            Self::AudioTranscriptions => "audio.transcriptions",
            Self::AudioTranslations => "audio.translations",
            Self::Moderations => "moderations",
            Self::Rerank => "rerank",
            Self::AudioSpeech => "audio.speech",
            Self::Responses => "responses",
        }
    }

    /// The one method the endpoint takes.
    pub fn method(self) -> Method {
        match self {
            Self::ListModels | Self::RetrieveModel => Method::GET,
            _ => Method::POST,
        }
    }

    /// The bodies the endpoint takes.
    pub(crate) fn accepts(self) -> Accepts {
        match self {
            Self::ListModels | Self::RetrieveModel => Accepts::Nothing,
            Self::ImagesEdits => Accepts::JsonOrMultipart,
            Self::ImagesVariations | Self::AudioTranscriptions | Self::AudioTranslations => {
                Accepts::Multipart
            }
            _ => Accepts::Json,
        }
    }

    /// Whether OpenAI lets the client leave `model` out (a configured default applies).
    pub fn model_optional(self) -> bool {
        matches!(
            self,
            Self::ImagesGenerations
                | Self::ImagesEdits
                | Self::ImagesVariations
                | Self::Moderations
                | Self::Responses
        )
    }

    /// The form part the endpoint cannot do without, besides `model` (`name` or `name[]`).
    pub(crate) fn required_file(self) -> Option<&'static str> {
        match self {
            Self::AudioTranscriptions | Self::AudioTranslations => Some("file"),
            Self::ImagesEdits | Self::ImagesVariations => Some("image"),
            _ => None,
        }
    }

    /// The default body limit: enough for OpenAI's own upload limits (25 MB audio, 50 MB per
    /// image), 32 MiB for JSON.
    pub fn default_body_limit(self) -> usize {
        const MIB: usize = 1024 * 1024;
        match self {
            Self::ImagesEdits | Self::ImagesVariations => 64 * MIB,
            _ => 32 * MIB,
        }
    }

    /// The endpoint's position in [`Endpoint::ALL`], for tables indexed by endpoint.
    pub fn index(self) -> usize {
        // Fieldless, declared in the order of `ALL` (a test checks it).
        self as usize
    }

    /// Every endpoint, for tables and tests.
    pub const ALL: [Endpoint; 14] = [
        Self::ListModels,
        Self::RetrieveModel,
        Self::ChatCompletions,
        Self::Completions,
        Self::Embeddings,
        Self::ImagesGenerations,
        Self::ImagesEdits,
        Self::ImagesVariations,
        Self::Moderations,
        Self::Rerank,
        Self::AudioSpeech,
        Self::AudioTranscriptions,
        Self::AudioTranslations,
        Self::Responses,
    ];

    /// The endpoint at an OpenAI path (`/chat/completions` or `chat/completions`); `None` for
    /// unknown paths and for `/models/{model}`.
    pub fn from_path(path: &str) -> Option<Self> {
        let path = path.trim();
        let owned;
        let path = if path.starts_with('/') {
            path
        } else {
            owned = format!("/{path}");
            &owned
        };
        match match_path(path)? {
            Matched::Endpoint(endpoint) => Some(endpoint),
            Matched::RetrieveModel(_) => None,
        }
    }

    /// The `Allow` header value for a wrong method.
    pub(crate) fn allow(self) -> &'static str {
        match self {
            Self::ListModels | Self::RetrieveModel => "GET",
            _ => "POST",
        }
    }
}

/// A request path matched to an endpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Matched<'a> {
    /// A body-less or JSON endpoint.
    Endpoint(Endpoint),
    /// `GET /models/{model}`, with the model id percent-decoded.
    RetrieveModel(Cow<'a, str>),
}

/// Maps a path (below the mount point) to its endpoint.
pub(crate) fn match_path(path: &str) -> Option<Matched<'_>> {
    let endpoint = match path.strip_suffix('/').unwrap_or(path) {
        "/models" => Endpoint::ListModels,
        "/chat/completions" => Endpoint::ChatCompletions,
        "/completions" => Endpoint::Completions,
        "/embeddings" => Endpoint::Embeddings,
        "/images/generations" => Endpoint::ImagesGenerations,
        "/images/edits" => Endpoint::ImagesEdits,
        "/images/variations" => Endpoint::ImagesVariations,
        "/audio/transcriptions" => Endpoint::AudioTranscriptions,
        "/audio/translations" => Endpoint::AudioTranslations,
        "/moderations" => Endpoint::Moderations,
        "/rerank" => Endpoint::Rerank,
        "/audio/speech" | "/speech" => Endpoint::AudioSpeech,
        "/responses" => Endpoint::Responses,
        _ => {
            // The model id is the whole rest of the path: ids contain `/` and `:`.
            let id = path.strip_prefix("/models/").filter(|id| !id.is_empty())?;
            let id = percent_encoding::percent_decode_str(id)
                .decode_utf8()
                .ok()?;
            return Some(Matched::RetrieveModel(id));
        }
    };
    Some(Matched::Endpoint(endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_endpoints() {
        let cases = [
            ("/chat/completions", Endpoint::ChatCompletions),
            ("/chat/completions/", Endpoint::ChatCompletions),
            ("/completions", Endpoint::Completions),
            ("/embeddings", Endpoint::Embeddings),
            ("/models", Endpoint::ListModels),
            ("/speech", Endpoint::AudioSpeech),
            ("/audio/speech", Endpoint::AudioSpeech),
            ("/rerank", Endpoint::Rerank),
            ("/responses", Endpoint::Responses),
            ("/moderations", Endpoint::Moderations),
            ("/images/generations", Endpoint::ImagesGenerations),
            ("/images/edits", Endpoint::ImagesEdits),
            ("/images/variations", Endpoint::ImagesVariations),
            ("/audio/transcriptions", Endpoint::AudioTranscriptions),
            ("/audio/translations", Endpoint::AudioTranslations),
        ];
        for (path, endpoint) in cases {
            assert_eq!(
                match_path(path),
                Some(Matched::Endpoint(endpoint)),
                "{path}"
            );
        }
        for endpoint in Endpoint::ALL {
            if endpoint != Endpoint::RetrieveModel {
                let matched = match_path(endpoint.upstream_path());
                assert_eq!(matched, Some(Matched::Endpoint(endpoint)), "{endpoint:?}");
            }
        }
        assert_eq!(match_path("/chat"), None);
        assert_eq!(
            match_path("/models/"),
            Some(Matched::Endpoint(Endpoint::ListModels))
        );
        assert_eq!(match_path(""), None);
    }

    #[test]
    fn indexes_follow_all() {
        for (i, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(endpoint.index(), i, "{endpoint:?}");
        }
    }

    #[test]
    fn model_ids_take_the_rest_of_the_path() {
        let id = |path| match match_path(path) {
            Some(Matched::RetrieveModel(id)) => id.into_owned(),
            other => panic!("{path}: {other:?}"),
        };
        assert_eq!(id("/models/openai/gpt-4o"), "openai/gpt-4o");
        assert_eq!(id("/models/ft:gpt-4o:org::id"), "ft:gpt-4o:org::id");
        assert_eq!(id("/models/openai%2Fgpt-4o"), "openai/gpt-4o");
    }
}
