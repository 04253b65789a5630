"""Evaluation at GSM8K lengths (issue 18 item 2): every decoding path side by side, at 256- and 512-token caps.

Base instruction models (no adapter) answer GSM8K test questions through their chat template, greedy; they stop
on their own at very different lengths (the issue's Qwen probe: 257 tokens per answer at a 320 cap, a quarter
truncated), which is what a static batch pays for and the continuous batch does not. For each model, in this one
process (machines here are noisy: only ratios measured together mean something), every path generates for the
same problems at every cap, and the table gives per path:

- useful (kept, EOS included) and slot (row-steps computed) tokens, and both per second of wall time;
- x the reference path (the first of ``--paths``, ``static`` by default) in useful tokens/s;
- decoding FLOP/s = 2 x P x slot tokens/s, where P = the parameters every generated token multiplies: all
  weights but the input embedding table (a lookup), the output head counted even when it is tied to it. The
  prefill's prompt tokens (a second column adds them) and the attention products are not in it, so it understates the compute: scores and
  values take 4 x layers x heads x head_dim x columns FLOPs a token, at 600 columns 52M against 2P = 988M on
  Qwen (5%), 41M against 269M on SmolLM2 (15%);
- that rate as a fraction of two matmul rates measured in the same run and dtype (best of ``--repeats``, once
  before and once after the model's paths): a square ``--square``-sized GEMM (what the cores reach with the
  operands in cache: the machine's matmul rate, against which the >= 40% target is read) and the decoding
  shape, ``F.linear`` of [slots, hidden] by [intermediate, hidden] weights streamed from memory (distinct
  matrices totalling ``--stream-mb``, more than the caches, as decoding reads its weights once per step);
- correct answers (mathgpt.checker.grade) and how many extracted answers and texts equal the reference's.

Paths (``--paths``; ``NAME@S`` runs a path with S slots instead of ``--slots``):

- ``static``: transformers' ``model.generate`` in static batches of ``--slots`` (the old path);
- ``drop``: the continuous batch (``mode='drop'``, the default) with ``--slots`` slots;
- ``one-prefill``: the continuous batch with the queue prefilled in one padded batch, i.e. without the
  length-grouped prefill (``generate.PREFILL_ROWS``);
- ``bf16`` / ``static-bf16``: the same on a bfloat16 copy of the model (``--bf16`` adds ``bf16``); its GEMMs are
  measured in bf16 too;
- ``mode:NAME``: ``generate(..., mode=NAME)``, for a decoding change that adds a mode.

Writes its section (``--section``, "eval-long") of bench/RESULTS.md, or of ``--results``, after every path (marked
partial until the last), so a run stopped early keeps what it measured.

    python bench/bench_eval_long.py [--models M ...] [--caps 256 512] [--problems 40] [--slots 40]
        [--paths static drop] [--bf16] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mathgpt import generate as generation
from mathgpt.checker import grade
from mathgpt.data import fingerprint, load
from mathgpt.generate import Generation, GenStats, generate
from mathgpt.machine import describe, machine_info
from mathgpt.model import EMBEDDED_QWEN, load_model, load_tokenizer
from mathgpt.prompts import format_prompt

sys.path.insert(0, str(Path(__file__).parent))
from results import RESULTS, write_section  # noqa: E402

SMOLLM2 = "embedded:smollm2-135m-instruct"
DATA_DIR = Path(
    os.environ.get("MATHGPT_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


@dataclass(frozen=True)
class Decoding:
    """One path through ``generate``: its mode, dtype and slots, and an optional prefill group size."""

    key: str  # as given in --paths
    label: str
    mode: str
    bf16: bool = False
    prefill_rows: int | None = None  # generate.PREFILL_ROWS for this path (None: the project's)
    slots: int | None = None  # None: --slots


def decoding(key: str, slots: int) -> Decoding:
    """The path ``key`` names (``NAME`` or ``NAME@S``); an unknown name is refused with the known ones."""
    name, _, at = key.partition("@")
    s = int(at) if at else None
    rows = s or slots
    n_slots = f"{rows} slot{'s' if rows != 1 else ''}"
    known = {
        "static": Decoding(key, f"static `model.generate`, batches of {rows}", "static"),
        "drop": Decoding(key, f"continuous batch, {n_slots} (`mode='drop'`)", "drop"),
        "one-prefill": Decoding(
            key,
            f"continuous batch, {n_slots}, one padded prefill (no length groups)",
            "drop",
            prefill_rows=1 << 30,
        ),
        "bf16": Decoding(key, f"continuous batch, {n_slots}, bf16 weights", "drop", bf16=True),
        "static-bf16": Decoding(
            key, f"static `model.generate`, batches of {rows}, bf16 weights", "static", bf16=True
        ),
    }
    if name.startswith("mode:"):
        mode = name.removeprefix("mode:")
        return Decoding(key, f"`generate(mode='{mode}')`, {n_slots}", mode, slots=s)
    if name not in known:
        raise SystemExit(f"unknown path {key!r}: one of {', '.join(known)}, or mode:NAME, optionally @SLOTS")
    path = known[name]
    return Decoding(path.key, path.label, path.mode, path.bf16, path.prefill_rows, s)


# ------------------------------------------------------------------------------------------- the arithmetic


def decode_params(model) -> int:
    """Parameters one generated token multiplies: every weight but the input embedding table (a row lookup),
    with the output head counted once even when it is tied to that table (its matmul is still computed)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    rest = sum(
        p.numel() for p in model.parameters() if p is not embed
    )  # parameters() yields a tied head once
    return rest + (head.numel() if head is embed else 0)


