//! External OIDC: RS256 / ES256 tokens of the configured issuer verified
//! against its JWKS, which a fake issuer serves through the `Http` port
//! (counting fetches); the user is created on first sight. Bad tokens are a
//! 401 `invalid_token` that creates nothing; the JWKS is cached in KV and
//! refetched on an unknown `kid` at most once a minute.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use base64::Engine as _;
use bytes::Bytes;
use everjust_core::github::app::parse_key;
use everjust_core::ports::http_client::HttpError;
use everjust_core::ports::{Clock, HttpClient};
use jwt_compact::alg::{Es256, Hs256, Hs256Key, Rsa, RsaPrivateKey, SigningKey as _};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, Claims, Header};
use serde_json::{json, Value};

use crate::helpers::{TestApp, PASSWORD};

const ISSUER: &str = "https://issuer.test/";
const AUDIENCE: &str = "https://api.everjust.test";
/// The default when `OIDC_JWKS_URL` is not set.
const JWKS_URL: &str = "https://issuer.test/.well-known/jwks.json";
const DISCOVERY_URL: &str = "https://issuer.test/.well-known/openid-configuration";
const AUTHORIZE_URL: &str = "https://issuer.test/authorize";
const TOKEN_URL: &str = "https://issuer.test/oauth/token";
/// The web client's OAuth client at the issuer.
const CLIENT_ID: &str = "everjust-web";
/// Where this server answers in these tests (absolute request URIs, as on Workers).
const ORIGIN: &str = "http://127.0.0.1:8787";
const RSA_PEM: &str = include_str!("../../../tests/fakes/github-app-test-key.pem");
const OTHER_RSA_PEM: &str = include_str!("oidc-other-issuer-key.pem");
const MINUTE_MS: i64 = 60_000;

type EcKey = <Es256 as Algorithm>::SigningKey;

struct Keys {
    rsa: RsaPrivateKey,
    other_rsa: RsaPrivateKey,
    ec: EcKey,
    other_ec: EcKey,
}

fn keys() -> Keys {
    Keys {
        rsa: parse_key(RSA_PEM).expect("rsa test key"),
        other_rsa: parse_key(OTHER_RSA_PEM).expect("other rsa test key"),
        ec: EcKey::from_slice(&[0x11; 32]).expect("ec key"),
        other_ec: EcKey::from_slice(&[0x22; 32]).expect("other ec key"),
    }
}

fn rsa_jwk(key: &RsaPrivateKey, kid: &str) -> Value {
    let public = key.to_public_key();
    let jwk = json!(JsonWebKey::from(&public));
    with_kid(jwk, kid, "RS256")
}

fn ec_jwk(key: &EcKey, kid: &str) -> Value {
    let public = key.to_verifying_key();
    let jwk = json!(JsonWebKey::from(&public));
    with_kid(jwk, kid, "ES256")
}

fn with_kid(mut jwk: Value, kid: &str, alg: &str) -> Value {
    jwk["kid"] = kid.into();
    jwk["alg"] = alg.into();
    jwk["use"] = "sig".into();
    jwk
}

/// A code the fake issuer's authorize step handed out, and what redeeming it needs.
struct Grant {
    /// S256 of the verifier the client must present.
    challenge: String,
    redirect_uri: String,
    /// What the token endpoint answers as `id_token`.
    id_token: String,
}

/// Form fields and Authorization header of a token request.
type TokenRequest = (Vec<(String, String)>, Option<String>);

/// The issuer: its JWKS (counting fetches), its discovery document and its
/// token endpoint (authorization_code grants with PKCE).
#[derive(Default)]
struct FakeIssuer {
    keys: RefCell<Vec<Value>>,
    /// JWKS fetches.
    fetches: Cell<u32>,
    discovery_fetches: Cell<u32>,
    urls: RefCell<Vec<String>>,
    /// Answer 503 (the issuer is down).
    down: Cell<bool>,
    /// No answer at all (connection refused).
    unreachable: Cell<bool>,
    /// The discovery document names this issuer instead.
    discovery_issuer: RefCell<Option<String>>,
    /// Codes not yet redeemed.
    grants: RefCell<std::collections::HashMap<String, Grant>>,
    /// Form fields and Authorization header of each token request.
    token_requests: RefCell<Vec<TokenRequest>>,
    /// The token endpoint answers this status instead.
    token_status: Cell<Option<u16>>,
}

impl FakeIssuer {
    fn publish(&self, jwk: Value) {
        self.keys.borrow_mut().push(jwk);
    }

    fn discovery(&self) -> Value {
        let issuer = self
            .discovery_issuer
            .borrow()
            .clone()
            .unwrap_or_else(|| ISSUER.to_owned());
        json!({
            "issuer": issuer,
            "authorization_endpoint": AUTHORIZE_URL,
            "token_endpoint": TOKEN_URL,
            "jwks_uri": JWKS_URL,
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        })
    }

