"""The content model: what a DSpace repository contains and what its AIPs carry.

Communities, collections, items, bundles and bitstreams are "DSpace objects": each
has a UUID that survives a restore, and the first four can have a handle. Metadata
values and resource policies point at exactly one DSpace object through one of
several nullable foreign keys, so that every relation keeps database integrity and
can be inserted in bulk.
"""
from __future__ import annotations

import uuid

from django.core.files.storage import storages
from django.db import models
from django.db.models import Q
from django.utils import timezone


class ObjectType(models.TextChoices):
    SITE = "SITE"
    COMMUNITY = "COMMUNITY"
    COLLECTION = "COLLECTION"
    ITEM = "ITEM"
    BUNDLE = "BUNDLE"
    BITSTREAM = "BITSTREAM"


class Handle(models.Model):
    """A persistent identifier "<prefix>/<suffix>"; a handle is never reused."""

    handle = models.CharField(max_length=255, unique=True)
    prefix = models.CharField(max_length=100, db_index=True)
    suffix = models.CharField(max_length=150)
    # The suffix as a number when it is one: new handles are minted past the largest.
    suffix_number = models.BigIntegerField(null=True, blank=True, db_index=True)
    resource_type = models.CharField(max_length=16, choices=ObjectType.choices)

    class Meta:
        ordering = ["prefix", "suffix_number", "suffix"]

    def __str__(self) -> str:
        return self.handle


