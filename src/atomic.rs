//! Atomic file output: write beside the destination, then rename over it.
//!
//! An interrupted run leaves either the old file or the new one, never half of one.
//! Replacing a file keeps what the user set on it: its permission bits stay, and when the
//! destination is a symbolic link, the file it points to is replaced and the link stays. A
//! new file gets the permissions any program's new file gets (`0666` less the umask).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Symbolic links followed before giving up, as the kernel's own limit (`ELOOP`).
const MAX_LINK_HOPS: usize = 40;

/// Writes `path` atomically: `fill` writes into a temporary file in the destination's
/// directory, which is flushed, synced and renamed over the destination only if `fill`
/// succeeds. A symbolic link at `path` is followed: its target is replaced.
pub fn write_with<F>(path: &Path, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    let destination = link_target(path)?;
    let kept_mode = match std::fs::metadata(&destination) {
        Ok(metadata) if metadata.is_file() => Some(metadata.permissions().mode() & 0o7777),
        Ok(metadata) if metadata.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ))
        }
        // A device or a pipe (`/dev/stdout`, `/dev/null`): nothing to replace.
        Ok(_) => return write_in_place(&destination, fill),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let temporary = temporary_path(&destination);
    let result = (|| {
        // The mode of a new file is 0666 less the umask, applied by the kernel.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&temporary)?;
        if let Some(mode) = kept_mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        let mut writer = BufWriter::new(file);
        fill(&mut writer)?;
        let file = writer.into_inner().map_err(|error| error.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &destination)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
        return result;
    }
    sync_directory(&destination);
    Ok(())
}

/// Writes into an existing file that is not a regular file, as a shell's `>` does.
fn write_in_place<F>(path: &Path, fill: F) -> io::Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> io::Result<()>,
{
    let mut writer = BufWriter::new(OpenOptions::new().write(true).open(path)?);
    fill(&mut writer)?;
    writer.into_inner().map_err(|error| error.into_error())?;
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |writer| writer.write_all(bytes))
}

/// A hidden name beside `path`, unique to this process and call, for the file being
/// written.
pub fn temporary_path(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".to_string());
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}-{call}.partial", std::process::id()))
}

/// The file that writing `path` replaces: `path` itself, or the end of the chain of
/// symbolic links that starts there (the target need not exist yet).
fn link_target(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        match std::fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)?;
                current = match current.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            Ok(_) => return Ok(current),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("more than {MAX_LINK_HOPS} symbolic links in a chain"),
    ))
}

/// Makes a rename in `file`'s directory durable, so that files written one after the other
/// reach the disk in that order. Best effort: some file systems cannot sync a directory.
fn sync_directory(file: &Path) {
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(handle) = File::open(directory) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    /// The process's umask, as Linux reports it.
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))
            .unwrap();
        u32::from_str_radix(line.trim(), 8).unwrap()
    }

    #[test]
    fn failed_write_leaves_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write(&path, b"old").unwrap();
        let error = write_with(&path, |writer| {
            writer.write_all(b"half")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(error.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn successful_write_replaces_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write(&path, b"old").unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_new_file_gets_the_usual_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.json");
        write(&path, b"x").unwrap();
        assert_eq!(mode(&path), 0o666 & !umask());
    }

    #[test]
    fn replacing_a_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        for kept in [0o600, 0o640, 0o664, 0o444] {
            let path = dir.path().join(format!("{kept:o}.json"));
            std::fs::write(&path, b"old").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(kept)).unwrap();
            write(&path, b"new").unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            assert_eq!(mode(&path), kept, "{kept:o}");
        }
    }

    #[test]
    fn writing_through_a_link_replaces_its_target_and_keeps_the_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        let target = dir.path().join("real/out.json");
        std::fs::write(&target, b"old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        // A relative link to a relative link to the file.
        let first = dir.path().join("first.json");
        let second = dir.path().join("second.json");
        std::os::unix::fs::symlink("real/out.json", &second).unwrap();
        std::os::unix::fs::symlink("second.json", &first).unwrap();

        write(&first, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&first)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::symlink_metadata(&second)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(mode(&target), 0o640);
        // Nothing was left beside the link or the target.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
        assert_eq!(
            std::fs::read_dir(dir.path().join("real")).unwrap().count(),
            1
        );

        // A dangling link: the file it names is created, the link stays.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink("real/later.json", &dangling).unwrap();
        write(&dangling, b"made").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("real/later.json")).unwrap(),
            b"made"
        );
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_loop_of_links_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        assert!(write(&a, b"x").is_err());
    }

    #[test]
    fn devices_are_written_in_place_and_a_full_one_says_so() {
        write(Path::new("/dev/null"), b"discarded").unwrap();
        let error = write(Path::new("/dev/full"), b"too much").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        for device in ["/dev/null", "/dev/full"] {
            let kind = std::fs::symlink_metadata(device).unwrap().file_type();
            assert!(
                std::os::unix::fs::FileTypeExt::is_char_device(&kind),
                "{device}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let error = write(dir.path(), b"x").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::IsADirectory, "{error}");
    }

    #[test]
    fn temporary_names_differ_between_calls() {
        let path = Path::new("/tmp/out.json");
        assert_ne!(temporary_path(path), temporary_path(path));
    }
}
