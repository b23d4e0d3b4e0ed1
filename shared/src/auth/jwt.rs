//! Our own access tokens: HS256 JWTs (jwt-compact) under `JWT_SECRET`,
//! valid 15 minutes. The algorithm is fixed here, never read from a token.

use chrono::{DateTime, Duration, Utc};
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{AlgorithmExt, Claims, Header, TimeOptions, UntrustedToken};
use serde::{Deserialize, Serialize};

use crate::config::Config;

pub const ISSUER: &str = "everjust";
pub const AUDIENCE: &str = "everjust-api";
pub const ACCESS_TTL_SECS: i64 = 15 * 60;
const LEEWAY_SECS: i64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub role: String,
    /// A scoped token's own id: two issued in one second differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

fn time(now_ms: i64) -> TimeOptions<impl Fn() -> DateTime<Utc>> {
    let now = DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    TimeOptions::new(Duration::seconds(LEEWAY_SECS), move || now)
}

/// Signs an access token for `user_id`.
pub fn issue_access(config: &Config, now_ms: i64, user_id: &str, role: &str) -> String {
    sign(
        config,
        now_ms,
        user_id,
        AUDIENCE,
        role,
        None,
        ACCESS_TTL_SECS,
    )
}

/// Verifies signature (HS256 only), expiry, issuer and audience.
pub fn verify_access(config: &Config, now_ms: i64, token: &str) -> Option<AccessClaims> {
    verify(config, now_ms, token, AUDIENCE)
}

/// What a token of [`issue_scoped`] is good for: one thing, never access.
#[derive(Clone, Copy)]
pub enum Scope {
    /// The `state` of a GitHub App installation link (`github::oauth`).
    GithubLink,
}

impl Scope {
    fn audience(self) -> &'static str {
        match self {
            Scope::GithubLink => "everjust-github-link",
        }
    }
}

/// Signs a token that says only "issued to `user_id` for `scope`", for
/// `ttl_secs`; `id` makes it one of its own (`jti`).
pub fn issue_scoped(
    config: &Config,
    now_ms: i64,
    user_id: &str,
    scope: Scope,
    id: &str,
    ttl_secs: i64,
) -> String {
    sign(
        config,
        now_ms,
        user_id,
        scope.audience(),
        "",
        Some(id.to_owned()),
        ttl_secs,
    )
}

/// The user a token of [`issue_scoped`] for `scope` was issued to, while
/// it is valid.
pub fn verify_scoped(config: &Config, now_ms: i64, token: &str, scope: Scope) -> Option<String> {
    verify(config, now_ms, token, scope.audience()).map(|c| c.sub)
}

fn sign(
    config: &Config,
    now_ms: i64,
    user_id: &str,
    audience: &str,
    role: &str,
    jti: Option<String>,
    ttl_secs: i64,
) -> String {
    let claims = Claims::new(AccessClaims {
        sub: user_id.to_owned(),
        iss: ISSUER.to_owned(),
        aud: audience.to_owned(),
        role: role.to_owned(),
        jti,
    })
    .set_duration_and_issuance(&time(now_ms), Duration::seconds(ttl_secs));
    let header = Header::empty().with_token_type("JWT");
    Hs256
        .token(&header, &claims, &Hs256Key::new(&config.jwt_secret))
        // Serialising a small struct of strings cannot fail.
        .unwrap_or_default()
}

fn verify(config: &Config, now_ms: i64, token: &str, audience: &str) -> Option<AccessClaims> {
    let untrusted = UntrustedToken::new(token).ok()?;
    if untrusted.algorithm() != "HS256" {
        return None;
    }
    let token = Hs256
        .validator::<AccessClaims>(&Hs256Key::new(&config.jwt_secret))
        .validate(&untrusted)
        .ok()?;
    let claims = token.claims();
    claims.validate_expiration(&time(now_ms)).ok()?;
    claims.expiration?;
    let c = &claims.custom;
    (c.iss == ISSUER && c.aud == audience).then(|| c.clone())
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

/// The unverified `iss` of a token, used only to pick the verifier.
pub fn peek_issuer(token: &str) -> Option<String> {
    let untrusted = UntrustedToken::new(token).ok()?;
    untrusted
        .deserialize_claims_unchecked::<Peek>()
        .ok()?
        .custom
        .iss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_vars(|k| (k == "JWT_SECRET").then(|| "k".repeat(40))).expect("config")
    }

    #[test]
    fn issued_token_verifies_until_it_expires() {
        let c = config();
        let t = issue_access(&c, 1_700_000_000_000, "usr_1", "user");
        assert_eq!(
            verify_access(&c, 1_700_000_000_000, &t).map(|c| c.sub),
            Some("usr_1".into())
        );
        assert!(verify_access(
            &c,
            1_700_000_000_000 + (ACCESS_TTL_SECS + LEEWAY_SECS + 1) * 1000,
            &t
        )
        .is_none());
        assert_eq!(peek_issuer(&t).as_deref(), Some(ISSUER));
    }

    #[test]
    fn token_under_another_secret_is_rejected() {
        let other =
            Config::from_vars(|k| (k == "JWT_SECRET").then(|| "x".repeat(40))).expect("config");
        let t = issue_access(&other, 1_700_000_000_000, "usr_1", "admin");
        assert!(verify_access(&config(), 1_700_000_000_000, &t).is_none());
    }

    #[test]
    fn a_scoped_token_is_only_good_for_its_scope() {
        let c = config();
        let now = 1_700_000_000_000;
        let scoped = issue_scoped(&c, now, "usr_1", Scope::GithubLink, "gls_1", 600);
        let other = issue_scoped(&c, now, "usr_1", Scope::GithubLink, "gls_2", 600);
        assert_ne!(scoped, other, "two in one second differ");
        assert_eq!(
            verify_scoped(&c, now, &scoped, Scope::GithubLink).as_deref(),
            Some("usr_1")
        );
        assert!(
            verify_access(&c, now, &scoped).is_none(),
            "not an access token"
        );
        let access = issue_access(&c, now, "usr_1", "user");
        assert!(verify_scoped(&c, now, &access, Scope::GithubLink).is_none());
        let late = now + (600 + LEEWAY_SECS + 1) * 1000;
        assert!(verify_scoped(&c, late, &scoped, Scope::GithubLink).is_none());
    }

    #[test]
    fn alg_none_is_rejected() {
        use base64::Engine;
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = b.encode(r#"{"sub":"usr_1","iss":"everjust","aud":"everjust-api","role":"admin","exp":9999999999}"#);
        assert!(
            verify_access(&config(), 1_700_000_000_000, &format!("{header}.{body}.")).is_none()
        );
    }
}