    fn token(&self, req: &http::Request<Bytes>) -> (u16, Value) {
        let fields: Vec<(String, String)> = req
            .body()
            .split(|b| *b == b'&')
            .filter_map(|pair| {
                let pair = std::str::from_utf8(pair).ok()?;
                let (k, v) = pair.split_once('=')?;
                let dec = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " "))
                        .decode_utf8_lossy()
                        .into_owned()
                };
                Some((dec(k), dec(v)))
            })
            .collect();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.token_requests
            .borrow_mut()
            .push((fields.clone(), auth));
        if let Some(status) = self.token_status.get() {
            return (status, json!({"error": "server_error"}));
        }
        let field = |k: &str| {
            fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let refused = (400, json!({"error": "invalid_grant"}));
        if field("grant_type") != "authorization_code" {
            return (400, json!({"error": "unsupported_grant_type"}));
        }
        // Single use: a code is gone once presented.
        let Some(grant) = self.grants.borrow_mut().remove(&field("code")) else {
            return refused;
        };
        if challenge(&field("code_verifier")) != grant.challenge
            || field("redirect_uri") != grant.redirect_uri
        {
            return refused;
        }
        (
            200,
            json!({"access_token": "issuer-access", "token_type": "Bearer", "expires_in": 3600, "id_token": grant.id_token}),
        )
    }
}

/// PKCE S256: base64url(sha256(verifier)).
fn challenge(verifier: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

#[async_trait::async_trait(?Send)]
impl HttpClient for FakeIssuer {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let url = req.uri().to_string();
        self.urls.borrow_mut().push(url.clone());
        let (discovery, token) = (url == DISCOVERY_URL, url == TOKEN_URL);
        if discovery {
            self.discovery_fetches.set(self.discovery_fetches.get() + 1);
        } else if !token {
            self.fetches.set(self.fetches.get() + 1);
        }
        if self.unreachable.get() {
            return Err(HttpError("connection refused".into()));
        }
        let (status, body) = if self.down.get() {
            (503, json!({"error": "unavailable"}))
        } else if discovery {
            (200, self.discovery())
        } else if token && req.method() == http::Method::POST {
            self.token(&req)
        } else {
            (200, json!({ "keys": *self.keys.borrow() }))
        };
        Ok(http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Bytes::from(body.to_string()))
            .expect("response"))
    }
}

/// An app trusting `ISSUER` with the RSA key `k1` and the EC key `e1`
/// published (the JWKS is only fetched when a token asks for it).
async fn app_with(algorithms: &str) -> (TestApp, Rc<FakeIssuer>, Keys) {
    let issuer = Rc::new(FakeIssuer::default());
    let keys = keys();
    issuer.publish(rsa_jwk(&keys.rsa, "k1"));
    issuer.publish(ec_jwk(&keys.ec, "e1"));
    let app = TestApp::build(
        &[
            ("OIDC_ISSUER", ISSUER),
            ("OIDC_AUDIENCE", AUDIENCE),
            ("OIDC_ALGORITHMS", algorithms),
        ],
        issuer.clone(),
    )
    .await;
    (app, issuer, keys)
}

async fn app() -> (TestApp, Rc<FakeIssuer>, Keys) {
    app_with("RS256,ES256").await
}

/// Claims of a fresh token of the issuer for `auth0|ada`, with `over`
/// merged on top (a member set to null is removed).
fn claims(app: &TestApp, over: Value) -> Claims<Value> {
    let now = app.clock.now_ms() / 1000;
    let mut c = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "auth0|ada",
        "email": "ada@example.com",
        "email_verified": true,
        "iat": now,
        "exp": now + 300,
    });
    for (k, v) in over.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    Claims::new(c)
}

fn rs256(key: &RsaPrivateKey, kid: &str, claims: &Claims<Value>) -> String {
    Rsa::rs256()
        .token(&Header::empty().with_key_id(kid), claims, key)
        .expect("sign rs256")
}

