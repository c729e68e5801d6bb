#!/usr/bin/env python3
"""transformers' SmolVLM on the same weights and image as keyscribe's SmolVLM benchmark.

    HF_HUB_OFFLINE=1 /work/venvs/openclip/bin/python benches/reference/smolvlm.py DIR/model IMAGE \
        [--threads 2] [--dtype f32|bf16] [--new-tokens 30] [--splitting on|off]

DIR is what ``tests/fixtures/make_smolvlm.py --full-size DIR`` writes. The processor is the one
``AutoProcessor`` loads from the directory (the torchvision ``Idefics3ImageProcessor``), with
``do_image_splitting`` as asked; ``Idefics3ForConditionalGeneration`` runs with its default
attention, ``torch.set_num_threads(THREADS)`` and ``torch.inference_mode()``. After a warm-up,
medians over ``--runs`` runs of:

- ``preprocess_s``: the processor on the image and the chat prompt;
- ``vision_s``: vision tower + connector (``get_image_features``) on the processed pixels;
- ``time_to_first_token_s``: processed inputs -> first generated token (vision + prefill +
  first greedy choice), measured inside ``generate`` by a streamer;
- ``decode_tokens_per_s``: greedy decoding after the first token (``min_new_tokens =
  max_new_tokens = N``, so it never stops early);
- ``total_s``: preprocessing plus the whole ``generate`` call for N new tokens.

Prints one JSON object with the process's peak RSS.
"""

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoProcessor, Idefics3ForConditionalGeneration  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
INSTRUCTION = "Describe this image."


class TokenClock(BaseStreamer):
    """Records when generate hands over each batch of tokens (the prompt first)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


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
    parser.add_argument("dir", type=Path, help="the model directory (DIR/model of a --full-size fixture)")
    parser.add_argument("image", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    parser.add_argument("--new-tokens", type=int, default=30)
    parser.add_argument("--splitting", choices=["on", "off"], default="off")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2")
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    splitting = args.splitting == "on"

    processor = AutoProcessor.from_pretrained(args.dir)
    model = Idefics3ForConditionalGeneration.from_pretrained(args.dir, dtype=dtype).eval()
    image = Image.open(args.image).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)

    def preprocess():
        return processor(images=[image], text=prompt, do_image_splitting=splitting, return_tensors="pt")

    with torch.inference_mode():
        inputs = preprocess()
        pixel_values = inputs["pixel_values"].to(dtype)

        def image_features():
            return model.model.get_image_features(pixel_values=pixel_values).pooler_output

        def generate(clock):
            return model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                pixel_values=pixel_values,
                do_sample=False,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                streamer=clock,
            )

        preprocess_s = median_seconds(preprocess, args.runs, args.warmup)
        vision_s = median_seconds(image_features, args.runs, args.warmup)
        for _ in range(args.warmup):
            generate(TokenClock())
        ttft, decode_rates, totals = [], [], []
        for _ in range(args.runs):
            clock = TokenClock()
            started = time.perf_counter()
            generate(clock)
            finished = time.perf_counter()
            generated = len(clock.times) - 1
            assert generated == args.new_tokens, generated
            ttft.append(clock.times[1] - started)
            decode_rates.append((generated - 1) / (clock.times[-1] - clock.times[1]))
            totals.append(preprocess_s + finished - started)

    results = {
        "model": str(args.dir),
        "threads": args.threads,
        "dtype": args.dtype,
        "splitting": splitting,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": model.config._attn_implementation,
        "image_processor": type(processor.image_processor).__name__,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "tiles": int(pixel_values.shape[1]),
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "preprocess_s": preprocess_s,
        "vision_s": vision_s,
        "time_to_first_token_s": statistics.median(ttft),
        "decode_tokens_per_s": statistics.median(decode_rates),
        "total_s": statistics.median(totals),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
