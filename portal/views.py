"""The researchers' portal: thin views over portal.selectors and the apps' services.

Every page but the login page needs a session. Objects come from scoped selectors, so
what a user may not see answers 404; an action their roles do not allow answers 403.
Both render the portal's error page (`portal_page`), as core.exceptions does for the API.
"""

import csv
from functools import wraps
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.static import serve

from accounts import services as account_services
from core.errors import DomainError, NotAllowed, NotFound
from portal import selectors, services
from portal.charts import csv_rows
from portal.forms import LoginForm, SecondFactorConfirmForm, TaskCreateForm
from tasks import services as task_services

ASSETS_DIR = Path(__file__).resolve().parent / "static" / "portal"
# Pages load only the portal's own script and stylesheet and talk only to this server
# (pages, result downloads, the /ws/events/ socket): markup that a result or a log might
# smuggle past the escaping still could not run or send anything elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def with_csp(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response

    return wrapper


def _error_page(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    return render(request, "portal/error.html", {"title": title, "message": message}, status=status)


def portal_page(view):
    """A page for logged-in users; domain errors become the portal's 404 and 403 pages.

    A user who must log in with a second factor and has none set up yet sees only the
    security page, to set one up.
    """

    @with_csp
    @login_required(login_url="portal:login")
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if selectors.second_factor_missing(user=request.user):
            messages.warning(request, "Your account must use a second factor: set up an authenticator app first.")
            return redirect("portal:security")
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            return _error_page(request, 404, "Not found", exc.message)
        except NotAllowed as exc:
            return _error_page(request, 403, "Not allowed", exc.message)

    return wrapper


def _next_url(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return wanted
    return reverse("portal:dashboard")


@require_http_methods(["GET", "POST"])
@with_csp
def login_view(request: HttpRequest) -> HttpResponse:
    if request.method == "GET" and request.user.is_authenticated:
        return redirect(_next_url(request))
    form = LoginForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                services.session_login(request=request, **form.cleaned_data)
            except services.LoginRefused as exc:
                form.add_error(None, exc.message)
                status = 401
            else:
                return redirect(_next_url(request))
        else:
            status = 400
    return render(request, "portal/login.html", {"form": form, "next": _next_url(request)}, status=status)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    services.session_logout(request=request)
    messages.info(request, "You are logged out.")
    return redirect("portal:login")


@require_POST
@with_csp
@login_required(login_url="portal:login")
def logout_everywhere_view(request: HttpRequest) -> HttpResponse:
    services.session_logout_everywhere(request=request)
    messages.info(request, "You are logged out everywhere: every session and API token of your account has ended.")
    return redirect("portal:login")


@require_http_methods(["GET", "POST"])
@with_csp
@login_required(login_url="portal:login")
def security(request: HttpRequest) -> HttpResponse:
    """The second factor (set up with a QR code and a first code) and "log out everywhere".

    GET shows the state; POST with `action=begin` starts a set-up, with `action=confirm`
    checks the first code and shows the recovery codes, once.
    """
    form = SecondFactorConfirmForm(request.POST if request.POST.get("action") == "confirm" else None)
    status = 200
    if request.method == "POST":
        if request.POST.get("action") == "begin":
            try:
                account_services.second_factor_begin(user=request.user)
            except DomainError as exc:
                messages.error(request, exc.message)
            return redirect("portal:security")
        if form.is_valid():
            try:
                codes = account_services.second_factor_confirm(user=request.user, code=form.cleaned_data["code"])
            except DomainError as exc:
                form.add_error("code", exc.message)
            else:
                return render(request, "portal/security.html", {
                    **selectors.security_page(user=request.user), "recovery_codes": codes})
        status = 400
    return render(request, "portal/security.html", {**selectors.security_page(user=request.user), "form": form},
                  status=status)


@require_GET
@portal_page
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/dashboard.html", selectors.dashboard(user=request.user))


@require_GET
@portal_page
def collaboration_detail(request: HttpRequest, pk: int) -> HttpResponse:
    page = selectors.collaboration_page(user=request.user, collaboration_id=pk)
    return render(request, "portal/collaboration.html", page)


@require_GET
@portal_page
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render(request, "portal/task.html", selectors.task_page(user=request.user, task_id=pk))


@require_POST
@portal_page
def task_kill(request: HttpRequest, pk: int) -> HttpResponse:
    task = selectors.visible_task(user=request.user, task_id=pk)
    affected = task_services.task_kill(actor=request.user, task=task)
    if affected:
        messages.success(request, f"Kill requested: {affected} open run(s) stopped or asked to stop.")
    else:
        messages.info(request, "Nothing to kill: every run had already finished.")
    return redirect("portal:task", pk=task.pk)


def _add_service_error(form: TaskCreateForm, exc: DomainError | ValidationError) -> None:
    if isinstance(exc, DomainError):
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@require_http_methods(["GET", "POST"])
@portal_page
def task_create(request: HttpRequest) -> HttpResponse:
    if not selectors.may_create_tasks(user=request.user):
        raise NotAllowed("Your roles do not allow creating tasks.")
    if request.method == "GET":
        form = TaskCreateForm(user=request.user, initial={"collaboration": request.GET.get("collaboration")})
        return render(request, "portal/task_form.html", {"form": form})
    form = TaskCreateForm(request.POST, user=request.user)
    if form.is_valid():
        try:
            task = task_services.task_create(actor=request.user, **form.service_kwargs())
        except NotAllowed:
            raise  # a refusal is the 403 page, not a remark on the form
        except (DomainError, ValidationError) as exc:
            _add_service_error(form, exc)
        else:
            messages.success(request, f"Task #{task.pk} created: one run per organisation, waiting for the nodes.")
            return redirect("portal:task", pk=task.pk)
    return render(request, "portal/task_form.html", {"form": form}, status=400)


@require_GET
@portal_page
def run_chart(request: HttpRequest, pk: int, slug: str) -> HttpResponse:
    """One chart of a run's result as an SVG file, the same drawing the task page shows."""
    chart = selectors.run_picture(user=request.user, run_id=pk).chart(slug)
    if chart is None:
        raise NotFound("No such chart.")
    response = HttpResponse(chart.svg(id_prefix=f"run-{pk}"), content_type="image/svg+xml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{pk}-{slug}.svg"'
    return response


@require_GET
@portal_page
def run_table(request: HttpRequest, pk: int, slug: str) -> HttpResponse:
    """One table of a run's result as CSV, numbers at full precision."""
    table = selectors.run_picture(user=request.user, run_id=pk).table(slug)
    if table is None:
        raise NotFound("No such table.")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="run-{pk}-{slug}.csv"'
    csv.writer(response).writerows(csv_rows(table))
    return response


@require_GET
def asset(request: HttpRequest, path: str) -> HttpResponse:
    """The portal's stylesheet and script, served by the portal itself.

    They are two small files: serving them here keeps the portal whole with DEBUG off,
    with no static file server to configure (django.views.static answers
    If-Modified-Since and refuses paths outside the folder).
    """
    return serve(request, path, document_root=ASSETS_DIR)
