"""Start the Prefect server or a worker (`make prefect-server`, `make worker`), never with an open API.

A Prefect API that anyone can reach lets anyone run code on the workers (a
deployment is code, a flow run's parameters are its input). Prefect 3 has
HTTP basic authentication built in: the server checks every API request
against `PREFECT_SERVER_API_AUTH_STRING` (`user:password`) and answers 401
without it; clients (workers, their flow runs, `prefect` commands, `flows.deploy`,
`pmg registry`) send `PREFECT_API_AUTH_STRING`. `prefect.env` sets both from
`PMG_PREFECT_AUTH_STRING`, so one variable serves every machine.

These launchers check, then `exec` Prefect (so signals and the exit status are
Prefect's)::

    python -m flows.launch server --host 127.0.0.1 --port 4200
    python -m flows.launch worker --pool pmg --type process [...]  # the rest goes to `prefect worker start`

- `server`: binding anything but a loopback address (`127.0.0.0/8`, `::1`,
  `localhost`; a host name is taken as reachable from outside) without a server
  auth string is refused, unless `PMG_PREFECT_AUTH_PROXY=1` says an
  authenticating proxy stands in front of it.
- `worker`: a `PREFECT_API_URL` on another machine without a client auth
  string is refused (same opt-out), since such a worker could only work
  against an open server.

Either warns in one line when the auth string would cross the network over
plain HTTP (basic auth is a password in every request: put TLS in front).
The settings are read as Prefect reads them (environment, `.env`,
`prefect.toml`, the profile), so what is checked is what Prefect will use. An
empty auth string is refused too: Prefect would install the check with an
empty password that no client sends, and refuse everyone.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from pmg.errors import ConfigError

#: One auth string for the server and every client; `prefect.env` copies it to Prefect's two settings.
AUTH_ENV = "PMG_PREFECT_AUTH_STRING"

#: "1": an authenticating reverse proxy stands in front of the server (the operator's word for it).
PROXY_ENV = "PMG_PREFECT_AUTH_PROXY"
_README = 'README, "GPU workers on other machines"'
_TRUE, _FALSE = {"1", "true", "yes"}, {"", "0", "false", "no"}


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name, `[::1]` allowed) can be reached only from this machine."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # 0.0.0.0 and :: are addresses (not loopback); any other name may resolve outside


def behind_auth_proxy(env: Mapping[str, str]) -> bool:
    """The `PMG_PREFECT_AUTH_PROXY` opt-out (1/true/yes or 0/false/no/unset); anything else: `ConfigError`."""
    value = env.get(PROXY_ENV, "").strip().lower()
    if value in _TRUE | _FALSE:
        return value in _TRUE
    raise ConfigError(
        f"{PROXY_ENV}={env[PROXY_ENV]!r}: expected 1 (an authenticating proxy is in front) or 0"
    )


def _secret(value: Any, name: str) -> str | None:
    """A SecretStr setting's value; None when unset, a `ConfigError` when set but empty."""
    if value is None:
        return None
    secret = value.get_secret_value()
    if not secret.strip():
        raise ConfigError(
            f"{name} is set but empty: Prefect would refuse every client; "
            f"unset it or set {AUTH_ENV}=user:password"
        )
    return secret


def _prefect_settings() -> Any:
    from prefect.settings import Settings

    return Settings()  # read now (not the settings of an imported context): env, .env, prefect.toml, profile


def check_server(host: str, settings: Any = None, env: Mapping[str, str] = os.environ) -> list[str]:
    """Refuse to serve an open API beyond this machine.

    Args:
        host: the address `prefect server start --host` binds.
        settings: Prefect's `Settings` (read now when None).
        env: where the `PMG_PREFECT_AUTH_PROXY` opt-out is read.

    Returns:
        Warnings (one line each) for the operator: plain HTTP on a network
        address.

    Raises:
        ConfigError: a non-loopback `host` without a server auth string (and
            without the opt-out), or an empty auth string.
    """
    settings = settings if settings is not None else _prefect_settings()
    auth = _secret(settings.server.api.auth_string, "PREFECT_SERVER_API_AUTH_STRING")
    if is_loopback(host):
        return []
    if auth is None:
        if behind_auth_proxy(env):
            return []  # the operator's word: the proxy authenticates (and terminates TLS)
        raise ConfigError(
            f"refusing to serve the Prefect API on {host} without authentication (anyone reaching it "
            f"could run code on the workers): set {AUTH_ENV}=user:password before reading prefect.env, "
            f"bind 127.0.0.1, or set {PROXY_ENV}=1 if an authenticating proxy stands in front ({_README})"
        )
    return [f"the API on {host} speaks plain HTTP: keep it behind a TLS proxy or a VPN ({_README})"]


def check_worker(settings: Any = None, env: Mapping[str, str] = os.environ) -> list[str]:
    """Refuse a worker that would talk to a server on another machine without authentication.

    Args:
        settings: Prefect's `Settings` (read now when None); `api.url` and `api.auth_string` are used.
        env: where the `PMG_PREFECT_AUTH_PROXY` opt-out is read.

    Returns:
        Warnings (one line each): an auth string sent over plain HTTP to another machine.

    Raises:
        ConfigError: a remote `PREFECT_API_URL` without a client auth string
            (and without the opt-out), or an empty auth string.
    """
    settings = settings if settings is not None else _prefect_settings()
    auth = _secret(settings.api.auth_string, "PREFECT_API_AUTH_STRING")
    url = settings.api.url
    if not url:
        return []
    parts = urlsplit(url)
    if is_loopback(parts.hostname or ""):
        return []
    if auth is None:
        if behind_auth_proxy(env):
            return []
        raise ConfigError(
            f"the Prefect API {url} is on another machine and no auth string is set: set {AUTH_ENV} to the "
            f"server's user:password before reading prefect.env, or {PROXY_ENV}=1 if a proxy in front of the "
            f"server authenticates ({_README})"
        )
    if parts.scheme != "https":
        return [f"the auth string goes to {url} unencrypted: put a TLS proxy in front, use https ({_README})"]
    return []


def main(argv: Sequence[str] | None = None, exec_: Callable[[str, list[str]], Any] = os.execv) -> int:
    """Check, then replace this process with `prefect server start` or `prefect worker start`.

    Args:
        argv: the command line (default `sys.argv[1:]`).
        exec_: what replaces the process (tests pass a recorder).

    Returns:
        2 when refused (one line on stderr); otherwise `exec_` does not return
        (or, under a test's recorder, 0).
    """
    parser = argparse.ArgumentParser(prog="python -m flows.launch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="prefect server start, refusing an open API on a network address")
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    server.add_argument("--port", type=int, default=4200)
    sub.add_parser("worker", help="prefect worker start (every further argument goes to it)")
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "server":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            notes = check_server(args.host)
            command = ["server", "start", "--host", args.host, "--port", str(args.port)]
        else:
            notes = check_worker()
            command = ["worker", "start", *rest]
    except ConfigError as err:
        print(f"pmg: error: {err}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"pmg: warning: {note}", file=sys.stderr)
    sys.stderr.flush()
    exec_(sys.executable, [sys.executable, "-m", "prefect", *command])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
