//! `keyscribe batch` and `index --from-parquet` through the binary, with the tiny models:
//! the tables read back with the `parquet` crate, markers, re-runs, failures, shards and
//! the engines' variables, manifests in every format, and search over the tables.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use common::{arg, assert_ok, keyscribe_in, text, tiny_captioner, tiny_embedder, video};
use keyscribe::analysis::Analysis;
use keyscribe::batch::manifest::shard_of;

/// `keyscribe batch` in `dir` with the tiny models and 4-token captions.
fn batch(dir: &Path, extra: &[&str]) -> std::process::Output {
    batch_with_env(dir, extra, &[])
}

/// As [`batch`], with environment variables set.
fn batch_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let embedder = tiny_embedder();
    let captioner = tiny_captioner();
    let mut command = common::keyscribe();
    command
        .arg("batch")
        .args(["--embedder", arg(&embedder), "--captioner", arg(&captioner)])
        .args(["--max-tokens", "4"])
        .args(extra)
        .current_dir(dir)
        .env("KEYSCRIBE_CACHE_DIR", dir.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf-home"))
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("SLURM_ARRAY_TASK_MIN")
        .env_remove("SLURM_ARRAY_TASK_COUNT")
        .env_remove("JOB_COMPLETION_INDEX");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("keyscribe runs")
}

/// Copies test videos into `dir` and writes a text manifest of them (relative paths).
fn videos_in(dir: &Path, names: &[&str]) -> Vec<String> {
    let mut paths = Vec::new();
    for name in names {
        let source = if *name == "scenes.mp4" {
            common::scenes_sample()
        } else {
            video(name)
        };
        std::fs::copy(&source, dir.join(name)).unwrap();
        paths.push(name.to_string());
    }
    std::fs::write(dir.join("videos.txt"), paths.join("\n") + "\n").unwrap();
    paths
}

/// Every record batch of a Parquet file, and its schema.
fn read_table(path: &Path) -> (Arc<Schema>, Vec<RecordBatch>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches = builder.build().unwrap().map(Result::unwrap).collect();
    (schema, batches)
}

