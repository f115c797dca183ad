//! Model bindings: an agent's `model:` resolved against the team's `models:`
//! and `providers:` and the providers bgagents knows, into the endpoint,
//! protocol and key variable the host's model client uses. The guest never
//! sees any of it.

use super::file::{self, ModelFile, ProviderFile, TeamFile};
use std::collections::BTreeMap;

/// The wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelApi {
    /// OpenAI's `POST {base_url}/chat/completions`.
    OpenAiChat,
    /// Anthropic's `POST {base_url}/v1/messages`.
    AnthropicMessages,
}

impl ModelApi {
    /// A short name for `check`.
    pub fn describe(self) -> &'static str {
        match self {
            ModelApi::OpenAiChat => "OpenAI chat completions",
            ModelApi::AnthropicMessages => "Anthropic messages",
        }
    }
}

/// An agent's model, resolved: everything the host needs to call it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBinding {
    /// As written: `openai/gpt-4o` or a `models:` name.
    pub reference: String,
    /// A known provider's name or a `providers:` entry.
    pub provider: String,
    pub model: String,
    pub api: ModelApi,
    /// OpenAI: the root `/chat/completions` is appended to; Anthropic: the
    /// root `/v1/messages` is appended to. No trailing `/`.
    pub base_url: String,
    /// The NAME of the environment variable holding the key; `None` when the
    /// provider needs none.
    pub key_var: Option<String>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub parallel_tool_calls: Option<bool>,
}

impl ModelBinding {
    /// `provider/model`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.provider, self.model)
    }

    /// The endpoint's host (and port, when not the scheme's default).
    pub fn endpoint_host(&self) -> String {
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) => match (url.host_str(), url.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_string(),
                _ => self.base_url.clone(),
            },
            Err(_) => self.base_url.clone(),
        }
    }
}

/// The `todo` toolset's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TodoSettings {
    /// One list shared by the tasks of every agent of the team that sets
    /// `shared: true`, within one session (a `run`, an MCP client), rather
    /// than one per task.
    pub shared: bool,
}

/// A provider bgagents knows by name.
struct KnownProvider {
    name: &'static str,
    api: ModelApi,
    base_url: &'static str,
    key_var: Option<&'static str>,
}

/// Providers with their default endpoint and key variable (the same as
/// docker-agent's).
const KNOWN_PROVIDERS: &[KnownProvider] = &[
    KnownProvider {
        name: "openai",
        api: ModelApi::OpenAiChat,
        base_url: "https://api.openai.com/v1",
        key_var: Some("OPENAI_API_KEY"),
    },
    KnownProvider {
        name: "anthropic",
        api: ModelApi::AnthropicMessages,
        base_url: "https://api.anthropic.com",
        key_var: Some("ANTHROPIC_API_KEY"),
    },
    KnownProvider {
        name: "dmr",
        api: ModelApi::OpenAiChat,
        base_url: "http://127.0.0.1:12434/engines/v1",
        key_var: None,
    },
    KnownProvider {
        name: "ollama",
        api: ModelApi::OpenAiChat,
        base_url: "http://localhost:11434/v1",
        key_var: None,
    },
    KnownProvider {
        name: "mistral",
        api: ModelApi::OpenAiChat,
        base_url: "https://api.mistral.ai/v1",
        key_var: Some("MISTRAL_API_KEY"),
    },
    KnownProvider {
        name: "xai",
        api: ModelApi::OpenAiChat,
        base_url: "https://api.x.ai/v1",
        key_var: Some("XAI_API_KEY"),
    },
    KnownProvider {
        name: "nebius",
        api: ModelApi::OpenAiChat,
        base_url: "https://api.studio.nebius.com/v1",
        key_var: Some("NEBIUS_API_KEY"),
    },
    KnownProvider {
        name: "requesty",
        api: ModelApi::OpenAiChat,
        base_url: "https://router.requesty.ai/v1",
        key_var: Some("REQUESTY_API_KEY"),
    },
    KnownProvider {
        name: "minimax",
        api: ModelApi::OpenAiChat,
        base_url: "https://api.minimax.io/v1",
        key_var: Some("MINIMAX_API_KEY"),
    },
];

/// docker-agent providers bgagents cannot call yet.
const UNSUPPORTED_PROVIDERS: &[&str] = &["google", "amazon-bedrock", "azure"];

