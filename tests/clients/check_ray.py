#!/usr/bin/env python3
"""examples/ray/keyscribe_ray.py on a local two-node Ray cluster, read back with pyarrow.

    check_ray.py KEYSCRIBE

Runs the example over a manifest of the committed sample and the test videos
(samples/make_samples.sh test) in 2 shards with the tiny fixture models, kills one shard's
`keyscribe batch` process with SIGKILL after its first finished video, and checks that Ray's
retry finishes the job with every video exactly once across the shards (in the tables, or
recorded as failed), that the tables read back with pyarrow with the documented types and
the markers' row counts, and that running the job again does no work and leaves the tables
byte for byte as they were.
"""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
import ray.cluster_utils

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARDS = 2


def shard_of(path, count):
    """keyscribe's assignment: the first 64 bits of the path's SHA-256, modulo the count."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % count


def shard_process(index):
    """The pid of the running `keyscribe batch` of shard `index`, if any."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"batch" in arguments and b"--shard-index" in arguments:
            at = arguments.index(b"--shard-index")
            if arguments[at + 1] == str(index).encode():
                return int(entry.name)
    return None


def run_job(keyscribe, manifest, out, address, env, kill_shard=None, paths=()):
    """Runs the example; with `kill_shard`, SIGKILLs that shard's process once one of its
    videos is done and it is still working. Returns (exit code, summary, killed)."""
    command = [
        sys.executable, str(ROOT / "examples/ray/keyscribe_ray.py"),
        "--manifest", str(manifest), "--out", str(out), "--num-shards", str(SHARDS),
        "--keyscribe", keyscribe, "--address", address, "--num-cpus", "1",
        "--max-retries", "2", "--summary", str(out.parent / "summary.json"), "--",
        "--embedder", str(ROOT / "tests/fixtures/mobileclip-s0-tiny"),
        "--captioner", str(ROOT / "tests/fixtures/fastvlm-tiny-hf"),
        "--max-tokens", "4",
    ]
    (out.parent / "summary.json").unlink(missing_ok=True)
    driver = subprocess.Popen(command, env=env)
    killed = False
    if kill_shard is not None:
        mine = [path for path in paths if shard_of(path, SHARDS) == kill_shard]
        while driver.poll() is None and not killed:
            done = {
                json.loads(marker.read_text())["path"]
                for marker in (out / "_done").glob("*.json")
            } if (out / "_done").is_dir() else set()
            pid = shard_process(kill_shard)
            if pid and done.intersection(mine) and len(done.intersection(mine)) < len(mine) - 1:
                os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.02)
    driver.wait(timeout=900)
    summary = out.parent / "summary.json"
    assert summary.exists(), f"the driver exited with {driver.returncode} and no summary"
    return driver.returncode, json.loads(summary.read_text()), killed


def main():
    keyscribe = str(pathlib.Path(sys.argv[1]).resolve())
    work = pathlib.Path(tempfile.mkdtemp(prefix="keyscribe-ray-"))
    videos = work / "videos"
    subprocess.run(["bash", str(ROOT / "samples/make_samples.sh"), "test", str(videos)], check=True)
    paths = sorted(str(path) for path in videos.iterdir()) + [str(ROOT / "samples/scenes.mp4")]
    manifest = work / "manifest.txt"
    manifest.write_text("".join(f"{path}\n" for path in paths))
    out = work / "out"
    env = dict(os.environ, HF_HUB_OFFLINE="1", KEYSCRIBE_CACHE_DIR=str(work / "cache"))
    env["HF_HOME"] = str(work / "hf-home")

    cluster = ray.cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        # The shard with more videos is the one killed mid-way.
        victim = max(range(SHARDS), key=lambda i: sum(shard_of(p, SHARDS) == i for p in paths))
        code, summary, killed = run_job(
            keyscribe, manifest, out, cluster.address, env, kill_shard=victim, paths=paths
        )
        assert killed, "the shard finished before it could be killed mid-way"
        assert summary["shards"] == SHARDS, summary

        done = [json.loads(m.read_text()) for m in (out / "_done").glob("*.json")]
        failed = [json.loads(m.read_text()) for m in (out / "_failed").glob("*.json")]
        failed_paths = sorted(record["path"] for record in failed)
        assert sorted(f["path"] for f in summary["failed"]) == failed_paths, (summary, failed)
        assert code == (1 if failed else 0), code  # the driver: 1 when any video failed

        parts = sorted(out.glob("part-*-of-*.parquet"))
        frames = sorted(out.glob("frames-*.parquet"))
        assert len(parts) == SHARDS and len(frames) == SHARDS, (parts, frames)
        keyframe_table = pq.read_table(parts)
        frame_table = pq.read_table(frames)

        # Every video exactly once: in the tables or recorded as failed, never both.
        in_tables = set(frame_table.column("video_path").to_pylist())
        assert in_tables.isdisjoint(failed_paths), in_tables & set(failed_paths)
        assert sorted(in_tables | set(failed_paths)) == sorted(paths)
        for table, name in ((keyframe_table, "keyframe_index"), (frame_table, "frame_index")):
            keys = list(zip(table.column("video_path").to_pylist(), table.column(name).to_pylist()))
            assert len(keys) == len(set(keys)), f"duplicate rows in the {name} table"
        # Each shard's rows are its own videos'.
        for part in parts:
            index = int(part.name.split("-")[1])
            assert all(shard_of(p, SHARDS) == index for p in pq.read_table(part).column("video_path").to_pylist())
        # Row counts as the markers say.
        by_sha = {record["video_sha256"]: record for record in done}
        for table, key in ((keyframe_table, "keyframes"), (frame_table, "frames")):
            counts = {}
            for sha in table.column("video_sha256").to_pylist():
                counts[sha] = counts.get(sha, 0) + 1
            for sha, count in counts.items():
                assert by_sha[sha][key] == count, (sha, key, by_sha[sha][key], count)

        # The documented types.
        schema = frame_table.schema
        embedding = schema.field("embedding").type
        assert str(embedding) == "fixed_size_list<item: float not null>[32]", embedding
        assert str(schema.field("time_s").type) == "double"
        assert str(keyframe_table.schema.field("caption").type) == "string"
        assert str(keyframe_table.schema.field("change").type) == "float"

        # Again: nothing to do, the same bytes.
        before = {path.name: path.read_bytes() for path in parts + frames}
        code_again, again, _ = run_job(keyscribe, manifest, out, cluster.address, env)
        assert again["analysed"] == 0, again
        assert again["already_done"] == len(in_tables), again
        assert code_again == code
        after = {path.name: path.read_bytes() for path in parts + frames}
        assert before == after, "a second run changed the tables"
        print(
            f"ray: {len(paths)} videos in {SHARDS} shards on 2 nodes, one shard killed mid-way "
            f"and retried: {len(in_tables)} in the tables exactly once, {len(failed_paths)} "
            f"recorded as failed; a second run did nothing and left the tables identical"
        )
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
