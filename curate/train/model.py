"""Model builders: device and dtype choice, tokenizer and base-model loading (bitsandbytes
4-bit NF4 with double quantization, or full precision), LoRA through peft, and the
assistant-token loss.

The loss runs the output head only on positions whose next token is trained: for
chat data most positions are prompt, and the head over a 150k vocabulary is a
large share of a small model's compute and of its activation memory. It runs in
chunks of rows with the gradient taken in the same pass, so the logits are never
whole in memory.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.train.data import IGNORE_INDEX


class ModelLoadError(Exception):
    """The model or tokenizer cannot be loaded; one line that says why and what to do."""


@dataclass
class DeviceInfo:
    type: str  # "cuda" or "cpu"
    name: str
    index: int
    compute_dtype: Any  # torch dtype
    bf16: bool

    @property
    def torch_device(self):
        import torch

        return torch.device(self.type, self.index) if self.type == "cuda" else torch.device("cpu")

    def describe(self) -> str:
        return f"{self.name} ({self.type}, compute {str(self.compute_dtype).removeprefix('torch.')})"


def quiet_libraries() -> None:
    """Silence import-time chatter that is not about the user's run (bitsandbytes looks for an
    optional CPU kernel package; transformers draws per-file loading bars)."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft's k-bit preparation still calls the old gradient-checkpointing names.
    warnings.filterwarnings("ignore", message=r".*(gradient_checkpointing_enable|is_gradient_checkpointing).*deprecated", category=FutureWarning)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def pick_device(local_index: int = 0) -> DeviceInfo:
    import torch

    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        return DeviceInfo("cuda", torch.cuda.get_device_name(local_index), local_index, torch.bfloat16 if bf16 else torch.float32, bf16)
    # bitsandbytes' CPU 4-bit kernels handle float32 compute; float32 keeps CPU runs exact enough
    # for the tests' loss comparisons.
    return DeviceInfo("cpu", "CPU", 0, torch.float32, False)


def autocast(device: DeviceInfo):
    """bf16 autocast on a GPU: k-bit preparation upcasts norms and embeddings to fp32, which
    would otherwise carry fp32 activations (and fp32 attention) through the whole model."""
    import contextlib

    import torch

    if device.type == "cuda" and device.compute_dtype != torch.float32:
        return torch.autocast(device_type="cuda", dtype=device.compute_dtype)
    return contextlib.nullcontext()


def _load_problem(name: str, exc: Exception) -> ModelLoadError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if Path(name).expanduser().exists():
        return ModelLoadError(f"cannot load model `{name}`: {first_line}")
    return ModelLoadError(
        f"cannot load model `{name}`: it is not a local folder and the Hugging Face hub did not provide it "
        f"(offline, a typo, or a gated model; pass a local folder with --model): {first_line}"
    )


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    folder = Path(name).expanduser()
    if folder.is_dir() and not any((folder / file).is_file() for file in ("tokenizer.json", "tokenizer_config.json")):
        raise ModelLoadError(f"cannot load model `{name}`: the folder has no tokenizer (tokenizer.json, tokenizer_config.json); pass a model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # hub, file-format and import errors all end the run the same way
        raise _load_problem(name, exc) from None
    if not tokenizer.is_fast:
        raise ModelLoadError(f"`{name}` has no fast tokenizer (tokenizer.json); curate needs token offsets to place the labels")
    if not tokenizer.chat_template:
        raise ModelLoadError(f"`{name}` has no chat template; use an instruct/chat model or add `chat_template` to its tokenizer_config.json")
    if tokenizer.pad_token_id is None:
        # Padding is masked by position, never by id, so any token may serve; eos is what is there.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(compute_dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def resolve_model_path(name: str) -> str:
    """A local folder as an absolute path (so a run folder's adapter finds its base from
    anywhere); a hub name as given."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def load_base_model(name: str, device: DeviceInfo, *, quantize: bool, attn_implementation: str | None = None):
    from transformers import AutoModelForCausalLM

    options: dict[str, Any] = {"dtype": device.compute_dtype, "device_map": {"": device.torch_device}}
    if quantize:
        options["quantization_config"] = quantization_config(device.compute_dtype)
    if attn_implementation:
        options["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(name, **options)
    except ImportError as exc:
        raise ModelLoadError(f"cannot load `{name}` in 4-bit: {str(exc).splitlines()[0]} (use --no-quantize for plain LoRA)") from None
    except Exception as exc:
        raise _load_problem(name, exc) from None
    if quantize and device.type == "cpu":
        keep_cpu_4bit_layout_trainable(model)
    return model


def keep_cpu_4bit_layout_trainable(model) -> None:
    """bitsandbytes (0.49+) repacks 4-bit weights into an inference-only layout on the first
    no-grad forward in eval mode on CPUs with AVX512-BF16 (our eval loss, our probes), after
    which backward passes through `gemv_4bit`, which has no autograd kernel, and LoRA
    gradients of earlier layers come out wrong. Turning the repack off keeps training exact."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def lora_config(rank: int, alpha: float, dropout: float, targets: list[str] | str):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM")


