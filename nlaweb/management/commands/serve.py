"""Serve the app with daphne; in the embedded mode, also run the GPU worker in this process."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve nlaweb over HTTP and websockets (daphne); embedded mode also starts the worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        from daphne.cli import CommandLineInterface

        if settings.EMBEDDED_WORKER:
            from nlaweb.jobs.embedded import start_embedded_sweeper, start_embedded_worker

            start_embedded_worker()
            start_embedded_sweeper()
            self.stdout.write(
                "Embedded worker and sweeper ready (in-process queue and channel layer)."
            )
        self.stdout.write(f"nlaweb on http://{host}:{port}/  (Ctrl+C to stop)")
        CommandLineInterface().run(["-b", host, "-p", str(port), "nlaweb.asgi:application"])
