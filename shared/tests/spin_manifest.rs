//! spin.toml is read by no test host (the native one takes routes and
//! variables from elsewhere), so it is checked here against the core's
//! route table and variable list.

use everjust_core::config::VARIABLES;
use everjust_core::routes::ROUTES;
use toml::{Table, Value};

const API_COMPONENT: &str = "everjust";

fn manifest() -> Table {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../spin.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.parse::<Table>()
        .unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn table<'a>(t: &'a Table, key: &str) -> &'a Table {
    t.get(key)
        .and_then(Value::as_table)
        .unwrap_or_else(|| panic!("spin.toml: [{key}] missing or not a table"))
}

fn api_component(m: &Table) -> &Table {
    table(table(m, "component"), API_COMPONENT)
}

/// (route, component) of every HTTP trigger.
fn triggers(m: &Table) -> Vec<(String, String)> {
    let list = table(m, "trigger")
        .get("http")
        .and_then(Value::as_array)
        .expect("spin.toml: no [[trigger.http]]");
    list.iter()
        .map(|t| {
            let get = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("trigger without {k}: {t:?}"))
            };
            (get("route").to_owned(), get("component").to_owned())
        })
        .collect()
}

/// The component Spin sends `path` to: an exact route first, else the
/// wildcard route (`/prefix/...`) with the longest prefix.
fn routed_component<'a>(triggers: &'a [(String, String)], path: &str) -> Option<&'a str> {
    if let Some((_, c)) = triggers.iter().find(|(r, _)| r == path) {
        return Some(c);
    }
    triggers
        .iter()
        .filter_map(|(r, c)| {
            let prefix = r.strip_suffix("/...")?;
            let hit =
                prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"));
            hit.then_some((prefix.len(), c.as_str()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, c)| c)
}

/// A concrete path for a matchit pattern: `{id}` -> one segment, `{*rest}` -> two.
fn example_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| match seg {
            s if s.starts_with("{*") => "dir/file.txt",
            s if s.starts_with('{') => "prj_123",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `[variables]` entry of `name` (Spin's lowercase form).
fn app_variable<'a>(m: &'a Table, name: &str) -> Option<&'a Table> {
    table(m, "variables").get(name).and_then(Value::as_table)
}

#[test]
fn every_api_route_reaches_the_api_component() {
    let m = manifest();
    let triggers = triggers(&m);
    let mut wrong = Vec::new();
    for def in ROUTES {
        let path = example_path(def.path);
        let got = routed_component(&triggers, &path);
        if got != Some(API_COMPONENT) {
            wrong.push(format!(
                "{} {} ({path}) goes to {got:?}",
                def.method, def.path
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "spin.toml routes miss API paths:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn webhooks_reach_the_api_component_and_other_paths_the_static_files() {
    let m = manifest();
    let triggers = triggers(&m);
    assert_eq!(
        routed_component(&triggers, "/webhooks/github"),
        Some(API_COMPONENT)
    );
    let web = routed_component(&triggers, "/index.html").expect("no component serves /index.html");
    assert_ne!(web, API_COMPONENT, "static files should not go to the API");
    let files = table(table(&m, "component"), web)
        .get("files")
        .and_then(Value::as_array)
        .expect("the web component has no files");
    assert!(
        files
            .iter()
            .any(|f| f.get("source").and_then(Value::as_str) == Some("web/public")),
        "web/public is not served: {files:?}"
    );
}

#[test]
fn route_resolution_prefers_an_exact_route_then_the_longest_wildcard() {
    let t = vec![
        ("/...".to_owned(), "web".to_owned()),
        ("/v1/...".to_owned(), "api".to_owned()),
        ("/health".to_owned(), "api".to_owned()),
    ];
    assert_eq!(routed_component(&t, "/health"), Some("api"));
    assert_eq!(routed_component(&t, "/healthz"), Some("web"));
    assert_eq!(routed_component(&t, "/v1"), Some("api"));
    assert_eq!(
        routed_component(&t, "/v1/projects/x/files/a/b"),
        Some("api")
    );
    assert_eq!(routed_component(&t, "/v10"), Some("web"));
    assert_eq!(
        example_path("/v1/projects/{id}/files/{*path}"),
        "/v1/projects/prj_123/files/dir/file.txt"
    );
}

#[test]
fn every_core_variable_is_declared_and_mapped_into_the_api_component() {
    let m = manifest();
    let mapped = table(api_component(&m), "variables");
    let mut problems = Vec::new();
    for (name, _) in VARIABLES {
        let spin = name.to_ascii_lowercase();
        match app_variable(&m, &spin) {
            None => problems.push(format!("{spin}: not in [variables]")),
            Some(v) => {
                let required = v.get("required").and_then(Value::as_bool).unwrap_or(false);
                if required == v.contains_key("default") {
                    problems.push(format!(
                        "{spin}: needs exactly one of `default` or `required = true`"
                    ));
                }
            }
        }
        let want = format!("{{{{ {spin} }}}}");
        match mapped.get(&spin).and_then(Value::as_str) {
            Some(v) if v == want => {}
            other => problems.push(format!(
                "{spin}: [component.{API_COMPONENT}.variables] has {other:?}, want {want:?}"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "spin.toml variables:\n{}",
        problems.join("\n")
    );
}

#[test]
fn secret_variables_are_marked_secret() {
    let m = manifest();
    let mut problems = Vec::new();
    for (name, secret) in VARIABLES {
        let spin = name.to_ascii_lowercase();
        let Some(v) = app_variable(&m, &spin) else {
            continue;
        };
        let marked = v.get("secret").and_then(Value::as_bool).unwrap_or(false);
        if *secret && !marked {
            problems.push(format!(
                "{spin} is secret in the core but not `secret = true` in spin.toml"
            ));
        }
    }
    let db = app_variable(&m, "database_url").expect("database_url is not declared");
    if db.get("secret").and_then(Value::as_bool) != Some(true) {
        problems.push("database_url carries a password and must be secret".to_owned());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_database_url_reaches_the_component_and_its_host_is_allowed() {
    let m = manifest();
    let c = api_component(&m);
    assert_eq!(
        table(c, "variables")
            .get("database_url")
            .and_then(Value::as_str),
        Some("{{ database_url }}")
    );
    let hosts: Vec<&str> = c
        .get("allowed_outbound_hosts")
        .and_then(Value::as_array)
        .expect("allowed_outbound_hosts missing")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        hosts.iter().any(|h| h.starts_with("postgres://")),
        "no postgres:// outbound host in {hosts:?}"
    );
    for h in &hosts {
        if let Some(inner) = h.split("{{").nth(1).and_then(|r| r.split("}}").next()) {
            assert!(
                app_variable(&m, inner.trim()).is_some(),
                "{h} uses an undeclared variable"
            );
        }
    }
}

#[test]
fn the_key_value_store_is_declared() {
    let m = manifest();
    let stores = api_component(&m)
        .get("key_value_stores")
        .and_then(Value::as_array)
        .expect("key_value_stores missing");
    assert!(
        stores.iter().any(|s| s.as_str() == Some("default")),
        "the adapter opens the `default` store: {stores:?}"
    );
}

#[test]
fn the_api_component_runs_the_built_wasm() {
    let m = manifest();
    assert_eq!(
        m.get("spin_manifest_version").and_then(Value::as_integer),
        Some(2)
    );
    let source = api_component(&m).get("source").and_then(Value::as_str);
    assert_eq!(
        source,
        Some("target/spin/wasm32-wasip2/release/everjust_spin.wasm")
    );
}

#[test]
fn the_oidc_issuer_and_token_endpoint_origins_are_allowed_outbound_hosts() {
    // Discovery and the default JWKS URL are on the issuer's origin; the token
    // endpoint (from discovery) or OIDC_JWKS_URL may be on another (Google).
    let m = manifest();
    let hosts: Vec<&str> = api_component(&m)
        .get("allowed_outbound_hosts")
        .and_then(Value::as_array)
        .expect("allowed_outbound_hosts missing")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for var in ["oidc_origin", "oidc_token_origin"] {
        let want = format!("{{{{ {var} }}}}");
        assert!(hosts.contains(&want.as_str()), "{want} not in {hosts:?}");
        assert!(app_variable(&m, var).is_some(), "{var} is not declared");
    }
}
