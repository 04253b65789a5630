"""Evaluation paths side by side: static ``model.generate`` batches against the continuous batch.

A LoRA adapter is first trained briefly (``--train-examples`` synthetic problems, lr 1e-3) so that rows stop
at different lengths the way a fine-tuned model's do (the base model rambles to the cap, which wastes nothing);
the defaults are the default run's evaluation (experiments/cpu_smollm2.yaml).
Then every path generates for the same problems, in this one process, with the same model, batch and
``max_new_tokens`` (machines here are noisy: only ratios measured together mean something). Reported per
path: useful (kept) tokens/s, slot (row-step) tokens/s, the useful fraction, and how many extracted answers
agree with the static path's. Targets (issue 13): >= 80% useful slots and >= 1.5x the static useful tokens/s.
``--continuous`` adds transformers' own continuous batching (``model.generate_batch``). Writes its section of
bench/RESULTS.md.

    python bench/bench_eval.py [--problems 150] [--max-new-tokens 128] [--train-examples 256] [--slots 32]
        [--adapter DIR] [--continuous]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from mathgpt.checker import grade
from mathgpt.config import LoraSettings, TrainConfig
from mathgpt.generate import Generation, GenStats, generate
from mathgpt.model import add_lora, load_model, load_tokenizer
from mathgpt.prompts import format_prompt
from mathgpt.run import lora_settings, trainer_settings
from mathgpt.synthetic import make_problems as synthetic
from mathgpt.train import tokenize, train, training_args

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

EMBEDDED = "embedded:smollm2-135m-instruct"


def extracted(gold: str, text: str, grader: str) -> str | None:
    return grade(gold, text, grader).extracted


def continuous(model, tok, prompts: list[str], max_new_tokens: int) -> tuple[list[Generation], GenStats]:
    """transformers' continuous batching (paged KV cache, a scheduler that refills finished slots)."""
    from transformers import GenerationConfig

    ids = [tok(p)["input_ids"] for p in prompts]
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    t = time.perf_counter()
    with torch.inference_mode():
        outs = model.generate_batch(ids, generation_config=cfg, progress_bar=False)
    wall = time.perf_counter() - t
    gens = []
    for i in range(len(prompts)):
        new = list(outs[f"req_{i}"].generated_tokens)
        n = new.index(tok.eos_token_id) + 1 if tok.eos_token_id in new else len(new)
        gens.append(Generation(tok.decode(new[:n], skip_special_tokens=True).strip(), n, n == len(new)))
    useful = sum(g.n_tokens for g in gens)
    return gens, GenStats(useful, useful, wall)  # slots are freed and refilled as rows finish


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--problems", type=int, default=150)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--train-examples", type=int, default=256)
    p.add_argument("--continuous", action="store_true", help="also time model.generate_batch")
    p.add_argument("--drop-first", action="store_true", help="run the continuous batch before the static one")
    p.add_argument("--slots", type=int, default=0, help="also run the continuous batch with this many slots")
    p.add_argument("--section", default="eval", help="bench/RESULTS.md section to write")
    p.add_argument("--adapter", type=Path, help="reuse this adapter directory (trained and saved if missing)")
    a = p.parse_args()
    torch.manual_seed(0)
    tok = load_tokenizer(EMBEDDED)
    base = load_model(EMBEDDED, device="cpu")
    if a.adapter and (a.adapter / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, a.adapter)
    else:
        model = add_lora(base, **lora_settings(LoraSettings(r=16)))
        rows = tokenize(synthetic("train", a.train_examples), tok, "chat", 384)
        args = training_args(
            out_dir=Path(tempfile.mkdtemp()),
            seed=0,
            device="cpu",
            dtype="float32",
            **trainer_settings(TrainConfig(epochs=1, learning_rate=1e-3, batch_size=8, logging_steps=100)),
        )
        train(model, tok, rows, args, mixed_precision="bf16")
        if a.adapter:
            model.save_pretrained(a.adapter)
    model.eval()

    problems = synthetic("test", a.problems)
    prompts = [format_prompt(ex.question, "chat", tok) for ex in problems]
    n = len(prompts)
    static = f"static `model.generate`, batch {n} (the old path)"
    drop = f"continuous batch, {n} slots (`mode='drop'`, default)"
    plan = {static: ("static", n), drop: ("drop", n)}
    if a.drop_first:
        plan = {drop: plan[drop], static: plan[static]}
    if a.slots:
        plan[f"continuous batch, {a.slots} slots refilled from the queue"] = ("drop", a.slots)
    paths: dict[str, tuple[list[Generation], GenStats]] = {}
    cpu_s: dict[str, float] = {}
    for name, (mode, rows) in plan.items():  # order printed: under load, a later path may see another machine
        t = time.process_time()
        paths[name] = generate(
            model, tok, prompts, mode=mode, max_new_tokens=a.max_new_tokens, batch_size=rows
        )
        cpu_s[name] = time.process_time() - t
    if a.continuous:
        paths["transformers `generate_batch` (continuous batching)"] = continuous(
            model, tok, prompts, a.max_new_tokens
        )
    ref_gens, ref = paths[static]
    ref_answers = [extracted(ex.answer, g.text, ex.grader) for ex, g in zip(problems, ref_gens, strict=True)]
    load = os.getloadavg()[0]
    lines = [
        "## Evaluation: static batches against the continuous batch (CPU)",
        "",
        f"`python bench/bench_eval.py --problems {a.problems} --max-new-tokens {a.max_new_tokens} "
        f"--train-examples {a.train_examples}{' --continuous' if a.continuous else ''}"
        f"{f' --slots {a.slots}' if a.slots else ''}` on "
        f"{platform.machine()}, {torch.get_num_threads()} torch threads, {time.strftime('%Y-%m-%d')}: "
        f"SmolLM2-135M-Instruct fp32 with a LoRA adapter (r=16, all-linear) trained on {a.train_examples} "
        f"synthetic problems (bf16 autocast, as the default run), {a.problems} synthetic test problems, greedy, "
        f"{a.max_new_tokens}-token cap: the default run's evaluation. 1-min load average {load:.1f} at the "
        "end (this process alone holds it near 2); only the ratios within this run mean something.",
        "",
        "Useful tokens are kept tokens (EOS included); slot tokens are row-steps computed. The table also gives "
        "useful tokens per CPU-second of this process (`time.process_time`), less sensitive to other jobs' load "
        "than wall time.",
        "",
        "| path | useful tokens | slot tokens | useful fraction | useful tok/s | slot tok/s | x static useful "
        "tok/s | useful tok per CPU-s | x static per CPU-s | same extracted answer | same text |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    per_cpu = {name: paths[name][1].useful_tokens / cpu_s[name] for name in cpu_s}
    for name, (gens, s) in paths.items():
        answers = [extracted(ex.answer, g.text, ex.grader) for ex, g in zip(problems, gens, strict=True)]
        same = sum(x == y for x, y in zip(answers, ref_answers, strict=True))
        same_text = sum(g.text == r.text for g, r in zip(gens, ref_gens, strict=True))
        lines.append(
            f"| {name} | {s.useful_tokens} | {s.slot_tokens} | {s.useful_fraction:.1%} | "
            f"{s.useful_tokens_per_s:.1f} | {s.slot_tokens_per_s:.1f} | "
            f"{s.useful_tokens_per_s / ref.useful_tokens_per_s:.2f}x | "
            + (
                f"{per_cpu[name]:.1f} | {per_cpu[name] / per_cpu[static]:.2f}x | "
                if name in per_cpu
                else "- | - | "
            )
            + f"{same}/{n} | {same_text}/{n} |"
        )
    d = paths[drop][1]
    lines += [
        "",
        f"**Continuous batch: {d.useful_fraction:.0%} useful slots (static: {ref.useful_fraction:.0%}), "
        f"{d.useful_tokens_per_s / ref.useful_tokens_per_s:.2f}x the static useful tokens/s, "
        f"{per_cpu[drop] / per_cpu[static]:.2f}x per CPU-second** (targets >= 80%, >= 1.5x). "
        f"Order: {' then '.join(plan)}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_section(a.section, text)


if __name__ == "__main__":
    main()
