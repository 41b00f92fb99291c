"""jetson-llm-fleet tooling on the controller: benchmark reports (report), the on-device probe (probe) and the
Fabric fleet CLI (cli, command `jetson-fleet`)."""

__version__ = "0.1.0"
