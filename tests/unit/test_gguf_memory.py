"""The tiny GGUF fixture, the pure-Python GGUF reader, the memory estimate and gguf_memory_fit."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import gguf
import module_runner as runner
import pytest
import tiny_gguf as tiny
from ansible_collections.jetson_llm.fleet.plugins.module_utils.gguf import (
    MIB,
    GGUFError,
    estimate_memory,
    read_gguf_metadata,
)
from ansible_collections.jetson_llm.fleet.plugins.modules import gguf_memory_fit

REPO = Path(__file__).resolve().parents[2]


# Llama-3.2-3B-Instruct: 28 layers, 24 heads, 8 KV heads, n_embd 3072 (head dim 128), vocab 128256.
LLAMA32_3B = {
    "llama.block_count": 28,
    "llama.embedding_length": 3072,
    "llama.feed_forward_length": 8192,
    "llama.attention.head_count": 24,
    "llama.attention.head_count_kv": 8,
    "llama.context_length": 131072,
    "llama.vocab_size": 128256,
    "general.name": "Llama 3.2 3B Instruct",
}
LLAMA32_3B_Q4_K_M_SIZE = 2_019_377_696
# Its tensors as llama-quantize's Q4_K_M recipe lays them out: no output.weight (tied embeddings), token_embd Q6_K
# right after rope_freqs, 28 blocks, output_norm.
LLAMA32_3B_TENSORS = tiny.q4_k_m_tensors(
    n_layer=28, n_embd=3072, n_ff=8192, n_head=24, n_head_kv=8, n_vocab=128256, tied=True
)
TOKEN_EMBD_Q6_K = 128256 * 3072 // 256 * 210  # 323,205,120 bytes = 308.2 MiB
# Qwen2.5-7B-Instruct Q4_K_M (bartowski, about 4.68 GB): 28 layers, 28 heads, 4 KV heads, n_embd 3584, vocab
# 152064, q/k/v biases, its own output.weight (not tied).
QWEN25_7B = {
    "qwen2.block_count": 28,
    "qwen2.embedding_length": 3584,
    "qwen2.feed_forward_length": 18944,
    "qwen2.attention.head_count": 28,
    "qwen2.attention.head_count_kv": 4,
    "qwen2.context_length": 32768,
    "qwen2.vocab_size": 152064,
    "general.name": "Qwen2.5 7B Instruct",
}
QWEN25_7B_Q4_K_M_SIZE = 4_683_073_952
QWEN25_7B_TENSORS = tiny.q4_k_m_tensors(
    n_layer=28, n_embd=3584, n_ff=18944, n_head=28, n_head_kv=4, n_vocab=152064, tied=False, qkv_bias=True
)
# What llama_server runs by default (roles/llama_server/defaults/main.yml), as deploy.yml passes it to the fit.
SERVER = {"ctx": 2048, "parallel": 8, "ubatch": 256, "load_mode": "none", "cache_ram_mib": 1024}
# Llama-2-7B in F16: 32 layers, 32 heads, no GQA, n_embd 4096, vocab 32000, 13.5 GB.
LLAMA2_7B = {
    "llama.block_count": 32,
    "llama.embedding_length": 4096,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 32,
    "llama.context_length": 4096,
    "llama.vocab_size": 32000,
}
LLAMA2_7B_F16_SIZE = 13_476_839_424
ORIN_NX_16GB_MEMTOTAL_MB = 15288  # MemTotal 15655140 kB


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = tiny.write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- tiny model fixture ------------------------------------------------------------------------------


def test_tiny_model_is_small_and_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    again = tiny.write_tiny_llama_gguf(tmp_path / "again.gguf")
    other_seed = tiny.write_tiny_llama_gguf(tmp_path / "seed1.gguf", seed=1)
    assert tiny_model.stat().st_size < 1024 * 1024
    assert sha256(again) == sha256(tiny_model)
    assert sha256(other_seed) != sha256(tiny_model)


def test_tiny_model_parses_with_our_reader(tiny_model: Path) -> None:
    meta = read_gguf_metadata(tiny_model)
    kv = meta["kv"]
    assert meta["version"] == 3
    assert meta["tensor_count"] == 3 + 2 * 9
    assert kv["general.architecture"] == "llama"
    assert kv["general.name"] == "tiny-llama-test"
    assert kv["llama.block_count"] == 2
    assert kv["llama.embedding_length"] == 64
    assert kv["llama.attention.head_count"] == 4
    assert kv["llama.attention.head_count_kv"] == 2
    assert kv["llama.feed_forward_length"] == 128
    assert kv["llama.context_length"] == 2048
    assert kv["llama.rope.dimension_count"] == 16
    assert kv["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert kv["tokenizer.ggml.model"] == "llama"
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert "<|im_start|>" in kv["tokenizer.chat_template"]
    n_vocab = kv["llama.vocab_size"]
    assert 3 + 256 + 200 < n_vocab < 1024
    # The token list is longer than max_array_len: skipped, but its length is kept.
    assert kv["tokenizer.ggml.tokens"] == {"skipped_array": True, "element_type": "string", "length": n_vocab}
    assert meta["arrays"]["tokenizer.ggml.scores"] == {"element_type": "float32", "length": n_vocab}
    full = read_gguf_metadata(tiny_model, max_array_len=4096)["kv"]["tokenizer.ggml.tokens"]
    assert full[:3] == ["<unk>", "<s>", "</s>"]
    assert full[3] == "<0x00>" and full[3 + 255] == "<0xFF>"
    assert "▁the" in full and len(set(full)) == n_vocab


def test_tiny_model_matches_llama_cpp_expectations(tiny_model: Path) -> None:
    """Names from gguf's MODEL_TENSORS for LLAMA, shapes in GGUF dims order as llama.cpp creates them."""
    reader = gguf.GGUFReader(tiny_model)
    tensors = {t.name: (t.shape.tolist(), t.tensor_type) for t in reader.tensors}
    names = gguf.TENSOR_NAMES
    allowed = {names[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.LLAMA]}
    for name in tensors:
        assert name.removesuffix(".weight").replace(".0.", ".{bid}.").replace(".1.", ".{bid}.") in allowed
    n_vocab, n_embd, n_ff, head_dim = 517, 64, 128, 16
    expected = {
        "token_embd.weight": [n_embd, n_vocab],
        "output_norm.weight": [n_embd],
        "output.weight": [n_embd, n_vocab],
    }
    for layer in range(2):
        expected |= {
            f"blk.{layer}.attn_norm.weight": [n_embd],
            f"blk.{layer}.attn_q.weight": [n_embd, 4 * head_dim],
            f"blk.{layer}.attn_k.weight": [n_embd, 2 * head_dim],
            f"blk.{layer}.attn_v.weight": [n_embd, 2 * head_dim],
            f"blk.{layer}.attn_output.weight": [4 * head_dim, n_embd],
            f"blk.{layer}.ffn_norm.weight": [n_embd],
            f"blk.{layer}.ffn_gate.weight": [n_embd, n_ff],
            f"blk.{layer}.ffn_up.weight": [n_embd, n_ff],
            f"blk.{layer}.ffn_down.weight": [n_ff, n_embd],
        }
    assert {name: shape for name, (shape, _type) in tensors.items()} == expected
    assert {kind for _shape, kind in tensors.values()} == {gguf.GGMLQuantizationType.F32}
    types = reader.fields["tokenizer.ggml.token_type"]
    token_types = [int(types.parts[i][0]) for i in types.data]
    assert token_types[:3] == [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    assert token_types[3:259] == [gguf.TokenType.BYTE] * 256
    assert token_types[-2:] == [gguf.TokenType.CONTROL] * 2


def test_tiny_model_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    assert tiny.main([str(out)]) == 0
    assert read_gguf_metadata(out)["kv"]["general.name"] == "tiny-llama-test"


# --- reader ------------------------------------------------------------------------------------------


def test_reader_skips_big_arrays_quickly(tmp_path: Path) -> None:
    tokens = [f"tok{i}" for i in range(20000)]
    path = tiny.write_gguf_header(
        tmp_path / "vocab.gguf",
        "llama",
        {**LLAMA32_3B, "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": [1] * 20000},
        file_size=LLAMA32_3B_Q4_K_M_SIZE,
    )
    meta = read_gguf_metadata(path)
    assert meta["file_size"] == LLAMA32_3B_Q4_K_M_SIZE
    assert meta["arrays"]["tokenizer.ggml.tokens"] == {"element_type": "string", "length": 20000}
    assert meta["kv"]["tokenizer.ggml.token_type"]["length"] == 20000
    assert meta["header_bytes"] < 1024 * 1024
    assert meta["kv"]["llama.block_count"] == 28


def test_reader_rejects_non_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"<html>Not Found</html>")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf_metadata(bogus)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        read_gguf_metadata(empty)
    v1 = tmp_path / "v1.gguf"
    v1.write_bytes(b"GGUF" + struct.pack("<III", 1, 0, 0))
    with pytest.raises(GGUFError, match="unsupported GGUF version 1"):
        read_gguf_metadata(v1)


