"""`amber target`: named backup targets (a filesystem path or an S3 bucket) and their health.

Definitions live in a JSON file (default /etc/amber/targets.json, or --config, or the
AMBER_CONFIG environment variable, read here at the edge); secrets are referenced by file path
and never printed. See `amber.backup.targets` for the format.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from amber.backup.config import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from amber.backup.crypto import ENCRYPTION_AES, ENCRYPTION_NONE
from amber.backup.repository import Repository
from amber.backup.targets import (
    DEFAULT_CONFIG,
    Target,
    TargetConfig,
    TargetRuntime,
    TargetStatus,
    open_store,
    open_target_repository,
    target_status,
)
from amber.blobstore.base import BlobStore
from amber.blobstore.filestore import FileStore
from amber.blobstore.retry import RetryingStore
from amber.cli import output
from amber.cli.state import state
from amber.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    SizeTooLarge,
    Unavailable,
)
from amber.domain.units import format_size, parse_size
from amber.ops.targets import open_target

CONFIG_META = "amber.targets-config"
PASSWORD_ENV = "AMBER_PASSWORD"
PASSWORD_FILE_ENV = "AMBER_PASSWORD_FILE"

app = typer.Typer(
    help="Add, list, check and remove backup targets (S3 buckets or directories).",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="AMBER_CONFIG",
        help=f"Targets file (default {DEFAULT_CONFIG}).",
        show_envvar=True,
    ),
]


def remember_config(ctx: typer.Context, config: Path | None) -> None:
    """Keep the --config value for the subcommands of this group."""
    if config is not None:
        ctx.meta[CONFIG_META] = config.absolute()


def targets_config(ctx: typer.Context) -> TargetConfig:
    """The targets file this invocation uses."""
    path = ctx.meta.get(CONFIG_META)
    return TargetConfig(path if isinstance(path, Path) else DEFAULT_CONFIG)


def edge_password(name: str, environ: Mapping[str, str], *, confirm: bool = False) -> str:
    """The password of target `name`, which asks for one: the file AMBER_PASSWORD_FILE names,
    else AMBER_PASSWORD, else a prompt when stdin is a terminal (not echoed; asked twice with
    `confirm`). Its text is never printed or logged."""
    path = environ.get(PASSWORD_FILE_ENV)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidArgument(f"cannot read {PASSWORD_FILE_ENV} ({path}): {e}") from None
        if not text:
            raise InvalidArgument(f"the password file {path} ({PASSWORD_FILE_ENV}) is empty")
        return text
    if environ.get(PASSWORD_ENV):
        return environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise InvalidArgument(
            f"target {name!r} asks for its password: set {PASSWORD_FILE_ENV} or {PASSWORD_ENV}, "
            "or run on a terminal to be asked"
        )
    return _prompt(name, confirm=confirm)


def _prompt(name: str, *, confirm: bool) -> str:
    import getpass

    text = getpass.getpass(f"password of target {name}: ")
    if not text:
        raise InvalidArgument("the password is empty")
    if confirm and getpass.getpass("the same again: ") != text:
        raise InvalidArgument("the passwords differ")
    return text


def runtime_for(target: Target, runtime: TargetRuntime, *, confirm: bool = False) -> TargetRuntime:
    """`runtime` with the password of a target that asks for one (see `edge_password`)."""
    if not target.asks_password:
        return runtime
    password = edge_password(target.name, os.environ, confirm=confirm)
    return dataclasses.replace(runtime, password=password)


def open_repository(
    ctx: typer.Context, name: str, runtime: TargetRuntime, *, create: bool = False
) -> Repository:
    """The repository of target `name` of this invocation's targets file (`runtime`, with the
    password of a target that asks for one), opened as every edge opens it
    (`amber.ops.targets.open_target`)."""
    return open_target(
        name,
        config_path=targets_config(ctx).path,
        runtime_for=lambda target: runtime_for(target, runtime),
        create=create,
    )


@app.callback()
def group(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Backup targets."""
    remember_config(ctx, config)


def _absolute(path: Path | None) -> str | None:
    return None if path is None else str(path.absolute())


