"""The test database's credentials as an AWS Secrets Manager secret, for code that reads them.

- ``pg_aws_endpoint`` (session): the Secrets Manager endpoint URL.
  ``AWS_ENDPOINT_URL_SECRETSMANAGER`` or ``AWS_ENDPOINT_URL`` when set (LocalStack, a moto
  server of your own); otherwise a moto server started on 127.0.0.1 for the session. Never
  the real AWS.
- ``pg_secret`` (function): a secret in the RDS format (``engine``, ``host``, ``port``,
  ``username``, ``password``, ``dbname``) holding the current test's database, deleted
  (without recovery) when the test ends, passed or failed. While the test runs, the
  environment points boto3 at the endpoint (and, for the session's own moto server, gives it
  dummy credentials when there are none), so code under test finds the secret with a client
  of its own.

The secret names ``pg.url``'s database, which other connections must be able to see: use
``@pytest.mark.pg(isolation="clone")`` or ``"reset"``. boto3 and moto are imported only when
a fixture needs them: ``pip install "pytest-pgsandbox[aws]"``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import NoReturn

import pytest

from pytest_pgsandbox._engine.handle import PgDatabase
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox.errors import PgSandboxError

DEFAULT_REGION = "us-east-1"
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_SECRETSMANAGER", "AWS_ENDPOINT_URL")
_DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_INSTALL = 'pip install "pytest-pgsandbox[aws]"'
_STOP_TIMEOUT = 10.0
# The endpoint of the moto server this session started (absent when the endpoint is someone
# else's): only there does pg_secret hand out dummy credentials.
_LOCAL_ENDPOINT_KEY = pytest.StashKey[str]()
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_+=.@-]+")
# botocore logs request and response bodies at DEBUG (a secret's value among them).
_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.awsrequest")


@dataclass(frozen=True)
class PgSecret:
    """A secret holding the test database's credentials (its ``repr`` has no password).

    ``arn`` and ``name`` identify it (either works as ``SecretId``); ``endpoint_url`` and
    ``region`` say where it lives; ``client`` is a boto3 Secrets Manager client for them.
    """

    arn: str
    name: str
    endpoint_url: str
    region: str
    client: Any = field(repr=False, compare=False)


def _fail(message: str) -> NoReturn:
    __tracebackhide__ = True
    pytest.fail(f"pgsandbox: {message}", pytrace=False)


def _missing(what: str, exc: ImportError) -> NoReturn:
    __tracebackhide__ = True
    _fail(f"{what} needs boto3 and moto[server] ({exc}): {_INSTALL}")


def _import_error(module: str) -> ImportError | None:
    """Why ``module`` cannot be imported, if it cannot (failing inside ``except`` would
    chain the ImportError's traceback to the message, which says it all)."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return exc
    return None


def configured_endpoint() -> str | None:
    """The Secrets Manager endpoint the environment names, as boto3 would pick it."""
    for var in ENDPOINT_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return None


def region() -> str:
    """``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else us-east-1."""
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return DEFAULT_REGION


def rds_secret_string(info: ConnInfo) -> str:
    """The RDS secret format of ``info`` as JSON (holds the password: never print it).

    A unix-socket server's ``host`` is its socket folder, which libpq takes as a host.
    """
    return json.dumps(
        {
            "engine": "postgres",
            "host": info.host,
            "port": info.port,
            "username": info.user,
            "password": info.password or "",
            "dbname": info.dbname,
        }
    )


def secret_name(test_name: str) -> str:
    """``pgsandbox/<test name>/<random>``, in the characters Secrets Manager allows."""
    safe = _NAME_UNSAFE.sub("-", test_name).strip("-")[:200] or "test"
    return f"pgsandbox/{safe}/{secrets.token_hex(4)}"


# -- the session's moto server --------------------------------------------------------------


def _start_moto(timeout: float) -> tuple[Any, str]:
    """Start moto's threaded server on 127.0.0.1 and a free port, waiting at most ``timeout``."""
    from moto.server import ThreadedMotoServer

    server: Any = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # start() waits for the socket without a deadline; wait for it from a thread of ours.
    starter = threading.Thread(target=server.start, name="pgsandbox-moto-start", daemon=True)
    starter.start()
    deadline = time.monotonic() + timeout
    while starter.is_alive():
        serving = getattr(server, "_thread", None)
        if serving is not None and serving.ident is not None and not serving.is_alive():
            raise PgSandboxError("the moto server's thread ended before it listened")
        if time.monotonic() >= deadline:
            raise PgSandboxError(f"the moto server did not listen within {timeout:g} s")
        starter.join(0.02)
    if hasattr(server, "get_host_and_port"):  # moto >= 5.0.13
        host, port = server.get_host_and_port()
    else:
        host, port = server._server.server_address[:2]
    return server, f"http://{host}:{port}"


def _stop_moto(server: Any, timeout: float) -> bool:
    """Stop the server; False when it did not stop within ``timeout`` (its thread is a daemon)."""
    stopper = threading.Thread(target=server.stop, name="pgsandbox-moto-stop", daemon=True)
    stopper.start()
    stopper.join(timeout)
    return not stopper.is_alive()


@pytest.fixture(scope="session")
def pg_aws_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """The Secrets Manager endpoint URL for ``pg_secret``.

    ``AWS_ENDPOINT_URL_SECRETSMANAGER`` or ``AWS_ENDPOINT_URL`` when set (LocalStack etc.),
    otherwise a moto server on 127.0.0.1 started for the session and stopped at its end.
    Override it in ``conftest.py`` to use another endpoint.
    """
    configured = configured_endpoint()
    if configured is not None:
        yield configured
        return
    missing = _import_error("moto.server")
    if missing is not None:
        _missing("pg_aws_endpoint (a moto server when AWS_ENDPOINT_URL is not set)", missing)
    from pytest_pgsandbox._plugin.keys import SETTINGS_KEY

    timeout = request.config.stash[SETTINGS_KEY].start_timeout
    error: PgSandboxError | OSError | None = None
    try:
        server, url = _start_moto(timeout)
    except (PgSandboxError, OSError) as exc:
        error = exc  # failed outside the except block: the chained traceback says nothing
    if error is not None:
        _fail(f"could not start a moto server on 127.0.0.1: {error}")
    request.config.stash[_LOCAL_ENDPOINT_KEY] = url
    try:
        yield url
    finally:
        del request.config.stash[_LOCAL_ENDPOINT_KEY]
        if not _stop_moto(server, _STOP_TIMEOUT):
            request.node.warn(
                pytest.PytestWarning(
                    f"pgsandbox: the moto server at {url} did not stop within "
                    f"{_STOP_TIMEOUT:g} s; it ends with this process"
                )
            )


# -- the per-test secret -----------------------------------------------------------------------


class _ScrubPassword(logging.Filter):
    """Masks a password in the records of botocore's body-logging loggers (at DEBUG)."""

    def __init__(self, password: str) -> None:
        super().__init__()
        self._forms = {password, json.dumps(password)[1:-1]}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(form in message for form in self._forms):
            for form in self._forms:
                message = message.replace(form, "***")
            record.msg, record.args = message, None
        return True


@contextlib.contextmanager
def _password_scrubbed_from_logs(password: str | None) -> Iterator[None]:
    if not password:
        yield
        return
    scrub = _ScrubPassword(password)
    loggers = [logging.getLogger(name) for name in _BODY_LOGGERS]
    for logger in loggers:
        logger.addFilter(scrub)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(scrub)


def _client(endpoint: str, region_name: str, local: bool) -> Any:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    # Our own moto server accepts any key: never sign its requests with the user's.
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"} if local else {}
    return boto3.client(
        "secretsmanager", endpoint_url=endpoint, region_name=region_name, config=config, **keys
    )


def _scrub(text: str, password: str | None) -> str:
    text = mask(text)
    if password:
        for form in (password, json.dumps(password)[1:-1]):
            text = text.replace(form, "***")
    return text


def _point_boto3_here(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, region_name: str, local: bool
) -> None:
    """Make a boto3 client built by the code under test find the secret (this test only)."""
    if configured_endpoint() != endpoint:
        for var in ENDPOINT_VARS:
            if var == "AWS_ENDPOINT_URL" or os.environ.get(var):
                monkeypatch.setenv(var, endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", region_name)
    if local and not os.environ.get("AWS_ACCESS_KEY_ID"):
        for var, value in _DUMMY_CREDENTIALS.items():
            monkeypatch.setenv(var, value)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def _create(client: Any, name: str, nodeid: str, info: ConnInfo, endpoint: str) -> str:
    """Create the secret; its ARN. Fails the test with a message without the password."""
    __tracebackhide__ = True
    from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
    from botocore.exceptions import ClientError
    from botocore.exceptions import NoCredentialsError

    try:
        created = client.create_secret(
            Name=name,
            Description=f"pytest-pgsandbox: the database of {nodeid}",
            SecretString=rds_secret_string(info),
            Tags=[{"Key": "created-by", "Value": "pytest-pgsandbox"}],
        )
        return str(created["ARN"])
    except NoCredentialsError:
        problem = (
            "found no AWS credentials. LocalStack and moto accept any: "
            "set AWS_ACCESS_KEY_ID=test and AWS_SECRET_ACCESS_KEY=test."
        )
    except (BotoCoreError, ClientError) as exc:
        problem = _scrub(str(exc), info.password)
    # Failed outside the except blocks: a chained traceback would add nothing.
    _fail(f"could not create the secret {name} on {endpoint}: {problem}")


def _delete(client: Any, secret: PgSecret, password: str | None) -> str | None:
    """Delete the secret without recovery; what went wrong, if anything."""
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError

    try:
        client.delete_secret(SecretId=secret.arn, ForceDeleteWithoutRecovery=True)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None  # the test deleted it itself
        return _scrub(str(exc), password)
    except BotoCoreError as exc:
        return _scrub(str(exc), password)
    return None


@pytest.fixture
def pg_secret(
    request: pytest.FixtureRequest,
    pg: PgDatabase,
    pg_aws_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PgSecret]:
    """A Secrets Manager secret holding this test's database credentials (RDS format).

    Needs a database other connections can see: ``@pytest.mark.pg(isolation="clone")`` or
    ``"reset"``. The secret is named ``pgsandbox/<test>/<random>`` and deleted without
    recovery when the test ends. While the test runs, ``AWS_ENDPOINT_URL`` (for the session's
    moto server), ``AWS_DEFAULT_REGION`` and, for that server when none are set, dummy
    credentials are set, so ``boto3.client("secretsmanager")`` in the code under test finds it.
    """
    try:
        info = ConnInfo.from_conninfo(pg.url)
    except PgSandboxError as exc:
        problem = str(exc)  # pg.url's own hint: which isolation to use
    else:
        problem = ""
    if problem:
        _fail(f"pg_secret publishes pg.url's credentials, but {problem}")
    endpoint = pg_aws_endpoint
    local = request.config.stash.get(_LOCAL_ENDPOINT_KEY, None) == endpoint
    region_name = region()
    missing = _import_error("boto3")
    if missing is not None:
        _missing("pg_secret", missing)
    client = _client(endpoint, region_name, local)
    name = secret_name(request.node.name)
    with _password_scrubbed_from_logs(info.password):
        arn = _create(client, name, request.node.nodeid, info, endpoint)
        secret = PgSecret(arn, name, endpoint, region_name, client)
        _point_boto3_here(monkeypatch, endpoint, region_name, local)
        try:
            yield secret
        finally:
            problem = _delete(client, secret, info.password) or ""
            if problem:
                request.node.warn(
                    pytest.PytestWarning(
                        f"pgsandbox: could not delete the secret {name} on {endpoint}: {problem}"
                    )
                )
