//! Built-in starter templates: small file sets a new project can start from.

use crate::http::response::{ok, Response};

pub struct Template {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub files: &'static [(&'static str, &'static str)],
}

pub const TEMPLATES: &[Template] = &[
    Template {
        id: "blank",
        name: "Blank",
        description: "An empty project.",
        files: &[],
    },
    Template {
        id: "static-html",
        name: "Static HTML",
        description: "A single page with HTML, CSS and a script; previews without a build step.",
        files: &[
            (
                "index.html",
                include_str!("templates/static-html/index.html"),
            ),
            ("style.css", include_str!("templates/static-html/style.css")),
            ("app.js", include_str!("templates/static-html/app.js")),
        ],
    },
    Template {
        id: "vite-react",
        name: "Vite + React",
        description: "A React app built with Vite.",
        files: &[
            (
                "package.json",
                include_str!("templates/vite-react/package.json"),
            ),
            (
                "index.html",
                include_str!("templates/vite-react/index.html"),
            ),
            (
                "vite.config.js",
                include_str!("templates/vite-react/vite.config.js"),
            ),
            (
                "src/main.jsx",
                include_str!("templates/vite-react/src/main.jsx"),
            ),
            (
                "src/App.jsx",
                include_str!("templates/vite-react/src/App.jsx"),
            ),
        ],
    },
];

pub fn find(id: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.id == id)
}

pub fn list() -> Response {
    let items: Vec<_> = TEMPLATES
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "name": t.name,
                "description": t.description,
                "files": t.files.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            })
        })
        .collect();
    ok(&serde_json::json!({ "items": items, "next_cursor": null }))
}