fn known_names() -> String {
    KNOWN_PROVIDERS
        .iter()
        .map(|provider| provider.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a reference or entry is, for messages.
struct At<'a>(&'a str);

/// Every `models:` entry resolved (without the key check, which is made for
/// the entries agents use): `None` for an entry with problems, which are
/// reported once here.
pub(super) fn resolve_models(
    file: &TeamFile,
    problems: &mut Vec<String>,
) -> BTreeMap<String, Option<ModelBinding>> {
    for (name, provider) in &file.providers {
        check_provider_entry(name, provider, problems);
    }
    file.models
        .iter()
        .map(|(name, entry)| {
            let at = format!("models.{}", file::shorten(name));
            let binding = resolve_entry(name, entry, file, &At(&at), problems);
            (name.clone(), binding)
        })
        .collect()
}

/// The model an agent's `model:` names, with the key variable checked.
pub(super) fn resolve_agent_model(
    reference: &str,
    at: &str,
    file: &TeamFile,
    models: &BTreeMap<String, Option<ModelBinding>>,
    problems: &mut Vec<String>,
) -> Option<ModelBinding> {
    let at = format!("{at}.model");
    let shown = file::shorten(reference);
    let binding = if let Some(entry) = models.get(reference) {
        // Its own problems were reported under `models:`.
        entry.clone()?
    } else {
        let Some((provider, model)) = reference.split_once('/') else {
            let defined = if models.is_empty() {
                "there is no `models:` section".to_string()
            } else {
                format!(
                    "defined: {}",
                    models
                        .keys()
                        .map(|name| file::shorten(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            problems.push(format!(
                "{at}: `{shown}` is not a name under `models:` ({defined}); name a `models:` \
                 entry or write `provider/model` such as openai/gpt-4o"
            ));
            return None;
        };
        if provider.trim().is_empty() || model.trim().is_empty() {
            problems.push(format!(
                "{at}: `{shown}` is not `provider/model`; write both parts, such as \
                 openai/gpt-4o or dmr/ai/qwen3"
            ));
            return None;
        }
        let entry = ModelFile {
            provider: Some(provider.to_string()),
            model: Some(model.to_string()),
            ..ModelFile::default()
        };
        resolve_entry(reference, &entry, file, &At(&at), problems)?
    };
    let binding = ModelBinding {
        reference: reference.to_string(),
        ..binding
    };
    if let Some(var) = &binding.key_var {
        let set = std::env::var_os(var).is_some_and(|value| !value.is_empty());
        if !set {
            problems.push(format!(
                "{at}: `{shown}` needs an API key in the environment variable {var}, which is \
                 not set; `export {var}=…` before running bgagents (or name another variable \
                 with `token_key:` in a `models:` entry)"
            ));
            return None;
        }
    }
    Some(binding)
}

fn check_provider_entry(name: &str, entry: &ProviderFile, problems: &mut Vec<String>) {
    let at = format!("providers.{}", file::shorten(name));
    if let Some(api) = &entry.api_type {
        api_of(api, &at, problems);
    }
    match &entry.base_url {
        None => problems.push(format!(
            "{at}: missing `base_url`; give the endpoint, such as \
             `base_url: https://llm.example.com/v1`"
        )),
        Some(url) => {
            check_base_url(url, &format!("{at}.base_url"), problems);
        }
    }
    if let Some(var) = &entry.token_key {
        check_var_name(var, &format!("{at}.token_key"), problems);
    }
}

fn api_of(api_type: &str, at: &str, problems: &mut Vec<String>) -> Option<ModelApi> {
    match api_type {
        "openai_chatcompletions" | "openai" => Some(ModelApi::OpenAiChat),
        "anthropic" | "anthropic_messages" => Some(ModelApi::AnthropicMessages),
        "openai_responses" => {
            problems.push(format!(
                "{at}.api_type: `openai_responses` is not supported; use \
                 `api_type: openai_chatcompletions` (the endpoint must offer /chat/completions)"
            ));
            None
        }
        other => {
            problems.push(format!(
                "{at}.api_type: unknown API type `{}`; use openai_chatcompletions or anthropic",
                file::shorten(other)
            ));
            None
        }
    }
}

fn resolve_entry(
    name: &str,
    entry: &ModelFile,
    file: &TeamFile,
    at: &At,
    problems: &mut Vec<String>,
) -> Option<ModelBinding> {
    let at = at.0;
    let before = problems.len();
    let provider = entry.provider.as_deref().unwrap_or_default();
    let model = entry.model.as_deref().unwrap_or_default();
    if entry.provider.is_none() {
        problems.push(format!(
            "{at}: missing `provider`; add one such as `provider: openai` (known: {})",
            known_names()
        ));
    }
    if model.trim().is_empty() {
        problems.push(format!(
            "{at}: missing `model`; add the provider's model name, such as `model: gpt-4o`"
        ));
    }
    let endpoint = if entry.provider.is_none() {
        None
    } else if let Some(custom) = file.providers.get(provider) {
        let mut quiet = Vec::new();
        let api = match &custom.api_type {
            None => Some(ModelApi::OpenAiChat),
            // Reported once, under `providers:`.
            Some(api) => api_of(api, "", &mut quiet),
        };
        api.map(|api| {
            (
                api,
                custom.base_url.clone().unwrap_or_default(),
                custom.token_key.clone(),
            )
        })
    } else if let Some(known) = KNOWN_PROVIDERS.iter().find(|known| known.name == provider) {
        let mut base_url = known.base_url.to_string();
        if known.name == "dmr"
            && let Some(host) = std::env::var("MODEL_RUNNER_HOST")
                .ok()
                .filter(|host| !host.is_empty())
        {
            base_url = format!("{}/engines/v1", host.trim_end_matches('/'));
            // Checked like a `base_url` the team file gives.
            check_base_url(
                &base_url,
                &format!("{at} (from MODEL_RUNNER_HOST)"),
                problems,
            );
        }
        Some((known.api, base_url, known.key_var.map(str::to_string)))
    } else if UNSUPPORTED_PROVIDERS.contains(&provider) {
        problems.push(format!(
            "{at}: provider `{provider}` is not supported yet; use an OpenAI-compatible \
             endpoint via `base_url` under a `providers:` entry (`api_type: \
             openai_chatcompletions`)"
        ));
        None
    } else {
        let custom = if file.providers.is_empty() {
            String::new()
        } else {
            format!(
                ", or one under `providers:` ({})",
                file.providers
                    .keys()
                    .map(|name| file::shorten(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        problems.push(format!(
            "{at}: unknown provider `{}`; use one of {}{custom}, or define it under \
             `providers:` with a `base_url`",
            file::shorten(provider),
            known_names()
        ));
        None
    };
    if let Some(url) = &entry.base_url {
        check_base_url(url, &format!("{at}.base_url"), problems);
    }
    if let Some(var) = &entry.token_key {
        check_var_name(var, &format!("{at}.token_key"), problems);
    }
    if entry.max_tokens == Some(0) {
        problems.push(format!("{at}.max_tokens: must be at least 1"));
    }
    if let Some(value) = entry.temperature
        && !(0.0..=2.0).contains(&value)
    {
        problems.push(format!("{at}.temperature: {value} is outside 0 to 2"));
    }
    if let Some(value) = entry.top_p
        && !(0.0..=1.0).contains(&value)
    {
        problems.push(format!("{at}.top_p: {value} is outside 0 to 1"));
    }
    let (api, base_url, key_var) = endpoint?;
    if problems.len() != before {
        return None;
    }
    let base_url = entry.base_url.clone().unwrap_or(base_url);
    Some(ModelBinding {
        reference: name.to_string(),
        provider: provider.to_string(),
        model: model.to_string(),
        api,
        base_url: base_url.trim_end_matches('/').to_string(),
        key_var: entry.token_key.clone().or(key_var),
        max_tokens: entry.max_tokens,
        temperature: entry.temperature,
        top_p: entry.top_p,
        parallel_tool_calls: entry.parallel_tool_calls,
    })
}

fn check_base_url(url: &str, at: &str, problems: &mut Vec<String>) -> bool {
    let fine = reqwest::Url::parse(url).is_ok_and(|parsed| {
        matches!(parsed.scheme(), "http" | "https")
            && parsed.host_str().is_some()
            && parsed.username().is_empty()
            && parsed.password().is_none()
            && parsed.query().is_none()
            && parsed.fragment().is_none()
    });
    let credentials = reqwest::Url::parse(url)
        .is_ok_and(|parsed| !parsed.username().is_empty() || parsed.password().is_some());
    if credentials {
        // Not echoed: what sits before the `@` may well be a key.
        problems.push(format!(
            "{at}: the URL carries credentials (not shown); put the key in an environment \
             variable named by `token_key:` and give the URL without them"
        ));
    } else if !fine {
        problems.push(format!(
            "{at}: `{}` is not an http(s) URL such as https://llm.example.com/v1 (no \
             credentials, query or fragment; put the key in an environment variable named by \
             `token_key:`)",
            file::shorten(url)
        ));
    }
    fine
}

fn check_var_name(var: &str, at: &str, problems: &mut Vec<String>) {
    let valid = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        problems.push(format!(
            "{at}: not an environment variable name (the value is not shown, in case it is a \
             key); write the NAME of the variable holding the key, such as OPENAI_API_KEY"
        ));
    }
}
