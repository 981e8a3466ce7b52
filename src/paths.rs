//! Where dc-search keeps things and how it touches files: the cache folder
//! (`DC_SEARCH_CACHE`, default `~/.cache/dc-search`); one bounded reader for every file it
//! reads ([`open_regular`] and the readers over it: [`read_regular`], [`read_text`],
//! [`read_prefix`], [`read_tail`], [`sha256_file`]), which takes regular files only (a FIFO
//! would block, a device such as `/dev/zero` never ends; each is refused with what it is)
//! and never reads more than a limit; and one rule for every file it writes
//! ([`check_output`] before the work, [`write_atomic`] at the end): an output replaces only
//! a regular file (a link is followed to one), is written to a temporary file, synced and
//! renamed, so it is never half-written, and takes the permissions the umask gives a new
//! file; its folder is created only where that creates nothing by the way (`a/missing/../x`
//! is refused, not made into `a/missing`). Content hashes.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};

/// An environment variable holding a path, `None` when unset or empty (an empty
/// `DC_SEARCH_CACHE=` would otherwise mean the working folder).
pub fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The cache folder: trained weights, downloaded data, libtorch. `DC_SEARCH_CACHE`, else
/// `$HOME/.cache/dc-search`, else (no home) `dc-search` in the system's temporary folder;
/// an empty variable counts as unset.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = env_path("DC_SEARCH_CACHE") {
        return p;
    }
    match env_path("HOME") {
        Some(home) => home.join(".cache").join("dc-search"),
        None => std::env::temp_dir().join("dc-search"),
    }
}

/// The largest weights file, TorchScript module or checkpoint read (16 GiB).
pub const MAX_MODEL_BYTES: u64 = 1 << 34;
/// The largest config, spec, result or ratios file read (16 MiB).
pub const MAX_TEXT_BYTES: u64 = 16 << 20;

/// What a file that is not a regular one is, in words (`a folder`, `a FIFO (named pipe)`,
/// `a character device`, …).
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a link"
    } else {
        "a regular file"
    }
}

/// What `path` is when it exists and is not a regular file, following links (`a folder`, `a
/// link to /dev/zero, a character device`, `a link to x, which does not exist`); `None` for
/// a regular file (or a link to one) and for nothing at all.
pub fn not_regular(path: &Path) -> Option<String> {
    let own = std::fs::symlink_metadata(path).ok()?;
    if !own.file_type().is_symlink() {
        return (!own.is_file()).then(|| kind_of(&own).to_string());
    }
    let target = std::fs::read_link(path)
        .map(|t| t.display().to_string())
        .unwrap_or_else(|_| "?".into());
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => None,
        Ok(m) => Some(format!("a link to {target}, {}", kind_of(&m))),
        Err(_) => Some(format!("a link to {target}, which does not exist")),
    }
}

/// Refuses `path` unless it is a regular file (following links), saying what it is
/// instead; `what` names the input in the error.
pub fn check_regular(path: &Path, what: &str) -> Result<Metadata> {
    let meta = std::fs::metadata(path).with_context(|| match not_regular(path) {
        Some(kind) => format!("cannot read {what} {}: it is {kind}", path.display()),
        None => format!("cannot read {what} {}", path.display()),
    })?;
    if !meta.is_file() {
        let kind = not_regular(path).unwrap_or_else(|| kind_of(&meta).into());
        bail!(
            "{what} {} is {kind}, not a regular file: give a file",
            path.display()
        );
    }
    Ok(meta)
}