class DSpaceObject(models.Model):
    """Fields shared by every object that AIPs identify by UUID."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    class Meta:
        abstract = True

    object_type: str = ""

    @property
    def handle_string(self) -> str | None:
        handle = getattr(self, "handle", None)
        return handle.handle if handle else None


class Site(DSpaceObject):
    """The installation itself: one row, whose handle is "<prefix>/0"."""

    object_type = ObjectType.SITE
    name = models.CharField(max_length=512)
    handle = models.OneToOneField(Handle, null=True, blank=True, on_delete=models.PROTECT, related_name="site")

    def __str__(self) -> str:
        return self.name


class Community(DSpaceObject):
    object_type = ObjectType.COMMUNITY
    handle = models.OneToOneField(Handle, null=True, blank=True, on_delete=models.PROTECT, related_name="community")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="subcommunities")
    # Copy of the first dc.title value, kept for sorting and admin search.
    name = models.CharField(max_length=1024, blank=True, db_index=True)
    logo = models.OneToOneField(
        "Bitstream", null=True, blank=True, on_delete=models.SET_NULL, related_name="community_logo"
    )
    # Role groups: DSpace lets one group serve several communities or collections.
    admin_group = models.ForeignKey(
        "Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="community_admin_of"
    )

    class Meta:
        verbose_name_plural = "communities"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name or f"Community {self.uuid}"


class Collection(DSpaceObject):
    object_type = ObjectType.COLLECTION
    handle = models.OneToOneField(Handle, null=True, blank=True, on_delete=models.PROTECT, related_name="collection")
    community = models.ForeignKey(
        Community, null=True, blank=True, on_delete=models.PROTECT, related_name="collections"
    )
    # Further parent communities beyond the owning one (DSpace allows several).
    other_communities = models.ManyToManyField(Community, blank=True, related_name="mapped_collections")
    name = models.CharField(max_length=1024, blank=True, db_index=True)
    logo = models.OneToOneField(
        "Bitstream", null=True, blank=True, on_delete=models.SET_NULL, related_name="collection_logo"
    )
    template_item = models.OneToOneField(
        "Item", null=True, blank=True, on_delete=models.SET_NULL, related_name="template_for"
    )
    admin_group = models.ForeignKey(
        "Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="collection_admin_of"
    )
    submitters_group = models.ForeignKey(
        "Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="collection_submitters_of"
    )
    workflow_step_1 = models.ForeignKey(
        "Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="collection_step1_of"
    )
    workflow_step_2 = models.ForeignKey(
        "Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="collection_step2_of"
    )
    workflow_step_3 = models.ForeignKey(
        "Group", null=True, blank=True, on_delete=models.SET_NULL, related_name="collection_step3_of"
    )

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name or f"Collection {self.uuid}"


class Item(DSpaceObject):
    object_type = ObjectType.ITEM
    handle = models.OneToOneField(Handle, null=True, blank=True, on_delete=models.PROTECT, related_name="item")
    owning_collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.PROTECT, related_name="owned_items"
    )
    mapped_collections = models.ManyToManyField(Collection, blank=True, related_name="mapped_items")
    name = models.CharField(max_length=1024, blank=True, db_index=True)
    in_archive = models.BooleanField(default=False)
    withdrawn = models.BooleanField(default=False)
    discoverable = models.BooleanField(default=True)
    # Set by the services, not on every save: a restore brings back the AIP's value.
    last_modified = models.DateTimeField(db_index=True)
    # When the item's package last changed in this installation, ingest included. Incremental
    # backups compare it, because a restore sets last_modified back to the package's value.
    changed_at = models.DateTimeField(default=timezone.now, db_index=True, editable=False)
    submitter = models.ForeignKey(
        "EPerson", null=True, blank=True, on_delete=models.SET_NULL, related_name="submitted_items"
    )

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name or f"Item {self.uuid}"


class Bundle(DSpaceObject):
    object_type = ObjectType.BUNDLE
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="bundles")
    name = models.CharField(max_length=255)
    position = models.PositiveIntegerField(default=0)
    primary_bitstream = models.ForeignKey(
        "Bitstream", null=True, blank=True, on_delete=models.SET_NULL, related_name="primary_of"
    )

    class Meta:
        ordering = ["item", "position", "id"]

    def __str__(self) -> str:
        return self.name


class BitstreamFormat(models.Model):
    class SupportLevel(models.IntegerChoices):
        UNKNOWN = 0
        KNOWN = 1
        SUPPORTED = 2

    short_description = models.CharField(max_length=128, unique=True)
    description = models.TextField(blank=True)
    mimetype = models.CharField(max_length=255, blank=True)
    support_level = models.IntegerField(choices=SupportLevel.choices, default=SupportLevel.UNKNOWN)
    internal = models.BooleanField(default=False)
    # File name extensions, the first one being the one written in AIP file names.
    extensions = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["short_description"]

    def __str__(self) -> str:
        return self.short_description


def bitstream_storage():
    """Return the storage that stores bitstream files (``STORAGES["bitstreams"]``)."""
    return storages["bitstreams"]


class Bitstream(DSpaceObject):
    object_type = ObjectType.BITSTREAM
    # Null for community and collection logos, which belong to no bundle.
    bundle = models.ForeignKey(Bundle, null=True, blank=True, on_delete=models.CASCADE, related_name="bitstreams")
    position = models.PositiveIntegerField(default=0)
    sequence_id = models.IntegerField(null=True, blank=True)
    name = models.CharField(max_length=1024, blank=True)
    source = models.CharField(max_length=1024, blank=True)
    description = models.TextField(blank=True)
    format = models.ForeignKey(BitstreamFormat, null=True, blank=True, on_delete=models.PROTECT)
    user_format_description = models.CharField(max_length=512, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    checksum = models.CharField(max_length=64, blank=True)
    checksum_algorithm = models.CharField(max_length=16, default="MD5")
    file = models.FileField(storage=bitstream_storage, max_length=512, blank=True)

    class Meta:
        ordering = ["bundle", "position", "id"]

    def __str__(self) -> str:
        return self.name or str(self.uuid)


class MetadataSchema(models.Model):
    short_id = models.CharField(max_length=32, unique=True)
    namespace = models.CharField(max_length=256, unique=True)

    class Meta:
        ordering = ["short_id"]

    def __str__(self) -> str:
        return self.short_id


class MetadataField(models.Model):
    schema = models.ForeignKey(MetadataSchema, on_delete=models.PROTECT, related_name="fields")
    element = models.CharField(max_length=64)
    qualifier = models.CharField(max_length=64, null=True, blank=True)
    scope_note = models.TextField(blank=True)

    class Meta:
        ordering = ["schema__short_id", "element", "qualifier"]
        constraints = [
            models.UniqueConstraint(
                fields=["schema", "element", "qualifier"],
                condition=Q(qualifier__isnull=False),
                name="unique_qualified_metadata_field",
            ),
            models.UniqueConstraint(
                fields=["schema", "element"],
                condition=Q(qualifier__isnull=True),
                name="unique_unqualified_metadata_field",
            ),
        ]

    def __str__(self) -> str:
        parts = [self.schema.short_id, self.element] + ([self.qualifier] if self.qualifier else [])
        return ".".join(parts)


# Foreign keys through which metadata values and policies point at their object.
OBJECT_FIELDS = ("site", "community", "collection", "item", "bundle", "bitstream")


def _exactly_one_object(prefix: str, fields: tuple[str, ...]) -> models.CheckConstraint:
    condition = Q()
    for chosen in fields:
        branch = Q(**{f"{chosen}__isnull": False})
        for other in fields:
            if other != chosen:
                branch &= Q(**{f"{other}__isnull": True})
        condition |= branch
    return models.CheckConstraint(condition=condition, name=f"{prefix}_exactly_one_object")


class MetadataValue(models.Model):
    class Confidence(models.IntegerChoices):
        UNSET = -1
        NOVALUE = 0
        REJECTED = 100
        FAILED = 200
        NOTFOUND = 300
        AMBIGUOUS = 400
        UNCERTAIN = 500
        ACCEPTED = 600

    field = models.ForeignKey(MetadataField, on_delete=models.PROTECT, related_name="values")
    value = models.TextField(blank=True)
    language = models.CharField(max_length=32, null=True, blank=True)
    authority = models.CharField(max_length=512, null=True, blank=True)
    confidence = models.IntegerField(choices=Confidence.choices, default=Confidence.UNSET)
    # Order of the value among all values of its object; values of one field keep their relative order.
    place = models.PositiveIntegerField(default=0)

    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.CASCADE, related_name="metadata")
    community = models.ForeignKey(Community, null=True, blank=True, on_delete=models.CASCADE, related_name="metadata")
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="metadata"
    )
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.CASCADE, related_name="metadata")
    bundle = models.ForeignKey(Bundle, null=True, blank=True, on_delete=models.CASCADE, related_name="metadata")
    bitstream = models.ForeignKey(Bitstream, null=True, blank=True, on_delete=models.CASCADE, related_name="metadata")

    class Meta:
        ordering = ["place", "id"]
        constraints = [_exactly_one_object("metadatavalue", OBJECT_FIELDS)]

    def __str__(self) -> str:
        return f"{self.field}: {self.value[:60]}"


class EPerson(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True)
    email = models.EmailField(max_length=254, unique=True, null=True, blank=True)
    netid = models.CharField(max_length=256, unique=True, null=True, blank=True)
    first_name = models.CharField(max_length=256, blank=True)
    last_name = models.CharField(max_length=256, blank=True)
    language = models.CharField(max_length=32, blank=True)
    can_log_in = models.BooleanField(default=False)
    require_certificate = models.BooleanField(default=False)
    self_registered = models.BooleanField(default=False)
    # DSpace password hash: hex digest, the MessageDigest algorithm name ("SHA-512") and hex salt.
    # An empty digest algorithm with a password is DSpace's legacy unsalted MD5.
    password_hash = models.CharField(max_length=256, blank=True)
    password_digest_algorithm = models.CharField(max_length=32, blank=True)
    password_salt = models.CharField(max_length=128, blank=True)
    user = models.OneToOneField(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="eperson"
    )

    class Meta:
        verbose_name = "EPerson"
        verbose_name_plural = "EPeople"
        ordering = ["email", "netid", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(email__isnull=False) | Q(netid__isnull=False), name="eperson_has_email_or_netid"
            )
        ]

    def __str__(self) -> str:
        return self.email or self.netid or str(self.uuid)

    def check_password(self, raw_password: str) -> bool:
        """Tell whether ``raw_password`` matches this person's DSpace password hash."""
        from repository.passwords import dspace_password_matches

        return dspace_password_matches(
            raw_password,
            stored_hash=self.password_hash,
            algorithm=self.password_digest_algorithm,
            salt_hex=self.password_salt,
        )


