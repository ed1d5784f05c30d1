//! The admin API: load, unload and list Whisper models at run time.
//!
//! Off unless `STT_ADMIN_ENABLED=true` (ERR4001); every request carries
//! `Authorization: Bearer $STT_ADMIN_TOKEN`, compared in constant time
//! (ERR4004). A model is named by id (a provisioned `ggml-<id>.bin` in the
//! models directory) or, only with `STT_ADMIN_ALLOW_MODEL_PATH=true`, by
//! `model_path`, which must resolve — after `..` and symlinks — under one of
//! the `STT_ADMIN_MODEL_PATH_ALLOWLIST` prefixes (ERR4005).

use std::path::{Component, Path, PathBuf};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::error::{ErrorCode, SttError};
use crate::server::settings::AdminSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadRequest {
    /// The id sessions use; defaults to the file's (`ggml-base.bin` → `base`).
    #[serde(default)]
    model_id: Option<String>,
    #[serde(default)]
    model_path: Option<String>,
}

/// Unload parameters: the original's query form
/// (`?model_id=…&drain_timeout_sec=…`), or a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnloadRequest {
    #[serde(default)]
    model_id: Option<String>,
    /// Seconds to wait for the model's sessions to end before answering.
    #[serde(default)]
    drain_timeout_sec: Option<f64>,
}

/// `?model_id=…`.
#[derive(Debug, Deserialize)]
pub struct ModelQuery {
    model_id: Option<String>,
}

/// Longest drain an unload request may wait.
const MAX_DRAIN: std::time::Duration = std::time::Duration::from_secs(600);

/// Middleware on every `/admin/` route: ERR4001 when the API is off,
/// ERR4004 without the right bearer token — before any handler runs.
pub async fn guard(
    State(s): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match authorize(&s.admin, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `POST /admin/load_model`: starts loading and answers 202 at once; the
/// status shows in `GET /admin/list_models`.
pub async fn load_model(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: LoadRequest = parse_body(&body)?;
    let (id, path) = match (req.model_id, req.model_path) {
        (id, Some(raw)) => {
            let path = allowed_model_path(&s.admin, &raw)?;
            let id = match id {
                Some(id) => checked_id(&id)?,
                None => crate::models::store::model_id(&path),
            };
            (id, path)
        }
        (Some(id), None) => {
            let id = checked_id(&id)?;
            let path = s.models.resolve(&id).path;
            if !path.exists() {
                return Err(SttError::new(
                    ErrorCode::Err4003,
                    format!(
                        "model {id:?} is not provisioned (no {}); put a CTranslate2 model \
                         directory there, or a ggml file made with `stt models import`",
                        path.display()
                    ),
                )
                .into());
            }
            (id, path)
        }
        (None, None) => {
            return Err(SttError::new(
                ErrorCode::Err4006,
                "the body needs `model_id` (a provisioned model) or `model_path`",
            )
            .into())
        }
    };
    // A broken model is refused here, with the file at fault named, rather
    // than failing later in the background load.
    crate::engine::ModelSource::from_path(&path)
        .check()
        .map_err(|e| SttError::new(ErrorCode::Err4003, format!("cannot load {id:?}: {e}")))?;
    s.models.load(id.clone(), path.clone())?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": "loading",
            "model_id": id,
            "model_path": path.display().to_string(),
        })),
    ))
}

/// `POST /admin/unload_model?model_id=…&drain_timeout_sec=…` (or the same
/// as a JSON body): the model takes no new sessions at once and goes away
/// when the sessions using it have ended. With `drain_timeout_sec` the
/// answer waits up to that long for them.
pub async fn unload_model(
    State(s): State<AppState>,
    query: axum::extract::Query<UnloadRequest>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: UnloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        UnloadRequest::default()
    } else {
        parse_body(&body)?
    };
    let query = query.0;
    let id = query.model_id.or(body.model_id).ok_or_else(|| {
        SttError::new(
            ErrorCode::Err4006,
            "name the model: ?model_id=… or {\"model_id\": …}",
        )
    })?;
    let id = id.trim().to_string();
    let drain = match query.drain_timeout_sec.or(body.drain_timeout_sec) {
        Some(d) if d.is_finite() && d >= 0.0 => crate::config::seconds(d).min(MAX_DRAIN),
        Some(d) => {
            return Err(SttError::new(
                ErrorCode::Err4006,
                format!("drain_timeout_sec must be a non-negative number of seconds, got {d}"),
            )
            .into())
        }
        None => std::time::Duration::ZERO,
    };
    s.models.unload(&id)?;
    let sessions = |s: &AppState| {
        s.models
            .list()
            .into_iter()
            .find(|m| m.id == id)
            .map_or(0, |m| m.sessions)
    };
    let deadline = tokio::time::Instant::now() + drain;
    while sessions(&s) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let left = sessions(&s);
    Ok(Json(json!({
        "status": if left > 0 { "unloading" } else { "unloaded" },
        "model_id": id,
        "sessions": left,
        "drained": left == 0,
    })))
}