fn es256(key: &EcKey, kid: &str, claims: &Claims<Value>) -> String {
    Es256
        .token(&Header::empty().with_key_id(kid), claims, key)
        .expect("sign es256")
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn me(app: &TestApp, token: &str) -> Value {
    let r = app.get("/v1/me", Some(token)).await;
    assert_eq!(r.status, 200, "{}", r.json());
    r.json()
}

async fn audit_count(app: &TestApp, action: &str) -> i64 {
    let rows = app
        .ports
        .sql
        .query(
            "SELECT count(*)::int8 AS n FROM audit_events WHERE action = $1",
            &[action.into()],
        )
        .await
        .expect("count audit");
    rows[0].int("n").expect("n")
}

#[tokio::test]
async fn rs256_token_of_the_issuer_creates_a_plain_user_on_first_sight() {
    let (app, issuer, keys) = app().await;
    // A role claim in the token grants nothing: roles are ours.
    let token = rs256(
        &keys.rsa,
        "k1",
        &claims(&app, json!({"role": "admin", "roles": ["admin"]})),
    );
    let j = me(&app, &token).await;
    assert!(j["id"].as_str().expect("id").starts_with("usr"), "{j}");
    assert_eq!(j["email"], "ada@example.com");
    assert_eq!(j["role"], "user");
    assert_eq!(j["tier"], "free");
    assert_eq!(app.count("users").await, 1);
    assert_eq!(audit_count(&app, "auth.oidc_user_created").await, 1);
    assert_eq!(*issuer.urls.borrow(), vec![JWKS_URL.to_owned()]);

    // Seen again: the same user, nothing created, the JWKS from KV.
    let again = rs256(&keys.rsa, "k1", &claims(&app, json!({})));
    assert_eq!(me(&app, &again).await["id"], j["id"]);
    assert_eq!(app.count("users").await, 1);
    assert_eq!(audit_count(&app, "auth.oidc_user_created").await, 1);
    assert_eq!(issuer.fetches.get(), 1);
}

#[tokio::test]
async fn es256_token_is_accepted_and_is_the_same_user_as_rs256() {
    let (app, issuer, keys) = app().await;
    let ec = me(&app, &es256(&keys.ec, "e1", &claims(&app, json!({})))).await;
    let rsa = me(&app, &rs256(&keys.rsa, "k1", &claims(&app, json!({})))).await;
    assert_eq!(ec["id"], rsa["id"]);
    assert_eq!(app.count("users").await, 1);
    // Another subject is another user.
    let bob = claims(
        &app,
        json!({"sub": "auth0|bob", "email": "bob@example.com"}),
    );
    let b = me(&app, &es256(&keys.ec, "e1", &bob)).await;
    assert_ne!(b["id"], rsa["id"]);
    assert_eq!(app.count("users").await, 2);
    assert_eq!(issuer.fetches.get(), 1);
}

#[tokio::test]
async fn es256_token_is_refused_when_only_rs256_is_configured() {
    let (app, issuer, keys) = app_with("RS256").await;
    let token = es256(&keys.ec, "e1", &claims(&app, json!({})));
    app.get("/v1/me", Some(&token))
        .await
        .problem(401, "invalid_token");
    assert_eq!(app.count("users").await, 0);
    assert_eq!(issuer.fetches.get(), 0, "refused before any key lookup");
}

#[tokio::test]
async fn audience_list_holding_ours_is_accepted() {
    let (app, _, keys) = app().await;
    let c = claims(&app, json!({"aud": ["https://other.test", AUDIENCE]}));
    me(&app, &rs256(&keys.rsa, "k1", &c)).await;
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn bad_oidc_tokens_are_invalid_token_and_create_nothing() {
    let (app, issuer, keys) = app().await;
    // Warm the JWKS cache so every case below meets the published keys,
    // then remove that user again.
    me(
        &app,
        &rs256(&keys.rsa, "k1", &claims(&app, json!({"sub": "warm"}))),
    )
    .await;
    app.ports
        .sql
        .execute("DELETE FROM audit_events", &[])
        .await
        .expect("clear audit");
    app.ports
        .sql
        .execute("DELETE FROM users", &[])
        .await
        .expect("clear users");
    let now = app.clock.now_ms() / 1000;
    let ok = claims(&app, json!({}));
    let rs = |over: Value| rs256(&keys.rsa, "k1", &claims(&app, over));

    let valid = rs256(&keys.rsa, "k1", &ok);
    let (head, rest) = valid.split_once('.').expect("jwt");
    let (_, sig) = rest.split_once('.').expect("jwt");
    let tampered = format!(
        "{head}.{}.{sig}",
        b64(&json!(claims(&app, json!({"sub": "auth0|mallory"}))))
    );
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
        b64(&json!(ok))
    );
    // RS256 -> HS256 with the published public key (its JWK, its modulus) as
    // the HMAC secret.
    let hs = |secret: &[u8]| {
        Hs256
            .token(
                &Header::empty().with_key_id("k1"),
                &ok,
                &Hs256Key::new(secret),
            )
            .expect("sign hs256")
    };
    let jwk = rsa_jwk(&keys.rsa, "k1");
    let hs_jwk = hs(jwk.to_string().as_bytes());
    let hs_n = hs(jwk["n"].as_str().expect("n").as_bytes());
    let hs_empty = hs(b"");
    let no_kid = Rsa::rs256()
        .token(&Header::empty(), &ok, &keys.rsa)
        .expect("sign");

    let cases: Vec<(&str, String)> = vec![
        ("wrong issuer", rs(json!({"iss": "https://evil.test/"}))),
        (
            "issuer without its trailing slash",
            rs(json!({"iss": "https://issuer.test"})),
        ),
        ("wrong audience", rs(json!({"aud": "https://other.test"}))),
        (
            "audience list without ours",
            rs(json!({"aud": ["https://other.test"]})),
        ),
        ("no audience", rs(json!({"aud": null}))),
        (
            "expired beyond the leeway",
            rs(json!({"exp": now - 61, "iat": now - 400})),
        ),
        ("no expiry", rs(json!({"exp": null}))),
        ("not yet valid", rs(json!({"nbf": now + 120}))),
        ("no subject", rs(json!({"sub": null}))),
        ("empty subject", rs(json!({"sub": ""}))),
        (
            "key of another issuer, RSA",
            rs256(&keys.other_rsa, "k1", &ok),
        ),
        (
            "key of another issuer, EC",
            es256(&keys.other_ec, "e1", &ok),
        ),
        ("tampered payload", tampered),
        ("alg none", none),
        ("HS256 keyed with the public JWK", hs_jwk),
        ("HS256 keyed with the public modulus", hs_n),
        ("HS256 with an empty secret", hs_empty),
        ("ES256 naming the RSA key", es256(&keys.ec, "k1", &ok)),
        ("RS256 naming the EC key", rs256(&keys.rsa, "e1", &ok)),
        ("no kid", no_kid),
        ("garbage", "eyJhbGciOiJSUzI1NiJ9.bm9wZQ.c2ln".to_owned()),
    ];
    for (name, token) in cases {
        let r = app.get("/v1/me", Some(&token)).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (401, Some("invalid_token")),
            "{name}: {}",
            r.json()
        );
        r.problem(401, "invalid_token");
    }
    assert_eq!(app.count("users").await, 0);
    assert_eq!(app.count("audit_events").await, 0);
    assert_eq!(issuer.fetches.get(), 1, "no case refetched the JWKS");
    // The leeway: expired 30 s ago still passes.
    me(&app, &rs(json!({"exp": now - 30, "iat": now - 400}))).await;
}

