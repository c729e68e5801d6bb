#!/usr/bin/env python3
"""Run `keyscribe batch` over a video manifest as Ray tasks, one task per shard.

Each task starts one `keyscribe batch` process for its shard (the models load once per
process), on a node of the Ray cluster; every node must see the manifest, the videos and the
output directory at the same paths (a shared file system), and have `keyscribe` installed.
A task whose process dies (a lost node, an out-of-memory kill) is retried by Ray; the retry
skips the videos the dead process finished (their `_done/` markers) and redoes the rest.
Videos that cannot be analysed are recorded in `OUT/_failed/` and do not fail the task.

    python keyscribe_ray.py --manifest videos.txt --out /shared/captions --num-shards 64 \\
        -- --pipeline open

Arguments after `--` go to every `keyscribe batch` (pipeline, models, settings).
"""

import argparse
import json
import subprocess
import sys

import ray


class ShardProcessDied(RuntimeError):
    """The shard's `keyscribe batch` process was killed or crashed: Ray retries the task."""


@ray.remote
def run_shard(keyscribe, manifest, out, index, count, extra):
    """Runs shard `index` of `count`; returns its summary (`keyscribe batch --json`)."""
    command = [
        keyscribe, "batch", "--manifest", manifest, "--out", out,
        "--shard-index", str(index), "--num-shards", str(count), "--json", "--quiet",
        *extra,
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Exit 3: the shard finished and some videos failed (recorded in _failed/). Anything
    # else (1: the models or the output could not be used; a signal) is the process's own
    # trouble, and Ray retries it.
    if done.returncode in (0, 3):
        return json.loads(done.stdout)
    raise ShardProcessDied(
        f"shard {index} of {count}: keyscribe exited with {done.returncode}: "
        f"{done.stderr.strip()[-2000:]}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="text, CSV or Parquet list of videos")
    parser.add_argument("--out", required=True, help="output directory shared by all shards")
    parser.add_argument("--num-shards", type=int, required=True)
    parser.add_argument("--keyscribe", default="keyscribe", help="the keyscribe binary")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: auto)")
    parser.add_argument("--num-cpus", type=float, default=2, help="CPUs per shard task")
    parser.add_argument("--num-gpus", type=float, default=0, help="GPUs per shard task")
    parser.add_argument("--max-retries", type=int, default=3, help="retries of a dead task")
    parser.add_argument("--summary", default=None, help="also write the summary (JSON) here")
    parser.add_argument("extra", nargs="*", help="arguments for keyscribe batch (after --)")
    args = parser.parse_args()

    ray.init(address=args.address)
    task = run_shard.options(
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        max_retries=args.max_retries,
        retry_exceptions=[ShardProcessDied],
    )
    pending = [
        task.remote(args.keyscribe, args.manifest, args.out, index, args.num_shards, args.extra)
        for index in range(args.num_shards)
    ]
    summaries = ray.get(pending)
    failed = [failure for summary in summaries for failure in summary["failed"]]
    total = {
        key: sum(summary[key] for summary in summaries)
        for key in ("videos", "analysed", "already_done", "from_cache", "keyframe_rows", "frame_rows")
    }
    total["video_hours"] = sum(summary["video_hours"] for summary in summaries)
    total["failed"] = failed
    total["shards"] = len(summaries)
    print(json.dumps(total, indent=2))
    if args.summary:
        with open(args.summary, "w") as summary_file:
            json.dump(total, summary_file, indent=2)
    for failure in failed:
        print(f"failed: {failure['path']}: {failure['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
