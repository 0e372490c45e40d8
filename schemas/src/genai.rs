//! GenAI semantic-convention normalization: the attribute names of every generation of GenAI
//! instrumentation (current `gen_ai.*`, OpenLLMetry's `llm.*` and indexed prompts, OpenInference)
//! fill one set of columns.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::Event;
use serde::{Deserialize, Serialize};

use std::borrow::Cow;

use crate::attrs::{
    value_as_f64, value_as_i64, value_as_string_list, value_to_cow, value_to_json, value_to_string,
};
use crate::pricing::{PriceTable, TokenUsage};
use crate::redact::ContentPolicy;

/// How spans are normalized: what happens to message text, and how calls are priced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizeConfig {
    /// Prompt and completion text: `keep`, `redact` or `drop`.
    pub content: ContentPolicy,
    /// Price overrides laid over the shipped defaults (`[prices.models."name"]`).
    pub prices: PriceTable,
}

/// The compiled form of a [`NormalizeConfig`]: the policy and the merged price table.
#[derive(Debug, Clone)]
pub struct Normalizer {
    /// What happens to message text.
    pub content: ContentPolicy,
    /// Defaults with the user's overrides laid over them.
    pub prices: PriceTable,
}

impl Normalizer {
    /// Merges the user's price overrides into the shipped defaults.
    pub fn new(config: &NormalizeConfig) -> Normalizer {
        Normalizer {
            content: config.content,
            prices: PriceTable::defaults().with_overrides(&config.prices),
        }
    }
}

impl Default for Normalizer {
    fn default() -> Self {
        Normalizer::new(&NormalizeConfig::default())
    }
}

/// The GenAI columns of one span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenAiFields {
    pub system: Option<String>,
    pub operation: Option<String>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub total_tokens: Option<i64>,
    pub cache_read_tokens: Option<i64>,
    pub cache_creation_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub ttft_ns: Option<i64>,
    pub finish_reasons: Option<Vec<String>>,
    pub request_temperature: Option<f64>,
    pub request_max_tokens: Option<i64>,
    pub error_type: Option<String>,
    pub cost_usd: Option<f64>,
    pub input_messages: Option<String>,
    pub output_messages: Option<String>,
    /// Tokens and a model were reported but the model is not in the price table.
    pub unpriced_model: bool,
}

/// Provider names old and new, mapped to the current `gen_ai.provider.name` value.
pub fn normalize_provider(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    let canonical = match lower.as_str() {
        "az.ai.openai" | "azure.ai.openai" | "azure_openai" | "azure-openai" | "azure openai"
        | "azure" => "azure.ai.openai",
        "az.ai.inference" | "azure.ai.inference" => "azure.ai.inference",
        "openai" => "openai",
        "anthropic" => "anthropic",
        "aws.bedrock" | "aws_bedrock" | "bedrock" | "aws bedrock" | "amazon bedrock" => {
            "aws.bedrock"
        }
        "gcp.vertex_ai" | "vertex_ai" | "vertexai" | "vertex ai" | "google vertex ai" => {
            "gcp.vertex_ai"
        }
        "gcp.gemini" | "gemini" | "google_genai" | "google" | "googlegenai" => "gcp.gemini",
        "gcp.gen_ai" => "gcp.gen_ai",
        "cohere" => "cohere",
        "mistral_ai" | "mistralai" | "mistral" => "mistral_ai",
        "groq" => "groq",
        "deepseek" => "deepseek",
        "perplexity" => "perplexity",
        "x_ai" | "xai" => "x_ai",
        "ibm.watsonx.ai" | "watsonx" | "ibm watsonx" => "ibm.watsonx.ai",
        "ollama" => "ollama",
        "together" | "togetherai" | "together_ai" => "together_ai",
        "huggingface" | "hugging_face" => "huggingface",
        _ => return lower,
    };
    canonical.to_string()
}

