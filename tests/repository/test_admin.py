"""Tests that every admin page of the content model renders, finds rows and hides secrets."""
import pytest
from django.apps import apps
from django.contrib import admin
from django.core import checks
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from repository.models import (
    Bitstream,
    BitstreamFormat,
    Bundle,
    Collection,
    Community,
    EPerson,
    Group,
    Handle,
    Item,
    MetadataField,
    MetadataSchema,
    MetadataValue,
    ObjectType,
    ResourcePolicy,
    Site,
    WorkflowItem,
)
from repository.workflow import workflow_start

REPOSITORY_MODELS = [
    Handle,
    Site,
    Community,
    Collection,
    Item,
    Bundle,
    Bitstream,
    BitstreamFormat,
    MetadataSchema,
    MetadataField,
    MetadataValue,
    EPerson,
    Group,
    ResourcePolicy,
    WorkflowItem,
]


def make_handle(suffix: int, resource_type: str) -> Handle:
    return Handle.objects.create(
        handle=f"123456789/{suffix}",
        prefix="123456789",
        suffix=str(suffix),
        suffix_number=suffix,
        resource_type=resource_type,
    )


def make_item(collection: Collection, suffix: int, name: str, **fields) -> Item:
    return Item.objects.create(
        handle=make_handle(suffix, ObjectType.ITEM),
        owning_collection=collection,
        name=name,
        in_archive=True,
        last_modified=timezone.now(),
        **fields,
    )


@pytest.fixture
def repository_rows(bitstream_storage):
    """One saved row of every repository model, keyed by model, with every relation the admin shows."""
    title, _ = MetadataField.objects.get_or_create(
        schema=MetadataSchema.objects.get(short_id="dc"), element="title", qualifier=None
    )
    pdf = BitstreamFormat.objects.get(short_description="Adobe PDF")
    administrators = Group.objects.get(name=Group.ADMINISTRATOR)

    site = Site.objects.create(name="Test repository", handle=make_handle(0, ObjectType.SITE))
    top = Community.objects.create(name="Faculty of Science", handle=make_handle(1, ObjectType.COMMUNITY))
    community = Community.objects.create(
        name="Department of Physics", handle=make_handle(2, ObjectType.COMMUNITY), parent=top
    )
    collection = Collection.objects.create(
        name="Physics theses", handle=make_handle(3, ObjectType.COLLECTION), community=community
    )
    eperson = EPerson.objects.create(
        email="submitter@example.org",
        first_name="Grace",
        last_name="Hopper",
        can_log_in=True,
        password_hash="5ecret0hash0value",
        password_digest_algorithm="SHA-512",
        password_salt="5a1t0value",
    )
    administrators.members.add(eperson)
    item = make_item(collection, 4, "Thermal noise in resistors", submitter=eperson)
    item.mapped_collections.add(collection)
    bundle = Bundle.objects.create(item=item, name="ORIGINAL")
    bitstream = Bitstream.objects.create(
        bundle=bundle,
        name="thesis.pdf",
        sequence_id=1,
        format=pdf,
        size_bytes=8,
        checksum="0123456789abcdef0123456789abcdef",
    )
    bitstream.file.save("thesis.pdf", ContentFile(b"%PDF-1.7"))
    bundle.primary_bitstream = bitstream
    bundle.save()

    for target in (site, top, community, collection, item, bundle, bitstream):
        MetadataValue.objects.create(field=title, value=f"Title of {target}", **{target._meta.model_name: target})
    policy = ResourcePolicy.objects.create(action=ResourcePolicy.Action.READ, group=administrators, item=item)
    ResourcePolicy.objects.create(action=ResourcePolicy.Action.WRITE, eperson=eperson, bitstream=bitstream)
    collection.workflow_step_1 = administrators
    collection.save()
    waiting = workflow_start(
        item=Item.objects.create(name="Waiting thesis", submitter=eperson, last_modified=timezone.now()),
        collection=collection,
    )

    return {
        Handle: item.handle,
        Site: site,
        Community: community,
        Collection: collection,
        Item: item,
        Bundle: bundle,
        Bitstream: bitstream,
        BitstreamFormat: pdf,
        MetadataSchema: title.schema,
        MetadataField: title,
        MetadataValue: MetadataValue.objects.get(item=item),
        EPerson: eperson,
        Group: administrators,
        ResourcePolicy: policy,
        WorkflowItem: waiting,
    }


