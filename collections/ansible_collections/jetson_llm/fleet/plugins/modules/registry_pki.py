#!/usr/bin/python
# Copyright: jetson-llm-fleet developers
# Apache License 2.0 (see galaxy.yml)
"""The fleet registry's private CA and server certificate, made once on the controller and reused."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: registry_pki
short_description: Keep the fleet registry's CA and TLS server certificate in a directory on the controller
version_added: "0.1.0"
description:
  - Makes, in O(path), a private CA (C(ca.key), C(ca.crt)) and a server key and certificate for the fleet registry
    (C(server.key), C(server.crt)) signed by that CA, with the registry's O(names) as subject alternative names
    (IP addresses as IP entries, anything else as DNS names).
  - Existing files are reused. The server certificate is issued again when its names differ from O(names), when it
    was not signed by the CA in O(path), or when it expires within O(renew_days) days. The CA is never replaced
    while its key and certificate are there (every device trusts it).
  - Every file is written with mode 0600 (the certificates too, since the directory is the fleet's secret store),
    the directory with 0700. Uses the C(cryptography) library (a dependency of ansible-core).
author:
  - jetson-llm-fleet developers (!UNKNOWN)
options:
  path:
    description: Directory of the CA and the server certificate (created when missing).
    type: path
    required: true
  names:
    description: Addresses and host names the devices use to reach the registry (the first is the common name).
    type: list
    elements: str
    required: true
  days:
    description: Validity of a newly issued server certificate, in days (the CA gets ten times as long).
    type: int
    default: 825
  renew_days:
    description: Issue the server certificate again when it expires within this many days.
    type: int
    default: 30
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reports what would be made; writes nothing.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
"""

EXAMPLES = r"""
- name: Make the registry's CA and certificate
  jetson_llm.fleet.registry_pki:
    path: ~/.config/jetson-llm-fleet/registry
    names: [10.0.4.11, registry.lab.example]
  delegate_to: localhost
"""

RETURN = r"""
ca_file:
  description: Path of the CA certificate (PEM) that devices trust.
  returned: success
  type: str
cert_file:
  description: Path of the server certificate (PEM).
  returned: success
  type: str
key_file:
  description: Path of the server key (PEM, mode 0600).
  returned: success
  type: str
made:
  description: What was made in this run (C(ca), C(server)); empty when everything was reused.
  returned: success
  type: list
  elements: str
"""

import datetime
import ipaddress
import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.jetson_llm.fleet.plugins.module_utils.result import done, fail

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - ansible-core depends on cryptography
    HAS_CRYPTOGRAPHY = False


def _san(names: list[str]) -> list[Any]:
    entries: list[Any] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _write(path: str, data: bytes, mode: int) -> None:
    partial = path + ".partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(partial, mode)
    os.replace(partial, path)


def _key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _make_ca(now: datetime.datetime, days: int) -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jetson-llm-fleet registry CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days * 10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server(ca_key: Any, ca_cert: Any, names: list[str], now: datetime.datetime, days: int) -> tuple[Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _server_is_current(cert: Any, ca_cert: Any, names: list[str], now: datetime.datetime, renew_days: int) -> bool:
    try:
        ca_cert.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except Exception:  # any verification error means "not signed by this CA"
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    expires = cert.not_valid_after_utc
    return have == set(names) and expires - now > datetime.timedelta(days=renew_days)


def run(path: str, names: list[str], days: int, renew_days: int, check: bool) -> dict[str, Any]:
    files = {k: os.path.join(path, f) for k, f in
             {"ca_key": "ca.key", "ca": "ca.crt", "key": "server.key", "cert": "server.crt"}.items()}  # fmt: skip
    now = datetime.datetime.now(datetime.timezone.utc)
    made: list[str] = []
    ca_key = ca_cert = None
    if os.path.exists(files["ca_key"]) and os.path.exists(files["ca"]):
        with open(files["ca_key"], "rb") as handle:
            ca_key = serialization.load_pem_private_key(handle.read(), password=None)
        with open(files["ca"], "rb") as handle:
            ca_cert = x509.load_pem_x509_certificate(handle.read())
    else:
        made.append("ca")
        ca_key, ca_cert = _make_ca(now, days)
    current = False
    if not made and os.path.exists(files["cert"]) and os.path.exists(files["key"]):
        with open(files["cert"], "rb") as handle:
            current = _server_is_current(x509.load_pem_x509_certificate(handle.read()), ca_cert, names, now, renew_days)
    if not current:
        made.append("server")
    result = {"ca_file": files["ca"], "cert_file": files["cert"], "key_file": files["key"], "made": made}
    if check or not made:
        return result
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    if "ca" in made:
        _write(files["ca_key"], _key_pem(ca_key), 0o600)
        _write(files["ca"], ca_cert.public_bytes(serialization.Encoding.PEM), 0o600)
    key, cert = _make_server(ca_key, ca_cert, names, now, days)
    _write(files["key"], _key_pem(key), 0o600)
    _write(files["cert"], cert.public_bytes(serialization.Encoding.PEM), 0o600)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "names": {"type": "list", "elements": "str", "required": True},
            "days": {"type": "int", "default": 825},
            "renew_days": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        fail(module, "the Python library cryptography is missing on the controller (pip install cryptography)")
    names = [str(n).strip() for n in module.params["names"] if str(n).strip()]
    if not names:
        fail(module, "names is empty: give the address (or host name) the devices use to reach the registry")
    result = run(module.params["path"], names, module.params["days"],
                 module.params["renew_days"], module.check_mode)  # fmt: skip
    done(module, changed=bool(result["made"]), **result)


if __name__ == "__main__":
    main()
