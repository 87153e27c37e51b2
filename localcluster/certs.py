"""Certificates and keys for a local control plane, made with the openssl command."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVING_NAMES = (
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP:127.0.0.1",
    "IP:10.96.0.1",
)


@dataclass(frozen=True)
class Certificates:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def issue_client_certificate(
    certificates: Certificates, folder: Path, name: str, user: str, groups: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """A client certificate signed by the cluster CA (CN = user, O = each group)."""
    key = folder / f"{name}.key"
    cert = folder / f"{name}.crt"
    subject = f"/CN={user}" + "".join(f"/O={group}" for group in groups)
    _openssl("genrsa", "-out", str(key), "2048", cwd=folder)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", f"{name}.csr", cwd=folder)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        str(certificates.ca_cert),
        "-CAkey",
        str(certificates.ca_key),
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        str(cert),
        cwd=folder,
    )
    return cert, key


def make_certificates(folder: Path) -> Certificates:
    """A CA, the API server's serving certificate and the service-account signing keys."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("genrsa", "-out", "ca.key", "2048", cwd=folder)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=pitstop-local-ca",
        "-days",
        "30",
        "-out",
        "ca.crt",
        cwd=folder,
    )
    _openssl("genrsa", "-out", "apiserver.key", "2048", cwd=folder)
    _openssl(
        "req",
        "-new",
        "-key",
        "apiserver.key",
        "-subj",
        "/CN=kube-apiserver",
        "-out",
        "apiserver.csr",
        cwd=folder,
    )
    (folder / "apiserver.ext").write_text(
        "subjectAltName=" + ",".join(SERVING_NAMES) + "\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "apiserver.ext",
        "-out",
        "apiserver.crt",
        cwd=folder,
    )
    _openssl("genrsa", "-out", "service-account.key", "2048", cwd=folder)
    _openssl(
        "rsa", "-in", "service-account.key", "-pubout", "-out", "service-account.pub", cwd=folder
    )
    return Certificates(
        ca_cert=folder / "ca.crt",
        ca_key=folder / "ca.key",
        serving_cert=folder / "apiserver.crt",
        serving_key=folder / "apiserver.key",
        service_account_key=folder / "service-account.key",
        service_account_public_key=folder / "service-account.pub",
    )