def changelist_url(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change_url(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def test_admin_registers_every_repository_model():
    app_models = set(apps.get_app_config("repository").get_models())

    assert app_models == set(REPOSITORY_MODELS)
    for model in REPOSITORY_MODELS:
        assert admin.site.is_registered(model), f"{model.__name__} has no admin page"


def test_admin_passes_system_checks():
    errors = [message for message in checks.run_checks(tags=[checks.Tags.admin]) if message.is_serious()]

    assert errors == []


@pytest.mark.django_db
@pytest.mark.parametrize("model", REPOSITORY_MODELS, ids=lambda model: model.__name__)
def test_admin_changelist_lists_row(admin_client, repository_rows, model):
    response = admin_client.get(changelist_url(model))

    assert response.status_code == 200
    assert repository_rows[model].pk in {row.pk for row in response.context["cl"].result_list}


@pytest.mark.django_db
@pytest.mark.parametrize("model", REPOSITORY_MODELS, ids=lambda model: model.__name__)
def test_admin_change_page_renders(admin_client, repository_rows, model):
    response = admin_client.get(change_url(repository_rows[model]))

    assert response.status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("model", REPOSITORY_MODELS, ids=lambda model: model.__name__)
def test_admin_add_page_renders(admin_client, repository_rows, model):
    response = admin_client.get(reverse(f"admin:repository_{model._meta.model_name}_add"))

    # Workflow items come only from submissions, so their admin has no add page.
    expected = 403 if model is WorkflowItem else 200
    assert response.status_code == expected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "query"),
    [
        (Community, "Physics"),
        (Community, "123456789/2"),
        (Collection, "theses"),
        (Collection, "123456789/3"),
        (Item, "thermal noise"),
        (Item, "123456789/4"),
        (Item, "uuid"),
        (Bundle, "123456789/4"),
        (Bitstream, "0123456789abcdef"),
        (Bitstream, "uuid"),
        (EPerson, "submitter@example.org"),
        (EPerson, "hopper"),
        (Handle, "123456789/4"),
        (MetadataValue, "Title of Thermal"),
        (ResourcePolicy, "Administrator"),
    ],
)
def test_admin_search_finds_row(admin_client, repository_rows, model, query):
    expected = repository_rows[model]
    if query == "uuid":
        query = str(expected.uuid).upper()

    response = admin_client.get(changelist_url(model), {"q": query})

    assert response.status_code == 200
    assert expected.pk in {row.pk for row in response.context["cl"].result_list}


