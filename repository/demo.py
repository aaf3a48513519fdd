"""Build a small but realistic repository, for the demo and for round-trip tests.

The content is generated from a seed, so two builds with the same seed hold the
same metadata, files, people and policies (UUIDs and database ids differ).
"""
from __future__ import annotations

import hashlib
import random
import uuid as uuid_module
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from django.core.files.base import ContentFile
from django.db import transaction

from aip.selectors import site_get
from repository.changes import change_tracking_suspended
from aip.services.handles import handle_mint
from repository.models import (
    Bitstream,
    BitstreamFormat,
    Bundle,
    Collection,
    Community,
    EPerson,
    Group,
    Item,
    MetadataField,
    MetadataSchema,
    MetadataValue,
    ResourcePolicy,
    bitstream_storage,
    object_kwargs,
)

Action = ResourcePolicy.Action

TITLES = [
    "Sediment transport in glacial rivers",
    "Über die Wärmeleitung in dünnen Schichten",
    "Étude des récifs coralliens de Polynésie",
    "Crónica de la arquitectura colonial",
    "Quantum dots for low-light imaging",
    "北極海の海氷変動",
    "Reading habits of first-year students",
    "Soil carbon under long-term tillage",
]
AUTHORS = ["Nguyễn, Thị Lan", "Müller, Jürgen", "O'Brien, Siobhán", "García Márquez, Ana", "Smith, John", "Øster, Bjørn"]
SUBJECTS = ["hydrology", "materials", "marine biology", "architecture", "optics", "climate", "education", "soil"]


@dataclass
class DemoSummary:
    communities: int = 0
    collections: int = 0
    items: int = 0
    bitstreams: int = 0
    people: int = 0
    groups: int = 0
    handles: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.summary = DemoSummary()
        self.formats = {fmt.short_description: fmt for fmt in BitstreamFormat.objects.all()}
        self.clock = datetime(2024, 3, 1, 9, 30, tzinfo=timezone.utc)

    def next_time(self) -> datetime:
        self.clock += timedelta(hours=self.random.randint(1, 90), seconds=self.random.randint(0, 59))
        return self.clock

    def field(self, name: str) -> MetadataField:
        schema_id, element, *rest = name.split(".")
        schema = MetadataSchema.objects.get(short_id=schema_id)
        found, _ = MetadataField.objects.get_or_create(schema=schema, element=element, qualifier=rest[0] if rest else None)
        return found

    def metadata(self, obj, pairs: list[tuple[str, str, str | None]]) -> None:
        rows = [
            MetadataValue(field=self.field(name), value=value, language=language, place=place, **object_kwargs(obj))
            for place, (name, value, language) in enumerate(pairs)
        ]
        MetadataValue.objects.bulk_create(rows)

    def policy(self, obj, action: int, *, group: Group | None = None, eperson: EPerson | None = None, **extra) -> None:
        ResourcePolicy.objects.create(action=action, group=group, eperson=eperson, **extra, **object_kwargs(obj))

    def bitstream(self, *, bundle: Bundle | None, name: str, data: bytes, format_name: str, position: int = 0, sequence: int | None = None) -> Bitstream:
        bitstream = Bitstream(
            bundle=bundle,
            name=name,
            position=position,
            sequence_id=sequence,
            format=self.formats[format_name],
            size_bytes=len(data),
            checksum=hashlib.md5(data).hexdigest(),
            source=name,
        )
        text = str(bitstream.uuid)
        bitstream.file.name = bitstream_storage().save(f"{text[:2]}/{text[2:4]}/{text}", ContentFile(data))
        bitstream.save()
        self.summary.bitstreams += 1
        return bitstream


def _pdf_bytes(title: str, rng: random.Random) -> bytes:
    body = " ".join(rng.choice(SUBJECTS) for _ in range(400))
    return f"%PDF-1.4\n% {title}\n{body}\n%%EOF\n".encode()


