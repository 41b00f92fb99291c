"""Benchmark reports (jetson_fleet/report/, contracts in jetson_fleet/schemas): the v1 host schema, the fleet
report rendered from the fixed fixtures in tests/fixtures/benchmark (3 hosts; jetson-03 runs in 15W and misses two
targets), the gate (and its GPU offload check) and the comparison with an older run."""

from __future__ import annotations

import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from jetson_fleet import report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmark"
HOSTS = ["jetson-01", "jetson-02", "jetson-03"]


def fixture(host: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{host}.json").read_text())


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "reports" / "20261002T081400Z"
    directory.mkdir(parents=True)
    for host in HOSTS:
        shutil.copy(FIXTURES / f"{host}.json", directory)
    return directory


def write(directory: Path, data: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{data['host']}.json").write_text(json.dumps(data))


class Page(HTMLParser):
    """Elements of the HTML page as (tag, attributes, enclosing svg id)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], str | None]] = []
        self.headings: list[str] = []
        self._svg: str | None = None
        self._heading = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "svg":
            self._svg = attributes.get("id")
        self.elements.append((tag, attributes, self._svg))
        self._heading = tag in ("h1", "h2")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None
        self._heading = False

    def handle_data(self, data: str) -> None:
        if self._heading and data.strip():
            self.headings.append(data.strip())

    def find(self, tag: str, svg: str | None = None, cls: str | None = None) -> list[dict[str, str]]:
        return [
            attrs
            for t, attrs, in_svg in self.elements
            if t == tag and (svg is None or in_svg == svg) and (cls is None or cls in attrs.get("class", "").split())
        ]


# ------------------------------------------------------------------------------------------- schema


@pytest.mark.parametrize("host", HOSTS)
def test_fixtures_are_valid_v1_reports(host: str) -> None:
    assert report.validate(fixture(host)) == []


def test_schema_dict_is_real_json_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    for host in HOSTS:
        jsonschema.validate(fixture(host), report.HOST_SCHEMA)
    broken = fixture("jetson-01")
    del broken["probes"]["burst"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, report.HOST_SCHEMA)


def test_validation_names_each_missing_or_mistyped_field() -> None:
    data = fixture("jetson-01")
    data["schema"] = "jetson-llm-fleet/benchmark/v0"
    data["timestamp"] = "2026-10-02 08:14:30"  # no time zone
    del data["probes"]["greeting"]["latency_s"]
    data["llama_bench"]["tg_tps"] = "fast"
    del data["release"]["model"]["sha256"]
    data["settings"]["threads"] = 8.5
    data["probes"]["burst"]["per_request"][2]["ttft_s"] = None

    errors = report.validate(data)

    assert errors == [
        "schema: expected 'jetson-llm-fleet/benchmark/v1', got 'jetson-llm-fleet/benchmark/v0'",
        "timestamp: not an ISO 8601 date-time with a time zone: '2026-10-02 08:14:30'",
        "release.model.sha256: missing",
        "settings.threads: expected integer, got float 8.5",
        "llama_bench.tg_tps: expected number or null, got str 'fast'",
        "probes.greeting.latency_s: missing",
        "probes.burst.per_request[2].ttft_s: expected number, got NoneType None",
    ]
    assert report.validate([]) == ["(report): expected object, got list []"]


def test_the_schema_files_are_valid_json_schemas_and_the_summary_follows_its_own(run_dir: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(report.HOST_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(report.FLEET_SCHEMA)
    assert report.HOST_SCHEMA["$id"] == report.SCHEMA_ID == "jetson-llm-fleet/benchmark/v1"

    report.main(["render", "--dir", str(run_dir), "--compare", str(run_dir)])

    summary = json.loads((run_dir / "fleet.json").read_text())
    jsonschema.validate(summary, report.FLEET_SCHEMA)
    assert report.validate(summary, report.FLEET_SCHEMA_ID) == []
    del summary["hosts"]["jetson-01"]["checks"][0]["limit"]
    assert report.validate(summary, report.FLEET_SCHEMA_ID) == ["hosts.jetson-01.checks[0].limit: missing"]


def test_a_mistyped_backend_is_named() -> None:
    data = fixture("jetson-01")
    data["release"]["backend"] = {"requested": "cuda", "name": "CUDA", "gpu_layers": "all", "layers": 29}

    assert report.validate(data) == ["release.backend.gpu_layers: expected integer, got str 'all'"]


def test_a_broken_host_file_is_named_when_rendering(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fixture("jetson-02")
    del data["memory"]
    write(run_dir, data)

    assert report.main(["render", "--dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir / 'jetson-02.json'}: not a jetson-llm-fleet/benchmark/v1 host report" in err
    assert "memory: missing" in err


def test_an_empty_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["render", "--dir", str(tmp_path)]) == 2
    assert f"no host reports (*.json) in {tmp_path}" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- build


def raw_parts() -> dict[str, Any]:
    """What the playbook hands to `report build`: the device's release record, facts, outputs, llama-bench and probe."""
    base = fixture("jetson-01")
    release = {**base["release"], "args": ["--ctx-size", "2048"], "settings": base["settings"]}
    show = "cpu0: Online=1 Governor=schedutil MinFreq=1984000 MaxFreq=1984000 CurrentFreq=1984000\n"
    show += "cpu7: Online=0\nGPU MinFreq=1173000000 MaxFreq=1173000000 CurrentFreq=1173000000\n"
    show += "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n"
    runs = [{**run, "samples_ns": [1], "cpu_info": "ARMv8"} for run in base["llama_bench"]["runs"]]
    return {
        "host": "jetson-09",
        "timestamp": "2026-10-02T09:00:00Z",
        "release": release,
        "device": {
            "l4t": "36.4.3",
            "jetpack": "6.2",
            "module": "p3767-0000",
            "nvpmodel_output": "NV Power Mode: MAXN_SUPER\n0\n",
            "clocks_output": show,
        },
        "llama_bench": runs,
        "probe": {"probes": base["probes"], "memory": base["memory"], "errors": []},
        "targets": {"generation_tps_min": 30, "short_latency_s_max": None},
    }


def test_build_makes_a_valid_report_from_the_raw_parts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(raw_parts()))
    out = tmp_path / "run" / "jetson-09.json"

    assert report.main(["build", "--raw", str(raw), "--out", str(out)]) == 0

    built = json.loads(out.read_text())
    assert report.validate(built) == []
    assert built["device"]["power_mode"] == "MAXN_SUPER"
    assert built["device"]["clocks_pinned"] is True
    assert built["llama_bench"]["pp_tokens"] == 512 and built["llama_bench"]["tg_tokens"] == 128
    assert built["llama_bench"]["tg_tps"] == pytest.approx(27.511, abs=0.01)
    assert "samples_ns" not in built["llama_bench"]["runs"][0]
    # generation target raised to 30 tok/s for this host; the latency target keeps its default
    assert built["targets"]["generation_tps_min"] == 30 and built["targets"]["short_latency_s_max"] == 2
    assert built["verdict"]["pass"] is False
    assert [c["name"] for c in built["verdict"]["checks"] if not c["pass"]] == ["generation"]
    assert "jetson-09: FAIL, written to" in capsys.readouterr().out


def test_build_rejects_parts_that_do_not_make_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = raw_parts()
    del parts["release"]["image"]
    parts["release"]["settings"] = {"ctx_size": 2048}
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps(parts))

    assert report.main(["build", "--raw", str(raw), "--out", str(tmp_path / "x.json")]) == 2

    err = capsys.readouterr().err
    assert "the benchmark of jetson-09 does not make a valid report" in err
    assert "release.image: expected string, got NoneType None" in err
    assert "settings.threads: missing" in err
    assert not (tmp_path / "x.json").exists()


