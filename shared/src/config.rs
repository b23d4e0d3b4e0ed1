//! Configuration, read once per isolate from the platform's variables
//! (Workers vars and secrets, Spin variables) under the same names.

/// Names of every variable the core reads; the adapters pass these through,
/// and `spin.toml` / `wrangler.toml` are checked against this list.
pub const VARIABLES: &[(&str, bool)] = &[
    // (name, secret)
    ("JWT_SECRET", true),
    ("OIDC_ISSUER", false),
    ("OIDC_AUDIENCE", false),
    ("OIDC_JWKS_URL", false),
    ("OIDC_ALGORITHMS", false),
    ("OIDC_CLIENT_ID", false),
    ("OIDC_CLIENT_SECRET", true),
    ("MAX_FILE_BYTES", false),
    ("MAX_PROJECT_BYTES", false),
    ("PASSWORD_ITERATIONS", false),
    ("EVERJUST_ENV", false),
    ("ANTHROPIC_BASE_URL", false),
    ("ANTHROPIC_API_KEY", true),
    ("ANTHROPIC_MODEL", false),
    ("OPENAI_BASE_URL", false),
    ("OPENAI_API_KEY", true),
    ("OPENAI_MODEL", false),
    ("AGENT_MAX_STEPS", false),
    ("AGENT_MAX_TOKENS", false),
    ("AGENT_CONTEXT_TOKENS", false),
    ("AGENT_MAX_SECS", false),
    ("KEYS_ENCRYPTION_KEY", true),
    ("CORS_ORIGINS", false),
    ("ADMIN_EMAILS", false),
    ("GITHUB_APP_ID", false),
    ("GITHUB_APP_PRIVATE_KEY", true),
    ("GITHUB_WEBHOOK_SECRET", true),
    ("GITHUB_API_URL", false),
    ("GITHUB_CLIENT_ID", false),
    ("GITHUB_CLIENT_SECRET", true),
    ("GITHUB_OAUTH_URL", false),
    ("GITHUB_APP_SLUG", false),
    ("GITHUB_COMMIT_AUTHOR_NAME", false),
    ("GITHUB_COMMIT_AUTHOR_EMAIL", false),
    ("DAYTONA_API_URL", false),
    ("DAYTONA_API_KEY", true),
    ("DAYTONA_WEBHOOK_SECRET", true),
    ("DAYTONA_SNAPSHOT", false),
    ("DAYTONA_IMAGE", false),
    ("DAYTONA_PREVIEW_PORT", false),
    ("JOBS_SECRET", true),
    ("RATE_LIMIT_ANONYMOUS_PER_MINUTE", false),
];

/// `KEYS_ENCRYPTION_KEY`: comma-separated `<id>:<base64 of 32 bytes>`, the
/// current key first; older ones stay to open rows sealed before a rotation.
/// A bare base64 key gets the id `k1`.
fn parse_keys(v: &str) -> Result<Vec<(String, [u8; 32])>, ConfigError> {
    use base64::Engine;
    let bad = ConfigError {
        name: "KEYS_ENCRYPTION_KEY",
        problem: "must be <id>:<base64 of 32 bytes>[,<id>:<key>...]",
    };
    v.split(',')
        .map(|part| {
            let (id, b64) = part.trim().split_once(':').unwrap_or(("k1", part.trim()));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim()))
                .map_err(|_| bad.clone())?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| bad.clone())?;
            if id.is_empty() {
                return Err(bad.clone());
            }
            Ok((id.to_owned(), key))
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OidcAlg {
    Rs256,
    Es256,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Exact `iss` value, e.g. `https://tenant.auth0.com/`.
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    /// Accepted algorithms, from configuration, never from the token.
    pub algorithms: Vec<OidcAlg>,
    /// The browser login's client (`OIDC_CLIENT_ID`); `None`: bearer tokens only.
    pub client: Option<OidcClient>,
}

/// The OAuth client the web client logs in with (authorization code + PKCE).
#[derive(Clone)]
pub struct OidcClient {
    pub client_id: String,
    /// `OIDC_CLIENT_SECRET`, for confidential clients; public clients rely on PKCE alone.
    pub client_secret: Option<String>,
}

/// Debug output of the configuration shows no secret: a secret field
/// prints as this, and a field a Debug impl below does not name is left out.
const REDACTED: &str = "<redacted>";

