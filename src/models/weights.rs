//! Strict checkpoint loading: every tensor a model asks for must exist with the expected
//! shape, and every tensor in the file must be used or knowingly ignored.
//!
//! A model that loads with a tensor missing or unused can still run and produce plausible
//! numbers, so loading goes through [`Checkpoint`], which records what the model read and
//! reports the difference once construction is done.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::ModelError;

/// Maps a tensor name as the model code spells it to the name stored in the file.
pub type Renamer = Box<dyn Fn(&str) -> String + Send + Sync>;

/// One or more safetensors files opened together (sharded checkpoints are several files),
/// with a record of the tensors the model has read.
pub struct Checkpoint {
    files: Vec<PathBuf>,
    tensors: MmapedSafetensors,
    names: BTreeSet<String>,
    used: Mutex<BTreeSet<String>>,
}

impl Checkpoint {
    /// Memory-maps the given safetensors files and reads their headers.
    ///
    /// A missing, unreadable, truncated or malformed file is an error naming the file.
    pub fn open(files: &[PathBuf]) -> Result<Arc<Self>, ModelError> {
        for file in files {
            let metadata = std::fs::metadata(file).map_err(|source| ModelError::Io {
                path: file.clone(),
                source,
            })?;
            if !metadata.is_file() {
                return Err(ModelError::BadFile {
                    path: file.clone(),
                    problem: "is not a regular file".into(),
                });
            }
        }
        // SAFETY: the files are mapped read-only; keyscribe never writes to a checkpoint while
        // it is loaded, which is the condition memmap2 asks of its callers.
        let tensors =
            unsafe { MmapedSafetensors::multi(files) }.map_err(|error| ModelError::BadFile {
                path: files.first().cloned().unwrap_or_default(),
                problem: format!("not a readable safetensors file ({})", root_message(&error)),
            })?;
        let names = tensors
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Ok(Arc::new(Self {
            files: files.to_vec(),
            tensors,
            names,
            used: Mutex::new(BTreeSet::new()),
        }))
    }

    /// Opens the weights stored in `dir` as `file` (e.g. `model.safetensors`), or as the
    /// shards that `file.index.json` lists when the checkpoint is sharded.
    pub fn open_in(dir: &Path, file: &str) -> Result<Arc<Self>, ModelError> {
        let single = dir.join(file);
        if single.exists() {
            return Self::open(&[single]);
        }
        let index = dir.join(format!("{file}.index.json"));
        let shards = super::store::shards_listed_by(&index);
        if shards.is_empty() {
            return Err(ModelError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no such file (nor a readable {file}.index.json)"),
                ),
            });
        }
        let files: Vec<PathBuf> = shards.iter().map(|shard| dir.join(shard)).collect();
        Self::open(&files)
    }

    /// The file (or first shard) this checkpoint was read from, for messages.
    pub fn path(&self) -> &Path {
        self.files
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new(""))
    }

    /// Every tensor name stored in the checkpoint, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Whether the checkpoint stores a tensor of this (file) name.
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// The stored shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors
            .get(name)
            .ok()
            .map(|view| view.shape().to_vec())
    }

    /// Loads one tensor by its file name, converted to `dtype`, and marks it used.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, ModelError> {
        if !self.contains(name) {
            return Err(ModelError::MissingTensor {
                path: self.path().to_path_buf(),
                name: name.to_string(),
                expected: None,
            });
        }
        let tensor = self
            .tensors
            .load(name, device)
            .and_then(|tensor| tensor.to_dtype(dtype))
            .map_err(|error| ModelError::BadFile {
                path: self.path().to_path_buf(),
                problem: format!("tensor `{name}` cannot be read ({})", root_message(&error)),
            })?;
        self.mark_used(name);
        Ok(tensor)
    }

    /// Marks a tensor as deliberately consumed without loading it (e.g. BatchNorm's
    /// `num_batches_tracked`, which inference never needs).
    pub fn mark_used(&self, name: &str) {
        self.used
            .lock()
            .expect("checkpoint usage record poisoned")
            .insert(name.to_string());
    }

    /// A `VarBuilder` over this checkpoint: the model asks for tensors by its own names,
    /// `rename` turns them into the file's names, and every access is checked and recorded.
    pub fn var_builder(
        self: &Arc<Self>,
        dtype: DType,
        device: &Device,
        rename: Option<Renamer>,
    ) -> VarBuilder<'static> {
        let backend = CheckedBackend {
            checkpoint: Arc::clone(self),
            rename,
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Fails if a stored tensor was never read and `ignored` does not accept its name.
    ///
    /// Call once the model is built: a tensor nobody read means the model and the file
    /// disagree about the architecture.
    pub fn ensure_all_used(&self, ignored: impl Fn(&str) -> bool) -> Result<(), ModelError> {
        let used = self.used.lock().expect("checkpoint usage record poisoned");
        let unused: Vec<String> = self
            .names
            .iter()
            .filter(|name| !used.contains(*name) && !ignored(name))
            .cloned()
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(ModelError::UnusedTensors {
                path: self.path().to_path_buf(),
                count: unused.len(),
                names: unused.into_iter().take(5).collect(),
            })
        }
    }
}