def decode_flops_per_s(params: int, tokens_per_s: float) -> float:
    """2 FLOPs (a multiply and an add) per parameter per token."""
    return 2.0 * params * tokens_per_s


def matmul_fraction(params: int, tokens_per_s: float, gemm_flops_per_s: float) -> float:
    return decode_flops_per_s(params, tokens_per_s) / gemm_flops_per_s


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def square_gemm(n: int, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of an n x n by n x n matmul (operands in cache for small n, the cores' own rate)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    with torch.inference_mode():
        s = _best_seconds(lambda: torch.matmul(a, b), repeats)
    return 2.0 * n**3 / s


def streamed_gemm(
    rows: int, hidden: int, inter: int, dtype: torch.dtype, stream_mb: float, repeats: int
) -> float:
    """FLOP/s of decoding's shape: ``F.linear`` of [rows, hidden] by distinct [inter, hidden] weights that
    together take ``stream_mb`` MB, so each pass reads its weights from memory as a decoding step does."""
    size = torch.empty((), dtype=dtype).element_size()
    count = max(1, math.ceil(stream_mb * 1e6 / (hidden * inter * size)))
    weights = [torch.randn(inter, hidden).to(dtype) for _ in range(count)]
    x = torch.randn(rows, hidden).to(dtype)

    def run():
        for w in weights:
            F.linear(x, w)

    with torch.inference_mode():
        s = _best_seconds(run, repeats)
    return 2.0 * rows * hidden * inter * count / s


def gemm_rates(config, rows: int, dtype: torch.dtype, a) -> dict[str, float]:
    text = config.get_text_config()
    return {
        "square": square_gemm(a.square, dtype, a.repeats),
        "decode": streamed_gemm(
            rows, text.hidden_size, text.intermediate_size, dtype, a.stream_mb, a.repeats
        ),
    }


# --------------------------------------------------------------------------------------------------- paths


@dataclass
class Measured:
    model: str
    cap: int
    path: Decoding
    gens: list[Generation]
    stats: GenStats
    cpu_s: float
    verdicts: list  # checker Verdicts, one per problem
    prompt_tokens: int  # the prompts' real tokens (padding left out), prefilled once per path
    params: int  # decode_params of the model
    rates: dict[str, float] = field(default_factory=dict)  # GEMM FLOP/s in the path's dtype


def run_path(path: Decoding, model, tok, prompts: list[str], cap: int, slots: int):
    saved = generation.PREFILL_ROWS
    if path.prefill_rows is not None:
        generation.PREFILL_ROWS = path.prefill_rows
    try:
        t = time.process_time()
        gens, stats = generate(
            model,
            tok,
            prompts,
            mode=path.mode,
            max_new_tokens=cap,
            batch_size=path.slots or slots,
            desc=f"{path.key} cap {cap}",
        )
        return gens, stats, time.process_time() - t
    finally:
        generation.PREFILL_ROWS = saved


def _short(name: str) -> str:
    return name.removeprefix("embedded:") if name.startswith("embedded:") else Path(name).name


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=[SMOLLM2, EMBEDDED_QWEN])
    p.add_argument("--caps", nargs="+", type=int, default=[256, 512])
    p.add_argument("--problems", type=int, default=40, help="the first N GSM8K test questions")
    p.add_argument(
        "--slots",
        type=int,
        default=0,
        help="eval batch: static batch size and continuous slots (0: --problems, one batch)",
    )
    p.add_argument("--paths", nargs="+", default=["static", "drop"])
    p.add_argument("--bf16", action="store_true", help="add the `bf16` path (continuous batch, bf16 weights)")
    p.add_argument("--square", type=int, default=2048, help="square GEMM size")
    p.add_argument(
        "--stream-mb", type=float, default=400.0, help="weights streamed by the decoding-shape GEMM"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="smoke sizes: SmolLM2, 4 problems, a 16-token cap")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--section", default="eval-long", help="bench/RESULTS.md section to write")
    p.add_argument("--results", type=Path, default=RESULTS, help="the results file to write the section into")
    argv = sys.argv[1:] if argv is None else argv
    a = p.parse_args(argv)
    if a.quick:
        a.models, a.caps, a.problems = a.models if "--models" in argv else [SMOLLM2], [16], min(a.problems, 4)
        a.square, a.stream_mb, a.repeats = 512, 32.0, 2
    if a.bf16 and "bf16" not in a.paths:
        a.paths = [*a.paths, "bf16"]
    slots = a.slots or a.problems
    paths = [decoding(k, slots) for k in a.paths]
    torch.manual_seed(0)

    problems = load("gsm8k:test", a.data_dir)[: a.problems]
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    results: list[Measured] = []
    notes: list[str] = []
    for name in a.models:
        tok = load_tokenizer(name)
        model = load_model(name, device="cpu")
        prompts = [format_prompt(ex.question, "chat", tok) for ex in problems]
        prompt_tokens = [len(tok(x)["input_ids"]) for x in prompts]
        params = decode_params(model)
        dtypes = {torch.float32: model}
        if any(x.bf16 for x in paths):
            dtypes[torch.bfloat16] = copy.deepcopy(model).to(torch.bfloat16)  # the fp32 model stays as it is
        # Untimed warm-up of every path: the first forward of a process took 8 s of a 23 s smoke run (4 problems,
        # 16 tokens), which would be charged to whichever path runs first.
        for path in paths:
            run_path(path, dtypes[torch.bfloat16 if path.bf16 else torch.float32], tok, prompts[:2], 4, 2)
        rows = min(slots, len(prompts))
        before = {dt: gemm_rates(model.config, rows, dt, a) for dt in dtypes}
        t_model = time.perf_counter()
        for cap in a.caps:
            for path in paths:
                m = dtypes[torch.bfloat16 if path.bf16 else torch.float32]
                gens, stats, cpu_s = run_path(path, m, tok, prompts, cap, slots)
                verdicts = [grade(ex.answer, g.text, ex.grader) for ex, g in zip(problems, gens, strict=True)]
                res = Measured(name, cap, path, gens, stats, cpu_s, verdicts, sum(prompt_tokens), params)
                res.rates = before[torch.bfloat16 if path.bf16 else torch.float32]  # until the second GEMM
                results.append(res)
                print(
                    f"{_short(name)} cap {cap} {path.key}: {stats.useful_tokens} useful / {stats.slot_tokens} "
                    f"slot tokens in {stats.wall_s:.1f} s",
                    flush=True,
                )
                # Written after every path, so a run stopped early still leaves what it measured.
                done = f"partial: {len(results)} of {len(a.models) * len(a.caps) * len(paths)} paths done"
                write_section(
                    a.section, report(a, argv, problems, results, notes, load_start, done), a.results
                )
        paths_s = time.perf_counter() - t_model
        after = {dt: gemm_rates(model.config, rows, dt, a) for dt in dtypes}
        rates = {dt: {k: max(before[dt][k], after[dt][k]) for k in before[dt]} for dt in dtypes}
        for res in results:
            if res.model == name:
                res.rates = rates[torch.bfloat16 if res.path.bf16 else torch.float32]
        gemm_text = "; ".join(
            f"{str(dt).removeprefix('torch.')}: square {a.square} {rates[dt]['square'] / 1e9:.0f} GFLOP/s "
            f"(before/after {before[dt]['square'] / 1e9:.0f}/{after[dt]['square'] / 1e9:.0f}), decoding shape "
            f"[{rows}, {model.config.get_text_config().hidden_size}] x "
            f"[{model.config.get_text_config().intermediate_size}, {model.config.get_text_config().hidden_size}]"
            f" streamed {rates[dt]['decode'] / 1e9:.0f} GFLOP/s "
            f"(before/after {before[dt]['decode'] / 1e9:.0f}/{after[dt]['decode'] / 1e9:.0f})"
            for dt in dtypes
        )
        notes.append(
            f"- **{_short(name)}**: P = {params / 1e6:.1f}M decoding parameters (of "
            f"{sum(x.numel() for x in model.parameters()) / 1e6:.1f}M stored); prompts {min(prompt_tokens)}-"
            f"{max(prompt_tokens)} tokens (mean {statistics.mean(prompt_tokens):.0f}); paths took "
            f"{paths_s:.0f} s; GEMMs {gemm_text}."
        )
        del dtypes, model

    text = report(
        a,
        argv,
        problems,
        results,
        notes,
        load_start,
        f"{(time.perf_counter() - t_start) / 60:.1f} min in all",
    )
    print(text)
    write_section(a.section, text, a.results)
    return text


def report(a, argv, problems, results: list[Measured], notes, load_start, took: str) -> str:
    machine = machine_info()
    load_end = os.getloadavg()
    cmd = shlex.join(["python", "bench/bench_eval_long.py", *argv])
    lines = [
        "## Evaluation at GSM8K lengths: every decoding path at long caps (CPU)",
        "",
        f"`{cmd}` on {describe(machine)}, {machine['cpu_count']} usable CPUs, {time.strftime('%Y-%m-%d %H:%M')}; "
        f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_start)} at the start, "
        f"{'/'.join(f'{x:.1f}' for x in load_end)} at the end (this process alone holds the 1-min one near "
        f"the thread count); {took}. Only the ratios within this run mean something.",
        "",
        f"The first {len(problems)} GSM8K test questions (fingerprint {fingerprint(problems)}), the chat template, "
        "base instruction models (no adapter), greedy, fp32 weights unless the path says bf16. Useful tokens are "
        "kept tokens (EOS included); slot tokens are row-steps computed. Decoding GFLOP/s = 2 x P x slot tok/s, "
        "P = every weight but the input embedding table, the output head counted (attention products left out); "
        'it leaves out the prompts\' prefill, which the wall time includes: "GFLOP/s incl. prompts" adds the '
        'prompts\' real tokens (once per path, padding not counted) to the slot tokens. "% square" is the '
        "decoding rate over the square GEMM measured in this run and dtype (the machine's matmul rate; target "
        '>= 40%), "% decode GEMM" over the decoding-shape GEMM with its weights streamed from memory. '
        "CPU/wall: this process's CPU seconds per wall second (near the thread count when nothing else ran).",
        "",
        *notes,
        "",
        "| model | cap | path | useful tokens | slot tokens | useful fraction | truncated | useful tok/s | "
        "slot tok/s | x ref useful tok/s | CPU/wall | decoding GFLOP/s | % square | % decode GEMM | "
        "GFLOP/s incl. prompts | % square incl. prompts | correct | "
        "same answer as ref | same text as ref |",
        "|" + " --- |" * 19,
    ]
    n = len(problems)
    summary = []
    for res in results:
        ref = next(r for r in results if r.model == res.model and r.cap == res.cap)  # the first path run
        s = res.stats
        rate = decode_flops_per_s(res.params, s.slot_tokens_per_s)
        with_prompts = decode_flops_per_s(
            res.params, (s.slot_tokens + res.prompt_tokens) / max(s.wall_s, 1e-9)
        )
        same = sum(x.extracted == y.extracted for x, y in zip(res.verdicts, ref.verdicts, strict=True))
        same_text = sum(g.text == r.text for g, r in zip(res.gens, ref.gens, strict=True))
        x_ref = s.useful_tokens_per_s / ref.stats.useful_tokens_per_s
        lines.append(
            f"| {_short(res.model)} | {res.cap} | {res.path.label} | {s.useful_tokens} | {s.slot_tokens} | "
            f"{s.useful_fraction:.1%} | {sum(g.truncated for g in res.gens)}/{n} | {s.useful_tokens_per_s:.1f} | "
            f"{s.slot_tokens_per_s:.1f} | {x_ref:.2f}x | {res.cpu_s / max(s.wall_s, 1e-9):.2f} | "
            f"{rate / 1e9:.3g} | {rate / res.rates['square']:.1%} | {rate / res.rates['decode']:.1%} | "
            f"{with_prompts / 1e9:.3g} | {with_prompts / res.rates['square']:.1%} | "
            f"{sum(v.correct for v in res.verdicts)}/{n} | {same}/{n} | {same_text}/{n} |"
        )
        if res is not ref:
            summary.append(
                f"- {_short(res.model)}, cap {res.cap}, {res.path.key} vs {ref.path.key}: **{x_ref:.2f}x** useful "
                f"tok/s (target >= 2x: {'met' if x_ref >= 2 else 'missed'}), **{rate / res.rates['square']:.0%}** of "
                f"the square GEMM (target >= 40%: {'met' if rate >= 0.4 * res.rates['square'] else 'missed'}), "
                f"{rate / res.rates['decode']:.0%} of the streamed decoding-shape GEMM; {same}/{n} same answers."
            )
    return "\n".join([*lines, "", *summary, ""])


if __name__ == "__main__":
    main()