/// `GET /admin/load_model_status?model_id=…`: one model's state
/// (`loading`, `ready`, `unloading`, `failed` with its error).
pub async fn load_model_status(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<ModelQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = q
        .model_id
        .ok_or_else(|| SttError::new(ErrorCode::Err4006, "name the model: ?model_id=…"))?;
    let id = checked_id(&id)?;
    let model = s
        .models
        .list()
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| {
            SttError::new(
                ErrorCode::Err4003,
                format!("no model {id:?} is loaded or loading (see /admin/list_models)"),
            )
        })?;
    Ok(Json(json!({
        "model_id": model.id,
        "status": model.status,
        "error": model.error,
        "sessions": model.sessions,
        "default": model.default,
    })))
}

/// `GET /admin/list_models`: every model with its status.
pub async fn list_models(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "default_model": s.models.default_id(),
        "models": s.models.list(),
    })))
}

/// ERR4001 when the API is off, ERR4004 without the right bearer token.
fn authorize(admin: &AdminSettings, headers: &HeaderMap) -> Result<(), SttError> {
    if !admin.enabled {
        return Err(SttError::new(
            ErrorCode::Err4001,
            "the admin API is not enabled: start the server with STT_ADMIN_ENABLED=true and STT_ADMIN_TOKEN set",
        ));
    }
    let expected = admin.token.as_deref().unwrap_or_default();
    match presented_token(headers) {
        Some(token) if !expected.is_empty() && crate::server::secret::matches(expected, token) => {
            Ok(())
        }
        Some(_) => Err(SttError::new(ErrorCode::Err4004, "invalid admin token")),
        None => Err(SttError::new(
            ErrorCode::Err4004,
            "missing admin token: send `Authorization: Bearer <STT_ADMIN_TOKEN>`",
        )),
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::server::secret::bearer_token)
}

fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, SttError> {
    serde_json::from_slice(body).map_err(|e| {
        SttError::new(
            ErrorCode::Err4006,
            format!("the request body must be a JSON object: {e}"),
        )
    })
}

/// Model ids become file names and metric labels: short, plain characters.
fn checked_id(id: &str) -> Result<String, SttError> {
    let id = id.trim();
    let plain = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if id.is_empty() || id.len() > 64 || !plain || id.starts_with('.') {
        return Err(SttError::new(
            ErrorCode::Err4006,
            format!("model_id {id:?} must be 1-64 letters, digits, '.', '_' or '-', not starting with '.'"),
        ));
    }
    Ok(id.to_string())
}

/// The canonical file `raw` names, if loading by path is allowed and it
/// lies under an allowlisted prefix.
fn allowed_model_path(admin: &AdminSettings, raw: &str) -> Result<PathBuf, SttError> {
    use crate::env::{ENV_ADMIN_ALLOW_MODEL_PATH, ENV_ADMIN_MODEL_PATH_ALLOWLIST};
    if !admin.allow_model_path {
        return Err(SttError::new(
            ErrorCode::Err4005,
            format!("model_path is not allowed: set {ENV_ADMIN_ALLOW_MODEL_PATH}=true (and {ENV_ADMIN_MODEL_PATH_ALLOWLIST}) to load files by path, or load a provisioned model by model_id"),
        ));
    }
    let outside = |p: &Path| {
        SttError::new(
            ErrorCode::Err4005,
            format!(
                "model_path {raw:?} resolves to {}, outside {ENV_ADMIN_MODEL_PATH_ALLOWLIST} ({})",
                p.display(),
                admin.allowlist.join(", ")
            ),
        )
    };
    // Symlinks and `..` are resolved first, so neither can escape a prefix.
    let resolved = match std::fs::canonicalize(raw) {
        Ok(p) => p,
        Err(e) => {
            // Say "outside" rather than "missing" for paths we would refuse
            // anyway, so the API does not probe the file system.
            let lexical = normalize(Path::new(raw));
            if !under_allowlist(admin, &lexical) {
                return Err(outside(&lexical));
            }
            return Err(SttError::new(
                ErrorCode::Err4003,
                format!("model_path {raw:?} cannot be opened: {e}"),
            ));
        }
    };
    if !under_allowlist(admin, &resolved) {
        return Err(outside(&resolved));
    }
    if !resolved.is_file() && !resolved.is_dir() {
        return Err(SttError::new(
            ErrorCode::Err4003,
            format!("model_path {raw:?} is neither a ggml file nor a CTranslate2 directory"),
        ));
    }
    Ok(resolved)
}