/// OpenLLMetry's `llm.request.type` and OpenInference's span kind, as `gen_ai.operation.name`.
fn normalize_operation(raw: &str) -> String {
    match raw.trim().to_ascii_lowercase().as_str() {
        "completion" | "text_completion" => "text_completion".into(),
        "embedding" | "embeddings" => "embeddings".into(),
        "llm" | "chat" => "chat".into(),
        "rerank" | "reranker" => "rerank".into(),
        other => other.to_string(),
    }
}

/// Which message list an indexed attribute belongs to.
#[derive(Clone, Copy)]
enum Side {
    Input,
    Output,
}

/// `gen_ai.prompt.3.content` → (Input, 3, "content"); OpenInference's
/// `llm.input_messages.0.message.role` → (Input, 0, "role").
fn indexed_message_key(key: &str) -> Option<(Side, u32, &str)> {
    let prefixes: [(&str, Side); 4] = [
        ("gen_ai.prompt.", Side::Input),
        ("gen_ai.completion.", Side::Output),
        ("llm.input_messages.", Side::Input),
        ("llm.output_messages.", Side::Output),
    ];
    for (prefix, side) in prefixes {
        if let Some(rest) = key.strip_prefix(prefix) {
            let (index, field) = rest.split_once('.')?;
            let index: u32 = index.parse().ok()?;
            let field = field.strip_prefix("message.").unwrap_or(field);
            return Some((side, index, field));
        }
    }
    None
}

/// Attributes that hold message text and so fall under the content policy.
fn is_content_key(key: &str) -> bool {
    matches!(
        key,
        "gen_ai.system_instructions"
            | "gen_ai.prompt"
            | "gen_ai.completion"
            | "gen_ai.tool.call.arguments"
            | "gen_ai.tool.call.result"
            | "traceloop.entity.input"
            | "traceloop.entity.output"
            | "llm.prompts"
            | "llm.prompt_template.variables"
            | "retrieval.documents"
            | "gen_ai.input.messages"
            | "gen_ai.output.messages"
    ) || key.ends_with(".content")
}

/// Span events and log records of the GenAI conventions whose attributes and body are message
/// text: OpenLLMetry's `gen_ai.content.*` events and the event-based conventions.
pub fn is_message_event(name: &str) -> bool {
    matches!(
        name,
        "gen_ai.content.prompt"
            | "gen_ai.content.completion"
            | "gen_ai.system.message"
            | "gen_ai.user.message"
            | "gen_ai.assistant.message"
            | "gen_ai.tool.message"
            | "gen_ai.choice"
            | "gen_ai.client.inference.operation.details"
    )
}

/// Whether an attribute of an event (or log record) named `event` holds message text.
pub fn is_content_attribute(event: &str, key: &str) -> bool {
    is_content_key(key)
        || (is_message_event(event)
            && !matches!(
                key,
                "gen_ai.system"
                    | "gen_ai.provider.name"
                    | "gen_ai.response.id"
                    | "role"
                    | "index"
                    | "finish_reason"
                    | "id"
                    | "event.name"
            ))
}

