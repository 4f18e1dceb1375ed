"""`userdest`, the operator CLI: the database, apps, keys, domains, definitions, profiles, replays,
dead letters and queues.

Every command takes `--json` for a machine answer (indented JSON on stdout) and otherwise prints
tables. A mistake the operator can fix (an unknown app, a bad type, an unreachable database) ends
as one line on stderr and a non-zero exit, never a traceback. Each command is one unit of work:
settings and an engine are made when it runs, so `--help` needs no database.
"""

from __future__ import annotations

from typing import Any

import click
import psycopg
from sqlalchemy.exc import DBAPIError

from ops.cli import (
    apps,
    attributes,
    companies,
    db,
    deadletters,
    domains,
    events,
    keys,
    maintenance,
    messages,
    queue,
    replay,
    suppressions,
    users,
    webhook_secret,
)
from ops.cli.common import EXIT_USAGE, database_error, one_line
from shared.readmodel import NotFound
from shared.search import BadFilter
from shared.settings import SettingsError
from shared.tenancy import TenancyError


class _UsageMistake(click.ClickException):
    exit_code = EXIT_USAGE  # what Click's own usage errors exit with


class _Cli(click.Group):
    """The root group: turns every expected failure into one line on stderr."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # A mistake in the root's own options (`userdest --bogus`) is found here, before invoke.
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _UsageMistake(
                f"{one_line(exc.format_message())} (see `{info_name or 'userdest'} --help`)"
            ) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SettingsError, TenancyError, NotFound, BadFilter) as exc:
            raise click.ClickException(one_line(str(exc))) from None
        except DBAPIError as exc:
            raise click.ClickException(one_line(database_error(exc))) from None
        except psycopg.Error as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise click.ClickException(f"cannot reach the database: {one_line(message)}") from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            # Click prints usage, a hint and the error over four lines; operators get one.
            path = exc.ctx.command_path if exc.ctx else "userdest"
            raise _UsageMistake(f"{one_line(exc.format_message())} (see `{path} --help`)") from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="userdest", prog_name="userdest", message="%(prog)s %(version)s")
def main() -> None:
    """Operate userdest: the database, apps, API keys, trusted domains, attributes, profiles,
    replays, dead letters and queues.

    Reads DATABASE_URL (postgresql://user@host:5432/db) and, for replay, deadletters replay and
    queue, REDIS_URL (redis://host:6379/0). Every command takes --json.
    """


for command in (
    db.db,
    apps.apps,
    keys.keys,
    domains.domains,
    webhook_secret.webhook_secret,
    attributes.attributes,
    events.events,
    suppressions.suppressions,
    users.users,
    companies.companies,
    replay.replay_group,
    deadletters.deadletters,
    queue.queue,
    messages.messages,
    maintenance.maintenance,
):
    main.add_command(command)

__all__ = ["main"]
