//! Which TorchScript config a `.dcz` file was made from: the record a file carries
//! ([`Origin`]: the config's file name and the SHA-256 of its bytes), made when a config is
//! read, and the check of the config given to `eval` or `export` against it.

use std::path::Path;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

use crate::format::Origin;

/// The origin record of the config file at `path` whose bytes are `bytes`.
pub fn of_config(path: &Path, bytes: &[u8]) -> Origin {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    );
    // A name is at most 255 bytes in a file: keep the end (the extension) of a longer one.
    let mut start = name.len().saturating_sub(crate::format::MAX_NAME_LEN);
    while !name.is_char_boundary(start) {
        start += 1;
    }
    Origin {
        config: name[start..].to_string(),
        sha256: Sha256::digest(bytes).into(),
    }
}

/// `name (sha256 0123abcd…)`: the first 8 bytes of the hash in hex.
pub fn describe(o: &Origin) -> String {
    let hex: String = o.sha256[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{} (sha256 {hex}…)", o.config.escape_debug())
}

/// Checks the config given with a file against the config the file was made from.
/// `file` names the file in messages, `recorded` is its origin (none before format version
/// 4 or for a zoo model) and `given` the origin of the `--ts-config` passed, if any.
/// A file made from a TorchScript config without one given is an error saying what to pass;
/// a given config with other bytes than recorded is allowed with the returned warning (the
/// layers are still checked against the module, shape by shape).
pub fn check(
    file: &str,
    recorded: Option<&Origin>,
    given: Option<&Origin>,
) -> Result<Option<String>> {
    match (recorded, given) {
        (Some(r), None) => bail!(
            "{file} was made from TorchScript config {}: pass --ts-config PATH/{}",
            describe(r),
            r.config.escape_debug()
        ),
        (Some(r), Some(g)) if r.sha256 != g.sha256 => Ok(Some(format!(
            "warning: {file} was made from TorchScript config {}, but the config given is {}: \
             another config or an edited one; the layers are checked against its module, and \
             the file's input normalisation and dataset are used",
            describe(r),
            describe(g)
        ))),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_the_file_name_and_the_hash_of_the_bytes() {
        let o = of_config(Path::new("some/dir/tiny-cnn.toml"), b"abc");
        assert_eq!(o.config, "tiny-cnn.toml");
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(&o.sha256[..4], &[0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(describe(&o), "tiny-cnn.toml (sha256 ba7816bf8f01cfea…)");
        let long = format!("{}é.toml", "x".repeat(300));
        let o = of_config(Path::new(&long), b"");
        assert!(o.config.len() <= 255 && o.config.ends_with("é.toml"));
    }

    #[test]
    fn a_file_says_which_config_to_pass_and_notices_another() {
        let tiny = of_config(Path::new("tiny-cnn.toml"), b"abc");
        let edited = of_config(Path::new("tiny-cnn.toml"), b"abd");
        let e = check("x.dcz", Some(&tiny), None).unwrap_err().to_string();
        assert_eq!(
            e,
            "x.dcz was made from TorchScript config tiny-cnn.toml (sha256 ba7816bf8f01cfea…): \
             pass --ts-config PATH/tiny-cnn.toml"
        );
        let w = check("x.dcz", Some(&tiny), Some(&edited)).unwrap().unwrap();
        assert!(
            w.starts_with("warning: x.dcz") && w.contains("another config"),
            "{w}"
        );
        // The same bytes under another name are the same config.
        let renamed = of_config(Path::new("mine.toml"), b"abc");
        assert_eq!(check("x.dcz", Some(&tiny), Some(&renamed)).unwrap(), None);
        // Files without a record (zoo models, format versions before 4) pass as before.
        assert_eq!(check("x.dcz", None, None).unwrap(), None);
        assert_eq!(check("x.dcz", None, Some(&tiny)).unwrap(), None);
    }
}
