"""Client certificates carry the user as CN and groups as O, as Kubernetes reads them."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from qorch.devcluster import _kubeconfig, _pki, _ports


def test_client_certificate_names_user_and_groups() -> None:
    """CN is the user name and each group is one O attribute."""
    ca = _pki.CertificateAuthority("test-ca")
    pair = ca.client("alice", ["dev", "ops"])
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "dev",
        "ops",
    ]
    assert cert.issuer == x509.load_pem_x509_certificate(ca.cert_pem).subject


def test_serving_certificate_covers_loopback() -> None:
    """The API server certificate is valid for 127.0.0.1 and localhost."""
    pair = _pki.CertificateAuthority("ca").serving(["127.0.0.1", "localhost"])
    san = x509.load_pem_x509_certificate(pair.cert_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert ipaddress.ip_address("127.0.0.1") in san.value.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.value.get_values_for_type(x509.DNSName)


def test_kubeconfig_is_private_and_complete(tmp_path: Path) -> None:
    """The kubeconfig is mode 0600 and selects the user's context."""
    ca = _pki.CertificateAuthority("ca")
    path = _kubeconfig.write(
        tmp_path / "k.yaml",
        server="https://127.0.0.1:1",
        ca_pem=ca.cert_pem,
        user="bob",
        creds=ca.client("bob"),
    )
    assert path.stat().st_mode & 0o777 == 0o600
    cfg = yaml.safe_load(path.read_text())
    assert cfg["current-context"] == "qorch-dev-bob"
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:1"


def test_free_port_skips_a_busy_preferred_port() -> None:
    """A preferred port that is taken is replaced by a free one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        assert not _ports.is_free(busy)
        assert _ports.free_port(busy) != busy
