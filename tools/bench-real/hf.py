"""HF transformers' side of tools/bench-real/run: load a checkpoint folder in bf16 on CPU,
greedy-generate exactly N new tokens (eos ignored) for each N given, and print one JSON object:
load time, wall time per N, the tokens of the longest run, peak RSS. Per-token decode time is
derived by the caller from two N's (the difference of their wall times over the difference of N),
the same rule our side uses."""
import json
import os
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    folder, prompt, counts = sys.argv[1], sys.argv[2], sys.argv[3]
    prompt = [int(x) for x in prompt.split(",")]
    counts = [int(x) for x in counts.split(",")]
    torch.set_num_threads(os.cpu_count())
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.bfloat16)
    model.eval()
    load_s = time.perf_counter() - t
    ids = torch.tensor([prompt])

    def generate(n):
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                ids,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        return time.perf_counter() - t, out[0, len(prompt):].tolist()

    generate(min(counts))  # warm-up
    walls, tokens = {}, []
    for n in counts:
        walls[n], toks = generate(n)
        if len(toks) >= len(tokens):
            tokens = toks
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "wall_s": {str(n): w for n, w in walls.items()},
        "tokens": tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
