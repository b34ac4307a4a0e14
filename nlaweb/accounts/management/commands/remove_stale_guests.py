"""`manage.py remove_stale_guests [--older-than-days N]`: delete guest accounts that own nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from nlaweb.accounts.guests import remove_stale_guests

DEFAULT_DAYS = 7


class Command(BaseCommand):
    help = "Delete guest accounts older than N days that own no conversation."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=float,
            default=DEFAULT_DAYS,
            help=f"only guests created at least this many days ago (default {DEFAULT_DAYS})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than_days"]
        if days < 0:
            self.stderr.write("--older-than-days must be 0 or more.")
            raise SystemExit(2)
        removed = remove_stale_guests(timedelta(days=days))
        self.stdout.write(f"Removed {removed} stale guest account{'s' if removed != 1 else ''}.")