/// The innermost message of a candle error, without backtraces and wrapping.
fn root_message(error: &candle_core::Error) -> String {
    match error {
        candle_core::Error::WithBacktrace { inner, .. } => root_message(inner),
        candle_core::Error::WithPath { inner, .. } => root_message(inner),
        candle_core::Error::Context { inner, .. } => root_message(inner),
        other => other.to_string(),
    }
}

/// The `VarBuilder` backend that checks names and shapes against the checkpoint.
struct CheckedBackend {
    checkpoint: Arc<Checkpoint>,
    rename: Option<Renamer>,
}

impl CheckedBackend {
    fn file_name(&self, name: &str) -> String {
        match &self.rename {
            Some(rename) => rename(name),
            None => name.to_string(),
        }
    }
}

impl SimpleBackend for CheckedBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let file_name = self.file_name(name);
        let checkpoint = &self.checkpoint;
        let Some(found) = checkpoint.shape_of(&file_name) else {
            return Err(candle_core::Error::wrap(ModelError::MissingTensor {
                path: checkpoint.path().to_path_buf(),
                name: file_name,
                expected: Some(shape.dims().to_vec()),
            }));
        };
        if found != shape.dims() {
            return Err(candle_core::Error::wrap(ModelError::ShapeMismatch {
                path: checkpoint.path().to_path_buf(),
                name: file_name,
                expected: shape.dims().to_vec(),
                found,
            }));
        }
        checkpoint
            .load(&file_name, dtype, device)
            .map_err(candle_core::Error::wrap)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.checkpoint
            .load(&self.file_name(name), dtype, device)
            .map_err(candle_core::Error::wrap)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.checkpoint.contains(&self.file_name(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write_checkpoint(dir: &Path) -> PathBuf {
        let path = dir.join("model.safetensors");
        let tensors: HashMap<String, Tensor> = [
            (
                "a.weight",
                Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "a.bias",
                Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
            ),
            (
                "head.proj",
                Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
            ),
        ]
        .into_iter()
        .map(|(name, tensor)| (name.to_string(), tensor))
        .collect();
        candle_core::safetensors::save(&tensors, &path).unwrap();
        path
    }

    #[test]
    fn reports_missing_and_misshapen_tensors_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&[write_checkpoint(dir.path())]).unwrap();
        let vb = checkpoint.var_builder(DType::F32, &Device::Cpu, None);
        let missing = vb.get((2, 3), "b.weight").unwrap_err().to_string();
        assert!(
            missing.contains("b.weight") && missing.contains("missing"),
            "{missing}"
        );
        let misshapen = vb.get((3, 2), "a.weight").unwrap_err().to_string();
        assert!(
            misshapen.contains("[3, 2]") && misshapen.contains("[2, 3]"),
            "{misshapen}"
        );
    }

    #[test]
    fn unused_tensors_fail_unless_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&[write_checkpoint(dir.path())]).unwrap();
        let vb = checkpoint.var_builder(
            DType::F32,
            &Device::Cpu,
            Some(Box::new(|name: &str| format!("a.{name}"))),
        );
        vb.get((2, 3), "weight").unwrap();
        let unused = checkpoint
            .ensure_all_used(|_| false)
            .unwrap_err()
            .to_string();
        assert!(
            unused.contains("a.bias") && unused.contains("2 tensors"),
            "{unused}"
        );
        vb.get(2, "bias").unwrap();
        checkpoint
            .ensure_all_used(|name| name == "head.proj")
            .unwrap();
    }

    #[test]
    fn sharded_checkpoints_open_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_checkpoint(dir.path());
        std::fs::rename(&first, dir.path().join("model-00001-of-00002.safetensors")).unwrap();
        let tensors: HashMap<String, Tensor> = [(
            "b.weight".to_string(),
            Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(),
        )]
        .into_iter()
        .collect();
        candle_core::safetensors::save(
            &tensors,
            dir.path().join("model-00002-of-00002.safetensors"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                "a.bias": "model-00001-of-00002.safetensors",
                "head.proj": "model-00001-of-00002.safetensors",
                "b.weight": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let checkpoint = Checkpoint::open_in(dir.path(), "model.safetensors").unwrap();
        assert_eq!(checkpoint.names().count(), 4);
        let missing = Checkpoint::open_in(dir.path(), "other.safetensors")
            .err()
            .unwrap();
        assert!(
            missing.to_string().contains("other.safetensors"),
            "{missing}"
        );
    }

    #[test]
    fn truncated_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_checkpoint(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let error = Checkpoint::open(&[path]).err().unwrap().to_string();
        assert!(error.contains("model.safetensors"), "{error}");
    }
}
