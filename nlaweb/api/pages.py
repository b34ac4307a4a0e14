"""The API keys page of a signed-in user (guests included): create and name a key (its value is shown
once), list them by prefix, revoke one."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from nlaweb.api.forms import NewKeyForm
from nlaweb.api.models import ApiKey
from nlaweb.api.ratelimit import COMPLETION, EXPLAIN, limit_for


def _page(
    request: HttpRequest, form: NewKeyForm, new_key: str = "", status: int = 200
) -> HttpResponse:
    user_id = request.user.pk
    assert user_id is not None  # login_required
    return render(
        request,
        "api/keys.html",
        {
            "form": form,
            "new_key": new_key,
            "keys": ApiKey.objects.filter(user_id=user_id),
            "explain_limit": limit_for(user_id, EXPLAIN),
            "completion_limit": limit_for(user_id, COMPLETION),
        },
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def keys(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request, NewKeyForm())
    form = NewKeyForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    assert isinstance(request.user, User)  # login_required
    _, raw = ApiKey.objects.issue(request.user, form.cleaned_data["name"])
    response = _page(request, NewKeyForm(), new_key=raw)
    response["Cache-Control"] = "no-store"  # the key is on this page once
    return response


@login_required
@require_POST
def revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    get_object_or_404(ApiKey, pk=key_id, user_id=request.user.pk).revoke()
    return redirect("api_keys")
