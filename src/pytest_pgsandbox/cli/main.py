"""The ``pgsandbox`` command: look at, start, stop and clean up what the plugin uses.

Settings come from the same places as in pytest (environment ``PGSANDBOX_*`` and the ``pg_*``
keys of the pytest configuration file found from the current folder), and from the few flags
each command takes. It calls the engine directly; pytest is not involved.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_pgsandbox._engine.servers import external
from pytest_pgsandbox._engine.servers import janitor
from pytest_pgsandbox._engine.servers import places
from pytest_pgsandbox._engine.servers import provision
from pytest_pgsandbox._engine.servers import roles
from pytest_pgsandbox._engine.servers.choice import external_url
from pytest_pgsandbox._engine.servers.choice import local_cluster
from pytest_pgsandbox._engine.servers.choice import reusable_server
from pytest_pgsandbox._engine.servers.cluster import LocalCluster
from pytest_pgsandbox._engine.servers.discovery import candidates
from pytest_pgsandbox._engine.servers.discovery import find_binaries
from pytest_pgsandbox._engine.urls import ConnInfo
from pytest_pgsandbox._engine.urls import connect
from pytest_pgsandbox._engine.urls import mask
from pytest_pgsandbox._version import __version__
from pytest_pgsandbox.cli.options import add_setting_flags
from pytest_pgsandbox.cli.options import flags
from pytest_pgsandbox.cli.options import load_settings
from pytest_pgsandbox.cli.options import project_folder
from pytest_pgsandbox.errors import PgSandboxError
from pytest_pgsandbox.settings import Settings


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_doctor(args: argparse.Namespace) -> int:
    settings = load_settings(flags(args))
    print(f"pytest-pgsandbox {__version__}, Python {sys.version.split()[0]}")
    print("settings (flag > environment > ini > default):")
    for name, value, source in settings.non_default() or [("(all)", "defaults", "")]:
        shown = mask(str(value)) if isinstance(value, str) else value
        print(f"  {name} = {shown}" + (f"  ({source})" if source else ""))
    if places.is_root():
        user = places.server_user()
        print(f"running as root: local servers run as {user.name if user else '?'!r}")
    print("PostgreSQL binaries (searched in this order):")
    if settings.bin_dir is not None:
        print(f"  bin_dir setting: {settings.bin_dir}")
    else:
        for folder, how in candidates():
            print(f"  {how}: {folder or '-'}")
    ok = True
    try:
        binaries = find_binaries(settings.bin_dir)
        print(f"  -> using {binaries.describe()}")
    except PgSandboxError as exc:
        print(f"  -> {exc}")
        ok = False
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    print(f"runtime folder: {runtime}")
    cache = places.cache_dir(settings.cache_dir, runtime)
    print(f"cluster cache: {cache}")
    for kind in ("initdb", "templates"):
        entries = sorted(p.name for p in (cache / kind).glob("*") if (p / "meta.json").exists())
        print(f"  {kind}: {', '.join(entries) if entries else 'none yet'}")
    _print_servers(runtime)
    from pytest_pgsandbox._engine.servers.docker import daemon_problem

    docker_problem = daemon_problem()
    print(f"Docker: {docker_problem or 'a daemon answers'}")
    if settings.uses_existing_server:
        print(f"existing server: {settings.describe_existing()}")
        ok = _check_url(settings) and ok
    elif settings.server == "docker" or (
        settings.server == "auto" and not ok and settings.bin_dir is None
    ):
        # server=docker, or auto where no binaries were found: a container from the image.
        print(f"server=docker would start a container from image {settings.image}")
        ok = docker_problem is None
    elif ok:
        ok = _check_local(settings)
    print("doctor: everything needed works" if ok else "doctor: see the problem above")
    return 0 if ok else 1


def _check_url(settings: Settings) -> bool:
    try:
        info, source = external_url(settings)
        external.check_host(info, settings.allow_hosts, source)
        with connect(info, timeout=settings.start_timeout) as conn:
            print(f"  connected: PostgreSQL {conn.info.server_version}")
            external.check_database(conn, info)
            print(f"  databases labelled by pgsandbox: {len(provision.labelled_databases(conn))}")
            if not roles.rights(conn).may_create_databases:
                who = f"  the role {info.user!r} may not create databases"
                if info.dbname in external.MAINTENANCE_DATABASES:
                    print(f"{who}: grant it CREATEDB, or name in the URL a database it owns")
                    print("  to run the tests in, in place (transaction or reset isolation)")
                    return False
                print(f"{who}: the tests run in {info.dbname!r} in place")
                print("  (transaction or reset isolation, one run at a time)")
    except PgSandboxError as exc:  # refused, or url_command failed: the message says why
        print(f"  {mask(str(exc).strip())}")
        return False
    except Exception as exc:
        print(f"  cannot connect: {mask(str(exc).strip())}")
        return False
    return True


def _check_local(settings: Settings) -> bool:
    print("starting a throw-away local server to check that it works ...")
    began = time.monotonic()
    try:
        cluster = local_cluster(settings)
        cluster.start()
    except PgSandboxError as exc:
        print(f"  failed: {exc}")
        return False
    try:
        print(f"  ok: ready in {time.monotonic() - began:.2f} s ({cluster.describe()})")
    finally:
        cluster.stop()
    return True


def _print_servers(runtime: Path) -> None:
    recs = janitor.records(runtime)
    if not recs:
        print("servers: none")
        return
    print("servers:")
    now = time.time()
    for rec in recs:
        alive = "running" if janitor.is_alive(rec) else "not running"
        kind = "reusable" if rec.reusable else f"test run pid {rec.data.get('owner_pid')}"
        whose = f", for {rec.project or '?'}" if rec.reusable else ""
        age = _age(now - float(rec.data.get("created", now)))
        print(
            f"  {rec.name}: PostgreSQL {rec.data.get('version')}, {kind}, {alive}, "
            f"up {age}, {mask(rec.admin().url())}{whose}"
        )
        if rec.reusable and alive == "running":
            for name, label in _kept(rec.admin()):
                print(f"    kept database {name}: {label.get('test', '?')}")


def _kept(info: ConnInfo) -> list[tuple[str, dict[str, object]]]:
    """Databases kept for inspection (keep setting) on the server ``info`` points at."""
    import psycopg

    try:
        with connect(info, timeout=10) as conn:
            return [
                (name, label)
                for name, label in provision.labelled_databases(conn)
                if label.get("kind") == "kept"
            ]
    except psycopg.Error:
        return []


def _reusable(
    runtime: Path, name: str | None, project: str | None = None
) -> list[janitor.ServerRecord]:
    """Running reusable servers: all, the one named ``name``, or those of ``project``."""
    return [
        rec
        for rec in janitor.records(runtime)
        if rec.reusable
        and (name is None or rec.name == name)
        and (project is None or rec.project == project)
        and janitor.is_alive(rec)
    ]


def cmd_start(args: argparse.Namespace) -> int:
    settings = load_settings(flags(args))
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    binaries = find_binaries(settings.bin_dir)
    project = project_folder()
    for rec in _reusable(runtime, None, project):
        if rec.data.get("bin_key") == binaries.key:
            print(f"already running: {rec.name} ({mask(rec.admin().url())})")
            return 0
    # Under the lock test runs take too.
    cluster = reusable_server(settings, binaries, project=project, by="pgsandbox start")
    if not isinstance(cluster, LocalCluster):
        print(f"already running: {cluster.describe()}")
        return 0
    print(f"started {cluster.name}: {cluster.describe()} in {cluster.startup_seconds:.2f} s")
    print(f"url: {mask(cluster.admin.url())}   (pgsandbox url --reveal-password to see it)")
    print(
        f"test runs of {project} with the same binaries use it (other projects' runs only "
        "when given its URL); stop it with: pgsandbox stop"
    )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    settings = load_settings(flags(args))
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    project = project_folder()
    recs = [
        r
        for r in janitor.records(runtime)
        if r.reusable and (r.name == args.name if args.name else r.project == project)
    ]
    if not recs:
        print(f"no reusable server of {project} is running (pgsandbox status lists them all)")
        return 0
    for rec in recs:
        janitor.reap_one(runtime, rec)
        print(f"stopped {rec.name}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_settings(flags(args))
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    _print_servers(runtime)
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    settings = load_settings(flags(args))
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    project = project_folder()
    recs = _reusable(runtime, args.name, None if args.name else project)
    if not recs:
        print(
            f"no reusable server of {project} is running; start one with: pgsandbox start "
            "(pgsandbox status lists the servers of all projects; name one with --name)",
            file=sys.stderr,
        )
        return 1
    info = recs[0].admin().for_db(args.dbname)
    print(info.url(masked=not args.reveal_password))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    if not args.older_than > 0:  # also NaN
        print(
            f"pgsandbox gc: --older-than must be a positive number of hours (got "
            f"{args.older_than:g}); what a run that is still going uses is never dropped.",
            file=sys.stderr,
        )
        return 2
    settings = load_settings(flags(args))
    runtime = places.runtime_dir(settings.runtime_dir, settings.tmpfs)
    reaped = janitor.reap(runtime)
    from pytest_pgsandbox._engine.servers.cache import prune

    cache = places.cache_dir(settings.cache_dir, runtime)
    reaped += [f"cache entry {name}" for name in prune(cache)]
    if args.all:
        for rec in _reusable(runtime, None):
            janitor.reap_one(runtime, rec)
            reaped.append(f"server {rec.name} (reusable; --all)")
    for rec in _reusable(runtime, None):  # kept databases of ended runs, and the like
        where = f"reusable server {rec.name}"
        reaped += _gc_databases(rec.admin(), args.older_than, settings.start_timeout, where)
    if settings.url:
        info = ConnInfo.from_conninfo(settings.url)  # checked when the settings were read
        reaped += _gc_databases(info, args.older_than, settings.start_timeout, "--url")
    reaped += _gc_containers(args.all)
    for line in reaped:
        print(f"reaped {line}")
    if not reaped:
        print("nothing to reap")
    return 0


def _gc_containers(everything: bool) -> list[str]:
    """Our containers whose run has ended (and, with --all, those kept for reuse)."""
    from pytest_pgsandbox._engine.servers import docker

    if docker.daemon_problem() is not None:
        return []  # no Docker here: nothing of ours can be running in it
    client = docker.client()
    try:
        reaped = docker.reap(client)
        if everything:
            for found in docker.reusable(client):
                found.remove(force=True, v=True)
                reaped.append(f"container {found.name} (kept for reuse; --all)")
    finally:
        client.close()
    return reaped


def _gc_databases(info: ConnInfo, older_than_hours: float, timeout: float, where: str) -> list[str]:
    """Drop labelled databases whose run has ended (same host) or that are too old.

    Never what a run that is still going uses: its process runs (same host), or the
    database has sessions. Templates are meant to outlive runs: only the newest few are kept.
    """
    import psycopg

    try:
        return _gc_on(info, older_than_hours, timeout)
    except psycopg.Error as exc:
        reason = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise PgSandboxError(
            f"could not clean up the server at {mask(info.url())} ({where}): {reason}"
        ) from None


def _gc_on(info: ConnInfo, older_than_hours: float, timeout: float) -> list[str]:
    from pytest_pgsandbox._engine.templates.template import reap_old_templates
    from pytest_pgsandbox._engine.templates.template import templates

    out = []
    now = time.time()
    with connect(info, timeout=timeout) as conn:
        families = sorted({str(label.get("family", "schema")) for _n, label in templates(conn)})
        for family in families:
            out += [
                f"database {name} (an old template)"
                for name in reap_old_templates(conn, "", family=family)
            ]
        for name, label in provision.labelled_databases(conn):
            if label.get("builtin") or label.get("kind") == "template":
                continue
            why = _stale(label, now, older_than_hours)
            if why and not _in_use(conn, "datname", name):
                provision.drop_database(conn, name)
                if label.get("kind") == "kept":
                    why = f"kept for {label.get('test', '?')}"
                out.append(f"database {name} ({why})")
        # Per-worker roles of runs that were killed (their databases went first).
        for name, label in roles.worker_roles(conn):
            why = _stale(label, now, older_than_hours)
            if why and not _in_use(conn, "usename", name) and roles.drop_worker_role(conn, name):
                out.append(f"role {name} (a worker's role; {why})")
        # Roles made for pytest-postgresql's user= (not while a kept template is theirs).
        for name, label in roles.worker_roles(conn, roles.COMPAT_ROLE):
            why = _stale(label, now, older_than_hours)
            if why and not _in_use(conn, "usename", name) and roles.drop_worker_role(conn, name):
                out.append(f"role {name} (a pytest-postgresql user's role; {why})")
    return out


def _in_use(conn: Any, column: str, name: str) -> bool:
    """Whether a database (``datname``) or role (``usename``) has sessions other than ours."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
    row = conn.execute(query + ("datname = %s" if column == "datname" else "usename = %s"), (name,))
    return bool(row.fetchone()[0])


