//! Tiers and their limits, in one table. An admin may override any limit
//! per user (`users.limits_override`); the effective limits are the tier's
//! with the overrides on top.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub projects: i64,
    pub concurrent_runs: i64,
    /// Model tokens (input + output, our keys only) per calendar month.
    pub model_tokens_month: i64,
    /// Model calls (our keys only) per UTC day.
    pub model_calls_day: i64,
    pub compute_minutes_month: i64,
    pub sandbox_idle_minutes: i64,
    /// Sandboxes of one user running (or on their way up) at once.
    pub sandboxes_running: i64,
    /// CPU cores of a new sandbox (made from an image; a snapshot brings its own).
    pub sandbox_cpu: i64,
    /// Memory of a new sandbox, GiB.
    pub sandbox_memory_gib: i64,
    /// Disk of a new sandbox, GiB.
    pub sandbox_disk_gib: i64,
    /// Longest run of one sandbox command, in seconds (then it is killed).
    pub command_timeout_secs: i64,
    /// Authenticated API requests per minute (sliding window); negative: no
    /// limit and no check (an admin override, e.g. for a service account).
    pub api_requests_minute: i64,
    pub max_file_bytes: i64,
    pub max_project_bytes: i64,
    /// Model name prefixes this tier may use; empty means any.
    pub allowed_models: Vec<String>,
}

pub const TIERS: &[&str] = &["free", "starter", "pro", "enterprise"];

pub fn defaults(tier: &str) -> Limits {
    let mib = 1024 * 1024;
    match tier {
        "starter" => Limits {
            projects: 20,
            concurrent_runs: 2,
            model_tokens_month: 20_000_000,
            model_calls_day: 5_000,
            compute_minutes_month: 50 * 60,
            sandbox_idle_minutes: 30,
            sandboxes_running: 2,
            sandbox_cpu: 1,
            sandbox_memory_gib: 2,
            sandbox_disk_gib: 5,
            command_timeout_secs: 120,
            api_requests_minute: 300,
            max_file_bytes: 5 * mib,
            max_project_bytes: 200 * mib,
            allowed_models: vec![],
        },
        "pro" => Limits {
            projects: 100,
            concurrent_runs: 5,
            model_tokens_month: 100_000_000,
            model_calls_day: 20_000,
            compute_minutes_month: 200 * 60,
            sandbox_idle_minutes: 60,
            sandboxes_running: 3,
            sandbox_cpu: 2,
            sandbox_memory_gib: 4,
            sandbox_disk_gib: 10,
            command_timeout_secs: 300,
            api_requests_minute: 600,
            max_file_bytes: 10 * mib,
            max_project_bytes: 500 * mib,
            allowed_models: vec![],
        },
        "enterprise" => Limits {
            projects: 10_000,
            concurrent_runs: 20,
            model_tokens_month: 1_000_000_000,
            model_calls_day: 200_000,
            compute_minutes_month: 2_000 * 60,
            sandbox_idle_minutes: 240,
            sandboxes_running: 10,
            sandbox_cpu: 4,
            sandbox_memory_gib: 8,
            sandbox_disk_gib: 10,
            command_timeout_secs: 600,
            api_requests_minute: 3_000,
            max_file_bytes: 25 * mib,
            max_project_bytes: 2_000 * mib,
            allowed_models: vec![],
        },
        // free, and anything unknown
        _ => Limits {
            projects: 3,
            concurrent_runs: 1,
            model_tokens_month: 2_000_000,
            model_calls_day: 1_000,
            compute_minutes_month: 10 * 60,
            sandbox_idle_minutes: 10,
            sandboxes_running: 1,
            sandbox_cpu: 1,
            sandbox_memory_gib: 1,
            sandbox_disk_gib: 3,
            command_timeout_secs: 60,
            api_requests_minute: 120,
            max_file_bytes: 5 * mib,
            max_project_bytes: 100 * mib,
            allowed_models: vec![
                "claude-haiku".into(),
                "claude-sonnet".into(),
                "gpt-4o".into(),
                "demo".into(),
            ],
        },
    }
}