impl Normalizer {
    /// Attributes as a JSON object with the content policy applied to those that hold message
    /// text (`event` names the event or log record they belong to; empty for links).
    pub fn attributes_json(
        &self,
        event: &str,
        attributes: &[KeyValue],
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut object = crate::attrs::attributes_to_json(attributes);
        if self.content != ContentPolicy::Keep {
            let keys: Vec<String> = object
                .keys()
                .filter(|k| is_content_attribute(event, k))
                .cloned()
                .collect();
            for key in keys {
                let Some(value) = object.remove(&key) else {
                    continue;
                };
                let text = match value {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                if let Some(kept) = self.content.apply(text) {
                    object.insert(key, serde_json::Value::String(kept));
                }
            }
        }
        object
    }
}

/// Message text carried by span events, for spans whose attributes have none: OpenLLMetry's
/// `gen_ai.content.prompt`/`completion` events and the event-based GenAI conventions, as the
/// same JSON array of messages the attributes give.
fn messages_from_events(events: &[Event], side: Side) -> Option<String> {
    let mut messages = Vec::new();
    for event in events {
        let get = |key: &str| {
            event
                .attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(value_to_string)
        };
        let (role, content) = match (side, event.name.as_str()) {
            (Side::Input, "gen_ai.content.prompt") => {
                (None, get("gen_ai.prompt").or_else(|| get("content")))
            }
            (Side::Output, "gen_ai.content.completion") => (
                Some("assistant".to_string()),
                get("gen_ai.completion").or_else(|| get("content")),
            ),
            (
                Side::Input,
                name @ ("gen_ai.system.message" | "gen_ai.user.message" | "gen_ai.tool.message"),
            ) => (
                Some(
                    name.trim_start_matches("gen_ai.")
                        .trim_end_matches(".message")
                        .to_string(),
                ),
                get("content").or_else(|| get("message")),
            ),
            (Side::Input, "gen_ai.assistant.message") => {
                (Some("assistant".to_string()), get("content"))
            }
            (Side::Output, "gen_ai.choice") => (
                Some("assistant".to_string()),
                get("message").or_else(|| get("content")),
            ),
            _ => continue,
        };
        let Some(content) = content else { continue };
        // A whole conversation given as one JSON array is kept as that array.
        if role.is_none()
            && let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&content)
        {
            messages.extend(list);
            continue;
        }
        let mut message = serde_json::Map::new();
        if let Some(role) = role {
            message.insert("role".into(), role.into());
        }
        message.insert("content".into(), content.into());
        messages.push(serde_json::Value::Object(message));
    }
    (!messages.is_empty()).then(|| serde_json::Value::Array(messages).to_string())
}

/// A TTFT value in nanoseconds; the attribute name's unit suffix decides the scale, seconds otherwise.
fn ttft_from_attribute(key: &str, value: &AnyValue) -> Option<i64> {
    let v = value_as_f64(value)?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let ns = if key.ends_with("_ns") {
        v
    } else if key.ends_with("_us") {
        v * 1e3
    } else if key.ends_with("_ms") {
        v * 1e6
    } else {
        v * 1e9
    };
    Some(ns.round() as i64)
}

