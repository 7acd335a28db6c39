//! The persisted process table and idempotency keys: an append-only JSON-lines journal under
//! `--state-dir`, compacted at start-up. The last record for a handle wins.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::wire::{ProcessInfo, StartProcessRequest};

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// The current state of a process.
    Process {
        info: Box<ProcessInfo>,
        spec: Box<StartProcessRequest>,
    },
    /// A process record was dropped (record limit).
    Forget { handle: u64 },
    /// An idempotency key and what it answered.
    Key {
        key: String,
        fingerprint: u64,
        handle: u64,
    },
    /// Free-form state of other parts (PTY sessions), keyed by kind and id; `null` removes it.
    Other {
        kind: String,
        id: String,
        value: serde_json::Value,
    },
}

/// What was loaded at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub processes: BTreeMap<u64, (ProcessInfo, StartProcessRequest)>,
    pub keys: BTreeMap<String, (u64, u64)>,
    pub other: BTreeMap<(String, String), serde_json::Value>,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl Journal {
    const FILE: &'static str = "state.jsonl";

    /// Loads the journal in `dir` (creating it), compacts it, and opens it for appending.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, Loaded)> {
        fs::create_dir_all(dir)?;
        // The journal can hold PTY attach tokens (to replay idempotent creates): owner only.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let path = dir.join(Self::FILE);
        let mut loaded = Loaded::default();
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                // A torn last line (crash mid-write) is skipped, not fatal.
                let Ok(record) = serde_json::from_str::<Record>(&line) else {
                    continue;
                };
                match record {
                    Record::Process { info, spec } => {
                        loaded.processes.insert(info.handle, (*info, *spec));
                    }
                    Record::Forget { handle } => {
                        loaded.processes.remove(&handle);
                        loaded.keys.retain(|_, (_, h)| *h != handle);
                    }
                    Record::Key {
                        key,
                        fingerprint,
                        handle,
                    } => {
                        loaded.keys.insert(key, (fingerprint, handle));
                    }
                    Record::Other { kind, id, value } => {
                        if value.is_null() {
                            loaded.other.remove(&(kind, id));
                        } else {
                            loaded.other.insert((kind, id), value);
                        }
                    }
                }
            }
        }
        let journal = Journal {
            file: Mutex::new(BufWriter::new(private_file(&dir.join("state.jsonl.tmp"))?)),
            path,
        };
        Ok((journal, loaded))
    }

    /// Writes the compacted state and swaps it in as the live journal.
    pub fn compact(&self, records: impl IntoIterator<Item = Record>) -> std::io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut out = BufWriter::new(private_file(&tmp)?);
        for record in records {
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        fs::rename(&tmp, &self.path)?;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = BufWriter::new(file);
        Ok(())
    }

    /// Appends one record. Written through to the OS before returning, so a daemon crash right
    /// after a start still knows the start.
    pub fn append(&self, record: &Record) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let result = serde_json::to_writer(&mut *file, record)
            .map_err(std::io::Error::from)
            .and_then(|_| file.write_all(b"\n"))
            .and_then(|_| file.flush());
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not persist state");
        }
    }
}

/// Creates (truncating) a file only its owner can read.
fn private_file(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` only applies to a new file; an older one keeps its bits unless told.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}
