//! `-` on the command line: stdin where a file is read, stdout where one is written.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::RgbImage;

use keyscribe::atomic;
use keyscribe::cache::{AnalysisCache, SpooledFile};

/// What a document records as the path of a video read from stdin.
pub const STDIN_LABEL: &str = "<stdin>";

/// Whether a path argument is `-`.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Writes `bytes` (text) to stdout through [`super::print`]: a reader that stopped early
/// (`| head`) ends the command as a normal end.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    super::print::write(String::from_utf8_lossy(bytes))
}

/// Writes `bytes` to the file `path` atomically, or to stdout when `path` is `-`.
pub fn write_output(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if is_stdio(path) {
        write_stdout(bytes)
    } else {
        atomic::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }
}

/// Refuses a command line on which more than one output goes to stdout; `outputs` are the
/// flags that write to stdout (`-o -`, `--srt -`, `--json`...).
pub fn at_most_one_stdout(outputs: &[&str]) -> anyhow::Result<()> {
    if let [first, second, ..] = outputs {
        bail!("{first} and {second} both write to stdout; only one output can be `-`");
    }
    Ok(())
}

/// Bytes of stdin, refusing a terminal (a user who forgot the pipe would wait forever).
fn stdin_reader(what: &str) -> anyhow::Result<std::io::StdinLock<'static>> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("`-` reads {what} from stdin, but stdin is a terminal: pipe it in (`... | keyscribe ... -`)");
    }
    Ok(stdin.lock())
}

/// A video named on the command line: a file, or stdin spooled into the cache directory
/// (FFmpeg needs to seek) for as long as this lives.
pub enum VideoInput {
    /// A file.
    File(PathBuf),
    /// Stdin's bytes, copied to a file.
    Stdin(SpooledFile),
}

impl VideoInput {
    /// The video `argument` stands for; `-` copies stdin into `cache`'s spool.
    pub fn open(argument: &Path, cache: &AnalysisCache) -> anyhow::Result<VideoInput> {
        if !is_stdio(argument) {
            return Ok(VideoInput::File(argument.to_path_buf()));
        }
        let mut stdin = stdin_reader("a video")?;
        let spooled = cache
            .spool(&mut stdin)
            .context("copying the video from stdin")?;
        let empty = std::fs::metadata(spooled.path())
            .map(|metadata| metadata.len() == 0)
            .unwrap_or(true);
        if empty {
            bail!("{STDIN_LABEL}: no video on stdin (it was empty)");
        }
        Ok(VideoInput::Stdin(spooled))
    }

    /// The file to read.
    pub fn path(&self) -> &Path {
        match self {
            VideoInput::File(path) => path,
            VideoInput::Stdin(spooled) => spooled.path(),
        }
    }

    /// What documents record instead of the spool file's path, for stdin.
    pub fn stdin_label(&self) -> Option<&'static str> {
        matches!(self, VideoInput::Stdin(_)).then_some(STDIN_LABEL)
    }

    /// The video's name for messages: its path, or `<stdin>`.
    pub fn name(&self) -> String {
        match self {
            VideoInput::File(path) => path.display().to_string(),
            VideoInput::Stdin(_) => STDIN_LABEL.to_string(),
        }
    }

    /// `result` with stdin named in its error (errors about a file already name it; the
    /// spool file's name would mean nothing to the user).
    pub fn named<T, E>(&self, result: Result<T, E>) -> anyhow::Result<T>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match self {
            VideoInput::File(_) => Ok(result?),
            VideoInput::Stdin(_) => result.context(STDIN_LABEL),
        }
    }
}

/// Reads an image file, or stdin for `-`; returns it with its name for messages.
pub fn read_image(path: &Path) -> anyhow::Result<(String, RgbImage)> {
    if is_stdio(path) {
        let mut bytes = Vec::new();
        stdin_reader("an image")?
            .read_to_end(&mut bytes)
            .context("reading an image from stdin")?;
        let image = keyscribe::picture::read_image_bytes(&bytes, Path::new(STDIN_LABEL))?;
        return Ok((STDIN_LABEL.to_string(), image));
    }
    let image = keyscribe::picture::read_image(path)?;
    Ok((path.display().to_string(), image))
}

/// Refuses `-` given for more than one input: stdin can be read once.
pub fn at_most_one_stdin(inputs: &[PathBuf]) -> anyhow::Result<()> {
    if inputs.iter().filter(|path| is_stdio(path)).count() > 1 {
        bail!("`-` (stdin) is given more than once; stdin can be read only once");
    }
    Ok(())
}