/// Splits a span's attributes into the GenAI columns and the attributes left to store as a map.
pub fn extract<'a>(
    attributes: &'a [KeyValue],
    events: &[Event],
    start_time_unix_nano: u64,
    normalizer: &Normalizer,
) -> (GenAiFields, Vec<(&'a str, Cow<'a, str>)>) {
    let mut g = GenAiFields::default();
    let mut rest = Vec::with_capacity(attributes.len());
    let mut messages: [BTreeMap<u32, serde_json::Map<String, serde_json::Value>>; 2] =
        Default::default();
    let mut indexed_finish_reasons: BTreeMap<u32, String> = BTreeMap::new();
    let mut reported_cost = None;
    let mut input_value = None;
    let mut output_value = None;

    for kv in attributes {
        let Some(value) = kv.value.as_ref() else {
            continue;
        };
        let key = kv.key.as_str();
        let as_string = || value_to_string(value);
        let claimed = match key {
            "gen_ai.provider.name" => set_str(
                &mut g.system,
                as_string().map(|s| normalize_provider(&s)),
                true,
            ),
            "gen_ai.system" | "llm.provider" | "llm.system" | "llm.vendor" => set_str(
                &mut g.system,
                as_string().map(|s| normalize_provider(&s)),
                false,
            ),
            "gen_ai.operation.name" => set_str(
                &mut g.operation,
                as_string().map(|s| normalize_operation(&s)),
                true,
            ),
            "llm.request.type" => set_str(
                &mut g.operation,
                as_string().map(|s| normalize_operation(&s)),
                false,
            ),
            "gen_ai.request.model" | "llm.request.model" => {
                set_str(&mut g.request_model, as_string(), true)
            }
            "llm.model_name" => set_str(&mut g.request_model, as_string(), false),
            "gen_ai.response.model" | "llm.response.model" => {
                set_str(&mut g.response_model, as_string(), true)
            }
            "gen_ai.usage.input_tokens" => set_int(&mut g.input_tokens, value, true),
            "gen_ai.usage.prompt_tokens" | "llm.usage.prompt_tokens" | "llm.token_count.prompt" => {
                set_int(&mut g.input_tokens, value, false)
            }
            "gen_ai.usage.output_tokens" => set_int(&mut g.output_tokens, value, true),
            "gen_ai.usage.completion_tokens"
            | "llm.usage.completion_tokens"
            | "llm.token_count.completion" => set_int(&mut g.output_tokens, value, false),
            "gen_ai.usage.total_tokens" | "llm.usage.total_tokens" | "llm.token_count.total" => {
                set_int(&mut g.total_tokens, value, false)
            }
            "gen_ai.usage.cache_read.input_tokens"
            | "gen_ai.usage.cache_read_input_tokens"
            | "llm.usage.cache_read_input_tokens"
            | "llm.token_count.prompt_details.cache_read" => {
                set_int(&mut g.cache_read_tokens, value, false)
            }
            "gen_ai.usage.cache_creation.input_tokens"
            | "gen_ai.usage.cache_creation_input_tokens"
            | "llm.usage.cache_creation_input_tokens"
            | "llm.token_count.prompt_details.cache_write" => {
                set_int(&mut g.cache_creation_tokens, value, false)
            }
            "gen_ai.usage.reasoning_tokens"
            | "gen_ai.usage.reasoning.output_tokens"
            | "gen_ai.usage.output_tokens_details.reasoning_tokens"
            | "llm.usage.reasoning_tokens"
            | "llm.token_count.completion_details.reasoning" => {
                set_int(&mut g.reasoning_tokens, value, false)
            }
            "gen_ai.response.finish_reasons"
            | "llm.response.finish_reasons"
            | "llm.response.finish_reason" => match value_as_string_list(value) {
                Some(list) if g.finish_reasons.is_none() => {
                    g.finish_reasons = Some(list);
                    true
                }
                Some(_) => true,
                None => false,
            },
            "gen_ai.request.temperature" | "llm.request.temperature" | "llm.temperature" => {
                set_float(&mut g.request_temperature, value)
            }
            "gen_ai.request.max_tokens" | "llm.request.max_tokens" => {
                set_int(&mut g.request_max_tokens, value, true)
            }
            "llm.invocation_parameters" => {
                // OpenInference packs the request parameters into one JSON string; keep it whole too.
                if let Some(params) =
                    as_string().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                {
                    if g.request_temperature.is_none() {
                        g.request_temperature = params.get("temperature").and_then(|v| v.as_f64());
                    }
                    if g.request_max_tokens.is_none() {
                        g.request_max_tokens = params
                            .get("max_tokens")
                            .or_else(|| params.get("max_completion_tokens"))
                            .and_then(|v| v.as_i64());
                    }
                }
                false
            }
            "error.type" => set_str(&mut g.error_type, as_string(), true),
            "gen_ai.usage.cost" | "llm.cost.total" | "gen_ai.usage.cost_usd" => {
                reported_cost = value_as_f64(value).filter(|c| c.is_finite() && *c >= 0.0);
                reported_cost.is_some()
            }
            "gen_ai.input.messages" => {
                set_content(&mut g.input_messages, value, normalizer.content)
            }
            "gen_ai.output.messages" => {
                set_content(&mut g.output_messages, value, normalizer.content)
            }
            "input.value" => {
                input_value = Some(value);
                true
            }
            "output.value" => {
                output_value = Some(value);
                true
            }
            _ => {
                if let Some((side, index, field)) = indexed_message_key(key) {
                    if field == "finish_reason"
                        && let Some(reason) = as_string()
                    {
                        indexed_finish_reasons.insert(index, reason);
                    }
                    let entry = messages[side as usize].entry(index).or_default();
                    entry.insert(field.to_string(), value_to_json(value));
                    true
                } else if key.contains("time_to_first_token") || key.contains("time_to_first_chunk")
                {
                    match ttft_from_attribute(key, value) {
                        Some(ns) => {
                            g.ttft_ns.get_or_insert(ns);
                            true
                        }
                        None => false,
                    }
                } else {
                    false
                }
            }
        };
        if claimed {
            continue;
        }
        let Some(text) = value_to_cow(value) else {
            continue;
        };
        if is_content_key(key) {
            if let Some(text) = normalizer.content.apply(text.into_owned()) {
                rest.push((key, Cow::Owned(text)));
            }
        } else {
            rest.push((key, text));
        }
    }

    for (side, slot, fallback) in [
        (Side::Input, &mut g.input_messages, input_value),
        (Side::Output, &mut g.output_messages, output_value),
    ] {
        if slot.is_some() {
            continue;
        }
        let list = std::mem::take(&mut messages[side as usize]);
        if !list.is_empty() {
            let array: Vec<serde_json::Value> =
                list.into_values().map(serde_json::Value::Object).collect();
            *slot = normalizer
                .content
                .apply(serde_json::Value::Array(array).to_string());
        } else if let Some(value) = fallback {
            *slot = value_to_string(value).and_then(|s| normalizer.content.apply(s));
        } else if let Some(text) = messages_from_events(events, side) {
            *slot = normalizer.content.apply(text);
        }
    }

    if g.finish_reasons.is_none() && !indexed_finish_reasons.is_empty() {
        g.finish_reasons = Some(indexed_finish_reasons.into_values().collect());
    }
    if g.response_model.is_none() && g.request_model.is_some() && g.system.is_some() {
        // OpenInference reports one model name, the one that served the call.
        if attributes.iter().any(|kv| kv.key == "llm.model_name") {
            g.response_model = g.request_model.clone();
        }
    }
    if g.operation.is_none()
        && let Some(kind) = attributes
            .iter()
            .find(|kv| kv.key == "openinference.span.kind")
    {
        match kind.value.as_ref().and_then(value_to_string).as_deref() {
            Some("LLM") => g.operation = Some("chat".into()),
            Some("EMBEDDING") => g.operation = Some("embeddings".into()),
            Some("RERANKER") => g.operation = Some("rerank".into()),
            _ => {}
        }
    }
    if g.total_tokens.is_none()
        && let (Some(i), Some(o)) = (g.input_tokens, g.output_tokens)
    {
        g.total_tokens = Some(i.saturating_add(o));
    }
    if g.ttft_ns.is_none() {
        g.ttft_ns = events
            .iter()
            .find(|e| {
                let name = e.name.as_str();
                name.contains("first_token")
                    || name.contains("first_chunk")
                    || name == "gen_ai.content.completion.chunk"
            })
            .and_then(|e| e.time_unix_nano.checked_sub(start_time_unix_nano))
            .and_then(|ns| i64::try_from(ns).ok());
    }

    g.cost_usd = reported_cost;
    if g.cost_usd.is_none()
        && (g.input_tokens.is_some() || g.output_tokens.is_some())
        && let Some(model) = g.response_model.as_ref().or(g.request_model.as_ref())
    {
        let usage = TokenUsage {
            input: g.input_tokens.unwrap_or(0),
            output: g.output_tokens.unwrap_or(0),
            cache_read: g.cache_read_tokens.unwrap_or(0),
            cache_write: g.cache_creation_tokens.unwrap_or(0),
            reasoning: g.reasoning_tokens.unwrap_or(0),
        };
        g.cost_usd = normalizer.prices.cost(model, usage);
        g.unpriced_model = g.cost_usd.is_none();
    }
    (g, rest)
}