@pytest.mark.django_db
@pytest.mark.parametrize("model", REPOSITORY_MODELS, ids=lambda model: model.__name__)
def test_admin_search_without_match_empty(admin_client, repository_rows, model):
    assert admin.site.get_model_admin(model).search_fields, f"{model.__name__} has no search box"

    # Neither a name nor a UUID: the exact UUID lookups must not fail on it.
    response = admin_client.get(changelist_url(model), {"q": "no-such-row-zz"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


@pytest.mark.django_db
def test_admin_item_filter_withdrawn(admin_client, repository_rows):
    withdrawn = make_item(repository_rows[Collection], 5, "Retracted thesis", withdrawn=True)

    response = admin_client.get(changelist_url(Item), {"withdrawn__exact": "1"})

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [withdrawn.pk]


@pytest.mark.django_db
def test_admin_item_change_page_shows_inlines(admin_client, repository_rows):
    response = admin_client.get(change_url(repository_rows[Item]))

    content = response.content.decode()
    assert "Title of Thermal noise in resistors" in content
    assert "ORIGINAL" in content


@pytest.mark.django_db
def test_admin_bundle_change_page_shows_bitstreams(admin_client, repository_rows):
    response = admin_client.get(change_url(repository_rows[Bundle]))

    content = response.content.decode()
    assert "thesis.pdf" in content
    assert "0123456789abcdef0123456789abcdef" in content


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["changelist", "change", "add"])
def test_admin_eperson_hides_password_hash(admin_client, repository_rows, page):
    urls = {
        "changelist": changelist_url(EPerson),
        "change": change_url(repository_rows[EPerson]),
        "add": reverse("admin:repository_eperson_add"),
    }

    content = admin_client.get(urls[page]).content.decode()

    assert "5ecret0hash0value" not in content
    assert "5a1t0value" not in content
    assert "password_hash" not in content
    assert "password_salt" not in content


@pytest.mark.django_db
def test_admin_eperson_save_keeps_password_hash(admin_client, repository_rows):
    eperson = repository_rows[EPerson]

    response = admin_client.post(
        change_url(eperson),
        {
            "uuid": str(eperson.uuid),
            "email": eperson.email,
            "first_name": "Grace Brewster",
            "last_name": eperson.last_name,
            "can_log_in": "on",
        },
    )

    assert response.status_code == 302
    eperson.refresh_from_db()
    assert eperson.first_name == "Grace Brewster"
    assert eperson.password_hash == "5ecret0hash0value"
    assert eperson.password_salt == "5a1t0value"


def add_rows(model, rows: dict, count: int) -> None:
    """Add ``count`` more rows of ``model`` that have the same relations as the fixture's row."""
    collection = rows[Collection]
    for number in range(count):
        suffix = 100 + number
        if model is Community:
            Community.objects.create(
                name=f"Community {suffix}", handle=make_handle(suffix, ObjectType.COMMUNITY), parent=rows[Community]
            )
        elif model is Collection:
            Collection.objects.create(
                name=f"Collection {suffix}",
                handle=make_handle(suffix, ObjectType.COLLECTION),
                community=rows[Community],
            )
        elif model is Item:
            make_item(collection, suffix, f"Item {suffix}")
        elif model is Bundle:
            Bundle.objects.create(item=make_item(collection, suffix, f"Item {suffix}"), name="TEXT")
        elif model is Bitstream:
            Bitstream.objects.create(bundle=rows[Bundle], name=f"{suffix}.pdf", format=rows[BitstreamFormat])
        elif model is Handle:
            make_item(collection, suffix, f"Item {suffix}")
        elif model is MetadataValue:
            MetadataValue.objects.create(field=rows[MetadataField], value=f"Value {suffix}", item=rows[Item])
        elif model is ResourcePolicy:
            ResourcePolicy.objects.create(
                action=ResourcePolicy.Action.READ, eperson=rows[EPerson], bundle=rows[Bundle]
            )
        elif model is EPerson:
            EPerson.objects.create(email=f"person{suffix}@example.org")
        else:
            raise AssertionError(f"no row factory for {model.__name__}")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "model",
    [Community, Collection, Item, Bundle, Bitstream, Handle, MetadataValue, ResourcePolicy, EPerson],
    ids=lambda model: model.__name__,
)
def test_admin_changelist_queries_independent_of_rows(admin_client, repository_rows, model):
    url = changelist_url(model)
    admin_client.get(url)
    with CaptureQueriesContext(connection) as few_rows:
        admin_client.get(url)

    add_rows(model, repository_rows, 5)
    with CaptureQueriesContext(connection) as more_rows:
        response = admin_client.get(url)

    assert response.context["cl"].result_count >= 6
    assert len(more_rows) == len(few_rows), [query["sql"] for query in more_rows.captured_queries]