#[tokio::test]
async fn unknown_kid_is_invalid_token_and_creates_nothing() {
    let (app, issuer, keys) = app().await;
    let token = rs256(&keys.rsa, "nobody", &claims(&app, json!({})));
    app.get("/v1/me", Some(&token))
        .await
        .problem(401, "invalid_token");
    assert_eq!(issuer.fetches.get(), 1, "one fetch looked for it");
    assert_eq!(app.count("users").await, 0);
    assert_eq!(app.count("audit_events").await, 0);
}

#[tokio::test]
async fn jwks_is_fetched_once_and_then_served_from_kv_for_an_hour() {
    let (app, issuer, keys) = app().await;
    for i in 0..5 {
        let c = claims(&app, json!({"sub": format!("auth0|u{i}")}));
        me(&app, &rs256(&keys.rsa, "k1", &c)).await;
        me(&app, &es256(&keys.ec, "e1", &c)).await;
        app.clock.advance_ms(10 * MINUTE_MS);
    }
    assert_eq!(issuer.fetches.get(), 1);
    // 50 minutes in: still cached. Past the hour: fetched again.
    app.clock.advance_ms(11 * MINUTE_MS);
    me(&app, &rs256(&keys.rsa, "k1", &claims(&app, json!({})))).await;
    assert_eq!(issuer.fetches.get(), 2);
}

