"""Create or replace one site, community, collection or item from its manifest."""
from __future__ import annotations

import uuid as uuid_module
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.utils import timezone

from aip import selectors
from aip.mets.model import DimValue, FileRecord, PackageManifest, PolicyRecord
from aip.mets.reader import choose_descriptive, mods_to_dim
from aip.options import IngestOptions
from aip.package import PackageReader
from aip.services import bitstream_ingest
from aip.services.bitstream_ingest import FormatRegistry, StoredFiles
from aip.services.handles import handle_new
from aip.services.item_batch import ItemBatch
from aip.services.metadata_ingest import FieldRegistry, container_values, first_title, value_rows, values_replace
from aip.services.roles_ingest import PolicyWriter, RolesIngester, free_uuid
from repository.installation import submission_record
from repository.models import Bitstream, Bundle, Collection, Community, EPerson, Handle, Item, Site
from repository.workflow import item_install, workflow_start

MODELS = {"COMMUNITY": Community, "COLLECTION": Collection, "ITEM": Item}
# fileGrp USE values that older packagers wrote for DSpace's bundle names.
BUNDLE_ALIASES = {"CONTENT": "ORIGINAL", "MANIFESTMD": "METADATA"}


class ObjectIngester:
    """Per-run state shared by every package: registries, stored files, the current user."""

    def __init__(self, *, options: IngestOptions, stored: StoredFiles, current_user: EPerson, warn: Callable):
        self.options = options
        self.stored = stored
        self.current_user = current_user
        self.warn = warn
        self.fields = FieldRegistry(
            create_missing=options.create_metadata_fields, commit_apart=options.commit_registries_apart
        )
        self.formats = FormatRegistry(commit_apart=options.commit_registries_apart)
        self.handle_aliases: dict[str, object] = {}
        self.ignored_sections = frozenset(settings.AIP_INGEST_IGNORED_SECTIONS)
        mode = "restore"
        if options.replace:
            mode = "replace"
        elif options.keep_existing:
            mode = "keep"
        self.roles = RolesIngester(
            current_user=current_user, mode=mode, resolve_handle=self.resolve_handle, warn=warn
        )
        self.policies = PolicyWriter(resolve_handle=self.resolve_handle, warn=warn)
        self.batch = ItemBatch(policies=self.policies, keep_file_uuids=options.restore)
        self._batching = options.restore and not options.ignore_handle and ItemBatch.supported()
        # Objects found by handle, and UUIDs that ``by_uuid`` found free, so that a run reads each once.
        self._by_handle: dict[str, object] = {}
        self._free_uuids: set[tuple[type, uuid_module.UUID]] = set()
        self._submitters: dict[str, EPerson] = {}

    def reads(self, section: str) -> bool:
        """Tell whether ingest applies a section type (settings.AIP_INGEST_IGNORED_SECTIONS lists those it skips)."""
        return section not in self.ignored_sections

    def resolve_handle(self, handle: str):
        """Return the object a package's handle means in this run.

        A package ingested under a new handle (submit mode, or ignoreHandle) still
        names itself, and its children name it as their parent, by its old handle.
        """
        found = self.handle_aliases.get(handle) or self._by_handle.get(handle)
        if found is None:
            # Only found objects are kept: a handle not found yet may belong to a package later in the run.
            found = selectors.object_by_handle(handle)
            if found is not None:
                self._by_handle[handle] = found
        return found

    def by_uuid(self, object_type: str, text: str):
        try:
            value = uuid_module.UUID(text)
        except ValueError:
            return None
        found = MODELS[object_type].objects.filter(uuid=value).select_related("handle").first()
        if found is None:
            self._free_uuids.add((MODELS[object_type], value))
        return found

    def item_is_new(self, manifest: PackageManifest) -> bool:
        """Tell whether an item package may wait in the batch: restored with its own handle and UUID, both unused.

        One query checks both; an item that exists, or has roles to apply, takes the path of other packages.
        """
        if not self._batching or not manifest.handle or self._roles_apply(manifest):
            return False
        try:
            value = uuid_module.UUID(manifest.uuid or "")
        except ValueError:
            return False
        if manifest.handle in self.batch.handles or value in self.batch.uuids:
            return False
        uuid_field = Item._meta.get_field("uuid")
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT EXISTS (SELECT 1 FROM {Handle._meta.db_table} WHERE handle = %s) "
                f"OR EXISTS (SELECT 1 FROM {Item._meta.db_table} WHERE uuid = %s)",
                [manifest.handle, uuid_field.get_db_prep_value(value, connection)],
            )
            taken = cursor.fetchone()[0]
        if taken:
            return False
        self._free_uuids.add((Item, value))
        return True

    def item_create_waiting(self, reader: PackageReader, manifest: PackageManifest, *, parent: Collection, source: str):
        """Create a new item whose rows wait in the batch. Call it only after ``item_is_new`` returned True."""
        return self.create(
            reader, manifest, parent=parent, handle=handle_new(manifest.handle, "ITEM"), source=source, waiting=True
        )

    def _new_uuid(self, model, manifest_uuid: str | None) -> uuid_module.UUID:
        """Keep the package's UUID on restore when it is free; submit always mints a new one."""
        if not self.options.restore:
            return uuid_module.uuid4()
        try:
            key = (model, uuid_module.UUID(manifest_uuid or ""))
        except ValueError:
            return uuid_module.uuid4()
        if key in self._free_uuids:
            # by_uuid found it free just before this package's object is created, and nothing took it since.
            self._free_uuids.discard(key)
            return key[1]
        return free_uuid(model, manifest_uuid) or uuid_module.uuid4()

    # Creation

    def create(self, reader: PackageReader, manifest: PackageManifest, *, parent, handle, source: str, waiting=False):
        model = MODELS[manifest.object_type]
        obj = model(uuid=self._new_uuid(model, manifest.uuid), handle=handle)
        if isinstance(obj, Community):
            obj.parent = parent if isinstance(parent, Community) else None
        elif isinstance(obj, Collection):
            obj.community = parent
        else:
            obj.owning_collection = parent
            obj.in_archive = True
            obj.last_modified = manifest.last_modified if self.options.restore and manifest.last_modified else timezone.now()
        if not isinstance(obj, Item) or self._roles_apply(manifest):
            # _fill inserts a new item once its fields are known; roles need the object saved first.
            obj.save()
        if manifest.handle and manifest.handle != obj.handle_string:
            self.handle_aliases[manifest.handle] = obj
        if obj.handle_string and not isinstance(obj, Item):
            # Containers only: they are the parents later packages name, and items would make the cache grow with the run.
            self._by_handle[obj.handle_string] = obj
        self._fill(obj, reader, manifest, source=source, waiting=waiting)
        if isinstance(obj, Item) and not self.options.restore:
            self._submit(obj, parent)
        return obj

    def _submit(self, item: Item, collection: Collection) -> None:
        """Give a submitted item what DSpace gives every new submission; a restore adds nothing."""
        now = timezone.now()
        if item.submitter_id is None:
            item.submitter = self.current_user
        item.in_archive = False
        item.last_modified = now
        item.save()
        # Named like the run's other files, so that a failed run or the sweep after a kill deletes the licence too.
        license_name = self.stored.name_new()
        self.stored.names.append(license_name)
        saved = submission_record(
            item=item, collection=collection, submitter=item.submitter, now=now, license_file_name=license_name
        )
        if saved != license_name:
            self.stored.names.append(saved)
        if not self.options.use_workflow:
            item_install(item=item)
        elif workflow_start(item=item, collection=collection) is not None:
            # NOTE: the item keeps the handle it got on creation while it waits; DSpace assigns one on installation.
            self.warn(f"Item {item.handle_string} waits in the approval workflow of collection {collection}.")

    def replace(self, obj, reader: PackageReader, manifest: PackageManifest, *, source: str):
        """Empty ``obj`` of everything a package carries, keeping its handle, UUID and parent, then refill it."""
        if isinstance(obj, Item):
            for bundle in obj.bundles.all():
                self._delete_bitstreams(bundle.bitstreams.all())
            obj.bundles.all().delete()
            # The package's AIP-TECHMD states the submitter and withdrawal again.
            obj.submitter = None
            obj.withdrawn = False
            obj.in_archive = True
            if self.options.restore and manifest.last_modified:
                obj.last_modified = manifest.last_modified
        elif obj.logo_id:
            logo = obj.logo
            obj.logo = None
            obj.save(update_fields=["logo"])
            self._delete_bitstreams([logo])
        obj.metadata.all().delete()
        obj.policies.all().delete()
        self._fill(obj, reader, manifest, source=source)
        return obj

    def _delete_bitstreams(self, bitstreams) -> None:
        for bitstream in list(bitstreams):
            if bitstream.file.name:
                # Deleted only once the run commits, so a failed replace keeps the old files.
                self.stored.delete_after_commit(bitstream.file.name)
            bitstream.delete()

    def _fill(self, obj, reader: PackageReader, manifest: PackageManifest, *, source: str, waiting=False) -> None:
        """Apply the package's sections in DSpace's order: roles, metadata, technical metadata, files, policies.

        ``obj`` is new or emptied by ``replace``: it has no metadata values, policies or files to delete first.
        With ``waiting`` a new item's rows stay in the batch, to be inserted with those of other items.
        """
        if self._roles_apply(manifest):
            self.roles.apply(manifest.admin.roles, owner=obj, source=source)
        if self.reads("METSRIGHTS"):
            self.policies.groups_load(_policy_records(manifest))
        values = self._descriptive_values(manifest.descriptive, source=source)
        if isinstance(obj, Item):
            self._item_fill(obj, reader, manifest, values, source=source, waiting=waiting)
            return
        stored_values = container_values(obj, values)
        values_replace(obj, stored_values, self.fields, source=source, existing=False)
        obj.name = first_title(stored_values)
        self._logo(obj, reader, manifest.logo, source=source)
        if isinstance(obj, Collection) and manifest.template_descriptive:
            self._template(obj, manifest.template_descriptive, source=source)
        obj.save()
        if manifest.admin.policies is not None and self.reads("METSRIGHTS"):
            self.policies.add(obj, manifest.admin.policies, source=source)
        self.policies.flush()

    def _item_fill(self, item: Item, reader, manifest: PackageManifest, values, *, source: str, waiting: bool) -> None:
        """Gather the rows of an item in a batch entry; insert them now unless ``waiting``."""
        mapped = []
        if self.reads("AIP-TECHMD"):
            mapped = self._item_techmd(item, manifest.admin.techmd_dim or [], source=source)
        item.name = first_title(values)
        if not waiting:
            item.save()
        entry = self.batch.start(item, source=source, handle=item.handle if waiting else None)
        entry.mapped_into = [collection.pk for collection in mapped]
        entry.values = value_rows(item, values, self.fields, source=source)
        self._item_files(item, reader, manifest, entry, source=source)
        if manifest.admin.policies is not None and self.reads("METSRIGHTS"):
            self.policies.add(item, manifest.admin.policies, source=source)
        self.batch.end(entry)
        if not waiting:
            self.batch.flush()

    def _roles_apply(self, manifest: PackageManifest) -> bool:
        return manifest.admin.roles is not None and self.reads("DSPACE-ROLES")

    def _descriptive_values(self, sections, *, source: str) -> list[DimValue]:
        chosen = choose_descriptive(sections, self.options.preferred_dmd, source=source)
        values: list[DimValue] = []
        for section in chosen:
            if section.dim is not None:
                values.extend(section.dim)
            elif section.mods_xml is not None:
                values.extend(mods_to_dim(section.mods_xml))
        return values

    # Items

    def _item_techmd(self, item: Item, values: list[DimValue], *, source: str) -> list[Collection]:
        """Set the submitter and withdrawal of ``item``; return the collections it is mapped into."""
        mapped = []
        for value in values:
            key = (value.element, value.qualifier or None)
            if key == ("creator", None) and value.value:
                item.submitter = self._submitter(value.value, source=source)
            elif key == ("relation", "isReferencedBy"):
                collection = self.resolve_handle(value.value.removeprefix("hdl:"))
                if isinstance(collection, Collection):
                    mapped.append(collection)
            elif key == ("rights", "accessRights") and value.value.upper() == "WITHDRAWN":
                item.withdrawn = True
                item.in_archive = False
        return mapped

    def _submitter(self, email: str, *, source: str) -> EPerson | None:
        person = self._submitters.get(email.lower()) or EPerson.objects.filter(email__iexact=email).first()
        if person is None and settings.AIP_CREATE_SUBMITTER:
            person = EPerson.objects.create(email=email)
        if person is not None:
            self._submitters[email.lower()] = person
        if person is None:
            self.warn(
                f"{source}: submitter {email} is not in this repository; the item is restored without a submitter "
                "(restore the SITE AIP first, or set AIP_CREATE_SUBMITTER=true to create missing submitters)."
            )
        return person

    def _item_files(self, item: Item, reader: PackageReader, manifest: PackageManifest, entry, *, source: str) -> None:
        """Store the files of an item, add its bundles and bitstreams to ``entry``, then queue their policies."""
        bundles = [
            Bundle(item=item, name=BUNDLE_ALIASES.get(record.name, record.name), position=position)
            for position, record in enumerate(manifest.bundles)
        ]
        entry.bundles = bundles
        files_by_bundle: list[list[tuple[Bitstream, FileRecord]]] = []
        for bundle, record in zip(bundles, manifest.bundles):
            files = []
            for index, file_record in enumerate(record.files):
                bitstream = self._bitstream(reader, file_record, bundle=bundle, position=index, source=source)
                if bitstream is None:
                    continue
                files.append((bitstream, file_record))
                if file_record.id == manifest.primary_file_id:
                    entry.primaries.append((bundle, bitstream))
            files_by_bundle.append(files)
        entry.bitstreams = [bitstream for files in files_by_bundle for bitstream, _ in files]
        if not self.reads("METSRIGHTS"):
            return
        for bundle, record, files in zip(bundles, manifest.bundles, files_by_bundle):
            for bitstream, file_record in files:
                if file_record.admin.policies is not None:
                    self.policies.add(bitstream, file_record.admin.policies, source=source)
            if record.admin.policies is not None:
                self.policies.add(bundle, record.admin.policies, source=source)

    def _bitstream(self, reader, record: FileRecord, *, bundle, position: int, source: str) -> Bitstream | None:
        """Store the file of ``record`` and return its unsaved bitstream, or None for an empty placeholder.

        The bitstream has the file's own UUID when the package states one. The batch replaces
        it by a new one on submit, or when another bitstream already uses it.
        """
        if bitstream_ingest.is_placeholder(reader, record):
            self.warn(f"{source}: file {record.href} is an empty placeholder for unreadable content; skipped.")
            return None
        try:
            stated = uuid_module.UUID((record.id or "").removeprefix("bitstream_"))
        except ValueError:
            stated = uuid_module.uuid4()
        bitstream = Bitstream(uuid=stated, bundle=bundle, position=position)
        bitstream_ingest.apply_technical_metadata(bitstream, record, self.formats)
        bitstream_ingest.store_file(reader, record, bitstream, self.stored, source=source)
        return bitstream

    # Containers

    def _logo(self, obj, reader: PackageReader, record: FileRecord | None, *, source: str) -> None:
        if record is None:
            return
        logo = Bitstream(uuid=self._new_uuid(Bitstream, record.id.removeprefix("bitstream_")))
        bitstream_ingest.apply_technical_metadata(logo, record, self.formats)
        bitstream_ingest.store_file(reader, record, logo, self.stored, source=source)
        logo.save()
        obj.logo = logo
        if record.admin.policies is not None and self.reads("METSRIGHTS"):
            self.policies.add(logo, record.admin.policies, source=source)

    def _template(self, collection: Collection, sections, *, source: str) -> None:
        if collection.template_item_id:
            return
        template = Item.objects.create(in_archive=False, last_modified=timezone.now())
        values = self._descriptive_values(sections, source=source)
        values_replace(template, values, self.fields, source=source, existing=False)
        collection.template_item = template

    # Site

    def site_ingest(self, reader: PackageReader, manifest: PackageManifest, *, source: str) -> Site:
        """Apply a SITE package to this installation's site: name, people, groups and policies."""
        site = selectors.site_get()
        if manifest.handle and manifest.handle != site.handle_string:
            self.warn(
                f"{source}: the package is the site {manifest.handle}, and this installation is "
                f"{site.handle_string}; its content is applied to this site."
            )
        if manifest.admin.roles is not None and self.reads("DSPACE-ROLES"):
            self.roles.apply(manifest.admin.roles, owner=None, is_site=True, source=source)
        if self.options.keep_existing:
            return site
        values = self._descriptive_values(manifest.descriptive, source=source) if manifest.descriptive else []
        site.name = first_title(values) or site.name
        kept_uuid = free_uuid(Site, manifest.uuid)
        if kept_uuid:
            site.uuid = kept_uuid
        site.save()
        if manifest.admin.policies is not None and self.reads("METSRIGHTS"):
            self.policies.replace(site, manifest.admin.policies, source=source)
            self.policies.flush()
        return site


def _policy_records(manifest: PackageManifest) -> list[PolicyRecord]:
    """Return every policy a package states: the object's, the logo's, and those of each bundle and file."""
    records = list(manifest.admin.policies or [])
    if manifest.logo is not None:
        records += manifest.logo.admin.policies or []
    for bundle in manifest.bundles:
        records += bundle.admin.policies or []
        for file_record in bundle.files:
            records += file_record.admin.policies or []
    return records
