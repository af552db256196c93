from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts, roles and audit"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from accounts import checks  # noqa: F401 (checks registers itself)
        from accounts.consumers import close_session_sockets

        user_logged_out.connect(close_session_sockets, dispatch_uid="accounts.close_session_sockets")
