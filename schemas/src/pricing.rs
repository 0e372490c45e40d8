//! The price table behind `cost_usd`: model → USD per one million tokens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one million tokens of each kind cost for one model, in USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached input (prompt) tokens.
    pub input: f64,
    /// Output (completion) tokens.
    pub output: f64,
    /// Input tokens read from the provider's prompt cache; input price when absent.
    pub cache_read: Option<f64>,
    /// Input tokens written to the provider's prompt cache; input price when absent.
    pub cache_write: Option<f64>,
    /// Reasoning tokens (a part of output tokens); output price when absent.
    pub reasoning: Option<f64>,
}

/// Token counts of one call, as the span reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TokenUsage {
    /// All input tokens, cached ones included (as the GenAI conventions define it).
    pub input: i64,
    /// All output tokens, reasoning ones included.
    pub output: i64,
    /// Input tokens served from cache.
    pub cache_read: i64,
    /// Input tokens written to cache.
    pub cache_write: i64,
    /// Output tokens spent on reasoning.
    pub reasoning: i64,
}

/// A model → price table: the shipped defaults, overridden by the user's entries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceTable {
    /// Prices by model name.
    #[serde(default)]
    pub models: BTreeMap<String, ModelPrice>,
}

/// The prices that ship with vigil.
const DEFAULT_PRICES: &str = include_str!("prices.toml");

/// A price table that is not valid TOML or has a bad entry.
#[derive(Debug, thiserror::Error)]
#[error("price table is not valid: {0}")]
pub struct PriceTableError(#[from] toml::de::Error);

impl PriceTable {
    /// The default table shipped with vigil.
    pub fn defaults() -> PriceTable {
        // The embedded file is checked by a unit test, so this cannot fail at run time.
        toml::from_str(DEFAULT_PRICES).unwrap_or_default()
    }

    /// Parses a table in the shipped TOML format.
    pub fn from_toml(text: &str) -> Result<PriceTable, PriceTableError> {
        Ok(toml::from_str(text)?)
    }

    /// The defaults with `overrides` laid over them, entry by entry.
    pub fn with_overrides(mut self, overrides: &PriceTable) -> PriceTable {
        for (model, price) in &overrides.models {
            self.models.insert(model.clone(), *price);
        }
        self
    }

    /// The price of `model`: exact match, then the longest known name it starts with,
    /// after stripping routing prefixes such as `openai/` or Bedrock's `anthropic.`.
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        let mut candidates = vec![model];
        if let Some((_, tail)) = model.rsplit_once('/') {
            candidates.push(tail);
        }
        let last = *candidates.last().unwrap_or(&model);
        if let Some((vendor, tail)) = last.split_once('.')
            && !vendor.is_empty()
            && vendor.chars().all(|c| c.is_ascii_alphabetic() || c == '-')
        {
            candidates.push(tail);
        }
        for candidate in candidates {
            if let Some(price) = self.models.get(candidate) {
                return Some(price);
            }
            let best = self
                .models
                .iter()
                .filter(|(name, _)| candidate.starts_with(name.as_str()))
                .max_by_key(|(name, _)| name.len());
            if let Some((_, price)) = best {
                return Some(price);
            }
        }
        None
    }

    /// The cost of one call in USD, or `None` when the model is unknown.
    pub fn cost(&self, model: &str, usage: TokenUsage) -> Option<f64> {
        let p = self.lookup(model)?;
        let cache_read = usage.cache_read.max(0);
        let cache_write = usage.cache_write.max(0);
        let uncached_input = (usage.input - cache_read - cache_write).max(0);
        let reasoning = usage.reasoning.clamp(0, usage.output.max(0));
        let plain_output = (usage.output - reasoning).max(0);
        let usd = uncached_input as f64 * p.input
            + cache_read as f64 * p.cache_read.unwrap_or(p.input)
            + cache_write as f64 * p.cache_write.unwrap_or(p.input)
            + plain_output as f64 * p.output
            + reasoning as f64 * p.reasoning.unwrap_or(p.output);
        Some(usd / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_parses() {
        let table = PriceTable::from_toml(DEFAULT_PRICES).expect("prices.toml parses");
        assert!(table.models.len() > 20);
        assert_eq!(PriceTable::defaults(), table);
    }

    #[test]
    fn longest_prefix_wins() {
        let t = PriceTable::defaults();
        assert_eq!(t.lookup("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(t.lookup("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(t.lookup("openai/gpt-4o").unwrap().input, 2.50);
        assert_eq!(
            t.lookup("anthropic.claude-3-5-sonnet-20241022-v2:0")
                .unwrap()
                .input,
            3.0
        );
        assert!(t.lookup("my-finetune").is_none());
    }

    #[test]
    fn cost_splits_cached_and_reasoning_tokens() {
        let t = PriceTable::defaults();
        let usage = TokenUsage {
            input: 1_000_000,
            output: 1_000_000,
            cache_read: 500_000,
            ..Default::default()
        };
        // 0.5M uncached at 2.50 + 0.5M cached at 1.25 + 1M output at 10.
        let cost = t.cost("gpt-4o", usage).unwrap();
        assert!((cost - (1.25 + 0.625 + 10.0)).abs() < 1e-9, "{cost}");
        assert_eq!(t.cost("unknown-model", usage), None);
    }

    #[test]
    fn overrides_replace_and_add() {
        let user = PriceTable::from_toml("[models.\"gpt-4o\"]\ninput = 1.0\noutput = 2.0\n[models.\"mine\"]\ninput = 3.0\noutput = 4.0\n").unwrap();
        let t = PriceTable::defaults().with_overrides(&user);
        assert_eq!(t.lookup("gpt-4o").unwrap().input, 1.0);
        assert_eq!(t.lookup("mine-v2").unwrap().output, 4.0);
        assert!(PriceTable::from_toml("[models.x]\ninput = \"cheap\"").is_err());
    }
}