def demo_repository_build(*, seed: int = 7, items_per_collection: int = 3) -> DemoSummary:
    """Create communities, collections, items, people, groups and policies; return what was made."""
    # The builder gives items their own last-modified times, spread over weeks.
    with transaction.atomic(), change_tracking_suspended():
        builder = _Builder(seed)
        site_get()
        anonymous = Group.objects.get(name=Group.ANONYMOUS)
        administrator = Group.objects.get(name=Group.ADMINISTRATOR)
        people = _people(builder)
        staff = Group.objects.create(name="Library staff")
        staff.members.add(*people[:2])
        reviewers = Group.objects.create(name="Reviewers")
        reviewers.member_groups.add(staff)
        reviewers.members.add(people[2])
        Group.objects.create(name="Empty group")
        builder.summary.people = len(people)
        builder.summary.groups = Group.objects.count()

        science = _community(builder, "Faculty of Science", None)
        earth = _community(builder, "Earth Sciences", science)
        humanities = _community(builder, "Humanities", None)
        _logo(builder, science)

        theses = _collection(builder, "Theses", earth, anonymous=anonymous, staff=staff, template=True)
        articles = _collection(builder, "Articles", earth, anonymous=anonymous, staff=staff)
        history = _collection(builder, "Histoire et patrimoine", humanities, anonymous=anonymous, staff=staff)

        items = []
        for collection in (theses, articles, history):
            for _ in range(items_per_collection):
                items.append(_item(builder, collection, submitter=people[0], anonymous=anonymous, staff=staff))
        # One item mapped into a second collection, one withdrawn, one under embargo for a named person.
        items[0].mapped_collections.add(history)
        withdrawn = items[-1]
        withdrawn.withdrawn = True
        withdrawn.in_archive = False
        withdrawn.save()
        builder.policy(items[1], Action.READ, eperson=people[1], start_date=date(2031, 1, 1), name="embargo", description="Until the patent is granted")
        builder.policy(items[1], Action.WRITE, group=administrator, end_date=date(2030, 12, 31))
        builder.summary.items = len(items)
        return builder.summary


def _people(builder: _Builder) -> list[EPerson]:
    people = [
        EPerson.objects.create(email="ada.curator@example.org", first_name="Ada", last_name="Curator", language="en", can_log_in=True),
        EPerson.objects.create(email="björn.reviewer@example.org", first_name="Björn", last_name="Reviewer", language="sv", can_log_in=True),
        EPerson.objects.create(email="chen.student@example.org", first_name="Chen", last_name="Wei", netid="cwei", can_log_in=True, self_registered=True),
        EPerson.objects.create(email="external.login@example.org", first_name="Dana", last_name="Extern", require_certificate=True),
        EPerson.objects.create(email="locked.out@example.org", first_name="Eve", last_name="Locked", can_log_in=False),
    ]
    return people


def _community(builder: _Builder, name: str, parent: Community | None) -> Community:
    community = Community.objects.create(handle=handle_mint("COMMUNITY"), parent=parent, name=name)
    builder.metadata(
        community,
        [
            ("dc.description", f"<p>Research output of the {name}.</p>", None),
            ("dc.description.abstract", f"{name}: theses, articles and data.", None),
            ("dc.rights", "© University", None),
            ("dc.title", name, None),
        ],
    )
    builder.summary.communities += 1
    return community


def _logo(builder: _Builder, obj) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(builder.random.randrange(256) for _ in range(300))
    obj.logo = builder.bitstream(bundle=None, name="logo.png", data=png, format_name="image/png")
    obj.save()


