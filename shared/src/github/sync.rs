//! Two-way sync of a project with its branch, as a three-way comparison per
//! file: the base (what both sides last agreed on, `github_synced_files`),
//! the project store and the branch head.
//!
//! | project | branch  | what happens |
//! |---------|---------|--------------|
//! | = base  | = base  | nothing |
//! | changed | = base  | pushed (one commit for all files) |
//! | = base  | changed | pulled into the project (path and size rules apply; a file that breaks them is skipped and reported) |
//! | changed | changed | same content: agreed; else a conflict: our version is committed on a branch `everjust/conflict-…` and reported, the project keeps ours, the branch keeps theirs, until one side takes the other's (or `resolve: ours|theirs`) |
//!
//! A push reads the head, writes blobs (6 at a time), a tree on the head's
//! tree, a commit with the head as parent, and moves the ref by
//! fast-forward only; when someone pushed meanwhile, it starts over from a
//! fresh read. When the base is exactly the head's tree (the usual case
//! after our own push), the head's tree is not read at all: a push of N
//! files costs N + 4 calls.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::api::{Api, GhError};
use super::commit::{Author, Change, Head, Repo, TreeEntry};
use super::store::{self, Base, Link};
use crate::error::{ApiError, ApiResult};
use crate::projects::files::{delete_file_if, limits, write_file_if, Actor, Expect};
use crate::projects::handlers::hex;
use crate::projects::path::ProjectPath;
use crate::routes::Ctx;

/// How long one sync may hold the project's lease.
pub const LEASE_SECS: i64 = 120;
/// Fresh reads after a non-fast-forward before giving up.
const MAX_ATTEMPTS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolve {
    /// Conflicts stay conflicts.
    None,
    /// Our version wins: conflicting files are pushed over theirs.
    Ours,
    /// Their version wins: conflicting files are pulled over ours.
    Theirs,
}

#[derive(Debug, Clone)]
pub enum Mode {
    /// Bring the branch's changes into the project; push nothing (webhooks).
    Pull,
    /// Both ways: pull their changes, push ours in one commit.
    Both { message: String, resolve: Resolve },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Skipped {
    pub path: String,
    pub code: String,
    pub detail: String,
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The branch head after the sync (`None`: the repository is still empty).
    pub commit: Option<String>,
    /// Files written to the branch.
    pub pushed: Vec<String>,
    /// Files removed from the branch.
    pub removed: Vec<String>,
    /// Files written to the project from the branch.
    pub pulled: Vec<String>,
    /// Files removed from the project because the branch removed them.
    pub deleted: Vec<String>,
    /// Branch files the project could not take, with why.
    pub skipped: Vec<Skipped>,
    /// Files changed differently on both sides.
    pub conflicts: Vec<String>,
    /// Where our side of the conflicts was committed.
    pub conflict_branch: Option<String>,
    /// GitHub API calls made.
    pub api_calls: u32,
    /// Reads of the branch head (more than 1: someone pushed meanwhile).
    pub attempts: u32,
}

impl Report {
    pub fn changed_anything(&self) -> bool {
        !(self.pushed.is_empty()
            && self.removed.is_empty()
            && self.pulled.is_empty()
            && self.deleted.is_empty())
    }
}

/// One file of the branch as the sync sees it.
#[derive(Debug, Clone)]
struct Remote {
    sha: String,
    mode: String,
    size: Option<u64>,
    /// A plain or executable file (not a symlink or submodule).
    regular: bool,
}

impl Remote {
    fn from_entry(e: &TreeEntry) -> Option<(String, Remote)> {
        match e.kind.as_str() {
            "blob" | "commit" => Some((
                e.path.clone(),
                Remote {
                    sha: e.sha.clone(),
                    mode: e.mode.clone(),
                    size: e.size,
                    regular: e.kind == "blob" && (e.mode == "100644" || e.mode == "100755"),
                },
            )),
            _ => None,
        }
    }
}

fn git_mode(remote: Option<&Remote>) -> &'static str {
    if remote.is_some_and(|r| r.mode == "100755") {
        "100755"
    } else {
        "100644"
    }
}

