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


def llama32_meta(tmp_path: Path) -> dict[str, Any]:
    path = tiny.write_gguf_header(tmp_path / "3b.gguf", "llama", LLAMA32_3B, file_size=LLAMA32_3B_Q4_K_M_SIZE)
    return read_gguf_metadata(path)


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
    assert est["total_bytes"] == LLAMA32_3B_Q4_K_M_SIZE + 234_881_024 + est["compute_bytes"] + 256 * MIB
    assert est["n_ctx_total"] == est["n_ctx_per_slot"] == 2048
    assert est["warnings"] == []


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
