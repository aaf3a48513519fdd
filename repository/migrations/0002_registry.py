"""Seed the metadata schemas, the bitstream format registry and the two system groups."""
from django.db import migrations

from repository.registry import BITSTREAM_FORMATS, METADATA_SCHEMAS


def seed_registry(apps, schema_editor):
    MetadataSchema = apps.get_model("repository", "MetadataSchema")
    BitstreamFormat = apps.get_model("repository", "BitstreamFormat")
    Group = apps.get_model("repository", "Group")

    for short_id, namespace in METADATA_SCHEMAS:
        MetadataSchema.objects.get_or_create(short_id=short_id, defaults={"namespace": namespace})
    for short, mimetype, level, internal, extensions, description in BITSTREAM_FORMATS:
        BitstreamFormat.objects.get_or_create(
            short_description=short,
            defaults={
                "mimetype": mimetype,
                "support_level": level,
                "internal": internal,
                "extensions": extensions,
                "description": description,
            },
        )
    for name in ("Anonymous", "Administrator"):
        Group.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("repository", "0001_initial")]

    operations = [migrations.RunPython(seed_registry, migrations.RunPython.noop)]
