//! Keeping a sandbox's copy of the project in step with the project store
//! (the truth): upload the files whose hash changed since the last upload,
//! delete the ones that are gone. An unchanged project uploads nothing.

use std::collections::BTreeMap;

use crate::db::files;
use crate::ports::sql::{Sql, SqlError};

use super::provider::{Handle, ProviderError, SandboxProvider, Upload, PROJECT_DIR};
use super::store;

/// What to send and what to remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Paths new or changed since the last upload.
    pub upload: Vec<String>,
    /// Paths uploaded before and no longer in the project.
    pub remove: Vec<String>,
}

/// Compares the project's `(path, sha256)` list with the one last uploaded.
pub fn plan(project: &[(String, String)], uploaded: &[(String, String)]) -> Plan {
    let before: BTreeMap<&str, &str> = uploaded
        .iter()
        .map(|(p, h)| (p.as_str(), h.as_str()))
        .collect();
    let now: BTreeMap<&str, &str> = project
        .iter()
        .map(|(p, h)| (p.as_str(), h.as_str()))
        .collect();
    Plan {
        upload: now
            .iter()
            .filter(|(p, h)| before.get(*p) != Some(*h))
            .map(|(p, _)| (*p).to_owned())
            .collect(),
        remove: before
            .keys()
            .filter(|p| !now.contains_key(*p))
            .map(|p| (*p).to_owned())
            .collect(),
    }
}

/// The report of one sync.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub uploaded: usize,
    pub removed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Files per content query (and upload round).
const CHUNK: usize = 100;

pub fn sandbox_path(path: &str) -> String {
    format!("{PROJECT_DIR}/{path}")
}

/// Brings the sandbox's files in step with the project. What was uploaded
/// is recorded as it goes, so an interrupted sync resumes where it stopped.
pub async fn run(
    sql: &dyn Sql,
    provider: &dyn SandboxProvider,
    project: &str,
    handle: Handle<'_>,
) -> Result<Report, SyncError> {
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = files::page(sql, project, after.as_deref(), 1000).await?;
        let full = page.len() == 1000;
        after = page.last().map(|f| f.path.clone());
        listed.extend(page.into_iter().map(|f| (f.path, f.sha256)));
        if !full {
            break;
        }
    }
    let uploaded = store::uploaded(sql, project).await?;
    let plan = plan(&listed, &uploaded);
    let mut report = Report::default();
    if listed.is_empty() && uploaded.is_empty() {
        // An empty project still needs its directory: commands run there.
        provider.make_dir(handle, PROJECT_DIR).await?;
    }
    for chunk in plan.upload.chunks(CHUNK) {
        let found = store::contents(sql, project, chunk).await?;
        if found.is_empty() {
            continue;
        }
        let uploads: Vec<Upload> = found
            .iter()
            .map(|(p, _, c)| Upload {
                path: sandbox_path(p),
                content: c.clone(),
            })
            .collect();
        provider.upload(handle, &uploads).await?;
        let done: Vec<(String, String)> = found.into_iter().map(|(p, h, _)| (p, h)).collect();
        store::record_uploaded(sql, project, &done).await?;
        report.uploaded += done.len();
    }
    for path in &plan.remove {
        provider.remove(handle, &sandbox_path(path)).await?;
        store::forget_uploaded(sql, project, path).await?;
        report.removed += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(p, h)| ((*p).to_owned(), (*h).to_owned()))
            .collect()
    }

    #[test]
    fn an_unchanged_project_uploads_nothing() {
        let files = list(&[("a.txt", "h1"), ("src/b.js", "h2")]);
        assert_eq!(plan(&files, &files), Plan::default());
    }

    #[test]
    fn the_first_upload_sends_every_file() {
        let files = list(&[("a.txt", "h1"), ("src/b.js", "h2")]);
        assert_eq!(
            plan(&files, &[]),
            Plan {
                upload: vec!["a.txt".into(), "src/b.js".into()],
                remove: vec![]
            }
        );
    }

    #[test]
    fn changed_new_and_deleted_files_are_told_apart() {
        let before = list(&[("a.txt", "h1"), ("gone.txt", "h9"), ("same.css", "h3")]);
        let now = list(&[("a.txt", "h1-new"), ("new.txt", "h4"), ("same.css", "h3")]);
        assert_eq!(
            plan(&now, &before),
            Plan {
                upload: vec!["a.txt".into(), "new.txt".into()],
                remove: vec!["gone.txt".into()]
            }
        );
    }

    #[test]
    fn files_land_under_the_project_directory() {
        assert_eq!(
            sandbox_path("src/a b.js"),
            format!("{PROJECT_DIR}/src/a b.js")
        );
    }
}
