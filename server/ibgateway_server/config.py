"""Gateway settings: environment (IBKR_* for the TWS connection, IBGW_* for the gateway),
overridden by CLI flags (passed as keyword arguments to :class:`Settings`).

Validation happens at start-up; :func:`load` turns a pydantic error into one readable line.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Backend = Literal["sim", "tws"]
Role = Literal["all-in-one", "owner", "edge"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _env(name: str, field: str) -> AliasChoices:
    # The env var name, plus the field name itself so CLI overrides can use it.
    return AliasChoices(name, field)


class ConfigError(ValueError):
    """A setting is invalid; the message is one line fit for an operator."""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (not "*" / 0.0.0.0 / ::, which are every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host_port(address: str) -> tuple[str, int]:
    """Split "host:port" / "[v6]:port"; raises ValueError with a readable message."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not HOST:PORT")
    host = host.strip("[]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{address!r}: port must be a number 0-65535")
    return host, int(port_text)


class Settings(BaseSettings):
    """Every setting of the gateway. Attribute names are short; env names are documented."""

    model_config = SettingsConfigDict(
        env_file=None, case_sensitive=False, populate_by_name=True, extra="forbid"
    )

    # --- TWS / IB Gateway connection (names from the seed configuration) ---
    ibkr_host: str = Field("127.0.0.1", validation_alias=_env("IBKR_HOST", "ibkr_host"))
    ibkr_port: int = Field(7497, validation_alias=_env("IBKR_PORT", "ibkr_port"))
    ibkr_client_id: int = Field(1, validation_alias=_env("IBKR_CLIENT_ID", "ibkr_client_id"))
    ibkr_timeout: float = Field(10.0, validation_alias=_env("IBKR_TIMEOUT", "ibkr_timeout"))
    ibkr_account: str = Field("", validation_alias=_env("IBKR_ACCOUNT", "ibkr_account"))

    # --- gateway ---
    backend: Backend = Field("sim", validation_alias=_env("IBGW_BACKEND", "backend"))
    listen: str = Field("127.0.0.1:50051", validation_alias=_env("IBGW_LISTEN", "listen"))
    read_only: bool = Field(False, validation_alias=_env("IBGW_READ_ONLY", "read_only"))
    allow_live_trading: bool = Field(
        False, validation_alias=_env("IBGW_ALLOW_LIVE_TRADING", "allow_live_trading")
    )
    quote_line_budget: int = Field(
        100, validation_alias=_env("IBGW_QUOTE_LINE_BUDGET", "quote_line_budget")
    )
    heartbeat_seconds: float = Field(
        5.0, validation_alias=_env("IBGW_HEARTBEAT_SECONDS", "heartbeat_seconds")
    )
    # IB allows about 60 historical-data requests per 10 minutes; the gateway keeps to
    # this budget itself and answers RESOURCE_EXHAUSTED (with RetryInfo) beyond it.
    history_requests_per_10min: int = Field(
        60,
        validation_alias=_env("IBGW_HISTORY_REQUESTS_PER_10MIN", "history_requests_per_10min"),
    )
    # How long the answer to a history request ending "now" is reused for an identical
    # request (IB refuses identical requests within 15 s); bars with a past end time are
    # kept 10 times as long.
    history_cache_seconds: float = Field(
        15.0, validation_alias=_env("IBGW_HISTORY_CACHE_SECONDS", "history_cache_seconds")
    )
    log_level: LogLevel = Field("INFO", validation_alias=_env("IBGW_LOG_LEVEL", "log_level"))
    # text for people, json (one object per line) for log collectors
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=_env("IBGW_LOG_FORMAT", "log_format")
    )
    metrics_port: int | None = Field(
        None, validation_alias=_env("IBGW_METRICS_PORT", "metrics_port")
    )
    # loopback by default: /metrics has no authentication (0.0.0.0 in a container, where
    # Prometheus scrapes from outside)
    metrics_host: str = Field(
        "127.0.0.1", validation_alias=_env("IBGW_METRICS_HOST", "metrics_host")
    )
    shutdown_grace: float = Field(
        5.0, validation_alias=_env("IBGW_SHUTDOWN_GRACE", "shutdown_grace")
    )
    check_symbol: str = Field("AAPL", validation_alias=_env("IBGW_CHECK_SYMBOL", "check_symbol"))
    allow_unsafe_exposure: bool = Field(
        False, validation_alias=_env("IBGW_ALLOW_UNSAFE_EXPOSURE", "allow_unsafe_exposure")
    )
    connect_allow: str | None = Field(
        None, validation_alias=_env("IBGW_CONNECT_ALLOW", "connect_allow")
    )
    state_dir: Path | None = Field(None, validation_alias=_env("IBGW_STATE_DIR", "state_dir"))
    order_journal: str | None = Field(
        None, validation_alias=_env("IBGW_ORDER_JOURNAL", "order_journal")
    )
    journal_max_events: int = Field(
        100_000, validation_alias=_env("IBGW_JOURNAL_MAX_EVENTS", "journal_max_events")
    )
    journal_max_age_days: float = Field(
        7.0, validation_alias=_env("IBGW_JOURNAL_MAX_AGE_DAYS", "journal_max_age_days")
    )
    max_streams: int = Field(1000, validation_alias=_env("IBGW_MAX_STREAMS", "max_streams"))
    max_streams_per_client: int = Field(
        100, validation_alias=_env("IBGW_MAX_STREAMS_PER_CLIENT", "max_streams_per_client")
    )
    rate_limit: float = Field(100.0, validation_alias=_env("IBGW_RATE_LIMIT", "rate_limit"))
    tws_max_messages_per_second: int = Field(
        45,
        validation_alias=_env("IBGW_TWS_MAX_MESSAGES_PER_SECOND", "tws_max_messages_per_second"),
    )
    max_request_bytes: int = Field(
        64 * 1024, validation_alias=_env("IBGW_MAX_REQUEST_BYTES", "max_request_bytes")
    )

    # --- reconnect policy (exponential backoff with jitter; 0 attempts = never give up) ---
    reconnect_initial_delay: float = Field(
        0.5, validation_alias=_env("IBGW_RECONNECT_INITIAL_DELAY", "reconnect_initial_delay")
    )
    reconnect_max_delay: float = Field(
        30.0, validation_alias=_env("IBGW_RECONNECT_MAX_DELAY", "reconnect_max_delay")
    )
    reconnect_max_attempts: int = Field(
        0, validation_alias=_env("IBGW_RECONNECT_MAX_ATTEMPTS", "reconnect_max_attempts")
    )

    # --- embedded simulator (backend "sim") ---
    sim_port: int = Field(0, validation_alias=_env("IBGW_SIM_PORT", "sim_port"))
    sim_seed: int | None = Field(None, validation_alias=_env("IBGW_SIM_SEED", "sim_seed"))
    sim_tick_interval: float | None = Field(
        None, validation_alias=_env("IBGW_SIM_TICK_INTERVAL", "sim_tick_interval")
    )

    # --- scale-out over NATS (role owner / edge; all-in-one needs none of this) ---
    role: Role = Field("all-in-one", validation_alias=_env("IBGW_ROLE", "role"))
    nats_url: str = Field("", validation_alias=_env("IBGW_NATS_URL", "nats_url"))
    # one cluster per IB login: the first token of every subject and bucket name
    cluster: str = Field("default", validation_alias=_env("IBGW_CLUSTER", "cluster"))
    # an edge's line demand lapses this long after its last renewal (a dead edge)
    line_lease_seconds: float = Field(
        6.0, validation_alias=_env("IBGW_LINE_LEASE_SECONDS", "line_lease_seconds")
    )
    # the owner lease in the NATS KV bucket expires this long after its last renewal
    owner_lease_seconds: float = Field(
        3.0, validation_alias=_env("IBGW_OWNER_LEASE_SECONDS", "owner_lease_seconds")
    )
    # an owner whose IB session stays down this long hands the lease to a standby
    owner_ib_grace_seconds: float = Field(
        30.0, validation_alias=_env("IBGW_OWNER_IB_GRACE_SECONDS", "owner_ib_grace_seconds")
    )
    # SO_REUSEPORT on the gRPC port (several edges on one port); unset: on for edges
    reuse_port: bool | None = Field(None, validation_alias=_env("IBGW_REUSE_PORT", "reuse_port"))

    # --- security (optional) ---
    tls_cert: Path | None = Field(None, validation_alias=_env("IBGW_TLS_CERT", "tls_cert"))
    tls_key: Path | None = Field(None, validation_alias=_env("IBGW_TLS_KEY", "tls_key"))
    tls_client_ca: Path | None = Field(
        None, validation_alias=_env("IBGW_TLS_CLIENT_CA", "tls_client_ca")
    )
    auth_tokens: str | None = Field(
        None, validation_alias=_env("IBGW_AUTH_TOKENS", "auth_tokens"), repr=False
    )
    auth_tokens_file: Path | None = Field(
        None, validation_alias=_env("IBGW_AUTH_TOKENS_FILE", "auth_tokens_file")
    )

    @field_validator("backend", "role", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, value: str) -> str:
        # it becomes a NATS subject token and part of a JetStream bucket name
        if not value or len(value) > 32 or not all(c.isalnum() or c in "_-" for c in value):
            raise ValueError("1-32 letters, digits, '_' or '-'")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("metrics_port", "sim_seed", "sim_tick_interval", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ibkr_port")
    @classmethod
    def _tws_port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"{value} is not a TCP port (1-65535)")
        return value

    @field_validator("sim_port", "metrics_port")
    @classmethod
    def _port_or_zero(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 65535:
            raise ValueError(f"{value} is not a TCP port (0-65535)")
        return value

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host(cls, value: str) -> str:
        value = value.strip()
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or localhost") from None
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _ = split_host_port(value)
        if host not in ("localhost", "*"):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"{value!r}: host must be an IP address or localhost") from None
        return value

    @field_validator("ibkr_client_id")
    @classmethod
    def _client_id(cls, value: int) -> int:
        if not 0 <= value <= 2**31 - 1:
            raise ValueError("client id must be between 0 and 2147483647")
        return value

    @field_validator(
        "ibkr_timeout",
        "heartbeat_seconds",
        "reconnect_initial_delay",
        "reconnect_max_delay",
        "line_lease_seconds",
        "owner_lease_seconds",
        "owner_ib_grace_seconds",
        "journal_max_age_days",
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("sim_tick_interval")
    @classmethod
    def _tick(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("shutdown_grace")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 or more")
        return value

    @field_validator("max_streams", "max_streams_per_client", "rate_limit")
    @classmethod
    def _limit(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 (no limit) or more")
        return value

    @field_validator("tws_max_messages_per_second")
    @classmethod
    def _tws_rate(cls, value: int) -> int:
        if not 1 <= value <= 50:
            raise ValueError("must be between 1 and 50 (IB's limit)")
        return value

    @field_validator("max_request_bytes")
    @classmethod
    def _request_bytes(cls, value: int) -> int:
        if not 1024 <= value <= 64 * 1024 * 1024:
            raise ValueError("must be between 1024 and 67108864 bytes")
        return value

    @field_validator("quote_line_budget", "history_requests_per_10min", "journal_max_events")
    @classmethod
    def _budget(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("reconnect_max_attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (never give up) or more")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("IBGW_TLS_CERT and IBGW_TLS_KEY must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("IBGW_TLS_CLIENT_CA (mutual TLS) needs IBGW_TLS_CERT/IBGW_TLS_KEY")
        return self

    @model_validator(mode="after")
    def _cluster_roles(self) -> Settings:
        if self.role != "all-in-one" and not self.nats_url:
            raise ValueError(f"role {self.role} needs IBGW_NATS_URL (--nats)")
        return self

    @property
    def reuse_port_effective(self) -> bool:
        return self.role == "edge" if self.reuse_port is None else self.reuse_port

    @field_validator("auth_tokens")
    @classmethod
    def _tokens(cls, value: str | None) -> str | None:
        if value:
            parse_tokens(value, source="IBGW_AUTH_TOKENS")
        return value

    def tokens(self) -> dict[str, frozenset[str]]:
        """Bearer token → scopes, from IBGW_AUTH_TOKENS and IBGW_AUTH_TOKENS_FILE.

        Empty: authentication is off. Raises ConfigError for a malformed entry.
        """
        tokens: dict[str, frozenset[str]] = {}
        if self.auth_tokens:
            tokens.update(parse_tokens(self.auth_tokens, source="IBGW_AUTH_TOKENS"))
        if self.auth_tokens_file is not None:
            try:
                text = self.auth_tokens_file.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"IBGW_AUTH_TOKENS_FILE: cannot read it ({exc.strerror})"
                ) from None
            tokens.update(parse_tokens(text, source=str(self.auth_tokens_file)))
        return tokens

    def order_journal_path(self) -> Path | None:
        """Where the order-event journal lives; None: in memory only.

        IBGW_ORDER_JOURNAL names the file ("off" for none). Unset: the all-in-one gateway
        on a real TWS gets ``<state dir>/order-journal.sqlite3``; the embedded simulator
        none, since its orders do not outlive the process either; nor do cluster roles
        (an owner and its standby would share one file; their journal belongs in NATS).
        """
        given = (self.order_journal or "").strip()
        if given.lower() in ("off", "none", "memory"):
            return None
        if given:
            return Path(given).expanduser()
        if self.backend == "sim" or self.role != "all-in-one":
            return None
        return self.state_directory() / "order-journal.sqlite3"

    def state_directory(self) -> Path:
        """IBGW_STATE_DIR, else $XDG_STATE_HOME/ibgateway, else ~/.local/state/ibgateway."""
        if self.state_dir is not None:
            return self.state_dir.expanduser()
        xdg = os.environ.get("XDG_STATE_HOME", "").strip()
        base = Path(xdg) if xdg else Path.home() / ".local" / "state"
        return base / "ibgateway"

    def exposure(self) -> tuple[str | None, list[str]]:
        """(why start-up must be refused, or None; warnings to log) for the listener.

        Refused: live trading enabled and not read-only, on a non-loopback address,
        without both TLS and tokens, unless IBGW_ALLOW_UNSAFE_EXPOSURE overrides it.
        Warned: any non-loopback plaintext listener.
        """
        host, _ = self.listen_host_port
        if is_loopback(host):
            return None, []
        tls = self.tls_cert is not None
        tokens = bool(self.auth_tokens) or self.auth_tokens_file is not None
        warnings: list[str] = []
        if not tls:
            warnings.append(
                f"listening on {self.listen} without TLS: requests, tokens and account "
                "data cross the network in plaintext (IBGW_TLS_CERT/IBGW_TLS_KEY)"
            )
        trading = self.allow_live_trading and not self.read_only
        if trading and not (tls and tokens):
            missing = " and ".join(
                n for n, ok in (("TLS", tls), ("bearer tokens", tokens)) if not ok
            )
            problem = (
                f"refusing to serve: live trading is enabled (IBGW_ALLOW_LIVE_TRADING) on "
                f"the non-loopback address {self.listen} without {missing}: anyone who "
                "reaches the port could trade the account. Listen on 127.0.0.1, add TLS "
                "and tokens, or set IBGW_ALLOW_UNSAFE_EXPOSURE=true to override"
            )
            if not self.allow_unsafe_exposure:
                return problem, warnings
            warnings.append(
                "UNSAFE EXPOSURE OVERRIDDEN (IBGW_ALLOW_UNSAFE_EXPOSURE): live trading on "
                f"{self.listen} without {missing}; anyone who reaches the port can trade"
            )
        return None, warnings

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)


SCOPES = ("read", "trade", "admin")


def parse_tokens(text: str, *, source: str) -> dict[str, frozenset[str]]:
    """Parse "TOKEN:SCOPE[+SCOPE]" entries separated by commas or newlines ("#" comments).

    Scopes: ``read`` (every read RPC), ``trade`` (orders) and ``admin`` (session control:
    Connect, Disconnect); trade and admin imply read. The message of an error never
    contains a token.
    """
    tokens: dict[str, frozenset[str]] = {}
    entries = [e.strip() for line in text.splitlines() for e in line.split("#")[0].split(",")]
    for number, entry in enumerate((e for e in entries if e), start=1):
        token, sep, scope_text = entry.rpartition(":")
        scopes = {s.strip().lower() for s in scope_text.split("+") if s.strip()}
        if not sep or not token.strip() or not scopes or not scopes <= set(SCOPES):
            raise ConfigError(
                f"{source}: entry {number} is not TOKEN:SCOPE with SCOPE read, trade or admin "
                "(or several joined by +, e.g. trade+admin)"
            )
        if len(token.strip()) < 16:
            raise ConfigError(f"{source}: entry {number}: a token needs at least 16 characters")
        if scopes & {"trade", "admin"}:
            scopes.add("read")
        tokens[token.strip()] = frozenset(scopes)
    return tokens


# Field name → env var, for error messages and docs.
ENV_NAMES: dict[str, str] = {
    name: str(field.validation_alias.choices[0])  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
}


def load(**overrides: object) -> Settings:
    """Settings from the environment with CLI overrides (None = not given).

    Raises ConfigError with one line naming the setting, its env var and the problem.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        name = loc[0] if loc else ""
        env = ENV_NAMES.get(name, name.upper())
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if "input" in err and name and not isinstance(err["input"], dict):
            shown = "***" if name == "auth_tokens" else repr(err["input"])
            parts.append(f"{env}={shown}: {msg}" if env else msg)
        else:
            parts.append(f"{env}: {msg}" if env else msg)
    return "invalid configuration: " + "; ".join(parts)