def test_reader_rejects_truncated_header(tiny_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_model.read_bytes()[:3000])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf_metadata(cut)


# --- estimate ----------------------------------------------------------------------------------------


def llama32_meta(tmp_path: Path, **tensor_args: Any) -> dict[str, Any]:
    tensors = tiny.q4_k_m_tensors(
        n_layer=28, n_embd=3072, n_ff=8192, n_head=24, n_head_kv=8, n_vocab=128256, tied=True, **tensor_args
    )
    path = tiny.write_gguf_header(
        tmp_path / "3b.gguf", "llama", LLAMA32_3B, file_size=LLAMA32_3B_Q4_K_M_SIZE, tensors=tensors
    )
    return read_gguf_metadata(path)


def qwen7b_meta(tmp_path: Path) -> dict[str, Any]:
    path = tiny.write_gguf_header(
        tmp_path / "7b.gguf", "qwen2", QWEN25_7B, file_size=QWEN25_7B_Q4_K_M_SIZE, tensors=QWEN25_7B_TENSORS
    )
    return read_gguf_metadata(path)


def tensor_bytes(meta: dict[str, Any]) -> int:
    return sum(int(t["nbytes"]) for t in meta["tensors"])


def test_reader_reads_the_tensor_infos_as_gguf_py_does(tmp_path: Path) -> None:
    meta = llama32_meta(tmp_path)
    reader = gguf.GGUFReader(tmp_path / "3b.gguf")
    assert len(meta["tensors"]) == len(reader.tensors) == 2 + 28 * 9 + 1
    for ours, theirs in zip(meta["tensors"], reader.tensors, strict=True):
        assert (ours["name"], ours["offset"], ours["nbytes"]) == (theirs.name, theirs.data_offset, theirs.n_bytes)
    embd = meta["tensors"][1]
    assert (embd["name"], embd["type"], embd["dims"], embd["nbytes"]) == (
        "token_embd.weight", "Q6_K", [3072, 128256], TOKEN_EMBD_Q6_K
    )  # fmt: skip
    # the Q4_K_M recipe's tensors add up to the real file's size less its header (the tokenizer, ~7.8 MB)
    assert 0 < LLAMA32_3B_Q4_K_M_SIZE - tensor_bytes(meta) < 8 * MIB


