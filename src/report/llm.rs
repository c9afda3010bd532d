//! The client for OpenAI-compatible chat-completions endpoints (Groq, OpenAI, Ollama, vLLM...).
//! Feature `llm`; `https://` base URLs need feature `llm-tls`.

use super::http::{HttpClient, HttpError};
use super::prompt::Prompt;
use serde::Deserialize;
use serde_json::json;
use std::fmt;
use std::time::Duration;

/// Where and how to call the model. Plain data.
///
/// | field | default |
/// | --- | --- |
/// | `base_url` | — (e.g. `https://api.groq.com/openai/v1`, `http://localhost:11434/v1`) |
/// | `model` | — |
/// | `api_key` | none (no `Authorization` header) |
/// | `timeout` | 20 s, for the whole call |
/// | `max_tokens` | 600 |
/// | `temperature` | 0.2 |
#[derive(Clone, PartialEq)]
pub struct LlmConfig {
    /// The API root; `/chat/completions` is appended.
    pub base_url: String,
    /// The model name the endpoint expects.
    pub model: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Limit on the whole call, connect to last byte.
    pub timeout: Duration,
    /// Most tokens the answer may use.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
}

impl fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[set]"))
            .field("timeout", &self.timeout)
            .field("max_tokens", &self.max_tokens)
            .field("temperature", &self.temperature)
            .finish()
    }
}

impl LlmConfig {
    /// A config for `base_url` and `model` with the defaults above.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(20),
            max_tokens: 600,
            temperature: 0.2,
        }
    }

    /// Reads `POOLGUARD_LLM_BASE_URL`, `POOLGUARD_LLM_MODEL` and (optional)
    /// `POOLGUARD_LLM_API_KEY`; `None` unless both the URL and the model are set.
    pub fn from_env() -> Option<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut c = Self::new(var("POOLGUARD_LLM_BASE_URL")?, var("POOLGUARD_LLM_MODEL")?);
        c.api_key = var("POOLGUARD_LLM_API_KEY");
        Some(c)
    }

    /// The full endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }
}

/// Why an analysis call failed. Every failure is one of these; none panics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LlmError {
    /// The base URL is not a usable `http://` (or, with `llm-tls`, `https://`) URL.
    InvalidUrl(String),
    /// No connection could be made (after one retry).
    Connect(String),
    /// The call took longer than the configured timeout.
    Timeout(Duration),
    /// The connection broke while sending or reading.
    Io(String),
    /// The endpoint answered with a non-success status.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The body was not a chat-completions response.
    Malformed(String),
    /// The response body was longer than this many bytes (1 MiB); it was not read further.
    TooLarge(usize),
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LlmError::InvalidUrl(e) => write!(f, "invalid LLM endpoint: {e}"),
            LlmError::Connect(e) => write!(f, "could not connect to the LLM endpoint: {e}"),
            LlmError::Timeout(d) => write!(f, "LLM call timed out after {} ms", d.as_millis()),
            LlmError::Io(e) => write!(f, "LLM connection failed: {e}"),
            LlmError::Status { status, body } => {
                write!(f, "LLM endpoint answered {status}: {body}")
            }
            LlmError::Malformed(e) => write!(f, "LLM response not understood: {e}"),
            LlmError::TooLarge(limit) => {
                write!(f, "LLM response larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for LlmError {}

impl From<HttpError> for LlmError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::InvalidUrl(e) => LlmError::InvalidUrl(e),
            HttpError::Connect(e) => LlmError::Connect(e),
            HttpError::Timeout(d) => LlmError::Timeout(d),
            HttpError::Io(e) => LlmError::Io(e),
            HttpError::TooLarge(limit) => LlmError::TooLarge(limit),
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// `choices[0].message.content`.
    pub content: String,
    /// The model the endpoint says answered.
    pub model: String,
    /// `usage.prompt_tokens`, if reported.
    pub prompt_tokens: Option<u64>,
    /// `usage.completion_tokens`, if reported.
    pub completion_tokens: Option<u64>,
    /// `usage.total_tokens`, or the sum of the two above.
    pub total_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Response {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}
#[derive(Deserialize)]
struct Choice {
    message: Message,
}
#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}
#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
}

/// Calls the chat-completions endpoint. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LlmClient {
    config: LlmConfig,
    http: HttpClient,
}

impl LlmClient {
    /// A client for `config`. Must be used inside a Tokio runtime.
    pub fn new(config: LlmConfig) -> Self {
        Self {
            config,
            http: HttpClient::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Sends the prompt once (one retry on a connect error only) and parses the answer.
    pub async fn complete(&self, prompt: &Prompt) -> Result<Completion, LlmError> {
        let c = &self.config;
        let body = json!({
            "model": c.model,
            "messages": [
                {"role": "system", "content": prompt.system},
                {"role": "user", "content": prompt.user},
            ],
            "temperature": c.temperature,
            "max_tokens": c.max_tokens,
        });
        let body = serde_json::to_vec(&body).map_err(|e| LlmError::Malformed(e.to_string()))?;
        let (status, bytes) = self
            .http
            .post_json(&c.endpoint(), c.api_key.as_deref(), body, c.timeout)
            .await?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&bytes);
            return Err(LlmError::Status {
                status,
                body: text.chars().take(300).collect(),
            });
        }
        let resp: Response =
            serde_json::from_slice(&bytes).map_err(|e| LlmError::Malformed(e.to_string()))?;
        let content = resp
            .choices
            .into_iter()
            .next()
            .and_then(|ch| ch.message.content)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
        let (p, comp, total) = match resp.usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            None => (None, None, None),
        };
        Ok(Completion {
            content,
            model: resp.model.unwrap_or_else(|| c.model.clone()),
            prompt_tokens: p,
            completion_tokens: comp,
            total_tokens: total.or(p.zip(comp).map(|(a, b)| a + b)),
        })
    }
}
