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
  - Reads the header of the GGUF file O(path) (metadata and tensor infos, no tensor data; a multi-GB file takes
    well under a second) and estimates the RAM C(llama-server) (llama.cpp b11312) needs with O(ctx_size),
    O(parallel), the KV cache types, O(ubatch), O(load_mode), O(cache_ram_mib) and a draft model. On Jetson the
    CPU and the GPU share the same memory, so everything counts against O(memtotal_mb).
  - "Weights, from the tensor infos: the tensors on the GPU (every layer with the default O(n_gpu_layers)), the
    input layer (C(token_embd)) that llama.cpp keeps on the CPU, and for a model without C(output.weight) (tied
    embeddings, Llama 3.2) C(token_embd) a second time as the GPU output layer. O(load_mode=mmap+mlock) also
    locks the GPU tensors that lie between the CPU tensors in the file (after the load) and before the last
    CPU tensor (during the load); O(load_mode=dio) stages the upload through 256 MiB of pinned buffers during the
    load. Page cache is clean and reclaimable and not counted."
  - "Then the KV cache (per layer K and V: context cells x KV heads x head dim x bytes per element; f16 2, q8_0
    34/32, q4_0 18/32), the compute buffer (heuristic: ubatch x (n_embd + n_vocab) x 4 bytes, plus the attention
    scores without flash attention), the prompt cache (O(cache_ram_mib)), the draft model (O(draft_estimate))
    and a fixed O(overhead_mb)."
  - "Available memory: O(memtotal_mb) - O(reserve_mb). When the estimate (the larger of the steady state and the
    load peak) exceeds it the module fails (unless O(fail_on_overflow=false)) with the numbers and the ways out: a
    smaller quantization or model, a lower O(ctx_size) or O(parallel), a smaller prompt cache, a q8_0 KV cache."
  - "A split GGUF (C(split.count) > 1 in the header) is refused: llama.cpp would look for the other shards."
  - Runs where the model file is, normally the controller (C(delegate_to=localhost)); never changes anything.
author:
  - jetson-llm-fleet developers (!UNKNOWN)
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
    description: C(llama-server -ub), the physical micro-batch size (llama.cpp's default 512).
    type: int
    default: 512
  n_gpu_layers:
    description: C(llama-server -ngl) (V(all), V(auto) or a number); V(all) and V(auto) offload every layer.
    type: str
    default: all
  backend:
    description:
      - The llama.cpp build. V(cuda) on a Jetson (integrated GPU, where C(--load-mode auto) means V(none)), V(cpu)
        for a CPU build (every tensor on the CPU, nothing duplicated, V(auto) means V(mmap)).
    type: str
    default: cuda
    choices: [cuda, cpu]
  load_mode:
    description: C(llama-server --load-mode).
    type: str
    default: none
    choices: [auto, none, mmap, mlock, mmap+mlock, dio]
  cache_ram_mib:
    description:
      - C(llama-server --cache-ram), the host-RAM prompt cache in MiB; V(0) disables it, V(-1) has no size limit
        (the server then keeps at most ctx_size tokens of slot state, counted as the KV cache size again).
      - llama.cpp's default is 8192.
    type: int
    default: 8192
  draft_estimate:
    description:
      - RV(estimate) of this module for the draft model (C(--model-draft)), run where the draft file is with
        O(cache_ram_mib=0) and O(overhead_mb=0); its C(total_bytes) (weights, KV cache, compute) is added.
    type: dict
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
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: The module only reads the file; check mode behaves the same.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
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
    The estimate: C(weights_bytes) (what the load mode holds, detailed in C(layout): C(device_weights_bytes),
    C(host_weights_bytes), C(duplicated_bytes), C(locked_extra_bytes), C(load_locked_extra_bytes),
    C(load_staging_bytes), C(page_cache_bytes)), C(kv_cache_bytes) (C(kv_k_bytes), C(kv_v_bytes)),
    C(compute_bytes), C(prompt_cache_bytes), C(draft_bytes), C(overhead_bytes), C(total_bytes) (after the load),
    C(load_peak_bytes), C(fit_bytes) (the larger), the same in MiB (C(*_mib)), the context actually used
    (C(n_ctx_total), C(n_ctx_per_slot)), the settings, the model's hyper-parameters (C(model)) and C(warnings)
    (also emitted as Ansible warnings): context beyond the training context, a quantized V cache without flash
    attention, a file without tensor infos.
  returned: success
  type: dict
  sample:
    weights_bytes: 2334768128
    kv_cache_bytes: 234881024
    compute_bytes: 134479872
    prompt_cache_bytes: 1073741824
    overhead_bytes: 268435456
    total_bytes: 4046306304
    total_mib: 3858.8
    n_ctx_total: 2048
    layout: {"effective_load_mode": "none", "duplicated_bytes": 323205120, "tied_embeddings": true}
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
    LOAD_MODES,
    MIB,
    GGUFError,
    estimate_memory,
    read_gguf_metadata,
)
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import fail