#[tokio::test]
async fn new_kid_refetches_once_and_unknown_kids_at_most_once_a_minute() {
    let (app, issuer, keys) = app().await;
    me(&app, &rs256(&keys.rsa, "k1", &claims(&app, json!({})))).await;
    assert_eq!(issuer.fetches.get(), 1);

    // The issuer rotates to k2 (signed with the other key; k1 stays
    // published). The first k2 token refetches, exactly once.
    app.clock.advance_ms(2 * MINUTE_MS);
    issuer.publish(rsa_jwk(&keys.other_rsa, "k2"));
    let k2 = rs256(&keys.other_rsa, "k2", &claims(&app, json!({})));
    let user = me(&app, &k2).await;
    assert_eq!(issuer.fetches.get(), 2);
    me(&app, &k2).await;
    assert_eq!(issuer.fetches.get(), 2, "k2 now comes from KV");

    // Another unknown kid within the same minute: no refetch, refused,
    // even once the issuer has published it.
    app.clock.advance_ms(30_000);
    let k3 = rs256(&keys.rsa, "k3", &claims(&app, json!({})));
    app.get("/v1/me", Some(&k3))
        .await
        .problem(401, "invalid_token");
    issuer.publish(rsa_jwk(&keys.rsa, "k3"));
    app.get("/v1/me", Some(&k3))
        .await
        .problem(401, "invalid_token");
    assert_eq!(issuer.fetches.get(), 2);
    // Known keys keep working meanwhile.
    me(&app, &rs256(&keys.rsa, "k1", &claims(&app, json!({})))).await;
    assert_eq!(issuer.fetches.get(), 2);

    // A minute after the last refetch: k3 refetches and is accepted.
    app.clock.advance_ms(31_000);
    assert_eq!(me(&app, &k3).await["id"], user["id"]);
    assert_eq!(issuer.fetches.get(), 3);
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn unreachable_jwks_refuses_the_token_and_retries_after_a_minute() {
    let (app, issuer, keys) = app().await;
    issuer.down.set(true);
    let token = rs256(&keys.rsa, "k1", &claims(&app, json!({})));
    app.get("/v1/me", Some(&token))
        .await
        .problem(401, "invalid_token");
    issuer.down.set(false);
    app.get("/v1/me", Some(&token))
        .await
        .problem(401, "invalid_token");
    assert_eq!(issuer.fetches.get(), 1, "a failing issuer is not hammered");
    app.clock.advance_ms(MINUTE_MS + 1000);
    let token = rs256(&keys.rsa, "k1", &claims(&app, json!({})));
    me(&app, &token).await;
    assert_eq!(issuer.fetches.get(), 2);
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn oidc_email_never_takes_over_a_password_account() {
    let (app, _, keys) = app().await;
    let (access, _, ada) = app.signup("ada@example.com").await;
    // A verified email that a password account holds: a new user without it.
    let verified = rs256(
        &keys.rsa,
        "k1",
        &claims(&app, json!({"email": "ADA@example.com"})),
    );
    let j = me(&app, &verified).await;
    assert_ne!(j["id"], ada.as_str());
    assert!(j["email"].is_null(), "{j}");
    // An unverified email is not kept at all.
    let unverified = rs256(
        &keys.rsa,
        "k1",
        &claims(
            &app,
            json!({"sub": "auth0|eve", "email": "eve@example.com", "email_verified": false}),
        ),
    );
    assert!(me(&app, &unverified).await["email"].is_null());
    assert_eq!(app.count("users").await, 3);
    // The password account is untouched.
    assert_eq!(me(&app, &access).await["email"], "ada@example.com");
    let login = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.json());
    assert_eq!(login.json()["user"]["id"], ada.as_str());
}

// ---------------------------------------------------------------------------
// "Log in with OIDC": GET /v1/auth/oidc and POST /v1/auth/oidc/callback.
// ---------------------------------------------------------------------------

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const NONCE: &str = "n-0S6_WzA2Mj";
const CALLBACK: &str = "http://127.0.0.1:8787/v1/auth/oidc/callback";

/// An app whose web client logs in as `CLIENT_ID` (with `secret`, a confidential client).
async fn login_app(secret: Option<&str>) -> (TestApp, Rc<FakeIssuer>, Keys) {
    let issuer = Rc::new(FakeIssuer::default());
    let keys = keys();
    issuer.publish(rsa_jwk(&keys.rsa, "k1"));
    let mut vars = vec![
        ("OIDC_ISSUER", ISSUER),
        ("OIDC_AUDIENCE", AUDIENCE),
        ("OIDC_CLIENT_ID", CLIENT_ID),
    ];
    if let Some(s) = secret {
        vars.push(("OIDC_CLIENT_SECRET", s));
    }
    let app = TestApp::build(&vars, issuer.clone()).await;
    (app, issuer, keys)
}

/// The issuer approves a login: `code` redeems for an ID token for our
/// client with our nonce, `over` merged into its claims.
fn grant(app: &TestApp, issuer: &FakeIssuer, keys: &Keys, code: &str, over: Value) -> String {
    let mut base = json!({"aud": CLIENT_ID, "nonce": NONCE, "azp": CLIENT_ID});
    for (k, v) in over.as_object().expect("object") {
        base[k] = v.clone();
    }
    let id_token = rs256(&keys.rsa, "k1", &claims(app, base));
    issuer.grants.borrow_mut().insert(
        code.to_owned(),
        Grant {
            challenge: challenge(VERIFIER),
            redirect_uri: format!("{ORIGIN}/"),
            id_token,
        },
    );
    code.to_owned()
}

fn callback_body(code: &str) -> Value {
    json!({"code": code, "code_verifier": VERIFIER, "redirect_uri": format!("{ORIGIN}/"), "nonce": NONCE})
}

async fn callback(app: &TestApp, body: Value) -> crate::helpers::Res {
    app.json("POST", CALLBACK, None, body).await
}

/// Nothing of a login is left behind: no user, no session, no audit event.
async fn assert_nothing_created(app: &TestApp) {
    assert_eq!(app.count("users").await, 0);
    assert_eq!(app.count("refresh_tokens").await, 0);
    assert_eq!(app.count("audit_events").await, 0);
}

#[tokio::test]
async fn oidc_login_is_not_configured_without_a_client_id() {
    let (app, issuer, _) = app().await;
    app.get("/v1/auth/oidc", None)
        .await
        .problem(404, "oidc_not_configured");
    callback(&app, callback_body("abc"))
        .await
        .problem(404, "oidc_not_configured");
    let plain = TestApp::new().await;
    plain
        .get("/v1/auth/oidc", None)
        .await
        .problem(404, "oidc_not_configured");
    assert!(issuer.urls.borrow().is_empty());
    // A client without an issuer, or a secret without a client, is a configuration error.
    let config = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain([("JWT_SECRET".to_owned(), "x".repeat(40))])
            .collect();
        everjust_core::Config::from_vars(|n| {
            vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        })
    };
    assert!(config(&[("OIDC_CLIENT_ID", CLIENT_ID)]).is_err());
    let secret_only = config(&[
        ("OIDC_ISSUER", ISSUER),
        ("OIDC_AUDIENCE", AUDIENCE),
        ("OIDC_CLIENT_SECRET", "s"),
    ]);
    assert_eq!(
        secret_only.expect_err("secret without client").name,
        "OIDC_CLIENT_SECRET"
    );
}