/// A text column of a table, row by row (`None` for nulls).
fn texts(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|batch| {
            let array = batch.column_by_name(column).unwrap().as_string::<i32>();
            (0..array.len())
                .map(|row| (!array.is_null(row)).then(|| array.value(row).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A double column of a table.
fn doubles(batches: &[RecordBatch], column: &str) -> Vec<f64> {
    batches
        .iter()
        .flat_map(|batch| {
            batch
                .column_by_name(column)
                .unwrap()
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// The embedding column of a table, one vector per row.
fn embeddings(batches: &[RecordBatch]) -> Vec<Vec<f32>> {
    batches
        .iter()
        .flat_map(|batch| {
            let list = batch
                .column_by_name("embedding")
                .unwrap()
                .as_fixed_size_list();
            let dim = list.value_length() as usize;
            let values = list
                .values()
                .as_primitive::<Float32Type>()
                .values()
                .to_vec();
            values.chunks(dim).map(<[f32]>::to_vec).collect::<Vec<_>>()
        })
        .collect()
}

/// The file names in a directory, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The content of every Parquet file in `dir`, by name.
fn table_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    names_in(dir)
        .into_iter()
        .filter(|name| name.ends_with(".parquet"))
        .map(|name| (name.clone(), std::fs::read(dir.join(&name)).unwrap()))
        .collect()
}

#[test]
fn a_shard_writes_tables_whose_rows_are_the_analyses_and_records_a_damaged_video() {
    let dir = tempfile::tempdir().unwrap();
    let paths = videos_in(dir.path(), &["scenes.mp4", "counter.mp4"]);
    std::fs::write(dir.path().join("damaged.mp4"), vec![0x5a; 20_000]).unwrap();
    std::fs::write(
        dir.path().join("videos.txt"),
        format!("{}\n{}\ndamaged.mp4\n", paths[0], paths[1]),
    )
    .unwrap();
    let output = batch(dir.path(), &["--manifest", "videos.txt", "--out", "out"]);
    // One video failed: exit 3 (the shard finished), the others complete.
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("damaged.mp4: failed"), "{stderr}");
    let out = dir.path().join("out");
    let failed = names_in(&out.join("_failed"));
    assert_eq!(failed.len(), 1);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_failed").join(&failed[0])).unwrap())
            .unwrap();
    assert_eq!(record["path"], "damaged.mp4");
    assert!(record["error"].as_str().unwrap().contains("damaged.mp4"));

    let (schema, keyframes) = read_table(&out.join("part-00000-of-00001.parquet"));
    let expect_type = |name: &str, data_type: DataType| {
        assert_eq!(
            schema.field_with_name(name).unwrap().data_type(),
            &data_type,
            "{name}"
        );
    };
    expect_type("video_path", DataType::Utf8);
    expect_type("video_sha256", DataType::Utf8);
    expect_type("duration_s", DataType::Float64);
    expect_type("keyframe_index", DataType::UInt32);
    expect_type("time_s", DataType::Float64);
    expect_type("scene_start_s", DataType::Float64);
    expect_type("scene_end_s", DataType::Float64);
    expect_type("change", DataType::Float32);
    expect_type("caption", DataType::Utf8);
    expect_type("embedder", DataType::Utf8);
    expect_type("captioner_licence", DataType::Utf8);
    expect_type("settings_sha256", DataType::Utf8);
    expect_type(
        "embedding",
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 32),
    );
    let (_, frames) = read_table(&out.join("frames-00000.parquet"));

    // Each finished video: a marker with its row counts, rows equal to its analysis.
    let key_paths = texts(&keyframes, "video_path");
    let key_times = doubles(&keyframes, "time_s");
    let key_vectors = embeddings(&keyframes);
    let captions = texts(&keyframes, "caption");
    let frame_paths = texts(&frames, "video_path");
    let frame_vectors = embeddings(&frames);
    let frame_times = doubles(&frames, "time_s");
    let done = names_in(&out.join("_done"));
    assert_eq!(done.len(), 2);
    for path in &paths {
        let sha256 = keyscribe::pipeline::video_sha256(&dir.path().join(path)).unwrap();
        let marker: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("_done").join(format!("{sha256}.json"))).unwrap(),
        )
        .unwrap();
        let document = out.join(marker["analysis"].as_str().unwrap());
        let analysis = Analysis::load(&document).unwrap();
        let sidecar = analysis.load_frames(&document).unwrap();
        let key_rows: Vec<usize> = (0..key_paths.len())
            .filter(|&row| key_paths[row].as_deref() == Some(path))
            .collect();
        let frame_rows: Vec<usize> = (0..frame_paths.len())
            .filter(|&row| frame_paths[row].as_deref() == Some(path))
            .collect();
        assert_eq!(marker["keyframes"], key_rows.len());
        assert_eq!(marker["frames"], frame_rows.len());
        assert_eq!(key_rows.len(), analysis.keyframes.len());
        assert_eq!(frame_rows.len(), sidecar.len());
        for (keyframe, &row) in analysis.keyframes.iter().zip(&key_rows) {
            assert_eq!(key_times[row], keyframe.time_s);
            assert_eq!(captions[row], keyframe.caption);
            assert!(captions[row].is_some(), "captioned");
            let frame = sidecar
                .time_s
                .iter()
                .position(|&time| time == keyframe.time_s)
                .unwrap();
            assert_eq!(key_vectors[row], sidecar.row(frame));
        }
        for (frame, &row) in frame_rows.iter().enumerate() {
            assert_eq!(frame_times[row], sidecar.time_s[frame]);
            assert_eq!(frame_vectors[row], sidecar.row(frame));
        }
    }
}

#[test]
fn a_rerun_does_no_work_and_writes_the_same_bytes_and_retry_failed_tries_again() {
    let dir = tempfile::tempdir().unwrap();
    let paths = videos_in(dir.path(), &["scenes.mp4"]);
    std::fs::write(dir.path().join("later.mp4"), b"not yet a video").unwrap();
    std::fs::write(
        dir.path().join("videos.txt"),
        format!("{}\nlater.mp4\n", paths[0]),
    )
    .unwrap();
    let args = ["--manifest", "videos.txt", "--out", "out"];
    let first = batch(dir.path(), &args);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first.stderr));
    let out = dir.path().join("out");
    let tables = table_bytes(&out);
    let analyses = out.join("analyses");
    let modified = |name: &str| {
        std::fs::metadata(analyses.join(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    let documents: Vec<String> = names_in(&analyses);
    let times: Vec<_> = documents.iter().map(|name| modified(name)).collect();

    let second = batch(dir.path(), &args);
    assert_eq!(second.status.code(), Some(3));
    let stderr = text(&second.stderr);
    assert!(stderr.contains("scenes.mp4: already done"), "{stderr}");
    assert!(stderr.contains("later.mp4: failed before"), "{stderr}");
    assert!(
        stderr.contains("0 analysed, 1 already done, 0 from the cache, 1 failed"),
        "{stderr}"
    );
    assert_eq!(table_bytes(&out), tables);
    assert_eq!(names_in(&analyses), documents);
    let again: Vec<_> = documents.iter().map(|name| modified(name)).collect();
    assert_eq!(again, times, "no analysis was rewritten");

    // A failure is not tried again unless asked: the damaged file is not decoded again.
    let failed_marker = |out: &Path| {
        let names = names_in(&out.join("_failed"));
        assert_eq!(names.len(), 1);
        out.join("_failed").join(&names[0])
    };
    let marker = failed_marker(&out);
    let recorded = std::fs::read(&marker).unwrap();
    let retried = batch(dir.path(), &[&args[..], &["--retry-failed"]].concat());
    assert_eq!(retried.status.code(), Some(3));
    let stderr = text(&retried.stderr);
    assert!(stderr.contains("later.mp4: failed: "), "{stderr}");
    assert_eq!(std::fs::read(&marker).unwrap(), recorded);

    // A video whose failure was passing (as a share that did not answer): recorded as
    // failed, skipped without --retry-failed, analysed with it and its record removed.
    std::fs::copy(video("counter.mp4"), dir.path().join("flaky.mp4")).unwrap();
    std::fs::write(dir.path().join("flaky.txt"), "flaky.mp4\n").unwrap();
    let flaky = ["--manifest", "flaky.txt", "--out", "flaky-out"];
    let sha256 = keyscribe::pipeline::video_sha256(&dir.path().join("flaky.mp4")).unwrap();
    let flaky_out = dir.path().join("flaky-out");
    std::fs::create_dir_all(flaky_out.join("_failed")).unwrap();
    let record = serde_json::json!({
        "path": "flaky.mp4",
        "video_sha256": sha256,
        "error": "flaky.mp4: Input/output error (os error 5)"
    });
    std::fs::write(
        flaky_out.join("_failed").join(format!("{sha256}.json")),
        record.to_string(),
    )
    .unwrap();
    let skipped = batch(dir.path(), &flaky);
    assert_eq!(skipped.status.code(), Some(3));
    assert!(text(&skipped.stderr).contains("flaky.mp4: failed before"));
    let retried = batch(dir.path(), &[&flaky[..], &["--retry-failed"]].concat());
    assert_ok(&retried);
    assert!(
        text(&retried.stderr).contains("1 analysed, 0 already done, 0 from the cache, 0 failed")
    );
    assert!(names_in(&flaky_out.join("_failed")).is_empty());
    let (_, frames) = read_table(&flaky_out.join("frames-00000.parquet"));
    let videos: BTreeSet<_> = texts(&frames, "video_path").into_iter().flatten().collect();
    assert_eq!(videos, BTreeSet::from(["flaky.mp4".to_string()]));
}

#[test]
fn shards_come_from_flags_slurm_or_kubernetes_and_split_the_manifest_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let paths = videos_in(
        dir.path(),
        &[
            "counter.mp4",
            "h264.mkv",
            "vp9.webm",
            "rotated.mp4",
            "vfr.mp4",
        ],
    );
    let keyframes_only = ["--set", "caption.enabled=false"];
    let base = ["--manifest", "videos.txt", "--out", "out"];
    let args = [&base[..], &keyframes_only[..]].concat();
    let slurm = batch_with_env(
        dir.path(),
        &args,
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ],
    );
    assert_ok(&slurm);
    assert!(text(&slurm.stderr).contains("shard 1 of 2 (from the Slurm array)"));
    let kubernetes = batch_with_env(
        dir.path(),
        &[&args[..], &["--num-shards", "2"]].concat(),
        &[("JOB_COMPLETION_INDEX", "0")],
    );
    assert_ok(&kubernetes);
    assert!(text(&kubernetes.stderr).contains("shard 0 of 2 (from the Kubernetes Indexed Job)"));
    let without_count = batch_with_env(dir.path(), &args, &[("JOB_COMPLETION_INDEX", "0")]);
    assert_eq!(without_count.status.code(), Some(1));
    assert!(text(&without_count.stderr).contains("--num-shards"));

    let out = dir.path().join("out");
    let mut seen = BTreeMap::new();
    for shard in 0..2 {
        let (_, frames) = read_table(&out.join(format!("frames-{shard:05}.parquet")));
        let videos: BTreeSet<String> = texts(&frames, "video_path").into_iter().flatten().collect();
        for video in videos {
            assert_eq!(shard_of(&video, 2), shard, "{video}");
            assert!(seen.insert(video, shard).is_none(), "a video in two shards");
        }
        assert!(out
            .join(format!("part-{shard:05}-of-00002.parquet"))
            .is_file());
    }
    let expected: BTreeSet<String> = paths.into_iter().collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);

    // Flags win; an index out of range is refused before any work.
    let out_of_range = batch(
        dir.path(),
        &[&args[..], &["--shard-index", "2", "--num-shards", "2"]].concat(),
    );
    assert_eq!(out_of_range.status.code(), Some(1));
    assert!(text(&out_of_range.stderr).contains("out of range"));
}

