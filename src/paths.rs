//! Where dc-search keeps things and how it touches files: the cache folder
//! (`DC_SEARCH_CACHE`, default `~/.cache/dc-search`); bounded reads ([`read_regular`],
//! [`read_prefix`]) that refuse FIFOs, devices and folders before opening them, so no input
//! blocks or streams forever; and atomic writes (temp file, fsync, rename) so no output is
//! ever half-written, with the permissions the umask gives a new file; content hashes.

use std::io::{Read, Write};
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

/// The largest weights file, TorchScript module or checkpoint read (16 GiB).
pub const MAX_MODEL_BYTES: u64 = 1 << 34;
/// The largest config or ratios file read (16 MiB).
pub const MAX_TEXT_BYTES: u64 = 16 << 20;

/// Refuses `path` unless it is a regular file (following links): a FIFO would block, and
/// a device such as `/dev/zero` never ends. `what` names the input in the error.
pub fn check_regular(path: &Path, what: &str) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        anyhow::bail!("{what} {} is {kind}: give a regular file", path.display());
    }
    Ok(meta)
}

/// Reads a whole regular file of at most `max_bytes`; `what` names it in errors.
pub fn read_regular(path: &Path, what: &str, max_bytes: u64) -> Result<Vec<u8>> {
    let meta = check_regular(path, what)?;
    if meta.len() > max_bytes {
        anyhow::bail!(
            "{what} {} is {} bytes, more than the {max_bytes} bytes such a file can hold",
            path.display(),
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(max_bytes + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() as u64 > max_bytes {
        anyhow::bail!(
            "{what} {} grew past {max_bytes} bytes while it was read",
            path.display()
        );
    }
    Ok(bytes)
}

/// The first `n` bytes of a regular file (fewer if it is shorter); `None` when `path` is
/// not a regular file or cannot be read.
pub fn read_prefix(path: &Path, n: usize) -> Option<Vec<u8>> {
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::with_capacity(n);
    std::fs::File::open(path)
        .and_then(|f| f.take(n as u64).read_to_end(&mut bytes))
        .ok()?;
    Some(bytes)
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
    let mut builder = tempfile::Builder::new();
    builder.prefix(".dc-search-").suffix(".part");
    // Created with mode 0666 less the umask (0644 under 022), like any new file; the
    // temporary file's default, 0600, would carry over through the rename.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(&dir).with_context(|| {
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

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 (hex) of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {} to hash it", path.display()))?;
    Ok(sha256_hex(&bytes))
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

    #[cfg(unix)]
    #[test]
    fn outputs_take_the_umask_not_0600() {
        use std::os::unix::fs::PermissionsExt;
        // The umask of this process, read back from a plainly created file.
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let want = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
        let p = dir.path().join("atomic");
        write_text(&p, "x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{mode:o} vs {want:o}");
    }
}