#[tokio::test]
async fn oidc_info_comes_from_the_discovery_document_cached_in_kv() {
    let (app, issuer, _) = login_app(None).await;
    let r = app.get("/v1/auth/oidc", None).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        r.json(),
        json!({"issuer": ISSUER, "authorization_endpoint": AUTHORIZE_URL, "client_id": CLIENT_ID, "scopes": ["openid", "email", "profile"]})
    );
    app.get("/v1/auth/oidc", None).await;
    assert_eq!(*issuer.urls.borrow(), vec![DISCOVERY_URL.to_owned()]);
    // Cached for an hour.
    app.clock.advance_ms(59 * MINUTE_MS);
    app.get("/v1/auth/oidc", None).await;
    assert_eq!(issuer.discovery_fetches.get(), 1);
    app.clock.advance_ms(2 * MINUTE_MS);
    app.get("/v1/auth/oidc", None).await;
    assert_eq!(issuer.discovery_fetches.get(), 2);
}

#[tokio::test]
async fn oidc_info_is_unavailable_when_the_issuer_is_down_or_names_another_issuer() {
    let (app, issuer, _) = login_app(None).await;
    issuer.unreachable.set(true);
    app.get("/v1/auth/oidc", None)
        .await
        .problem(503, "oidc_unavailable");
    issuer.unreachable.set(false);
    issuer.down.set(true);
    app.get("/v1/auth/oidc", None)
        .await
        .problem(503, "oidc_unavailable");
    issuer.down.set(false);
    *issuer.discovery_issuer.borrow_mut() = Some("https://evil.test/".into());
    app.get("/v1/auth/oidc", None)
        .await
        .problem(503, "oidc_unavailable");
    // Nothing bad was cached: the right document is fetched and used.
    *issuer.discovery_issuer.borrow_mut() = None;
    let r = app.get("/v1/auth/oidc", None).await;
    assert_eq!(r.status, 200, "{}", r.json());
}

#[tokio::test]
async fn oidc_login_returns_our_own_session_that_works_and_refreshes() {
    let (app, issuer, keys) = login_app(None).await;
    let code = grant(&app, &issuer, &keys, "code-1", json!({}));
    let r = callback(&app, callback_body(&code)).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert_eq!(j["user"]["email"], "ada@example.com");
    assert_eq!(j["user"]["role"], "user");
    let access = j["access_token"].as_str().expect("access");
    let refresh = j["refresh_token"].as_str().expect("refresh");
    // Our own token, not the issuer's.
    assert_eq!(
        everjust_core::auth::jwt::peek_issuer(access).as_deref(),
        Some(everjust_core::auth::jwt::ISSUER)
    );
    assert_eq!(me(&app, access).await["id"], j["user"]["id"]);
    let next = app
        .json(
            "POST",
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(next.status, 200, "{}", next.json());
    assert_eq!(next.json()["user"]["id"], j["user"]["id"]);
    me(&app, next.json()["access_token"].as_str().expect("access")).await;

    // The token request: authorization_code with the verifier, a public client (no secret).
    let (fields, auth) = issuer.token_requests.borrow()[0].clone();
    let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("grant_type"), Some("authorization_code"));
    assert_eq!(field("code"), Some("code-1"));
    assert_eq!(field("code_verifier"), Some(VERIFIER));
    assert_eq!(field("redirect_uri"), Some("http://127.0.0.1:8787/"));
    assert_eq!(field("client_id"), Some(CLIENT_ID));
    assert_eq!(field("client_secret"), None);
    assert!(auth.is_none());

    assert_eq!(app.count("users").await, 1);
    assert_eq!(audit_count(&app, "auth.oidc_user_created").await, 1);
    assert_eq!(audit_count(&app, "auth.oidc_login").await, 1);

    // Logging in again, and a bearer token of the same subject: the same user.
    let code = grant(&app, &issuer, &keys, "code-2", json!({}));
    let again = callback(&app, callback_body(&code)).await;
    assert_eq!(again.status, 200, "{}", again.json());
    assert_eq!(again.json()["user"]["id"], j["user"]["id"]);
    let bearer = rs256(&keys.rsa, "k1", &claims(&app, json!({})));
    assert_eq!(me(&app, &bearer).await["id"], j["user"]["id"]);
    assert_eq!(app.count("users").await, 1);
    assert_eq!(audit_count(&app, "auth.oidc_login").await, 2);
    assert_eq!(issuer.discovery_fetches.get(), 1);
    assert_eq!(issuer.fetches.get(), 1);
}