/// The author of our commits, now.
pub fn author(ctx: &Ctx<'_>) -> ApiResult<Author> {
    let cfg = super::config(ctx)?;
    Ok(Author {
        name: cfg.commit_author_name.clone(),
        email: cfg.commit_author_email.clone(),
        date: crate::pagination::rfc3339(ctx.ports.clock.now_ms()),
    })
}

/// Runs [`sync`] under the project's lease, waiting for a running sync up
/// to `wait_ms`; records the failure on the link when it fails.
pub async fn locked_sync(
    ctx: &Ctx<'_>,
    link: &Link,
    mode: &Mode,
    who: &str,
    wait_ms: u64,
) -> ApiResult<Report> {
    let sql = ctx.ports.sql.as_ref();
    let mut waited = 0;
    while !store::try_lock(sql, &link.project_id, LEASE_SECS).await? {
        if waited >= wait_ms {
            return Err(ApiError {
                retry_after: Some(5),
                ..ApiError::conflict(
                    "github_busy",
                    "Another sync of this project with GitHub is running; try again in a few seconds.",
                )
            });
        }
        ctx.ports.clock.sleep_ms(500).await;
        waited += 500;
    }
    let result = sync(ctx, link, mode, who).await;
    let _ = store::unlock(sql, &link.project_id).await;
    if let Err(e) = &result {
        let _ = store::set_error(sql, &link.project_id, &format!("{}: {}", e.code, e.detail)).await;
    }
    result
}

/// What to do with one path.
enum Action {
    /// Take the branch's version (`None`: delete ours).
    Pull(Option<Remote>),
    /// Send our version (`None`: delete theirs).
    Push(Option<String>),
    /// Both changed; the same content means agreement.
    Compare(Remote, String),
    Conflict,
    /// Both sides deleted it.
    Forget,
}

fn classify(
    paths: &BTreeSet<String>,
    base: &HashMap<String, Base>,
    local: &HashMap<String, (String, i64)>,
    remote: &HashMap<String, Remote>,
    mode: &Mode,
) -> Vec<(String, Action)> {
    let resolve = match mode {
        Mode::Pull => Resolve::None,
        Mode::Both { resolve, .. } => *resolve,
    };
    let mut out = Vec::new();
    for p in paths {
        let b = base.get(p);
        let l = local.get(p).map(|(s, _)| s);
        let r = remote.get(p);
        let local_changed = l != b.and_then(|b| b.sha256.as_ref());
        let remote_changed = r.map(|r| &r.sha) != b.map(|b| &b.git_sha);
        let action = match (local_changed, remote_changed) {
            (false, false) => continue,
            (true, false) => Action::Push(l.cloned()),
            (false, true) => Action::Pull(r.cloned()),
            (true, true) => match (l, r) {
                (None, None) => Action::Forget,
                (Some(l), Some(r)) if r.regular => Action::Compare(r.clone(), l.clone()),
                _ => match resolve {
                    Resolve::Ours => Action::Push(l.cloned()),
                    Resolve::Theirs => Action::Pull(r.cloned()),
                    Resolve::None => Action::Conflict,
                },
            },
        };
        out.push((p.clone(), action));
    }
    out
}

/// One sync of the project with its branch (the caller holds the lease).
pub async fn sync(ctx: &Ctx<'_>, link: &Link, mode: &Mode, who: &str) -> ApiResult<Report> {
    if link.status != "active" {
        return Err(ApiError::conflict(
            "github_link_inactive",
            format!(
                "The repository link is {}; connect the project again.",
                link.status
            ),
        ));
    }
    let cfg = super::config(ctx)?;
    let api = Api::installation(ctx.ports, cfg, link.installation_id).await?;
    let repo = Repo {
        api: &api,
        owner: link.repo_owner.clone(),
        name: link.repo_name.clone(),
    };
    let mut report = Report::default();
    let result = attempts(ctx, &repo, link, mode, &mut report).await;
    report.api_calls = api.calls();
    result?;
    let detail = json!({
        "repository": format!("{}/{}", link.repo_owner, link.repo_name),
        "branch": link.branch,
        "by": who,
        "commit": report.commit,
        "pushed": report.pushed.len(),
        "removed": report.removed.len(),
        "pulled": report.pulled,
        "deleted": report.deleted,
        "skipped": report.skipped,
        "conflicts": report.conflicts,
        "conflict_branch": report.conflict_branch,
    });
    if report.changed_anything() || !report.skipped.is_empty() || !report.conflicts.is_empty() {
        let action = match mode {
            Mode::Pull => "github.pull",
            Mode::Both { .. } => "github.sync",
        };
        crate::db::audit::record(
            ctx.ports.sql.as_ref(),
            ctx,
            &link.owner_id,
            action,
            Some(&link.project_id),
            detail,
        )
        .await?;
    }
    Ok(report)
}

