from django.apps import AppConfig


class RepositoryConfig(AppConfig):
    name = "repository"
    verbose_name = "Repository content"