/// Opens a regular file for reading and returns it with its length. It is checked before
/// it is opened (opening some devices does something) and again on the open file, which is
/// opened without blocking, so that a FIFO swapped in between is refused, never waited on.
pub fn open_regular(path: &Path, what: &str) -> Result<(File, u64)> {
    check_regular(path, what)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "{what} {} is {}, not a regular file: give a file",
            path.display(),
            kind_of(&meta)
        );
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file of at most `max_bytes`; `what` names it in errors.
pub fn read_regular(path: &Path, what: &str, max_bytes: u64) -> Result<Vec<u8>> {
    let (file, len) = open_regular(path, what)?;
    if len > max_bytes {
        bail!(
            "{what} {} is {len} bytes, more than the {max_bytes} bytes such a file can hold",
            path.display()
        );
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if bytes.len() as u64 > max_bytes {
        bail!(
            "{what} {} grew past {max_bytes} bytes while it was read",
            path.display()
        );
    }
    Ok(bytes)
}

/// [`read_regular`] of UTF-8 text.
pub fn read_text(path: &Path, what: &str, max_bytes: u64) -> Result<String> {
    String::from_utf8(read_regular(path, what, max_bytes)?)
        .with_context(|| format!("{what} {} is not UTF-8 text", path.display()))
}

/// The first `n` bytes of a regular file (fewer if it is shorter); `None` when `path` is
/// not a regular file or cannot be read.
pub fn read_prefix(path: &Path, n: usize) -> Option<Vec<u8>> {
    let (file, _) = open_regular(path, "file").ok()?;
    let mut bytes = Vec::with_capacity(n);
    file.take(n as u64).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// The last `n` bytes of a regular file as text (a log's end, to say why a task failed);
/// empty when it is missing, not a regular file or unreadable.
pub fn read_tail(path: &Path, n: u64) -> String {
    let Ok((mut file, len)) = open_regular(path, "log") else {
        return String::new();
    };
    let mut bytes = Vec::new();
    let _ = file
        .seek(SeekFrom::Start(len.saturating_sub(n)))
        .and_then(|_| file.take(n).read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Atomic writes under way (a signal's exit waits for them: see `runtime`).
static WRITING: AtomicUsize = AtomicUsize::new(0);

/// How many atomic writes are under way in this process.
pub fn writes_in_progress() -> usize {
    WRITING.load(Ordering::SeqCst)
}

/// Counts one write under way for as long as it lives.
struct Writing;

impl Writing {
    fn start() -> Writing {
        WRITING.fetch_add(1, Ordering::SeqCst);
        Writing
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        WRITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Files to remove if the process is ended at once (a run folder's lock).
static REMOVE_AT_EXIT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Marks `path` to be removed by [`remove_marked`] (until [`unmark`]ed).
pub fn remove_at_exit(path: &Path) {
    REMOVE_AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

/// Takes back [`remove_at_exit`] of `path`.
pub fn unmark(path: &Path) {
    REMOVE_AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| p != path);
}

/// Removes the files marked by [`remove_at_exit`]: called just before the process is ended
/// at once (by a signal or a time limit), when no destructor runs.
pub fn remove_marked() {
    for p in REMOVE_AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        let _ = std::fs::remove_file(p);
    }
}

/// What an output refusal adds.
const FIX: &str = "(choose a writable place)";

/// Whether `path` as written names a folder rather than a file (`dir/`, `dir/.`, `..`): a
/// path's trailing `/` is dropped by [`Path::file_name`], so it is looked at as written.
fn names_a_folder(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let b = path.as_os_str().as_bytes();
    b.ends_with(b"/") || b.ends_with(b"/.") || b == b"." || path.file_name().is_none()
}

/// The file an output at `path` writes: `path` itself when it is absent or a regular file,
/// the file a link leads to when that is a regular file; anything else (a folder, FIFO,
/// device, socket, a link to one or to nothing) is refused, never replaced.
fn output_target(path: &Path) -> Result<PathBuf> {
    if names_a_folder(path) {
        bail!(
            "output {} names a folder: give a file name in it {FIX}",
            path.display()
        );
    }
    let Some(kind) = not_regular(path) else {
        return Ok(match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
                .with_context(|| format!("cannot follow the link {}", path.display()))?,
            _ => path.to_path_buf(),
        });
    };
    if kind == "a folder" {
        bail!(
            "output {} is a folder: give a file name in it {FIX}",
            path.display()
        );
    }
    bail!(
        "output {} is {kind}: dc-search writes only regular files (whole, through a rename), so \
         it is never replaced; give a file name {FIX}",
        path.display()
    )
}

/// The folder an output goes to (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Refuses a folder path that goes through `..` after a folder that does not exist:
/// creating it would make that folder on the way (`a/missing/../x` would create
/// `a/missing`).
fn check_parent_steps(dir: &Path) -> Result<()> {
    let mut so_far = PathBuf::new();
    for c in dir.components() {
        if c == Component::ParentDir && !so_far.as_os_str().is_empty() && !so_far.is_dir() {
            bail!(
                "output folder {} steps back (..) out of {}, which is not a folder: give the \
                 path without .. {FIX}",
                dir.display(),
                so_far.display()
            );
        }
        so_far.push(c);
    }
    Ok(())
}

/// Creates the folder `dir` for outputs (and its parents), refusing what
/// [`check_parent_steps`] refuses.
pub fn create_output_dir(dir: &Path) -> Result<()> {
    check_parent_steps(dir)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create folder {} {FIX}", dir.display()))
}

/// Refuses an output before any work starts: a path naming a folder, an existing file that
/// is not a regular one (see [`output_target`]), a folder that cannot be created or written.
/// Creates nothing: the folder is made when the first result is written, so a run that
/// fails on its inputs leaves no trace.
pub fn check_output(path: &Path) -> Result<()> {
    let target = output_target(path)?;
    let dir = folder_of(&target);
    check_parent_steps(&dir)?;
    // The nearest folder that exists must be a folder and writable.
    let mut existing = dir.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        let kind = not_regular(existing).unwrap_or_else(|| "a file".into());
        bail!(
            "cannot create output folder {}: {} is {kind}, not a folder {FIX}",
            dir.display(),
            existing.display()
        );
    }
    tempfile::tempfile_in(existing).map_err(|e| {
        if existing == dir {
            anyhow::anyhow!("output folder {} is not writable: {e} {FIX}", dir.display())
        } else {
            anyhow::anyhow!(
                "cannot create output folder {}: {} is not writable: {e} {FIX}",
                dir.display(),
                existing.display()
            )
        }
    })?;
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so
/// readers see the old file or the new one, never a part. Only a regular file is replaced
/// (a link to one is followed: the link stays, its file is replaced); see [`check_output`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let _writing = Writing::start();
    let target = output_target(path)?;
    let dir = folder_of(&target);
    create_output_dir(&dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".dc-search-").suffix(".part");
    // Created with mode 0666 less the umask (0644 under 022), like any new file; the
    // temporary file's default, 0600, would carry over through the rename.
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
    tmp.persist(&target)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename into {}", target.display()))?;
    Ok(())
}

/// [`write_atomic`] for text.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes())
}

/// Creates (or truncates) a regular file to write into as it goes (a child process's
/// log), under the output rule: anything but a regular file there is refused, and a FIFO
/// is never waited on.
pub fn create_regular(path: &Path) -> Result<File> {
    let target = output_target(path)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&target)
        .with_context(|| format!("cannot create {}", target.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot create {}", target.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is {}, not a regular file: remove it",
            target.display(),
            kind_of(&meta)
        );
    }
    Ok(file)
}

/// SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 (hex) of a regular file's content (at most [`MAX_MODEL_BYTES`]), read in
/// blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let what = "file to hash";
    let (file, len) = open_regular(path, what)?;
    if len > MAX_MODEL_BYTES {
        bail!(
            "{what} {} is {len} bytes, more than the {MAX_MODEL_BYTES} bytes a model file can hold",
            path.display()
        );
    }
    let mut hasher = Sha256::new();
    let mut reader = file.take(MAX_MODEL_BYTES + 1);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.with_context(|| format!("cannot read {} to hash it", path.display()))?,
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    if total > MAX_MODEL_BYTES {
        bail!(
            "{what} {} grew past {MAX_MODEL_BYTES} bytes while it was read",
            path.display()
        );
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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

    fn mkfifo(p: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn every_reader_refuses_what_is_not_a_regular_file_and_says_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let dangling = dir.path().join("gone");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        let cases: [(&Path, &str); 5] = [
            (&fifo, "a FIFO (named pipe)"),
            (Path::new("/dev/zero"), "a character device"),
            (&link, "a link to /dev/zero, a character device"),
            (dir.path(), "a folder"),
            (&dangling, "which does not exist"),
        ];
        for (p, kind) in cases {
            for e in [
                err(read_regular(p, "thing", 100)),
                err(read_text(p, "thing", 100)),
                err(sha256_file(p)),
            ] {
                assert!(e.contains(kind), "{}: {e}", p.display());
                assert!(e.contains(&p.display().to_string()), "{e}");
            }
            assert_eq!(read_prefix(p, 4), None);
            assert_eq!(read_tail(p, 4), "");
        }
        let big = dir.path().join("big");
        std::fs::write(&big, [7u8; 101]).unwrap();
        assert!(err(read_regular(&big, "thing", 100)).contains("101 bytes, more than the 100"));
        assert_eq!(read_regular(&big, "thing", 101).unwrap().len(), 101);
        assert_eq!(read_tail(&big, 3), "\u{7}\u{7}\u{7}");
        assert_eq!(sha256_file(&big).unwrap(), sha256_hex(&[7u8; 101]));
    }

    #[test]
    fn outputs_replace_only_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        let link = dir.path().join("null");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        for (p, kind) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/null"), "a character device"),
            (link.as_path(), "a link to /dev/null, a character device"),
        ] {
            for e in [err(check_output(p)), err(write_text(p, "x"))] {
                assert!(e.contains(kind) && e.contains("never replaced"), "{e}");
            }
            assert!(err(create_regular(p)).contains(kind));
        }
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // A link to a regular file: the file is replaced, the link stays.
        let real = dir.path().join("real.txt");
        std::fs::write(&real, "old").unwrap();
        let to_real = dir.path().join("to-real.txt");
        std::os::unix::fs::symlink(&real, &to_real).unwrap();
        write_text(&to_real, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        assert!(std::fs::symlink_metadata(&to_real)
            .unwrap()
            .file_type()
            .is_symlink());
        // A folder, or a name that ends as one.
        for p in [dir.path().to_path_buf(), dir.path().join("new/")] {
            let e = err(check_output(&p));
            assert!(e.contains("folder") && e.contains("file name"), "{e}");
            assert!(write_text(&p, "x").is_err());
        }
        assert!(!dir.path().join("new").exists());
    }

    #[test]
    fn an_output_through_a_missing_folders_dotdot_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/missing/../x");
        std::fs::create_dir(dir.path().join("a")).unwrap();
        for e in [err(check_output(&p)), err(write_text(&p, "x"))] {
            assert!(e.contains("missing") && e.contains(".."), "{e}");
        }
        assert!(!dir.path().join("a/missing").exists());
        assert!(!dir.path().join("a/x").exists());
        // Through a folder that exists, `..` is fine.
        std::fs::create_dir(dir.path().join("a/here")).unwrap();
        write_text(&dir.path().join("a/here/../new/y"), "y").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/new/y")).unwrap(),
            "y"
        );
    }

    #[test]
    fn empty_path_variables_count_as_unset() {
        std::env::set_var("DC_SEARCH_TEST_EMPTY", "");
        assert_eq!(env_path("DC_SEARCH_TEST_EMPTY"), None);
        std::env::set_var("DC_SEARCH_TEST_EMPTY", "/x");
        assert_eq!(env_path("DC_SEARCH_TEST_EMPTY"), Some(PathBuf::from("/x")));
    }
}
