//! What happens to prompt and completion text: kept, redacted or dropped.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The policy for message content (prompts, completions, tool arguments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentPolicy {
    /// Store the text as sent.
    #[default]
    Keep,
    /// Store the text with e-mail addresses, phone numbers, card numbers and API keys masked.
    Redact,
    /// Store no message text at all.
    Drop,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("email regex")
});
static API_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}",
        r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|hf_[A-Za-z0-9]{30,}",
        r"|glpat-[A-Za-z0-9_-]{20,})|(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,}=*"
    ))
    .expect("api key regex")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("card regex"));
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\b\d{2,4})[\s.-]?\d{3,4}[\s.-]?\d{3,4}\b")
        .expect("phone regex")
});

/// Masks e-mail addresses, API-key-like strings, card numbers (Luhn-checked) and phone numbers.
pub fn redact(text: &str) -> String {
    let text = API_KEY.replace_all(text, "[REDACTED_API_KEY]");
    let text = EMAIL.replace_all(&text, "[REDACTED_EMAIL]");
    let text = CARD.replace_all(&text, |caps: &regex::Captures<'_>| {
        let digits: Vec<u32> = caps[0].chars().filter_map(|c| c.to_digit(10)).collect();
        if luhn_valid(&digits) {
            "[REDACTED_CARD]".to_string()
        } else {
            caps[0].to_string()
        }
    });
    let text = PHONE.replace_all(&text, |caps: &regex::Captures<'_>| {
        let digits = caps[0].chars().filter(|c| c.is_ascii_digit()).count();
        if (7..=15).contains(&digits) {
            "[REDACTED_PHONE]".to_string()
        } else {
            caps[0].to_string()
        }
    });
    text.into_owned()
}

fn luhn_valid(digits: &[u32]) -> bool {
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

impl ContentPolicy {
    /// Applies the policy to one piece of content.
    pub fn apply(self, text: String) -> Option<String> {
        match self {
            ContentPolicy::Keep => Some(text),
            ContentPolicy::Redact => Some(redact(&text)),
            ContentPolicy::Drop => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_each_kind() {
        let out = redact(
            "mail jane.doe@example.co.uk, call +1 415-555-0132, card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnopqrstuvwx",
        );
        assert!(out.contains("[REDACTED_EMAIL]"), "{out}");
        assert!(out.contains("[REDACTED_PHONE]"), "{out}");
        assert!(out.contains("[REDACTED_CARD]"), "{out}");
        assert!(out.contains("[REDACTED_API_KEY]"), "{out}");
        assert!(
            !out.contains("jane.doe") && !out.contains("4111") && !out.contains("abcdefghijkl"),
            "{out}"
        );
    }

    #[test]
    fn leaves_ordinary_text_and_non_luhn_numbers() {
        assert_eq!(
            redact("The answer is 42, in 2024."),
            "The answer is 42, in 2024."
        );
        let order = "order 1234567890123 shipped";
        assert!(!redact(order).contains("CARD"));
    }

    #[test]
    fn policies() {
        assert_eq!(
            ContentPolicy::Keep.apply("a@b.io".into()).as_deref(),
            Some("a@b.io")
        );
        assert_eq!(
            ContentPolicy::Redact.apply("a@b.io".into()).as_deref(),
            Some("[REDACTED_EMAIL]")
        );
        assert_eq!(ContentPolicy::Drop.apply("x".into()), None);
    }
}
