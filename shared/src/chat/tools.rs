//! The agent's tools. File tools go through the same code as the files API
//! (path rules, size limits, audit); failures become tool errors the model
//! reads, never a failed run.

use serde_json::{json, Value};

use crate::db::files;
use crate::error::ApiError;
use crate::llm::ToolSpec;
use crate::projects::files::{delete_file, write_file, Actor};
use crate::projects::path::ProjectPath;
use crate::routes::Ctx;

/// Longest tool output sent back to the model.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

pub fn specs() -> Vec<ToolSpec> {
    let path = json!({"type": "string", "description": "Relative path inside the project, like src/App.jsx"});
    vec![
        ToolSpec {
            name: "list_files",
            description: "List every file of the project with its size in bytes.",
            input_schema: json!({"type": "object", "properties": {}}),
        },
        ToolSpec {
            name: "read_file",
            description: "Read one file of the project.",
            input_schema: json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
        },
        ToolSpec {
            name: "write_file",
            description: "Create or replace one file with the complete new content.",
            input_schema: json!({"type": "object", "properties": {"path": path, "content": {"type": "string"}}, "required": ["path", "content"]}),
        },
        ToolSpec {
            name: "edit_file",
            description: "Replace the exact text `old` (which must occur exactly once) with `new` in one file.",
            input_schema: json!({"type": "object", "properties": {"path": path, "old": {"type": "string"}, "new": {"type": "string"}}, "required": ["path", "old", "new"]}),
        },
        ToolSpec {
            name: "delete_file",
            description: "Delete one file.",
            input_schema: json!({"type": "object", "properties": {"path": path}, "required": ["path"]}),
        },
        ToolSpec {
            name: "run_command",
            description: "Run a shell command in the project's sandbox and return its exit code and output.",
            input_schema: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        },
    ]
}

/// What a tool call produced: output for the model, whether it failed, and
/// whether it changed the project's files.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    pub output: String,
    pub is_error: bool,
    pub changed_files: bool,
}

fn err(msg: impl Into<String>) -> ToolOutcome {
    ToolOutcome {
        output: msg.into(),
        is_error: true,
        changed_files: false,
    }
}

fn done(msg: impl Into<String>, changed: bool) -> ToolOutcome {
    ToolOutcome {
        output: truncate(msg.into()),
        is_error: false,
        changed_files: changed,
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_OUTPUT_BYTES {
        let mut cut = MAX_OUTPUT_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = s.len();
        s.truncate(cut);
        s.push_str(&format!(
            "\n[output truncated: {cut} of {total} bytes shown]"
        ));
    }
    s
}

fn field<'a>(input: &'a Value, name: &str) -> Result<&'a str, ToolOutcome> {
    input
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| err(format!("Missing string field `{name}` in the tool input.")))
}

fn api_err(e: ApiError) -> ToolOutcome {
    err(format!("{} ({})", e.detail, e.code))
}

/// Runs tool `name` with `input` (`None` when the input was not valid JSON).
pub async fn execute(
    ctx: &Ctx<'_>,
    owner: &str,
    project: &str,
    name: &str,
    input: Option<&Value>,
) -> ToolOutcome {
    let Some(input) = input.filter(|v| v.is_object()) else {
        return err("The tool input was not a valid JSON object; nothing was done.");
    };
    let result = run(ctx, owner, project, name, input).await;
    result.unwrap_or_else(|e| e)
}

async fn run(
    ctx: &Ctx<'_>,
    owner: &str,
    project: &str,
    name: &str,
    input: &Value,
) -> Result<ToolOutcome, ToolOutcome> {
    let sql = ctx.ports.sql.as_ref();
    let path = || ProjectPath::parse(field(input, "path")?).map_err(api_err);
    match name {
        "list_files" => {
            let list = files::page(sql, project, None, 1000)
                .await
                .map_err(|e| api_err(e.into()))?;
            if list.is_empty() {
                return Ok(done("The project has no files yet.", false));
            }
            Ok(done(
                list.iter()
                    .map(|f| format!("{} ({} bytes)", f.path, f.size))
                    .collect::<Vec<_>>()
                    .join("\n"),
                false,
            ))
        }
        "read_file" => {
            let p = path()?;
            let (_, content) = files::read(sql, owner, project, &p)
                .await
                .map_err(|e| api_err(e.into()))?
                .ok_or_else(|| err(format!("{} does not exist.", p.as_str())))?;
            match String::from_utf8(content) {
                Ok(text) => Ok(done(text, false)),
                Err(e) => Ok(done(
                    format!(
                        "{} is a binary file of {} bytes.",
                        p.as_str(),
                        e.as_bytes().len()
                    ),
                    false,
                )),
            }
        }
        "write_file" => {
            let p = path()?;
            let content = field(input, "content")?;
            let (meta, _) = write_file(ctx, owner, project, &p, content.as_bytes(), Actor::Agent)
                .await
                .map_err(api_err)?;
            Ok(done(
                format!("Wrote {} ({} bytes).", meta.path, meta.size),
                true,
            ))
        }
        "edit_file" => {
            let p = path()?;
            let (old, new) = (field(input, "old")?, field(input, "new")?);
            if old.is_empty() {
                return Err(err("`old` must not be empty."));
            }
            let (_, content) = files::read(sql, owner, project, &p)
                .await
                .map_err(|e| api_err(e.into()))?
                .ok_or_else(|| err(format!("{} does not exist.", p.as_str())))?;
            let text = String::from_utf8(content).map_err(|_| err("Cannot edit a binary file."))?;
            // Overlapping occurrences count: `a\na` is twice in `a\na\na`.
            let step = old.chars().next().map_or(1, char::len_utf8);
            let (mut occurrences, mut from) = (0usize, 0usize);
            while let Some(i) = text[from..].find(old) {
                occurrences += 1;
                from += i + step;
            }
            match occurrences {
                0 => Err(err(format!("The text to replace was not found in {}; read the file and try again.", p.as_str()))),
                1 => {
                    let updated = text.replacen(old, new, 1);
                    write_file(ctx, owner, project, &p, updated.as_bytes(), Actor::Agent).await.map_err(api_err)?;
                    Ok(done(format!("Edited {}.", p.as_str()), true))
                }
                n => Err(err(format!("The text to replace occurs {n} times in {}; include more surrounding text so it is unique.", p.as_str()))),
            }
        }
        "delete_file" => {
            let p = path()?;
            delete_file(ctx, owner, project, &p, Actor::Agent)
                .await
                .map_err(api_err)?;
            Ok(done(format!("Deleted {}.", p.as_str()), true))
        }
        "run_command" => {
            let out =
                crate::sandbox::run_command(ctx, owner, project, field(input, "command")?).await;
            if out.is_error {
                Err(out)
            } else {
                Ok(out)
            }
        }
        other => Err(err(format!("There is no tool named {other}."))),
    }
}
