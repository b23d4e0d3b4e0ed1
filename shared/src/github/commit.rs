//! The Git Data API calls of a sync: read the branch head, its tree and
//! blobs; write blobs (at most 6 at once, the Workers limit of concurrent
//! connections), a tree on top of `base_tree`, a commit with its parent,
//! and move the ref by fast-forward only. An empty repository takes its
//! first commit through the contents API.

use base64::Engine as _;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::api::{seg, segs, Api, GhError};

/// Concurrent GitHub requests at most (Workers allow 6 open connections).
pub const PARALLEL: usize = 6;

/// One entry of a repository tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeEntry {
    pub path: String,
    pub mode: String,
    /// `blob`, `tree` or `commit` (a submodule).
    pub kind: String,
    pub sha: String,
    pub size: Option<u64>,
}

/// A change in a new tree: a file's new blob, or its removal.
#[derive(Debug, Clone)]
pub struct Change {
    pub path: String,
    /// `None` deletes the path.
    pub blob: Option<String>,
    /// `100644`, or `100755` for a file that was executable.
    pub mode: &'static str,
}

/// The head of a branch.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// The branch points at this commit.
    Commit(String),
    /// The repository has no commit at all (GitHub answers 409).
    EmptyRepo,
    /// The repository has commits, but not this branch.
    NoBranch,
}

/// Who a commit is by.
#[derive(Debug, Clone)]
pub struct Author {
    pub name: String,
    pub email: String,
    /// RFC 3339.
    pub date: String,
}

impl Author {
    fn json(&self) -> Value {
        json!({ "name": self.name, "email": self.email, "date": self.date })
    }
}

/// One repository, through one client.
pub struct Repo<'a> {
    pub api: &'a Api<'a>,
    pub owner: String,
    pub name: String,
}

fn field(v: &Value, pointer: &str) -> Result<String, GhError> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| GhError::Invalid(format!("missing {pointer}")))
}