CUDA = {"requested": "cuda", "name": "CUDA", "gpu_layers": 29, "layers": 29, "device": "CUDA0"}


def test_build_carries_the_backend_and_gates_a_cuda_release_on_it(tmp_path: Path) -> None:
    def built(backend: dict[str, Any] | None) -> dict[str, Any]:
        parts = raw_parts()
        parts["targets"] = None
        if backend is not None:
            parts["release"]["backend"] = backend
        raw = tmp_path / "raw.json"
        raw.write_text(json.dumps(parts))
        assert report.main(["build", "--raw", str(raw), "--out", str(tmp_path / "out.json")]) == 0
        return dict(json.loads((tmp_path / "out.json").read_text()))

    on_gpu = built(CUDA)
    assert on_gpu["release"]["backend"] == CUDA
    assert on_gpu["verdict"]["pass"] is True
    assert [c for c in on_gpu["verdict"]["checks"] if c["name"] == "gpu_offload"] == [
        {"name": "gpu_offload", "metric": "release.backend.gpu_layers", "value": 29.0, "op": ">=", "limit": 29.0,
         "unit": "layers on CUDA", "pass": True},
    ]  # fmt: skip
    fell_back = built({**CUDA, "name": "CPU", "gpu_layers": 0})
    assert fell_back["verdict"]["pass"] is False
    assert [c["name"] for c in fell_back["verdict"]["checks"] if not c["pass"]] == ["gpu_offload"]
    assert [c["value"] for c in built({**CUDA, "gpu_layers": 28})["verdict"]["checks"] if not c["pass"]] == [28.0]
    # a CPU release, and a record older than the field: nothing to gate
    assert "gpu_offload" not in [
        c["name"] for c in built({**CUDA, "requested": "cpu", "name": "CPU"})["verdict"]["checks"]
    ]
    old = built(None)
    assert "backend" not in old["release"] and old["verdict"]["pass"] is True