fn redacted<T>(secret: &Option<T>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

#[derive(Clone)]
pub struct Config {
    /// HS256 key of our own access tokens (at least 32 bytes).
    pub jwt_secret: Vec<u8>,
    pub oidc: Option<OidcConfig>,
    pub max_file_bytes: u64,
    pub max_project_bytes: u64,
    pub password_iterations: u32,
    /// `development` enables test-only routes (port conformance suites).
    pub development: bool,
    pub anthropic: Option<ProviderConfig>,
    pub openai: Option<ProviderConfig>,
    /// Most model calls in one agent run.
    pub agent_max_steps: u32,
    /// Most output tokens of one model call.
    pub agent_max_tokens: u32,
    /// About the most tokens of conversation one model call is given: the
    /// session's earlier messages that fit (`chat::agent::context`), none
    /// of them once the run's own rounds outgrow it (`shed_history`).
    pub agent_context_tokens: u32,
    /// Longest wall time of one run, in seconds.
    pub agent_max_secs: u32,
    /// AES-256-GCM keys for provider keys at rest, current first: (key id, key).
    pub encryption_keys: Vec<(String, [u8; 32])>,
    /// Origins allowed to call the API from a browser (CORS); empty: same origin only.
    pub cors_origins: Vec<String>,
    /// Accounts with these emails are admins from their first sign-in (bootstrap).
    pub admin_emails: Vec<String>,
    /// Anonymous requests (signup, login, refresh, logout) allowed per client IP and minute.
    pub anonymous_per_minute: u32,
    /// GitHub App settings (`GITHUB_*`); `None` when no app is configured.
    pub github: Option<GithubConfig>,
    /// Daytona settings (`DAYTONA_*`); `None` uses the static preview provider.
    pub daytona: Option<DaytonaConfig>,
    /// Bearer secret of the scheduled-job routes (`JOBS_SECRET`), for schedulers without cron triggers.
    pub jobs_secret: Option<String>,
}

#[derive(Clone)]
pub struct GithubConfig {
    pub app_id: String,
    /// PEM, PKCS#1 or PKCS#8 (literal `\n` sequences are turned into newlines).
    pub private_key_pem: String,
    pub webhook_secret: String,
    /// `https://api.github.com` unless set (tests point it at a fake).
    pub api_url: String,
    /// The App's OAuth client (`GITHUB_CLIENT_ID`, `GITHUB_CLIENT_SECRET`):
    /// how a user proves which installations their GitHub account can
    /// reach. `None`: installations cannot be linked.
    pub oauth: Option<GithubOauth>,
    /// The App's name in its GitHub URL (`GITHUB_APP_SLUG`,
    /// `https://github.com/apps/<slug>`): with it, a link starts at the
    /// App's install page (`install_url`).
    pub app_slug: Option<String>,
    pub commit_author_name: String,
    pub commit_author_email: String,
}

#[derive(Clone)]
pub struct GithubOauth {
    pub client_id: String,
    pub client_secret: String,
    /// Where `/login/oauth/access_token` is: `https://github.com` unless set.
    pub url: String,
}

impl std::fmt::Debug for GithubOauth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubOauth")
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("url", &self.url)
            .finish()
    }
}

#[derive(Clone)]
pub struct DaytonaConfig {
    /// Base URL of the API, e.g. `https://app.daytona.io/api`.
    pub api_url: String,
    pub api_key: String,
    /// Svix-style `whsec_<base64>` secret of the webhooks; `None` refuses every webhook.
    pub webhook_secret: Option<String>,
    /// What new sandboxes start from; only an image takes the tier's resources.
    pub source: SandboxSource,
    /// The port the app listens on inside the sandbox, for the preview link.
    pub preview_port: u16,
}

/// What a new Daytona sandbox is made from. Daytona sizes a sandbox made
/// from a snapshot by the snapshot (and refuses resources with one), so
/// only `Image` gets the tier's CPU, memory and disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxSource {
    /// Daytona's default snapshot (`DAYTONA_SNAPSHOT` and `DAYTONA_IMAGE` unset).
    Default,
    /// `DAYTONA_SNAPSHOT`: a snapshot by name, with its own resources.
    Snapshot(String),
    /// `DAYTONA_IMAGE`: an image reference, built on create, sized per tier.
    Image(String),
}

