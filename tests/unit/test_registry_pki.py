"""jetson_llm.fleet.registry_pki: the fleet registry's CA and server certificate, made once and reused."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

from ansible_collections.jetson_llm.fleet.plugins.modules import registry_pki
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def test_first_run_makes_a_ca_and_a_server_cert_for_the_address_signed_by_it(tmp_path: Path) -> None:
    d = tmp_path / "registry"
    result = registry_pki.run(str(d), ["10.203.11.2", "registry.lab"], 825, 30, check=False)

    assert result["made"] == ["ca", "server"]
    ca, server = _cert(d / "ca.crt"), _cert(d / "server.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _names(server) == {"10.203.11.2", "registry.lab"}
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.203.11.2")]  # an IP entry, not DNS
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(server.signature, server.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))  # raises if not
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for key in ("ca.key", "ca.crt", "server.key", "server.crt"):
        assert stat.S_IMODE((d / key).stat().st_mode) == 0o600
    assert not list(d.glob("*.partial"))


def test_second_run_reuses_every_file(tmp_path: Path) -> None:
    registry_pki.run(str(tmp_path), ["10.203.11.2"], 825, 30, check=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    result = registry_pki.run(str(tmp_path), ["10.203.11.2"], 825, 30, check=False)

    assert result["made"] == []
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_new_address_reissues_the_server_cert_and_keeps_the_ca(tmp_path: Path) -> None:
    registry_pki.run(str(tmp_path), ["10.203.11.2"], 825, 30, check=False)
    ca_before = (tmp_path / "ca.crt").read_bytes()

    result = registry_pki.run(str(tmp_path), ["10.203.11.3"], 825, 30, check=False)

    assert result["made"] == ["server"]
    assert (tmp_path / "ca.crt").read_bytes() == ca_before  # every device keeps trusting the same CA
    assert _names(_cert(tmp_path / "server.crt")) == {"10.203.11.3"}


def test_a_server_cert_of_another_ca_or_near_expiry_is_reissued(tmp_path: Path) -> None:
    other = tmp_path / "other"
    registry_pki.run(str(other), ["10.203.11.2"], 825, 30, check=False)
    mine = tmp_path / "mine"
    registry_pki.run(str(mine), ["10.203.11.2"], 825, 30, check=False)
    (mine / "server.crt").write_bytes((other / "server.crt").read_bytes())

    assert registry_pki.run(str(mine), ["10.203.11.2"], 825, 30, check=False)["made"] == ["server"]
    # A certificate with 10 days of validity left, renew_days 30: issued again.
    (mine / "server.crt").unlink()
    registry_pki.run(str(mine), ["10.203.11.2"], 10, 30, check=False)
    server = _cert(mine / "server.crt")
    assert server.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc) < datetime.timedelta(days=11)
    assert registry_pki.run(str(mine), ["10.203.11.2"], 825, 30, check=False)["made"] == ["server"]


def test_check_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "registry"

    result = registry_pki.run(str(d), ["10.203.11.2"], 825, 30, check=True)

    assert result["made"] == ["ca", "server"]
    assert not d.exists()
