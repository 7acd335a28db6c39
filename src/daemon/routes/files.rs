//! `/api/v1/files`: read, atomic write, delete, list.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::super::files::{io_error, resolve};
use super::super::{ApiError, Daemon};
use crate::wire::{ErrorBody, ErrorCode, FileEntry, FileList};

/// `?path=`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct PathQuery {
    /// Absolute or relative path; `..` is refused.
    pub path: String,
}

type Q = Result<Query<PathQuery>, axum::extract::rejection::QueryRejection>;

#[utoipa::path(get, path = "/api/v1/files", tag = "files", params(PathQuery),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "A directory (IS_DIRECTORY) or a bad path", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "`..` in the path (PATH_TRAVERSAL)", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub async fn read(State(daemon): State<Arc<Daemon>>, query: Q) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let path = resolve(&daemon.config.files_root, &q.path)?;
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| io_error(e, &q.path))?;
    if meta.is_dir() {
        return Err(ApiError::new(
            ErrorCode::IsDirectory,
            format!("`{}` is a directory", q.path),
        ));
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| io_error(e, &q.path))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, meta.len().to_string()),
        ],
        body,
    )
        .into_response())
}

#[utoipa::path(put, path = "/api/v1/files", tag = "files", params(PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 204, description = "Written atomically (parents created)"),
        (status = 400, description = "The path is a directory or unusable", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "`..` in the path (PATH_TRAVERSAL)", body = ErrorBody),
        (status = 413, description = "Body larger than the daemon's file limit", body = ErrorBody),
    ))]
pub async fn write(
    State(daemon): State<Arc<Daemon>>,
    query: Q,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Query(q) = query?;
    let path = resolve(&daemon.config.files_root, &q.path)?;
    let limit = daemon.config.max_file_bytes as u64;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("files are limited to {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        return Err(ApiError::new(
            ErrorCode::IsDirectory,
            format!("`{}` is a directory", q.path),
        ));
    }
    let parent = path
        .parent()
        .ok_or_else(|| ApiError::invalid("cannot write to the root"))?;
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| io_error(e, &q.path))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp-{}", super::super::random_id(6)));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| io_error(e, &q.path))?;
        let mut written = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid(format!("reading the body: {e}")))?;
            written += chunk.len() as u64;
            if written > limit {
                return Err(too_large());
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| io_error(e, &q.path))?;
        }
        file.sync_all().await.map_err(|e| io_error(e, &q.path))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_error(e, &q.path))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result.map(|_| StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/files", tag = "files", params(PathQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A directory (IS_DIRECTORY) or a bad path", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "`..` in the path (PATH_TRAVERSAL)", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
pub async fn delete(State(daemon): State<Arc<Daemon>>, query: Q) -> Result<StatusCode, ApiError> {
    let Query(q) = query?;
    let path = resolve(&daemon.config.files_root, &q.path)?;
    let meta = tokio::fs::symlink_metadata(&path)
        .await
        .map_err(|e| io_error(e, &q.path))?;
    if meta.is_dir() {
        return Err(ApiError::new(
            ErrorCode::IsDirectory,
            format!("`{}` is a directory", q.path),
        ));
    }
    tokio::fs::remove_file(&path)
        .await
        .map_err(|e| io_error(e, &q.path))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/files/list", tag = "files", params(PathQuery),
    responses(
        (status = 200, description = "Directories first, then files, each alphabetically", body = FileList),
        (status = 400, description = "Not a directory (NOT_A_DIRECTORY) or a bad path", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "`..` in the path (PATH_TRAVERSAL)", body = ErrorBody),
        (status = 404, description = "No such directory", body = ErrorBody),
    ))]
pub async fn list(State(daemon): State<Arc<Daemon>>, query: Q) -> Result<Json<FileList>, ApiError> {
    let Query(q) = query?;
    let path = resolve(&daemon.config.files_root, &q.path)?;
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(|e| io_error(e, &q.path))?;
    if !meta.is_dir() {
        return Err(ApiError::new(
            ErrorCode::NotADirectory,
            format!("`{}` is not a directory", q.path),
        ));
    }
    let mut dir = tokio::fs::read_dir(&path)
        .await
        .map_err(|e| io_error(e, &q.path))?;
    let mut entries = Vec::new();
    while let Some(entry) = dir.next_entry().await.map_err(|e| io_error(e, &q.path))? {
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let modified_at = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64);
        entries.push(FileEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            is_dir: meta.is_dir(),
            size: (!meta.is_dir()).then_some(meta.len()),
            modified_at,
        });
    }
    entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
    Ok(Json(FileList {
        path: q.path,
        entries,
    }))
}