def test_backend_column_and_the_gpu_offload_gate(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for host, backend in (("jetson-01", CUDA), ("jetson-02", {**CUDA, "name": "CPU", "gpu_layers": 0})):
        data = fixture(host)
        data["release"]["backend"] = backend
        write(run_dir, data)  # jetson-03: a record without the field

    assert report.main(["render", "--dir", str(run_dir), "--gate"]) == 1

    err = capsys.readouterr().err
    line = "jetson-02: gpu_offload 0 layers on CUDA, target >= 29 layers on CUDA (release.backend.gpu_layers)"
    assert line in err
    assert "jetson-01" not in err
    markdown = (run_dir / "fleet.md").read_text().splitlines()
    header = next(line for line in markdown if line.startswith("| host | verdict"))
    column = [cell.strip() for cell in header.split("|")].index("backend (GPU layers)")
    results = [line for line in markdown if line.startswith("| jetson-") and ("pass" in line or "FAIL" in line)]
    assert [(row.split("|")[2].strip(), row.split("|")[column].strip()) for row in results] == [
        ("pass", "CUDA 29/29"), ("**FAIL**", "CPU 0/29"), ("**FAIL**", "?"),
    ]  # fmt: skip
    rows = table((run_dir / "fleet.html").read_text(), "results-table")
    assert [row["backend (GPU layers)"] for row in rows] == ["CUDA 29/29", "CPU 0/29", "?"]
    summary = json.loads((run_dir / "fleet.json").read_text())
    assert summary["hosts"]["jetson-02"]["pass"] is False
    assert summary["hosts"]["jetson-01"]["backend"] == CUDA and summary["hosts"]["jetson-03"]["backend"] is None


# ------------------------------------------------------------------------------------------- render


def test_markdown_report(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["render", "--dir", str(run_dir)]) == 0  # no --gate: failures are reported, not fatal

    markdown = (run_dir / "fleet.md").read_text()
    assert markdown in capsys.readouterr().out
    lines = markdown.splitlines()
    headings = [line for line in lines if line.startswith("#")]
    assert headings == [
        "# Fleet benchmark 20261002T081400Z",
        "## Targets",
        "## Results",
        "## Failed targets",
        "## Devices and settings",
    ]
    assert "**Verdict: FAIL**" in markdown
    # host -> cells of its last table row (the devices and settings table)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines
            if line.startswith("| jetson-")}  # fmt: skip
    results = [line for line in lines if line.startswith("| jetson-") and ("pass" in line or "FAIL" in line)]
    assert [line.split("|")[2].strip() for line in results] == ["pass", "pass", "**FAIL**"]
    assert results[2].split("|")[3].strip() == "14.1"  # tg128 tok/s of jetson-03
    assert rows["jetson-03"][2] == "15W" and rows["jetson-03"][3] == "no"  # devices table: power, clocks
    assert "| generation tokens/s (llama-bench tg128) | >= 20.0 tok/s |" in markdown
    assert "- jetson-03: generation 14.1 tok/s, target >= 20 tok/s (llama_bench.tg_tps)" in lines
    assert "- jetson-03: tool_call latency 2.631 s, target < 2 s (probes.tool_call.latency_s)" in lines


