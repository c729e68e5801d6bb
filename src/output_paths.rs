//! Checks on a command's output paths, made before any work starts.
//!
//! An output must not be one of the command's inputs: the same file counts whatever path
//! names it (`./v.mp4`, an absolute path, a symbolic link, a hard link), because writing
//! the output would destroy the input. Two outputs must not be the same file either, or one
//! would silently replace the other. And each output's directory must accept a new file,
//! so that a long analysis does not end in "permission denied".

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::atomic;

/// A path a command reads or writes, with the words that name it in messages (`"video"`,
/// `"--srt"`, `"analysis document"`).
#[derive(Debug, Clone, Copy)]
pub struct NamedPath<'a> {
    /// What the path is to the command.
    pub role: &'static str,
    /// The path as the user gave it.
    pub path: &'a Path,
}

impl<'a> NamedPath<'a> {
    /// `path` in the role `role`.
    pub fn new(role: &'static str, path: &'a Path) -> Self {
        NamedPath { role, path }
    }
}

/// Why an output path is refused.
#[derive(Debug, Error)]
pub enum OutputPathError {
    /// The output is one of the inputs.
    #[error(
        "the {output_role} {} is the {input_role} {}: writing it would destroy the input; choose another path",
        output.display(),
        input.display()
    )]
    IsInput {
        /// The output's role.
        output_role: &'static str,
        /// The output path.
        output: PathBuf,
        /// The input's role.
        input_role: &'static str,
        /// The input path.
        input: PathBuf,
    },
    /// Two outputs are the same file.
    #[error(
        "the {first_role} {} and the {second_role} {} are the same file; choose different paths",
        first.display(),
        second.display()
    )]
    SameOutput {
        /// The first output's role.
        first_role: &'static str,
        /// The first output path.
        first: PathBuf,
        /// The second output's role.
        second_role: &'static str,
        /// The second output path.
        second: PathBuf,
    },
    /// The output is an existing directory.
    #[error("cannot write the {role} {}: it is a directory", path.display())]
    IsDirectory {
        /// The output's role.
        role: &'static str,
        /// The output path.
        path: PathBuf,
    },
    /// The output's directory cannot be made or does not accept new files.
    #[error("cannot write the {role} {}: {}: {source}", path.display(), directory.display())]
    Unwritable {
        /// The output's role.
        role: &'static str,
        /// The output path.
        path: PathBuf,
        /// The directory that refused.
        directory: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// Checks that no output is an input or another output, then makes each output's missing
/// parent directories and writes and removes a file beside each output to prove that the
/// directory accepts it. Call it before any work whose result the outputs hold.
pub fn prepare_outputs(
    inputs: &[NamedPath<'_>],
    outputs: &[NamedPath<'_>],
) -> Result<(), OutputPathError> {
    let input_files: Vec<(NamedPath<'_>, FileIdentity)> = inputs
        .iter()
        .filter_map(|input| FileIdentity::of(input.path).map(|identity| (*input, identity)))
        .collect();
    let mut output_files: Vec<(NamedPath<'_>, FileIdentity)> = Vec::new();
    for output in outputs {
        if output.path.is_dir() {
            return Err(OutputPathError::IsDirectory {
                role: output.role,
                path: output.path.to_path_buf(),
            });
        }
        let identity = FileIdentity::of(output.path)
            .unwrap_or_else(|| FileIdentity::Planned(planned_location(output.path)));
        if let Some((input, _)) = input_files.iter().find(|(_, file)| *file == identity) {
            return Err(OutputPathError::IsInput {
                output_role: output.role,
                output: output.path.to_path_buf(),
                input_role: input.role,
                input: input.path.to_path_buf(),
            });
        }
        if let Some((first, _)) = output_files.iter().find(|(_, file)| *file == identity) {
            return Err(OutputPathError::SameOutput {
                first_role: first.role,
                first: first.path.to_path_buf(),
                second_role: output.role,
                second: output.path.to_path_buf(),
            });
        }
        output_files.push((*output, identity));
    }
    for output in outputs {
        check_writable(output)?;
    }
    Ok(())
}

/// What makes two paths the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileIdentity {
    /// An existing file: its device and inode, shared by every path and link to it.
    Existing {
        /// The device holding the file.
        device: u64,
        /// The file's inode on that device.
        inode: u64,
    },
    /// A file not there yet: where it would be created, with links in its directories
    /// resolved.
    Planned(PathBuf),
}

impl FileIdentity {
    /// The identity of the file at `path` (symbolic links followed), if it exists.
    fn of(path: &Path) -> Option<FileIdentity> {
        fs::metadata(path)
            .ok()
            .map(|metadata| FileIdentity::Existing {
                device: metadata.dev(),
                inode: metadata.ino(),
            })
    }
}

/// Where a file that does not exist yet would be created: the nearest existing ancestor's
/// canonical path (links resolved) joined with the rest of `path`.
fn planned_location(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = absolute.as_path();
    let mut missing: Vec<OsString> = Vec::new();
    loop {
        if let Ok(canonical) = fs::canonicalize(existing) {
            return missing
                .iter()
                .rev()
                .fold(canonical, |location, part| location.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Makes the output's parent directories and writes and removes the temporary file that
/// [`atomic::write`] would use for it.
fn check_writable(output: &NamedPath<'_>) -> Result<(), OutputPathError> {
    let directory = match output.path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let refused = |source: std::io::Error| OutputPathError::Unwritable {
        role: output.role,
        path: output.path.to_path_buf(),
        directory: directory.clone(),
        source,
    };
    fs::create_dir_all(&directory).map_err(refused)?;
    let probe = atomic::temporary_path(output.path);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(refused)?;
    fs::remove_file(&probe).map_err(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::write(path, b"input").unwrap();
    }

    #[test]
    fn an_output_naming_an_input_is_refused_through_any_path() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("v.mp4");
        touch(&video);
        let link = dir.path().join("link.mp4");
        std::os::unix::fs::symlink(&video, &link).unwrap();
        let hard = dir.path().join("hard.mp4");
        fs::hard_link(&video, &hard).unwrap();
        let dotted = dir.path().join(".").join("v.mp4");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let roundabout = sub.join("..").join("v.mp4");
        for output in [&video, &link, &hard, &dotted, &roundabout] {
            let error = prepare_outputs(
                &[NamedPath::new("video", &video)],
                &[NamedPath::new("--srt", output)],
            )
            .unwrap_err();
            assert!(
                matches!(error, OutputPathError::IsInput { .. }),
                "{}: {error}",
                output.display()
            );
            let message = error.to_string();
            assert!(
                message.contains(&output.display().to_string())
                    && message.contains(&video.display().to_string()),
                "{message}"
            );
        }
        assert_eq!(fs::read(&video).unwrap(), b"input");
    }

    #[test]
    fn outputs_must_be_different_files() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.json");
        let second = dir.path().join("sub/../a.json");
        fs::create_dir(dir.path().join("sub")).unwrap();
        let error = prepare_outputs(
            &[],
            &[
                NamedPath::new("analysis document", &first),
                NamedPath::new("--html", &second),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(error, OutputPathError::SameOutput { .. }),
            "{error}"
        );
        assert!(!first.exists(), "nothing written");
    }

    #[test]
    fn a_link_to_the_output_directory_is_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        let error = prepare_outputs(
            &[],
            &[
                NamedPath::new("--srt", &real.join("x.srt")),
                NamedPath::new("--vtt", &alias.join("x.srt")),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(error, OutputPathError::SameOutput { .. }),
            "{error}"
        );
    }

    #[test]
    fn different_outputs_pass_and_leave_only_their_directories() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("v.mp4");
        touch(&video);
        let document = dir.path().join("new/deeper/v.json");
        let subtitles = dir.path().join("v.srt");
        prepare_outputs(
            &[NamedPath::new("video", &video)],
            &[
                NamedPath::new("analysis document", &document),
                NamedPath::new("--srt", &subtitles),
            ],
        )
        .unwrap();
        assert!(document.parent().unwrap().is_dir());
        assert_eq!(fs::read_dir(document.parent().unwrap()).unwrap().count(), 0);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["new", "v.mp4"]);
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        touch(&blocker);
        let output = blocker.join("out.json");
        let error = prepare_outputs(&[], &[NamedPath::new("-o", &output)]).unwrap_err();
        assert!(
            matches!(error, OutputPathError::Unwritable { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains(&output.display().to_string()), "{message}");
    }

    #[test]
    fn a_directory_is_not_an_output_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = prepare_outputs(&[], &[NamedPath::new("-o", dir.path())]).unwrap_err();
        assert!(
            matches!(error, OutputPathError::IsDirectory { .. }),
            "{error}"
        );
    }
}