#[test]
fn csv_and_parquet_manifests_give_the_same_shards_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let paths = videos_in(dir.path(), &["counter.mp4", "h264.mkv", "vp9.webm"]);
    let mut csv = String::from("title,path\n");
    for (number, path) in paths.iter().enumerate() {
        csv.push_str(&format!("clip {number},{path}\n"));
    }
    std::fs::write(dir.path().join("videos.csv"), csv).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
    let column = StringArray::from(paths.iter().map(String::as_str).collect::<Vec<_>>());
    let table = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
    let file = File::create(dir.path().join("videos.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&table).unwrap();
    writer.close().unwrap();

    let keyframes_only = ["--set", "caption.enabled=false", "--num-shards", "2"];
    let mut tables = Vec::new();
    for manifest in ["videos.txt", "videos.csv", "videos.parquet"] {
        let out = format!("out-{manifest}");
        for shard in ["0", "1"] {
            let args = [
                "--manifest",
                manifest,
                "--out",
                &out,
                "--shard-index",
                shard,
            ];
            assert_ok(&batch(
                dir.path(),
                &[&args[..], &keyframes_only[..]].concat(),
            ));
        }
        tables.push(table_bytes(&dir.path().join(&out)));
    }
    assert_eq!(tables[0], tables[1], "CSV manifest");
    assert_eq!(tables[0], tables[2], "Parquet manifest");

    std::fs::write(dir.path().join("bad.csv"), "title,file\nx,a.mp4\n").unwrap();
    let bad = batch(dir.path(), &["--manifest", "bad.csv", "--out", "bad"]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = text(&bad.stderr);
    assert!(
        stderr.contains("bad.csv") && stderr.contains("no `path` column"),
        "{stderr}"
    );
}

#[test]
fn a_library_from_the_tables_answers_as_one_index_would_across_several_index_files() {
    let dir = tempfile::tempdir().unwrap();
    videos_in(
        dir.path(),
        &["scenes.mp4", "counter.mp4", "h264.mkv", "vp9.webm"],
    );
    // Without captions the ranking is by picture alone, so one file and several agree
    // exactly (caption scores are weighed per index file).
    let args = [
        "--manifest",
        "videos.txt",
        "--out",
        "out",
        "--num-shards",
        "2",
    ];
    for shard in ["0", "1"] {
        let output = batch(
            dir.path(),
            &[
                &args[..],
                &["--shard-index", shard, "--set", "caption.enabled=false"],
            ]
            .concat(),
        );
        assert_ok(&output);
    }
    let index = |out: &str, max_frames: &str| {
        let output = keyscribe_in(
            dir.path(),
            &[
                "index",
                "--from-parquet",
                "out",
                "--out",
                out,
                "--max-frames-per-index",
                max_frames,
            ],
            None,
        );
        assert_ok(&output);
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(dir.path().join(out).join("library.json")).unwrap(),
        )
        .unwrap()
    };
    let whole = index("whole", "1000000");
    let split = index("split", "20");
    assert_eq!(whole["indexes"].as_array().unwrap().len(), 1);
    let files = split["indexes"].as_array().unwrap();
    assert!(files.len() >= 3, "{split}");
    let frames = |library: &serde_json::Value| -> u64 {
        library["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["frames"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(frames(&whole), frames(&split));
    assert_eq!(whole["embedder"]["name"], "MobileCLIP2-S0 (reduced)");

    for query in [
        "a colourful test pattern",
        "black and white stripes",
        "a red circle",
    ] {
        let search = |library: &str| {
            let output = keyscribe_in(
                dir.path(),
                &["search", library, query, "--top", "6", "--json"],
                None,
            );
            assert_ok(&output);
            serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
        };
        let (one, many) = (search("whole"), search("split"));
        assert_eq!(one.as_array().unwrap().len(), 6, "{one}");
        // Every result lies in a scene read from the keyframe tables (uncaptioned: "").
        assert!(
            one.as_array()
                .unwrap()
                .iter()
                .all(|hit| hit["caption"] == ""),
            "{one}"
        );
        assert_eq!(one, many, "{query}");
    }

    let not_tables = keyscribe_in(
        dir.path(),
        &["index", "--from-parquet", "whole", "--out", "again"],
        None,
    );
    assert_eq!(not_tables.status.code(), Some(1));
    assert!(text(&not_tables.stderr).contains("no frames-*.parquet"));
}

#[test]
fn a_table_that_keyscribe_did_not_write_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tables")).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("path", DataType::Utf8, false)]));
    let column = StringArray::from(vec!["a.mp4"]);
    let table = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
    let path: PathBuf = dir.path().join("tables/frames-00000.parquet");
    let mut writer = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
    writer.write(&table).unwrap();
    writer.close().unwrap();
    let output = keyscribe_in(
        dir.path(),
        &["index", "--from-parquet", "tables", "--out", "library"],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("frames-00000.parquet") && stderr.contains("not a table written by"),
        "{stderr}"
    );
    assert!(!dir.path().join("library/library.json").exists());
}

#[test]
fn a_video_run_analysed_with_the_same_settings_comes_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    videos_in(dir.path(), &["scenes.mp4"]);
    let (embedder, captioner) = (tiny_embedder(), tiny_captioner());
    let run = keyscribe_in(
        dir.path(),
        &[
            "run",
            "scenes.mp4",
            "-o",
            "scenes.analysis.json",
            "--embedder",
            arg(&embedder),
            "--captioner",
            arg(&captioner),
            "--max-tokens",
            "4",
        ],
        None,
    );
    assert_ok(&run);
    let output = batch(dir.path(), &["--manifest", "videos.txt", "--out", "out"]);
    assert_ok(&output);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("scenes.mp4: taken from the analysis cache"),
        "{stderr}"
    );
    let analysis = Analysis::load(&dir.path().join("scenes.analysis.json")).unwrap();
    let (_, keyframes) = read_table(&dir.path().join("out/part-00000-of-00001.parquet"));
    let captions: Vec<Option<String>> = analysis
        .keyframes
        .iter()
        .map(|keyframe| keyframe.caption.clone())
        .collect();
    assert_eq!(texts(&keyframes, "caption"), captions);
}

#[test]
fn an_empty_shard_writes_empty_tables_that_read_as_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let paths = videos_in(dir.path(), &["counter.mp4"]);
    let empty = (0..4)
        .find(|&shard| shard_of(&paths[0], 4) != shard)
        .unwrap();
    let shard = empty.to_string();
    let output = batch(
        dir.path(),
        &[
            "--manifest",
            "videos.txt",
            "--out",
            "out",
            "--num-shards",
            "4",
            "--shard-index",
            &shard,
        ],
    );
    assert_ok(&output);
    let out = dir.path().join("out");
    let (schema, rows) = read_table(&out.join(format!("part-{empty:05}-of-00004.parquet")));
    assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    assert_eq!(
        schema.field_with_name("embedding").unwrap().data_type(),
        &DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), 32)
    );
    let (_, frames) = read_table(&out.join(format!("frames-{empty:05}.parquet")));
    assert_eq!(frames.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
}
