"""Where a terminal command finds the gateway and how it connects: the address (a
wildcard listen address means this machine), TLS (trust, client certificate, server
name) and the bearer token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc


def local_target(address: str) -> str:
    """``0.0.0.0:50051`` (a listen address) → ``127.0.0.1:50051`` (where to connect)."""
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", "*", ""):
        return f"127.0.0.1:{port}"
    return address


@dataclass(frozen=True)
class Target:
    """A gateway to talk to. ``tls_ca`` set (or ``tls``) means TLS."""

    address: str
    tls: bool = False
    tls_ca: Path | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    tls_server_name: str | None = None
    token: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca is not None or self.tls_client_cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.tls_ca),
            private_key=read(self.tls_client_key),
            certificate_chain=read(self.tls_client_cert),
        )

    def options(self) -> list[tuple[str, str]]:
        if self.uses_tls and self.tls_server_name:
            # e.g. a certificate issued for gw.example.com, checked on 127.0.0.1
            return [("grpc.ssl_target_name_override", self.tls_server_name)]
        return []

    def channel(self) -> grpc.Channel:
        if self.uses_tls:
            return grpc.secure_channel(self.address, self.credentials(), options=self.options())
        return grpc.insecure_channel(self.address)

    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.token}"),) if self.token else None
