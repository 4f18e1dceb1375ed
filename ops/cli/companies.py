"""`userdest companies`: companies and their members."""

from __future__ import annotations

import click

from ops.cli.common import app_option, emit, in_app, in_transaction, json_option, limit_option
from shared import readmodel


@click.group()
def companies() -> None:
    """Companies, looked up by groupId."""


@companies.command("show")
@app_option
@click.argument("group_id")
@limit_option
@click.option("--after", metavar="CURSOR", help="Continue the members after this next_cursor.")
@json_option
def companies_show(
    app_name: str, group_id: str, limit: int, after: str | None, as_json: bool
) -> None:
    """Show the company GROUP_ID and a page of the users linked to it (--limit, then --after the
    answer's next_cursor)."""
    found = in_transaction(
        in_app(
            app_name,
            lambda s, app_id: readmodel.company_profile(s, app_id, group_id, limit, after),
        )
    )
    emit(found, as_json, title=f"company {group_id}")


@companies.command("list")
@app_option
@limit_option
@click.option("--after", metavar="CURSOR", help="Continue after this cursor.")
@json_option
def companies_list(app_name: str, limit: int, after: str | None, as_json: bool) -> None:
    """List the app's companies with their member counts, a page at a time."""
    found = in_transaction(
        in_app(app_name, lambda s, app_id: readmodel.company_list(s, app_id, limit, after))
    )
    emit(found if as_json else [{k: v for k, v in r.items() if k != "cursor"} for r in found],
         as_json, title="companies", empty="no companies")  # fmt: skip
    if not as_json and len(found) == limit:
        click.echo(f"more: --after {found[-1]['cursor']}", err=True)