def _options(
    endpoint: str | None,
    region: str | None,
    path_style: bool,
    no_verify_tls: bool,
    ca_bundle: Path | None,
    access_key: str | None,
    credentials_file: Path | None,
) -> dict[str, str]:
    given = {
        "endpoint": endpoint,
        "region": region,
        "ca-bundle": _absolute(ca_bundle),
        "access-key": access_key,
        "credentials-file": _absolute(credentials_file),
    }
    options = {key: value for key, value in given.items() if value}
    if path_style:
        options["path-style"] = "true"
    if no_verify_tls:
        options["verify-tls"] = "false"
    return options


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Target name: lowercase letters, digits, '-'.")],
    url: Annotated[
        str, typer.Argument(help="file:///absolute/path or s3://bucket or s3://bucket/prefix.")
    ],
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="S3 endpoint URL (MinIO, Ceph…).")
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="S3 region.")] = None,
    path_style: Annotated[
        bool, typer.Option("--path-style", help="Path-style S3 addressing.")
    ] = False,
    no_verify_tls: Annotated[
        bool, typer.Option("--no-verify-tls", help="Do not verify the S3 certificate.")
    ] = False,
    ca_bundle: Annotated[
        Path | None, typer.Option("--ca-bundle", help="PEM file of CAs to trust.")
    ] = None,
    access_key: Annotated[
        str | None, typer.Option("--access-key", help="S3 access key id.")
    ] = None,
    secret_key_file: Annotated[
        Path | None, typer.Option("--secret-key-file", help="File holding the S3 secret key.")
    ] = None,
    credentials_file: Annotated[
        Path | None,
        typer.Option("--credentials-file", help="AWS-style credentials file (key = value)."),
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="File holding the repository password.")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Key file (32+ random bytes) instead.")
    ] = None,
    no_encryption: Annotated[
        bool, typer.Option("--no-encryption", help="Store backups unencrypted (explicit).")
    ] = False,
    init: Annotated[
        bool,
        typer.Option(
            "--init",
            help="Create the repository now (and a file target's directory), or check it opens.",
        ),
    ] = False,
    chunk_size: Annotated[
        str | None,
        typer.Option(
            "--chunk-size",
            help="With --init: the new repository's chunk size, a power of two from 512 to 64Mi "
            f"(default {DEFAULT_CHUNK_SIZE // 1024}Ki), e.g. 1Mi.",
        ),
    ] = None,
    create_bucket: Annotated[
        bool, typer.Option("--create-bucket", help="Create the S3 bucket if it does not exist.")
    ] = False,
    no_check: Annotated[
        bool,
        typer.Option(
            "--no-check",
            help="Save without checking that the target answers and the password opens it.",
        ),
    ] = False,
) -> None:
    """Define a backup target. Secrets are referenced by file, never stored or shown.

    Before saving, the target is checked: it must answer, take a write, and (if it holds a
    repository already) open with the password or key given.
    """
    st = state(ctx)
    chunk = _chunk_size(chunk_size, init=init)
    target = Target(
        name=name,
        url=url,
        options=_options(
            endpoint, region, path_style, no_verify_tls, ca_bundle, access_key, credentials_file
        ),
        secret_key_file=_absolute(secret_key_file),
        encryption=ENCRYPTION_NONE if no_encryption else ENCRYPTION_AES,
        password_file=_absolute(password_file),
        key_file=_absolute(key_file),
    )
    target.validate()
    store = open_store(target)  # checks the URL and options (no I/O)
    config = targets_config(ctx)
    if name in config.load():
        config.add(target)  # AlreadyExists, before anything is made
    made = _prepare(store, init=init, create_bucket=create_bucket, check=not no_check)
    repository_id = chunk_bytes = None
    if init or not no_check:
        runtime = runtime_for(target, TargetRuntime.for_commands(os.environ), confirm=init)
    if init:
        opened = open_target_repository(
            target, create=True, runtime=runtime, chunk_size=chunk or DEFAULT_CHUNK_SIZE
        )
        _check_chunk_size(name, opened, chunk)
        repository_id, chunk_bytes = opened.config.repository_id, opened.config.chunk_size
    elif not no_check:
        _check(target, runtime)
    config.add(target)
    if st.json:
        output.print_json(
            {
                "target": target.public(),
                "repository_id": repository_id,
                "chunk_size": chunk_bytes,
                "created": made,
            }
        )
        return
    for what in made:
        output.console().print(f"Created {what}.")
    output.console().print(f"Target {name} added to {config.path}.")
    if repository_id:
        output.console().print(f"Repository {repository_id} is ready.")


def _chunk_size(text: str | None, *, init: bool) -> int | None:
    """The bytes of `--chunk-size` (None when not given); InvalidArgument (one line, exit 2)
    for a size that is not a power of two the repository format accepts, or without --init."""
    if text is None:
        return None
    if not init:
        raise InvalidArgument("--chunk-size is the chunk size of a new repository: add --init")
    wanted = (
        f"--chunk-size must be a power of two from {format_size(MIN_CHUNK_SIZE)} to "
        f"{format_size(MAX_CHUNK_SIZE)} (e.g. 256Ki, 1Mi)"
    )
    try:
        value = parse_size(text)
    except SizeTooLarge:
        raise InvalidArgument(f"{wanted}, not {text.strip()}") from None
    if value & (value - 1) or not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
        raise InvalidArgument(f"{wanted}, not {text.strip()} ({value:,} bytes)")
    return value


