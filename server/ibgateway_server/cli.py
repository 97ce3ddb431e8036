"""The ``ibgw`` command: ``serve`` the gateway, run the ``sim`` alone, ``check`` a setup,
``health`` (a probe), and live terminal views of quotes, orders and positions.

Flags override the environment (IBKR_* / IBGW_*); a bad setting stops start-up with one
readable line and exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import grpc
from google.protobuf import duration_pb2
from pythonjsonlogger.json import JsonFormatter

from ibgateway.v1 import connection_pb2, connection_pb2_grpc
from ibgateway_server.config import ConfigError, Settings, load
from ibgateway_server.orders.journal import JournalInUse
from ibgateway_server.terminal import watch
from ibgateway_server.terminal.health import check_health
from ibgateway_server.terminal.target import Target, local_target
from ibgateway_server.terminal.watch import run_view
from tws_simulator.__main__ import main as simulator_main

log = logging.getLogger("ibgateway_server")

OUTCOME_LABELS = {
    connection_pb2.CHECK_OUTCOME_PASSED: "PASS",
    connection_pb2.CHECK_OUTCOME_FAILED: "FAIL",
    connection_pb2.CHECK_OUTCOME_SKIPPED: "SKIP",
    connection_pb2.CHECK_OUTCOME_UNSPECIFIED: "????",
}
BACKEND_LABELS = {
    connection_pb2.BACKEND_SIMULATOR: "simulator",
    connection_pb2.BACKEND_TWS: "TWS",
    connection_pb2.BACKEND_UNSPECIFIED: "unknown backend",
}


def setup_logging(level: str, log_format: str = "text") -> None:
    """Plain text lines, or (``json``) one JSON object per line: time (ISO 8601, UTC),
    level, logger, message, and for each finished call (logger ibgateway_server.access)
    method, peer, code, reason, duration_ms, and request_id / client_order_id when known."""
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{name}{message}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
        logging.basicConfig(level=level, handlers=[handler], force=True)
    else:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
        )
    if level != "DEBUG":
        # ib_insync logs every IB message code at INFO/ERROR; the session reports what matters
        logging.getLogger("ib_insync").setLevel(logging.WARNING)
        logging.getLogger("ib_insync.wrapper").setLevel(logging.CRITICAL)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load(**overrides)
    except ConfigError as exc:
        click.echo(f"ibgw: {exc}", err=True)
        sys.exit(2)


# ---------------------------------------------------------------------------- options


def _connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `serve` and `check --direct` (the TWS connection)."""
    options = [
        click.option("--ibkr-host", help="TWS / IB Gateway host [IBKR_HOST, 127.0.0.1]"),
        click.option(
            "--ibkr-port",
            type=int,
            help="TWS / IB Gateway API port: 7497 paper TWS, 7496 live TWS, 4002 paper "
            "Gateway, 4001 live Gateway [IBKR_PORT, 7497]",
        ),
        click.option("--ibkr-client-id", type=int, help="API client id [IBKR_CLIENT_ID, 1]"),
        click.option(
            "--ibkr-timeout", type=float, help="Seconds to wait for TWS [IBKR_TIMEOUT, 10]"
        ),
        click.option("--ibkr-account", help="Default account [IBKR_ACCOUNT, the first one]"),
        click.option(
            "--log-level",
            type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
            help="Log level [IBGW_LOG_LEVEL, INFO]",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the commands that talk to a gateway (health, quotes, orders, positions).

    By default they follow the gateway's own settings: its listen address (a wildcard
    means this machine) and, when IBGW_TLS_CERT is set, TLS trusting IBGW_TLS_CA or else
    the gateway's own certificate (self-signed, or a chain that ends with its CA).
    """
    options = [
        click.option("--address", help="Gateway HOST:PORT [IBGW_LISTEN, 127.0.0.1:50051]"),
        click.option("--token", envvar="IBGW_TOKEN", help="Bearer token [IBGW_TOKEN]"),
        click.option(
            "--tls-ca",
            envvar="IBGW_TLS_CA",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            help="Use TLS, trusting this CA [IBGW_TLS_CA; else IBGW_TLS_CERT when set]",
        ),
        click.option(
            "--tls-client-cert",
            envvar="IBGW_TLS_CLIENT_CERT",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            help="Client certificate for mutual TLS [IBGW_TLS_CLIENT_CERT]",
        ),
        click.option(
            "--tls-client-key",
            envvar="IBGW_TLS_CLIENT_KEY",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            help="Its key [IBGW_TLS_CLIENT_KEY]",
        ),
        click.option(
            "--tls-server-name",
            envvar="IBGW_TLS_SERVER_NAME",
            help="Name the server certificate is checked against [IBGW_TLS_SERVER_NAME]",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _target(
    address: str | None,
    token: str | None,
    tls_ca: Path | None,
    tls_client_cert: Path | None,
    tls_client_key: Path | None,
    tls_server_name: str | None,
) -> Target:
    settings = settings_or_exit()
    server_tls = settings.tls_cert is not None
    return Target(
        address=local_target(address or settings.listen),
        tls=server_tls,
        tls_ca=tls_ca or (settings.tls_cert if server_tls and address is None else None),
        tls_client_cert=tls_client_cert,
        tls_client_key=tls_client_key,
        tls_server_name=tls_server_name,
        token=token,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ibgateway", prog_name="ibgw")
def main() -> None:
    """ibgw: a gRPC gateway to Interactive Brokers (TWS / IB Gateway)."""


@main.command()
@click.option(
    "--service",
    default="",
    help="Service to check: '' (default) = the process (liveness); "
    "e.g. ibgateway.v1.OrderService = readiness (SERVING while IB is connected).",
)
@click.option("--timeout", "rpc_timeout", default=3.0, show_default=True, help="Seconds.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; the exit code says it.")
@_client_options
def health(service: str, rpc_timeout: float, quiet: bool, **client: Any) -> None:
    """gRPC health check of a gateway: exit 0 when SERVING, 1 otherwise (Docker
    HEALTHCHECK, Kubernetes exec probes). Follows IBGW_LISTEN and the TLS settings."""
    ok, line = check_health(_target(**client), service, rpc_timeout)
    if not quiet:
        click.echo(line, err=not ok)
    sys.exit(0 if ok else 1)


@main.command()
@click.option(
    "--backend",
    type=click.Choice(["sim", "tws"], case_sensitive=False),
    help="sim: the embedded TWS simulator; tws: a real TWS / IB Gateway [IBGW_BACKEND, sim]",
)
@click.option("--listen", help="gRPC listen address HOST:PORT [IBGW_LISTEN, 127.0.0.1:50051]")
@click.option(
    "--role",
    type=click.Choice(["all-in-one", "owner", "edge"], case_sensitive=False),
    help="all-in-one: everything in this process; owner: holds the IB session and "
    "publishes on NATS; edge: serves clients from NATS [IBGW_ROLE, all-in-one]",
)
@click.option("--nats", "nats_url", help="NATS server URL, for owner and edge [IBGW_NATS_URL]")
@click.option("--cluster", help="Subject namespace, one per IB login [IBGW_CLUSTER, default]")
@click.option(
    "--reuse-port/--no-reuse-port",
    default=None,
    help="SO_REUSEPORT: several edges on one port [IBGW_REUSE_PORT, on for edges]",
)
@_connection_options
@click.option(
    "--read-only/--no-read-only",
    default=None,
    help="Refuse every order RPC [IBGW_READ_ONLY, off]",
)
@click.option(
    "--allow-live-trading/--no-allow-live-trading",
    default=None,
    help="Allow orders on live (non-DU) accounts [IBGW_ALLOW_LIVE_TRADING, off]",
)
@click.option(
    "--quote-line-budget", type=int, help="Max IB market-data lines [IBGW_QUOTE_LINE_BUDGET, 100]"
)
@click.option(
    "--heartbeat-seconds", type=float, help="Stream heartbeat period [IBGW_HEARTBEAT_SECONDS, 5]"
)
@click.option(
    "--metrics-port", type=int, help="Prometheus /metrics on HOST:PORT [IBGW_METRICS_PORT, off]"
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="Log lines as text or one JSON object each [IBGW_LOG_FORMAT, text]",
)
@click.option(
    "--metrics-host", help="Address of /metrics [IBGW_METRICS_HOST, 127.0.0.1; 0.0.0.0 in Docker]"
)
@click.option(
    "--shutdown-grace", type=float, help="Seconds to drain RPCs on stop [IBGW_SHUTDOWN_GRACE, 5]"
)
@click.option("--sim-port", type=int, help="Embedded simulator port [IBGW_SIM_PORT, 0 = any]")
@click.option("--sim-seed", type=int, help="Embedded simulator seed [IBGW_SIM_SEED]")
@click.option(
    "--sim-tick-interval", type=float, help="Simulator market step [IBGW_SIM_TICK_INTERVAL]"
)
@click.option("--tls-cert", type=click.Path(path_type=Path), help="TLS certificate [IBGW_TLS_CERT]")
@click.option("--tls-key", type=click.Path(path_type=Path), help="TLS private key [IBGW_TLS_KEY]")
@click.option(
    "--tls-client-ca",
    type=click.Path(path_type=Path),
    help="CA of client certificates: mutual TLS [IBGW_TLS_CLIENT_CA]",
)
@click.option(
    "--auth-tokens-file",
    type=click.Path(path_type=Path),
    help="Bearer tokens file [IBGW_AUTH_TOKENS_FILE]",
)
@click.option(
    "--allow-unsafe-exposure/--no-allow-unsafe-exposure",
    default=None,
    help="Serve live trading on a non-loopback address without TLS and tokens "
    "[IBGW_ALLOW_UNSAFE_EXPOSURE, off]; logged loudly",
)
@click.option(
    "--order-journal",
    help="Order-event journal file, or 'off' [IBGW_ORDER_JOURNAL, "
    "<state dir>/order-journal.sqlite3 with a real TWS, off with the simulator]",
)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Where the gateway keeps state [IBGW_STATE_DIR, ~/.local/state/ibgateway]",
)
def serve(**flags: Any) -> None:
    """Serve the gateway until SIGTERM / Ctrl-C (then shut down gracefully)."""
    from ibgateway_server.app import run

    for name in ("backend", "role"):
        if flags.get(name):
            flags[name] = flags[name].lower()
    settings = settings_or_exit(**flags)
    setup_logging(settings.log_level, settings.log_format)
    try:
        settings.tokens()  # a bad tokens file stops start-up like any bad setting
        for path in (settings.tls_cert, settings.tls_key, settings.tls_client_ca):
            if path is not None and not path.is_file():
                raise ConfigError(f"{path}: no such file (TLS)")
    except ConfigError as exc:
        click.echo(f"ibgw: {exc}", err=True)
        sys.exit(2)
    try:
        asyncio.run(run(settings))
    except (JournalInUse, ConfigError) as exc:
        click.echo(f"ibgw: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        # e.g. the listen port is taken
        click.echo(f"ibgw: cannot serve: {exc}", err=True)
        sys.exit(1)
    except RuntimeError as exc:
        if "bind" in str(exc).lower() or "port" in str(exc).lower():
            click.echo(f"ibgw: cannot listen on {settings.listen}: {exc}", err=True)
            sys.exit(1)
        raise


main.add_command(simulator_main, name="sim")


# ------------------------------------------------------------------------------ check


def format_report(response: connection_pb2.TestConnectionResponse, target: str) -> str:
    """A readable report of a TestConnection response."""
    st = response.status
    backend = BACKEND_LABELS.get(st.backend, "unknown backend")
    lines = [f"ibgw check: {target} -> {backend} at {st.host}:{st.port} (client id {st.client_id})"]
    width = max((len(c.name) for c in response.checks), default=10)
    for check in response.checks:
        label = OUTCOME_LABELS.get(check.outcome, "????")
        took = _millis(check.duration)
        ib = f" [IB {check.ib_code}]" if check.ib_code else ""
        timing = f" ({took} ms)" if check.outcome != connection_pb2.CHECK_OUTCOME_SKIPPED else ""
        lines.append(f"  {label}  {check.name:<{width}}  {check.detail}{ib}{timing}")
        if check.fields and check.outcome == connection_pb2.CHECK_OUTCOME_PASSED:
            shown = ", ".join(check.fields[:8]) + (" ..." if len(check.fields) > 8 else "")
            lines.append(f"        {'':<{width}}  fields: {shown}")
    passed = sum(c.outcome == connection_pb2.CHECK_OUTCOME_PASSED for c in response.checks)
    total = len(response.checks)
    verdict = "OK" if response.ok else "FAILED"
    lines.append(f"result: {verdict} ({passed}/{total} checks passed)")
    if not response.ok and not st.connected:
        lines.append(
            "hint: is TWS / IB Gateway running with its API enabled (Configure > API > "
            "Settings: Enable ActiveX and Socket Clients), on the port and host above, and "
            "is the client id free?"
        )
    return "\n".join(lines)


def _millis(duration: duration_pb2.Duration) -> str:
    return f"{duration.seconds * 1000 + duration.nanos / 1e6:.0f}"


def check_via_gateway(
    channel: grpc.Channel, symbol: str, timeout: float, *, metadata: list[tuple[str, str]]
) -> tuple[str, bool]:
    """Call ConnectionService.TestConnection; the report and whether every check passed.

    A gateway that cannot be reached (or answers with an error) is a failed check too.
    """
    stub = connection_pb2_grpc.ConnectionServiceStub(channel)
    request = connection_pb2.TestConnectionRequest(sample_symbol=symbol)
    try:
        response = stub.TestConnection(request, timeout=timeout, metadata=tuple(metadata) or None)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "ERROR"
        return f"ibgw check: the gateway answered {name}: {details}", False
    return format_report(response, "gateway"), response.ok


async def check_direct(settings: Settings, symbol: str) -> tuple[str, bool]:
    """The same checks straight against TWS / IB Gateway, without a gateway."""
    from ibgateway_server.api.connection import Diagnostics, status_to_proto
    from ibgateway_server.ib.session import IbSession
    from ibgateway_server.portfolio.accounts import AccountSummaries

    session = IbSession(settings)
    try:
        with contextlib.suppress(Exception):  # a failure shows in the connection check
            await session.connect()
        checks = await Diagnostics(session, AccountSummaries(session)).run(symbol)
        response = connection_pb2.TestConnectionResponse(
            ok=all(c.outcome == connection_pb2.CHECK_OUTCOME_PASSED for c in checks),
            status=status_to_proto(session.status(), backend="tws", read_only=settings.read_only),
            checks=checks,
        )
    finally:
        await session.stop()
    return format_report(response, "direct"), response.ok


@main.command()
@click.option(
    "--address",
    default=None,
    help="The gateway to check [IBGW_LISTEN, 127.0.0.1:50051]",
)
@click.option(
    "--symbol", default=None, help="Market data sample symbol [the gateway's IBGW_CHECK_SYMBOL]."
)
@click.option("--timeout", "rpc_timeout", default=30.0, show_default=True, help="Seconds.")
@click.option("--token", envvar="IBGW_TOKEN", help="Bearer token, if the gateway wants one.")
@click.option(
    "--tls-ca",
    type=click.Path(path_type=Path, exists=True),
    help="Use TLS, trusting this CA certificate.",
)
@click.option(
    "--direct",
    is_flag=True,
    help="Skip the gateway: run the checks straight against TWS (IBKR_HOST:IBKR_PORT).",
)
@_connection_options
def check(
    address: str | None,
    symbol: str | None,
    rpc_timeout: float,
    token: str | None,
    tls_ca: Path | None,
    direct: bool,
    **flags: Any,
) -> None:
    """Test the connection: account, market data, positions. Exit code 0 when all pass."""
    settings = settings_or_exit(**flags)
    setup_logging(settings.log_level if flags.get("log_level") else "WARNING")
    if direct:
        report, ok = asyncio.run(check_direct(settings, symbol or settings.check_symbol))
    else:
        target = address or settings.listen
        host, _, port = target.rpartition(":")
        if host in ("0.0.0.0", "::", "[::]", "*"):
            target = f"127.0.0.1:{port}"
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(tls_ca.read_bytes())
            channel = grpc.secure_channel(target, credentials)
        else:
            channel = grpc.insecure_channel(target)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        with channel:
            report, ok = check_via_gateway(channel, symbol or "", rpc_timeout, metadata=metadata)
        report = report.replace("ibgw check: gateway", f"ibgw check: gateway {target}", 1)
    click.echo(report)
    sys.exit(0 if ok else 1)


# ------------------------------------------------------------------- live terminal views


@main.command()
@click.argument("symbols", nargs=-1, required=True)
@click.option(
    "--retries",
    default=6,
    show_default=True,
    help="Re-open attempts when the gateway goes away (then exit 1).",
)
@_client_options
def quotes(symbols: tuple[str, ...], retries: int, **client: Any) -> None:
    """Live quotes: a table that updates in place (piped: one line per quote).
    SYMBOLS: AAPL (a US stock), EUR.USD (a currency pair). Ctrl-C ends it."""
    target = _target(**client)
    sys.exit(run_view(lambda: watch.watch_quotes(target, symbols, retries, sys.stdout)))


@main.command()
@click.option("--tail", default=10, show_default=True, help="Events shown.")
@click.option(
    "--retries",
    default=6,
    show_default=True,
    help="Re-open attempts when the gateway goes away (then exit 1).",
)
@_client_options
def orders(tail: int, retries: int, **client: Any) -> None:
    """Working orders and a live tail of order events. Ctrl-C ends it."""
    target = _target(**client)
    sys.exit(run_view(lambda: watch.watch_orders(target, tail, retries, sys.stdout)))


@main.command()
@click.option("--account", default="", help="Account id [the gateway's default].")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option(
    "--retries",
    default=6,
    show_default=True,
    help="Re-open attempts when the gateway goes away (then exit 1).",
)
@_client_options
def positions(account: str, interval: float, retries: int, **client: Any) -> None:
    """Positions and net liquidation, refreshed every few seconds. Ctrl-C ends it."""
    target = _target(**client)
    sys.exit(
        run_view(lambda: watch.watch_positions(target, account, interval, retries, sys.stdout))
    )
