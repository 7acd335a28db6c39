use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One entry of `GET /files/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub is_dir: bool,
    /// Size in bytes; null for directories.
    pub size: Option<u64>,
    /// Last modification, milliseconds since the epoch.
    pub modified_at: Option<i64>,
}

/// `GET /files/list?path=P`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    pub path: String,
    pub entries: Vec<FileEntry>,
}