def add_lora(model, config, *, quantized: bool, gradient_checkpointing: bool, seed: int, base_path: str):
    """Freeze the base, prepare it for k-bit training when quantized, and add LoRA (seeded init)."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    checkpointing = {"use_reentrant": False}  # non-reentrant works with frozen inputs and DDP
    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    torch.manual_seed(seed)
    try:
        peft_model = get_peft_model(model, lora_config(config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets))
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ModelLoadError(f"--lora-targets: {' '.join(str(exc).split())}") from None
    peft_model.peft_config["default"].base_model_name_or_path = base_path
    return peft_model


def causal_lm_of(model):
    """The transformers CausalLM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def lora_state(model) -> dict:
    """A CPU copy of the trainable (LoRA) weights."""
    return {name: parameter.detach().to("cpu", copy=True) for name, parameter in model.named_parameters() if parameter.requires_grad}


def load_lora_state(model, state: dict) -> None:
    parameters = dict(model.named_parameters())
    for name, value in state.items():
        parameters[name].data.copy_(value.to(parameters[name].device))


#: Attention kernels that run packed rows as separate sequences (variable-length / block-sparse).
#: With sdpa or eager, transformers builds a dense mask over the whole packed row, so attention
#: costs grow with the square of the packed length and packing is slower than good padding.
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


def default_attention(device: DeviceInfo, requested: str | None) -> str | None:
    """The requested kernel, else flash-attention 2 on a bf16 GPU where it is installed, else the library's default."""
    if requested:
        return requested
    from transformers.utils import is_flash_attn_2_available

    if device.type == "cuda" and device.bf16 and is_flash_attn_2_available():
        return "flash_attention_2"
    return None


def packing_plan(requested: bool | str, attention: str | None) -> tuple[bool, str]:
    """(pack, how the batches are built, in words) for the `packing` setting and the attention kernel."""
    if requested is False:
        return False, "length-grouped padding (packing off)"
    if requested is True:
        return True, f"padding-free packing ({attention or 'sdpa'}, packing on)"
    if attention in VARLEN_ATTENTION:
        return True, f"padding-free packing ({attention})"
    return False, (
        f"length-grouped padding: with {attention or 'sdpa'} a packed row pays attention over its whole length; "
        f"padding-free packing is automatic with {' or '.join(VARLEN_ATTENTION)} (or set packing = true)"
    )


