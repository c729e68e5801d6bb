//! The list of videos a batch works through, and which of them belong to one shard.
//!
//! A manifest is a text file of paths (one per line), a CSV file with a `path` column or a
//! Parquet file with a `path` column. A video belongs to shard `hash(path) % N`, where the
//! hash is the first 64 bits of the SHA-256 of the path as the manifest spells it: adding
//! videos to a manifest never moves the ones already there to another shard, and every
//! worker computes the same assignment without talking to the others.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::Array;
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest, Sha256};

use super::BatchError;

/// The column that names the videos in a CSV or Parquet manifest.
pub const PATH_COLUMN: &str = "path";

/// The videos of a manifest, each path once, in the manifest's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest file.
    pub source: PathBuf,
    /// The paths as the manifest spells them (relative ones are taken from the working
    /// directory, as every other command takes them).
    pub paths: Vec<String>,
    /// Paths listed more than once (each kept once, at its first place).
    pub repeated: usize,
}

impl Manifest {
    /// Reads a manifest: Parquet when the file starts with Parquet's magic bytes, CSV when
    /// its name ends in `.csv`, else text with one path per line (blank lines and lines
    /// starting with `#` are skipped).
    pub fn read(source: &Path) -> Result<Manifest, BatchError> {
        let bad = |problem: String| BatchError::Manifest {
            path: source.to_path_buf(),
            problem,
        };
        let bytes = std::fs::read(source).map_err(|error| bad(error.to_string()))?;
        let is_csv = source
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("csv"));
        let listed = if bytes.starts_with(b"PAR1") {
            parquet_paths(source).map_err(bad)?
        } else if is_csv {
            csv_paths(&bytes).map_err(bad)?
        } else {
            text_paths(&bytes).map_err(bad)?
        };
        let listed_count = listed.len();
        let mut seen = HashSet::new();
        let mut paths = Vec::with_capacity(listed_count);
        for path in listed {
            if seen.insert(path.clone()) {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(bad("lists no videos".into()));
        }
        Ok(Manifest {
            source: source.to_path_buf(),
            repeated: listed_count - paths.len(),
            paths,
        })
    }

    /// The paths that belong to `shard`, in the manifest's order.
    pub fn shard(&self, shard: Shard) -> Vec<&str> {
        self.paths
            .iter()
            .filter(|path| shard_of(path, shard.count) == shard.index)
            .map(String::as_str)
            .collect()
    }
}

/// The paths of a text manifest.
fn text_paths(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// The `path` column of a CSV manifest (with a header row).
fn csv_paths(bytes: &[u8]) -> Result<Vec<String>, String> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader.headers().map_err(|error| error.to_string())?;
    let column = headers
        .iter()
        .position(|name| name.trim() == PATH_COLUMN)
        .ok_or_else(|| no_path_column(headers.iter()))?;
    let mut paths = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|error| format!("row {}: {error}", row + 2))?;
        let path = record.get(column).unwrap_or("").trim();
        if path.is_empty() {
            return Err(format!("row {}: the path is empty", row + 2));
        }
        paths.push(path.to_string());
    }
    Ok(paths)
}

/// The `path` column of a Parquet manifest (any string type).
fn parquet_paths(source: &Path) -> Result<Vec<String>, String> {
    let file = File::open(source).map_err(|error| error.to_string())?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|error| error.to_string())?;
    let schema = builder.schema().clone();
    let column = schema
        .index_of(PATH_COLUMN)
        .map_err(|_| no_path_column(schema.fields().iter().map(|field| field.name().as_str())))?;
    let reader = builder.build().map_err(|error| error.to_string())?;
    let mut paths = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| error.to_string())?;
        let array = batch.column(column);
        for row in 0..array.len() {
            let path = match array.data_type() {
                _ if array.is_null(row) => None,
                DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
                DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
                DataType::Utf8View => Some(array.as_string_view().value(row)),
                other => return Err(format!("the `path` column holds {other}, not strings")),
            };
            match path.map(str::trim) {
                Some(path) if !path.is_empty() => paths.push(path.to_string()),
                _ => return Err(format!("row {}: the path is empty", paths.len() + 1)),
            }
        }
    }
    Ok(paths)
}

