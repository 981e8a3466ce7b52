//! Where dc-search keeps things: the cache folder (`DC_SEARCH_CACHE`, default
//! `~/.cache/dc-search`) and atomic file writes (temp file, fsync, rename) so no output
//! is ever half-written.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The cache folder: trained weights, downloaded data, libtorch.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("DC_SEARCH_CACHE") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("dc-search")
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so
/// readers see the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create folder {} (check permissions)", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".dc-search-")
        .suffix(".part")
        .tempfile_in(&dir)
        .with_context(|| {
            format!(
                "cannot write in folder {} (check permissions and free space)",
                dir.display()
            )
        })?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {} (disk full?)", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(())
}

/// [`write_atomic`] for text.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes())
}

/// The run folder `base/name`, or `base/name-2`, `-3`, … when that one holds a finished
/// run (`summary.json`): a rerun after a crash resumes its unfinished folder, a new run
/// never writes over a finished one.
pub fn fresh_run_folder(base: &Path, name: &str) -> PathBuf {
    (1..)
        .map(|i| match i {
            1 => base.join(name),
            i => base.join(format!("{name}-{i}")),
        })
        .find(|p| !p.join("summary.json").exists())
        .expect("some folder number is free")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.txt");
        write_text(&p, "one").unwrap();
        write_text(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        let entries: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn a_finished_run_folder_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        assert_eq!(fresh_run_folder(base, "x"), base.join("x"));
        // unfinished (a crash): resumed in place
        write_text(&base.join("x").join("journal.jsonl"), "").unwrap();
        assert_eq!(fresh_run_folder(base, "x"), base.join("x"));
        write_text(&base.join("x").join("summary.json"), "{}").unwrap();
        assert_eq!(fresh_run_folder(base, "x"), base.join("x-2"));
        write_text(&base.join("x-2").join("summary.json"), "{}").unwrap();
        assert_eq!(fresh_run_folder(base, "x"), base.join("x-3"));
    }
}