def _stale(label: dict[str, Any], now: float, older_than_hours: float) -> str:
    """Why what carries ``label`` may go: its run ended (on this host), or it is too old;
    "" while its run is still going here, whatever its age."""
    import socket

    pid = int(label.get("pid", 0))
    if label.get("host") == socket.gethostname() and pid:
        if janitor.cmdline(pid) is None:
            return "its run has ended"
        return ""  # its run is still going
    if now - float(label.get("created", now)) > older_than_hours * 3600:
        return f"older than {older_than_hours} h"
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgsandbox",
        description="Look at, start, stop and clean up the PostgreSQL servers and databases "
        "that pytest-pgsandbox uses.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    where = ("tmpfs", "runtime_dir")
    local = ("bin_dir", "tcp", "port", "conf", "cache_dir", "start_timeout", *where)

    p = sub.add_parser("doctor", help="explain what was found here, and check that it works")
    add_setting_flags(p, ("server", "url", "url_command", "allow_hosts", "image", *local))
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("start", help="start a local server that this project's test runs reuse")
    add_setting_flags(p, local)
    p.set_defaults(func=cmd_start)

    for name, func, text in (
        ("stop", cmd_stop, "stop this project's reusable server (or the one --name names)"),
        ("status", cmd_status, "list local servers and whether they run"),
        ("url", cmd_url, "print the URL of this project's reusable server (or --name's)"),
    ):
        p = sub.add_parser(name, help=text)
        add_setting_flags(p, where)
        if name in ("stop", "url"):
            p.add_argument("--name", help="the server's name (see pgsandbox status)")
        if name == "url":
            p.add_argument("--dbname", default="postgres", help="database in the URL")
            p.add_argument("--reveal-password", action="store_true", help="print the real password")
        p.set_defaults(func=func)

    p = sub.add_parser("gc", help="reap servers, folders and databases left by ended runs")
    add_setting_flags(p, ("url", *where))
    p.add_argument(
        "--all",
        action="store_true",
        help="also stop reusable servers and remove containers kept for reuse",
    )
    p.add_argument(
        "--older-than",
        type=float,
        default=24.0,
        metavar="HOURS",
        help="also drop labelled databases older than this many hours, positive (default "
        "24); never those of a run that is still going",
    )
    p.set_defaults(func=cmd_gc)

    from pytest_pgsandbox.cli.scenario import register

    register(sub, add_setting_flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except PgSandboxError as exc:
        print(f"pgsandbox: {exc}", file=sys.stderr)
        return 1
    return code
