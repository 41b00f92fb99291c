"""`jetson-fleet restart`: a rolling restart behind the llama_server role's health gate (tasks/gate.yml).

Per host, one SSH session runs RESTART_SCRIPT: `systemctl restart` of the unit, /health polled until 200, Docker's
HEALTHCHECK until `healthy` (each within llama_server_health_timeout, polled every llama_server_health_delay
seconds), then one chat completion of llama_server_smoke_prompt (llama_server_smoke_max_tokens, within
llama_server_smoke_timeout), and the release record. gate_result() judges the completion as the role does (a
message, usage.completion_tokens > 0, timings.predicted_n) and, when the release asked for CUDA, that its
record says every layer on CUDA.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from jetson_fleet.inventory import Host
from jetson_fleet.ssh import PRELUDE, connect, describe_error, first_line, script_command, split_sections

# Parameters: url, container, config dir, unit, seconds per wait, poll delay, completion timeout, request body.
RESTART_SCRIPT = (
    PRELUDE
    + r"""
url="$1"; name="$2"; conf="$3"; unit="$4"; limit="$5"; delay="$6"; smoke_timeout="$7"; body="$8"
section restart
$SUDO systemctl restart "$unit" 2>&1 || { echo "systemctl restart $unit failed"; exit 3; }
start=$(date +%s)
section health
t0=$(date +%s); code=000
until code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$url/health"); [ "$code" = 200 ]; do
    if [ $(( $(date +%s) - t0 )) -ge "$limit" ]; then
        echo "/health did not answer 200 within ${limit}s (last: HTTP $code)"; exit 4
    fi
    sleep "$delay"
done
echo "HTTP 200"
section container
t0=$(date +%s)
until state=$($SUDO docker inspect --format \
        '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$name" 2>&1); \
        [ "$state" = "running healthy" ]; do
    if [ $(( $(date +%s) - t0 )) -ge "$limit" ]; then
        echo "Docker did not report $name healthy within ${limit}s (last: $state)"; exit 5
    fi
    sleep "$delay"
done
echo "$state"
section ready; echo $(( $(date +%s) - start ))
section completion
{ $SUDO cat "$conf/api-key" 2>/dev/null | sed -n '1s/^/Authorization: Bearer /p'; } \
    | curl -sS -m "$smoke_timeout" -H @- -H 'Content-Type: application/json' --data-binary "$body" \
        -w '\nhttp_code=%{http_code}\n' "$url/v1/chat/completions" 2>&1
section release; $SUDO cat "$conf/release.json" 2>&1
section end
"""
)


def backend_problem(release: dict[str, Any]) -> str | None:
    """Why the release's record fails the GPU requirement (backend.requested == "cuda"), None when it does not."""
    backend = release.get("backend")
    if not isinstance(backend, dict) or backend.get("requested") != "cuda":
        return None
    name, gpu_layers, layers = backend.get("name"), backend.get("gpu_layers"), backend.get("layers")
    if name == "CUDA" and isinstance(layers, int) and gpu_layers == layers:
        return None
    return (
        f"release {release.get('id')} asked for CUDA but its record says {name or 'no backend'} with "
        f"{gpu_layers if gpu_layers is not None else '?'}/{layers if layers is not None else '?'} layers on the GPU"
    )


def gate_result(output: str) -> tuple[bool, str]:
    """RESTART_SCRIPT's output -> (passed, one line saying what passed or failed)."""
    sections = split_sections(output)
    if "end" not in sections:
        last = next((text for text in reversed(sections.values()) if text), "")
        return False, first_line(last, 200) or "the restart script stopped without a word"
    text = sections.get("completion", "")
    lines = text.splitlines()
    code = lines[-1].removeprefix("http_code=") if lines and lines[-1].startswith("http_code=") else "?"
    body = "\n".join(line for line in lines if not line.startswith("http_code="))
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if code != "200" or not isinstance(answer, dict):
        return False, f"chat completion: HTTP {code} {first_line(body, 200)}".rstrip()
    tokens = (answer.get("usage") or {}).get("completion_tokens")
    choices = answer.get("choices") or [{}]
    complete = bool(choices[0].get("message")) and isinstance(tokens, int) and tokens > 0
    if not complete or "predicted_n" not in (answer.get("timings") or {}):
        return False, f"the chat completion came without a completion, usage or timings: {body[:400]}"
    try:
        release = json.loads(sections.get("release", ""))
    except ValueError:
        release = {}
    problem = backend_problem(release if isinstance(release, dict) else {})
    if problem:
        return False, problem
    backend = release.get("backend") if isinstance(release, dict) else None
    on = f", {backend['name']} {backend.get('gpu_layers')}/{backend.get('layers')} layers" if backend else ""
    return True, (
        f"healthy after {sections.get('ready', '?')}s (/health 200, container healthy, "
        f"completion of {tokens} tokens{on})"
    )


def restart_host(host: Host, health_timeout: float | None, connect_timeout: float) -> tuple[bool, str]:
    settings = host.settings
    limit = int(health_timeout if health_timeout is not None else settings.health_timeout)
    body = {
        "messages": [{"role": "user", "content": settings.smoke_prompt}],
        "max_tokens": settings.smoke_max_tokens,
        "temperature": 0,
    }
    command = script_command(
        RESTART_SCRIPT, f"http://{settings.address}:{settings.port}", settings.container, settings.config_dir,
        settings.unit, limit, settings.health_delay, settings.smoke_timeout, json.dumps(body),
    )  # fmt: skip
    try:
        with connect(host, connect_timeout) as conn:
            wall = 2 * limit + settings.smoke_timeout + 60
            result = conn.run(command, hide=True, warn=True, timeout=wall, in_stream=False)
    except Exception as exc:
        return False, f"unreachable: {describe_error(exc)}"
    return gate_result(result.stdout + ("\n" + result.stderr if result.exited else ""))


def rolling_restart(hosts: list[Host], health_timeout: float | None, connect_timeout: float) -> int:
    """One host at a time; the first failure stops the rollout and names the hosts left alone."""
    for index, host in enumerate(hosts):
        started = time.monotonic()
        print(f"{host.name}: restarting {host.settings.unit} ...", flush=True)
        ok, message = restart_host(host, health_timeout, connect_timeout)
        if not ok:
            rest = [h.name for h in hosts[index + 1 :]]
            print(f"{host.name}: FAILED: {message}", file=sys.stderr)
            if rest:
                print(f"stopped; not restarted: {', '.join(rest)}", file=sys.stderr)
            return 1
        print(f"{host.name}: {message} ({time.monotonic() - started:.0f}s in all)", flush=True)
    return 0
