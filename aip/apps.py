from django.apps import AppConfig


class AipConfig(AppConfig):
    name = "aip"
    verbose_name = "AIP backup and restore"

    def ready(self) -> None:
        from aip import checks  # noqa: F401  (registers the system checks)
