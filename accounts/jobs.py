"""Celery jobs that send account emails. They take ids and reload, so a queued job never
carries a secret; a user deleted meanwhile is skipped."""

from celery import shared_task
from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import User


def _mail(user: User, subject: str, body: str) -> None:
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [user.email], fail_silently=False)


@shared_task(name="accounts.jobs.send_password_reset_email", autoretry_for=(OSError,), retry_backoff=True,
             max_retries=5)
def send_password_reset_email(user_id: int) -> bool:
    user = User.objects.filter(pk=user_id, is_active=True).exclude(email="").first()
    if user is None:
        return False
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
    return True


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
