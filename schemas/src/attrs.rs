//! OTLP attribute values as the strings and numbers vigil stores.

use std::borrow::Cow;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// The resource attribute that says who sent a metric; the collector sets it (from the token the
/// request carried) and removes any value a sender wrote itself.
pub const SENDER_ATTRIBUTE: &str = "vigil.sender";
/// Its value for metrics sent with a GPU-exporter token.
pub const GPU_EXPORTER_SENDER: &str = "gpu-exporter";

/// The value as it is stored in a `Map<Utf8, Utf8>` column: strings as they are, numbers and
/// booleans in their usual text form, bytes as hex, arrays and maps as JSON.
pub fn value_to_string(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::DoubleValue(d) => Some(d.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        Value::BytesValue(b) => Some(hex::encode(b)),
        Value::ArrayValue(_) | Value::KvlistValue(_) => Some(value_to_json(value).to_string()),
        // A reference into a profile's string table: meaningless outside profiles, kept as the index.
        Value::StringValueStrindex(i) => Some(format!("strindex:{i}")),
    }
}

/// Like [`value_to_string`], but borrows string values instead of copying them.
pub fn value_to_cow(value: &AnyValue) -> Option<Cow<'_, str>> {
    match value.value.as_ref()? {
        Value::StringValue(s) => Some(Cow::Borrowed(s)),
        _ => value_to_string(value).map(Cow::Owned),
    }
}

/// Attributes as (key, value) pairs ready for a map column; unset values are skipped.
pub fn attribute_pairs(attributes: &[KeyValue]) -> Vec<(&str, Cow<'_, str>)> {
    attributes
        .iter()
        .filter_map(|kv| Some((kv.key.as_str(), value_to_cow(kv.value.as_ref()?)?)))
        .collect()
}

/// The value as JSON, keeping its type.
pub fn value_to_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value.value.as_ref() {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or_else(|| J::String(d.to_string())),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::BytesValue(b)) => J::String(hex::encode(b)),
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(value_to_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(value_to_json).unwrap_or(J::Null);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        Some(Value::StringValueStrindex(i)) => J::String(format!("strindex:{i}")),
    }
}

/// Attributes as a JSON object (for events, links and exemplars).
pub fn attributes_to_json(attributes: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    attributes
        .iter()
        .map(|kv| {
            let v = kv
                .value
                .as_ref()
                .map(value_to_json)
                .unwrap_or(serde_json::Value::Null);
            (kv.key.clone(), v)
        })
        .collect()
}

/// An integer, from an int, a whole double or a numeric string.
pub fn value_as_i64(value: &AnyValue) -> Option<i64> {
    match value.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        Value::DoubleValue(d) if d.is_finite() && d.fract() == 0.0 => Some(*d as i64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A float, from a double, an int or a numeric string.
pub fn value_as_f64(value: &AnyValue) -> Option<f64> {
    match value.value.as_ref()? {
        Value::DoubleValue(d) => Some(*d),
        Value::IntValue(i) => Some(*i as f64),
        Value::StringValue(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A list of strings, from an array value, a JSON array in a string, or a single string.
pub fn value_as_string_list(value: &AnyValue) -> Option<Vec<String>> {
    match value.value.as_ref()? {
        Value::ArrayValue(a) => Some(a.values.iter().filter_map(value_to_string).collect()),
        Value::StringValue(s) => {
            let trimmed = s.trim();
            if trimmed.starts_with('[')
                && let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(trimmed)
            {
                return Some(
                    list.into_iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        })
                        .collect(),
                );
            }
            Some(vec![s.clone()])
        }
        _ => value_to_string(value).map(|s| vec![s]),
    }
}

/// `service.name` from resource attributes, or OTel's documented fallback.
pub fn service_name(resource_attributes: &[KeyValue]) -> String {
    resource_attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(value_to_string)
        .unwrap_or_else(|| "unknown_service".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(v.into())),
        }
    }

    #[test]
    fn numbers_parse_from_every_shape() {
        assert_eq!(
            value_as_i64(&AnyValue {
                value: Some(Value::IntValue(7))
            }),
            Some(7)
        );
        assert_eq!(
            value_as_i64(&AnyValue {
                value: Some(Value::DoubleValue(7.0))
            }),
            Some(7)
        );
        assert_eq!(
            value_as_i64(&AnyValue {
                value: Some(Value::DoubleValue(7.5))
            }),
            None
        );
        assert_eq!(value_as_i64(&s(" 42 ")), Some(42));
        assert_eq!(value_as_i64(&s("many")), None);
        assert_eq!(value_as_f64(&s("0.7")), Some(0.7));
    }

    #[test]
    fn string_lists_come_from_arrays_json_and_scalars() {
        let arr = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![s("stop"), s("length")],
            })),
        };
        assert_eq!(value_as_string_list(&arr).unwrap(), vec!["stop", "length"]);
        assert_eq!(
            value_as_string_list(&s(r#"["stop"]"#)).unwrap(),
            vec!["stop"]
        );
        assert_eq!(value_as_string_list(&s("stop")).unwrap(), vec!["stop"]);
    }
}
