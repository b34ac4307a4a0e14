from __future__ import annotations

from django.urls import path

from nlaweb.api import pages
from nlaweb.api.api import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("account/api-keys", pages.keys, name="api_keys"),
    path("account/api-keys/<int:key_id>/revoke", pages.revoke, name="api_key_revoke"),
]
