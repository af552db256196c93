"""Celery jobs that send account emails, and how they are started after the response.

They take ids or the address asked for and reload, so a queued job never carries a
secret; a user deleted meanwhile is skipped.
"""

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from celery import shared_task
from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.db import close_old_connections, connections, transaction
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import User

logger = logging.getLogger(__name__)

_background_lock = threading.Lock()
_background: ThreadPoolExecutor | None = None


def after_response(job, *args) -> None:
    """Run `job(*args)` once the current transaction commits, outside the request.

    With a broker (REDIS_URL) the job goes to a Celery worker on commit. Without one,
    Celery runs jobs eagerly, which would send the mail inside the request and make its
    duration tell whether an account exists (issue 13.6): the job then runs on this
    process's one background thread instead, after the request has moved on.
    """
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        job.delay_on_commit(*args)
        return
    transaction.on_commit(lambda: _background_executor().submit(_run_in_background, job, args))


def _background_executor() -> ThreadPoolExecutor:
    global _background
    with _background_lock:
        if _background is None:
            _background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vantage-mail")
        return _background


def _run_in_background(job, args) -> None:
    close_old_connections()
    try:
        job(*args)
    except Exception as exc:  # a mail server down must not kill the thread; no address in the log
        logger.error("background job %s failed: %s", job.name, type(exc).__name__)
    finally:
        connections.close_all()


def wait_for_background(timeout: float = 10) -> None:
    """Wait until the background jobs queued so far have run (tests, shutdown)."""
    done: Future = _background_executor().submit(lambda: None)
    done.result(timeout=timeout)


def _mail(user: User, subject: str, body: str) -> None:
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [user.email], fail_silently=False)


@shared_task(name="accounts.jobs.send_password_reset", autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_password_reset(email: str) -> int:
    """Mail a reset link to every active account with this address; how many were mailed."""
    users = User.objects.filter(email__iexact=email, is_active=True).exclude(email="")
    sent = 0
    for user in users:
        _send_password_reset_to(user)
        sent += 1
    return sent


def _send_password_reset_to(user: User) -> None:
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    minutes = settings.PASSWORD_RESET_TIMEOUT // 60
    _mail(
        user,
        "Vantage: reset your password",
        f"Hello {user.get_username()},\n\n"
        f"Someone asked to reset the password of your Vantage account at {settings.VANTAGE_PUBLIC_URL}.\n"
        f"To choose a new password, send it with this code within {minutes} minutes:\n\n"
        f"  POST {settings.VANTAGE_PUBLIC_URL}/api/password-reset/confirm/\n"
        f'  {{"uid": "{uid}", "token": "{token}", "password": "<your new password>"}}\n\n'
        "If you did not ask for this, ignore this email: your password stays as it is.\n",
    )


@shared_task(name="accounts.jobs.send_lockout_notice", autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_lockout_notice(user_id: int) -> bool:
    user = User.objects.filter(pk=user_id).exclude(email="").first()
    if user is None or user.locked_until is None:
        return False
    _mail(
        user,
        "Vantage: your account is locked for a while",
        f"Hello {user.get_username()},\n\n"
        f"After {settings.VANTAGE_LOCKOUT_THRESHOLD} failed logins in a row, your Vantage account at "
        f"{settings.VANTAGE_PUBLIC_URL} is locked until {user.locked_until:%Y-%m-%d %H:%M} UTC.\n"
        "If these attempts were not yours, someone may be guessing your password: reset it and tell "
        "your administrator.\n",
    )
    return True