/// A model provider's endpoint and server-side key.
#[derive(Clone)]
pub struct ProviderConfig {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key_ids: Vec<&str> = self
            .encryption_keys
            .iter()
            .map(|(id, _)| id.as_str())
            .collect();
        f.debug_struct("Config")
            .field("jwt_secret", &REDACTED)
            .field("oidc", &self.oidc)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("max_project_bytes", &self.max_project_bytes)
            .field("password_iterations", &self.password_iterations)
            .field("development", &self.development)
            .field("anthropic", &self.anthropic)
            .field("openai", &self.openai)
            .field("agent_max_steps", &self.agent_max_steps)
            .field("agent_max_tokens", &self.agent_max_tokens)
            .field("agent_context_tokens", &self.agent_context_tokens)
            .field("agent_max_secs", &self.agent_max_secs)
            .field("encryption_key_ids", &key_ids)
            .field("cors_origins", &self.cors_origins)
            .field("admin_emails", &self.admin_emails)
            .field("anonymous_per_minute", &self.anonymous_per_minute)
            .field("github", &self.github)
            .field("daytona", &self.daytona)
            .field("jobs_secret", &redacted(&self.jobs_secret))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OidcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .finish()
    }
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("app_id", &self.app_id)
            .field("private_key_pem", &REDACTED)
            .field("webhook_secret", &REDACTED)
            .field("api_url", &self.api_url)
            .field("oauth", &self.oauth)
            .field("app_slug", &self.app_slug)
            .field("commit_author_name", &self.commit_author_name)
            .field("commit_author_email", &self.commit_author_email)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DaytonaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaytonaConfig")
            .field("api_url", &self.api_url)
            .field("api_key", &REDACTED)
            .field("webhook_secret", &redacted(&self.webhook_secret))
            .field("source", &self.source)
            .field("preview_port", &self.preview_port)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &REDACTED)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("configuration variable {name}: {problem}")]
pub struct ConfigError {
    pub name: &'static str,
    pub problem: &'static str,
}

pub const DEFAULT_MAX_FILE_BYTES: u64 = 5 * 1024 * 1024;
pub const DEFAULT_MAX_PROJECT_BYTES: u64 = 100 * 1024 * 1024;
/// Web Crypto on Workers caps PBKDF2 at 100,000 iterations.
pub const DEFAULT_PASSWORD_ITERATIONS: u32 = 100_000;

