"""The latents page of a source: browse its SAE's latents, explain them (one, or a batch run), score
autointerp labels, export. Thin: parse, call nlaweb/latents/{batches,labels}.py, render.

A source's latents, their top contexts and their explanations are nobody's data (decoder rows,
shared per source); a run and a label belong to the person who made it (404 for anyone else)."""

from __future__ import annotations

import json
import random

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from nlaweb.accounts.guests import guest_on_post
from nlaweb.jobs.broker import QueueUnavailable
from nlaweb.latents import batches as explain
from nlaweb.latents import labels
from nlaweb.latents.attached import SourceSae, source_sae
from nlaweb.latents.models import LatentLabel, LatentRun
from nlaweb.sources.configured import configured_sources, default_source
from workers.nla.sae import SaeRefused

Rejections = (explain.LatentsRejected, SaeRefused, QueueUnavailable)


def _source(source_id: str) -> SourceSae:
    found = source_sae(source_id)
    if found is None:
        raise Http404("No such source.")
    return found


def _latent(source_id: str, index: int) -> SourceSae:
    found = _source(source_id)
    if found.sae is None or index >= found.d_sae:
        raise Http404("No such latent.")
    return found


def _sort(request: HttpRequest) -> tuple[str, bool]:
    key = request.GET.get("sort", "index")
    return (key if key in explain.SORTS else "index"), request.GET.get("dir") == "desc"


@require_GET
def default_latents(request: HttpRequest) -> HttpResponse:
    """The header's "Latents": the default source's latents page."""
    return redirect("latents", source_id=default_source().id)


@require_GET
def index(request: HttpRequest, source_id: str) -> HttpResponse:
    source = _source(source_id)
    if source.sae is not None and "random" in request.GET:
        return redirect("latent", source_id=source_id, index=random.randrange(source.d_sae))  # noqa: S311
    wanted = request.GET.get("index", "").strip()
    if source.sae is not None and wanted.isdigit() and int(wanted) < source.d_sae:
        return redirect("latent", source_id=source_id, index=int(wanted))
    key, descending = _sort(request)
    query = request.GET.get("q", "")
    context = {
        "s": source,
        "sources": configured_sources(),
        "rows": explain.sorted_rows(labels.explained(source_id), key, descending),
        "sort": key,
        "descending": descending,
        "query": query,
        "found": labels.search(request.user, source_id, query),
        "runs": _runs(request, source_id),
        "bad_index": wanted if wanted and source.sae is not None else "",
        "max_per_run": explain.MAX_LATENTS_PER_RUN,
    }
    return render(request, "latents/index.html", context)


def _runs(request: HttpRequest, source_id: str) -> list[tuple[LatentRun, explain.RunProgress]]:
    runs = LatentRun.objects.filter(owner_id=request.user.pk, source_id=source_id)[:5]
    return [(r, explain.progress(r, explain.rows_of(source_id, r.indices))) for r in runs]


def _latent_context(request: HttpRequest, source: SourceSae, index: int) -> dict[str, object]:
    assert source.sae is not None
    rows = explain.rows_of(source.source.id, [index])
    stored = source.sae.contexts().get(str(index), {})
    density = stored.get("density")
    return {
        "s": source,
        "index": index,
        "e": rows[0] if rows else None,
        "latent": stored,
        "density_percent": None if density is None else round(100 * float(density), 2),
        "labels": labels.labels_of(request.user, source.source.id, index),
        "scorers": labels.SCORERS,
        "prev": index - 1 if index > 0 else None,
        "next": index + 1 if index + 1 < source.d_sae else None,
    }


@require_GET
def latent(request: HttpRequest, source_id: str, index: int) -> HttpResponse:
    source = _latent(source_id, index)
    return render(request, "latents/latent.html", _latent_context(request, source, index))


@require_GET
def explanation(request: HttpRequest, source_id: str, index: int) -> HttpResponse:
    """The latent's explanation box alone (polled while it is in flight)."""
    source = _latent(source_id, index)
    context = _latent_context(request, source, index)
    return render(request, "latents/latent.html#explanation", context)


@require_POST
@guest_on_post
def explain_one(request: HttpRequest, source_id: str, index: int) -> HttpResponse:
    source = _latent(source_id, index)
    error = ""
    try:
        explain.explain_latents(request.user, source, [index])
    except Rejections as exc:
        error = str(exc)
    context = {**_latent_context(request, source, index), "error": error}
    return _fresh_token(request, render(request, "latents/latent.html#explanation", context))