def mib(value: int | float) -> str:
    return f"{value / MIB:,.0f} MiB"


def parse_gpu_layers(value: str) -> int:
    """-ngl as the estimate takes it: -1 for all/auto, else the number."""
    text = str(value).strip().lower()
    if text in ("all", "auto", "-1"):
        return -1
    if not text.isdigit():
        raise ValueError(f"n_gpu_layers must be all, auto or a number, got {value!r}")
    return int(text)


def max_ctx_size(estimate: dict[str, Any], available: int, ctx_is_total: bool) -> int:
    """Largest ctx_size (multiple of 256) whose estimate fits, the other settings unchanged."""
    parallel = estimate["parallel"]
    kv_share = estimate["kv_cache_bytes"]
    per_cell = estimate["kv_bytes_per_cell"]  # bytes per context cell (all layers, K and V)
    if estimate["cache_ram_mib"] < 0:  # the unlimited prompt cache holds up to n_ctx cells more
        kv_share *= 2
        per_cell *= 2
    if estimate["load_peak_bytes"] > available:  # the load alone does not fit, whatever the context
        return 0
    fixed = estimate["total_bytes"] - kv_share
    if not estimate["flash_attn"]:
        fixed -= estimate["model"]["n_head"] * estimate["ubatch"] * estimate["n_ctx_per_slot"] * 4
        per_cell += estimate["model"]["n_head"] * estimate["ubatch"] * 4 / parallel
    draft_kv = estimate.get("draft_kv_bytes", 0)
    if draft_kv and estimate["n_ctx_total"]:
        per_cell += draft_kv / estimate["n_ctx_total"] * (2 if estimate["cache_ram_mib"] < 0 else 1)
        fixed -= draft_kv * (2 if estimate["cache_ram_mib"] < 0 else 1)
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
    layout = est["layout"]
    parts = [f"on the GPU {mib(layout['device_weights_bytes'])}", f"on the CPU {mib(layout['host_weights_bytes'])}"]
    if layout["duplicated_bytes"]:
        parts.append(f"of which tied embeddings loaded twice {mib(layout['duplicated_bytes'])}")
    if layout["locked_extra_bytes"]:
        parts.append(f"locked second copy {mib(layout['locked_extra_bytes'])}")
    detail = f" ({', '.join(parts)}; load mode {layout['load_mode']})" if layout["tensors_known"] else ""
    draft = f" + draft model {mib(est['draft_bytes'])}" if est["draft_bytes"] else ""
    cache_fix = (
        f"; a smaller prompt cache (cache_ram_mib {params['cache_ram_mib']}, 0 turns it off)"
        if est["prompt_cache_bytes"]
        else ""
    )
    peak = (
        f" (the load itself peaks at {mib(est['load_peak_bytes'])})"
        if est["load_peak_bytes"] > est["total_bytes"]
        else ""
    )
    return (
        f"{path} does not fit: weights {mib(est['weights_bytes'])}{detail} + KV cache {mib(est['kv_cache_bytes'])} "
        f"(ctx {est['n_ctx_total']} total, {est['parallel']} slot(s), {est['cache_type_k']}/{est['cache_type_v']}) "
        f"+ compute ~{mib(est['compute_bytes'])} (ubatch {est['ubatch']}) + prompt cache "
        f"{mib(est['prompt_cache_bytes'])}{draft} + overhead {mib(est['overhead_bytes'])} = "
        f"{mib(est['total_bytes'])}{peak} > available {available_mb:,} MiB (memtotal {params['memtotal_mb']:,} MiB "
        f"- reserve {params['reserve_mb']:,} MiB). Fixes: a smaller quantization or model; a lower ctx_size "
        f"(at most {est['max_ctx_size']} fits) or parallel{cache_fix}; a q8_0 KV cache (cache_type_k and "
        f"cache_type_v q8_0{q8_note})."
    )


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "path": {"type": "path", "required": True},
    "ctx_size": {"type": "int", "default": 4096},
    "ctx_is_total": {"type": "bool", "default": True},
    "parallel": {"type": "int", "default": 1},
    "cache_type_k": {"type": "str", "default": "f16", "choices": list(CACHE_TYPE_BLOCKS)},
    "cache_type_v": {"type": "str", "default": "f16", "choices": list(CACHE_TYPE_BLOCKS)},
    "ubatch": {"type": "int", "default": 512},
    "n_gpu_layers": {"type": "str", "default": "all"},
    "backend": {"type": "str", "default": "cuda", "choices": ["cuda", "cpu"]},
    "load_mode": {"type": "str", "default": "none", "choices": list(LOAD_MODES)},
    "cache_ram_mib": {"type": "int", "default": 8192},
    "draft_estimate": {"type": "dict"},
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
    if params["cache_ram_mib"] < -1:
        fail(module, f"cache_ram_mib must be -1 (no limit), 0 (off) or a size in MiB, got {params['cache_ram_mib']}")
    draft = params["draft_estimate"]
    if draft is not None and not all(isinstance(draft.get(key), int) for key in ("total_bytes", "kv_cache_bytes")):
        fail(module, "draft_estimate must be the estimate this module returned for the draft model")
    try:
        n_gpu_layers = parse_gpu_layers(params["n_gpu_layers"])
    except ValueError as exc:
        fail(module, str(exc))

    def estimate_with(cache_type_k: str, cache_type_v: str) -> dict[str, Any]:
        return estimate_memory(
            meta,
            meta["file_size"],
            params["ctx_size"],
            params["parallel"],
            cache_type_k=cache_type_k,
            cache_type_v=cache_type_v,
            ubatch=params["ubatch"],
            n_gpu_layers=n_gpu_layers,
            ctx_is_total=params["ctx_is_total"],
            flash_attn=params["flash_attn"],
            overhead_bytes=params["overhead_mb"] * MIB,
            load_mode=params["load_mode"],
            backend=params["backend"],
            cache_ram_mib=params["cache_ram_mib"],
            draft=draft,
        )

    try:
        meta = read_gguf_metadata(path)
        split_count = meta["kv"].get("split.count")
        if isinstance(split_count, int) and split_count > 1:
            fail(
                module,
                f"{path} is shard {int(meta['kv'].get('split.no', 0)) + 1} of a split GGUF ({split_count} files): "
                "llama-server would look for the other shards next to it, and this fleet deploys one file. Fix: "
                "use a single-file quantization, or merge the shards (llama-gguf-split --merge <first shard> "
                "<model.gguf>) and serve the merged file from your own repository or mirror.",
            )
        estimate = estimate_with(params["cache_type_k"], params["cache_type_v"])
        kv_q8_bytes = estimate_with("q8_0", "q8_0")["kv_cache_bytes"]
    except OSError as exc:
        fail(module, f"cannot read {path}: {exc}")
    except (GGUFError, ValueError) as exc:
        fail(module, f"cannot estimate the memory for {path}: {exc}")

    available_mb = params["memtotal_mb"] - params["reserve_mb"]
    available = available_mb * MIB
    if draft is not None:
        estimate["draft_kv_bytes"] = int(draft["kv_cache_bytes"])
    estimate["max_ctx_size"] = max_ctx_size(estimate, available, params["ctx_is_total"])
    fits = estimate["fit_bytes"] <= available
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
