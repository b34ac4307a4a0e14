from __future__ import annotations

from django.urls import path

from nlaweb.latents import views

_AT = "sources/<str:source_id>/latents/"

urlpatterns = [
    path("latents/", views.default_latents, name="latents_home"),
    path(_AT, views.index, name="latents"),
    path(_AT + "<int:index>", views.latent, name="latent"),
    path(_AT + "<int:index>/explanation", views.explanation, name="latent_explanation"),
    path(_AT + "<int:index>/explain", views.explain_one, name="latent_explain"),
    path(_AT + "<int:index>/labels", views.score, name="latent_score"),
    path(_AT + "labels/<uuid:label_id>", views.label, name="latent_label"),
    path(_AT + "runs", views.start_run, name="latent_runs"),
    path(_AT + "runs/<uuid:latent_run_id>/", views.run_page, name="latent_run"),
    path(_AT + "runs/<uuid:latent_run_id>/cancel", views.cancel_run, name="latent_run_cancel"),
    path(_AT + "export.<str:fmt>", views.export, name="latents_export"),
]