/// Why `overrides` cannot be stored as a user's limit overrides, if it
/// cannot: it must be an object of known limits, each of the limit's type:
/// whole numbers from 0 (`api_requests_minute` may be negative: no limit;
/// `sandbox_idle_minutes` is at most 2^31 - 1, a sandbox stores it in 4
/// bytes), or for `allowed_models` model name prefixes. What [`effective`]
/// would drop, or a later write refuse, is refused instead.
pub fn check_overrides(overrides: &serde_json::Value) -> Result<(), String> {
    let Some(over) = overrides.as_object() else {
        return Err("limits must be an object of limit overrides.".into());
    };
    let known = serde_json::to_value(defaults("free")).unwrap_or_default();
    let known = known.as_object().cloned().unwrap_or_default();
    for (k, v) in over {
        let Some(slot) = known.get(k) else {
            let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(format!(
                "{k} is not a limit; limits are {}.",
                names.join(", ")
            ));
        };
        // Each limit's rule, and what it says when a value breaks it.
        let (fits, rule) = match (slot, k.as_str()) {
            (serde_json::Value::Array(_), _) => (
                v.as_array()
                    .is_some_and(|a| a.iter().all(|m| m.as_str().is_some_and(|m| !m.is_empty()))),
                "must be an array of model name prefixes.".to_owned(),
            ),
            (_, "api_requests_minute") => (
                v.as_i64().is_some(),
                "must be a whole number (negative: no limit).".to_owned(),
            ),
            (_, "sandbox_idle_minutes") => (
                v.as_i64()
                    .is_some_and(|n| (0..=i64::from(i32::MAX)).contains(&n)),
                format!("must be a whole number from 0 to {}.", i32::MAX),
            ),
            _ => (
                v.as_i64().is_some_and(|n| n >= 0),
                "must be a whole number from 0.".to_owned(),
            ),
        };
        if !fits {
            return Err(format!("{k} {rule}"));
        }
    }
    Ok(())
}

/// The tier's limits with the user's overrides applied; unknown keys in the
/// override are ignored (overrides are checked when stored,
/// [`check_overrides`]).
pub fn effective(tier: &str, overrides: &serde_json::Value) -> Limits {
    let mut doc = serde_json::to_value(defaults(tier)).unwrap_or_default();
    if let (Some(base), Some(over)) = (doc.as_object_mut(), overrides.as_object()) {
        for (k, v) in over {
            if let Some(slot) = base.get_mut(k) {
                if std::mem::discriminant(slot) == std::mem::discriminant(v) {
                    *slot = v.clone();
                }
            }
        }
    }
    serde_json::from_value(doc).unwrap_or_else(|_| defaults(tier))
}

impl Limits {
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty()
            || self
                .allowed_models
                .iter()
                .any(|p| model.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_tier_has_the_documented_defaults() {
        let f = defaults("free");
        assert_eq!(
            (
                f.projects,
                f.concurrent_runs,
                f.compute_minutes_month,
                f.model_calls_day,
                f.api_requests_minute
            ),
            (3, 1, 600, 1000, 120)
        );
    }

    #[test]
    fn sandboxes_grow_with_the_tier() {
        let size = |t: &str| {
            let l = defaults(t);
            (
                l.sandboxes_running,
                l.sandbox_cpu,
                l.sandbox_memory_gib,
                l.sandbox_disk_gib,
            )
        };
        assert_eq!(size("free"), (1, 1, 1, 3));
        assert_eq!(size("pro"), (3, 2, 4, 10));
        for pair in TIERS.windows(2) {
            let (a, b) = (size(pair[0]), size(pair[1]));
            assert!(
                a.0 <= b.0 && a.1 <= b.1 && a.2 <= b.2 && a.3 <= b.3,
                "{pair:?}"
            );
        }
    }

    #[test]
    fn overrides_replace_only_known_keys_of_the_same_type() {
        let l = effective(
            "free",
            &serde_json::json!({"projects": 7, "bogus": 1, "concurrent_runs": "x"}),
        );
        assert_eq!((l.projects, l.concurrent_runs), (7, 1));
    }
}
