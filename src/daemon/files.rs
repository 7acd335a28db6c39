//! Resolving file-route paths: under the configured root, never through `..`, never escaping
//! the root through a symlink.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::ApiError;
use crate::wire::ErrorCode;

/// Maps a requested path (absolute or relative) to a path under `root`.
pub fn resolve(root: &Path, requested: &str) -> Result<PathBuf, ApiError> {
    if requested.is_empty() {
        return Err(ApiError::invalid("`path` is required"));
    }
    if requested.contains('\0') {
        return Err(ApiError::invalid("`path` must not contain NUL bytes"));
    }
    let relative = Path::new(requested.trim_start_matches('/'));
    if requested.split(['/', '\\']).any(|segment| segment == "..")
        || relative
            .components()
            .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(ApiError::new(
            ErrorCode::PathTraversal,
            format!("`..` is not allowed in paths: {requested}"),
        ));
    }
    let joined = root.join(relative);
    confine(root, &joined)?;
    Ok(joined)
}

/// Refuses a path whose nearest existing ancestor resolves (through symlinks) outside `root`.
fn confine(root: &Path, path: &Path) -> Result<(), ApiError> {
    let Ok(root) = root.canonicalize() else {
        return Ok(());
    };
    if root == Path::new("/") {
        return Ok(());
    }
    let mut probe = path.to_path_buf();
    loop {
        if let Ok(real) = probe.canonicalize() {
            if real.starts_with(&root) {
                return Ok(());
            }
            return Err(ApiError::new(
                ErrorCode::PathTraversal,
                "the path leaves the files root",
            ));
        }
        if !probe.pop() {
            return Ok(());
        }
    }
}

/// Maps a filesystem error to an API error (4xx for anything the caller caused).
pub fn io_error(err: io::Error, path: &str) -> ApiError {
    use io::ErrorKind as K;
    match err.kind() {
        K::NotFound => ApiError::not_found(format!("`{path}`")),
        K::IsADirectory => {
            ApiError::new(ErrorCode::IsDirectory, format!("`{path}` is a directory"))
        }
        K::NotADirectory => ApiError::new(
            ErrorCode::NotADirectory,
            format!("`{path}` is not a directory"),
        ),
        K::PermissionDenied | K::ReadOnlyFilesystem => {
            ApiError::invalid(format!("permission denied: `{path}`"))
        }
        K::AlreadyExists | K::InvalidInput | K::InvalidFilename | K::DirectoryNotEmpty => {
            ApiError::invalid(format!("`{path}`: {err}"))
        }
        _ => match err.raw_os_error() {
            Some(libc::ENAMETOOLONG) | Some(libc::ELOOP) | Some(libc::EINVAL) => {
                ApiError::invalid(format!("`{path}`: {err}"))
            }
            _ => ApiError::internal(format!("`{path}`: {err}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused_and_paths_stay_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        for bad in ["../etc/passwd", "/a/../../b", "a/..", "..", "a\\..\\b"] {
            let err = resolve(root.path(), bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::PathTraversal, "{bad}");
        }
        assert_eq!(
            resolve(root.path(), "/x/y").unwrap(),
            root.path().join("x/y")
        );
        assert_eq!(resolve(root.path(), "x").unwrap(), root.path().join("x"));
        assert_eq!(
            resolve(root.path(), "").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("out")).unwrap();
        assert_eq!(
            resolve(root.path(), "out/passwd").unwrap_err().code,
            ErrorCode::PathTraversal
        );
    }
}
