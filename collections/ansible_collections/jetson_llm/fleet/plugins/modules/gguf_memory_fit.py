#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""Check that a GGUF model with a llama-server configuration fits a Jetson's memory."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: gguf_memory_fit
short_description: Check that a GGUF model and llama-server settings fit a Jetson's memory
version_added: "0.1.0"
description:
  - Reads the header of the GGUF file O(path) (no tensor data; a multi-GB file takes well under a second)
    and estimates the RAM C(llama-server) needs with O(ctx_size), O(parallel), the KV cache types and
    O(ubatch). On Jetson the CPU and the GPU share the same memory, so everything counts against O(memtotal_mb).
  - "Estimate: weights (the file size) + KV cache (per layer K and V: context cells x KV heads x head dim x
    bytes per element; f16 2, q8_0 34/32, q4_0 18/32) + compute buffer (heuristic: ubatch x (n_embd + n_vocab)
    x 4 bytes, plus the attention scores without flash attention) + a fixed O(overhead_mb)."
  - "Available memory: O(memtotal_mb) - O(reserve_mb). When the estimate exceeds it the module fails (unless
    O(fail_on_overflow=false)) with the numbers and the ways out: a smaller quantization or model, a lower
    O(ctx_size) or O(parallel), a q8_0 KV cache."
  - Runs where the model file is, normally the controller (C(delegate_to=localhost)); never changes anything.
author:
  - jetson-llm-fleet developers
options:
  path:
    description: The GGUF model file.
    type: path
    required: true
  ctx_size:
    description:
      - C(llama-server -c). V(0) means the model's training context (131072 for Llama 3.2, about 14 GiB of
        f16 KV cache for the 3B model), which is why it should always be set.
    type: int
    default: 4096
  ctx_is_total:
    description:
      - Whether O(ctx_size) is the total context shared by the O(parallel) slots (recent llama.cpp, where
        each slot gets ctx_size / parallel) or the context of each slot (older releases and some forks).
    type: bool
    default: true
  parallel:
    description: C(llama-server --parallel), the number of slots.
    type: int
    default: 1
  cache_type_k:
    description: C(llama-server -ctk), the K cache element type.
    type: str
    default: f16
    choices: [f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1]
  cache_type_v:
    description: C(llama-server -ctv), the V cache element type (a quantized V cache needs flash attention).
    type: str
    default: f16
    choices: [f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1]
  ubatch:
    description: C(llama-server -ub), the physical micro-batch size.
    type: int
    default: 512
  flash_attn:
    description: Whether flash attention is on (C(-fa auto) turns it on for CUDA when the model supports it).
    type: bool
    default: true
  memtotal_mb:
    description: The device's total memory in MiB (C(ansible_memtotal_mb), or jetson_facts' value).
    type: int
    required: true
  reserve_mb:
    description: MiB kept for the OS, the container runtime and other services.
    type: int
    default: 2048
  overhead_mb:
    description: Fixed allowance in MiB for the CUDA context, cuBLAS workspace, host buffers and the server.
    type: int
    default: 256
  fail_on_overflow:
    description: Fail when the estimate exceeds the available memory (else only RV(fits=false)).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: The module only reads the file; check mode behaves the same.
  diff_mode:
    support: none
notes:
  - The estimate is deliberately simple; llama.cpp may round the context up to a multiple of 256 and allocate
    small extra buffers. Keep a margin in O(reserve_mb).
  - Architectures with sliding-window or recurrent layers (Gemma 2/3, Mamba) need less KV cache than estimated.
seealso:
  - module: jetson_llm.fleet.hf_model_fetch
"""

EXAMPLES = r"""
- name: Refuse configurations that would not fit
  jetson_llm.fleet.gguf_memory_fit:
    path: "{{ llm_model.path }}"
    ctx_size: "{{ llama_server_ctx_size }}"
    parallel: "{{ llama_server_parallel }}"
    cache_type_k: q8_0
    cache_type_v: q8_0
    memtotal_mb: "{{ ansible_memtotal_mb }}"
  delegate_to: localhost
  register: llm_fit

- name: Show the estimate
  ansible.builtin.debug:
    msg: "{{ llm_fit.estimate.total_mib }} MiB of {{ llm_fit.available_mb }} MiB"
"""

RETURN = r"""
estimate:
  description: >-
    The estimate: C(weights_bytes), C(kv_cache_bytes) (C(kv_k_bytes), C(kv_v_bytes)), C(compute_bytes),
    C(overhead_bytes), C(total_bytes), the same in MiB (C(*_mib)), the context actually used
    (C(n_ctx_total), C(n_ctx_per_slot)), the settings, the model's hyper-parameters (C(model)) and
    C(warnings) (also emitted as Ansible warnings): context beyond the training context, a quantized V
    cache without flash attention.
  returned: success
  type: dict
  sample:
    weights_bytes: 2019377696
    kv_cache_bytes: 234881024
    compute_bytes: 268959744
    overhead_bytes: 268435456
    total_bytes: 2791653920
    total_mib: 2662.3
    n_ctx_total: 2048
    model: {"architecture": "llama", "n_layer": 28, "n_head_kv": 8, "head_dim_k": 128}
available_mb:
  description: O(memtotal_mb) - O(reserve_mb).
  returned: success
  type: int
  sample: 13240
fits:
  description: Whether the estimated total fits the available memory.
  returned: success
  type: bool
