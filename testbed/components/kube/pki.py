"""The cluster's own certificates and tokens, made with openssl (Debian's) at set-up.

A CA of its own signs the apiserver's serving certificate (127.0.0.1, the cluster
Service IP) and the client certificate the apiserver shows the kubelet (which accepts
only that CA). Components and the testbed sign in with bearer tokens from a token file:
simpler than a certificate each, and enough on a loopback-only API.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from testbed.components.install import run_command
from testbed.errors import MissingBinaryError

NODE_NAME = "localhost"  # the apiserver reaches the kubelet by this name: 127.0.0.1
# Who signs in with which token: (user, groups). The controller manager runs every
# controller under its own name, so it gets the admin group like the testbed does; the
# others have the bootstrap roles Kubernetes made for them.
IDENTITIES = {
    "admin": ("testbed-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", "system:masters"),
    "scheduler": ("system:kube-scheduler", ""),
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "proxy": ("system:kube-proxy", ""),
}


@dataclass(frozen=True)
class Pki:
    """Paths of what `make_pki` wrote."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def token(self, who: str) -> str:
        return (self.directory / f"{who}.token").read_text().strip()


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise MissingBinaryError("openssl", "PATH", "as root: apt-get install -y openssl")
    return found


def _signed(openssl: str, pki: Path, name: str, subject: str, extensions: str) -> None:
    key, csr = pki / f"{name}.key", pki / f"{name}.csr"
    ext = pki / f"{name}.ext"
    ext.write_text(extensions + "\n")
    run_command([openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                 "-out", str(csr), "-subj", subject])
    run_command([openssl, "x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"),
                 "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650",
                 "-out", str(pki / f"{name}.crt"), "-extfile", str(ext)])
    csr.unlink()
    ext.unlink()


def make_pki(directory: Path, service_ip: str) -> Pki:
    """Write the CA, the serving and kubelet-client certificates, the service-account
    key pair and one token per identity into ``directory`` (made fresh)."""
    openssl = _openssl()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    run_command([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                 "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.crt"),
                 "-subj", "/CN=testbed-k8s-ca"])
    _signed(openssl, directory, "apiserver", "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
            f"DNS:kubernetes.default.svc,IP:{service_ip}\nextendedKeyUsage=serverAuth")
    _signed(openssl, directory, "kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "extendedKeyUsage=clientAuth")
    run_command([openssl, "genrsa", "-out", str(directory / "sa.key"), "2048"])
    run_command([openssl, "rsa", "-in", str(directory / "sa.key"), "-pubout", "-out",
                 str(directory / "sa.pub")])
    lines = []
    for who, (user, groups) in IDENTITIES.items():
        token = secrets.token_hex(24)
        (directory / f"{who}.token").write_text(token + "\n")
        lines.append(f'{token},{user},{user}' + (f',"{groups}"' if groups else ""))
    (directory / "tokens.csv").write_text("\n".join(lines) + "\n")
    return Pki(directory)
