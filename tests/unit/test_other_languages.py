"""Go and Java stubs from client_stubs/{go,java}/buf.gen.yaml: generated where the
machine has the plugins (Debian: protoc-gen-go, protoc-gen-go-grpc, protobuf-compiler),
and the Java messages compiled where javac and protobuf-java are (Debian:
libprotobuf-java). Skipped otherwise: `make test` installs none of these."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
PROTOBUF_JAR = Path("/usr/share/java/protobuf.jar")
PROTOS = sorted(p.stem for p in (ROOT / "protos" / "ibgateway" / "v1").glob("*.proto"))


def _generate(language: str, out: Path) -> None:
    template = ROOT / "client_stubs" / language / "buf.gen.yaml"
    done = subprocess.run(
        [str(BUF), "generate", "--template", str(template), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(
    not BUF.exists() or not (shutil.which("protoc-gen-go") and shutil.which("protoc-gen-go-grpc")),
    reason="needs buf (make buf) and protoc-gen-go, protoc-gen-go-grpc",
)
def test_go_stubs(tmp_path: Path) -> None:
    _generate("go", tmp_path)
    package = tmp_path / "client_stubs" / "go" / "ibgateway" / "v1"
    names = sorted(p.name for p in package.glob("*.go"))
    expected = sorted([f"{s}.pb.go" for s in PROTOS] + [f"{s}_grpc.pb.go" for s in PROTOS])
    expected.remove("common_grpc.pb.go")  # no service in common.proto
    assert names == expected
    orders = (package / "orders_grpc.pb.go").read_text()
    assert "package ibgatewayv1" in orders and "func NewOrderServiceClient(" in orders


@pytest.mark.skipif(
    not BUF.exists() or shutil.which("protoc") is None or shutil.which("javac") is None
    or not PROTOBUF_JAR.exists(),
    reason="needs buf (make buf), protoc, javac and protobuf-java",
)  # fmt: skip
def test_java_messages_compile(tmp_path: Path) -> None:
    _generate("java", tmp_path)
    sources = sorted(str(p) for p in (tmp_path / "client_stubs" / "java" / "src").rglob("*.java"))
    assert len(sources) > 100
    classes = tmp_path / "classes"
    done = subprocess.run(
        ["javac", "-nowarn", "-d", str(classes), "-cp", str(PROTOBUF_JAR), *sources],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (classes / "com" / "ibgateway" / "v1" / "PlaceOrderRequest.class").exists()