/// Sets `slot` from a string; `overwrite` lets a current-convention name win over an older one.
fn set_str(slot: &mut Option<String>, value: Option<String>, overwrite: bool) -> bool {
    match value {
        Some(v) => {
            if overwrite || slot.is_none() {
                *slot = Some(v);
            }
            true
        }
        None => false,
    }
}

fn set_int(slot: &mut Option<i64>, value: &AnyValue, overwrite: bool) -> bool {
    match value_as_i64(value) {
        Some(v) => {
            if overwrite || slot.is_none() {
                *slot = Some(v);
            }
            true
        }
        None => false,
    }
}

fn set_float(slot: &mut Option<f64>, value: &AnyValue) -> bool {
    match value_as_f64(value) {
        Some(v) => {
            slot.get_or_insert(v);
            true
        }
        None => false,
    }
}

fn set_content(slot: &mut Option<String>, value: &AnyValue, policy: ContentPolicy) -> bool {
    *slot = value_to_string(value).and_then(|s| policy.apply(s));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }
    fn s(key: &str, v: &str) -> KeyValue {
        kv(key, Value::StringValue(v.into()))
    }
    fn i(key: &str, v: i64) -> KeyValue {
        kv(key, Value::IntValue(v))
    }

    fn run(attrs: &[KeyValue], content: ContentPolicy) -> (GenAiFields, Vec<(String, String)>) {
        let normalizer = Normalizer::new(&NormalizeConfig {
            content,
            ..Default::default()
        });
        let (g, rest) = extract(attrs, &[], 0, &normalizer);
        (
            g,
            rest.into_iter()
                .map(|(k, v)| (k.to_string(), v.into_owned()))
                .collect(),
        )
    }

    #[test]
    fn current_conventions() {
        let (g, rest) = run(
            &[
                s("gen_ai.provider.name", "az.ai.openai"),
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.request.model", "gpt-4o"),
                s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                i("gen_ai.usage.input_tokens", 1000),
                i("gen_ai.usage.output_tokens", 200),
                kv("gen_ai.request.temperature", Value::DoubleValue(0.2)),
                i("gen_ai.request.max_tokens", 512),
                s("gen_ai.response.finish_reasons", "[\"stop\"]"),
                kv(
                    "gen_ai.response.time_to_first_chunk",
                    Value::DoubleValue(0.25),
                ),
                s("http.method", "POST"),
            ],
            ContentPolicy::Keep,
        );
        assert_eq!(g.system.as_deref(), Some("azure.ai.openai"));
        assert_eq!(g.operation.as_deref(), Some("chat"));
        assert_eq!(g.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(
            (g.input_tokens, g.output_tokens, g.total_tokens),
            (Some(1000), Some(200), Some(1200))
        );
        assert_eq!(g.finish_reasons, Some(vec!["stop".to_string()]));
        assert_eq!(g.ttft_ns, Some(250_000_000));
        assert_eq!(g.request_max_tokens, Some(512));
        let cost = g.cost_usd.unwrap();
        assert!((cost - (1000.0 * 2.5 + 200.0 * 10.0) / 1e6).abs() < 1e-12);
        assert_eq!(rest, vec![("http.method".to_string(), "POST".to_string())]);
    }

    #[test]
    fn openllmetry_legacy_names() {
        let (g, rest) = run(
            &[
                s("gen_ai.system", "Anthropic"),
                s("llm.request.type", "completion"),
                s("gen_ai.request.model", "claude-3-5-sonnet-20241022"),
                i("gen_ai.usage.prompt_tokens", 30),
                i("gen_ai.usage.completion_tokens", 12),
                i("llm.usage.total_tokens", 42),
                s("gen_ai.prompt.0.role", "user"),
                s("gen_ai.prompt.0.content", "mail me at bob@example.com"),
                s("gen_ai.completion.0.role", "assistant"),
                s("gen_ai.completion.0.content", "ok"),
                s("gen_ai.completion.0.finish_reason", "end_turn"),
                s("traceloop.workflow.name", "support"),
            ],
            ContentPolicy::Redact,
        );
        assert_eq!(g.system.as_deref(), Some("anthropic"));
        assert_eq!(g.operation.as_deref(), Some("text_completion"));
        assert_eq!(
            (g.input_tokens, g.output_tokens, g.total_tokens),
            (Some(30), Some(12), Some(42))
        );
        assert_eq!(g.finish_reasons, Some(vec!["end_turn".to_string()]));
        let input = g.input_messages.unwrap();
        assert!(
            input.contains("[REDACTED_EMAIL]") && input.contains("\"role\":\"user\""),
            "{input}"
        );
        assert!(
            g.output_messages
                .unwrap()
                .contains("\"finish_reason\":\"end_turn\"")
        );
        assert_eq!(
            rest,
            vec![("traceloop.workflow.name".to_string(), "support".to_string())]
        );
        assert!(g.cost_usd.is_some());
    }

    #[test]
    fn openinference_names() {
        let (g, _) = run(
            &[
                s("openinference.span.kind", "LLM"),
                s("llm.provider", "openai"),
                s("llm.model_name", "gpt-4o-mini"),
                i("llm.token_count.prompt", 10),
                i("llm.token_count.completion", 5),
                i("llm.token_count.total", 15),
                s(
                    "llm.invocation_parameters",
                    "{\"temperature\":0.7,\"max_tokens\":64}",
                ),
                s("input.value", "hello"),
                s("output.value", "hi"),
            ],
            ContentPolicy::Keep,
        );
        assert_eq!(g.system.as_deref(), Some("openai"));
        assert_eq!(g.operation.as_deref(), Some("chat"));
        assert_eq!(g.request_model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(g.response_model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(g.total_tokens, Some(15));
        assert_eq!(g.request_temperature, Some(0.7));
        assert_eq!(g.request_max_tokens, Some(64));
        assert_eq!(g.input_messages.as_deref(), Some("hello"));
        assert_eq!(g.output_messages.as_deref(), Some("hi"));
    }

    #[test]
    fn drop_policy_removes_all_text() {
        let (g, rest) = run(
            &[
                s("gen_ai.input.messages", "[{\"role\":\"user\"}]"),
                s("gen_ai.prompt.0.content", "secret"),
                s("gen_ai.system_instructions", "be nice"),
            ],
            ContentPolicy::Drop,
        );
        assert_eq!(g.input_messages, None);
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[test]
    fn reported_cost_wins_and_unknown_model_is_flagged_not_zeroed() {
        let (g, _) = run(
            &[
                s("gen_ai.request.model", "gpt-4o"),
                i("gen_ai.usage.input_tokens", 10),
                kv("gen_ai.usage.cost", Value::DoubleValue(0.5)),
            ],
            ContentPolicy::Keep,
        );
        assert_eq!(g.cost_usd, Some(0.5));
        let (g, _) = run(
            &[
                s("gen_ai.request.model", "my-finetune"),
                i("gen_ai.usage.input_tokens", 10),
            ],
            ContentPolicy::Keep,
        );
        assert_eq!(g.cost_usd, None);
        assert!(g.unpriced_model);
    }

    #[test]
    fn ttft_from_first_chunk_event_and_unit_suffixes() {
        let events = vec![Event {
            time_unix_nano: 1_300,
            name: "llm.first_token".into(),
            ..Default::default()
        }];
        let (g, _) = extract(&[], &events, 1_000, &Normalizer::default());
        assert_eq!(g.ttft_ns, Some(300));
        let (g, _) = run(&[i("llm.time_to_first_token_ms", 120)], ContentPolicy::Keep);
        assert_eq!(g.ttft_ns, Some(120_000_000));
    }

    #[test]
    fn provider_aliases() {
        assert_eq!(
            normalize_provider("az.ai.openai"),
            normalize_provider("azure.ai.openai")
        );
        assert_eq!(normalize_provider("AWS Bedrock"), "aws.bedrock");
        assert_eq!(normalize_provider("MyCorp"), "mycorp");
    }
}