#[tokio::test]
async fn a_confidential_client_authenticates_with_http_basic() {
    let (app, issuer, keys) = login_app(Some("s3cret:/+")).await;
    let code = grant(&app, &issuer, &keys, "code-1", json!({}));
    let r = callback(&app, callback_body(&code)).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let requests = issuer.token_requests.borrow();
    let (fields, auth) = &requests[0];
    // RFC 6749 2.3.1: both parts form-encoded, then Basic.
    let want = base64::engine::general_purpose::STANDARD.encode("everjust-web:s3cret%3A%2F%2B");
    assert_eq!(auth.as_deref(), Some(format!("Basic {want}").as_str()));
    assert!(fields.iter().all(|(k, _)| k != "client_secret"));
}

#[tokio::test]
async fn oidc_callback_bad_input_is_refused_and_creates_nothing() {
    let (app, issuer, keys) = login_app(None).await;
    let without = |k: &str| {
        let mut b = callback_body("code-x");
        b.as_object_mut().expect("object").remove(k);
        b
    };
    let mut invalid_body = vec![
        without("code"),
        without("code_verifier"),
        without("redirect_uri"),
        without("nonce"),
    ];
    let mut extra = callback_body("code-x");
    extra["state"] = "s".into();
    invalid_body.push(extra);
    let mut short = callback_body("code-x");
    short["code_verifier"] = "too-short".into();
    invalid_body.push(short);
    let mut empty = callback_body("");
    empty["nonce"] = "".into();
    invalid_body.push(empty);
    for body in invalid_body {
        callback(&app, body.clone())
            .await
            .problem(400, "invalid_body");
    }
    // Not JSON at all.
    let r = app
        .request("POST", CALLBACK, None, Some("text/plain"), "code=x")
        .await;
    assert_eq!(r.status, 415);

    // A redirect_uri off this server's origin.
    for uri in [
        "https://evil.test/",
        "http://127.0.0.1:8788/",
        "https://127.0.0.1:8787/",
        "http://evil@127.0.0.1:8787/",
        "/relative",
        "",
    ] {
        let mut b = callback_body("code-x");
        b["redirect_uri"] = uri.into();
        let r = callback(&app, b).await;
        assert_eq!(r.status, 400, "{uri}: {}", r.json());
    }
    assert!(
        issuer.urls.borrow().is_empty(),
        "refused before any call to the issuer"
    );

    // The issuer refuses the code: unknown, already used, wrong verifier, wrong redirect_uri.
    callback(&app, callback_body("never-issued"))
        .await
        .problem(401, "oidc_code_rejected");
    let code = grant(&app, &issuer, &keys, "code-v", json!({}));
    let mut b = callback_body(&code);
    b["code_verifier"] = "A".repeat(43).into();
    callback(&app, b).await.problem(401, "oidc_code_rejected");
    let code = grant(&app, &issuer, &keys, "code-r", json!({}));
    let mut b = callback_body(&code);
    b["redirect_uri"] = format!("{ORIGIN}/elsewhere").into();
    callback(&app, b).await.problem(401, "oidc_code_rejected");

    // ID tokens that are not for us or not of this login.
    let cases = [
        (
            "audience of the API, not the client",
            json!({"aud": AUDIENCE}),
        ),
        (
            "another client",
            json!({"aud": "someone-else", "azp": "someone-else"}),
        ),
        (
            "authorized party of another client",
            json!({"aud": [CLIENT_ID, "x"], "azp": "x"}),
        ),
        ("another nonce", json!({"nonce": "replayed"})),
        ("no nonce", json!({"nonce": null})),
        ("another issuer", json!({"iss": "https://evil.test/"})),
        ("expired", json!({"exp": app.clock.now_ms() / 1000 - 120})),
    ];
    for (i, (name, over)) in cases.iter().enumerate() {
        let code = grant(&app, &issuer, &keys, &format!("bad-{i}"), over.clone());
        let r = callback(&app, callback_body(&code)).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (401, Some("invalid_token")),
            "{name}: {}",
            r.json()
        );
    }
    // Signed by a key of another issuer; a tampered one.
    let forged = rs256(
        &keys.other_rsa,
        "k1",
        &claims(&app, json!({"aud": CLIENT_ID, "nonce": NONCE})),
    );
    let genuine = rs256(
        &keys.rsa,
        "k1",
        &claims(&app, json!({"aud": CLIENT_ID, "nonce": NONCE})),
    );
    let (head, rest) = genuine.split_once('.').expect("jwt");
    let (_, sig) = rest.split_once('.').expect("jwt");
    let tampered = format!(
        "{head}.{}.{sig}",
        b64(&json!(claims(
            &app,
            json!({"aud": CLIENT_ID, "nonce": NONCE, "sub": "auth0|mallory"})
        )))
    );
    for (i, id_token) in [forged, tampered, "garbage".to_owned()]
        .into_iter()
        .enumerate()
    {
        let code = format!("sig-{i}");
        issuer.grants.borrow_mut().insert(
            code.clone(),
            Grant {
                challenge: challenge(VERIFIER),
                redirect_uri: format!("{ORIGIN}/"),
                id_token,
            },
        );
        callback(&app, callback_body(&code))
            .await
            .problem(401, "invalid_token");
    }

    // The issuer is down or unreachable at the token endpoint.
    let code = grant(&app, &issuer, &keys, "code-down", json!({}));
    issuer.token_status.set(Some(502));
    callback(&app, callback_body(&code))
        .await
        .problem(503, "oidc_unavailable");
    issuer.token_status.set(None);
    issuer.unreachable.set(true);
    callback(&app, callback_body(&code))
        .await
        .problem(503, "oidc_unavailable");
    issuer.unreachable.set(false);

    assert_nothing_created(&app).await;
    // And the same code still works once the issuer is back (it was never redeemed).
    let r = callback(&app, callback_body(&code)).await;
    assert_eq!(r.status, 200, "{}", r.json());
}

