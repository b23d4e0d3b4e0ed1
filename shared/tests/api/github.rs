//! GitHub sync in-process: the router against a small stateful fake of the
//! GitHub REST API (installations, repositories, refs, commits, trees,
//! blobs, contents) behind the HTTP port. The end-to-end suite runs the same
//! flows against tests/fakes/github.mjs over real HTTP.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use base64::Engine as _;
use bytes::Bytes;
use everjust_core::github::app::parse_key;
use everjust_core::github::webhook::sign;
use everjust_core::ports::http_client::HttpError;
use everjust_core::ports::{Clock, HttpClient};
use futures_channel::oneshot;
use jwt_compact::alg::{Rsa, RsaPublicKey};
use jwt_compact::{AlgorithmExt, UntrustedToken};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{Res, TestApp};

const KEY_PKCS1: &str = include_str!("../../../tests/fakes/github-app-test-key.pem");
const KEY_PKCS8: &str = include_str!("../../../tests/fakes/github-app-test-key.pk8.pem");
const APP_ID: &str = "4242";
const SECRET: &str = "webhook-secret-for-tests";
const API: &str = "http://github.test";
const CLIENT_ID: &str = "Iv1.fakeclient";
const CLIENT_SECRET: &str = "oauth-secret-for-tests";
/// The test clock's start (helpers::TestApp).
const START_SECS: i64 = 1_780_000_000;

// ------------------------------------------------------------------ the fake

#[derive(Clone)]
struct Commit {
    tree: String,
    parents: Vec<String>,
    message: String,
}

struct Repo {
    id: i64,
    owner: String,
    name: String,
    installation: i64,
    default_branch: String,
    refs: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    installations: HashMap<i64, (String, String)>,
    tokens: HashMap<String, i64>,
    token_n: u32,
    repos: Vec<Repo>,
    blobs: HashMap<String, Vec<u8>>,
    /// tree sha -> path -> (mode, blob sha)
    trees: HashMap<String, BTreeMap<String, (String, String)>>,
    commits: HashMap<String, Commit>,
    /// (method, path) of every call
    log: Vec<(String, String)>,
    /// Answer every call with this status (GitHub down), or rate-limit.
    down: Option<u16>,
    /// A secondary rate limit: 403 with this retry-after.
    rate_limited: Option<u64>,
    /// The primary limit is used up until this reset (unix seconds): 403
    /// with x-ratelimit-remaining 0.
    exhausted_until: Option<i64>,
    /// Before the next ref update, someone else pushes these files.
    race: Option<Vec<(String, Option<Vec<u8>>)>>,
    /// OAuth codes, then user-to-server tokens, of GitHub users.
    codes: HashMap<String, Grant>,
    user_tokens: HashMap<String, Grant>,
}

/// A GitHub user: the installations they reach, and those whose account
/// they control (their own account, or an organisation they administer).
#[derive(Clone)]
struct Grant {
    reach: Vec<i64>,
    controls: Vec<i64>,
}

fn sha(kind: &str, data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update(data);
    h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..40]
        .to_owned()
}

