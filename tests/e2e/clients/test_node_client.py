"""The Node client (client_stubs/node): its example runs against a real gateway (status,
a quote stream, an order, a decoded error), and the committed ts-proto stubs are what
`make node-stubs` generates. Built by `make node` (make test does); skipped without it."""

from __future__ import annotations

import asyncio
import filecmp
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ibgateway.client import AsyncClient
from ibgateway_server.app import Gateway

ROOT = Path(__file__).resolve().parents[3]
NODE_DIR = ROOT / "client_stubs" / "node"
EXAMPLE = NODE_DIR / "dist" / "example" / "example.js"
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not EXAMPLE.exists(),
    reason="no Node build: run `make node` (make test does)",
)


async def run(*args: str, cwd: Path = ROOT) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_node_example_against_a_gateway(gateway: Gateway) -> None:
    code, out, err = await run("node", str(EXAMPLE), gateway.address, "node-e2e-1")
    assert code == 0, err
    steps: dict[str, Any] = {}
    for line in out.splitlines():
        message = json.loads(line)
        steps.setdefault(message.pop("step"), message)
    assert steps["status"] == {
        "connected": True,
        "state": "CONNECTION_STATE_CONNECTED",
        "accounts": ["DU1234567"],
    }
    assert steps["subscription"] == {"symbol": "AAPL", "state": "SUBSCRIPTION_STATE_ACTIVE"}
    quotes = steps["quotes"]["quotes"]
    assert len(quotes) == 3 and all(q["conId"] == "265598" for q in quotes)  # int64: strings
    assert all(float(q["bid"]) < float(q["ask"]) for q in quotes)
    order = steps["order"]
    assert order["clientOrderId"] == "node-e2e-1" and order["limitPrice"] == "150.25"
    assert order["status"] == "ORDER_STATUS_SUBMITTED" and order["replayed"] is False
    error = steps["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["reason"] == "UNKNOWN_ACCOUNT"
    assert error["domain"] == "ibgateway"
    assert [v["field"] for v in error["fieldViolations"]] == ["account_id"]

    async with AsyncClient(gateway.address) as gw:  # the order is really there
        placed = await gw.orders.get("node-e2e-1")
        assert str(placed.order_id) == order["orderId"]


@pytest.mark.skipif(not BUF.exists(), reason="no buf: run `make buf`")
async def test_the_committed_node_stubs_match_the_protos(tmp_path: Path) -> None:
    template = NODE_DIR / "buf.gen.yaml"
    code, _, err = await run(str(BUF), "generate", "--template", str(template), "-o", str(tmp_path))
    assert code == 0, err
    fresh = tmp_path / "client_stubs" / "node" / "src" / "gen"
    committed = NODE_DIR / "src" / "gen"
    names = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*.ts"))
    assert names == sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*.ts"))
    _, mismatch, errors = filecmp.cmpfiles(fresh, committed, names, shallow=False)
    assert not mismatch and not errors, f"run `make proto`: {mismatch + errors}"
