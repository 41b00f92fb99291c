"""`jetson-fleet logs`: `docker logs` of the server container on one host."""

from __future__ import annotations

import sys

from jetson_fleet.inventory import Host
from jetson_fleet.ssh import PRELUDE, connect, describe_error, script_command

# Parameters: container name, lines, "--follow" or "".
LOGS_SCRIPT = PRELUDE + 'exec $SUDO docker logs --tail "$2" $3 "$1"\n'


def show_logs(host: Host, tail: int, follow: bool, timeout: float) -> int:
    command = script_command(LOGS_SCRIPT, host.container, int(tail), "--follow" if follow else "")
    try:
        with connect(host, timeout) as conn:
            # A pty for --follow, so Ctrl-C reaches `docker logs` on the device.
            result = conn.run(command, warn=True, pty=follow, in_stream=None if follow else False)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        print(f"{host.name}: unreachable: {describe_error(exc)}", file=sys.stderr)
        return 1
    return 0 if result.exited == 0 else 1