def test_html_report_is_one_self_contained_page_with_charts(run_dir: Path) -> None:
    report.main(["render", "--dir", str(run_dir)])
    text = (run_dir / "fleet.html").read_text()
    page = Page(text)

    assert page.headings[:3] == ["Fleet benchmark 20261002T081400Z", "Targets", "Results"]
    assert "Regressions" not in " ".join(page.headings)  # no comparison asked for
    # self-contained: no scripts, stylesheets, images, fonts or links to load
    assert not page.find("script") and not page.find("link") and not page.find("img")
    assert not [attrs for _, attrs, _ in page.elements if "src" in attrs or "href" in attrs]
    assert "http://" not in text and "https://" not in text and "url(" not in text
    # one bar per host in the generation chart, the failing host marked, the target line at 20 tok/s
    bars = page.find("rect", svg="chart-generation", cls="bar")
    assert [bar["data-host"] for bar in bars] == HOSTS
    assert [bar["data-host"] for bar in bars if "fail" in bar["class"].split()] == ["jetson-03"]
    assert [line["data-value"] for line in page.find("line", svg="chart-generation", cls="target")] == ["20"]
    # latency: one bar per host and query type, the target line at 2 s; memory: one bar per host, 4096 MB
    latency = page.find("rect", svg="chart-latency", cls="bar")
    assert len(latency) == 3 * len(HOSTS)
    assert {(b["data-host"], b["data-series"]) for b in latency if "fail" in b["class"]} == {("jetson-03", "tool_call")}
    assert page.find("line", svg="chart-latency", cls="target")[0]["data-value"] == "2"
    assert [b["data-host"] for b in page.find("rect", svg="chart-memory", cls="bar")] == HOSTS
    assert page.find("line", svg="chart-memory", cls="target")[0]["data-value"] == "4096"
    # the pass/fail table: one row per host
    rows = [attrs for attrs in page.find("tr") if "data-host" in attrs]
    assert [(r["data-host"], r["class"]) for r in rows] == [
        ("jetson-01", "pass"),
        ("jetson-02", "pass"),
        ("jetson-03", "fail"),
    ]


def test_host_names_are_escaped_in_html(run_dir: Path) -> None:
    data = fixture("jetson-01")
    data["host"] = "<b>evil</b>"
    (run_dir / "jetson-01.json").write_text(json.dumps(data))

    report.main(["render", "--dir", str(run_dir)])

    text = (run_dir / "fleet.html").read_text()
    assert "<b>evil</b>" not in text
    assert "&lt;b&gt;evil&lt;/b&gt;" in text


def test_fleet_json_summary(run_dir: Path) -> None:
    report.main(["render", "--dir", str(run_dir)])
    summary = json.loads((run_dir / "fleet.json").read_text())

    assert summary["schema"] == "jetson-llm-fleet/fleet/v1"
    assert summary["pass"] is False
    assert {host: entry["pass"] for host, entry in summary["hosts"].items()} == {
        "jetson-01": True, "jetson-02": True, "jetson-03": False,
    }  # fmt: skip
    assert summary["hosts"]["jetson-03"]["generation_tps"] == pytest.approx(14.104)
    assert summary["comparison"] is None


# ------------------------------------------------------------------------------------------- gate


