from django.apps import AppConfig


class AipConfig(AppConfig):
    name = "aip"
    verbose_name = "AIP backup and restore"