def _collection(builder: _Builder, name: str, community: Community, *, anonymous: Group, staff: Group, template: bool = False) -> Collection:
    collection = Collection.objects.create(handle=handle_mint("COLLECTION"), community=community, name=name)
    builder.metadata(
        collection,
        [
            ("dc.description", f"Introductory text of {name}.", None),
            ("dc.description.provenance", "Migrated from the old repository.", None),
            ("dc.rights.license", "Deposit agreement v2", None),
            ("dc.title", name, None),
        ],
    )
    admins = Group.objects.create(name=f"COLLECTION_{collection.uuid}_ADMIN")
    admins.member_groups.add(staff)
    submitters = Group.objects.create(name=f"COLLECTION_{collection.uuid}_SUBMIT")
    submitters.members.add(*staff.members.all())
    collection.admin_group = admins
    collection.submitters_group = submitters
    if template:
        template_item = Item.objects.create(last_modified=builder.next_time())
        builder.metadata(template_item, [("dc.publisher", "University Press", "en"), ("dc.type", "Thesis", "en")])
        collection.template_item = template_item
        _logo(builder, collection)
    collection.save()
    builder.policy(collection, Action.READ, group=anonymous)
    builder.policy(collection, Action.DEFAULT_ITEM_READ, group=anonymous)
    builder.policy(collection, Action.DEFAULT_BITSTREAM_READ, group=anonymous)
    builder.policy(collection, Action.ADD, group=submitters)
    builder.policy(collection, Action.ADMIN, group=admins)
    builder.summary.collections += 1
    return collection


def _item(builder: _Builder, collection: Collection, *, submitter: EPerson, anonymous: Group, staff: Group) -> Item:
    rng = builder.random
    title = rng.choice(TITLES)
    item = Item.objects.create(
        handle=handle_mint("ITEM"),
        owning_collection=collection,
        in_archive=True,
        last_modified=builder.next_time(),
        submitter=submitter,
        name=title,
    )
    issued = f"{rng.randint(1990, 2024)}-{rng.randint(1, 12):02d}"
    authors = rng.sample(AUTHORS, 2)
    builder.metadata(
        item,
        [
            ("dc.contributor.author", authors[0], None),
            ("dc.contributor.author", authors[1], None),
            ("dc.date.accessioned", "2024-03-01T10:00:00Z", None),
            ("dc.date.available", "2024-03-01T10:00:00Z", None),
            ("dc.date.issued", issued, None),
            ("dc.identifier.uri", f"http://localhost:8000/handle/{item.handle.handle}", None),
            ("dc.description.abstract", f"Abstract of “{title}”, with a line break\nand non-ASCII text: ñ, ß, 漢字.", "en"),
            ("dc.subject", rng.choice(SUBJECTS), "en"),
            ("dc.subject", rng.choice(SUBJECTS), "en"),
            ("dc.title", title, "en"),
            ("dc.type", "Article", "en"),
            ("dcterms.spatial", "Vancouver, Canada", None),
            ("local.note", "internal note", None),
        ],
    )
    MetadataValue.objects.filter(item=item, field=builder.field("dc.contributor.author")).update(
        authority=f"orcid:0000-0002-{rng.randint(1000, 9999)}-0001", confidence=MetadataValue.Confidence.ACCEPTED
    )
    _item_files(builder, item, title)
    builder.policy(item, Action.READ, group=anonymous)
    builder.policy(item, Action.ADMIN, group=staff)
    return item


def _item_files(builder: _Builder, item: Item, title: str) -> None:
    rng = builder.random
    original = Bundle.objects.create(item=item, name="ORIGINAL", position=0)
    pdf = builder.bitstream(bundle=original, name="article.pdf", data=_pdf_bytes(title, rng), format_name="Adobe PDF", sequence=1)
    data = ("id,value\n" + "".join(f"{i},{rng.random():.6f}\n" for i in range(50))).encode()
    builder.bitstream(bundle=original, name="data.csv", data=data, format_name="CSV", position=1, sequence=2)
    original.primary_bitstream = pdf
    original.save()
    text = Bundle.objects.create(item=item, name="TEXT", position=1)
    builder.bitstream(bundle=text, name="article.pdf.txt", data=f"{title}\nExtracted text.".encode(), format_name="Text", sequence=3)
    license_bundle = Bundle.objects.create(item=item, name="LICENSE", position=2)
    builder.bitstream(bundle=license_bundle, name="license.txt", data=b"I grant the university a non-exclusive licence.\n", format_name="License", sequence=4)
    for bundle in (original, text, license_bundle):
        builder.policy(bundle, Action.READ, group=Group.objects.get(name=Group.ANONYMOUS))
    for bitstream in Bitstream.objects.filter(bundle__item=item):
        builder.policy(bitstream, Action.READ, group=Group.objects.get(name=Group.ANONYMOUS))
