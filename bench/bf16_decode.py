"""Does bf16 decoding give the same answers as fp32, and how much faster is it? Side by side in one process.

The same model (an embedded base, with ``--adapter`` merged into it) answers the same problems greedily twice
through the continuous batch at the same slot count: first with fp32 weights, then with the weights cast to
bf16 (keys and values then bf16 too). Reported: each accuracy (Wilson), the share of identical texts and of
identical verdicts, a TOST of the accuracy difference within +-``--margin`` (``mathgpt.stats.equivalence_test``:
the 90% Newcombe interval inside the margin), and useful tokens/s of each. This is the agreement test that
``eval.dtype: auto`` rests on. Writes the "bf16-decode" section of bench/RESULTS.md.

    python bench/bf16_decode.py [--model embedded:qwen2.5-coder-0.5b-instruct] [--adapter DIR]
        [--data gsm8k:test] [--problems 300] [--cap 320] [--slots 150] [--margin 0.02]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mathgpt.data import held_out_slice, load  # noqa: E402
from mathgpt.evaluate import EvalSet, evaluate  # noqa: E402
from mathgpt.machine import describe, machine_info, native_bf16  # noqa: E402
from mathgpt.model import load_model, load_tokenizer  # noqa: E402
from mathgpt.stats import equivalence_test, wilson_ci  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:qwen2.5-coder-0.5b-instruct")
    p.add_argument("--adapter", help="a LoRA adapter folder merged into the model (a run's adapter/)")
    p.add_argument("--data", default="gsm8k:test")
    p.add_argument(
        "--data-dir", default=os.environ.get("MATHGPT_DATA_DIR", str(REPO.parent / "shared" / "data"))
    )
    p.add_argument("--problems", type=int, default=300)
    p.add_argument("--cap", type=int, default=320)
    p.add_argument("--slots", type=int, default=150)
    p.add_argument("--margin", type=float, default=0.02)
    p.add_argument("--section", default="bf16-decode")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    tok = load_tokenizer(a.model)
    model = load_model(a.model, device="cpu", adapter=a.adapter).eval()
    problems = held_out_slice(load(a.data, a.data_dir), a.problems, seed=0)
    sets = [EvalSet(a.data, problems)]
    kw = dict(prompt_format="chat", max_new_tokens=a.cap, batch_size=a.slots)
    runs = {}
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model.to(dtype)  # in place: fp32 first, so nothing is cast back
        runs[label] = evaluate(model, tok, sets, desc=f"{label} decoding", **kw)
    f, b = runs["fp32"], runs["bf16"]
    fc = [int(r["correct"]) for r in f.records]
    bc = [int(r["correct"]) for r in b.records]
    n = len(fc)
    same_text = sum(x["output"] == y["output"] for x, y in zip(f.records, b.records, strict=True))
    same_verdict = sum(x == y for x, y in zip(fc, bc, strict=True))
    tost = equivalence_test(fc, bc, margin=a.margin)
    lo, hi = tost.gain.lo, tost.gain.hi
    speed = b.gen["useful_tokens_per_s"] / f.gen["useful_tokens_per_s"]
    m = machine_info()
    fmt_acc = lambda k: f"{k}/{n} = {k / n:.1%} [{wilson_ci(k, n)[0]:.1%}, {wilson_ci(k, n)[1]:.1%}]"  # noqa: E731
    rows = [
        f"| {label} | {fmt_acc(r.n_correct)} | {r.n_answered}/{n} | {r.gen['useful_tokens']} | "
        f"{r.gen['rows']} | {r.wall_s:.0f} | {r.gen['useful_tokens_per_s']:.1f} |"
        for label, r in runs.items()
    ]
    verdict = "equivalent" if tost.equivalent else "not shown equivalent"
    text = "\n".join(
        [
            "## bf16 against fp32 decoding: same answers? (`bench/bf16_decode.py`)",
            "",
            f"`python bench/bf16_decode.py {' '.join(argv if argv is not None else sys.argv[1:])}`, "
            f"{time.strftime('%Y-%m-%d %H:%M')}, {describe(m)}; native bf16: "
            f"{'yes' if native_bf16('cpu') else 'no'}; load average at the end {os.getloadavg()[0]:.1f}. "
            f"{a.model}{' + adapter ' + a.adapter if a.adapter else ''}, {n} {a.data} problems (seeded slice, "
            f"seed 0), chat prompt, greedy, cap {a.cap}, continuous batch of {a.slots} slots; fp32 ran first, "
            "then the same weights cast to bf16, in one process.",
            "",
            "| decoding | correct | answered | useful tokens | slots | wall s | useful tok/s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"- Identical text: {same_text}/{n} ({same_text / n:.1%}); identical verdict: {same_verdict}/{n} "
            f"({same_verdict / n:.1%}); fp32 right and bf16 wrong: "
            f"{sum(x > y for x, y in zip(fc, bc, strict=True))}, the reverse: "
            f"{sum(x < y for x, y in zip(fc, bc, strict=True))}.",
            f"- Accuracy difference bf16 - fp32: {tost.gain.mean * 100:+.1f} points, 90% Newcombe interval "
            f"[{lo * 100:+.1f}, {hi * 100:+.1f}]; TOST within +-{a.margin * 100:.0f} points: p = {tost.p:.3f}, "
            f"**{verdict}** at alpha {tost.alpha}.",
            f"- Speed: bf16 {speed:.2f}x the fp32 useful tokens/s (same slots, same process).",
        ]
    )
    print(text)
    write_section(a.section, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