def test_estimate_llama32_3b_kv_cache(tmp_path: Path) -> None:
    meta = llama32_meta(tmp_path)
    est = estimate_memory(meta, meta["file_size"], ctx=2048, parallel=1)
    # 2 x 28 layers x 2048 cells x 8 KV heads x 128 head dim x 2 bytes (f16)
    assert est["kv_cache_bytes"] == 2 * 28 * 2048 * 8 * 128 * 2 == 234_881_024
    assert est["kv_cache_mib"] == 224.0
    assert est["kv_k_bytes"] == est["kv_v_bytes"] == 234_881_024 // 2
    assert est["model"]["head_dim_k"] == 128
    # logits + hidden state of one 512-token micro-batch in F32: llama.cpp reports 256.5 MiB for this model
    assert est["compute_bytes"] == 512 * (3072 + 128256) * 4
    assert est["compute_mib"] == 256.5
    weights = tensor_bytes(meta) + TOKEN_EMBD_Q6_K  # the tied embeddings once more, as the GPU output layer
    assert est["weights_bytes"] == weights
    assert est["prompt_cache_bytes"] == 0  # cache_ram_mib=0 unless asked
    assert est["total_bytes"] == weights + 234_881_024 + est["compute_bytes"] + 256 * MIB
    assert est["n_ctx_total"] == est["n_ctx_per_slot"] == 2048
    assert est["warnings"] == []


