//! `ProjectPath`: a file path inside a project. Parsing is the only way in,
//! so code that holds one never re-checks it.

use crate::error::ApiError;

pub const MAX_BYTES: usize = 512;
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ProjectPath(String);

impl ProjectPath {
    /// Parses a decoded path: relative, `/`-separated, no empty, `.` or `..`
    /// segments, no backslash, NUL or control characters, at most 512 bytes
    /// and 32 levels.
    pub fn parse(s: &str) -> Result<ProjectPath, ApiError> {
        let bad =
            |why: &str| ApiError::bad_request("invalid_path", format!("Invalid file path: {why}."));
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.len() > MAX_BYTES {
            return Err(bad("it is longer than 512 bytes"));
        }
        if s.starts_with('/') {
            return Err(bad("it must be relative, not start with /"));
        }
        if s.contains('\\') {
            return Err(bad("it must not contain a backslash"));
        }
        if s.chars().any(char::is_control) {
            return Err(bad("it must not contain control characters"));
        }
        let segments: Vec<&str> = s.split('/').collect();
        if segments.len() > MAX_DEPTH {
            return Err(bad("it is deeper than 32 levels"));
        }
        for seg in &segments {
            match *seg {
                "" => return Err(bad("it has an empty segment")),
                "." | ".." => return Err(bad("it must not contain . or .. segments")),
                _ => {}
            }
        }
        Ok(ProjectPath(s.to_owned()))
    }

    /// Parses a path taken from a URL: percent-decoded once, then [`parse`](Self::parse).
    pub fn from_url(raw: &str) -> Result<ProjectPath, ApiError> {
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| {
                ApiError::bad_request("invalid_path", "Invalid file path: it is not UTF-8.")
            })?;
        Self::parse(&decoded)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The media type served for this path.
    pub fn content_type(&self) -> &'static str {
        let ext = self
            .0
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "html" | "htm" => "text/html; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "js" | "mjs" | "jsx" => "text/javascript; charset=utf-8",
            "ts" | "tsx" => "text/plain; charset=utf-8",
            "json" | "map" => "application/json",
            "md" | "txt" | "csv" => "text/plain; charset=utf-8",
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "jpg" | "jpeg" => "image/jpeg",
            "gif" => "image/gif",
            "webp" => "image/webp",
            "ico" => "image/x-icon",
            "wasm" => "application/wasm",
            "woff2" => "font/woff2",
            _ => "application/octet-stream",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ProjectPath;

    #[test]
    fn ordinary_paths_parse() {
        for ok in [
            "index.html",
            "src/App.jsx",
            "a/b/c/d.txt",
            "with space/é.md",
            ".gitignore",
            "a..b",
            "%2e%2e",
        ] {
            assert!(ProjectPath::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn traversal_and_odd_paths_are_rejected() {
        let deep = vec!["d"; 33].join("/");
        let long = "x".repeat(513);
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            "a\nb",
            &deep,
            &long,
        ] {
            assert!(
                ProjectPath::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn url_forms_are_decoded_once_then_checked() {
        for bad in [
            "%2e%2e/x",
            "..%2Fsecret",
            "%2Fetc%2Fpasswd",
            "a%5Cb",
            "a%00b",
            "a%2F%2Fb",
            "%ff",
        ] {
            assert!(
                ProjectPath::from_url(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert_eq!(
            ProjectPath::from_url("src%2FApp.jsx")
                .map(|p| p.as_str().to_owned())
                .ok(),
            Some("src/App.jsx".into())
        );
    }

    #[test]
    fn depth_limit_is_exactly_32() {
        assert!(ProjectPath::parse(&vec!["d"; 32].join("/")).is_ok());
        assert!(ProjectPath::parse(&"x".repeat(512)).is_ok());
    }
}