def test_gate_fails_naming_host_metric_value_and_target(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main(["render", "--dir", str(run_dir), "--gate"]) == 1

    err = capsys.readouterr().err
    assert "benchmark gate FAILED:" in err
    assert "jetson-03: generation 14.1 tok/s, target >= 20 tok/s (llama_bench.tg_tps)" in err
    assert "jetson-03: tool_call latency 2.631 s, target < 2 s (probes.tool_call.latency_s)" in err
    assert "jetson-01" not in err and "jetson-02" not in err
    assert (run_dir / "fleet.html").exists()  # the reports are written before the gate decides


def test_gate_passes_when_every_host_meets_the_targets(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "jetson-03.json").unlink()

    assert report.main(["render", "--dir", str(run_dir), "--gate"]) == 0
    assert "**Verdict: PASS**" in capsys.readouterr().out


def test_a_missing_measurement_fails_its_target(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fixture("jetson-01")
    data["memory"]["ram_used_mb_max"] = None  # no tegrastats samples
    write(run_dir, data)

    assert report.main(["render", "--dir", str(run_dir), "--gate"]) == 1
    assert "jetson-01: memory not measured, target < 4096 MB (memory.ram_used_mb_max)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- comparison


def test_regressions_against_an_older_run(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    older = run_dir.parent / "20261001T080000Z"
    previous = {host: fixture(host) for host in HOSTS}
    previous["jetson-03"]["llama_bench"]["tg_tps"] = 26.0  # 26.0 -> 14.104: -45.8 %
    previous["jetson-01"]["probes"]["greeting"]["latency_s"] = 0.40  # 0.40 -> 0.5519 s: +38 %
    previous["jetson-02"]["llama_bench"]["tg_tps"] *= 1.05  # -4.8 %: under the 10 % threshold
    previous["jetson-01"]["release"]["id"] = "1f00aa2bc3d4"
    extra = copy.deepcopy(previous["jetson-02"])
    extra["host"] = "jetson-04"
    for data in [*previous.values(), extra]:
        write(older, data)

    assert report.main(["render", "--dir", str(run_dir), "--compare", str(older)]) == 0

    regressions = report.compare(report.load_dir(run_dir), report.load_dir(older), 10)
    assert [(r.host, r.metric, r.change_pct) for r in regressions] == [
        ("jetson-01", "greeting latency s", 38.0),
        ("jetson-03", "generation tok/s (llama-bench tg)", -45.8),
    ]
    markdown = (run_dir / "fleet.md").read_text()
    assert "## Regressions against 20261001T080000Z (worse by more than 10.0 %)" in markdown
    assert "| jetson-03 | generation tok/s (llama-bench tg) | 26.00 | 14.10 | -45.8 % |" in markdown
    assert "- jetson-01: release changed 1f00aa2bc3d4 -> 9b2e41c07a55" in markdown
    assert "- not in this run: jetson-04" in markdown
    page = Page((run_dir / "fleet.html").read_text())
    assert any(h.startswith("Regressions against 20261001T080000Z") for h in page.headings)
    assert [a for t, a, _ in page.elements if t == "table" and a.get("id") == "regressions-table"]
    summary = json.loads((run_dir / "fleet.json").read_text())
    assert [r["host"] for r in summary["comparison"]["regressions"]] == ["jetson-01", "jetson-03"]
    assert summary["comparison"]["missing_hosts"] == ["jetson-04"]
    # a stricter threshold finds the 4.8 % drop too
    strict = report.compare(report.load_dir(run_dir), report.load_dir(older), 4)
    assert ("jetson-02", "generation tok/s (llama-bench tg)") in {(r.host, r.metric) for r in strict}


def test_no_regressions_is_said(run_dir: Path) -> None:
    report.main(["render", "--dir", str(run_dir), "--compare", str(run_dir)])

    assert "No regressions." in (run_dir / "fleet.md").read_text()


def table(text: str, table_id: str) -> list[dict[str, str]]:
    """The rows of an HTML table as {header: cell text}."""
    section = text.split(f'<table id="{table_id}">', 1)[1].split("</table>", 1)[0]
    rows = [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", section, re.S)
    ]
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def test_html_results_table_puts_each_latency_under_its_query_type(run_dir: Path) -> None:
    report.main(["render", "--dir", str(run_dir)])
    rows = table((run_dir / "fleet.html").read_text(), "results-table")

    assert [row["host"] for row in rows] == HOSTS
    for row in rows:
        probes = fixture(row["host"])["probes"]
        for query in ("greeting", "coding", "tool_call"):
            assert row[f"{query} s"] == f"{probes[query]['latency_s']:.2f}", (row["host"], query)