def _check_chunk_size(name: str, repository: Repository, chunk: int | None) -> None:
    """A repository that was there already keeps its chunk size: refuse a different one."""
    found = repository.config.chunk_size
    if chunk is not None and found != chunk:
        raise FailedPrecondition(
            f"target {name!r} holds a repository already, with {format_size(found)} chunks: "
            "--chunk-size only sets a new repository's; add the target without it"
        )


def _prepare(store: BlobStore, *, init: bool, create_bucket: bool, check: bool) -> list[str]:
    """Make what the target's place needs: a file target's directory (with --init), an S3
    bucket (with --create-bucket). What was made, for the user."""
    inner = store.inner if isinstance(store, RetryingStore) else store
    made: list[str] = []
    if isinstance(inner, FileStore):
        if create_bucket:
            raise InvalidArgument("--create-bucket is for S3 targets")
        if init or (check and not inner.root.is_dir()):
            if not init:
                raise NotFound(
                    f"directory {inner.root} does not exist: create it, or add --init to create "
                    "it with the repository"
                )
            if not inner.root.is_dir():
                inner.root.mkdir(parents=True, mode=0o700)
                made.append(f"directory {inner.root}")
        return made
    if create_bucket:
        from amber.blobstore.s3store import S3Store  # the S3 client only for S3 targets

        if isinstance(inner, S3Store) and inner.ensure_bucket():
            made.append(f"bucket {inner.config.bucket}")
    return made


def _check(target: Target, runtime: TargetRuntime) -> None:
    """The target answers, takes a write, and its credential opens its repository (if any)."""
    found = target_status(target, runtime)
    if not (found.reachable and found.writable):
        raise Unavailable(
            f"target {target.name!r} is not usable: {found.error} (fix it, or add --no-check "
            "to save it anyway)"
        )
    if found.unlocked is False:
        raise PermissionDenied(f"target {target.name!r}: {found.error}")


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every target (no secrets are shown)."""
    st = state(ctx)
    targets = [t.public() for t in targets_config(ctx).load().values()]
    if st.json:
        output.print_json(targets)
        return
    table = output.new_table(title="Backup targets", title_justify="left")
    for column in ("NAME", "URL", "ENCRYPTION", "CREDENTIAL", "OPTIONS"):
        table.add_column(column)
    for t in targets:
        options = ", ".join(f"{k}={v}" for k, v in t["options"].items()) or "-"
        table.add_row(t["name"], t["url"], t["encryption"], t["credential"], options)
    output.console().print(output.fit(table, "NAME", "URL"))


def _status_rows(s: TargetStatus) -> list[tuple[str, str]]:
    def yes(value: bool | None) -> str:
        return "-" if value is None else "yes" if value else "NO"

    rows = [
        ("where", s.where),
        ("reachable", yes(s.reachable)),
        ("writable", yes(s.writable)),
        ("latency", "-" if s.latency_ms is None else f"{s.latency_ms:.1f} ms"),
        ("repository", f"version {s.repository_version}" if s.initialized else "not initialized"),
    ]
    if s.initialized:
        rows += [
            ("repository id", s.repository_id or "-"),
            ("encryption", s.encryption or "-"),
            ("credential opens it", yes(s.unlocked)),
            ("size", format_size(s.size_bytes or 0)),
            ("objects", str(s.objects)),
            ("backups", str(s.backups)),
        ]
    if s.error:
        rows.append(("error", s.error))
    return rows


@app.command("status")
def status(ctx: typer.Context, name: str) -> None:
    """Reachable, writable, latency, repository version and size of one target."""
    st = state(ctx)
    target = targets_config(ctx).get(name)
    found = target_status(target, runtime_for(target, TargetRuntime()))
    if st.json:
        output.print_json(found)
    else:
        output.console().print(output.details(f"Target {name}", _status_rows(found)))
    if not (found.reachable and found.writable):
        raise Unavailable(f"target {name!r} is not usable: {found.error}")
    if found.unlocked is False:
        raise PermissionDenied(f"target {name!r}: {found.error}")


@app.command("remove")
def remove(ctx: typer.Context, name: str) -> None:
    """Forget a target. Its repository and backups are left untouched."""
    st = state(ctx)
    removed = targets_config(ctx).remove(name)
    if st.json:
        output.print_json({"removed": removed.public()})
    else:
        output.console().print(f"Target {name} removed (its backups are still in {removed.url}).")
