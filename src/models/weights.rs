//! Strict checkpoint loading: every tensor a model asks for must exist with the expected
//! shape, and every tensor in the file must be used or knowingly ignored.
//!
//! A model that loads with a tensor missing or unused can still run and produce plausible
//! numbers, so loading goes through [`Checkpoint`], which records what the model read and
//! reports the difference once construction is done.
//!
//! Tensors are read with positioned reads, one at a time, rather than through a memory map:
//! the file's pages then stay in the page cache instead of counting towards the process's
//! memory next to the loaded copy, which halves the peak memory of loading a model.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::ModelError;

/// Maps a tensor name as the model code spells it to the name stored in the file.
pub type Renamer = Box<dyn Fn(&str) -> String + Send + Sync>;

/// Where one tensor's bytes are, as a safetensors header describes them.
#[derive(Debug, Clone)]
struct StoredTensor {
    /// Index of the file in [`Checkpoint::files`].
    file: usize,
    /// The stored dtype, as the header spells it (`F32`, `BF16`, ...).
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: u64,
    end: u64,
}

/// One or more safetensors files opened together (sharded checkpoints are several files),
/// with a record of the tensors the model has read.
pub struct Checkpoint {
    files: Vec<PathBuf>,
    handles: Vec<File>,
    tensors: BTreeMap<String, StoredTensor>,
    used: Mutex<BTreeSet<String>>,
}

impl Checkpoint {
    /// Opens the given safetensors files and reads their headers.
    ///
    /// A missing, unreadable, truncated or malformed file is an error naming the file.
    pub fn open(files: &[PathBuf]) -> Result<Arc<Self>, ModelError> {
        let mut handles = Vec::with_capacity(files.len());
        let mut tensors = BTreeMap::new();
        for (index, path) in files.iter().enumerate() {
            let io_error = |source| ModelError::Io {
                path: path.clone(),
                source,
            };
            let metadata = std::fs::metadata(path).map_err(io_error)?;
            if !metadata.is_file() {
                return Err(ModelError::BadFile {
                    path: path.clone(),
                    problem: "is not a regular file".into(),
                });
            }
            let file = File::open(path).map_err(io_error)?;
            for (name, stored) in read_header(&file, index, metadata.len()).map_err(|problem| {
                ModelError::BadFile {
                    path: path.clone(),
                    problem: format!("not a readable safetensors file ({problem})"),
                }
            })? {
                tensors.insert(name, stored);
            }
            handles.push(file);
        }
        Ok(Arc::new(Self {
            files: files.to_vec(),
            handles,
            tensors,
            used: Mutex::new(BTreeSet::new()),
        }))
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
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the checkpoint stores a tensor of this (file) name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored shape of a tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|stored| stored.shape.clone())
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
        let stored = &self.tensors[name];
        let path = &self.files[stored.file];
        let bad = |problem: String| ModelError::BadFile {
            path: path.clone(),
            problem: format!("tensor `{name}` cannot be read ({problem})"),
        };
        let stored_dtype = parse_dtype(&stored.dtype)
            .ok_or_else(|| bad(format!("dtype {} is not supported", stored.dtype)))?;
        let file = &self.handles[stored.file];
        let read = match stored_dtype {
            // The common dtypes are read straight into the tensor's buffer.
            DType::F32 => read_values::<f32>(file, stored, &stored.shape),
            DType::BF16 => read_values::<half::bf16>(file, stored, &stored.shape),
            DType::F16 => read_values::<half::f16>(file, stored, &stored.shape),
            other => {
                let mut bytes = vec![0u8; (stored.end - stored.start) as usize];
                file.read_exact_at(&mut bytes, stored.start)
                    .map(|()| Tensor::from_raw_buffer(&bytes, other, &stored.shape, &Device::Cpu))
            }
        };
        let tensor = read
            .map_err(|source| ModelError::Io {
                path: path.clone(),
                source,
            })?
            .and_then(|tensor| tensor.to_dtype(dtype))
            .and_then(|tensor| tensor.to_device(device))
            .map_err(|error| bad(root_message(&error)))?;
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

    /// Fails on the first floating-point tensor (in name order) holding a NaN or an
    /// infinity, naming it: damaged weights load with the right shapes and then produce
    /// garbage. Reads every tensor once, one at a time.
    pub fn ensure_finite(&self) -> Result<(), ModelError> {
        for (name, stored) in &self.tensors {
            let floating = parse_dtype(&stored.dtype).is_some_and(|dtype| dtype.is_float());
            if !floating {
                continue;
            }
            let values: Vec<f32> = self
                .load(name, DType::F32, &Device::Cpu)?
                .flatten_all()
                .and_then(|flat| flat.to_vec1())
                .map_err(|error| ModelError::BadFile {
                    path: self.files[stored.file].clone(),
                    problem: format!("tensor `{name}` cannot be read ({})", root_message(&error)),
                })?;
            let count = values.iter().filter(|value| !value.is_finite()).count();
            if count > 0 {
                return Err(ModelError::NonFinite {
                    path: self.files[stored.file].clone(),
                    name: name.clone(),
                    count,
                });
            }
        }
        Ok(())
    }

