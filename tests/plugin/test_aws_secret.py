"""pg_secret: the test database's credentials as a Secrets Manager secret (examples/lambda_secret).

Inner sessions talk to a moto server this module starts, named by AWS_ENDPOINT_URL, so that
what they leave on it can be listed afterwards; one runs with no AWS settings at all, where
the plugin starts a moto server of its own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from pgsb_helpers import clean_env
from pgsb_helpers import leftovers
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox.aws import PgSecret
from pytest_pgsandbox.aws import rds_secret_string
from pytest_pgsandbox.aws import secret_name

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lambda_secret"
REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server of this module's, on loopback and a free port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, pytester: pytest.Pytester) -> None:
    """No AWS setting from the machine reaches the inner sessions (nor their config files)."""
    clean_env(monkeypatch)
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(pytester.path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(pytester.path / "no-aws-credentials"))


@pytest.fixture
def secrets_client(no_aws: None, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Inner sessions use ``moto_endpoint``; this client lists what is on it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return boto3.client(
        "secretsmanager",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def secret_names(client: Any) -> list[str]:
    listed = client.list_secrets(IncludePlannedDeletion=True)["SecretList"]
    return sorted(s["Name"] for s in listed)


def test_the_lambda_example(pytester: pytest.Pytester, runtime: Path, secrets_client: Any) -> None:
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=3)
    assert secret_names(secrets_client) == []
    assert leftovers(runtime) == []


def test_the_lambda_example_on_the_default_moto_server(
    pytester: pytest.Pytester, runtime: Path, no_aws: None
) -> None:
    """No endpoint, no credentials, no region: a moto server of the session's, dummy keys."""
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-W", "error")
    result.assert_outcomes(passed=3)


MISUSE = """
import os
from pathlib import Path

import pytest

from pytest_pgsandbox._engine.urls import ConnInfo


def note_the_password(pg):
    Path("password.txt").write_text(ConnInfo.from_conninfo(pg.url).password)


@pytest.mark.pg(isolation="clone")
def test_fails_under_clone(pg, pg_secret):
    note_the_password(pg)
    assert pg_secret.endpoint_url == os.environ["AWS_ENDPOINT_URL"]
    names = [s["Name"] for s in pg_secret.client.list_secrets()["SecretList"]]
    assert names == [pg_secret.name]
    pg_secret.client.get_secret_value(SecretId=pg_secret.arn)  # logged at DEBUG
    assert pg_secret is None


@pytest.mark.pg(isolation="reset")
def test_fails_under_reset(pg, pg_secret):
    note_the_password(pg)
    print(pg, pg_secret, os.environ["AWS_DEFAULT_REGION"])
    assert pg_secret.region == "eu-west-1"
    assert not pg_secret.arn


@pytest.mark.pg(isolation="clone")
def test_deletes_it_itself(pg_secret):
    pg_secret.client.delete_secret(SecretId=pg_secret.arn, ForceDeleteWithoutRecovery=True)


def test_under_transaction_isolation(pg_secret):
    pass
"""


def test_failures_leave_no_secret_and_show_no_password(
    pytester: pytest.Pytester, runtime: Path, secrets_client: Any
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_misuse=MISUSE)
    report = pytester.path / "report.xml"
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-W", "error", "-rA", "-l", "--log-level=DEBUG",
        f"--junitxml={report}",
    )  # fmt: skip
    result.assert_outcomes(failed=2, passed=1, errors=1)
    assert secret_names(secrets_client) == []

    password = (pytester.path / "password.txt").read_text()
    assert len(password) >= 16
    output = result.stdout.str() + result.stderr.str()
    assert "botocore.parsers" in output  # the debug logs are there, with the secret masked
    assert password not in output
    assert password not in report.read_text()

    # Under transaction isolation pg.url's own hint comes through.
    assert "pg_secret publishes pg.url's credentials, but pg.url under transaction" in output
    assert '@pytest.mark.pg(isolation="reset") (fast) or "clone"' in output


def test_without_boto3_and_moto_it_names_the_extra(
    pytester: pytest.Pytester, runtime: Path, no_aws: None
) -> None:
    pytester.makeconftest(
        """
        import sys

        for name in ("boto3", "botocore", "moto", "moto.server"):
            sys.modules[name] = None  # import fails with ImportError
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.pg(isolation="clone")
        def test_it(pg_secret):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "pg_aws_endpoint (a moto server when AWS_ENDPOINT_URL is not set) needs" in output
    assert 'pip install "pytest-pgsandbox[aws]"' in output


def test_the_secret_holds_no_password_in_its_repr() -> None:
    secret = PgSecret("arn:aws:secretsmanager:x", "pgsandbox/t/1", "http://h", "us-east-1", "C")
    assert "'C'" not in repr(secret)
    info = ConnInfo(host="/run/pg", port=5433, user="app", password="s3cr3t", dbname="db")
    assert rds_secret_string(info) == (
        '{"engine": "postgres", "host": "/run/pg", "port": 5433, "username": "app", '
        '"password": "s3cr3t", "dbname": "db"}'
    )
    assert "s3cr3t" not in repr(info)


def test_secret_names_are_unique_and_allowed() -> None:
    first, second = secret_name("test_x[a/b c]"), secret_name("test_x[a/b c]")
    assert first != second
    assert first.startswith("pgsandbox/test_x-a-b-c/")
    assert len(secret_name("t" * 1000)) < 512