impl Repo<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/repos/{}/{}{rest}", seg(&self.owner), seg(&self.name))
    }

    pub async fn head(&self, branch: &str) -> Result<Head, GhError> {
        match self
            .api
            .get(&self.path(&format!("/git/ref/heads/{}", segs(branch))))
            .await
        {
            Ok(v) => Ok(Head::Commit(field(&v, "/object/sha")?)),
            Err(GhError::Status { status: 409, .. }) => Ok(Head::EmptyRepo),
            Err(GhError::Status { status: 404, .. }) => {
                // A missing branch, or a missing repository: tell them apart.
                match self.api.get(&self.path("")).await {
                    Ok(_) => Ok(Head::NoBranch),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The tree of commit `sha`.
    pub async fn commit_tree(&self, sha: &str) -> Result<String, GhError> {
        let v = self
            .api
            .get(&self.path(&format!("/git/commits/{}", seg(sha))))
            .await?;
        field(&v, "/tree/sha")
    }

    /// Every entry of tree `sha`, recursively.
    pub async fn tree(&self, sha: &str) -> Result<Vec<TreeEntry>, GhError> {
        let v = self
            .api
            .get(&self.path(&format!("/git/trees/{}?recursive=1", seg(sha))))
            .await?;
        if v["truncated"].as_bool() == Some(true) {
            return Err(GhError::Invalid(
                "the repository tree is too large for one listing".into(),
            ));
        }
        let items = v["tree"]
            .as_array()
            .ok_or_else(|| GhError::Invalid("tree without entries".into()))?;
        items
            .iter()
            .map(|e| {
                Ok(TreeEntry {
                    path: field(e, "/path")?,
                    mode: field(e, "/mode")?,
                    kind: field(e, "/type")?,
                    sha: field(e, "/sha")?,
                    size: e["size"].as_u64(),
                })
            })
            .collect()
    }

    pub async fn blob(&self, sha: &str) -> Result<Vec<u8>, GhError> {
        let v = self
            .api
            .get(&self.path(&format!("/git/blobs/{}", seg(sha))))
            .await?;
        let content = field(&v, "/content")?;
        if v["encoding"].as_str() == Some("utf-8") {
            return Ok(content.into_bytes());
        }
        let b64: String = content.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| GhError::Invalid("blob content is not base64".into()))
    }

    /// Fetches blobs, [`PARALLEL`] at a time; fails as a whole if one fails.
    pub async fn blobs(
        &self,
        shas: Vec<(String, String)>,
    ) -> Result<Vec<(String, Vec<u8>)>, GhError> {
        futures_util::stream::iter(shas)
            .map(|(path, sha)| async move { self.blob(&sha).await.map(|c| (path, c)) })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    pub async fn create_blob(&self, content: &[u8]) -> Result<String, GhError> {
        let v = self
            .api
            .post(
                &self.path("/git/blobs"),
                &json!({
                    "content": base64::engine::general_purpose::STANDARD.encode(content),
                    "encoding": "base64",
                }),
            )
            .await?;
        field(&v, "/sha")
    }

    /// Creates blobs, [`PARALLEL`] at a time: (path, blob sha) per file.
    pub async fn create_blobs(
        &self,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(String, String)>, GhError> {
        futures_util::stream::iter(files)
            .map(|(path, content)| async move { self.create_blob(&content).await.map(|s| (path, s)) })
            .buffer_unordered(PARALLEL)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }

    pub async fn create_tree(
        &self,
        base: Option<&str>,
        changes: &[Change],
    ) -> Result<String, GhError> {
        let entries: Vec<Value> = changes
            .iter()
            .map(|c| json!({ "path": c.path, "mode": c.mode, "type": "blob", "sha": c.blob }))
            .collect();
        let mut body = json!({ "tree": entries });
        if let Some(b) = base {
            body["base_tree"] = json!(b);
        }
        let v = self.api.post(&self.path("/git/trees"), &body).await?;
        field(&v, "/sha")
    }

    pub async fn create_commit(
        &self,
        message: &str,
        tree: &str,
        parent: Option<&str>,
        author: &Author,
    ) -> Result<String, GhError> {
        let v = self
            .api
            .post(
                &self.path("/git/commits"),
                &json!({
                    "message": message,
                    "tree": tree,
                    "parents": parent.into_iter().collect::<Vec<_>>(),
                    "author": author.json(),
                }),
            )
            .await?;
        field(&v, "/sha")
    }

    /// Moves `branch` to `sha`, fast-forward only. `Ok(false)`: not a fast
    /// forward (someone pushed meanwhile).
    pub async fn update_ref(&self, branch: &str, sha: &str) -> Result<bool, GhError> {
        match self
            .api
            .patch(
                &self.path(&format!("/git/refs/heads/{}", segs(branch))),
                &json!({ "sha": sha, "force": false }),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(GhError::Status {
                status: 422 | 409, ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates `branch` at `sha`. `Ok(false)`: it exists already.
    pub async fn create_ref(&self, branch: &str, sha: &str) -> Result<bool, GhError> {
        match self
            .api
            .post(
                &self.path("/git/refs"),
                &json!({ "ref": format!("refs/heads/{branch}"), "sha": sha }),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(GhError::Status { status: 422, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The first commit of an empty repository, through the contents API
    /// (the Git Data API answers 409 there): (commit sha, tree sha, blob sha).
    pub async fn first_commit(
        &self,
        branch: &str,
        path: &str,
        content: &[u8],
        message: &str,
        author: &Author,
    ) -> Result<(String, String, String), GhError> {
        let v = self
            .api
            .put(
                &self.path(&format!("/contents/{}", segs(path))),
                &json!({
                    "message": message,
                    "content": base64::engine::general_purpose::STANDARD.encode(content),
                    "branch": branch,
                    "author": author.json(),
                }),
            )
            .await?;
        Ok((
            field(&v, "/commit/sha")?,
            field(&v, "/commit/tree/sha")?,
            field(&v, "/content/sha")?,
        ))
    }
}
