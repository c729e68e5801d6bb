#!/usr/bin/env python3
"""transformers' SigLIP2 on the same weights and inputs as `cargo bench --bench siglip`.

    HF_HUB_OFFLINE=1 /work/venvs/openclip/bin/python benches/reference/siglip.py DIR [--threads 2]

DIR is a checkpoint directory in the Hub layout with the fixture script's
`reference.safetensors` (`tests/fixtures/make_siglip.py --full-size DIR` makes one). Times,
with torch.set_num_threads(THREADS) and torch.inference_mode(), transformers' default
attention (SDPA), f32:

- `get_image_features(pixel_values).pooler_output`, normalised, on the processor's
  pixel values, batch 1 and 16;
- one text query: the processor (padding="max_length", max_length=64, truncation=True) +
  `get_text_features(...).pooler_output`, normalised.

Prints one JSON object: medians in seconds, throughputs, and the process's peak RSS (VmHWM).
"""

import argparse
import json
import statistics
import time

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoProcessor, SiglipModel

QUERY = "a robot standing on the surface of Mars"


def peak_rss_mib():
    """This process's peak resident memory (VmHWM). `getrusage`'s `ru_maxrss` would report
    the bench process's when that started this one, as it survives the exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def median_seconds(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20, help="timed runs for batch 1 and text (batch 16: a quarter)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = SiglipModel.from_pretrained(args.dir).eval()
    processor = AutoProcessor.from_pretrained(args.dir)
    pixels = load_file(f"{args.dir}/reference.safetensors")["pixel_values"].float()
    batch16 = pixels[torch.arange(16) % pixels.shape[0]].contiguous()
    batch1 = pixels[:1].contiguous()

    def image(batch):
        features = model.get_image_features(pixel_values=batch).pooler_output
        return torch.nn.functional.normalize(features, dim=-1)

    def text():
        ids = processor(text=[QUERY], padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        features = model.get_text_features(input_ids=ids["input_ids"]).pooler_output
        return torch.nn.functional.normalize(features, dim=-1)

    results = {"threads": args.threads, "torch": torch.__version__, "transformers": transformers.__version__}
    with torch.inference_mode():
        b1 = median_seconds(lambda: image(batch1), args.runs, 3)
        b16 = median_seconds(lambda: image(batch16), max(args.runs // 4, 3), 1)
        query = median_seconds(text, args.runs, 3)
    results.update(
        {
            "image_batch1_s": b1,
            "image_batch1_per_s": 1 / b1,
            "image_batch16_s": b16,
            "image_batch16_per_s": 16 / b16,
            "text_query_s": query,
            "text_queries_per_s": 1 / query,
            "peak_rss_mib": peak_rss_mib(),
        }
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
