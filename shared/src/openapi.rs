//! The OpenAPI 3.1 document, generated from the route table so that every
//! route that exists is described, with the shared schemas.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::http::response::{ok, Response};
use crate::routes::{Route, ROUTES};

fn schemas() -> Value {
    json!({
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details; `code` is stable and machine-readable.",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "code": {"type": "string"}, "request_id": {"type": "string"}
            }
        },
        "Credentials": {
            "type": "object", "additionalProperties": false, "required": ["email", "password"],
            "properties": {"email": {"type": "string", "format": "email"}, "password": {"type": "string", "minLength": 10}}
        },
        "RefreshToken": {
            "type": "object", "additionalProperties": false, "required": ["refresh_token"],
            "properties": {"refresh_token": {"type": "string"}}
        },
        "OidcInfo": {
            "type": "object", "required": ["issuer", "authorization_endpoint", "client_id", "scopes"],
            "properties": {
                "issuer": {"type": "string"}, "authorization_endpoint": {"type": "string", "format": "uri"},
                "client_id": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}}
            }
        },
        "OidcCallback": {
            "type": "object", "additionalProperties": false,
            "required": ["code", "code_verifier", "redirect_uri", "nonce"],
            "properties": {
                "code": {"type": "string", "minLength": 1},
                "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$"},
                "redirect_uri": {"type": "string", "format": "uri", "description": "On this server's origin; the one sent to the authorization endpoint"},
                "nonce": {"type": "string", "minLength": 1}
            }
        },
        "User": {
            "type": "object",
            "properties": {
                "id": {"type": "string"}, "email": {"type": ["string", "null"]},
                "role": {"enum": ["user", "admin"]}, "tier": {"enum": ["free", "starter", "pro", "enterprise"]},
                "created_at": {"type": "string", "format": "date-time"}
            }
        },
        "Tokens": {
            "type": "object",
            "properties": {
                "user": {"$ref": "#/components/schemas/User"}, "access_token": {"type": "string"},
                "refresh_token": {"type": "string"}, "token_type": {"const": "Bearer"}, "expires_in": {"type": "integer"}
            }
        },
        "ProjectCreate": {
            "type": "object", "additionalProperties": false, "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                "description": {"type": "string", "maxLength": 2000},
                "template": {"enum": ["blank", "static-html", "vite-react"]}
            }
        },
        "ProjectUpdate": {
            "type": "object", "additionalProperties": false,
            "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100}, "description": {"type": "string", "maxLength": 2000}}
        },
        "Project": {
            "type": "object",
            "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
                "template": {"type": "string"}, "total_bytes": {"type": "integer"},
                "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}
            }
        },
        "File": {
            "type": "object",
            "properties": {
                "path": {"type": "string"}, "size": {"type": "integer"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "updated_at": {"type": "string", "format": "date-time"}
            }
        },
        "Page": {
            "type": "object", "required": ["items", "next_cursor"],
            "properties": {"items": {"type": "array"}, "next_cursor": {"type": ["string", "null"]}}
        }
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Request body schema and success status/schema of each route.
fn shapes(route: Route) -> (Option<Value>, u16, Option<Value>) {
    let json_body = |name: &str| {
        Some(
            json!({"required": true, "content": {"application/json": {"schema": schema_ref(name)}}}),
        )
    };
    match route {
        Route::Signup => (json_body("Credentials"), 201, Some(schema_ref("Tokens"))),
        Route::Login => (json_body("Credentials"), 200, Some(schema_ref("Tokens"))),
        Route::Refresh => (json_body("RefreshToken"), 200, Some(schema_ref("Tokens"))),
        Route::Logout => (json_body("RefreshToken"), 204, None),
        Route::OidcInfo => (None, 200, Some(schema_ref("OidcInfo"))),
        Route::OidcCallback => (json_body("OidcCallback"), 200, Some(schema_ref("Tokens"))),
        Route::Me => (None, 200, Some(schema_ref("User"))),
        Route::DeleteMe | Route::DeleteProject | Route::DeleteFile => (None, 204, None),
        Route::CreateProject => (json_body("ProjectCreate"), 201, Some(schema_ref("Project"))),
        Route::UpdateProject => (json_body("ProjectUpdate"), 200, Some(schema_ref("Project"))),
        Route::GetProject => (None, 200, Some(schema_ref("Project"))),
        Route::ListProjects | Route::ListFiles | Route::Templates => {
            (None, 200, Some(schema_ref("Page")))
        }
        Route::PutFile => (
            Some(
                json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}),
            ),
            201,
            Some(schema_ref("File")),
        ),
        Route::GetFile => (
            None,
            200,
            Some(json!({"type": "string", "format": "binary"})),
        ),
        _ => (None, 200, Some(json!({"type": "object"}))),
    }
}

fn build() -> Value {
    let mut paths = Map::new();
    for def in ROUTES {
        let path = def.path.replace("{*", "{");
        let mut params = Vec::new();
        for seg in def.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name.trim_start_matches('*'), "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        if matches!(def.route, Route::ListProjects | Route::ListFiles) {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}));
            params.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string"}}));
        }
        let (body, status, schema) = shapes(def.route);
        let mut responses = Map::new();
        let success = match schema {
            Some(s) => {
                json!({"description": "Success", "content": {"application/json": {"schema": s}}})
            }
            None => json!({"description": "Success"}),
        };
        responses.insert(status.to_string(), success);
        responses.insert(
            "default".into(),
            json!({"description": "Problem", "content": {"application/problem+json": {"schema": schema_ref("Problem")}}}),
        );
        let mut op = json!({
            "operationId": format!("{:?}", def.route),
            "summary": def.summary,
            "tags": [def.tag],
            "parameters": params,
            "responses": responses,
        });
        if let Some(b) = body {
            op["requestBody"] = b;
        }
        if def.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[def.method.as_str().to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "EverJust API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Backend of an AI app builder. Errors are application/problem+json with a stable `code`. Lists take ?limit=&cursor= and answer {items, next_cursor}."
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
        }
    })
}

pub fn document() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    ok(DOC.get_or_init(build))
}
