"""Model FLOPs and memory, from the model's config alone (no weights are loaded).

FLOPs follow the usual convention for LoRA: a token costs 2N in the forward pass
and 2N in the backward pass (input gradients only; the base weights get none),
so 4N for the N parameters of the linear layers, plus attention scores
(QK^T and AV, 4 * d_attn * context per layer and pass, so 8 * d_attn * context).
The output head counts only for positions whose next token is trained, since
that is all the trainer computes. Recomputation from gradient checkpointing is
not counted (it is overhead, not model work).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Dense bf16 tensor-core peak FLOP/s by device-name fragment (first match wins).
BF16_PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)

NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + double-quantized absmax
LORA_BYTES_PER_PARAM = 16  # fp32 weight, gradient, two AdamW moments
CUDA_CONTEXT_BYTES = 600 * 2**20


def peak_flops(device_name: str) -> float | None:
    for fragment, flops in BF16_PEAK_FLOPS:
        if fragment in device_name:
            return flops
    return None


@dataclass
class ModelShape:
    """Parameter counts by kind, read from a model instantiated on the meta device."""

    body_linear_params: int  # every nn.Linear but the output head
    head_params: int
    embedding_params: int  # input embeddings (0 extra when tied to the head)
    other_params: int  # norms, biases of non-linear modules
    lora_params: int
    layers: int
    attention_width: int  # heads * head_dim
    hidden: int
    vocab: int
    largest_linear: int

    @property
    def total_params(self) -> int:
        return self.body_linear_params + self.head_params + self.embedding_params + self.other_params


def unknown_targets_message(missing: list[str], linear_names: set[str]) -> str:
    return f"--lora-targets: the model has no linear layer named {', '.join(missing)}; it has: {', '.join(sorted(linear_names))}"


def model_shape(config, lora_rank: int, lora_targets: list[str] | str) -> ModelShape:
    """Parameter counts of the model; ValueError when a LoRA target names no linear layer."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    embeddings = model.get_input_embeddings()
    tied = head is not None and embeddings is not None and head.weight is embeddings.weight
    body, lora, largest = 0, 0, 0
    leaves: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            body += module.weight.numel()
            largest = max(largest, module.weight.numel())
            leaf = name.rsplit(".", 1)[-1]
            leaves.add(leaf)
            if lora_targets == "all-linear" or leaf in lora_targets:
                lora += lora_rank * (module.in_features + module.out_features)
    missing = sorted(set(lora_targets) - leaves) if lora_targets != "all-linear" else []
    if missing:
        raise ValueError(unknown_targets_message(missing, leaves))
    head_params = head.weight.numel() if head is not None else 0
    embedding_params = 0 if tied else (embeddings.weight.numel() if embeddings is not None else 0)
    total = sum(p.numel() for p in model.parameters())
    other = total - body - head_params - embedding_params
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text_config, "num_attention_heads", 1)
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    return ModelShape(
        body_linear_params=body,
        head_params=head_params,
        embedding_params=embedding_params,
        other_params=max(other, 0),
        lora_params=lora,
        layers=getattr(text_config, "num_hidden_layers", 1),
        attention_width=heads * head_dim,
        hidden=text_config.hidden_size,
        vocab=text_config.vocab_size,
        largest_linear=largest,
    )


def step_flops(shape: ModelShape, lengths: list[int], trained_tokens: int) -> float:
    """Model FLOPs of forward + backward over examples of these lengths."""
    tokens = sum(lengths)
    linear = 4 * shape.body_linear_params * tokens + 4 * shape.head_params * trained_tokens
    # causal attention: the token at position p attends to p + 1 tokens
    attended = sum(n * (n + 1) // 2 for n in lengths)
    attention = 8 * shape.layers * shape.attention_width * attended
    return float(linear + attention)


@dataclass
class MemoryEstimate:
    base_weights: int
    lora_and_optimizer: int
    activations: int
    logits: int
    overhead: int

    @property
    def total(self) -> int:
        return self.base_weights + self.lora_and_optimizer + self.activations + self.logits + self.overhead

    def lines(self) -> list[str]:
        return [
            f"  base weights        {gib(self.base_weights)}",
            f"  LoRA + AdamW state  {gib(self.lora_and_optimizer)}",
            f"  activations         {gib(self.activations)}",
            f"  output-head logits  {gib(self.logits)}",
            f"  CUDA context        {gib(self.overhead)}",
            f"  estimated peak      {gib(self.total)}",
        ]


def estimate_memory(shape: ModelShape, *, quantized: bool, compute_bytes: int, gradient_checkpointing: bool,
                    micro_batch_tokens: int, micro_batch_trained: int, intermediate: int) -> MemoryEstimate:
    """Peak GPU memory of one training step. Non-quantized weights (embeddings, norms) are
    upcast to fp32 by peft's k-bit preparation."""
    if quantized:
        base = int(shape.body_linear_params * NF4_BYTES_PER_PARAM) + 4 * (shape.head_params + shape.embedding_params + shape.other_params)
    else:
        base = compute_bytes * shape.total_params
    lora = LORA_BYTES_PER_PARAM * shape.lora_params
    # One layer's working set in the backward pass (attention through sdpa, no score matrix),
    # plus the layer inputs kept by checkpointing, or every layer's when it is off.
    per_layer = micro_batch_tokens * (16 * shape.hidden + 3 * intermediate) * compute_bytes
    kept = micro_batch_tokens * shape.hidden * compute_bytes * shape.layers if gradient_checkpointing else per_layer * shape.layers
    dequantized = shape.largest_linear * compute_bytes if quantized else 0
    activations = kept + per_layer + dequantized
    logits = micro_batch_trained * shape.vocab * (4 + 4 + compute_bytes)  # fp32 logits, their gradient, the head output
    return MemoryEstimate(base, lora, activations, logits, CUDA_CONTEXT_BYTES)


def gib(count: float) -> str:
    """A byte count for the estimate table: GiB, or MiB below one GiB."""
    if count < 2**30:
        return f"{count / 2**20:8.1f} MiB"
    return f"{count / 2**30:8.2f} GiB"
