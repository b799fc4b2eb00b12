"""Click commands for API tokens: create (shown once), revoke, list."""

from __future__ import annotations

import datetime as dt

import click
from flask import current_app
from flask.cli import with_appcontext

from . import auth
from .cli_errors import one_line_errors
from .extensions import db
from .models import API_SCOPES


def _when(value: dt.datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


@click.command("create-api-token")
@click.option("--name", required=True, help="Who or what uses it, e.g. grafana or ci-deploy.")
@click.option(
    "--scope",
    type=click.Choice(API_SCOPES),
    required=True,
    help="read: every GET; write: also POST /api/rfm/calculate/ and /admin.",
)
@with_appcontext
@one_line_errors
def create_api_token(name: str, scope: str) -> None:
    """Create an API token and print it once (only its hash is stored).

    The token goes to stdout alone, the notes to stderr, so
    TOKEN=$(flask create-api-token ...) captures just the token.
    """
    try:
        token = auth.create_token(db.engine, name, scope)
    except auth.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {scope} token {name!r}; copy it now, it is not shown again:", err=True)
    click.echo(token)
    if not auth.enabled(current_app):
        click.echo("note: RFM_AUTH is off here, so this service does not check tokens", err=True)


@click.command("revoke-api-token")
@click.argument("name")
@with_appcontext
@one_line_errors
def revoke_api_token(name: str) -> None:
    """Revoke the API token called NAME; it stops working at once."""
    try:
        auth.revoke_token(db.engine, name)
    except auth.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked API token {name!r}")


@click.command("list-api-tokens")
@with_appcontext
@one_line_errors
def list_api_tokens() -> None:
    """List API tokens (names, scopes, dates; never the tokens)."""
    tokens = auth.list_tokens(db.engine)
    if not tokens:
        click.echo("no API tokens (create one with flask create-api-token)")
        return
    width = max(4, *(len(t["name"]) for t in tokens))
    click.echo(f"{'name':<{width}}  scope  {'created':<25}  revoked")
    for t in tokens:
        click.echo(
            f"{t['name']:<{width}}  {t['scope']:<5}  {_when(t['created_at']):<25}  "
            f"{_when(t['revoked_at'])}"
        )


def token_commands() -> list[click.Command]:
    return [create_api_token, revoke_api_token, list_api_tokens]
