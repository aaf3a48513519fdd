"""System checks: catch misspelt AIP section names in settings at start-up, not mid-backup."""
from django.conf import settings
from django.core import checks

from aip.mets.writer import ADMIN_SECTIONS, DEFAULT_DMD_TYPES


@checks.register()
def aip_section_settings(app_configs, **kwargs) -> list[checks.Error]:
    errors = []
    for name in settings.AIP_DISSEMINATE_DMD:
        if name not in DEFAULT_DMD_TYPES:
            errors.append(
                checks.Error(f"AIP_DISSEMINATE_DMD names {name!r}; allowed: {', '.join(DEFAULT_DMD_TYPES)}.", id="aip.E001")
            )
    for setting in ("AIP_DISSEMINATE_SECTIONS", "AIP_INGEST_IGNORED_SECTIONS"):
        for name in getattr(settings, setting):
            if name not in ADMIN_SECTIONS:
                errors.append(
                    checks.Error(f"{setting} names {name!r}; allowed: {', '.join(sorted(ADMIN_SECTIONS))}.", id="aip.E002")
                )
    return errors
