"""Admin pages for browsing and searching the content model.

Foreign keys to tables that grow with the repository (items, bitstreams, handles,
EPeople) use autocomplete or raw id widgets, because a plain select box would load
every row on each form. Size, checksum and file of a bitstream are read-only here:
they describe the stored file, and changing them by hand would make fixity checks fail.

Communities, collections and items have the actions "Export AIP" and "Export AIP
with all children", and the site has "Back up the whole site"; each queues export
jobs into the "aips" storage (see ``aip.admin_views``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ObjectDoesNotExist
from django.db import models
from django.template.response import TemplateResponse

from aip import selectors
from aip.admin_views import ExportActionsMixin, export_page

from .models import (
    OBJECT_FIELDS,
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
    ResourcePolicy,
    Site,
    WorkflowItem,
)
from .workflow import WorkflowError, workflow_approve, workflow_claim, workflow_reject, workflow_unclaim

logger = logging.getLogger(__name__)


@admin.display(description="handle", ordering="handle__handle")
def handle_column(obj: models.Model) -> str | None:
    # Callers add "handle" to list_select_related, so this reads no extra row.
    return obj.handle.handle if obj.handle_id else None


@admin.display(description="object")
def attached_object_column(obj: MetadataValue | ResourcePolicy) -> str | None:
    """Name the DSpace object, with its type, that a metadata value or resource policy belongs to."""
    for name in OBJECT_FIELDS:
        target = getattr(obj, name)
        if target is not None:
            return f"{target._meta.verbose_name}: {target}"
    return None


class MetadataValueInline(admin.TabularInline):
    model = MetadataValue
    fields = ("field", "value", "language", "authority", "confidence", "place")
    autocomplete_fields = ("field",)
    ordering = ("place", "id")
    extra = 0

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        # MetadataField.__str__ reads its schema, so joining the schema avoids a query per row.
        if db_field.name == "field":
            kwargs["queryset"] = MetadataField.objects.select_related("schema")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("field__schema")


class SiteMetadataInline(MetadataValueInline):
    fk_name = "site"


class CommunityMetadataInline(MetadataValueInline):
    fk_name = "community"


class CollectionMetadataInline(MetadataValueInline):
    fk_name = "collection"


class ItemMetadataInline(MetadataValueInline):
    fk_name = "item"


class BundleInline(admin.TabularInline):
    model = Bundle
    fields = ("name", "position", "primary_bitstream")
    raw_id_fields = ("primary_bitstream",)
    show_change_link = True
    extra = 0


class BitstreamInline(admin.TabularInline):
    model = Bitstream
    fk_name = "bundle"
    fields = ("position", "sequence_id", "name", "format", "size_bytes", "checksum", "checksum_algorithm")
    readonly_fields = ("size_bytes", "checksum", "checksum_algorithm")
    autocomplete_fields = ("format",)
    show_change_link = True
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("format")


@admin.register(Handle)
class HandleAdmin(admin.ModelAdmin):
    list_display = ("handle", "resource_type", "resource")
    list_filter = ("resource_type", "prefix")
    search_fields = ("handle",)
    # The reverse one-to-one relations become LEFT JOINs, so the resource column reads no extra rows.
    list_select_related = ("site", "community", "collection", "item")

    @admin.display(description="resource")
    def resource(self, obj: Handle) -> str | None:
        for name in ("site", "community", "collection", "item"):
            try:
                return str(getattr(obj, name))
            except ObjectDoesNotExist:
                continue
        return None


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", handle_column, "uuid")
    list_select_related = ("handle",)
    search_fields = ("name", "handle__handle")
    readonly_fields = ("uuid",)
    autocomplete_fields = ("handle",)
    inlines = (SiteMetadataInline,)
    actions = ("backup_site",)

    def has_export_aip_permission(self, request) -> bool:
        return request.user.has_perm("aip.export_aip")

    @admin.action(description="Back up the whole site…", permissions=["export_aip"])
    def backup_site(self, request, queryset):
        # The installation has one site, and its backup is every object below it, whichever row was ticked.
        return export_page(
            self,
            request,
            objects=[selectors.site_get()],
            recursive=True,
            title="Back up the whole site",
            action="backup_site",
        )


@admin.register(Community)
class CommunityAdmin(ExportActionsMixin, admin.ModelAdmin):
    list_display = ("name", handle_column, "parent")
    list_select_related = ("handle", "parent")
    search_fields = ("name", "handle__handle")
    readonly_fields = ("uuid",)
    autocomplete_fields = ("handle", "parent", "logo", "admin_group")
    inlines = (CommunityMetadataInline,)


@admin.register(Collection)
class CollectionAdmin(ExportActionsMixin, admin.ModelAdmin):
    list_display = ("name", handle_column, "community")
    list_select_related = ("handle", "community")
    search_fields = ("name", "handle__handle")
    readonly_fields = ("uuid",)
    autocomplete_fields = (
        "handle",
        "community",
        "other_communities",
        "logo",
        "template_item",
        "admin_group",
        "submitters_group",
        "workflow_step_1",
        "workflow_step_2",
        "workflow_step_3",
    )
    inlines = (CollectionMetadataInline,)


@admin.register(Item)
class ItemAdmin(ExportActionsMixin, admin.ModelAdmin):
    list_display = (
        "name",
        handle_column,
        "owning_collection",
        "in_archive",
        "withdrawn",
        "discoverable",
        "last_modified",
    )
    list_filter = ("in_archive", "withdrawn", "discoverable", "last_modified", "owning_collection")
    list_select_related = ("handle", "owning_collection")
    search_fields = ("name", "handle__handle", "=uuid")
    readonly_fields = ("uuid",)
    autocomplete_fields = ("handle", "owning_collection", "mapped_collections", "submitter")
    inlines = (ItemMetadataInline, BundleInline)


@admin.register(Bundle)
class BundleAdmin(admin.ModelAdmin):
    list_display = ("name", "item", "position")
    list_filter = ("name",)
    list_select_related = ("item",)
    search_fields = ("name", "item__name", "item__handle__handle", "=item__uuid")
    readonly_fields = ("uuid",)
    autocomplete_fields = ("item",)
    raw_id_fields = ("primary_bitstream",)
    inlines = (BitstreamInline,)


@admin.register(Bitstream)
class BitstreamAdmin(admin.ModelAdmin):
    list_display = ("name", "size_bytes", "checksum", "format", "sequence_id", "bundle")
    list_filter = ("format",)
    list_select_related = ("format", "bundle")
    search_fields = ("name", "checksum", "=uuid")
    readonly_fields = ("uuid", "size_bytes", "checksum", "checksum_algorithm", "file")
    autocomplete_fields = ("bundle", "format")


@admin.register(BitstreamFormat)
class BitstreamFormatAdmin(admin.ModelAdmin):
    list_display = ("short_description", "mimetype", "support_level", "internal", "extensions")
    list_filter = ("support_level", "internal")
    search_fields = ("short_description", "mimetype", "description")


@admin.register(MetadataSchema)
class MetadataSchemaAdmin(admin.ModelAdmin):
    list_display = ("short_id", "namespace")
    search_fields = ("short_id", "namespace")


@admin.register(MetadataField)
class MetadataFieldAdmin(admin.ModelAdmin):
    list_display = ("__str__", "schema", "element", "qualifier", "scope_note")
    list_filter = ("schema",)
    search_fields = ("element", "qualifier", "schema__short_id", "scope_note")

    def get_queryset(self, request):
        # Also used by the autocomplete of the metadata inlines, where __str__ reads the schema.
        return super().get_queryset(request).select_related("schema")


@admin.register(MetadataValue)
class MetadataValueAdmin(admin.ModelAdmin):
    list_display = ("field", "value", "language", "place", attached_object_column)
    list_filter = ("field__schema",)
    list_select_related = ("field__schema", *OBJECT_FIELDS)
    search_fields = ("value", "field__element", "field__qualifier", "authority")
    autocomplete_fields = ("field",)
    raw_id_fields = OBJECT_FIELDS


@admin.register(EPerson)
class EPersonAdmin(admin.ModelAdmin):
    list_display = ("email", "first_name", "last_name", "netid", "can_log_in", "user")
    list_filter = ("can_log_in", "self_registered", "require_certificate")
    list_select_related = ("user",)
    search_fields = ("email", "first_name", "last_name", "netid")
    # The DSpace password hash and salt must not be shown or edited in a form.
    exclude = ("password_hash", "password_digest_algorithm", "password_salt")
    autocomplete_fields = ("user",)


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):
    list_display = ("name", "uuid")
    search_fields = ("name",)
    filter_horizontal = ("members", "member_groups")


@admin.register(ResourcePolicy)
class ResourcePolicyAdmin(admin.ModelAdmin):
    list_display = ("action", "group", "eperson", attached_object_column, "start_date", "end_date", "policy_type")
    list_filter = ("action", "policy_type")
    list_select_related = ("group", "eperson", *OBJECT_FIELDS)
    search_fields = ("name", "group__name", "eperson__email")
    autocomplete_fields = ("group", "eperson")
    raw_id_fields = OBJECT_FIELDS


class WorkflowRejectForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5, "cols": 80}),
        help_text="Stored with every selected item for its submitter.",
    )


@admin.register(WorkflowItem)
class WorkflowItemAdmin(admin.ModelAdmin):
    """Items in collection workflows, with actions that run as the EPerson of the logged-in user.

    A superuser without an EPerson acts as an administrator. Rows change only through the
    workflow services, so they cannot be added or edited here.
    """

    list_display = ("item", "item_handle", "collection", "step", "state", "owner", "submitter", "updated")
    list_filter = ("state", "step", "collection")
    list_select_related = ("item__handle", "collection", "owner", "submitter")
    search_fields = ("item__name", "item__handle__handle")
    readonly_fields = ("item", "collection", "step", "state", "owner", "submitter", "reason", "created", "updated")
    actions = ("approve", "reject", "claim", "unclaim")

    @admin.display(description="handle", ordering="item__handle__handle")
    def item_handle(self, obj: WorkflowItem) -> str | None:
        return obj.item.handle_string

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # The actions need the model's change permission, but a single row is only shown, never edited.
        return obj is None and super().has_change_permission(request)

    @admin.action(description="Approve selected workflow items", permissions=["change"])
    def approve(self, request, queryset) -> None:
        outcomes = self._run_each(
            request,
            queryset,
            "approve",
            lambda workflow_item, person, superuser: workflow_approve(
                workflow_item=workflow_item, person=person, claim=True, superuser=superuser
            ),
        )
        if outcomes:
            installed = sum(1 for outcome in outcomes if outcome.state == WorkflowItem.State.INSTALLED)
            self.message_user(
                request,
                f"Approved {self._count(outcomes, 'workflow item')}: {installed} installed, "
                f"{len(outcomes) - installed} moved to their next step.",
                messages.SUCCESS,
            )

    @admin.action(description="Reject selected workflow items…", permissions=["change"])
    def reject(self, request, queryset) -> TemplateResponse | None:
        # The first request shows the reason form, and submitting that form (it posts "apply") runs the rejection.
        form = WorkflowRejectForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            reason = form.cleaned_data["reason"]
            outcomes = self._run_each(
                request,
                queryset,
                "reject",
                lambda workflow_item, person, superuser: workflow_reject(
                    workflow_item=workflow_item, person=person, reason=reason, claim=True, superuser=superuser
                ),
            )
            if outcomes:
                self.message_user(request, f"Rejected {self._count(outcomes, 'workflow item')}.", messages.SUCCESS)
            return None

        context = {
            **self.admin_site.each_context(request),
            "title": "Reject workflow items",
            "opts": self.model._meta,
            "form": form,
            "workflow_items": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/repository/workflowitem/reject.html", context)

    @admin.action(description="Claim selected workflow items", permissions=["change"])
    def claim(self, request, queryset) -> None:
        outcomes = self._run_each(
            request,
            queryset,
            "claim",
            lambda workflow_item, person, superuser: workflow_claim(
                workflow_item=workflow_item, person=person, superuser=superuser
            ),
        )
        if outcomes:
            self.message_user(request, f"Claimed {self._count(outcomes, 'workflow item')}.", messages.SUCCESS)

    @admin.action(description="Return selected workflow items to the pool", permissions=["change"])
    def unclaim(self, request, queryset) -> None:
        outcomes = self._run_each(
            request,
            queryset,
            "unclaim",
            lambda workflow_item, person, superuser: workflow_unclaim(
                workflow_item=workflow_item, person=person, superuser=superuser
            ),
        )
        if outcomes:
            self.message_user(
                request, f"Returned {self._count(outcomes, 'workflow item')} to the pool.", messages.SUCCESS
            )

    def _run_each(
        self, request, queryset, action: str, service: Callable[[WorkflowItem, EPerson | None, bool], WorkflowItem]
    ) -> list[WorkflowItem]:
        """Call ``service(workflow_item, person, superuser)`` on every selected row and return the results.

        Each ``WorkflowError`` becomes an error message and a log line, and the other rows still run.
        """
        try:
            person = request.user.eperson
        except EPerson.DoesNotExist:
            person = None
        superuser = person is None and request.user.is_superuser
        if person is None and not superuser:
            self.message_user(
                request,
                f"User {request.user.get_username()} is not linked to an EPerson, so they cannot act in a workflow. "
                "Link an EPerson to the user on its EPerson page.",
                messages.ERROR,
            )
            return []

        outcomes = []
        for workflow_item in queryset:
            try:
                outcomes.append(service(workflow_item, person, superuser))
            except WorkflowError as error:
                logger.warning(
                    "workflow %s of workflow item %s by user %s failed: %s",
                    action,
                    workflow_item.pk,
                    request.user.get_username(),
                    error,
                )
                self.message_user(request, str(error), messages.ERROR)
        return outcomes

    @staticmethod
    def _count(rows: list, noun: str) -> str:
        return f"{len(rows)} {noun}" if len(rows) == 1 else f"{len(rows)} {noun}s"