async fn attempts(
    ctx: &Ctx<'_>,
    repo: &Repo<'_>,
    link: &Link,
    mode: &Mode,
    report: &mut Report,
) -> ApiResult<()> {
    let sql = ctx.ports.sql.as_ref();
    let project = link.project_id.as_str();
    for attempt in 1..=MAX_ATTEMPTS {
        report.attempts = attempt;
        let link = store::reload(sql, project)
            .await?
            .ok_or_else(|| ApiError::not_found("project"))?;
        let base = store::base(sql, project).await?;
        let local = store::local_files(sql, project).await?;
        let head = repo.head(&link.branch).await?;
        let (head_sha, tree_sha, remote) = match &head {
            Head::Commit(h) => {
                let unchanged = link.last_synced_sha.as_ref() == Some(h)
                    && link.snapshot_exact
                    && link.conflict.is_none();
                match (&link.last_synced_tree, unchanged) {
                    (Some(tree), true) => {
                        // The base is exactly this head's tree: no need to read it.
                        let remote = base
                            .iter()
                            .map(|(p, b)| {
                                (
                                    p.clone(),
                                    Remote {
                                        sha: b.git_sha.clone(),
                                        mode: b.mode.clone(),
                                        size: None,
                                        regular: b.sha256.is_some(),
                                    },
                                )
                            })
                            .collect();
                        (Some(h.clone()), Some(tree.clone()), remote)
                    }
                    _ => {
                        let tree = repo.commit_tree(h).await?;
                        let remote = repo
                            .tree(&tree)
                            .await?
                            .iter()
                            .filter_map(Remote::from_entry)
                            .collect();
                        (Some(h.clone()), Some(tree), remote)
                    }
                }
            }
            Head::EmptyRepo | Head::NoBranch => (None, None, HashMap::new()),
        };
        let paths: BTreeSet<String> = base
            .keys()
            .chain(local.keys())
            .chain(remote.keys())
            .cloned()
            .collect();
        let actions = classify(&paths, &base, &local, &remote, mode);
        if !actions.is_empty() {
            store::set_inexact(sql, project).await?;
        }
        let mut base_updates: Vec<(String, Option<Base>)> = Vec::new();
        let mut pulls: Vec<(String, Option<Remote>)> = Vec::new();
        let mut pushes: Vec<(String, Option<String>)> = Vec::new();
        let mut conflicts: Vec<String> = Vec::new();
        let mut compares: Vec<(String, Remote, String)> = Vec::new();
        for (p, a) in actions {
            match a {
                Action::Pull(r) => pulls.push((p, r)),
                Action::Push(l) => pushes.push((p, l)),
                Action::Compare(r, l) => compares.push((p, r, l)),
                Action::Conflict => conflicts.push(p),
                Action::Forget => base_updates.push((p, None)),
            }
        }
        let (max_file, _) = limits(ctx, &link.owner_id).await?;
        // Both sides changed a file: the same bytes are an agreement.
        let to_compare: Vec<(String, String)> = compares
            .iter()
            .filter(|(_, r, _)| r.size.is_none_or(|s| s <= max_file))
            .map(|(p, r, _)| (p.clone(), r.sha.clone()))
            .collect();
        let fetched: HashMap<String, Vec<u8>> = repo.blobs(to_compare).await?.into_iter().collect();
        let resolve = match mode {
            Mode::Pull => Resolve::None,
            Mode::Both { resolve, .. } => *resolve,
        };
        let mut prefetched: HashMap<String, Vec<u8>> = HashMap::new();
        for (p, r, l) in compares {
            match fetched.get(&p) {
                Some(content) if hex(&Sha256::digest(content)) == l => base_updates.push((
                    p,
                    Some(Base {
                        git_sha: r.sha,
                        sha256: Some(l),
                        mode: r.mode,
                    }),
                )),
                other => match resolve {
                    Resolve::Ours => pushes.push((p, Some(l))),
                    Resolve::Theirs => {
                        if let Some(c) = other {
                            prefetched.insert(p.clone(), c.clone());
                        }
                        pulls.push((p, Some(r)));
                    }
                    Resolve::None => conflicts.push(p),
                },
            }
        }

        // Their changes into the project: fetch everything first, so that a
        // GitHub failure leaves the project as it was.
        let mut wanted: Vec<(String, String)> = Vec::new();
        let mut planned: Vec<(String, Option<Remote>, Option<ProjectPath>)> = Vec::new();
        for (p, r) in pulls {
            let here = local.get(&p).map(|(s, _)| s.clone());
            match r {
                None => planned.push((p, None, None)),
                Some(r) => {
                    let skip = |code: &str, detail: String| Skipped {
                        path: p.clone(),
                        code: code.into(),
                        detail,
                    };
                    let why = if !r.regular {
                        Some(skip(
                            "unsupported_file",
                            format!("mode {} (symlinks and submodules are not synced)", r.mode),
                        ))
                    } else if r.size.is_some_and(|s| s > max_file) {
                        Some(skip(
                            "file_too_large",
                            format!("A file may have at most {max_file} bytes."),
                        ))
                    } else {
                        match ProjectPath::parse(&p) {
                            Ok(pp) => {
                                if !prefetched.contains_key(&p) {
                                    wanted.push((p.clone(), r.sha.clone()));
                                }
                                planned.push((p.clone(), Some(r.clone()), Some(pp)));
                                None
                            }
                            Err(e) => Some(skip(e.code, e.detail)),
                        }
                    };
                    if let Some(s) = why {
                        report.skipped.push(s);
                        base_updates.push((
                            p,
                            Some(Base {
                                git_sha: r.sha,
                                sha256: here,
                                mode: r.mode,
                            }),
                        ));
                    }
                }
            }
        }
        let mut contents: HashMap<String, Vec<u8>> =
            repo.blobs(wanted).await?.into_iter().collect();
        contents.extend(prefetched);
        // A file written in the project since it was read above keeps that
        // write: its base stays, so the next sync sees both sides changed.
        let mut exact = true;
        // Deletions first: a file that became a folder (or the reverse)
        // leaves before its new name is written (a name is never both).
        planned.sort_by_key(|(_, r, pp)| r.is_some() && pp.is_some());
        for (p, r, pp) in planned {
            let seen = Expect::Is(local.get(&p).map(|(s, _)| s.as_str()));
            match (r, pp) {
                (Some(r), Some(pp)) => {
                    let content = contents.remove(&p).unwrap_or_default();
                    match write_file_if(
                        ctx,
                        &link.owner_id,
                        project,
                        &pp,
                        &content,
                        Actor::Github,
                        seen,
                    )
                    .await
                    {
                        Err(e) if e.code == "file_changed" => exact = false,
                        Ok((meta, _)) => {
                            report.pulled.push(p.clone());
                            base_updates.push((
                                p,
                                Some(Base {
                                    git_sha: r.sha,
                                    sha256: Some(meta.sha256),
                                    mode: r.mode,
                                }),
                            ));
                        }
                        Err(e) if e.status.is_client_error() => {
                            report.skipped.push(Skipped {
                                path: p.clone(),
                                code: e.code.into(),
                                detail: e.detail,
                            });
                            base_updates.push((
                                p.clone(),
                                Some(Base {
                                    git_sha: r.sha,
                                    sha256: local.get(&p).map(|(s, _)| s.clone()),
                                    mode: r.mode,
                                }),
                            ));
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ => {
                    if let Ok(pp) = ProjectPath::parse(&p) {
                        match delete_file_if(ctx, &link.owner_id, project, &pp, Actor::Github, seen)
                            .await
                        {
                            Ok(()) => report.deleted.push(p.clone()),
                            Err(e) if e.code == "not_found" => {}
                            Err(e) if e.code == "file_changed" => {
                                exact = false;
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    base_updates.push((p, None));
                }
            }
        }
        store::put_base(sql, project, &std::mem::take(&mut base_updates)).await?;

        let mut new_head = head_sha.clone();
        let mut new_tree = tree_sha.clone();
        if let Mode::Both { message, .. } = mode {
            if !pushes.is_empty() {
                let Some(done) = push(ctx, repo, &link, &head, &remote, &pushes, message).await?
                else {
                    continue; // not a fast-forward: read again
                };
                store::put_base(sql, project, &done.base).await?;
                report.pushed.extend(done.pushed);
                report.removed.extend(done.removed);
                if let Some((commit, tree)) = done.commit {
                    new_head = Some(commit);
                    new_tree = Some(tree);
                }
            }
            if !conflicts.is_empty() {
                if let (Some(h), Some(t)) = (&new_head, &new_tree) {
                    report.conflict_branch =
                        Some(conflict_branch(ctx, repo, &link, h, t, &remote, &conflicts).await?);
                }
            }
        }
        report.commit = new_head.clone();
        report.conflicts = conflicts.clone();
        let conflict = (!conflicts.is_empty()).then(|| {
            json!({
                "paths": conflicts,
                "branch": report.conflict_branch,
                "at": crate::pagination::rfc3339(ctx.ports.clock.now_ms()),
            })
        });
        report.api_calls = repo.api.calls();
        let report_json = serde_json::to_value(&*report).unwrap_or(Value::Null);
        store::finish_sync(
            sql,
            project,
            new_head.as_deref(),
            new_tree.as_deref(),
            exact && conflict.is_none(),
            conflict.as_ref(),
            &report_json,
            report.changed_anything() || !report.skipped.is_empty() || !report.conflicts.is_empty(),
        )
        .await?;
        return Ok(());
    }
    Err(ApiError::conflict(
        "github_conflict",
        "The branch kept moving while we pushed; try again.",
    ))
}

/// What a push did.
struct Pushed {
    /// The new head and its tree (`None`: nothing needed a commit).
    commit: Option<(String, String)>,
    base: Vec<(String, Option<Base>)>,
    pushed: Vec<String>,
    removed: Vec<String>,
}

/// Commits our changes on the head. `Ok(None)`: the branch moved meanwhile.
async fn push(
    ctx: &Ctx<'_>,
    repo: &Repo<'_>,
    link: &Link,
    head: &Head,
    remote: &HashMap<String, Remote>,
    pushes: &[(String, Option<String>)],
    message: &str,
) -> ApiResult<Option<Pushed>> {
    let sql = ctx.ports.sql.as_ref();
    let author = author(ctx)?;
    let writes: Vec<&str> = pushes
        .iter()
        .filter(|(_, l)| l.is_some())
        .map(|(p, _)| p.as_str())
        .collect();
    let mut files = store::local_contents(sql, &link.owner_id, &link.project_id, &writes).await?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Pushed {
        commit: None,
        base: Vec::new(),
        pushed: Vec::new(),
        removed: Vec::new(),
    };
    // Deleting what the branch does not have only updates the base.
    for (p, l) in pushes {
        if l.is_none() {
            out.base.push((p.clone(), None));
        }
    }
    let mut changes: Vec<Change> = pushes
        .iter()
        .filter(|(p, l)| l.is_none() && remote.contains_key(p))
        .map(|(p, _)| Change {
            path: p.clone(),
            blob: None,
            mode: "100644",
        })
        .collect();
    out.removed = changes.iter().map(|c| c.path.clone()).collect();
    if files.is_empty() && changes.is_empty() {
        return Ok(Some(out));
    }
    let (mut parent, mut base_tree) = (None, None);
    if let Head::Commit(h) = head {
        base_tree = Some(
            match (
                &link.last_synced_tree,
                link.last_synced_sha.as_ref() == Some(h),
            ) {
                (Some(t), true) => t.clone(),
                _ => repo.commit_tree(h).await?,
            },
        );
        parent = Some(h.clone());
    }
    if *head == Head::EmptyRepo && !files.is_empty() {
        // The Git Data API refuses an empty repository: the first file goes
        // through the contents API, which makes the first commit.
        let (path, sha256, content) = files.remove(0);
        let (commit, tree, blob) = repo
            .first_commit(&link.branch, &path, &content, message, &author)
            .await?;
        store::set_pushed(sql, &link.project_id, &commit).await?;
        out.base.push((
            path.clone(),
            Some(Base {
                git_sha: blob,
                sha256: Some(sha256),
                mode: "100644".into(),
            }),
        ));
        out.pushed.push(path);
        out.commit = Some((commit.clone(), tree.clone()));
        parent = Some(commit);
        base_tree = Some(tree);
        if files.is_empty() {
            return Ok(Some(out));
        }
    }
    let sums: HashMap<String, String> = files
        .iter()
        .map(|(p, s, _)| (p.clone(), s.clone()))
        .collect();
    let blobs = repo
        .create_blobs(files.into_iter().map(|(p, _, c)| (p, c)).collect())
        .await?;
    for (p, blob) in blobs {
        changes.push(Change {
            path: p.clone(),
            blob: Some(blob.clone()),
            mode: git_mode(remote.get(&p)),
        });
        out.base.push((
            p.clone(),
            Some(Base {
                git_sha: blob,
                sha256: sums.get(&p).cloned(),
                mode: git_mode(remote.get(&p)).into(),
            }),
        ));
        out.pushed.push(p);
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    out.pushed.sort();
    let tree = repo.create_tree(base_tree.as_deref(), &changes).await?;
    let commit = repo
        .create_commit(message, &tree, parent.as_deref(), &author)
        .await?;
    store::set_pushed(sql, &link.project_id, &commit).await?;
    let moved = if *head == Head::NoBranch {
        repo.create_ref(&link.branch, &commit).await?
    } else {
        repo.update_ref(&link.branch, &commit).await?
    };
    if !moved {
        return Ok(None);
    }
    out.commit = Some((commit, tree));
    Ok(Some(out))
}

/// Commits our side of the conflicting files on a new branch off `head`.
async fn conflict_branch(
    ctx: &Ctx<'_>,
    repo: &Repo<'_>,
    link: &Link,
    head: &str,
    tree: &str,
    remote: &HashMap<String, Remote>,
    paths: &[String],
) -> ApiResult<String> {
    let sql = ctx.ports.sql.as_ref();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let files = store::local_contents(sql, &link.owner_id, &link.project_id, &refs).await?;
    let blobs = repo
        .create_blobs(files.into_iter().map(|(p, _, c)| (p, c)).collect())
        .await?;
    let mut changes: Vec<Change> = blobs
        .into_iter()
        .map(|(p, b)| Change {
            mode: git_mode(remote.get(&p)),
            path: p,
            blob: Some(b),
        })
        .collect();
    for p in paths {
        if !changes.iter().any(|c| &c.path == p) && remote.contains_key(p) {
            changes.push(Change {
                path: p.clone(),
                blob: None,
                mode: "100644",
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let new_tree = repo.create_tree(Some(tree), &changes).await?;
    let message = format!(
        "EverJust: our side of a conflict in {}\n\nThese files changed both in EverJust and on {}; this branch holds the EverJust version. Merge it to keep ours.",
        paths.join(", "),
        link.branch
    );
    let commit = repo
        .create_commit(&message, &new_tree, Some(head), &author(ctx)?)
        .await?;
    let stamp = ctx.ports.clock.now_secs();
    let mut name = format!("everjust/conflict-{stamp}");
    for n in 1..=5 {
        if repo.create_ref(&name, &commit).await? {
            return Ok(name);
        }
        name = format!("everjust/conflict-{stamp}-{n}");
    }
    Err(GhError::Status {
        status: 422,
        message: "could not name the conflict branch".into(),
    }
    .into_api())
}
