"""Build the demo target (SmolLM2-135M-Instruct as safetensors) and the demo NLA; fast when done."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Convert the packaged SmolLM2 GGUF once and write the demo NLA (AV + AR) in the published format."

    def handle(self, *args: Any, **options: Any) -> None:
        from workers.nla.demo import build_demo

        report = build_demo(settings.DATA_DIR, progress=lambda line: self.stdout.write(line))
        self.stdout.write(self.style.SUCCESS(f"Demo NLA ready: {report}"))
