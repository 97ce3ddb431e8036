"""examples/ run as a user runs them: with the client package alone, in its own virtual
environment (.venv-client, made by `make client`), against a real gateway. The package
pulls no server dependency, and the examples type-check under mypy --strict with it."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from ibgateway.client import AsyncClient
from ibgateway_server.app import Gateway

ROOT = Path(__file__).resolve().parents[3]
CLIENT_VENV = ROOT / ".venv-client"
PYTHON = CLIENT_VENV / "bin" / "python"
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.skipif(
    not PYTHON.exists(), reason="no .venv-client: run `make client` (make test does)"
)


async def run(*args: str, within: float = 30, cwd: Path = ROOT) -> tuple[int, str, str]:
    # the gateway keeps serving on this loop while the subprocess talks to it
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def example(name: str, gw: Gateway, *args: str) -> tuple[int, str, str]:
    return await run(str(PYTHON), str(EXAMPLES / name), "--address", gw.address, *args)


async def test_the_client_package_stands_alone() -> None:
    code, out, err = await run(
        str(PYTHON),
        "-c",
        "import importlib.metadata as m, importlib.util as u, json; print(json.dumps("
        "[sorted(m.requires('ibgateway-client')),"
        " [n for n in ('ib_insync', 'ibgateway_server', 'pydantic', 'numpy', 'prometheus_client')"
        "  if u.find_spec(n)], u.find_spec('ibgateway.client') is not None]))",
    )
    assert code == 0, err
    requires, server_modules, has_client = json.loads(out)
    required = (r.split(";")[0].split(">")[0].split("<")[0] for r in requires if "extra" not in r)
    assert sorted(required) == [
        "googleapis-common-protos",
        "grpcio",
        "grpcio-status",
        "protobuf",
    ]
    assert server_modules == [] and has_client


async def test_the_examples_type_check_with_the_package_alone(tmp_path: Path) -> None:
    # outside the repository (its mypy settings would find client_stubs/ in the tree):
    # the package comes from site-packages, with the [typing] extra's grpc/protobuf stubs
    (tmp_path / "mypy.ini").write_text("[mypy]\n")
    code, out, err = await run(
        str(CLIENT_VENV / "bin" / "mypy"),
        "--config-file",
        str(tmp_path / "mypy.ini"),
        "--strict",
        "--cache-dir",
        str(tmp_path / "cache"),
        *sorted(str(p) for p in EXAMPLES.glob("*.py")),
        within=120,
        cwd=tmp_path,
    )
    assert code == 0, out + err
    assert "Success" in out


async def test_quotes_to_csv(gateway: Gateway) -> None:
    code, out, err = await example("quotes_to_csv.py", gateway, "AAPL", "EUR.USD", "--count", "6")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 6
    assert {r["symbol"] for r in rows} <= {"AAPL", "EUR.USD"}
    aapl = next(r for r in rows if r["symbol"] == "AAPL")
    assert Decimal(aapl["bid"]) < Decimal(aapl["ask"]) and aapl["con_id"] == "265598"


async def test_limit_order_with_retry(gateway: Gateway) -> None:
    args = ("AAPL", "BUY", "10", "150.25", "--key", "example-1")
    code, out, err = await example("limit_order_with_retry.py", gateway, *args)
    assert code == 0, err
    assert out.startswith("example-1 order ") and "BUY 10 AAPL LMT 150.25 SUBMITTED" in out
    assert "replayed" not in out
    code, out, err = await example("limit_order_with_retry.py", gateway, *args, "--cancel")
    assert code == 0, err
    assert "(replayed: placed before with this key)" in out
    assert out.splitlines()[-1] in ("example-1 CANCELLED", "example-1 PENDING_CANCEL")
    code, out, err = await example("limit_order_with_retry.py", gateway, "AAPL", "BUY", "0", "1")
    assert code == 1 and "quantity:" in err


async def test_follow_order_events(gateway: Gateway) -> None:
    following = asyncio.ensure_future(example("follow_order_events.py", gateway, "--count", "2"))
    await asyncio.sleep(1.5)  # the example's stream is open
    async with AsyncClient(gateway.address) as gw:
        await gw.orders.place("follow-1", "MSFT", "BUY", 5)  # a market order: it fills
    code, out, err = await following
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].split()[2:4] == ["ACKNOWLEDGED", "follow-1"]
    first_seq, second_seq = (int(line.split()[1]) for line in lines)
    assert second_seq == first_seq + 1


@pytest.mark.sim_config(positions={"AAPL": (100, 150.0)})
async def test_portfolio_monitor(gateway: Gateway) -> None:
    code, out, err = await example(
        "portfolio_monitor.py", gateway, "--count", "2", "--interval", "0.1"
    )
    assert code == 0, err
    reports = [line for line in out.splitlines() if "net liquidation" in line]
    assert len(reports) == 2 and reports[0].startswith("DU1234567 net liquidation ")
    assert any(line.split()[:2] == ["AAPL", "100"] for line in out.splitlines())
