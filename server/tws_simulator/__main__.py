"""``python -m tws_simulator``: a paper TWS on 127.0.0.1:7497 for any ib_insync script."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import datetime

import click

from .clock import EASTERN
from .config import SimulatorConfig
from .schedule import FaultSchedule, run_schedule
from .server import Simulator
from .versions import MAX_SERVER_VERSION, MIN_SERVER_VERSION


def _parse_position(text: str) -> tuple[str, tuple[float, float]]:
    try:
        symbol, quantity, cost = text.split(":")
        return symbol, (float(quantity), float(cost))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected SYMBOL:QUANTITY:AVERAGE_COST") from None


async def _serve(config: SimulatorConfig, schedule: FaultSchedule) -> None:
    sim = Simulator(config)
    if schedule.active:
        sim.add_background(lambda: run_schedule(sim.faults, schedule))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Explicit handlers: a shell that starts us in the background ignores SIGINT.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        click.echo(
            f"TWS simulator on {sim.host}:{sim.port} (account {sim.account.account_id}, "
            f"API v{MIN_SERVER_VERSION}..{config.max_server_version}); Ctrl-C stops it"
        )
        await stop.wait()
    click.echo("TWS simulator stopped")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=7497, show_default=True, help="Port (7497: paper TWS).")
@click.option("--seed", type=int, default=None, help="Seed of the random-walk market.")
@click.option(
    "--tick-rate",
    type=click.FloatRange(min=0.01),
    default=4.0,
    show_default=True,
    help="Quote changes per second per instrument.",
)
@click.option("--cash", type=float, default=1_000_000.0, show_default=True, help="Starting cash.")
@click.option(
    "--position",
    "positions",
    multiple=True,
    metavar="SYMBOL:QTY:COST",
    help="A starting position, e.g. AAPL:100:150.5 (repeatable).",
)
@click.option("--account", default="DU1234567", show_default=True, help="Paper account id.")
@click.option("--line-limit", type=int, default=100, show_default=True, help="Market data lines.")
@click.option("--no-live-data", is_flag=True, help="No live market data permission (delayed only).")
@click.option(
    "--depth-line-limit", type=int, default=3, show_default=True, help="Market depth requests."
)
@click.option("--no-depth", is_flag=True, help="No market depth permission (error 354).")
@click.option(
    "--max-version",
    type=click.IntRange(MIN_SERVER_VERSION, MAX_SERVER_VERSION),
    default=MAX_SERVER_VERSION,
    show_default=True,
    help="Highest API version to negotiate.",
)
@click.option(
    "--trading-hours",
    is_flag=True,
    help="Enforce trading hours (RTH / extended), DAY expiry at the close and the auctions.",
)
@click.option(
    "--clock-start",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M"]),
    default=None,
    help="Start the simulated clock at this US/Eastern time (e.g. 2026-11-30T15:55).",
)
@click.option("--delay", type=float, default=0.0, help="Fault: seconds before every answer.")
@click.option("--drop-every", type=float, default=None, help="Fault: drop all clients every N s.")
@click.option(
    "--refuse-for", type=float, default=0.0, help="Fault: refuse connects N s after a drop."
)
@click.option("--offline-every", type=float, default=None, help="Fault: lose IB (1100) every N s.")
@click.option("--offline-for", type=float, default=5.0, show_default=True, help="Outage length.")
@click.option("--data-lost", is_flag=True, help="Fault: outages end with 1101 (not 1102).")
@click.option("--pacing-every", type=float, default=None, help="Fault: error 100 every N s.")
@click.option(
    "--reject-order-every", type=float, default=None, help="Fault: reject an order every N s."
)
@click.option("--log-level", default="INFO", show_default=True, help="Python logging level.")
def main(
    host: str,
    port: int,
    seed: int | None,
    tick_rate: float,
    cash: float,
    positions: tuple[str, ...],
    account: str,
    line_limit: int,
    no_live_data: bool,
    depth_line_limit: int,
    no_depth: bool,
    max_version: int,
    trading_hours: bool,
    clock_start: datetime | None,
    delay: float,
    drop_every: float | None,
    refuse_for: float,
    offline_every: float | None,
    offline_for: float,
    data_lost: bool,
    pacing_every: float | None,
    reject_order_every: float | None,
    log_level: str,
) -> None:
    """Run a simulated TWS that the real ib_insync / ib_async connect to."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = SimulatorConfig(
        host=host,
        port=port,
        seed=seed,
        tick_interval=1.0 / tick_rate,
        cash=cash,
        positions=dict(_parse_position(p) for p in positions),
        account_id=account,
        line_limit=line_limit,
        live_market_data=not no_live_data,
        depth_line_limit=depth_line_limit,
        depth_permission=not no_depth,
        max_server_version=max_version,
        trading_hours=trading_hours,
        clock_start=clock_start.replace(tzinfo=EASTERN).timestamp() if clock_start else None,
    )
    schedule = FaultSchedule(
        delay=delay,
        drop_every=drop_every,
        refuse_for=refuse_for,
        offline_every=offline_every,
        offline_for=offline_for,
        data_lost=data_lost,
        pacing_every=pacing_every,
        reject_order_every=reject_order_every,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, schedule))


if __name__ == "__main__":
    main()
