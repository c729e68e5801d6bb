//! `keyscribe watch` on a live stream: end-to-end latency (from the arrival of a scene's
//! first frame to its JSON line on stdout) and resident memory over a long stream.
//!
//! FFmpeg serves the committed sample in a loop, in real time, as MPEG-TS over TCP
//! (`ffmpeg -re -stream_loop -1 -i samples/scenes.mp4 -t SECONDS -c copy -f mpegts
//! tcp://127.0.0.1:PORT?listen=1`); the watch reads it with the default selection settings.
//!
//! - `KEYSCRIBE_LIVE_SECONDS`: stream length (default 120; the README's figures use 600).
//! - `KEYSCRIBE_LIVE_EMBEDDER` / `KEYSCRIBE_LIVE_CAPTIONER`: model directories (default the
//!   tiny fixtures in `tests/fixtures/`); `KEYSCRIBE_LIVE_ARGS`: more `watch` flags, split at
//!   spaces (e.g. `--set caption.dtype=bf16 --max-tokens 30`).
//!
//! Run with `cargo bench --bench live`.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seconds: f64 = std::env::var("KEYSCRIBE_LIVE_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(120.0);
    let model = |variable: &str, fixture: &str| {
        std::env::var(variable).unwrap_or_else(|_| {
            root.join("tests/fixtures")
                .join(fixture)
                .display()
                .to_string()
        })
    };
    let embedder = model("KEYSCRIBE_LIVE_EMBEDDER", "mobileclip-s0-tiny");
    let captioner = model("KEYSCRIBE_LIVE_CAPTIONER", "fastvlm-tiny-hf");
    let extra = std::env::var("KEYSCRIBE_LIVE_ARGS").unwrap_or_default();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut server = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(root.join("samples/scenes.mp4"))
        .args(["-t", &seconds.to_string(), "-c", "copy", "-f", "mpegts"])
        .arg(format!("tcp://127.0.0.1:{port}?listen=1"))
        .stdin(Stdio::null())
        .spawn()
        .expect("the ffmpeg CLI runs");
    let out = std::env::temp_dir().join(format!("keyscribe-live-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("a scratch directory");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_keyscribe"))
        .args([
            "watch",
            &format!("tcp://127.0.0.1:{port}"),
            "--no-reconnect",
        ])
        .args(["--embedder", &embedder, "--captioner", &captioner, "-q"])
        .args(["--segment-s", "60", "-o"])
        .arg(out.join("live"))
        .args(extra.split_whitespace())
        .stdout(Stdio::piped())
        .spawn()
        .expect("keyscribe runs");
    let started = Instant::now();
    let stdout = watch.stdout.take().expect("stdout is piped");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&latencies);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            // The first scene starts with the stream, not at a change.
            if value["index"].as_u64().is_some_and(|index| index > 0) {
                if let Some(latency) = value["latency_s"].as_f64() {
                    collected.lock().expect("latencies").push(latency);
                }
            }
        }
    });
    let mut memory: Vec<(f64, f64)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    while watch.try_wait().expect("waiting works").is_none() {
        if started.elapsed() >= next_sample {
            memory.push((started.elapsed().as_secs_f64(), resident_mib(watch.id())));
            next_sample += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().expect("the reader finishes");
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&out);

    let mut latencies = latencies.lock().expect("latencies").clone();
    latencies.sort_by(f64::total_cmp);
    println!("keyscribe watch, {seconds} s stream, embedder {embedder}, captioner {captioner}");
    if latencies.is_empty() {
        println!("no keyframe after the first");
    } else {
        let median = latencies[latencies.len() / 2];
        println!(
            "latency from a scene's first frame to its JSON line over {} scenes: median {median:.2} s, \
             min {:.2} s, max {:.2} s",
            latencies.len(),
            latencies[0],
            latencies[latencies.len() - 1]
        );
    }
    let samples: Vec<&(f64, f64)> = memory.iter().filter(|(_, mib)| *mib > 0.0).collect();
    let peak = samples.iter().map(|(_, mib)| *mib).fold(0.0, f64::max);
    let every = (samples.len() / 10).max(1);
    let trace: Vec<String> = samples
        .iter()
        .step_by(every)
        .chain(samples.last())
        .map(|(at, mib)| format!("{mib:.0} MiB at {at:.0} s"))
        .collect();
    println!("resident memory: {}; peak {peak:.0} MiB", trace.join(", "));
}

/// The resident memory of process `pid`, in MiB (0 once it has ended).
fn resident_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