    /// Fails if a stored tensor was never read and `ignored` does not accept its name.
    ///
    /// Call once the model is built: a tensor nobody read means the model and the file
    /// disagree about the architecture.
    pub fn ensure_all_used(&self, ignored: impl Fn(&str) -> bool) -> Result<(), ModelError> {
        let used = self.used.lock().expect("checkpoint usage record poisoned");
        let unused: Vec<String> = self
            .tensors
            .keys()
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

/// The tensors a safetensors header lists: an 8-byte little-endian header length, then a
/// JSON object of `name -> {dtype, shape, data_offsets}` (offsets after the header).
fn read_header(
    file: &File,
    index: usize,
    file_len: u64,
) -> Result<Vec<(String, StoredTensor)>, String> {
    let mut length = [0u8; 8];
    file.read_exact_at(&mut length, 0)
        .map_err(|_| "shorter than a header".to_string())?;
    let header_len = u64::from_le_bytes(length);
    if header_len > file_len.saturating_sub(8) || header_len > 100_000_000 {
        return Err(format!("header length {header_len} does not fit the file"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|error| error.to_string())?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|error| format!("bad header: {error}"))?;
    let data_start = 8 + header_len;
    let mut tensors = Vec::with_capacity(header.len());
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let field = |key: &str| {
            entry
                .get(key)
                .ok_or_else(|| format!("tensor `{name}` has no `{key}`"))
        };
        let dtype = field("dtype")?
            .as_str()
            .ok_or_else(|| format!("tensor `{name}` has a bad dtype"))?
            .to_string();
        let numbers = |key: &str| -> Result<Vec<u64>, String> {
            field(key)?
                .as_array()
                .and_then(|items| items.iter().map(serde_json::Value::as_u64).collect())
                .ok_or_else(|| format!("tensor `{name}` has a bad `{key}`"))
        };
        let shape: Vec<usize> = numbers("shape")?.into_iter().map(|d| d as usize).collect();
        let offsets = numbers("data_offsets")?;
        let [start, end] = offsets[..] else {
            return Err(format!("tensor `{name}` has a bad `data_offsets`"));
        };
        let elements: usize = shape.iter().product();
        let expected = parse_dtype(&dtype).map(|dtype| (elements * dtype.size_in_bytes()) as u64);
        if end < start
            || data_start + end > file_len
            || expected.is_some_and(|bytes| bytes != end - start)
        {
            return Err(format!(
                "tensor `{name}`'s data ({start}..{end}) does not fit the file (truncated?)"
            ));
        }
        tensors.push((
            name,
            StoredTensor {
                file: index,
                dtype,
                shape,
                start: data_start + start,
                end: data_start + end,
            },
        ));
    }
    Ok(tensors)
}

// safetensors stores little-endian values, read as they are.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "keyscribe reads little-endian weights"
);

/// A stored tensor read into a buffer of its element type.
fn read_values<T: bytemuck::Pod + candle_core::WithDType>(
    file: &File,
    stored: &StoredTensor,
    shape: &[usize],
) -> std::io::Result<candle_core::Result<Tensor>> {
    let count = (stored.end - stored.start) as usize / std::mem::size_of::<T>();
    let mut values = vec![T::zeroed(); count];
    file.read_exact_at(bytemuck::cast_slice_mut(&mut values), stored.start)?;
    Ok(Tensor::from_vec(values, shape, &Device::Cpu))
}

/// The candle dtype of a safetensors dtype name.
fn parse_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "U8" => DType::U8,
        "U32" => DType::U32,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        _ => return None,
    })
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
    fn sharded_checkpoints_open_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_checkpoint(dir.path());
        let second = dir.path().join("model-00002-of-00002.safetensors");
        let tensors: HashMap<String, Tensor> = [(
            "b.weight".to_string(),
            Tensor::ones(4, DType::F32, &Device::Cpu).unwrap(),
        )]
        .into_iter()
        .collect();
        candle_core::safetensors::save(&tensors, &second).unwrap();
        let checkpoint = Checkpoint::open(&[first, second]).unwrap();
        assert_eq!(checkpoint.names().count(), 4);
        assert_eq!(checkpoint.shape_of("b.weight"), Some(vec![4]));
    }

    #[test]
    fn a_tensor_with_nan_or_infinity_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_checkpoint(dir.path());
        Checkpoint::open(std::slice::from_ref(&path))
            .unwrap()
            .ensure_finite()
            .unwrap();
        for (dtype, bad) in [(DType::F32, f32::NAN), (DType::BF16, f32::INFINITY)] {
            let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let damaged = Tensor::from_slice(&[0.5, bad, 1.0, bad, 0.0, 2.0], (2, 3), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            tensors.insert("a.weight".into(), damaged);
            // An integer tensor is not checked.
            tensors.insert("steps".into(), Tensor::new(&[7i64], &Device::Cpu).unwrap());
            candle_core::safetensors::save(&tensors, &path).unwrap();
            let error = Checkpoint::open(std::slice::from_ref(&path))
                .unwrap()
                .ensure_finite()
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("`a.weight`") && error.contains("2 NaN or infinite"),
                "{dtype:?}: {error}"
            );
        }
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

    #[test]
    fn a_file_that_is_not_safetensors_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"{\"not\": \"safetensors\"} and more text").unwrap();
        let error = Checkpoint::open(&[path]).err().unwrap().to_string();
        assert!(
            error.contains("model.safetensors") && error.contains("not a readable safetensors"),
            "{error}"
        );
    }

    #[test]
    fn tensors_load_in_the_requested_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = Checkpoint::open(&[write_checkpoint(dir.path())]).unwrap();
        let weight = checkpoint
            .load("a.weight", DType::BF16, &Device::Cpu)
            .unwrap();
        assert_eq!(weight.dtype(), DType::BF16);
        assert_eq!(weight.dims(), &[2, 3]);
        let sum = weight.to_dtype(DType::F32).unwrap().sum_all().unwrap();
        assert_eq!(sum.to_scalar::<f32>().unwrap(), 6.0);
    }
}
