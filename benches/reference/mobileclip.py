#!/usr/bin/env python3
"""open_clip's MobileCLIP2 on the same weights and inputs as `cargo bench --bench mobileclip`.

    HF_HUB_OFFLINE=1 /opt/refpy/bin/python benches/reference/mobileclip.py DIR [--threads 2]

DIR is a checkpoint directory in the Hub layout with the fixture script's
`reference_pixels.safetensors` (`tests/fixtures/make_mobileclip.py --full-size DIR` makes
one). Times, with torch.set_num_threads(THREADS) and torch.inference_mode():

- the image tower (encode_image, normalised) on preprocessed 256x256 inputs, batch 1 and 16;
- the text tower (tokenize + encode_text, normalised) on one query;
- the same image tower after timm's reparameterize_model (the inference form, a fairer
  comparison for a runtime that folds the branches at load time, as keyscribe does).

Prints one JSON object: medians in seconds, throughputs, and the process's peak RSS.
"""

import argparse
import json
import resource
import statistics
import time

import open_clip
import torch
from safetensors.torch import load_file
from timm.utils.model import reparameterize_model

QUERY = "a robot standing on the surface of Mars"


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

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{args.dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{args.dir}")
    model.eval()
    cfg = model.visual.preprocess_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    pixels = load_file(f"{args.dir}/reference_pixels.safetensors")["pixels_u8"].float()
    images = (pixels / 255.0 - mean) / std
    batch16 = images[torch.arange(16) % images.shape[0]].contiguous()
    batch1 = images[:1].contiguous()

    results = {"threads": args.threads, "torch": torch.__version__, "open_clip": open_clip.__version__}
    runs16 = max(args.runs // 4, 3)
    with torch.inference_mode():
        for name, visual in (("open_clip", model), ("open_clip_reparameterized", None)):
            if visual is None:
                model.visual.trunk = reparameterize_model(model.visual.trunk)
            b1 = median_seconds(lambda: model.encode_image(batch1, normalize=True), args.runs, 3)
            b16 = median_seconds(lambda: model.encode_image(batch16, normalize=True), runs16, 1)
            results[name] = {
                "image_batch1_s": b1,
                "image_batch1_per_s": 1 / b1,
                "image_batch16_s": b16,
                "image_batch16_per_s": 16 / b16,
            }
        text = median_seconds(lambda: model.encode_text(tokenizer([QUERY]), normalize=True), args.runs, 3)
        results["open_clip"]["text_query_s"] = text
        results["open_clip"]["text_queries_per_s"] = 1 / text
    results["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