class Group(models.Model):
    ANONYMOUS = "Anonymous"
    ADMINISTRATOR = "Administrator"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True)
    name = models.CharField(max_length=512, unique=True)
    members = models.ManyToManyField(EPerson, blank=True, related_name="groups")
    member_groups = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="parent_groups")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ResourcePolicy(models.Model):
    class Action(models.IntegerChoices):
        READ = 0
        WRITE = 1
        DELETE = 2
        ADD = 3
        REMOVE = 4
        WORKFLOW_STEP_1 = 5
        WORKFLOW_STEP_2 = 6
        WORKFLOW_STEP_3 = 7
        WORKFLOW_ABORT = 8
        DEFAULT_BITSTREAM_READ = 9
        DEFAULT_ITEM_READ = 10
        ADMIN = 11
        WITHDRAWN_READ = 12

    action = models.IntegerField(choices=Action.choices)
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    eperson = models.ForeignKey(EPerson, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    name = models.CharField(max_length=256, blank=True)
    description = models.TextField(blank=True)
    # DSpace's rptype: TYPE_CUSTOM for everything an AIP restores.
    policy_type = models.CharField(max_length=32, default="TYPE_CUSTOM")

    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    community = models.ForeignKey(Community, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    collection = models.ForeignKey(
        Collection, null=True, blank=True, on_delete=models.CASCADE, related_name="policies"
    )
    item = models.ForeignKey(Item, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    bundle = models.ForeignKey(Bundle, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")
    bitstream = models.ForeignKey(Bitstream, null=True, blank=True, on_delete=models.CASCADE, related_name="policies")

    class Meta:
        verbose_name_plural = "resource policies"
        ordering = ["id"]
        constraints = [
            _exactly_one_object("resourcepolicy", OBJECT_FIELDS),
            models.CheckConstraint(
                condition=Q(group__isnull=False) | Q(eperson__isnull=False), name="resourcepolicy_has_subject"
            ),
        ]

    def __str__(self) -> str:
        subject = self.group or self.eperson
        return f"{self.get_action_display()} for {subject}"


def object_kwargs(obj: models.Model) -> dict[str, models.Model]:
    """Return the keyword that points a metadata value or policy at ``obj``."""
    return {obj._meta.model_name: obj}


class WorkflowItem(models.Model):
    """An item's passage through its collection's approval workflow (DSpace's basic workflow).

    Each of the collection's three steps is run by the group in ``Collection.workflow_step_<n>``,
    and steps without a group are skipped. The row stays after the item is installed or
    rejected, as the record of the last step and of who decided it.
    """

    class Step(models.IntegerChoices):
        REVIEW = 1, "review"
        CHECK = 2, "check"
        FINAL_EDIT = 3, "final edit"

    class State(models.TextChoices):
        WAITING = "waiting", "waiting"
        INSTALLED = "installed", "approved and installed"
        REJECTED = "rejected", "rejected"

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="workflow_item")
    collection = models.ForeignKey(Collection, on_delete=models.PROTECT, related_name="workflow_items")
    # The step the item waits in, or the step in which it was installed or rejected.
    step = models.PositiveSmallIntegerField(choices=Step.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING, db_index=True)
    # The EPerson who claimed the current step. After the last approval or a rejection, the person who decided.
    owner = models.ForeignKey(
        EPerson, null=True, blank=True, on_delete=models.SET_NULL, related_name="claimed_workflow_items"
    )
    submitter = models.ForeignKey(
        EPerson, null=True, blank=True, on_delete=models.SET_NULL, related_name="workflow_submissions"
    )
    # The reviewer's reason for a rejection, sent back to the submitter.
    reason = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(step__gte=1, step__lte=3), name="workflowitem_step_1_to_3"),
            models.CheckConstraint(
                condition=~Q(state="rejected") | ~Q(reason=""), name="workflowitem_rejection_has_reason"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item} ({self.get_state_display()}, step {self.step})"
