from django.apps import AppConfig


class RepositoryConfig(AppConfig):
    name = "repository"
    verbose_name = "Repository content"

    def ready(self) -> None:
        from repository import changes

        changes.connect()