/// The message for a table without a `path` column.
fn no_path_column<'a>(columns: impl Iterator<Item = &'a str>) -> String {
    let columns: Vec<&str> = columns.collect();
    format!(
        "has no `{PATH_COLUMN}` column (its columns: {})",
        columns.join(", ")
    )
}

/// The shard a path belongs to among `count` shards.
pub fn shard_of(path: &str, count: usize) -> usize {
    let digest = Sha256::digest(path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % count as u64) as usize
}

/// One shard of a manifest: `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// From 0.
    pub index: usize,
    /// How many shards the manifest is split into.
    pub count: usize,
}

/// Where a shard's index and count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSource {
    /// `--shard-index` and `--num-shards`.
    Flags,
    /// Slurm's `SLURM_ARRAY_TASK_ID` (less `SLURM_ARRAY_TASK_MIN`) and
    /// `SLURM_ARRAY_TASK_COUNT` or `--num-shards`.
    SlurmArray,
    /// Kubernetes' `JOB_COMPLETION_INDEX` (an Indexed Job) and `--num-shards`.
    KubernetesIndexedJob,
    /// No shard given: the whole manifest.
    Whole,
}

impl Shard {
    /// The shard from the flags when given, else from the engine's variables (read with
    /// `variable`, e.g. `std::env::var`), else the whole manifest as shard 0 of
    /// `num_shards` (1 when not given).
    pub fn resolve(
        shard_index: Option<usize>,
        num_shards: Option<usize>,
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<(Shard, ShardSource), BatchError> {
        let number = |name: &'static str| -> Result<Option<usize>, BatchError> {
            match variable(name) {
                None => Ok(None),
                Some(value) => value.trim().parse().map(Some).map_err(|_| {
                    BatchError::Shard(format!("{name}={value:?} is not a whole number"))
                }),
            }
        };
        let (index, count, source) = if let Some(index) = shard_index {
            let count = num_shards
                .ok_or_else(|| BatchError::Shard("--shard-index needs --num-shards".to_string()))?;
            (index, count, ShardSource::Flags)
        } else if let Some(task) = number("SLURM_ARRAY_TASK_ID")? {
            let first = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = task.checked_sub(first).ok_or_else(|| {
                BatchError::Shard(format!(
                    "SLURM_ARRAY_TASK_ID={task} is below SLURM_ARRAY_TASK_MIN={first}"
                ))
            })?;
            let count = match num_shards {
                Some(count) => count,
                None => number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                    BatchError::Shard(
                        "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; pass \
                         --num-shards"
                            .to_string(),
                    )
                })?,
            };
            (index, count, ShardSource::SlurmArray)
        } else if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let count = num_shards.ok_or_else(|| {
                BatchError::Shard(
                    "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --num-shards \
                     with the Job's `completions`"
                        .to_string(),
                )
            })?;
            (index, count, ShardSource::KubernetesIndexedJob)
        } else {
            (0, num_shards.unwrap_or(1), ShardSource::Whole)
        };
        if count == 0 {
            return Err(BatchError::Shard(
                "the number of shards must be at least 1".to_string(),
            ));
        }
        if index >= count {
            return Err(BatchError::Shard(format!(
                "shard index {index} is out of range for {count} shards (0 to {})",
                count - 1
            )));
        }
        Ok((Shard { index, count }, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        }
    }

    #[test]
    fn adding_videos_moves_none_of_the_old_ones() {
        let old: Vec<String> = (0..500).map(|i| format!("/videos/{i:04}.mp4")).collect();
        let grown: Vec<String> = (0..2000).map(|i| format!("/videos/{i:04}.mp4")).collect();
        for count in [1, 3, 16] {
            for path in &old {
                assert_eq!(shard_of(path, count), shard_of(path, count));
            }
            let before: Vec<usize> = old.iter().map(|path| shard_of(path, count)).collect();
            let after: Vec<usize> = grown[..500]
                .iter()
                .map(|path| shard_of(path, count))
                .collect();
            assert_eq!(before, after);
        }
    }

    #[test]
    fn every_video_is_in_exactly_one_shard_and_shards_are_balanced() {
        let manifest = Manifest {
            source: PathBuf::from("m.txt"),
            paths: (0..3000).map(|i| format!("clip-{i}.mp4")).collect(),
            repeated: 0,
        };
        let count = 7;
        let mut seen = HashSet::new();
        let mut sizes = Vec::new();
        for index in 0..count {
            let shard = manifest.shard(Shard { index, count });
            sizes.push(shard.len());
            for path in shard {
                assert!(seen.insert(path.to_string()), "{path} in two shards");
            }
        }
        assert_eq!(seen.len(), 3000);
        // 3000 / 7 = 428.6; a fair hash keeps every shard within 20% of that.
        assert!(
            sizes.iter().all(|&size| (343..=515).contains(&size)),
            "{sizes:?}"
        );
    }

    #[test]
    fn flags_win_over_engine_variables() {
        let variables = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        let resolved = Shard::resolve(Some(1), Some(2), variables).unwrap();
        assert_eq!(resolved, (Shard { index: 1, count: 2 }, ShardSource::Flags));
    }

    #[test]
    fn slurm_array_variables_are_honoured() {
        let variables = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        let resolved = Shard::resolve(None, None, variables).unwrap();
        assert_eq!(
            resolved,
            (Shard { index: 4, count: 8 }, ShardSource::SlurmArray)
        );
    }

    #[test]
    fn kubernetes_completion_index_needs_the_shard_count() {
        let variables = env(&[("JOB_COMPLETION_INDEX", "2")]);
        let error = Shard::resolve(None, None, &variables).unwrap_err();
        assert!(error.to_string().contains("--num-shards"), "{error}");
        let resolved = Shard::resolve(None, Some(3), &variables).unwrap();
        assert_eq!(
            resolved,
            (
                Shard { index: 2, count: 3 },
                ShardSource::KubernetesIndexedJob
            )
        );
    }

    #[test]
    fn out_of_range_and_malformed_shards_are_refused() {
        let none = env(&[]);
        assert!(Shard::resolve(Some(2), Some(2), &none).is_err());
        assert!(Shard::resolve(Some(0), Some(0), &none).is_err());
        assert!(Shard::resolve(Some(0), None, &none).is_err());
        let bad = env(&[("SLURM_ARRAY_TASK_ID", "x")]);
        let error = Shard::resolve(None, Some(2), bad).unwrap_err();
        assert!(error.to_string().contains("SLURM_ARRAY_TASK_ID"), "{error}");
        assert_eq!(
            Shard::resolve(None, None, &none).unwrap(),
            (Shard { index: 0, count: 1 }, ShardSource::Whole)
        );
    }

    #[test]
    fn text_and_csv_manifests_list_their_paths_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("videos.txt");
        std::fs::write(&text, "# my videos\na.mp4\n\n  b.mp4 \r\na.mp4\n").unwrap();
        let manifest = Manifest::read(&text).unwrap();
        assert_eq!(manifest.paths, ["a.mp4", "b.mp4"]);
        assert_eq!(manifest.repeated, 1);

        let csv = dir.path().join("videos.csv");
        std::fs::write(&csv, "id,path\n1,\"x, y.mp4\"\n2,z.mp4\n").unwrap();
        assert_eq!(Manifest::read(&csv).unwrap().paths, ["x, y.mp4", "z.mp4"]);

        let no_column = dir.path().join("other.csv");
        std::fs::write(&no_column, "id,file\n1,a.mp4\n").unwrap();
        let error = Manifest::read(&no_column).unwrap_err().to_string();
        assert!(
            error.contains("other.csv") && error.contains("`path`"),
            "{error}"
        );

        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(Manifest::read(&empty).is_err());
    }
}