/// Whether `path` (already resolved) lies under an allowlisted prefix,
/// compared by whole components (`/models` does not admit `/models-x`). An
/// empty allowlist admits any path.
fn under_allowlist(admin: &AdminSettings, path: &Path) -> bool {
    if admin.allowlist.is_empty() {
        return true;
    }
    admin.allowlist.iter().any(|prefix| {
        let prefix = std::fs::canonicalize(prefix).unwrap_or_else(|_| normalize(Path::new(prefix)));
        path.starts_with(&prefix)
    })
}

/// `a/b/../c` → `a/c` without touching the file system; relative paths are
/// taken from the working directory.
fn normalize(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(allow: bool, list: &[&str]) -> AdminSettings {
        AdminSettings {
            enabled: true,
            token: Some("s3cret".into()),
            allow_model_path: allow,
            allowlist: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn bearer(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_checked() {
        let a = admin(false, &[]);
        assert!(authorize(&a, &bearer("Bearer s3cret")).is_ok());
        assert!(authorize(&a, &bearer("bearer  s3cret ")).is_ok());
        for bad in ["Bearer s3cre", "Bearer", "Basic s3cret", "s3cret"] {
            assert_eq!(
                authorize(&a, &bearer(bad)).unwrap_err().code,
                ErrorCode::Err4004,
                "{bad}"
            );
        }
        assert_eq!(
            authorize(&a, &HeaderMap::new()).unwrap_err().code,
            ErrorCode::Err4004
        );
        let off = AdminSettings::default();
        assert_eq!(
            authorize(&off, &bearer("Bearer s3cret")).unwrap_err().code,
            ErrorCode::Err4001
        );
    }

    #[test]
    fn paths_stay_inside_the_allowlist() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("models");
        let other = dir.path().join("models-other");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(allowed.join("m.bin"), b"x").unwrap();
        std::fs::write(other.join("m.bin"), b"x").unwrap();
        std::os::unix::fs::symlink(other.join("m.bin"), allowed.join("link.bin")).unwrap();
        let a = admin(true, &[allowed.to_str().unwrap()]);
        let p = |s: &Path| s.to_str().unwrap().to_string();
        let code = |raw: String| allowed_model_path(&a, &raw).map(|_| ()).map_err(|e| e.code);

        assert!(allowed_model_path(&a, &p(&allowed.join("m.bin"))).is_ok());
        assert_eq!(code(p(&other.join("m.bin"))), Err(ErrorCode::Err4005));
        assert_eq!(
            code(format!("{}/../models-other/m.bin", p(&allowed))),
            Err(ErrorCode::Err4005)
        );
        assert_eq!(code(p(&allowed.join("link.bin"))), Err(ErrorCode::Err4005));
        assert_eq!(
            code(p(&allowed.join("missing.bin"))),
            Err(ErrorCode::Err4003)
        );
        assert_eq!(
            code(format!("{}/../nowhere/x.bin", p(&allowed))),
            Err(ErrorCode::Err4005)
        );
        let off = admin(false, &[]);
        assert_eq!(
            allowed_model_path(&off, &p(&allowed.join("m.bin")))
                .unwrap_err()
                .code,
            ErrorCode::Err4005
        );
    }

    #[test]
    fn ids_are_plain() {
        assert_eq!(checked_id(" base ").unwrap(), "base");
        assert!(checked_id("tiny.en").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "x y"] {
            assert_eq!(
                checked_id(bad).unwrap_err().code,
                ErrorCode::Err4006,
                "{bad}"
            );
        }
    }
}
