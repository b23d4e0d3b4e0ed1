//! Model prices in integer micro-dollars per million tokens (never floats), and the
//! cost of a usage record. Unknown models cost what the dearest known one
//! of their family costs, so we never undercharge silently.

use crate::llm::Usage;

/// Cost in micro-USD; sub-micro prices are accumulated per million tokens.
pub fn cost_micros(model: &str, u: &Usage) -> i64 {
    // Prices per million tokens in micro-USD keep cheap models exact.
    let per_mtok: &[(&str, i64, i64, i64, i64)] = &[
        ("claude-opus", 15_000_000, 75_000_000, 1_500_000, 18_750_000),
        ("claude-sonnet", 3_000_000, 15_000_000, 300_000, 3_750_000),
        ("claude-haiku", 1_000_000, 5_000_000, 100_000, 1_250_000),
        ("gpt-4o-mini", 150_000, 600_000, 75_000, 0),
        ("gpt-4o", 2_500_000, 10_000_000, 1_250_000, 0),
        ("demo", 0, 0, 0, 0),
    ];
    let (_, i, o, r, w) = per_mtok
        .iter()
        .find(|(p, ..)| model.starts_with(p))
        .copied()
        .unwrap_or(("", 15_000_000, 75_000_000, 1_500_000, 18_750_000));
    (u.input_tokens * i + u.output_tokens * o + u.cache_read_tokens * r + u.cache_write_tokens * w)
        / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonnet_costs_three_and_fifteen_dollars_per_million() {
        let u = Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(cost_micros("claude-sonnet-4-5", &u), 18_000_000);
        assert_eq!(cost_micros("demo", &u), 0);
        assert_eq!(
            cost_micros(
                "mystery-model",
                &Usage {
                    input_tokens: 1,
                    ..Usage::default()
                }
            ),
            15
        );
    }
}
