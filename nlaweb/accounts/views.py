"""Sign up, log in, log out, change password: Django's auth views in the app's templates. A guest
who signs up becomes the account (same user, same conversations); one who logs in brings theirs."""

from __future__ import annotations

from typing import Any

from django.contrib import auth
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_http_methods

from nlaweb.accounts import throttle
from nlaweb.accounts.forms import NewPasswordForm, SignupForm
from nlaweb.accounts.guests import adopt_conversations, is_guest, keep_as_account
from nlaweb.accounts.models import AuthAttempt

_BACKEND = "django.contrib.auth.backends.ModelBackend"


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    guest = request.user if is_guest(request.user) else None
    if request.user.is_authenticated and guest is None:
        return redirect("home")  # signed up already
    form = SignupForm(request.POST or None, instance=guest)
    if request.method == "POST":
        attempt = (AuthAttempt.Kind.SIGNUP, request.POST.get("username", ""))
        if refused := throttle.refusal(*attempt, throttle.address_of(request)):
            form.add_error(None, refused)
            context = {"form": form, "was_guest": guest is not None}
            return render(request, "accounts/signup.html", context, status=429)
        throttle.record(*attempt, throttle.address_of(request))
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            user = form.save()
            keep_as_account(user)
        auth.login(request, user, backend=_BACKEND)
        return redirect("home")
    return render(request, "accounts/signup.html", {"form": form, "was_guest": guest is not None})


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = False

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        account = request.POST.get("username", "")
        if refused := throttle.refusal(
            AuthAttempt.Kind.LOGIN, account, throttle.address_of(request)
        ):
            form = self.get_form()
            form.add_error(None, refused)
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        account = self.request.POST.get("username", "")
        throttle.record(AuthAttempt.Kind.LOGIN, account, throttle.address_of(self.request))
        return super().form_invalid(form)

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        guest = self.request.user if is_guest(self.request.user) else None
        response = super().form_valid(form)
        if guest is not None:
            adopt_conversations(guest, form.get_user())
        return response


class LogoutView(auth_views.LogoutView):
    next_page = "home"


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    form_class = NewPasswordForm
    success_url = reverse_lazy("password_change_done")

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if is_guest(request.user):  # a guest has no password to change: sign up sets one
            return redirect("signup")
        return super().dispatch(request, *args, **kwargs)


class PasswordChangeDoneView(auth_views.PasswordChangeDoneView):
    template_name = "accounts/password_change_done.html"
