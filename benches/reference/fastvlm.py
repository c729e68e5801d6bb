#!/usr/bin/env python3
"""transformers' FastVLM on the same weights and inputs as keyscribe's FastVLM benchmark.

    HF_HUB_OFFLINE=1 /opt/refpy/bin/python benches/reference/fastvlm.py DIR/hf [--threads 2] [--dtype f32|bf16] [--new-tokens 64]

DIR is what ``tests/fixtures/make_fastvlm.py --full-size DIR`` writes: the model in the
transformers layout in ``DIR/hf``, and ``DIR/expected.json`` + ``DIR/expected.safetensors``
with the preprocessed pixels and prompt ids of its first case (the same image and prompt the
keyscribe benchmark uses). ``FastVlmForConditionalGeneration`` runs with its default attention,
torch.set_num_threads(THREADS) and torch.inference_mode(). After a warm-up, medians over
``--runs`` runs of:

- ``vision_s``: vision encoder + projector (``get_image_features``) on the preprocessed pixels;
- ``time_to_first_token_s``: preprocessed pixels + prompt ids -> first generated token
  (vision + LM prefill + first greedy choice), measured inside ``generate`` by a streamer;
- ``prefill_s``: the language model alone on the prompt embeddings (image features spliced
  in), logits of the last position only;
- ``decode_tokens_per_s``: greedy decoding speed after the first token (``generate`` with
  ``min_new_tokens = max_new_tokens = N``, so it never stops early);
- ``total_s``: the whole ``generate`` call for N new tokens.

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
from safetensors.torch import load_file  # noqa: E402
from transformers import FastVlmForConditionalGeneration  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


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
    parser.add_argument("dir", type=Path, help="the transformers layout (DIR/hf) of a --full-size fixture")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2")
    torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]

    root = args.dir.resolve().parent
    expected = json.loads((root / "expected.json").read_text())
    case = expected["cases"][0]
    pixel_values = load_file(str(root / "expected.safetensors"))["case0.pixel_values"].to(dtype)
    input_ids = torch.tensor([case["input_ids_hf"]])
    attention_mask = torch.ones_like(input_ids)

    loaded = time.perf_counter()
    model = FastVlmForConditionalGeneration.from_pretrained(args.dir, dtype=dtype).eval()
    load_s = time.perf_counter() - loaded

    def image_features():
        return model.get_image_features(pixel_values=pixel_values).pooler_output

    with torch.inference_mode():
        features = image_features()
        embeds = model.get_input_embeddings()(input_ids)
        mask = (input_ids == model.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(mask, features.to(embeds.dtype))

        def prefill():
            return model(inputs_embeds=embeds, attention_mask=attention_mask, logits_to_keep=1).logits

        def generate(clock):
            return model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                pixel_values=pixel_values,
                do_sample=False,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                streamer=clock,
            )

        vision_s = median_seconds(image_features, args.runs, args.warmup)
        prefill_s = median_seconds(prefill, args.runs, args.warmup)

        for _ in range(args.warmup):
            generate(TokenClock())
        ttft, decode_rates, totals = [], [], []
        tokens = None
        for _ in range(args.runs):
            clock = TokenClock()
            started = time.perf_counter()
            out = generate(clock)
            finished = time.perf_counter()
            # clock.times: the prompt, then one entry per generated token.
            generated = len(clock.times) - 1
            assert generated == args.new_tokens, generated
            ttft.append(clock.times[1] - started)
            decode_rates.append((generated - 1) / (clock.times[-1] - clock.times[1]))
            totals.append(finished - started)
            tokens = out[0, input_ids.shape[1]:].tolist()

    results = {
        "model": str(args.dir),
        "threads": args.threads,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": model.config._attn_implementation,
        "prompt_tokens": input_ids.shape[1],
        "image_size": pixel_values.shape[-1],
        "new_tokens": args.new_tokens,
        "runs": args.runs,
        "load_s": load_s,
        "vision_s": vision_s,
        "time_to_first_token_s": statistics.median(ttft),
        "prefill_s": prefill_s,
        "decode_tokens_per_s": statistics.median(decode_rates),
        "total_s": statistics.median(totals),
        "first_tokens": tokens[:20],
        "first_tokens_match_expected": tokens[:20] == case["greedy_tokens"][: len(tokens[:20])],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