def make_loss_module(model, selective_head: bool, device: DeviceInfo | None = None):
    import contextlib

    import torch
    import torch.nn.functional as F

    precision = (lambda: autocast(device)) if device is not None else contextlib.nullcontext

    class AssistantLoss(torch.nn.Module):
        """Summed cross-entropy over the trained positions of a batch (normalized by the caller,
        which knows the token count of the whole accumulation window)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, labels, position_ids, attention_mask=None):
            targets = labels[:, 1:]
            keep = targets != IGNORE_INDEX
            inputs = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": attention_mask, "use_cache": False}
            with precision():
                if selective_head:
                    causal_lm = causal_lm_of(self.model)
                    hidden = causal_lm.get_decoder()(**inputs).last_hidden_state[:, :-1][keep]
                    head = causal_lm.get_output_embeddings()
                    if fusable_head(head):
                        return linear_cross_entropy(hidden, head.weight, targets[keep])
                    logits = head(hidden)
                else:
                    logits = self.model(**inputs).logits[:, :-1][keep]
            return F.cross_entropy(logits.float(), targets[keep], reduction="sum")

    return AssistantLoss()


#: Logit elements computed at once by the chunked loss (32M: 128 MiB in fp32), so the
#: [trained tokens x vocabulary] logits of a large-vocabulary model are never whole in memory.
LOSS_CHUNK_ELEMENTS = 1 << 25


def fusable_head(head) -> bool:
    """A frozen, bias-free linear output head: its loss can be computed chunk by chunk."""
    import torch

    return type(head) is torch.nn.Linear and head.bias is None and not head.weight.requires_grad


def linear_cross_entropy(hidden, weight, targets, chunk_elements: int = LOSS_CHUNK_ELEMENTS):
    """Summed cross-entropy of `hidden @ weight.T` against `targets`, in chunks of rows.

    The gradient with respect to `hidden` (softmax minus one-hot, times the head) is
    computed chunk by chunk in the forward pass and kept instead of the logits, so peak
    memory holds one chunk of logits, not all of them twice (logits and their gradient),
    and no matmul is repeated. The head must be frozen (it is under LoRA)."""
    import torch

    rows = max(1, chunk_elements // weight.shape[0])
    if not (torch.is_grad_enabled() and hidden.requires_grad):
        with torch.no_grad():
            return sum(_chunk_loss(hidden[i : i + rows], weight, targets[i : i + rows], None) for i in range(0, len(hidden), rows)) if len(hidden) else hidden.new_zeros((), dtype=torch.float32)
    return _LinearCrossEntropy.apply(hidden, weight, targets, rows)


def _chunk_loss(hidden, weight, targets, grad_out):
    """Summed loss of one chunk; when `grad_out` is given, its rows get d(loss)/d(hidden)."""
    import torch

    logits = (hidden @ weight.t()).float()
    normalizer = torch.logsumexp(logits, dim=-1)
    loss = (normalizer - logits.gather(1, targets[:, None]).squeeze(1)).sum()
    if grad_out is not None:
        probabilities = logits.sub_(normalizer[:, None]).exp_()
        probabilities[torch.arange(len(targets), device=targets.device), targets] -= 1
        grad_out.copy_(probabilities.to(weight.dtype) @ weight)
    return loss


def _linear_cross_entropy_function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, rows):
            grad_hidden = torch.empty(hidden.shape, dtype=torch.promote_types(hidden.dtype, weight.dtype), device=hidden.device)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, len(hidden), rows):
                total += _chunk_loss(hidden[start : start + rows], weight, targets[start : start + rows], grad_hidden[start : start + rows])
            ctx.save_for_backward(grad_hidden)
            ctx.hidden_dtype = hidden.dtype
            return total

        @staticmethod
        def backward(ctx, grad_output):
            (grad_hidden,) = ctx.saved_tensors
            return (grad_hidden * grad_output).to(ctx.hidden_dtype), None, None, None

    return LinearCrossEntropy


class _Lazy:
    """Builds the autograd Function on first use (torch is imported inside functions only)."""

    def __init__(self, build):
        self.build, self.value = build, None

    def apply(self, *args):
        if self.value is None:
            self.value = self.build()
        return self.value.apply(*args)


_LinearCrossEntropy = _Lazy(_linear_cross_entropy_function)


def probe(model, device: DeviceInfo, vocab_size: int) -> tuple[bool, bool]:
    """(packing works, output head can run on selected positions), checked on a small input.

    Packing needs an attention implementation that derives per-example masks from
    position ids; an architecture whose forward does more than `head(decoder(x))`
    (logit soft-capping, scaling) must run the full forward instead."""
    import torch

    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab_size, (1, 12), generator=generator).to(device.torch_device)
    second = torch.randint(0, vocab_size, (1, 9), generator=generator).to(device.torch_device)
    tolerance = 1e-3 if device.compute_dtype == torch.float32 else 5e-2
    try:
        with torch.no_grad(), autocast(device):
            alone = [model(input_ids=ids, use_cache=False).logits for ids in (first, second)]
            packed_ids = torch.cat([first, second], dim=1)
            positions = torch.cat([torch.arange(12), torch.arange(9)])[None].to(device.torch_device)
            packed = model(input_ids=packed_ids, position_ids=positions, use_cache=False).logits
            packing_ok = torch.allclose(packed[:, :12].float(), alone[0].float(), atol=tolerance, rtol=tolerance) and torch.allclose(
                packed[:, 12:].float(), alone[1].float(), atol=tolerance, rtol=tolerance
            )
            causal_lm = causal_lm_of(model)
            hidden = causal_lm.get_decoder()(input_ids=first, use_cache=False).last_hidden_state
            head = causal_lm.get_output_embeddings()(hidden)
            selective_ok = torch.allclose(head.float(), alone[0].float(), atol=tolerance, rtol=tolerance)
    finally:
        model.train(was_training)
    return bool(packing_ok), bool(selective_ok)