max_ctx_size:
  description: >-
    The largest O(ctx_size) (a multiple of 256, in the same convention as O(ctx_is_total)) that would fit
    with the other settings unchanged; 0 when even the weights do not fit.
  returned: success
  type: int
"""


from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils.gguf import (
    CACHE_TYPE_BLOCKS,
    MIB,
    GGUFError,
    estimate_memory,
    read_gguf_metadata,
)
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import fail


def mib(value: int | float) -> str:
    return f"{value / MIB:,.0f} MiB"


def max_ctx_size(estimate: dict[str, Any], available: int, ctx_is_total: bool) -> int:
    """Largest ctx_size (multiple of 256) whose estimate fits, the other settings unchanged."""
    parallel = estimate["parallel"]
    fixed = estimate["weights_bytes"] + estimate["overhead_bytes"]
    fixed += estimate["ubatch"] * (estimate["model"]["n_embd"] + (estimate["model"]["n_vocab"] or 0)) * 4
    per_cell = estimate["kv_bytes_per_cell"]  # bytes per context cell (all layers, K and V)
    if not estimate["flash_attn"]:
        per_cell += estimate["model"]["n_head"] * estimate["ubatch"] * 4 / parallel
    room = available - fixed
    if room <= 0 or per_cell <= 0:
        return 0
    cells = int(room // per_cell)
    ctx = cells if ctx_is_total else cells // parallel
    return max(0, ctx - ctx % 256)


def overflow_message(
    path: str, est: dict[str, Any], params: dict[str, Any], available_mb: int, kv_q8_bytes: int | None
) -> str:
    q8_note = "; needs flash attention"
    if kv_q8_bytes is not None and kv_q8_bytes < est["kv_cache_bytes"]:
        q8_note = f": KV about {mib(kv_q8_bytes)} instead of {mib(est['kv_cache_bytes'])}{q8_note}"
    return (
        f"{path} does not fit: weights {mib(est['weights_bytes'])} + KV cache {mib(est['kv_cache_bytes'])} "
        f"(ctx {est['n_ctx_total']} total, {est['parallel']} slot(s), {est['cache_type_k']}/{est['cache_type_v']}) "
        f"+ compute ~{mib(est['compute_bytes'])} + overhead {mib(est['overhead_bytes'])} = "
        f"{mib(est['total_bytes'])} > available {available_mb:,} MiB (memtotal {params['memtotal_mb']:,} MiB "
        f"- reserve {params['reserve_mb']:,} MiB). Fixes: a smaller quantization or model; a lower ctx_size "
        f"(at most {est['max_ctx_size']} fits) or parallel; a q8_0 KV cache (cache_type_k and cache_type_v "
        f"q8_0{q8_note})."
    )


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "path": {"type": "path", "required": True},
    "ctx_size": {"type": "int", "default": 4096},
    "ctx_is_total": {"type": "bool", "default": True},
    "parallel": {"type": "int", "default": 1},
    "cache_type_k": {"type": "str", "default": "f16", "choices": list(CACHE_TYPE_BLOCKS)},
    "cache_type_v": {"type": "str", "default": "f16", "choices": list(CACHE_TYPE_BLOCKS)},
    "ubatch": {"type": "int", "default": 512},
    "flash_attn": {"type": "bool", "default": True},
    "memtotal_mb": {"type": "int", "required": True},
    "reserve_mb": {"type": "int", "default": 2048},
    "overhead_mb": {"type": "int", "default": 256},
    "fail_on_overflow": {"type": "bool", "default": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    path = params["path"]
    for name in ("parallel", "ubatch", "memtotal_mb"):
        if params[name] < 1:
            fail(module, f"{name} must be at least 1, got {params[name]}")
    for name in ("ctx_size", "reserve_mb", "overhead_mb"):
        if params[name] < 0:
            fail(module, f"{name} must not be negative, got {params[name]}")

    def estimate_with(cache_type_k: str, cache_type_v: str) -> dict[str, Any]:
        return estimate_memory(
            meta,
            meta["file_size"],
            params["ctx_size"],
            params["parallel"],
            cache_type_k=cache_type_k,
            cache_type_v=cache_type_v,
            ubatch=params["ubatch"],
            ctx_is_total=params["ctx_is_total"],
            flash_attn=params["flash_attn"],
            overhead_bytes=params["overhead_mb"] * MIB,
        )

    try:
        meta = read_gguf_metadata(path)
        estimate = estimate_with(params["cache_type_k"], params["cache_type_v"])
        kv_q8_bytes = estimate_with("q8_0", "q8_0")["kv_cache_bytes"]
    except OSError as exc:
        fail(module, f"cannot read {path}: {exc}")
    except (GGUFError, ValueError) as exc:
        fail(module, f"cannot estimate the memory for {path}: {exc}")

    available_mb = params["memtotal_mb"] - params["reserve_mb"]
    available = available_mb * MIB
    estimate["max_ctx_size"] = max_ctx_size(estimate, available, params["ctx_is_total"])
    fits = estimate["total_bytes"] <= available
    result: dict[str, Any] = {
        "changed": False,
        "estimate": estimate,
        "available_mb": available_mb,
        "fits": fits,
        "max_ctx_size": estimate["max_ctx_size"],
    }
    for warning in estimate["warnings"]:
        module.warn(f"{path}: {warning}")
    if not fits and params["fail_on_overflow"]:
        fail(module, overflow_message(path, estimate, params, available_mb, kv_q8_bytes), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