#[tokio::test]
async fn oidc_callback_is_unavailable_when_discovery_fails_and_creates_nothing() {
    let (app, issuer, keys) = login_app(None).await;
    let code = grant(&app, &issuer, &keys, "code-1", json!({}));
    issuer.unreachable.set(true);
    callback(&app, callback_body(&code))
        .await
        .problem(503, "oidc_unavailable");
    issuer.unreachable.set(false);
    issuer.down.set(true);
    callback(&app, callback_body(&code))
        .await
        .problem(503, "oidc_unavailable");
    assert_nothing_created(&app).await;
    assert!(issuer.token_requests.borrow().is_empty());
}

#[tokio::test]
async fn oidc_routes_are_rate_limited_per_ip_like_login() {
    let (app, _, _) = login_app(None).await;
    let mut last = None;
    for _ in 0..61 {
        last = Some(app.get("/v1/auth/oidc", None).await);
    }
    last.expect("answer").problem(429, "rate_limited");
    callback(&app, callback_body("x"))
        .await
        .problem(429, "rate_limited");
}

/// ADMIN_EMAILS names admins by an address someone has proven to own: in
/// production an OIDC sign-in with a verified email is one, a password
/// sign-up (no mail round trip) is not, and an unverified OIDC email is not.
#[tokio::test]
async fn admin_emails_make_admins_only_of_proven_addresses_in_production() {
    let issuer = Rc::new(FakeIssuer::default());
    let keys = keys();
    issuer.publish(rsa_jwk(&keys.rsa, "k1"));
    let app = TestApp::build(
        &[
            ("OIDC_ISSUER", ISSUER),
            ("OIDC_AUDIENCE", AUDIENCE),
            ("OIDC_ALGORITHMS", "RS256"),
            ("EVERJUST_ENV", "production"),
            (
                "ADMIN_EMAILS",
                "ada@example.com,root@example.com,eve@example.com",
            ),
        ],
        issuer.clone(),
    )
    .await;
    let (password_token, _, _) = app.signup("Root@example.com").await;
    assert_eq!(me(&app, &password_token).await["role"], "user");
    let unverified = rs256(
        &keys.rsa,
        "k1",
        &claims(
            &app,
            json!({"sub": "auth0|eve", "email": "eve@example.com", "email_verified": false}),
        ),
    );
    assert_eq!(me(&app, &unverified).await["role"], "user");
    let verified = rs256(&keys.rsa, "k1", &claims(&app, json!({})));
    let ada = me(&app, &verified).await;
    assert_eq!(
        (ada["email"].as_str(), ada["role"].as_str()),
        (Some("ada@example.com"), Some("admin"))
    );
    assert_eq!(
        app.get("/v1/admin/users", Some(&verified)).await.status,
        200
    );
    app.get("/v1/admin/users", Some(&password_token))
        .await
        .problem(403, "forbidden");
}
