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

/// The issuer's JWKS endpoint: serves the published keys, counts fetches.
#[derive(Default)]
struct FakeIssuer {
    keys: RefCell<Vec<Value>>,
    fetches: Cell<u32>,
    urls: RefCell<Vec<String>>,
    /// Answer 503 (the issuer is down).
    down: Cell<bool>,
}

impl FakeIssuer {
    fn publish(&self, jwk: Value) {
        self.keys.borrow_mut().push(jwk);
    }
}

#[async_trait::async_trait(?Send)]
impl HttpClient for FakeIssuer {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        self.urls.borrow_mut().push(req.uri().to_string());
        self.fetches.set(self.fetches.get() + 1);
        let (status, body) = if self.down.get() {
            (503, json!({"error": "unavailable"}))
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