def _fresh_token(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A visitor's first POST made their guest account and rotated the CSRF token the page holds:
    reload the page (htmx) so its next POST carries the new one."""
    if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
        response["HX-Refresh"] = "true"
    return response


@require_POST
@guest_on_post
def score(request: HttpRequest, source_id: str, index: int) -> HttpResponse:
    """Score the posted label; answers with the labels table."""
    source = _latent(source_id, index)
    error = ""
    try:
        labels.score_label(request.user, source, index, request.POST.get("label", ""))
    except Rejections as exc:
        error = str(exc)
    context = {**_latent_context(request, source, index), "label_error": error}
    return _fresh_token(request, render(request, "latents/latent.html#labels", context))


@require_GET
def label(request: HttpRequest, source_id: str, label_id: str) -> HttpResponse:
    """One scored label's row (polled while its job runs)."""
    row = get_object_or_404(
        LatentLabel.objects.select_related("job"),
        pk=label_id,
        source_id=source_id,
        owner_id=request.user.pk,
    )
    context = {"l": labels.label_scores(row), "s": {"source": {"id": source_id}}}
    return render(request, "latents/latent.html#label", context)


@require_POST
@guest_on_post
def start_run(request: HttpRequest, source_id: str) -> HttpResponse:
    source = _source(source_id)
    try:
        if source.sae is None:
            raise explain.LatentsRejected(source.refusal)
        indices = explain.parse_indices(request.POST.get("latents", ""), source.d_sae)
        run = explain.start_run(request.user, source, indices)
    except Rejections as exc:
        return render(request, "latents/index.html#run_error", {"error": str(exc)})
    response = HttpResponse(status=204)
    response["HX-Redirect"] = run_url(run)
    return response


def run_url(run: LatentRun) -> str:
    from django.urls import reverse

    return reverse("latent_run", kwargs={"source_id": run.source_id, "latent_run_id": run.pk})


def _owned_run(request: HttpRequest, source_id: str, latent_run_id: str) -> LatentRun:
    return get_object_or_404(
        LatentRun, pk=latent_run_id, source_id=source_id, owner_id=request.user.pk
    )


def _run_context(request: HttpRequest, run: LatentRun) -> dict[str, object]:
    key, descending = _sort(request)
    rows = explain.rows_of(run.source_id, run.indices)
    return {
        "run": run,
        "p": explain.progress(run, rows),
        "rows": explain.sorted_rows(rows, key, descending),
        "sort": key,
        "descending": descending,
        "source_id": run.source_id,
    }


@require_GET
def run_page(request: HttpRequest, source_id: str, latent_run_id: str) -> HttpResponse:
    run = _owned_run(request, source_id, latent_run_id)
    template = "latents/run.html#run" if request.htmx else "latents/run.html"  # type: ignore[attr-defined]
    return render(request, template, _run_context(request, run))


@require_POST
def cancel_run(request: HttpRequest, source_id: str, latent_run_id: str) -> HttpResponse:
    run = explain.cancel_run(_owned_run(request, source_id, latent_run_id))
    return render(request, "latents/run.html#run", _run_context(request, run))


@require_GET
def export(request: HttpRequest, source_id: str, fmt: str) -> HttpResponse:
    """The source's explanations and the visitor's labels with their scores, as JSON or CSV."""
    source = _source(source_id)
    if fmt not in ("json", "csv"):
        raise Http404("JSON or CSV.")
    rows = labels.export_rows(request.user, source_id)
    if fmt == "csv":
        response = HttpResponse(labels.export_csv(rows), content_type="text/csv; charset=utf-8")
    else:
        body = {"source": source_id, "sae": _sae_summary(source), "rows": rows}
        response = HttpResponse(json.dumps(body, indent=2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="latents-{source_id}.{fmt}"'
    return response


def _sae_summary(source: SourceSae) -> dict[str, object]:
    if source.sae is None:
        return {"refusal": source.refusal}
    config = source.sae.config
    return {
        "d_sae": config.d_sae,
        "d_in": config.d_in,
        "hook_name": config.hook_name,
        "architecture": config.architecture,
        "k": config.k,
        "direction_norm": source.scale,
        "figures": source.figures,
    }
