"""DKIM keys and their check: ``dkim keygen`` before configuring, ``dkim check`` after.

``keygen`` needs no configuration (it comes first); it writes the private key with mode
0600 and never over an existing file unless told, because overwriting a published key
breaks every message signed with it. ``check`` signs and verifies a test message with the
configured key, and compares the key published in DNS, so a setup is known to work before
the morning's send rather than from a receiver's DMARC report.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from pathlib import Path

import click

from newsletter.cli.base import App, cli, pass_app
from newsletter.config import DKIM_ALGORITHMS, DkimConfig, find_config_path
from newsletter.dkim import generate_key, record_name, zone_file_value
from newsletter.dkimcheck import check
from newsletter.errors import ConfigError, UsageError

_FIELDS = {f.name: f for f in dataclasses.fields(DkimConfig)}


def _config_rule(name: str) -> click.types.FuncParamType:
    """Check an option by the rule of its ``[dkim]`` key, so a key made here is one the config accepts."""
    spec = _FIELDS[name]

    def convert(value: str) -> str:
        try:
            checked = spec.metadata["check"](value)
        except ValueError as exc:
            raise click.BadParameter(f"expected {exc or spec.metadata['expected']}, got {value!r}") from None
        if not checked:
            raise click.BadParameter("must not be empty")
        return str(checked)

    convert.__name__ = name
    return click.types.FuncParamType(convert)


def _base_directory(app: App) -> Path:
    """The directory of the configuration in use when there is one, else the current directory.

    Relative paths in the configuration are read from its directory, so a key written there
    is found by the ``key_file`` line printed; before any configuration exists, the current
    directory is where ``newsletter init`` will write one.
    """
    try:
        path = find_config_path(app.config_path, os.environ)
    except ConfigError:
        return Path.cwd()
    return path.resolve().parent if path.is_file() else Path.cwd()


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Write ``data`` readable by its owner only; never through an existing file.

    O_EXCL creates the file with mode 0600 from the start (no window in which it is
    readable); with ``force`` a new file replaces the old one in one rename.
    """
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise UsageError(f"{path} is not a regular file; a private key is written only to a new or existing file")
    if path.exists() and not force:
        raise UsageError(f"{path} already exists; keep it (it may be the published key) or pass --force")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = path if not force else path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; keep it (it may be the published key) or pass --force") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if target != path:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _shown_path(path: Path, base: Path) -> str:
    """The path as a ``key_file`` line should say it: relative to the config's directory when inside it."""
    try:
        return str(path.resolve().relative_to(base))
    except ValueError:
        return str(path.resolve())


@cli.group()
def dkim() -> None:
    """DKIM signing: make a key, publish it, check the setup.

    \b
    Example:
      newsletter dkim keygen --domain news.example.com --selector breakfast2026
      newsletter dkim check
    """


@dkim.command("keygen")
@click.option("--domain", required=True, type=_config_rule("domain"), help="Signing domain (the From domain).")
@click.option("--selector", required=True, type=_config_rule("selector"), help="Selector to publish the key under.")
@click.option(
    "--algorithm",
    type=click.Choice(DKIM_ALGORITHMS),
    default="rsa-sha256",
    show_default=True,
    help="RSA-2048 (every receiver) or Ed25519 (a second, modern signature).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (default: dkim/SELECTOR.DOMAIN.pem beside the configuration, "
    "or in the current directory when there is none).",
)
@click.option("--force", is_flag=True, help="Replace an existing key file.")
@pass_app
def keygen(app: App, domain: str, selector: str, algorithm: str, out: Path | None, force: bool) -> None:
    """Make a DKIM key pair: write the private key (mode 0600), print the DNS record to publish.

    Works before any configuration exists. Publish the TXT record, add the printed lines
    to [dkim], then run `newsletter dkim check`.

    \b
    Example:
      newsletter dkim keygen --domain news.example.com --selector breakfast2026
      newsletter dkim keygen --domain news.example.com --selector breakfast2026e --algorithm ed25519-sha256
    """
    base = _base_directory(app)
    path = out if out is not None else Path("dkim") / f"{selector}.{domain}.pem"
    if not path.is_absolute():
        path = (Path.cwd() if out is not None else base) / path
    pem, record = generate_key(algorithm)
    _write_private(path, pem, force)
    name = record_name(selector, domain)
    key_file = _shown_path(path, base)
    click.echo(f"wrote {path} (the private key, mode 0600: keep it secret)")
    click.echo("publish this DNS TXT record:")
    click.echo(f"  name:  {name}")
    click.echo(f"  value: {record}")
    click.echo("  as a zone file writes it (TXT strings hold 255 bytes at most):")
    click.echo(f"    {name}. IN TXT ( {zone_file_value(record, separator=chr(10) + ' ' * 6)} )")
    click.echo("then add to [dkim] in the configuration:")
    click.echo(f'  domain = "{domain}"')
    if algorithm == "ed25519-sha256":
        click.echo(f'  ed25519_selector = "{selector}"')
        click.echo(f'  ed25519_key_file = "{key_file}"')
        click.echo(f'  (beside an RSA key; alone: selector = "{selector}", algorithm = "ed25519-sha256", key_file)')
    else:
        click.echo(f'  selector = "{selector}"')
        click.echo(f'  algorithm = "{algorithm}"')
        click.echo(f'  key_file = "{key_file}"')
    click.echo("and run `newsletter dkim check` once the record is published")


@dkim.command("check")
@click.option("--no-dns", is_flag=True, help="Check the key and signatures only, not the published DNS record.")
@pass_app
def dkim_check(app: App, no_dns: bool) -> None:
    """Sign a test message with the configured key(s), verify it, and compare the DNS record.

    The signature is verified with dkimpy against the key's own public half, then (unless
    --no-dns) against the record published at SELECTOR._domainkey.DOMAIN. DNS that cannot
    be reached is skipped with a note. Exit 1 on a problem, 2 when [dkim] is not configured.

    \b
    Example:
      newsletter dkim check
      newsletter dkim check --no-dns      # before the record is published
    """
    config = app.config
    if not config.dkim.enabled:
        raise ConfigError(
            config.source,
            "dkim.domain",
            "missing: DKIM signing is off; set [dkim] domain, selector and key_file "
            "(`newsletter dkim keygen` makes a key)",
        )
    result = check(
        config.dkim,
        app.clock.now(),
        dns=not no_dns,
        from_address=config.sender.from_address,
    )
    for line in result.lines:
        click.echo(line)
    if result.problem is not None:
        raise result.problem
    if result.dns_checked:
        click.echo("DKIM is ready: messages will be signed and receivers can verify them")
    else:
        click.echo("the key signs and verifies; the published DNS record is still to be compared")