impl Config {
    /// Reads the configuration through `var`, which returns a variable's value.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let jwt_secret = get("JWT_SECRET").ok_or(ConfigError {
            name: "JWT_SECRET",
            problem: "is not set",
        })?;
        if jwt_secret.len() < 32 {
            return Err(ConfigError {
                name: "JWT_SECRET",
                problem: "must be at least 32 characters",
            });
        }
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.parse().map_err(|_| ConfigError {
                    name,
                    problem: "is not a number",
                }),
            }
        };
        let oidc = match (get("OIDC_ISSUER"), get("OIDC_AUDIENCE")) {
            (Some(issuer), Some(audience)) => {
                let jwks_url = get("OIDC_JWKS_URL").unwrap_or_else(|| {
                    format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/'))
                });
                let algorithms = get("OIDC_ALGORITHMS")
                    .unwrap_or_else(|| "RS256".to_owned())
                    .split(',')
                    .map(|a| match a.trim() {
                        "RS256" => Ok(OidcAlg::Rs256),
                        "ES256" => Ok(OidcAlg::Es256),
                        _ => Err(ConfigError {
                            name: "OIDC_ALGORITHMS",
                            problem: "only RS256 and ES256 are supported",
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let client = match (get("OIDC_CLIENT_ID"), get("OIDC_CLIENT_SECRET")) {
                    (Some(client_id), client_secret) => Some(OidcClient {
                        client_id,
                        client_secret,
                    }),
                    (None, None) => None,
                    (None, Some(_)) => {
                        return Err(ConfigError {
                            name: "OIDC_CLIENT_SECRET",
                            problem: "needs OIDC_CLIENT_ID",
                        })
                    }
                };
                Some(OidcConfig {
                    issuer,
                    audience,
                    jwks_url,
                    algorithms,
                    client,
                })
            }
            (None, None)
                if get("OIDC_CLIENT_ID").is_some() || get("OIDC_CLIENT_SECRET").is_some() =>
            {
                return Err(ConfigError {
                    name: "OIDC_CLIENT_ID",
                    problem: "needs OIDC_ISSUER and OIDC_AUDIENCE",
                })
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError {
                    name: "OIDC_AUDIENCE",
                    problem: "OIDC_ISSUER and OIDC_AUDIENCE must be set together",
                })
            }
        };
        let iterations = number("PASSWORD_ITERATIONS", DEFAULT_PASSWORD_ITERATIONS.into())?;
        Ok(Config {
            jwt_secret: jwt_secret.into_bytes(),
            oidc,
            max_file_bytes: number("MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES)?,
            max_project_bytes: number("MAX_PROJECT_BYTES", DEFAULT_MAX_PROJECT_BYTES)?,
            password_iterations: u32::try_from(iterations)
                .ok()
                .filter(|i| *i >= 1_000)
                .ok_or(ConfigError {
                    name: "PASSWORD_ITERATIONS",
                    problem: "must be between 1000 and 2^32",
                })?,
            development: get("EVERJUST_ENV").is_some_and(|e| e == "development" || e == "test"),
            anthropic: get("ANTHROPIC_API_KEY").map(|api_key| ProviderConfig {
                base_url: get("ANTHROPIC_BASE_URL")
                    .unwrap_or_else(|| "https://api.anthropic.com".into()),
                api_key,
                model: get("ANTHROPIC_MODEL").unwrap_or_else(|| "claude-sonnet-4-6".into()),
            }),
            openai: get("OPENAI_API_KEY").map(|api_key| ProviderConfig {
                base_url: get("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com".into()),
                api_key,
                model: get("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o".into()),
            }),
            agent_max_steps: u32::try_from(number("AGENT_MAX_STEPS", 12)?)
                .unwrap_or(12)
                .clamp(1, 100),
            agent_max_tokens: u32::try_from(number("AGENT_MAX_TOKENS", 8192)?)
                .unwrap_or(8192)
                .clamp(256, 64_000),
            agent_context_tokens: u32::try_from(number("AGENT_CONTEXT_TOKENS", 100_000)?)
                .unwrap_or(100_000)
                .clamp(1_000, 1_000_000),
            agent_max_secs: u32::try_from(number("AGENT_MAX_SECS", 600)?)
                .unwrap_or(600)
                .clamp(10, 3600),
            encryption_keys: match get("KEYS_ENCRYPTION_KEY") {
                None => Vec::new(),
                Some(v) => parse_keys(&v)?,
            },
            github: match (get("GITHUB_APP_ID"), get("GITHUB_APP_PRIVATE_KEY"), get("GITHUB_WEBHOOK_SECRET")) {
                (Some(app_id), Some(key), Some(webhook_secret)) => Some(GithubConfig {
                    app_id,
                    private_key_pem: key.replace("\\n", "\n"),
                    webhook_secret,
                    api_url: get("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into()).trim_end_matches('/').to_owned(),
                    oauth: match (get("GITHUB_CLIENT_ID"), get("GITHUB_CLIENT_SECRET")) {
                        (Some(client_id), Some(client_secret)) => Some(GithubOauth {
                            client_id,
                            client_secret,
                            url: get("GITHUB_OAUTH_URL").unwrap_or_else(|| "https://github.com".into()).trim_end_matches('/').to_owned(),
                        }),
                        (None, None) => None,
                        _ => {
                            return Err(ConfigError {
                                name: "GITHUB_CLIENT_ID",
                                problem: "GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET must be set together",
                            })
                        }
                    },
                    app_slug: match get("GITHUB_APP_SLUG") {
                        None => None,
                        Some(slug) if !slug.is_empty()
                            && slug.len() <= 100
                            && slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') => Some(slug),
                        Some(_) => {
                            return Err(ConfigError {
                                name: "GITHUB_APP_SLUG",
                                problem: "the App's name as in its URL https://github.com/apps/<slug>: lowercase letters, digits and '-'",
                            })
                        }
                    },
                    commit_author_name: get("GITHUB_COMMIT_AUTHOR_NAME").unwrap_or_else(|| "EverJust".into()),
                    commit_author_email: get("GITHUB_COMMIT_AUTHOR_EMAIL").unwrap_or_else(|| "agent@everjust.dev".into()),
                }),
                (None, None, None) => None,
                _ => {
                    return Err(ConfigError {
                        name: "GITHUB_APP_ID",
                        problem: "GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY and GITHUB_WEBHOOK_SECRET must be set together",
                    })
                }
            },
            daytona: match (get("DAYTONA_API_URL"), get("DAYTONA_API_KEY")) {
                (Some(api_url), Some(api_key)) => Some(DaytonaConfig {
                    api_url: api_url.trim_end_matches('/').to_owned(),
                    api_key,
                    webhook_secret: get("DAYTONA_WEBHOOK_SECRET"),
                    source: match (get("DAYTONA_SNAPSHOT"), get("DAYTONA_IMAGE")) {
                        (Some(s), None) => SandboxSource::Snapshot(s),
                        (None, Some(i)) if i.contains(char::is_whitespace) => return Err(ConfigError { name: "DAYTONA_IMAGE", problem: "must be one image reference, e.g. node:22-bookworm" }),
                        (None, Some(i)) => SandboxSource::Image(i),
                        (None, None) => SandboxSource::Default,
                        (Some(_), Some(_)) => return Err(ConfigError { name: "DAYTONA_IMAGE", problem: "set DAYTONA_SNAPSHOT or DAYTONA_IMAGE, not both" }),
                    },
                    preview_port: get("DAYTONA_PREVIEW_PORT").and_then(|p| p.parse().ok()).unwrap_or(3000),
                }),
                (None, None) => None,
                _ => return Err(ConfigError { name: "DAYTONA_API_KEY", problem: "DAYTONA_API_URL and DAYTONA_API_KEY must be set together" }),
            },
            jobs_secret: get("JOBS_SECRET"),
            anonymous_per_minute: u32::try_from(number("RATE_LIMIT_ANONYMOUS_PER_MINUTE", 60)?).unwrap_or(60).max(1),
            admin_emails: get("ADMIN_EMAILS")
                .map(|v| {
                    v.split(',')
                        .map(|e| e.trim().to_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            cors_origins: get("CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().trim_end_matches('/').to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// A value for every variable: each secret a marker of its own that
    /// must not appear in the Debug output.
    fn every_variable_set() -> Vec<(&'static str, String)> {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        VARIABLES
            .iter()
            .filter(|(name, _)| *name != "DAYTONA_IMAGE")
            .map(|&(name, secret)| {
                let value = match name {
                    "JWT_SECRET" => "jwt-secret-marker-0123456789abcdefghij".to_owned(),
                    "KEYS_ENCRYPTION_KEY" => format!("k1:{key}"),
                    _ if secret => format!("{}-marker", name.to_lowercase()),
                    "OIDC_ISSUER" => "https://issuer.example/".into(),
                    "EVERJUST_ENV" => "test".into(),
                    "OIDC_ALGORITHMS" => "RS256".into(),
                    // A slug has no '_'.
                    "GITHUB_APP_SLUG" => "github-app-slug-value".into(),
                    n if n.ends_with("_URL") => "https://service.example".into(),
                    n if n.starts_with("MAX_")
                        || n.starts_with("AGENT_")
                        || n.ends_with("_PORT")
                        || n.ends_with("_MINUTE")
                        || n == "PASSWORD_ITERATIONS" =>
                    {
                        "1000".into()
                    }
                    _ => format!("{}-value", name.to_lowercase()),
                };
                (name, value)
            })
            .collect()
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let vars = every_variable_set();
        let config = Config::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        })
        .expect("every variable set is a valid configuration");
        let shown = format!("{config:?}");
        for (name, value) in &vars {
            let secret = VARIABLES.iter().any(|&(n, s)| n == *name && s);
            let marker = value.rsplit(':').next().unwrap_or(value);
            if secret {
                assert!(!shown.contains(marker), "{name} shown: {shown}");
            } else if marker.ends_with("-value") {
                // The rest is shown (the check above has something to miss).
                assert!(shown.contains(marker), "{name} not shown: {shown}");
            }
        }
        assert!(!shown.contains(&format!("{:?}", config.jwt_secret)));
        assert!(!shown.contains(&format!("{:?}", config.encryption_keys[0].1)));
        assert!(shown.contains("<redacted>"));
    }
}
