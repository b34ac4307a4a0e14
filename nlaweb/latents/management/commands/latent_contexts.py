"""`manage.py latent_contexts <source_id>`: compute and store the top-activating contexts of the
latents of the SAE attached to a source (workers/nla/sae_contexts.py), from a corpus of texts."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from nlaweb.latents import attached
from nlaweb.sources.configured import get_source
from workers.nla.sae import Sae


class Command(BaseCommand):
    help = (
        "Compute the top-activating contexts of the latents of the SAE attached to a source over "
        "a corpus of texts, and store them beside the SAE (top_contexts.json) for the latents "
        "page. Latents that have contexts are skipped unless --force."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("source_id")
        parser.add_argument(
            "--texts",
            type=Path,
            help='a JSON list of strings (or {"texts": [...]}), or a text file of one text a '
            "line; default: the demo SAE's corpus (the demo corpus and the starter prompts)",
        )
        parser.add_argument("--per-latent", type=int, default=8, help="contexts kept a latent")
        parser.add_argument("--force", action="store_true", help="compute every latent again")

    def handle(self, *args: Any, **options: Any) -> None:
        from workers.nla.sae_contexts import compute_contexts, stored_contexts

        target_ref, sae = _attached_sae(options["source_id"])
        have = set() if options["force"] else set(stored_contexts(sae.directory))
        todo = [i for i in range(sae.config.d_sae) if str(i) not in have]
        if not todo:
            self.stdout.write(
                f"All {sae.config.d_sae} latents have contexts; --force computes them again."
            )
            return
        texts = _texts(options["texts"])
        self.stdout.write(
            f"{len(todo)} of {sae.config.d_sae} latents to compute over {len(texts)} texts "
            f"({sae.config.d_sae - len(todo)} skipped: they have contexts)"
        )
        report = compute_contexts(
            sae.directory,
            sae.config,
            _target(target_ref),
            texts,
            options["per_latent"],
            todo,
            progress=self.stdout.write,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Contexts of {report.computed} latents stored ({report.kept} kept as they were) from "
                f"{report.tokens} tokens of {report.texts} texts: {sae.directory}"
            )
        )


def _attached_sae(source_id: str) -> tuple[str, Sae]:
    """The source's target ref and its SAE, checked to fit; CommandError with the sentence if not."""
    config, found = get_source(source_id), attached.source_sae(source_id)
    if config is None or found is None:
        raise CommandError(f"There is no NLA source '{source_id}' in the sources file.")
    if found.sae is None:
        raise CommandError(found.refusal)
    if not Path(config.sae or "").expanduser().is_dir():
        raise CommandError(
            f"The SAE '{config.sae}' is not a local directory; copy it to one and point the "
            "source's 'sae' there, so its contexts can be stored beside it."
        )
    return config.target, found.sae


def _texts(path: Path | None) -> list[str]:
    from workers.nla.demo_sae import demo_sae_texts
    from workers.nla.sae_contexts import read_texts

    try:
        texts = demo_sae_texts() if path is None else read_texts(path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"Could not read the texts: {exc}") from exc
    if not texts:
        raise CommandError(f"{path} holds no texts.")
    return texts


def _target(ref: str) -> Any:
    from workers.nla.loading import resolve_checkpoint, resolve_device, resolve_dtype
    from workers.nla.target import TargetModel

    device = resolve_device(settings.NLA_DEVICE)
    dtype = resolve_dtype(settings.NLA_DTYPE, device)
    return TargetModel.from_checkpoint(resolve_checkpoint(ref), device, dtype)