#[derive(Default)]
pub struct FakeGithub {
    state: RefCell<State>,
    key: Option<RsaPublicKey>,
    pub exchanges: Cell<u32>,
    /// The next blob read says so on the first channel and waits for the
    /// second (a change made in the project while a sync is under way).
    blob_gate: RefCell<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

type Reply = (u16, Vec<(&'static str, String)>, Value);

fn reply(status: u16, v: Value) -> Reply {
    (status, Vec::new(), v)
}

fn msg(status: u16, m: &str) -> Reply {
    reply(status, json!({ "message": m }))
}

impl FakeGithub {
    fn new() -> Rc<Self> {
        let key = parse_key(KEY_PKCS1).expect("test key").to_public_key();
        Rc::new(Self {
            key: Some(key),
            ..Default::default()
        })
    }

    fn add_installation(&self, id: i64, login: &str, kind: &str) {
        self.state
            .borrow_mut()
            .installations
            .insert(id, (login.into(), kind.into()));
    }

    /// User-to-server tokens not revoked.
    fn live_user_tokens(&self) -> usize {
        self.state.borrow().user_tokens.len()
    }

    /// An OAuth code of a GitHub user who controls `installations`.
    fn grant(&self, installations: &[i64]) -> String {
        self.grant_as(installations, installations)
    }

    /// An OAuth code of a GitHub user who reaches `reach` (as a
    /// collaborator, a member) and controls `controls`.
    fn grant_as(&self, reach: &[i64], controls: &[i64]) -> String {
        let mut s = self.state.borrow_mut();
        let code = format!("code{:016x}", s.codes.len() + s.user_tokens.len() + 1);
        let grant = Grant {
            reach: reach.to_vec(),
            controls: controls.to_vec(),
        };
        s.codes.insert(code.clone(), grant);
        code
    }

    fn add_repo(&self, installation: i64, owner: &str, name: &str) -> i64 {
        let mut s = self.state.borrow_mut();
        let id = 1000 + s.repos.len() as i64;
        s.repos.push(Repo {
            id,
            owner: owner.into(),
            name: name.into(),
            installation,
            default_branch: "main".into(),
            refs: BTreeMap::new(),
        });
        id
    }

    fn calls(&self) -> usize {
        self.state.borrow().log.len()
    }

    fn calls_since(&self, n: usize) -> Vec<(String, String)> {
        self.state.borrow().log[n..].to_vec()
    }

    fn head(&self, owner: &str, name: &str, branch: &str) -> Option<String> {
        let s = self.state.borrow();
        s.repos
            .iter()
            .find(|r| r.owner == owner && r.name == name)
            .and_then(|r| r.refs.get(branch).cloned())
    }

    fn commit(&self, sha: &str) -> Commit {
        self.state.borrow().commits[sha].clone()
    }

    /// The files at the head of `branch`.
    fn files(&self, owner: &str, name: &str, branch: &str) -> BTreeMap<String, String> {
        let Some(head) = self.head(owner, name, branch) else {
            return BTreeMap::new();
        };
        let s = self.state.borrow();
        let tree = &s.trees[&s.commits[&head].tree];
        tree.iter()
            .map(|(p, (_, b))| (p.clone(), String::from_utf8_lossy(&s.blobs[b]).into_owned()))
            .collect()
    }

    /// The git mode of `path` at the head of `branch`.
    fn mode(&self, owner: &str, name: &str, branch: &str, path: &str) -> Option<String> {
        let head = self.head(owner, name, branch)?;
        let s = self.state.borrow();
        s.trees[&s.commits[&head].tree]
            .get(path)
            .map(|(m, _)| m.clone())
    }

    fn put_tree(s: &mut State, entries: BTreeMap<String, (String, String)>) -> String {
        let id = sha(
            "tree",
            serde_json::to_string(&entries).expect("json").as_bytes(),
        );
        s.trees.insert(id.clone(), entries);
        id
    }

    fn put_commit(s: &mut State, tree: &str, parents: Vec<String>, message: &str) -> String {
        let id = sha(
            "commit",
            format!("{tree} {parents:?} {message} {}", s.commits.len()).as_bytes(),
        );
        s.commits.insert(
            id.clone(),
            Commit {
                tree: tree.into(),
                parents,
                message: message.into(),
            },
        );
        id
    }

    fn outside_commit(
        s: &mut State,
        repo: usize,
        branch: &str,
        files: &[(String, Option<Vec<u8>>)],
        mode: &str,
    ) -> String {
        let head = s.repos[repo].refs.get(branch).cloned();
        let mut entries = head
            .as_ref()
            .map(|h| s.trees[&s.commits[h].tree].clone())
            .unwrap_or_default();
        for (p, c) in files {
            match c {
                Some(c) => {
                    let b = sha("blob", c);
                    s.blobs.insert(b.clone(), c.clone());
                    entries.insert(p.clone(), (mode.into(), b));
                }
                None => {
                    entries.remove(p);
                }
            }
        }
        let tree = Self::put_tree(s, entries);
        let c = Self::put_commit(s, &tree, head.into_iter().collect(), "outside change");
        s.repos[repo].refs.insert(branch.into(), c.clone());
        c
    }

    /// Someone pushes to the repository outside EverJust; returns the commit.
    fn push(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
        files: &[(&str, Option<&str>)],
    ) -> String {
        self.push_mode(owner, name, branch, files, "100644")
    }

    fn push_mode(
        &self,
        owner: &str,
        name: &str,
        branch: &str,
        files: &[(&str, Option<&str>)],
        mode: &str,
    ) -> String {
        let mut s = self.state.borrow_mut();
        let i = s
            .repos
            .iter()
            .position(|r| r.owner == owner && r.name == name)
            .expect("repo");
        let files: Vec<_> = files
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.map(|c| c.as_bytes().to_vec())))
            .collect();
        Self::outside_commit(&mut s, i, branch, &files, mode)
    }

    /// `GET /user` and `GET /user/memberships/orgs/{org}` as `grant`'s user:
    /// the account of a User installation they control is theirs; they
    /// administer the organisations of those they control and are a member
    /// of those they only reach.
    fn user_call(s: &State, path: &str, grant: &Grant) -> Reply {
        let accounts = |ids: &[i64], kind: &str| {
            ids.iter()
                .filter_map(|id| {
                    s.installations
                        .get(id)
                        .map(|(l, k)| (*id, l.clone(), k.clone()))
                })
                .filter(|(_, _, k)| k == kind)
                .collect::<Vec<_>>()
        };
        if path == "/user" {
            return match accounts(&grant.controls, "User").first() {
                Some((id, login, _)) => reply(200, json!({"id": id * 10, "login": login})),
                None => reply(200, json!({"id": 424_242, "login": "someone-else"})),
            };
        }
        let org = path.rsplit('/').next().unwrap_or("");
        let has = |ids: &[i64]| {
            accounts(ids, "Organization")
                .iter()
                .any(|(_, l, _)| l.eq_ignore_ascii_case(org))
        };
        if has(&grant.controls) {
            reply(
                200,
                json!({"state": "active", "role": "admin", "organization": {"login": org}}),
            )
        } else if has(&grant.reach) {
            reply(
                200,
                json!({"state": "active", "role": "member", "organization": {"login": org}}),
            )
        } else {
            msg(404, "Not Found")
        }
    }

    fn check_jwt(&self, token: &str) -> bool {
        let Ok(t) = UntrustedToken::new(token) else {
            return false;
        };
        let Some(key) = &self.key else { return false };
        let Ok(claims) = Rsa::rs256().validator::<Value>(key).validate(&t) else {
            return false;
        };
        let c = claims.claims();
        let (Some(iat), Some(exp)) = (c.issued_at, c.expiration) else {
            return false;
        };
        c.custom["iss"] == APP_ID && exp > iat && (exp - iat).num_seconds() <= 660
    }

    fn handle(&self, method: &str, path: &str, auth: &str, body: &Value) -> Reply {
        let mut s = self.state.borrow_mut();
        s.log.push((method.into(), path.into()));
        if let Some(status) = s.down {
            return msg(status, "Service unavailable");
        }
        if let Some(reset) = s.exhausted_until {
            return (
                403,
                vec![
                    ("x-ratelimit-remaining", "0".into()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                json!({"message": "API rate limit exceeded for installation."}),
            );
        }
        if let Some(secs) = s.rate_limited {
            return (
                403,
                vec![
                    ("retry-after", secs.to_string()),
                    ("x-ratelimit-remaining", "10".into()),
                ],
                json!({"message": "You have exceeded a secondary rate limit."}),
            );
        }
        let token = auth.strip_prefix("Bearer ").unwrap_or("");
        if path == "/login/oauth/access_token" && method == "POST" {
            if body["client_id"] != CLIENT_ID || body["client_secret"] != CLIENT_SECRET {
                return reply(200, json!({"error": "incorrect_client_credentials"}));
            }
            let code = body["code"].as_str().unwrap_or("");
            let Some(reach) = s.codes.remove(code) else {
                return reply(
                    200,
                    json!({"error": "bad_verification_code", "error_description": "The code passed is incorrect or expired."}),
                );
            };
            let t = format!("ghu_fake_{code}");
            s.user_tokens.insert(t.clone(), reach);
            return reply(
                200,
                json!({"access_token": t, "token_type": "bearer", "scope": ""}),
            );
        }
        if method == "DELETE" && path == format!("/applications/{CLIENT_ID}/token") {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
            if auth != format!("Basic {basic}") {
                return msg(401, "Bad credentials");
            }
            let t = body["access_token"].as_str().unwrap_or("");
            return match s.user_tokens.remove(t) {
                Some(_) => (204, Vec::new(), Value::Null),
                None => msg(404, "Not Found"),
            };
        }
        if path == "/user" || path.starts_with("/user/memberships/") {
            let Some(grant) = s.user_tokens.get(token).cloned() else {
                return msg(401, "Bad credentials");
            };
            return Self::user_call(&s, path, &grant);
        }
        if path.starts_with("/user/installations?") && method == "GET" {
            let Some(reach) = s.user_tokens.get(token).map(|g| g.reach.clone()) else {
                return msg(401, "Bad credentials");
            };
            let list: Vec<Value> = reach
                .iter()
                .filter_map(|id| {
                    let (login, kind) = s.installations.get(id)?;
                    Some(json!({"id": id, "account": {"login": login, "id": id * 10, "type": kind}, "suspended_at": null}))
                })
                .collect();
            return reply(
                200,
                json!({"total_count": list.len(), "installations": list}),
            );
        }
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|x| {
                percent_encoding::percent_decode_str(x)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if segs[0] == "app" {
            drop(s);
            if !self.check_jwt(token) {
                return msg(401, "A JSON web token could not be decoded");
            }
            let mut s = self.state.borrow_mut();
            let id: i64 = segs.get(2).and_then(|x| x.parse().ok()).unwrap_or(0);
            let Some((login, kind)) = s.installations.get(&id).cloned() else {
                return msg(404, "Not Found");
            };
            return match (method, segs.get(3).copied()) {
                ("GET", None) => reply(
                    200,
                    json!({"id": id, "account": {"login": login, "id": id * 10, "type": kind}, "suspended_at": null}),
                ),
                ("POST", Some("access_tokens")) => {
                    s.token_n += 1;
                    self.exchanges.set(self.exchanges.get() + 1);
                    let t = format!("ghs_fake_{id}_{}", s.token_n);
                    s.tokens.insert(t.clone(), id);
                    // Tokens live an hour from the test clock's start.
                    let exp = chrono::DateTime::from_timestamp(START_SECS + 3600, 0).expect("time");
                    reply(201, json!({"token": t, "expires_at": exp.to_rfc3339()}))
                }
                _ => msg(404, "Not Found"),
            };
        }
        let Some(&inst) = s.tokens.get(token) else {
            return msg(401, "Bad credentials");
        };
        if segs[0] == "orgs" && method == "POST" {
            let (login, kind) = s.installations[&inst].clone();
            if kind != "Organization" || !login.eq_ignore_ascii_case(segs[1]) {
                return msg(403, "Resource not accessible by integration");
            }
            drop(s);
            let id = self.add_repo(inst, &login, body["name"].as_str().unwrap_or(""));
            return reply(
                201,
                json!({"id": id, "name": body["name"], "owner": {"login": login}, "default_branch": "main"}),
            );
        }
        if segs[0] != "repos" || segs.len() < 3 {
            return msg(404, "Not Found");
        }
        let Some(ri) = s.repos.iter().position(|r| {
            r.owner.eq_ignore_ascii_case(segs[1])
                && r.name.eq_ignore_ascii_case(segs[2])
                && r.installation == inst
        }) else {
            return msg(404, "Not Found");
        };
        let empty = s.repos[ri].refs.is_empty();
        let rest: Vec<&str> = segs[3..].to_vec();
        match (method, rest.as_slice()) {
            ("GET", []) => {
                let r = &s.repos[ri];
                reply(
                    200,
                    json!({"id": r.id, "name": r.name, "full_name": format!("{}/{}", r.owner, r.name), "owner": {"login": r.owner}, "default_branch": r.default_branch}),
                )
            }
            ("PUT", ["contents", path @ ..]) => {
                let branch = body["branch"].as_str().unwrap_or("main").to_owned();
                if s.repos[ri].refs.contains_key(&branch) {
                    return msg(422, "only empty repositories in this fake");
                }
                let content = base64::engine::general_purpose::STANDARD
                    .decode(body["content"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                let files = vec![(path.join("/"), Some(content.clone()))];
                let c = Self::outside_commit(&mut s, ri, &branch, &files, "100644");
                let tree = s.commits[&c].tree.clone();
                if let Some(m) = body["message"].as_str() {
                    s.commits.get_mut(&c).expect("commit").message = m.into();
                }
                reply(
                    201,
                    json!({"content": {"sha": sha("blob", &content), "path": path.join("/")}, "commit": {"sha": c, "tree": {"sha": tree}}}),
                )
            }
            _ if empty => msg(409, "Git Repository is empty."),
            ("GET", ["git", "ref", "heads", branch @ ..]) => {
                match s.repos[ri].refs.get(&branch.join("/")) {
                    Some(c) => reply(
                        200,
                        json!({"ref": format!("refs/heads/{}", branch.join("/")), "object": {"sha": c, "type": "commit"}}),
                    ),
                    None => msg(404, "Not Found"),
                }
            }
            ("GET", ["git", "commits", c]) => match s.commits.get(*c) {
                Some(cm) => reply(
                    200,
                    json!({"sha": c, "tree": {"sha": cm.tree}, "parents": cm.parents.iter().map(|p| json!({"sha": p})).collect::<Vec<_>>(), "message": cm.message}),
                ),
                None => msg(404, "Not Found"),
            },
            ("GET", ["git", "trees", t]) => {
                let t = t.split('?').next().unwrap_or("");
                match s.trees.get(t) {
                    Some(entries) => reply(
                        200,
                        json!({"sha": t, "truncated": false, "tree": entries.iter().map(|(p, (m, b))| json!({"path": p, "mode": m, "type": if m == "160000" { "commit" } else { "blob" }, "sha": b, "size": s.blobs.get(b).map_or(0, Vec::len)})).collect::<Vec<_>>()}),
                    ),
                    None => msg(404, "Not Found"),
                }
            }
            ("GET", ["git", "blobs", b]) => match s.blobs.get(*b) {
                Some(c) => reply(
                    200,
                    json!({"sha": b, "encoding": "base64", "size": c.len(), "content": base64::engine::general_purpose::STANDARD.encode(c)}),
                ),
                None => msg(404, "Not Found"),
            },
            ("POST", ["git", "blobs"]) => {
                let c = base64::engine::general_purpose::STANDARD
                    .decode(body["content"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                let b = sha("blob", &c);
                s.blobs.insert(b.clone(), c);
                reply(201, json!({"sha": b}))
            }
            ("POST", ["git", "trees"]) => {
                let mut entries = match body["base_tree"].as_str() {
                    Some(b) => match s.trees.get(b) {
                        Some(t) => t.clone(),
                        None => return msg(422, "base_tree not found"),
                    },
                    None => BTreeMap::new(),
                };
                for e in body["tree"].as_array().into_iter().flatten() {
                    let p = e["path"].as_str().unwrap_or("").to_owned();
                    match e["sha"].as_str() {
                        Some(b) if s.blobs.contains_key(b) => {
                            entries.insert(
                                p,
                                (e["mode"].as_str().unwrap_or("100644").into(), b.into()),
                            );
                        }
                        Some(_) => return msg(422, "blob not found"),
                        None => {
                            if entries.remove(&p).is_none() {
                                return msg(422, "path to delete not in base tree");
                            }
                        }
                    }
                }
                let t = Self::put_tree(&mut s, entries);
                reply(201, json!({"sha": t}))
            }
            ("POST", ["git", "commits"]) => {
                let tree = body["tree"].as_str().unwrap_or("");
                if !s.trees.contains_key(tree) {
                    return msg(422, "tree not found");
                }
                let parents: Vec<String> = body["parents"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect();
                if body["author"]["email"].as_str().is_none() {
                    return msg(422, "author needed in this fake");
                }
                let c = Self::put_commit(
                    &mut s,
                    tree,
                    parents,
                    body["message"].as_str().unwrap_or(""),
                );
                reply(201, json!({"sha": c}))
            }
            ("PATCH", ["git", "refs", "heads", branch @ ..]) => {
                let branch = branch.join("/");
                if let Some(files) = s.race.take() {
                    Self::outside_commit(&mut s, ri, &branch, &files, "100644");
                }
                let Some(cur) = s.repos[ri].refs.get(&branch).cloned() else {
                    return msg(422, "Reference does not exist");
                };
                let new = body["sha"].as_str().unwrap_or("").to_owned();
                // Fast-forward: the current head is an ancestor of the new commit.
                let mut todo = vec![new.clone()];
                let mut ff = false;
                while let Some(c) = todo.pop() {
                    if c == cur {
                        ff = true;
                        break;
                    }
                    if let Some(cm) = s.commits.get(&c) {
                        todo.extend(cm.parents.clone());
                    }
                }
                if !ff && body["force"] != json!(true) {
                    return msg(422, "Update is not a fast forward");
                }
                s.repos[ri].refs.insert(branch.clone(), new.clone());
                reply(
                    200,
                    json!({"ref": format!("refs/heads/{branch}"), "object": {"sha": new}}),
                )
            }
            ("POST", ["git", "refs"]) => {
                let r = body["ref"].as_str().unwrap_or("");
                let Some(branch) = r.strip_prefix("refs/heads/") else {
                    return msg(422, "bad ref");
                };
                if s.repos[ri].refs.contains_key(branch) {
                    return msg(422, "Reference already exists");
                }
                s.repos[ri]
                    .refs
                    .insert(branch.into(), body["sha"].as_str().unwrap_or("").into());
                reply(201, json!({"ref": r}))
            }
            _ => msg(404, "Not Found"),
        }
    }
}

#[async_trait::async_trait(?Send)]
impl HttpClient for FakeGithub {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let uri = req.uri().clone();
        if uri.host() != Some("github.test") {
            return Err(HttpError("only the GitHub fake here".into()));
        }
        assert!(
            req.headers().contains_key("user-agent"),
            "GitHub requires a user agent"
        );
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = serde_json::from_slice(req.body()).unwrap_or(Value::Null);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        if req.method() == http::Method::GET && path.contains("/git/blobs/") {
            let gate = self.blob_gate.borrow_mut().take();
            if let Some((reached, go_on)) = gate {
                let _ = reached.send(());
                let _ = go_on.await;
            }
        }
        let (status, headers, v) = self.handle(req.method().as_str(), path, &auth, &body);
        let mut b = http::Response::builder().status(status);
        for (k, val) in headers {
            b = b.header(k, val);
        }
        Ok(b.body(Bytes::from(v.to_string())).expect("response"))
    }
}

// ------------------------------------------------------------------ helpers

fn vars<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("GITHUB_APP_ID", APP_ID),
        ("GITHUB_APP_PRIVATE_KEY", KEY_PKCS1),
        ("GITHUB_WEBHOOK_SECRET", SECRET),
        ("GITHUB_API_URL", API),
        ("GITHUB_CLIENT_ID", CLIENT_ID),
        ("GITHUB_CLIENT_SECRET", CLIENT_SECRET),
        ("GITHUB_OAUTH_URL", API),
        ("GITHUB_COMMIT_AUTHOR_NAME", "EverJust Bot"),
        ("GITHUB_COMMIT_AUTHOR_EMAIL", "bot@everjust.test"),
    ];
    v.extend_from_slice(extra);
    v
}

struct Gh {
    app: TestApp,
    fake: Rc<FakeGithub>,
    token: String,
    project: String,
}

const INST: i64 = 77;

/// A fresh access token of the user `email` (signed up with the test password).
async fn log_in(app: &TestApp, email: &str) -> String {
    let r = app
        .json(
            "POST",
            "/v1/auth/login",
            None,
            json!({"email": email, "password": crate::helpers::PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    r.json()["access_token"].as_str().expect("token").to_owned()
}

/// A state for `token`'s user to send to GitHub (`POST /v1/github/link-state`).
async fn link_state(app: &TestApp, token: &str) -> String {
    let r = app
        .json("POST", "/v1/github/link-state", Some(token), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    r.json()["state"].as_str().expect("state").to_owned()
}

/// A user with a linked installation on the organisation `acme`, a project,
/// and an empty repository acme/site.
async fn setup_with(extra: &[(&str, &str)]) -> Gh {
    let fake = FakeGithub::new();
    fake.add_installation(INST, "acme", "Organization");
    fake.add_repo(INST, "acme", "site");
    let app = TestApp::build(&vars(extra), fake.clone()).await;
    let (token, _, _) = app.signup("ada@example.com").await;
    let project = app.project(&token, "site").await;
    let r = app
        .json(
            "POST",
            "/v1/github/installations",
            Some(&token),
            json!({"installation_id": INST, "code": fake.grant(&[INST]), "state": link_state(&app, &token).await}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    Gh {
        app,
        fake,
        token,
        project,
    }
}

async fn setup() -> Gh {
    setup_with(&[]).await
}

impl Gh {
    /// A fresh access token (after the clock moved past its 15 minutes).
    async fn login(&mut self) {
        self.token = log_in(&self.app, "ada@example.com").await;
    }

    async fn put(&self, path: &str, content: &str) {
        let r = self
            .app
            .request(
                "PUT",
                &format!("/v1/projects/{}/files/{path}", self.project),
                Some(&self.token),
                None,
                content.to_owned(),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.json());
    }

    async fn delete(&self, path: &str) {
        let r = self
            .app
            .request(
                "DELETE",
                &format!("/v1/projects/{}/files/{path}", self.project),
                Some(&self.token),
                None,
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 204);
    }

    /// The project's files: path -> content.
    async fn files(&self) -> BTreeMap<String, String> {
        let r = self
            .app
            .get(
                &format!("/v1/projects/{}/files", self.project),
                Some(&self.token),
            )
            .await;
        let mut out = BTreeMap::new();
        for f in r.json()["items"].as_array().expect("items") {
            let p = f["path"].as_str().expect("path");
            let c = self
                .app
                .get(
                    &format!("/v1/projects/{}/files/{p}", self.project),
                    Some(&self.token),
                )
                .await;
            out.insert(p.to_owned(), String::from_utf8_lossy(&c.body).into_owned());
        }
        out
    }

    async fn connect(&self) -> Value {
        let r = self
            .app
            .json(
                "POST",
                &format!("/v1/projects/{}/github", self.project),
                Some(&self.token),
                json!({"installation_id": INST, "repository": "acme/site"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        r.json()
    }

    async fn push(&self, body: Value) -> Res {
        self.app
            .json(
                "POST",
                &format!("/v1/projects/{}/github/push", self.project),
                Some(&self.token),
                body,
            )
            .await
    }

    async fn link(&self) -> Value {
        let r = self
            .app
            .get(
                &format!("/v1/projects/{}/github", self.project),
                Some(&self.token),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        r.json()
    }

    async fn deliver(&self, event: &str, id: &str, payload: &Value) -> Res {
        let body = payload.to_string();
        self.deliver_raw(
            event,
            id,
            body.as_bytes(),
            Some(&sign(SECRET, body.as_bytes())),
            None,
        )
        .await
    }

    async fn deliver_raw(
        &self,
        event: &str,
        id: &str,
        body: &[u8],
        sig256: Option<&str>,
        sig1: Option<&str>,
    ) -> Res {
        let mut b = http::Request::post("/webhooks/github")
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", id);
        if let Some(s) = sig256 {
            b = b.header("x-hub-signature-256", s);
        }
        if let Some(s) = sig1 {
            b = b.header("x-hub-signature", s);
        }
        let res = everjust_core::handle(
            &self.app.ports,
            b.body(Bytes::copy_from_slice(body)).expect("req"),
            everjust_core::Meta::default(),
        )
        .await;
        let (parts, body) = res.into_parts();
        Res {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.as_bytes().cloned().unwrap_or_default(),
        }
    }

    fn push_payload(&self, branch: &str, after: &str, repo: &str) -> Value {
        let repo_id = self
            .fake
            .state
            .borrow()
            .repos
            .iter()
            .find(|r| r.name == repo)
            .map_or(999_999, |r| r.id);
        json!({
            "ref": format!("refs/heads/{branch}"),
            "before": "0000000000000000000000000000000000000000",
            "after": after,
            "repository": {"id": repo_id, "name": repo, "full_name": format!("acme/{repo}"), "owner": {"login": "acme", "name": "acme"}},
            "installation": {"id": INST},
            "pusher": {"name": "octocat", "email": "octocat@example.com"},
            "sender": {"login": "octocat"},
            "head_commit": {"id": after, "message": "outside change"},
            "commits": [{"id": after, "added": [], "modified": [], "removed": []}],
        })
    }

    async fn deliveries(&self) -> i64 {
        self.app.count("webhook_deliveries").await
    }

    async fn delivery_result(&self, id: &str) -> Option<String> {
        self.app
            .ports
            .sql
            .query_opt(
                "SELECT result FROM webhook_deliveries WHERE delivery_id = $1",
                &[id.into()],
            )
            .await
            .expect("query")
            .and_then(|r| r.opt_text("result").expect("result"))
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let r = self.app.get("/v1/audit?limit=200", Some(&self.token)).await;
        r.json()["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["action"] == action)
            .collect()
    }
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

// ------------------------------------------------------------------ auth

#[test]
fn app_key_parses_as_pkcs1_and_pkcs8_and_the_jwt_is_short_lived_rs256() {
    let a = parse_key(KEY_PKCS1).expect("pkcs1");
    let b = parse_key(KEY_PKCS8).expect("pkcs8");
    assert_eq!(a, b);
    // Literal \n sequences, as some secret stores keep PEM.
    assert!(parse_key(&KEY_PKCS1.replace('\n', "\\n")).is_ok());
    assert!(parse_key(
        "-----BEGIN RSA PRIVATE KEY-----\nnot base64!\n-----END RSA PRIVATE KEY-----"
    )
    .is_err());
    let cfg = everjust_core::config::GithubConfig {
        app_id: APP_ID.into(),
        private_key_pem: KEY_PKCS8.into(),
        webhook_secret: SECRET.into(),
        api_url: API.into(),
        oauth: None,
        app_slug: None,
        commit_author_name: "x".into(),
        commit_author_email: "x@y".into(),
    };
    let now = 1_780_000_000_000;
    let jwt = everjust_core::github::app::app_jwt(&cfg, now).expect("jwt");
    let t = UntrustedToken::new(&jwt).expect("token");
    assert_eq!(t.algorithm(), "RS256");
    let claims = Rsa::rs256()
        .validator::<Value>(&a.to_public_key())
        .validate(&t)
        .expect("signed with the app key")
        .claims()
        .clone();
    assert_eq!(claims.custom["iss"], APP_ID);
    assert_eq!(
        claims.issued_at.expect("iat").timestamp(),
        now / 1000 - 60,
        "iat 60 s back"
    );
    let exp = claims.expiration.expect("exp").timestamp();
    assert!(
        exp > now / 1000 && exp - (now / 1000 - 60) <= 600,
        "at most 10 minutes"
    );
}

#[tokio::test]
async fn installation_tokens_are_cached_until_five_minutes_before_expiry() {
    let mut g = setup().await;
    g.put("a.txt", "one").await;
    g.connect().await;
    assert_eq!(g.fake.exchanges.get(), 1);
    g.put("a.txt", "two").await;
    assert_eq!(g.push(json!({})).await.status, 200);
    assert_eq!(g.fake.exchanges.get(), 1, "the cached token is reused");
    // The token lives an hour: at 54 minutes it is still used, at 56 renewed.
    g.app.clock.advance_ms(54 * 60_000);
    g.login().await;
    g.put("a.txt", "three").await;
    assert_eq!(g.push(json!({})).await.status, 200);
    assert_eq!(g.fake.exchanges.get(), 1);
    g.app.clock.advance_ms(2 * 60_000);
    g.login().await;
    g.put("a.txt", "four").await;
    assert_eq!(g.push(json!({})).await.status, 200);
    assert_eq!(g.fake.exchanges.get(), 2, "renewed 5 minutes before expiry");
}

#[tokio::test]
async fn a_refused_cached_token_is_replaced_once() {
    let g = setup().await;
    g.put("a.txt", "one").await;
    g.connect().await;
    g.fake.state.borrow_mut().tokens.clear(); // GitHub revoked it
    g.put("a.txt", "two").await;
    let r = g.push(json!({})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(g.fake.exchanges.get(), 2);
}

#[tokio::test]
async fn linking_an_installation_checks_it_with_github() {
    let g = setup().await;
    let list = g
        .app
        .get("/v1/github/installations", Some(&g.token))
        .await
        .json();
    assert_eq!(list["items"][0]["account"], "acme");
    assert_eq!(list["items"][0]["account_type"], "Organization");
    let link = |who: &str, id: i64, code: String| {
        let who = who.to_owned();
        let app = &g.app;
        async move {
            let state = link_state(app, &who).await;
            app.json(
                "POST",
                "/v1/github/installations",
                Some(&who),
                json!({"installation_id": id, "code": code, "state": state}),
            )
            .await
        }
    };
    let (eve, _, _) = g.app.signup("eve@example.com").await;

    // The takeover this guards against: an installation nobody holds yet
    // (recorded by its webhook), claimed by someone whose GitHub account
    // cannot reach it. Naming its id and account is not enough.
    g.fake.add_installation(88, "victim-org", "Organization");
    let r = link(&eve, 88, g.fake.grant(&[])).await;
    r.problem(403, "github_installation_mismatch");
    // Reaching it is not controlling it: eve, a collaborator on one of its
    // repositories (or a plain member of the organisation), is refused; so
    // is a collaborator on a personal account's repository.
    link(&eve, 88, g.fake.grant_as(&[88], &[]))
        .await
        .problem(403, "github_installation_mismatch");
    g.fake.add_installation(66, "victim", "User");
    link(&eve, 66, g.fake.grant_as(&[66], &[]))
        .await
        .problem(403, "github_installation_mismatch");
    assert_eq!(g.app.count("github_installations").await, 1);
    // One that does not exist.
    link(&eve, 99, g.fake.grant(&[]))
        .await
        .problem(403, "github_installation_mismatch");
    // One another user holds already: not found for eve, even with a code
    // that reaches it; GitHub is not asked.
    let calls = g.fake.calls_since(0).len();
    link(&eve, INST, g.fake.grant(&[INST]))
        .await
        .problem(404, "not_found");
    assert_eq!(g.fake.calls_since(0).len(), calls);
    assert_eq!(g.app.count("github_installations").await, 1);
    let theirs = g
        .app
        .get("/v1/github/installations", Some(&eve))
        .await
        .json();
    assert_eq!(theirs["items"], json!([]));
    // And eve cannot connect her project through it.
    let p = g.app.project(&eve, "eve").await;
    let r = g
        .app
        .json(
            "POST",
            &format!("/v1/projects/{p}/github"),
            Some(&eve),
            json!({"installation_id": INST, "repository": "acme/site"}),
        )
        .await;
    r.problem(404, "not_found");
    assert_eq!(g.app.count("github_links").await, 0);

    // A code works once; every user token it gave was revoked after use.
    let code = g.fake.grant(&[88]);
    assert_eq!(link(&eve, 88, code.clone()).await.status, 201);
    assert_eq!(g.fake.live_user_tokens(), 0);
    link(&g.token, 88, code).await.problem(404, "not_found");
    link(&eve, 88, "0123456789abcdef0123".into())
        .await
        .problem(400, "invalid_github_code");
    // Codes that are not codes never reach GitHub.
    let calls = g.fake.calls_since(0).len();
    for bad in ["", "with space", "caf\u{e9}", &"a".repeat(300)] {
        link(&g.token, 89, bad.to_owned())
            .await
            .problem(400, "invalid_github_code");
    }
    assert_eq!(g.fake.calls_since(0).len(), calls);
    // Bad bodies: the old shape (an account name, no code) included.
    for body in [
        json!({"installation_id": "77", "code": "x"}),
        json!({"installation_id": 88}),
        json!({"installation_id": 88, "account": "victim-org"}),
    ] {
        g.app
            .json("POST", "/v1/github/installations", Some(&g.token), body)
            .await
            .problem(400, "invalid_body");
    }
    assert_eq!(g.app.count("github_installations").await, 2);
}

#[tokio::test]
async fn without_an_oauth_client_installations_cannot_be_linked() {
    let fake = FakeGithub::new();
    fake.add_installation(INST, "acme", "Organization");
    let vars: Vec<_> = vars(&[])
        .into_iter()
        .filter(|(k, _)| !k.starts_with("GITHUB_CLIENT_"))
        .collect();
    let app = TestApp::build(&vars, fake.clone()).await;
    let (t, _, _) = app.signup("ada@example.com").await;
    app.json(
        "POST",
        "/v1/github/installations",
        Some(&t),
        json!({"installation_id": INST, "code": fake.grant(&[INST]), "state": "s"}),
    )
    .await
    .problem(503, "github_oauth_not_configured");
    app.json("POST", "/v1/github/link-state", Some(&t), json!({}))
        .await
        .problem(503, "github_oauth_not_configured");
    assert_eq!(app.count("github_installations").await, 0);
}

/// Without an installation id (an App installed already, authorized
/// through `authorize_url`, whose redirect names none), a link takes every
/// installation the code's GitHub user controls and nobody else holds.
#[tokio::test]
async fn a_link_without_an_installation_id_takes_every_one_the_user_controls() {
    let g = setup().await;
    let (bob, _, _) = g.app.signup("bob@example.com").await;
    g.fake.add_installation(501, "bob", "User");
    g.fake.add_installation(502, "bob-org", "Organization");
    g.fake
        .add_installation(503, "where-bob-is-a-member", "Organization");
    let link = |code: String, state: String| {
        let (app, bob) = (&g.app, bob.clone());
        async move {
            app.json(
                "POST",
                "/v1/github/installations",
                Some(&bob),
                json!({"code": code, "state": state}),
            )
            .await
        }
    };
    // Nothing controlled: refused, nothing linked.
    let state = link_state(&g.app, &bob).await;
    link(g.fake.grant_as(&[503], &[]), state)
        .await
        .problem(403, "github_installation_mismatch");
    // Only one another user holds (ada's acme): not found.
    let state = link_state(&g.app, &bob).await;
    link(g.fake.grant(&[INST]), state)
        .await
        .problem(404, "not_found");
    assert_eq!(g.app.count("github_installations").await, 1);
    // Bob's own account and his organisation; not the one he is only a
    // member of, nor ada's.
    let state = link_state(&g.app, &bob).await;
    let code = g.fake.grant_as(&[501, 502, 503, INST], &[501, 502, INST]);
    let r = link(code, state.clone()).await;
    assert_eq!(r.status, 201, "{}", r.json());
    let mut got: Vec<(i64, String)> = r.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["installation_id"].as_i64().expect("id"),
                i["account"].as_str().expect("account").to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![(501, "bob".into()), (502, "bob-org".into())]);
    let listed = g
        .app
        .get("/v1/github/installations", Some(&bob))
        .await
        .json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    let adas = g
        .app
        .get("/v1/github/installations", Some(&g.token))
        .await
        .json();
    assert_eq!(adas["items"][0]["installation_id"], INST, "ada keeps hers");
    // The state was spent by the link.
    link(g.fake.grant_as(&[501], &[501]), state)
        .await
        .problem(400, "invalid_github_state");
}

/// With the App's slug configured, a link starts at the App's install page
/// with the state (where a user both installs the App and links it);
/// without it there is none, and a slug that is not one is refused at
/// start-up.
#[tokio::test]
async fn a_link_state_names_the_apps_install_page_when_its_slug_is_known() {
    let fake = FakeGithub::new();
    let app = TestApp::build(&vars(&[("GITHUB_APP_SLUG", "everjust-dev")]), fake.clone()).await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let started = app
        .json("POST", "/v1/github/link-state", Some(&t), json!({}))
        .await
        .json();
    let state = started["state"].as_str().expect("state");
    assert_eq!(
        started["install_url"],
        json!(format!(
            "{API}/apps/everjust-dev/installations/new?state={state}"
        ))
    );
    let g = setup().await;
    let started = g
        .app
        .json("POST", "/v1/github/link-state", Some(&g.token), json!({}))
        .await
        .json();
    assert_eq!(started["install_url"], Value::Null);
    assert!(started["authorize_url"].is_string());
    let long = "a".repeat(101);
    for bad in ["Everjust", "x/../y", "a b", "app?x=1", long.as_str()] {
        let vars: std::collections::HashMap<String, String> = vars(&[("GITHUB_APP_SLUG", bad)])
            .iter()
            .chain(&[("JWT_SECRET", "test-secret-test-secret-test-secret-0123")])
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let e = everjust_core::Config::from_vars(|k| vars.get(k).cloned()).expect_err("refused");
        assert_eq!(e.name, "GITHUB_APP_SLUG", "{bad:?}");
    }
}

/// A code proves who the GitHub user is, not who sent it to us: a link to
/// our callback carrying an attacker's code (for the attacker's own
/// installation) must not link that installation to the victim who opens
/// it, or the victim's projects would be pushed into the attacker's
/// repositories. The link takes the state the caller started, and
/// nothing reaches GitHub or the database without it.
#[tokio::test]
async fn a_link_takes_the_state_its_caller_started() {
    let mut g = setup().await;
    let (eve, _, _) = g.app.signup("eve@example.com").await;
    g.fake.add_installation(88, "eve-org", "Organization");
    let started = g
        .app
        .json("POST", "/v1/github/link-state", Some(&eve), json!({}))
        .await;
    assert_eq!(started.status, 200, "{}", started.json());
    let started = started.json();
    let eves_state = started["state"].as_str().expect("state").to_owned();
    assert_eq!(started["expires_in"], 1200);
    let authorize = started["authorize_url"].as_str().expect("url");
    assert!(
        authorize.contains("/login/oauth/authorize?client_id=")
            && authorize.ends_with(&format!("&state={eves_state}")),
        "{authorize}"
    );
    // Eve's code for her own installation, and her state, in a link the
    // victim opens: refused, as is the same without a state, with a state
    // that is not one, and with the victim's access token as one.
    let eves_code = g.fake.grant(&[88]);
    let calls = g.fake.calls_since(0).len();
    for state in [
        json!(eves_state),
        json!(null),
        json!("not-a-state"),
        json!(g.token),
    ] {
        let mut body = json!({"installation_id": 88, "code": eves_code});
        if !state.is_null() {
            body["state"] = state;
        }
        g.app
            .json("POST", "/v1/github/installations", Some(&g.token), body)
            .await
            .problem(400, "invalid_github_state");
    }
    assert_eq!(g.fake.calls_since(0).len(), calls, "GitHub was not asked");
    assert_eq!(g.app.count("github_installations").await, 1);
    // A state is good for 20 minutes.
    let late = link_state(&g.app, &g.token).await;
    g.app.clock.advance_ms(21 * 60 * 1000);
    g.login().await;
    g.app
        .json(
            "POST",
            "/v1/github/installations",
            Some(&g.token),
            json!({"installation_id": 88, "code": eves_code, "state": late}),
        )
        .await
        .problem(400, "invalid_github_state");
    // Eve's own link with a state of hers works near its end (her code was
    // never spent), and the state links nothing more after that.
    let eve = log_in(&g.app, "eve@example.com").await;
    let eves_state = link_state(&g.app, &eve).await;
    g.app.clock.advance_ms(14 * 60 * 1000);
    let r = g
        .app
        .json(
            "POST",
            "/v1/github/installations",
            Some(&eve),
            json!({"installation_id": 88, "code": eves_code, "state": eves_state}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    g.fake.add_installation(89, "eve-too", "Organization");
    g.app
        .json(
            "POST",
            "/v1/github/installations",
            Some(&eve),
            json!({"installation_id": 89, "code": g.fake.grant(&[89]), "state": eves_state}),
        )
        .await
        .problem(400, "invalid_github_state");
    assert_eq!(g.app.count("github_installations").await, 2);
}

// ------------------------------------------------------------------ connect and push

#[tokio::test]
async fn connecting_an_empty_repository_makes_the_first_commit_through_the_contents_api() {
    let g = setup().await;
    g.put("index.html", "<h1>hi</h1>").await;
    g.put("src/app.js", "console.log(1)").await;
    let j = g.connect().await;
    assert_eq!(j["repository"], "acme/site");
    assert_eq!(j["branch"], "main");
    assert_eq!(j["sync"]["status"], "ok", "{j}");
    assert_eq!(j["sync"]["pushed"], json!(["index.html", "src/app.js"]));
    assert_eq!(
        g.fake.files("acme", "site", "main"),
        map(&[
            ("index.html", "<h1>hi</h1>"),
            ("src/app.js", "console.log(1)")
        ])
    );
    let log = g.fake.calls_since(0);
    assert!(
        log.iter()
            .any(|(m, p)| m == "PUT" && p.contains("/contents/")),
        "{log:?}"
    );
    let head = g.fake.head("acme", "site", "main").expect("head");
    let c = g.fake.commit(&head);
    assert_eq!(c.parents.len(), 1, "the rest on top of the first commit");
    assert_eq!(j["last_synced_commit"], json!(head));
}

#[tokio::test]
async fn a_repository_is_created_in_an_organisation_but_not_on_a_personal_account() {
    let g = setup().await;
    g.put("index.html", "x").await;
    let r = g
        .app
        .json(
            "POST",
            &format!("/v1/projects/{}/github", g.project),
            Some(&g.token),
            json!({"installation_id": INST, "repository": "new-site", "private": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    assert_eq!(r.json()["repository"], "acme/new-site");
    assert_eq!(
        g.fake.files("acme", "new-site", "main"),
        map(&[("index.html", "x")])
    );

    let fake = FakeGithub::new();
    fake.add_installation(5, "ada", "User");
    let app = TestApp::build(&vars(&[]), fake.clone()).await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "p").await;
    let r = app
        .json(
            "POST",
            "/v1/github/installations",
            Some(&t),
            json!({"installation_id": 5, "code": fake.grant(&[5]), "state": link_state(&app, &t).await}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let r = app
        .json(
            "POST",
            &format!("/v1/projects/{p}/github"),
            Some(&t),
            json!({"installation_id": 5, "repository": "mine"}),
        )
        .await;
    r.problem(422, "github_cannot_create");
    let r = app
        .json(
            "POST",
            &format!("/v1/projects/{p}/github"),
            Some(&t),
            json!({"installation_id": 5, "repository": "../x"}),
        )
        .await;
    r.problem(400, "invalid_repository");
    let r = app
        .json(
            "POST",
            &format!("/v1/projects/{p}/github"),
            Some(&t),
            json!({"installation_id": 5, "repository": "mine", "branch": "a..b"}),
        )
        .await;
    r.problem(400, "invalid_branch");
    assert_eq!(app.count("github_links").await, 0);
}

#[tokio::test]
async fn a_push_is_one_commit_in_files_plus_four_calls() {
    let g = setup().await;
    g.put("keep.txt", "keep").await;
    g.put("old.txt", "old").await;
    g.connect().await;
    for i in 0..10 {
        g.put(&format!("src/f{i}.txt"), &format!("file {i}")).await;
    }
    g.delete("old.txt").await;
    let before = g.fake.calls();
    let head = g.fake.head("acme", "site", "main").expect("head");
    let r = g.push(json!({"message": "Ten files"})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let j = r.json();
    assert_eq!(j["pushed"].as_array().map(Vec::len), Some(10));
    assert_eq!(j["removed"], json!(["old.txt"]));
    let calls = g.fake.calls_since(before);
    assert_eq!(
        calls.len(),
        10 + 4,
        "ref, 10 blobs, tree, commit, ref update: {calls:?}"
    );
    assert_eq!(j["api_calls"], 14);
    let new = g.fake.head("acme", "site", "main").expect("head");
    let c = g.fake.commit(&new);
    assert_eq!(c.parents, vec![head], "one commit on the old head");
    assert_eq!(c.message, "Ten files");
    let files = g.fake.files("acme", "site", "main");
    assert_eq!(files.len(), 11);
    assert!(!files.contains_key("old.txt"));
    assert_eq!(files["src/f3.txt"], "file 3");
    // Nothing changed: no commit.
    let r = g.push(json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(g.fake.head("acme", "site", "main"), Some(new));
}

#[tokio::test]
async fn a_push_after_an_outside_push_takes_their_files_and_commits_on_top() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.put("b.txt", "b1").await;
    g.connect().await;
    let theirs = g.fake.push(
        "acme",
        "site",
        "main",
        &[("b.txt", Some("b2")), ("c.txt", Some("c1"))],
    );
    g.put("a.txt", "a2").await;
    let r = g.push(json!({})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["pulled"], json!(["b.txt", "c.txt"]));
    assert_eq!(
        g.files().await,
        map(&[("a.txt", "a2"), ("b.txt", "b2"), ("c.txt", "c1")])
    );
    assert_eq!(
        g.fake.files("acme", "site", "main"),
        map(&[("a.txt", "a2"), ("b.txt", "b2"), ("c.txt", "c1")])
    );
    let head = g.fake.head("acme", "site", "main").expect("head");
    assert_eq!(
        g.fake.commit(&head).parents,
        vec![theirs],
        "fast-forward on their commit"
    );
}

#[tokio::test]
async fn a_non_fast_forward_is_read_again_and_retried() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    g.put("a.txt", "a2").await;
    g.fake.state.borrow_mut().race = Some(vec![("z.txt".into(), Some(b"from elsewhere".to_vec()))]);
    let r = g.push(json!({})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["attempts"], 2);
    assert_eq!(
        g.fake.files("acme", "site", "main"),
        map(&[("a.txt", "a2"), ("z.txt", "from elsewhere")])
    );
    assert_eq!(
        g.files().await,
        map(&[("a.txt", "a2"), ("z.txt", "from elsewhere")])
    );
}

#[tokio::test]
async fn a_file_written_while_a_sync_pulls_it_keeps_the_write_and_then_conflicts() {
    let g = setup().await;
    g.put("a.txt", "base").await;
    g.connect().await;
    g.fake
        .push("acme", "site", "main", &[("a.txt", Some("theirs"))]);
    let (reached_tx, reached) = oneshot::channel();
    let (go_on, go_on_rx) = oneshot::channel();
    *g.fake.blob_gate.borrow_mut() = Some((reached_tx, go_on_rx));
    // The sync has planned to pull a.txt and is fetching it when the user
    // writes a.txt: the write stays, the pull of a.txt does not land.
    let (r, ()) = tokio::join!(g.push(json!({})), async {
        reached.await.expect("the sync reads the blob");
        g.put("a.txt", "ours").await;
        go_on.send(()).expect("the sync waits");
    });
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(
        g.files().await,
        map(&[("a.txt", "ours")]),
        "the write is not lost"
    );
    assert_eq!(
        g.fake.files("acme", "site", "main"),
        map(&[("a.txt", "theirs")])
    );
    assert_eq!(g.link().await["conflict"], Value::Null);
    // The next sync sees both sides changed a.txt since the base.
    let r = g.push(json!({})).await;
    let j = r.problem(409, "github_conflict");
    assert_eq!(j["conflicts"], json!(["a.txt"]));
    assert_eq!(g.files().await, map(&[("a.txt", "ours")]));
}

#[tokio::test]
async fn the_same_file_changed_on_both_sides_is_committed_on_a_branch_and_reported() {
    let g = setup().await;
    g.put("a.txt", "base").await;
    g.put("b.txt", "b").await;
    g.connect().await;
    g.fake
        .push("acme", "site", "main", &[("a.txt", Some("theirs"))]);
    g.put("a.txt", "ours").await;
    g.put("b.txt", "b2").await;
    let r = g.push(json!({})).await;
    let j = r.problem(409, "github_conflict");
    assert_eq!(j["conflicts"], json!(["a.txt"]));
    let branch = j["conflict_branch"].as_str().expect("branch").to_owned();
    assert!(branch.starts_with("everjust/conflict-"));
    // main: theirs for a.txt, our non-conflicting b.txt; the branch: ours.
    assert_eq!(
        g.fake.files("acme", "site", "main"),
        map(&[("a.txt", "theirs"), ("b.txt", "b2")])
    );
    assert_eq!(g.fake.files("acme", "site", &branch)["a.txt"], "ours");
    assert_eq!(g.files().await["a.txt"], "ours", "the project keeps ours");
    let link = g.link().await;
    assert_eq!(link["conflict"]["paths"], json!(["a.txt"]));
    // Still a conflict on the next push, until resolved.
    g.push(json!({})).await.problem(409, "github_conflict");
    let r = g.push(json!({"resolve": "ours"})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(g.fake.files("acme", "site", "main")["a.txt"], "ours");
    assert!(g.link().await["conflict"].is_null());

    // The other way round: theirs wins.
    g.fake
        .push("acme", "site", "main", &[("b.txt", Some("their b"))]);
    g.put("b.txt", "our b").await;
    g.push(json!({})).await.problem(409, "github_conflict");
    let r = g.push(json!({"resolve": "theirs"})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(g.files().await["b.txt"], "their b");
    assert_eq!(g.fake.files("acme", "site", "main")["b.txt"], "their b");
}

#[tokio::test]
async fn the_same_change_on_both_sides_is_no_conflict() {
    let g = setup().await;
    g.put("a.txt", "base").await;
    g.connect().await;
    g.fake
        .push("acme", "site", "main", &[("a.txt", Some("same"))]);
    g.put("a.txt", "same").await;
    let r = g.push(json!({})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["conflicts"], json!([]));
}

#[tokio::test]
async fn push_without_a_link_or_with_bad_input_is_refused() {
    let g = setup().await;
    g.push(json!({})).await.problem(409, "github_not_connected");
    g.app
        .get(
            &format!("/v1/projects/{}/github", g.project),
            Some(&g.token),
        )
        .await
        .problem(404, "github_not_connected");
    g.connect().await;
    g.push(json!({"resolve": "mine"}))
        .await
        .problem(400, "invalid_body");
    g.push(json!({"force": true}))
        .await
        .problem(400, "invalid_body");
    // Another user's project is not found.
    let (other, _, _) = g.app.signup("eve@example.com").await;
    g.app
        .json(
            "POST",
            &format!("/v1/projects/{}/github/push", g.project),
            Some(&other),
            json!({}),
        )
        .await
        .problem(404, "not_found");
    let r = g
        .app
        .request(
            "DELETE",
            &format!("/v1/projects/{}/github", g.project),
            Some(&g.token),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204);
    g.push(json!({})).await.problem(409, "github_not_connected");
}

#[tokio::test]
async fn github_down_or_rate_limited_is_a_clear_error_and_changes_nothing() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let theirs = g
        .fake
        .push("acme", "site", "main", &[("b.txt", Some("theirs"))]);
    g.put("a.txt", "a2").await;
    let files = g.files().await;

    g.fake.state.borrow_mut().down = Some(503);
    let r = g.push(json!({})).await;
    let j = r.problem(503, "github_unavailable");
    assert!(r.headers.contains_key("retry-after"), "{j}");
    assert_eq!(g.files().await, files, "nothing pulled");
    assert!(g.link().await["last_error"]
        .as_str()
        .unwrap_or("")
        .starts_with("github_unavailable"));

    g.fake.state.borrow_mut().down = None;
    g.fake.state.borrow_mut().rate_limited = Some(42);
    let r = g.push(json!({})).await;
    r.problem(429, "github_rate_limited");
    assert_eq!(r.headers["retry-after"], "42");
    // Within the window we do not even ask GitHub.
    let n = g.fake.calls();
    g.push(json!({})).await.problem(429, "github_rate_limited");
    assert_eq!(g.fake.calls(), n);
    assert_eq!(g.files().await, files);

    // After the window it goes through.
    g.fake.state.borrow_mut().rate_limited = None;
    g.app.clock.advance_ms(43_000);
    assert_eq!(
        g.fake.head("acme", "site", "main").as_ref(),
        Some(&theirs),
        "the branch is untouched"
    );
    let r = g.push(json!({})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(g.files().await["b.txt"], "theirs");
    assert!(g.link().await["last_error"].is_null());
}

#[tokio::test]
async fn an_exhausted_primary_rate_limit_is_honoured_until_its_reset() {
    let g = setup().await;
    g.put("a.txt", "a").await;
    g.connect().await;
    let reset = g.app.clock.now_secs() + 600;
    g.fake.state.borrow_mut().exhausted_until = Some(reset);
    g.put("a.txt", "b").await;
    let r = g.push(json!({})).await;
    r.problem(429, "github_rate_limited");
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert_eq!(wait, 600);
    // Remembered: the next push does not ask GitHub until the reset.
    let n = g.fake.calls();
    g.app.clock.advance_ms(300_000);
    let r = g.push(json!({})).await;
    r.problem(429, "github_rate_limited");
    assert_eq!(r.headers["retry-after"], "300");
    assert_eq!(g.fake.calls(), n);
    g.fake.state.borrow_mut().exhausted_until = None;
    g.app.clock.advance_ms(301_000);
    assert_eq!(g.push(json!({})).await.status, 200);
    assert_eq!(g.fake.files("acme", "site", "main")["a.txt"], "b");
}

// ------------------------------------------------------------------ webhooks

#[tokio::test]
async fn an_outside_push_comes_back_into_the_project_by_webhook() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.put("gone.txt", "bye").await;
    g.connect().await;
    let c = g.fake.push(
        "acme",
        "site",
        "main",
        &[
            ("a.txt", Some("a2")),
            ("new/b.txt", Some("b")),
            ("gone.txt", None),
        ],
    );
    let r = g
        .deliver("push", "d-1", &g.push_payload("main", &c, "site"))
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(g.files().await, map(&[("a.txt", "a2"), ("new/b.txt", "b")]));
    assert_eq!(g.link().await["last_synced_commit"], json!(c));
    let audit = g.audit("github.pull").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["detail"]["by"], "github:octocat");
    assert_eq!(audit[0]["detail"]["deleted"], json!(["gone.txt"]));
    let writes = g.audit("file.write").await;
    assert!(writes
        .iter()
        .any(|w| w["detail"]["by"] == "github" && w["detail"]["path"] == "new/b.txt"));
    // The next agent-side push builds on it without reading the tree again.
    g.put("a.txt", "a3").await;
    let n = g.fake.calls();
    assert_eq!(g.push(json!({})).await.status, 200);
    assert_eq!(g.fake.calls() - n, 1 + 1 + 3);
}

#[tokio::test]
async fn unsigned_wrongly_signed_sha1_only_and_altered_deliveries_are_refused() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let c = g
        .fake
        .push("acme", "site", "main", &[("a.txt", Some("evil"))]);
    let body = g.push_payload("main", &c, "site").to_string();
    let good = sign(SECRET, body.as_bytes());
    let n = g.fake.calls();
    // (what, body, X-Hub-Signature-256, X-Hub-Signature)
    type Case<'a> = (&'a str, Vec<u8>, Option<String>, Option<String>);
    let cases: Vec<Case> = vec![
        ("unsigned", body.clone().into_bytes(), None, None),
        (
            "wrong secret",
            body.clone().into_bytes(),
            Some(sign("not-the-secret", body.as_bytes())),
            None,
        ),
        (
            "sha1 only",
            body.clone().into_bytes(),
            None,
            Some("sha1=0123456789abcdef0123456789abcdef01234567".into()),
        ),
        (
            "body altered",
            body.replace("octocat", "octocaT").into_bytes(),
            Some(good.clone()),
            None,
        ),
        (
            "truncated hex",
            body.clone().into_bytes(),
            Some(good[..good.len() - 2].to_owned()),
            None,
        ),
        (
            "no prefix",
            body.clone().into_bytes(),
            Some(good.trim_start_matches("sha256=").to_owned()),
            None,
        ),
    ];
    for (what, b, s256, s1) in cases {
        let r = g
            .deliver_raw(
                "push",
                &format!("bad-{what}"),
                &b,
                s256.as_deref(),
                s1.as_deref(),
            )
            .await;
        assert_eq!(r.status, 401, "{what}");
        r.problem(401, "invalid_signature");
    }
    assert_eq!(g.deliveries().await, 0, "nothing stored");
    assert_eq!(g.fake.calls(), n, "nothing fetched");
    assert_eq!(g.files().await["a.txt"], "a1");
    // The right signature passes.
    assert_eq!(
        g.deliver_raw("push", "good", body.as_bytes(), Some(&good), None)
            .await
            .status,
        202
    );
    assert_eq!(g.files().await["a.txt"], "evil");
}

#[tokio::test]
async fn a_replayed_delivery_changes_nothing() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let c = g
        .fake
        .push("acme", "site", "main", &[("a.txt", Some("a2"))]);
    let payload = g.push_payload("main", &c, "site");
    assert_eq!(g.deliver("push", "same-id", &payload).await.status, 202);
    assert_eq!(g.files().await["a.txt"], "a2");
    // Meanwhile the branch moves again and the user edits locally.
    g.fake
        .push("acme", "site", "main", &[("x.txt", Some("later"))]);
    let n = g.fake.calls();
    let r = g.deliver("push", "same-id", &payload).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "duplicate");
    assert_eq!(g.fake.calls(), n, "not processed again");
    assert!(!g.files().await.contains_key("x.txt"));
    assert_eq!(g.deliveries().await, 1);
}

#[tokio::test]
async fn a_failed_delivery_runs_again_when_github_redelivers_it() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let c = g
        .fake
        .push("acme", "site", "main", &[("a.txt", Some("a2"))]);
    let payload = g.push_payload("main", &c, "site");
    g.fake.state.borrow_mut().down = Some(502);
    assert_eq!(g.deliver("push", "flaky", &payload).await.status, 202);
    assert!(g
        .delivery_result("flaky")
        .await
        .unwrap_or_default()
        .starts_with("failed: github_unavailable"));
    assert_eq!(
        g.files().await["a.txt"],
        "a1",
        "unchanged while GitHub is down"
    );
    g.fake.state.borrow_mut().down = None;
    assert_eq!(g.deliver("push", "flaky", &payload).await.status, 202);
    assert_eq!(g.files().await["a.txt"], "a2");
}

#[tokio::test]
async fn pushes_to_other_branches_unknown_repositories_and_our_own_commits_are_ignored() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    g.fake.add_repo(INST, "acme", "elsewhere");
    let c = g
        .fake
        .push("acme", "site", "feature", &[("a.txt", Some("feature"))]);
    let n = g.fake.calls();
    assert_eq!(
        g.deliver(
            "push",
            "other-branch",
            &g.push_payload("feature", &c, "site")
        )
        .await
        .status,
        202
    );
    assert!(g
        .delivery_result("other-branch")
        .await
        .unwrap_or_default()
        .starts_with("ignored"));
    let c2 = g
        .fake
        .push("acme", "elsewhere", "main", &[("a.txt", Some("elsewhere"))]);
    assert_eq!(
        g.deliver(
            "push",
            "other-repo",
            &g.push_payload("main", &c2, "elsewhere")
        )
        .await
        .status,
        202
    );
    assert!(g
        .delivery_result("other-repo")
        .await
        .unwrap_or_default()
        .starts_with("ignored"));
    let mut tag = g.push_payload("main", &c, "site");
    tag["ref"] = json!("refs/tags/v1");
    assert_eq!(g.deliver("push", "tag", &tag).await.status, 202);
    // Our own push's webhook.
    let ours = g.fake.head("acme", "site", "main").expect("head");
    assert_eq!(
        g.deliver("push", "own", &g.push_payload("main", &ours, "site"))
            .await
            .status,
        202
    );
    assert!(g
        .delivery_result("own")
        .await
        .unwrap_or_default()
        .contains("our own commit"));
    assert_eq!(g.fake.calls(), n, "GitHub was not asked anything");
    assert_eq!(g.files().await, map(&[("a.txt", "a1")]));
    // ping and unknown events answer 2xx too.
    assert_eq!(
        g.deliver(
            "ping",
            "ping-1",
            &json!({"zen": "Keep it logically awesome."})
        )
        .await
        .status,
        202
    );
    assert_eq!(g.delivery_result("ping-1").await.as_deref(), Some("pong"));
    assert_eq!(
        g.deliver("star", "star-1", &json!({"action": "created"}))
            .await
            .status,
        202
    );
    // Unsigned garbage is still 401; signed garbage is 400.
    let r = g
        .deliver_raw(
            "push",
            "junk",
            b"not json",
            Some(&sign(SECRET, b"not json")),
            None,
        )
        .await;
    r.problem(400, "invalid_body");
}

#[tokio::test]
async fn files_that_break_our_rules_are_skipped_and_reported_and_the_rest_applied() {
    let g = setup_with(&[("MAX_FILE_BYTES", "1000")]).await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let big = "x".repeat(1001);
    let deep = (0..40)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/")
        + "/f.txt";
    g.fake.push(
        "acme",
        "site",
        "main",
        &[
            ("ok.txt", Some("fine")),
            ("big.bin", Some(&big)),
            ("back\\slash.txt", Some("no")),
            (&deep, Some("too deep")),
            ("a.txt", Some("a2")),
        ],
    );
    let c = g.fake.push_mode(
        "acme",
        "site",
        "main",
        &[("link", Some("ok.txt"))],
        "120000",
    );
    assert_eq!(
        g.deliver("push", "rules", &g.push_payload("main", &c, "site"))
            .await
            .status,
        202
    );
    assert_eq!(g.files().await, map(&[("a.txt", "a2"), ("ok.txt", "fine")]));
    let report = &g.link().await["last_report"];
    let skipped: BTreeMap<String, String> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["path"].as_str().expect("p").to_owned(),
                s["code"].as_str().expect("c").to_owned(),
            )
        })
        .collect();
    assert_eq!(skipped["big.bin"], "file_too_large");
    assert_eq!(skipped["back\\slash.txt"], "invalid_path");
    assert_eq!(skipped[&deep], "invalid_path");
    assert_eq!(skipped["link"], "unsupported_file");
    assert_eq!(skipped.len(), 4);
    let audit = g.audit("github.pull").await;
    assert_eq!(
        audit[0]["detail"]["skipped"].as_array().map(Vec::len),
        Some(4)
    );
    // They are not deleted from the repository by our next push.
    g.put("ok.txt", "changed").await;
    assert_eq!(g.push(json!({})).await.status, 200);
    let remote = g.fake.files("acme", "site", "main");
    assert!(
        remote.contains_key("big.bin") && remote.contains_key("link") && remote.contains_key(&deep)
    );
    assert_eq!(remote["ok.txt"], "changed");
}

#[tokio::test]
async fn installation_and_repository_events_update_the_links() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let inst = json!({"id": INST, "account": {"login": "acme", "id": 1, "type": "Organization"}});
    g.deliver(
        "installation",
        "s1",
        &json!({"action": "suspend", "installation": inst}),
    )
    .await;
    assert_eq!(g.link().await["status"], "suspended");
    g.push(json!({})).await.problem(409, "github_link_inactive");
    g.deliver(
        "installation",
        "s2",
        &json!({"action": "unsuspend", "installation": inst}),
    )
    .await;
    assert_eq!(g.link().await["status"], "active");
    let id = g.fake.state.borrow().repos[0].id;
    g.deliver("repository", "r1", &json!({"action": "renamed", "installation": inst, "repository": {"id": id, "name": "site2", "owner": {"login": "acme"}}})).await;
    assert_eq!(g.link().await["repository"], "acme/site2");
    g.deliver(
        "installation_repositories",
        "ir1",
        &json!({"action": "removed", "installation": inst, "repositories_removed": [{"id": id}]}),
    )
    .await;
    assert_eq!(g.link().await["status"], "no_access");
    g.deliver(
        "installation_repositories",
        "ir2",
        &json!({"action": "added", "installation": inst, "repositories_added": [{"id": id}]}),
    )
    .await;
    assert_eq!(g.link().await["status"], "active");
    g.deliver(
        "installation",
        "d1",
        &json!({"action": "deleted", "installation": inst}),
    )
    .await;
    assert_eq!(g.link().await["status"], "uninstalled");
    assert_eq!(g.app.count("github_installations").await, 0);
}

#[tokio::test]
async fn the_webhook_answers_before_the_work_is_done() {
    use everjust_core::ports::background::Background;
    #[derive(Default)]
    struct Queue(RefCell<Vec<futures_util::future::LocalBoxFuture<'static, ()>>>);
    impl Background for Queue {
        fn spawn(&self, work: futures_util::future::LocalBoxFuture<'static, ()>) {
            self.0.borrow_mut().push(work);
        }
    }
    let mut g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let q = Rc::new(Queue::default());
    g.app.ports.background = Some(q.clone());
    let c = g
        .fake
        .push("acme", "site", "main", &[("a.txt", Some("a2"))]);
    let n = g.fake.calls();
    let r = g
        .deliver("push", "later", &g.push_payload("main", &c, "site"))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(g.fake.calls(), n, "no GitHub call before the answer");
    assert_eq!(g.files().await["a.txt"], "a1");
    let work: Vec<_> = q.0.borrow_mut().drain(..).collect();
    assert_eq!(work.len(), 1);
    for w in work {
        w.await;
    }
    assert_eq!(g.files().await["a.txt"], "a2");
    assert!(g
        .delivery_result("later")
        .await
        .unwrap_or_default()
        .contains("1 pulled"));
}

// ------------------------------------------------------------------ agent runs

#[tokio::test]
async fn an_agent_run_that_changes_files_is_committed_with_its_summary() {
    let g = setup().await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let before = g.fake.head("acme", "site", "main").expect("head");
    let s = g.app.session(&g.token, &g.project).await;
    let r = g
        .app
        .json(
            "POST",
            &format!("/v1/sessions/{s}/messages"),
            Some(&g.token),
            json!({"content": "A page about otters"}),
        )
        .await;
    assert!(r.status == 202 || r.status == 200, "{}", r.json());
    let head = g.fake.head("acme", "site", "main").expect("head");
    assert_ne!(head, before, "the run's files were committed");
    let c = g.fake.commit(&head);
    assert_eq!(c.parents, vec![before]);
    assert!(
        c.message.contains("[demo model"),
        "the run's summary: {}",
        c.message
    );
    assert!(c.message.contains("EverJust-Run: run_"), "{}", c.message);
    let files = g.fake.files("acme", "site", "main");
    assert!(files["index.html"].contains("otters"));
    assert_eq!(files["a.txt"], "a1");
}

#[tokio::test]
async fn an_executable_file_stays_executable_when_we_change_it() {
    let g = setup().await;
    g.put("a.txt", "a").await;
    g.connect().await;
    let c = g.fake.push_mode(
        "acme",
        "site",
        "main",
        &[("run.sh", Some("echo 1\n"))],
        "100755",
    );
    assert_eq!(
        g.deliver("push", "exec", &g.push_payload("main", &c, "site"))
            .await
            .status,
        202
    );
    assert_eq!(g.files().await["run.sh"], "echo 1\n");
    // Changed here twice: through the tree read, then through the fast path.
    for v in ["echo 2\n", "echo 3\n"] {
        g.put("run.sh", v).await;
        assert_eq!(g.push(json!({})).await.status, 200);
        assert_eq!(g.fake.files("acme", "site", "main")["run.sh"], v);
        assert_eq!(
            g.fake.mode("acme", "site", "main", "run.sh").as_deref(),
            Some("100755")
        );
    }
}

// ------------------------------------------------------------------ catch-up job

const JOBS: &str = "jobs-secret-for-tests";

impl Gh {
    /// One run of the catch-up job through its route; its report.
    async fn catch_up(&self) -> Value {
        let r = self
            .app
            .request(
                "POST",
                "/v1/_jobs/github-catchup",
                Some(JOBS),
                None,
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        r.json()
    }
}

/// A linked project with a.txt = a1 on both sides, and an outside push of
/// a.txt = a2 whose delivery fails while GitHub is down.
async fn failed_pull() -> (Gh, String) {
    let g = setup_with(&[("JOBS_SECRET", JOBS)]).await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let c = g
        .fake
        .push("acme", "site", "main", &[("a.txt", Some("a2"))]);
    g.fake.state.borrow_mut().down = Some(502);
    let r = g
        .deliver("push", "d-down", &g.push_payload("main", &c, "site"))
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert!(g
        .delivery_result("d-down")
        .await
        .unwrap_or_default()
        .starts_with("failed: github_unavailable"));
    assert_eq!(g.files().await["a.txt"], "a1", "not updated while down");
    assert!(g.link().await["last_error"]
        .as_str()
        .unwrap_or("")
        .starts_with("github_unavailable"));
    (g, c)
}

#[tokio::test]
async fn a_pull_that_failed_after_the_answer_is_caught_up_by_the_job() {
    let (mut g, c) = failed_pull().await;
    g.fake.state.borrow_mut().down = None;

    // Right after the failure the job leaves it alone: no GitHub call.
    let n = g.fake.calls();
    assert_eq!(g.catch_up().await["checked"], 0);
    assert_eq!(g.fake.calls(), n);
    assert_eq!(g.files().await["a.txt"], "a1");

    g.app
        .clock
        .advance_ms(everjust_core::github::catchup::FIRST_RETRY_MS);
    let report = g.catch_up().await;
    assert_eq!(report["synced"], 1, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(g.files().await["a.txt"], "a2");
    let link = g.link().await;
    assert!(link["last_error"].is_null(), "{link}");
    assert_eq!(link["last_synced_commit"], json!(c));
    let pulls = g.audit("github.pull").await;
    assert_eq!(pulls.len(), 1);
    assert_eq!(
        pulls[0]["detail"]["by"], "github:octocat",
        "the pusher's change"
    );

    // Done: later runs call GitHub no more and record nothing.
    let n = g.fake.calls();
    for _ in 0..3 {
        g.app.clock.advance_ms(10 * 60_000);
        assert_eq!(g.catch_up().await["checked"], 0);
    }
    assert_eq!(g.fake.calls(), n, "{:?}", g.fake.calls_since(n));
    g.login().await;
    assert_eq!(g.audit("github.pull").await.len(), 1);
}

#[tokio::test]
async fn a_failing_retry_backs_off_and_the_job_stops_after_its_attempts() {
    use everjust_core::github::catchup::{backoff_ms, FIRST_RETRY_MS, MAX_ATTEMPTS};
    let (mut g, _) = failed_pull().await;
    g.app.clock.advance_ms(FIRST_RETRY_MS);
    for failed in 1..=MAX_ATTEMPTS {
        let n = g.fake.calls();
        let report = g.catch_up().await;
        assert_eq!(report["failed"], 1, "retry {failed}: {report}");
        assert!(g.fake.calls() > n, "retry {failed} asked GitHub");
        // Not again before its backoff.
        let n = g.fake.calls();
        g.app.clock.advance_ms(backoff_ms(failed) - 1000);
        assert_eq!(g.catch_up().await["checked"], 0, "retry {failed}");
        assert_eq!(
            g.fake.calls(),
            n,
            "retry {failed}: no call within the backoff"
        );
        g.app.clock.advance_ms(1000);
    }
    // Given up: nothing more, and the link says so.
    let n = g.fake.calls();
    g.app.clock.advance_ms(24 * 3600 * 1000);
    assert_eq!(g.catch_up().await["checked"], 0);
    assert_eq!(g.fake.calls(), n);
    g.login().await;
    let err = g.link().await["last_error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(err.starts_with("github_unavailable"), "{err}");
    assert!(err.contains("automatic retries stopped"), "{err}");
    // GitHub redelivering the push marks it again; this time it goes through.
    g.fake.state.borrow_mut().down = None;
    let c = g.fake.head("acme", "site", "main").expect("head");
    g.deliver("push", "d-down", &g.push_payload("main", &c, "site"))
        .await;
    assert_eq!(g.files().await["a.txt"], "a2");
    assert!(g.link().await["last_error"].is_null());
    g.app.clock.advance_ms(FIRST_RETRY_MS);
    assert_eq!(g.catch_up().await["checked"], 0, "nothing owed any more");
}

#[tokio::test]
async fn a_rate_limited_retry_waits_for_the_reset_without_counting() {
    let (g, _) = failed_pull().await;
    g.fake.state.borrow_mut().down = None;
    g.fake.state.borrow_mut().rate_limited = Some(900);
    g.app
        .clock
        .advance_ms(everjust_core::github::catchup::FIRST_RETRY_MS);
    assert_eq!(g.catch_up().await["failed"], 1);
    g.fake.state.borrow_mut().rate_limited = None;
    // Due again only after the 900 s GitHub asked for.
    let n = g.fake.calls();
    g.app.clock.advance_ms(899_000);
    assert_eq!(g.catch_up().await["checked"], 0);
    assert_eq!(g.fake.calls(), n);
    g.app.clock.advance_ms(1000);
    assert_eq!(g.catch_up().await["synced"], 1);
    let link = g
        .app
        .ports
        .sql
        .query_opt(
            "SELECT catchup, last_error FROM github_links WHERE project_id = $1",
            &[g.project.as_str().into()],
        )
        .await
        .expect("query")
        .expect("link");
    assert_eq!(link.opt_text("catchup").expect("catchup"), None);
    assert_eq!(link.opt_text("last_error").expect("last_error"), None);
}

#[tokio::test]
async fn a_pull_that_timed_out_waiting_for_the_project_is_caught_up_by_the_job() {
    let g = setup_with(&[("JOBS_SECRET", JOBS)]).await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let c = g
        .fake
        .push("acme", "site", "main", &[("a.txt", Some("a2"))]);
    // Another sync holds the project's lease for the whole wait.
    let sql = g.app.ports.sql.as_ref();
    assert!(everjust_core::github::store::try_lock(sql, &g.project, 600)
        .await
        .expect("lock"));
    g.deliver("push", "d-busy", &g.push_payload("main", &c, "site"))
        .await;
    assert!(g
        .delivery_result("d-busy")
        .await
        .unwrap_or_default()
        .starts_with("failed: github_busy"));
    assert_eq!(g.files().await["a.txt"], "a1");
    // Still held: the job does not wait, call GitHub or count it.
    g.app
        .clock
        .advance_ms(everjust_core::github::catchup::FIRST_RETRY_MS);
    let n = g.fake.calls();
    let report = g.catch_up().await;
    assert_eq!(report["busy"], 1, "{report}");
    assert_eq!(g.fake.calls(), n);
    everjust_core::github::store::unlock(sql, &g.project)
        .await
        .expect("unlock");
    assert_eq!(g.catch_up().await["synced"], 1, "due again at once");
    assert_eq!(g.files().await["a.txt"], "a2");
}

#[tokio::test]
async fn an_agent_run_whose_push_failed_is_pushed_by_the_job() {
    let g = setup_with(&[("JOBS_SECRET", JOBS)]).await;
    g.put("a.txt", "a1").await;
    g.connect().await;
    let before = g.fake.head("acme", "site", "main").expect("head");
    let s = g.app.session(&g.token, &g.project).await;
    g.fake.state.borrow_mut().down = Some(503);
    let r = g
        .app
        .json(
            "POST",
            &format!("/v1/sessions/{s}/messages"),
            Some(&g.token),
            json!({"content": "A page about otters"}),
        )
        .await;
    assert!(r.status == 202 || r.status == 200, "{}", r.json());
    g.fake.state.borrow_mut().down = None;
    assert_eq!(g.fake.head("acme", "site", "main"), Some(before.clone()));
    assert!(g.link().await["last_error"]
        .as_str()
        .unwrap_or("")
        .starts_with("github_unavailable"));
    // Right after the failure the job leaves it alone.
    let n = g.fake.calls();
    assert_eq!(g.catch_up().await["checked"], 0);
    assert_eq!(g.fake.calls(), n);

    g.app
        .clock
        .advance_ms(everjust_core::github::catchup::FIRST_RETRY_MS);
    assert_eq!(g.catch_up().await["synced"], 1);
    let head = g.fake.head("acme", "site", "main").expect("head");
    assert_ne!(head, before, "the run's files were committed");
    let commit = g.fake.commit(&head);
    assert_eq!(commit.parents, vec![before]);
    assert!(commit.message.contains("[demo model"), "{}", commit.message);
    assert!(
        commit.message.contains("EverJust-Run: run_"),
        "{}",
        commit.message
    );
    assert!(g.fake.files("acme", "site", "main")["index.html"].contains("otters"));
    assert!(g.link().await["last_error"].is_null());
    let syncs = g.audit("github.sync").await;
    assert_eq!(
        syncs
            .iter()
            .filter(|e| e["detail"]["by"] == "agent")
            .count(),
        1
    );

    let n = g.fake.calls();
    g.app.clock.advance_ms(10 * 60_000);
    assert_eq!(g.catch_up().await["checked"], 0);
    assert_eq!(g.fake.calls(), n, "nothing owed: no GitHub call");
}

#[tokio::test]
async fn a_pull_does_not_settle_an_owed_push() {
    let g = setup_with(&[("JOBS_SECRET", JOBS)]).await;
    g.put("a.txt", "a1").await;
    let link = g.connect().await;
    let sql = g.app.ports.sql.as_ref();
    let now = g.app.clock.now_ms();
    use everjust_core::github::store::{owe, settle, Owed};
    owe(sql, &g.project, Owed::Push, Some("msg"), "agent", now, now)
        .await
        .expect("owe");
    owe(sql, &g.project, Owed::Pull, None, "github:x", now, now)
        .await
        .expect("owe");
    assert!(!settle(sql, &g.project, Owed::Pull, now)
        .await
        .expect("settle"));
    assert!(
        !settle(sql, &g.project, Owed::Push, now - 1)
            .await
            .expect("settle"),
        "a sync that started before the mark does not cover it"
    );
    let row = sql
        .query_opt(
            "SELECT catchup, catchup_message, catchup_by FROM github_links WHERE project_id = $1",
            &[g.project.as_str().into()],
        )
        .await
        .expect("query")
        .expect("row");
    assert_eq!(row.text("catchup").expect("c"), "push");
    assert_eq!(row.text("catchup_message").expect("m"), "msg");
    assert_eq!(row.text("catchup_by").expect("b"), "agent");
    assert!(settle(sql, &g.project, Owed::Push, now)
        .await
        .expect("settle"));
    assert!(link["project_id"].is_string());
}

#[tokio::test]
async fn the_catchup_job_route_needs_the_jobs_secret() {
    let g = setup_with(&[("JOBS_SECRET", JOBS)]).await;
    for token in [None, Some("wrong"), Some(g.token.as_str())] {
        let r = g
            .app
            .request(
                "POST",
                "/v1/_jobs/github-catchup",
                token,
                None,
                Bytes::new(),
            )
            .await;
        r.problem(401, "unauthorized");
    }
    let plain = setup().await;
    plain
        .app
        .request(
            "POST",
            "/v1/_jobs/github-catchup",
            Some(JOBS),
            None,
            Bytes::new(),
        )
        .await
        .problem(404, "not_found");
}

/// An outside push that turns a folder into a file of the same name (and a
/// file into a folder) comes back whole: the old names leave before the new
/// ones are written, as a name is never a file and a folder at once.
#[tokio::test]
async fn an_outside_push_that_swaps_a_file_and_a_folder_comes_back_whole() {
    let g = setup().await;
    g.put("docs/a.md", "a").await;
    g.put("notes", "n").await;
    g.connect().await;
    let c = g.fake.push(
        "acme",
        "site",
        "main",
        &[
            ("docs/a.md", None),
            ("docs", Some("now a file")),
            ("notes", None),
            ("notes/one.md", Some("now a folder")),
        ],
    );
    let r = g
        .deliver("push", "d-swap", &g.push_payload("main", &c, "site"))
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(
        g.files().await,
        map(&[("docs", "now a file"), ("notes/one.md", "now a folder")])
    );
    assert_eq!(g.link().await["last_synced_commit"], json!(c));
}
