"""System metadata and deposit licence of newly submitted items, as DSpace adds them.

A submission gets a deposit licence and a "Submitted by" provenance line. An
installation into the archive gets ``dc.date.accessioned``, ``dc.date.available``,
``dc.date.issued`` when missing, and a "Made available" provenance line listing
the item's files. A restore adds none of these: it brings back what the package
states.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

from django.conf import settings
from django.core.files.base import ContentFile
from django.db.models import Max

from repository.models import (
    Bitstream,
    BitstreamFormat,
    Bundle,
    Collection,
    EPerson,
    Item,
    MetadataField,
    MetadataSchema,
    MetadataValue,
    bitstream_storage,
)

LICENSE_BUNDLE = "LICENSE"
LICENSE_FILE_NAME = "license.txt"


def _field(element: str, qualifier: str | None) -> MetadataField:
    schema = MetadataSchema.objects.get(short_id="dc")
    found, _ = MetadataField.objects.get_or_create(schema=schema, element=element, qualifier=qualifier)
    return found


def _has_value(item: Item, element: str, qualifier: str | None) -> bool:
    return item.metadata.filter(field__schema__short_id="dc", field__element=element, field__qualifier=qualifier).exists()


def _add_values(item: Item, values: list[tuple[str, str | None, str, str | None]]) -> None:
    start = (item.metadata.aggregate(last=Max("place"))["last"] or -1) + 1
    rows = [
        MetadataValue(item=item, field=_field(element, qualifier), value=text, language=language, place=start + offset)
        for offset, (element, qualifier, text, language) in enumerate(values)
    ]
    MetadataValue.objects.bulk_create(rows)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def license_text(collection: Collection) -> str:
    """Return the deposit licence of a collection: its own (dc.rights.license), else the site default."""
    own = collection.metadata.filter(
        field__schema__short_id="dc", field__element="rights", field__qualifier="license"
    ).exclude(value="").values_list("value", flat=True).first()
    return own or settings.AIP_DEFAULT_LICENSE


def submission_record(
    *, item: Item, collection: Collection, submitter: EPerson | None, now: datetime, license_file_name: str
) -> str:
    """Add the deposit licence and the "Submitted by" provenance line of a new submission.

    The licence file is stored under ``license_file_name``, which the caller picks so
    that it can find and delete the file if its transaction fails or its process dies.
    Returns the name the storage saved it under, which differs only when that name was taken.
    """
    stored_name = _deposit_license_add(item, license_text(collection), license_file_name)
    submitter_label = f"{submitter.first_name} {submitter.last_name} ({submitter.email})".strip() if submitter else "an unknown person"
    _add_values(
        item,
        [("description", "provenance", f"Submitted by {submitter_label} on {_utc_text(now)} to {collection.name}.", "en")],
    )
    return stored_name


def installation_record(*, item: Item, now: datetime) -> None:
    """Add the dates and the "Made available" provenance line of an item entering the archive."""
    stamp = _utc_text(now)
    # A new installation has its own dates, also when the item arrived with older ones.
    item.metadata.filter(
        field__schema__short_id="dc", field__element="date", field__qualifier__in=["accessioned", "available"]
    ).delete()
    values = [("date", "accessioned", stamp, None), ("date", "available", stamp, None)]
    if not _has_value(item, "date", "issued"):
        values.append(("date", "issued", now.astimezone(timezone.utc).date().isoformat(), None))
    values.append(("description", "provenance", _made_available_line(item, stamp), "en"))
    _add_values(item, values)


def _made_available_line(item: Item, stamp: str) -> str:
    bitstreams = list(
        Bitstream.objects.filter(bundle__item=item, bundle__name="ORIGINAL").order_by("bundle__position", "position")
    )
    lines = [f"Made available in DSpace on {stamp} (GMT). No. of bitstreams: {len(bitstreams)}"]
    lines += [f"{b.name}: {b.size_bytes} bytes, checksum: {b.checksum} ({b.checksum_algorithm})" for b in bitstreams]
    return "\n".join(lines)


def _deposit_license_add(item: Item, text: str, file_name: str) -> str:
    """Store ``text`` as license.txt in the item's LICENSE bundle, creating the bundle when needed."""
    data = text.encode("utf-8")
    bundle = item.bundles.filter(name=LICENSE_BUNDLE).first()
    if bundle is None:
        last = item.bundles.aggregate(last=Max("position"))["last"]
        bundle = Bundle.objects.create(item=item, name=LICENSE_BUNDLE, position=0 if last is None else last + 1)
    bitstream = Bitstream(
        bundle=bundle,
        name=LICENSE_FILE_NAME,
        source=LICENSE_FILE_NAME,
        position=bundle.bitstreams.count(),
        format=BitstreamFormat.objects.filter(short_description="License").first(),
        size_bytes=len(data),
        checksum=hashlib.md5(data).hexdigest(),
        sequence_id=_next_sequence_id(item),
    )
    bitstream.file.name = bitstream_storage().save(file_name, ContentFile(data))
    bitstream.save()
    return bitstream.file.name


def _next_sequence_id(item: Item) -> int:
    last = Bitstream.objects.filter(bundle__item=item).aggregate(last=Max("sequence_id"))["last"]
    return (last or 0) + 1
