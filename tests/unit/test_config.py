"""Settings: env names, CLI overrides, one-line validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ibgateway_server.config import ConfigError, load, split_host_port


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IBKR_HOST", "IBKR_PORT", "IBGW_BACKEND", "IBGW_LISTEN", "IBGW_READ_ONLY"):
        monkeypatch.delenv(name, raising=False)
    s = load()
    assert (s.ibkr_host, s.ibkr_port, s.ibkr_client_id) == ("127.0.0.1", 7497, 1)
    assert (s.backend, s.listen, s.read_only, s.allow_live_trading) == (
        "sim",
        "127.0.0.1:50051",
        False,
        False,
    )
    assert s.quote_line_budget == 100 and s.reconnect_max_attempts == 0


def test_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_PORT", "4002")
    monkeypatch.setenv("IBGW_BACKEND", "TWS")
    monkeypatch.setenv("IBGW_READ_ONLY", "true")
    monkeypatch.setenv("IBGW_METRICS_PORT", "")
    s = load()
    assert (s.ibkr_port, s.backend, s.read_only, s.metrics_port) == (4002, "tws", True, None)
    s = load(ibkr_port=4001, read_only=False, listen=None)  # None: flag not given
    assert (s.ibkr_port, s.read_only, s.listen) == (4001, False, "127.0.0.1:50051")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ibkr_port": 70000}, "IBKR_PORT=70000"),
        ({"listen": "50051"}, "IBGW_LISTEN='50051': '50051' is not HOST:PORT"),
        ({"listen": "example.com:1"}, "host must be an IP address"),
        ({"metrics_host": "example.com"}, "IBGW_METRICS_HOST='example.com'"),
        ({"backend": "paper"}, "IBGW_BACKEND='paper'"),
        ({"ibkr_timeout": 0}, "IBKR_TIMEOUT=0: must be greater than 0"),
        ({"quote_line_budget": 0}, "IBGW_QUOTE_LINE_BUDGET"),
        ({"tls_cert": "/x.pem"}, "IBGW_TLS_CERT and IBGW_TLS_KEY must be given together"),
    ],
)
def test_invalid_settings_give_one_line(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(**overrides)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_tokens_never_shown() -> None:
    s = load(auth_tokens="secret-token-0123456789:trade")
    assert "secret-token" not in repr(s)
    with pytest.raises(ConfigError) as caught:
        load(auth_tokens=123, listen="bad")
    assert "secret" not in str(caught.value)


def test_split_host_port() -> None:
    assert split_host_port("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert split_host_port("[::1]:7") == ("::1", 7)
    with pytest.raises(ValueError):
        split_host_port("host:port")


def test_order_journal_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert load(backend="sim").order_journal_path() is None
    tws = load(backend="tws")
    assert tws.order_journal_path() == tmp_path / "ibgateway" / "order-journal.sqlite3"
    assert load(backend="tws", order_journal="off").order_journal_path() is None
    assert load(backend="sim", order_journal="/x/j.db").order_journal_path() == Path("/x/j.db")
    state = load(backend="tws", state_dir=str(tmp_path / "s")).order_journal_path()
    assert state == tmp_path / "s" / "order-journal.sqlite3"


def test_unsafe_exposure_is_refused_unless_overridden() -> None:
    base = {"backend": "tws", "listen": "0.0.0.0:50051", "auth_tokens": None}
    safe_local = load(backend="tws", listen="127.0.0.1:50051", allow_live_trading=True)
    assert safe_local.exposure() == (None, [])
    plaintext = load(**base)  # no live trading: a warning, not a refusal
    refusal, warnings = plaintext.exposure()
    assert refusal is None and len(warnings) == 1 and "without TLS" in warnings[0]
    live = load(**base, allow_live_trading=True)
    refusal, _ = live.exposure()
    assert refusal is not None and "TLS and bearer tokens" in refusal
    assert load(**base, allow_live_trading=True, read_only=True).exposure()[0] is None
    overridden = load(**base, allow_live_trading=True, allow_unsafe_exposure=True)
    refusal, warnings = overridden.exposure()
    assert refusal is None and any("UNSAFE EXPOSURE OVERRIDDEN" in w for w in warnings)
    tokens = load(
        **{**base, "auth_tokens": "secret-token-0123456789:trade"}, allow_live_trading=True
    )
    refusal, _ = tokens.exposure()
    assert refusal is not None and "without TLS:" in refusal