def test_header_without_tensor_infos_counts_the_file_size(tmp_path: Path) -> None:
    path = tiny.write_gguf_header(tmp_path / "3b.gguf", "llama", LLAMA32_3B, file_size=LLAMA32_3B_Q4_K_M_SIZE)
    est = estimate_memory(read_gguf_metadata(path), LLAMA32_3B_Q4_K_M_SIZE, ctx=2048)
    assert est["weights_bytes"] == LLAMA32_3B_Q4_K_M_SIZE
    assert est["layout"]["duplicated_bytes"] == 0
    assert any("no tensor infos" in warning for warning in est["warnings"])


def test_estimate_context_conventions_and_cache_types(tmp_path: Path) -> None:
    meta = llama32_meta(tmp_path)
    shared = estimate_memory(meta, 0, ctx=8192, parallel=4)
    assert (shared["n_ctx_total"], shared["n_ctx_per_slot"]) == (8192, 2048)
    per_slot = estimate_memory(meta, 0, ctx=2048, parallel=4, ctx_is_total=False)
    assert per_slot["n_ctx_total"] == 8192
    assert per_slot["kv_cache_bytes"] == shared["kv_cache_bytes"] == 4 * 234_881_024
    q8 = estimate_memory(meta, 0, ctx=2048, cache_type_k="q8_0", cache_type_v="q8_0")
    assert q8["kv_cache_bytes"] == 234_881_024 // 2 * 34 // 32
    mixed = estimate_memory(meta, 0, ctx=2048, cache_type_k="q8_0", cache_type_v="q4_0")
    assert mixed["kv_v_bytes"] == 28 * 2048 * (8 * 128 // 32) * 18
    f32 = estimate_memory(meta, 0, ctx=2048, cache_type_k="f32", cache_type_v="f32")
    assert f32["kv_cache_bytes"] == 2 * 234_881_024
    no_fa = estimate_memory(meta, 0, ctx=2048, flash_attn=False, cache_type_v="q8_0")
    assert no_fa["compute_bytes"] == 512 * (3072 + 128256) * 4 + 24 * 512 * 2048 * 4
    assert any("flash attention" in warning for warning in no_fa["warnings"])


def test_estimate_ctx_zero_uses_training_context(tmp_path: Path) -> None:
    meta = llama32_meta(tmp_path)
    est = estimate_memory(meta, 0, ctx=0)
    assert est["n_ctx_total"] == 131072
    assert est["kv_cache_bytes"] == 14 * 1024 * MIB  # the "~14 GiB" of an unset -c for Llama 3.2
    assert "training context" in est["warnings"][0]


def test_estimate_key_length_and_per_layer_heads(tmp_path: Path) -> None:
    path = tiny.write_gguf_header(
        tmp_path / "odd.gguf",
        "llama",
        {
            "llama.block_count": 4,
            "llama.embedding_length": 2048,
            "llama.attention.head_count": 16,
            "llama.attention.head_count_kv": [4, 4, 0, 2],
            "llama.attention.key_length": 192,
            "llama.attention.value_length": 128,
        },
    )
    est = estimate_memory(read_gguf_metadata(path), 0, ctx=1000, ubatch=1)
    assert est["kv_k_bytes"] == (4 + 4 + 0 + 2) * 192 * 2 * 1000
    assert est["kv_v_bytes"] == (4 + 4 + 0 + 2) * 128 * 2 * 1000
    assert est["model"]["n_vocab"] is None
    assert any("vocabulary size unknown" in warning for warning in est["warnings"])


def test_estimate_rejects_bad_settings(tmp_path: Path) -> None:
    meta = llama32_meta(tmp_path)
    with pytest.raises(ValueError, match="cache_type_k 'q3_k'"):
        estimate_memory(meta, 0, ctx=2048, cache_type_k="q3_k")
    with pytest.raises(ValueError):
        estimate_memory(meta, 0, ctx=2048, parallel=0)
    bare = tiny.write_gguf_header(tmp_path / "bare.gguf", "llama", {"llama.block_count": 2})
    with pytest.raises(GGUFError, match="required"):
        estimate_memory(read_gguf_metadata(bare), 0, ctx=2048)


# --- gguf_memory_fit module ----------------------------------------------------------------------------


def test_fit_documentation_matches_the_argument_spec() -> None:
    assert runner.doc_mismatches(gguf_memory_fit) == []


def fit(args: dict[str, Any], capsys: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    result: dict[str, Any] = runner.run_module(gguf_memory_fit.main, args, capsys, monkeypatch)
    return result


def test_fit_llama32_3b_on_orin_nx_16gb(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny.write_gguf_header(tmp_path / "3b.gguf", "llama", LLAMA32_3B, file_size=LLAMA32_3B_Q4_K_M_SIZE)
    args = {"path": str(path), "ctx_size": 2048, "parallel": 1, "memtotal_mb": ORIN_NX_16GB_MEMTOTAL_MB}
    result = fit(args, capsys, monkeypatch)
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["fits"] is True
    assert result["available_mb"] == ORIN_NX_16GB_MEMTOTAL_MB - 2048
    est = result["estimate"]
    assert est["kv_cache_bytes"] == 234_881_024
    assert est["weights_bytes"] == LLAMA32_3B_Q4_K_M_SIZE
    assert est["total_mib"] < result["available_mb"]
    assert result["max_ctx_size"] > 2048 and result["max_ctx_size"] % 256 == 0
    # check mode: the same read-only answer
    checked = fit({**args, "_ansible_check_mode": True}, capsys, monkeypatch)
    assert checked["fits"] is True and checked["changed"] is False


def test_fit_refuses_7b_f16_on_orin_nx_16gb(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny.write_gguf_header(tmp_path / "7b-f16.gguf", "llama", LLAMA2_7B, file_size=LLAMA2_7B_F16_SIZE)
    args = {"path": str(path), "ctx_size": 4096, "parallel": 1, "memtotal_mb": ORIN_NX_16GB_MEMTOTAL_MB}
    result = fit(args, capsys, monkeypatch)
    assert result["failed"] is True
    assert result["fits"] is False
    msg = result["msg"]
    kv = 2 * 32 * 4096 * 32 * 128 * 2  # 2 GiB
    assert result["estimate"]["kv_cache_bytes"] == kv
    assert "does not fit" in msg
    assert f"weights {LLAMA2_7B_F16_SIZE / MIB:,.0f} MiB" in msg
    assert "KV cache 2,048 MiB" in msg
    assert f"available {ORIN_NX_16GB_MEMTOTAL_MB - 2048:,} MiB" in msg
    assert f"memtotal {ORIN_NX_16GB_MEMTOTAL_MB:,} MiB - reserve 2,048 MiB" in msg
    assert "smaller quantization or model" in msg
    assert "ctx_size" in msg and "parallel" in msg
    assert "q8_0" in msg and "KV about 1,088 MiB" in msg
    # weights alone leave no room for a context: no ctx_size fits
    assert result["max_ctx_size"] == 0
    lenient = fit({**args, "fail_on_overflow": False}, capsys, monkeypatch)
    assert lenient.get("failed") is not True
    assert lenient["fits"] is False


def test_fit_suggests_the_largest_context(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny.write_gguf_header(tmp_path / "3b.gguf", "llama", LLAMA32_3B, file_size=LLAMA32_3B_Q4_K_M_SIZE)
    args = {"path": str(path), "ctx_size": 0, "memtotal_mb": ORIN_NX_16GB_MEMTOTAL_MB}
    result = fit(args, capsys, monkeypatch)
    assert result["failed"] is True  # 131072 cells: 14 GiB of KV cache
    suggested = result["max_ctx_size"]
    assert f"at most {suggested} fits" in result["msg"]
    assert "training context" in json.dumps(result.get("warnings"))
    ok = fit({**args, "ctx_size": suggested}, capsys, monkeypatch)
    assert ok["fits"] is True
    too_much = fit({**args, "ctx_size": suggested + 256}, capsys, monkeypatch)
    assert too_much["fits"] is False


def test_fit_reports_unreadable_files(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = fit({"path": str(tmp_path / "absent.gguf"), "memtotal_mb": 15288}, capsys, monkeypatch)
    assert missing["failed"] is True and "cannot read" in missing["msg"]
    html = tmp_path / "error.gguf"
    html.write_text("<html>401</html>")
    bogus = fit({"path": str(html), "memtotal_mb": 15288}, capsys, monkeypatch)
    assert bogus["failed"] is True and "not a GGUF file" in bogus["msg"]


# --- what llama-server b11312 really holds: load modes, tied embeddings, prompt cache, draft (issues 11.5, 17.11-17.13)


def server_estimate(meta: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    settings = {**SERVER, **overrides}
    ctx, parallel = settings.pop("ctx"), settings.pop("parallel")
    return estimate_memory(meta, meta["file_size"], ctx, parallel, **settings)


# (load mode, MiB after the load, MiB at the load's peak) for Llama-3.2-3B Q4_K_M on CUDA with the server's defaults.
# After the load every mode holds the same 2,226.6 MiB of weights: 1,918.4 on the GPU (token_embd's 308.2 MiB
# copy as the output layer included) + 308.2 of token_embd on the CPU (pinned CUDA host memory without mmap,
# file pages of the mapping with it). mmap+mlock locks nothing more here because token_embd comes first in the
# file; what differs is the load: 4 MiB of staging buffers without mmap, 256 MiB with dio.
LOAD_MODE_NUMBERS = [
    ("auto", 3858.8, 2486.6),  # an integrated GPU has no mmap support: auto is none
    ("none", 3858.8, 2486.6),
    ("mmap", 3858.8, 2482.6),
    ("mlock", 3858.8, 2486.6),
    ("mmap+mlock", 3858.8, 2482.6),
    ("dio", 3858.8, 2738.6),
]


@pytest.mark.parametrize(("mode", "total_mib", "load_peak_mib"), LOAD_MODE_NUMBERS)
def test_load_modes_llama32_3b(tmp_path: Path, mode: str, total_mib: float, load_peak_mib: float) -> None:
    est = server_estimate(llama32_meta(tmp_path), load_mode=mode)
    layout = est["layout"]
    assert layout["effective_load_mode"] == ("none" if mode == "auto" else mode)
    assert layout["tied_embeddings"] is True
    assert layout["host_weights_bytes"] == TOKEN_EMBD_Q6_K  # the input layer stays on the CPU
    assert layout["duplicated_bytes"] == TOKEN_EMBD_Q6_K  # and is loaded again as the GPU output layer
    assert layout["locked_extra_bytes"] == 0
    assert est["weights_mib"] == 2226.6
    assert est["kv_cache_mib"] == 224.0  # 28 x 2 x 8 x 128 x 2 bytes x 2048 cells
    assert est["compute_mib"] == 128.2  # ubatch 256 x (3072 + 128256) x 4, as the server runs it
    assert est["prompt_cache_mib"] == 1024.0
    assert (est["total_mib"], est["load_peak_mib"]) == (total_mib, load_peak_mib)
    assert est["fit_mib"] == max(total_mib, load_peak_mib)
    assert layout["page_cache_bytes"] == (0 if mode == "dio" else LLAMA32_3B_Q4_K_M_SIZE)


def test_mmap_mlock_pins_what_lies_before_the_last_cpu_tensor(tmp_path: Path) -> None:
    # The lock grows from the start of the mapping to the end of each CPU tensor (llama_mlock::grow_to): with
    # token_embd after the blocks, the whole file is locked during the load, a second copy of the GPU weights.
    meta = llama32_meta(tmp_path, embd_last=True)
    locked = server_estimate(meta, load_mode="mmap+mlock")
    plain = server_estimate(meta, load_mode="none")
    layout = locked["layout"]
    gpu_before_embd = tensor_bytes(meta) - TOKEN_EMBD_Q6_K - 12288  # everything but token_embd and output_norm
    assert layout["load_locked_extra_bytes"] == meta["data_offset"] + gpu_before_embd
    assert round(layout["load_locked_extra_bytes"] / MIB, 1) == 1610.1
    assert layout["locked_extra_bytes"] == 0  # the load unmaps (and so unlocks) everything outside token_embd
    assert locked["load_peak_mib"] == 4092.7 > locked["total_mib"] == plain["total_mib"] == 3858.8
    assert plain["load_peak_mib"] == 2486.6


def test_tied_embeddings_only_when_output_weight_is_missing(tmp_path: Path) -> None:
    qwen = server_estimate(qwen7b_meta(tmp_path))
    assert qwen["layout"]["tied_embeddings"] is False and qwen["layout"]["duplicated_bytes"] == 0
    cpu = server_estimate(llama32_meta(tmp_path), backend="cpu")  # one CPU buffer: the duplicate is the same tensor
    assert cpu["layout"]["duplicated_bytes"] == 0 and cpu["layout"]["effective_load_mode"] == "none"
    assert (
        server_estimate(llama32_meta(tmp_path), backend="cpu", load_mode="auto")["layout"]["effective_load_mode"]
        == "mmap"
    )
    # llama.cpp offloads from the output layer down: -ngl 28 of 29 leaves blk.0 on the CPU, the output on the GPU
    partial = server_estimate(llama32_meta(tmp_path), n_gpu_layers=28)
    assert partial["layout"]["duplicated_bytes"] == TOKEN_EMBD_Q6_K
    assert "blk.0.attn_q.weight" in partial["layout"]["host_tensors"]
    assert server_estimate(llama32_meta(tmp_path), n_gpu_layers=0)["layout"]["duplicated_bytes"] == 0


def test_prompt_cache_budget(tmp_path: Path) -> None:
    meta = llama32_meta(tmp_path)
    assert server_estimate(meta, cache_ram_mib=0)["prompt_cache_bytes"] == 0  # --cache-ram 0: off
    assert server_estimate(meta, cache_ram_mib=8192)["prompt_cache_mib"] == 8192.0  # llama.cpp's default
    unlimited = server_estimate(meta, cache_ram_mib=-1)  # no size limit, but at most n_ctx tokens of slot state
    assert unlimited["prompt_cache_bytes"] == unlimited["kv_cache_bytes"] == 234_881_024
    with pytest.raises(ValueError):
        server_estimate(meta, cache_ram_mib=-2)


def test_ubatch_as_the_server_runs_it(tmp_path: Path) -> None:
    meta = llama32_meta(tmp_path)
    assert server_estimate(meta, ubatch=512)["compute_bytes"] == 2 * server_estimate(meta)["compute_bytes"]


def test_draft_model_is_added(tmp_path: Path) -> None:
    draft_path = tiny.write_tiny_llama_gguf(tmp_path / "draft.gguf", n_layer=2)
    draft_meta = read_gguf_metadata(draft_path)
    draft = estimate_memory(draft_meta, draft_meta["file_size"], 2048, 8, ubatch=256, cache_ram_mib=0, overhead_bytes=0)
    assert draft["total_bytes"] == draft["weights_bytes"] + draft["kv_cache_bytes"] + draft["compute_bytes"]
    meta = llama32_meta(tmp_path)
    alone, with_draft = server_estimate(meta), server_estimate(meta, draft=draft)
    assert with_draft["draft_bytes"] == draft["total_bytes"]
    assert with_draft["total_bytes"] == alone["total_bytes"] + draft["total_bytes"]
    unlimited = server_estimate(meta, draft=draft, cache_ram_mib=-1)  # the cached slot state includes the draft's
    assert unlimited["prompt_cache_bytes"] == alone["kv_cache_bytes"] + draft["kv_cache_bytes"]


def test_numbers_for_the_default_model_and_qwen25_7b_on_orin_nx_16gb(tmp_path: Path) -> None:
    available_mib = ORIN_NX_16GB_MEMTOTAL_MB - 2048
    llama = server_estimate(llama32_meta(tmp_path))
    # KV 224 + compute 128.2 + tied embeddings 308.2 (in the weights) + prompt cache 1,024 -> 3,858.8 of 13,240
    assert (llama["kv_cache_mib"], llama["compute_mib"], llama["prompt_cache_mib"]) == (224.0, 128.2, 1024.0)
    assert round(llama["layout"]["duplicated_bytes"] / MIB, 1) == 308.2
    assert llama["total_mib"] == 3858.8 < available_mib
    qwen_meta = qwen7b_meta(tmp_path)
    qwen = server_estimate(qwen_meta)
    # KV 112 (4 KV heads) + compute 152 (vocab 152064) + no duplicate + prompt cache 1,024 -> 6,004.4
    assert (qwen["kv_cache_mib"], qwen["compute_mib"], qwen["layout"]["duplicated_bytes"]) == (112.0, 152.0, 0)
    assert qwen["weights_mib"] == 4460.4
    assert qwen["total_mib"] == 6004.4 < available_mib
    # With llama.cpp's own prompt-cache default (8192 MiB) the 7B model leaves 68 MiB of the 13,240
    default_cache = server_estimate(qwen_meta, cache_ram_mib=8192)
    assert default_cache["total_mib"] == 13172.4
    assert available_mib - default_cache["total_mib"] < 100
    # the old estimate (file size, ubatch 512, no prompt cache) said 5,138 MiB
    old = estimate_memory(qwen_meta, QWEN25_7B_Q4_K_M_SIZE, 2048, 8, ubatch=512)
    assert round((QWEN25_7B_Q4_K_M_SIZE + old["kv_cache_bytes"] + old["compute_bytes"] + 256 * MIB) / MIB) == 5138


def test_split_names_are_recognised() -> None:
    from ansible_collections.jetson_llm.fleet.plugins.module_utils.gguf import split_shard

    assert split_shard("Qwen2.5-72B-Instruct-Q4_K_M-00001-of-00012.gguf") == (1, 12)
    assert split_shard("sub/dir/model-00002-of-00002.GGUF") == (2, 2)
    assert split_shard("Llama-3.2-3B-Instruct-Q4_K_M.gguf") is None


def test_fit_with_the_server_settings(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny.write_gguf_header(
        tmp_path / "3b.gguf", "llama", LLAMA32_3B, file_size=LLAMA32_3B_Q4_K_M_SIZE, tensors=LLAMA32_3B_TENSORS
    )
    args = {
        "path": str(path), "ctx_size": 2048, "parallel": 8, "ubatch": 256, "load_mode": "none",
        "cache_ram_mib": 1024, "n_gpu_layers": "all", "memtotal_mb": ORIN_NX_16GB_MEMTOTAL_MB,
    }  # fmt: skip
    result = fit(args, capsys, monkeypatch)
    assert result["fits"] is True and result["estimate"]["total_mib"] == 3858.8
    tight = fit({**args, "memtotal_mb": 5000}, capsys, monkeypatch)  # 2,952 MiB available
    assert tight["failed"] is True
    msg = " ".join(tight["msg"].split())
    assert "tied embeddings loaded twice 308 MiB" in msg
    assert "prompt cache 1,024 MiB" in msg and "a smaller prompt cache (cache_ram_mib 1024, 0 turns it off)" in msg
    assert "ubatch 256" in msg and "load mode none" in msg
    assert fit({**args, "memtotal_mb": 5000, "cache_ram_mib": 0}, capsys, monkeypatch)["fits"] is True
    assert fit({**args, "n_gpu_layers": "many"}, capsys, monkeypatch)["failed"] is True


def test_fit_counts_the_draft(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny.write_gguf_header(
        tmp_path / "3b.gguf", "llama", LLAMA32_3B, file_size=LLAMA32_3B_Q4_K_M_SIZE, tensors=LLAMA32_3B_TENSORS
    )
    base = {"path": str(path), "ctx_size": 2048, "parallel": 8, "ubatch": 256, "cache_ram_mib": 0, "memtotal_mb": 6000}
    draft = {"total_bytes": 1024 * MIB, "kv_cache_bytes": 64 * MIB}
    alone = fit(base, capsys, monkeypatch)
    both = fit({**base, "draft_estimate": draft}, capsys, monkeypatch)
    assert both["estimate"]["total_bytes"] == alone["estimate"]["total_bytes"] + 1024 * MIB
    assert both["max_ctx_size"] < alone["max_ctx_size"]
    refused = fit({**base, "draft_estimate": draft, "memtotal_mb": 5500}, capsys, monkeypatch)
    assert refused["failed"] is True and "+ draft model 1,024 MiB" in refused["msg"]
    assert fit({**base, "draft_estimate": {"x": 1}}, capsys, monkeypatch)["failed"] is True


def test_fit_refuses_a_split_gguf(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    meta: dict[str, Any] = {**LLAMA32_3B, "split.no": 0, "split.count": 3}
    meta_types = tiny.write_gguf_header(tmp_path / "m-00001-of-00003.gguf", "llama", meta)
    result = fit({"path": str(meta_types), "memtotal_mb": ORIN_NX_16GB_MEMTOTAL_MB}, capsys, monkeypatch)
    assert result["failed"] is True
    assert "shard 1 of a split GGUF (3 files)" in result["msg"] and "llama-gguf-split --merge" in result["msg"]
