from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts, roles and audit"

    def ready(self) -> None:
        from accounts import principal_cache

        principal_cache.connect_signals()
