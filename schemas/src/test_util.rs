//! Helpers shared by the crate's tests.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// A string attribute.
pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}
