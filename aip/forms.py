"""Forms of the admin pages that queue AIP jobs: export, restore and verify.

Each form turns its fields into the packager's ``-o NAME=VALUE`` options and
checks them with the same parser a job uses, so an invalid option is a form
error here and never a failed job.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from django import forms
from django.conf import settings

from aip import selectors
from aip.errors import InvalidOptionError
from aip.options import export_options, ingest_options
from aip.services.split import MAX_PARTS

# Name of the STORAGES entry the admin writes exports and uploads to and reads packages from.
AIP_STORAGE = "aips"

DEFAULT_TRUE_FALSE = (("", "Default"), ("true", "Yes"), ("false", "No"))


def parts_field(help_text: str) -> forms.IntegerField:
    """Return the field of the number of part jobs of a split export or restore (``packager --parts``)."""
    return forms.IntegerField(
        required=False, min_value=2, max_value=MAX_PARTS, label="Split into part jobs (--parts)", help_text=help_text
    )


class ExportForm(forms.Form):
    """Export options (``-o``) of one or more export jobs."""

    passwords = forms.BooleanField(
        required=False,
        label="Include password hashes (passwords=true)",
        help_text="Only the SITE package carries people; with this, a restore brings back their passwords.",
    )
    filter_bundles = forms.CharField(
        required=False,
        label="Leave out bundles (filterBundles)",
        help_text="Comma-separated bundle names, for example THUMBNAIL,TEXT. A leading + keeps only the named "
        "bundles instead. Bundles left out cannot be restored.",
    )
    include_bundles = forms.CharField(
        required=False,
        label="Keep only bundles (includeBundles)",
        help_text="Comma-separated bundle names; cannot be combined with filterBundles.",
    )
    updated_after = forms.CharField(
        required=False,
        label="Only items changed after (updatedAfter)",
        help_text="ISO-8601 date or date and time, UTC when no zone is given, for example 2024-05-01T12:00:00Z. "
        "Communities and collections are always written.",
    )
    manifest_only = forms.BooleanField(
        required=False,
        label="Manifest only (manifestOnly)",
        help_text="Write only the METS file of each package (TYPE@handle.xml), without the files.",
    )
    unauthorized = forms.ChoiceField(
        required=False,
        label="Unreadable files (unauthorized)",
        choices=(("", "Fail the export, naming the file"), ("skip", "Leave them out"), ("zero", "Write empty files")),
    )
    validate = forms.ChoiceField(
        required=False,
        label="Validate manifests (validate)",
        choices=(
            ("", "When AIP_SCHEMA_DIR is set"),
            ("true", "Yes; fail when AIP_SCHEMA_DIR is unset"),
            ("false", "No"),
        ),
    )

    parts = parts_field(
        "Number of jobs that share the items, so that that many workers export at once; a final job writes the "
        "site, community and collection packages once every part has succeeded. Empty runs one job."
    )

    def __init__(self, *args, recursive: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.recursive = recursive
        # Only an export with every descendant has items to share among part jobs.
        if not recursive:
            del self.fields["parts"]

    def clean(self):
        data = super().clean()
        try:
            export_options(self.options(), recursive=self.recursive)
        except InvalidOptionError as error:
            raise forms.ValidationError(str(error)) from None
        return data

    def part_count(self) -> int:
        """Return the number of part jobs to split each export into, or 0 for one job."""
        return self.cleaned_data.get("parts") or 0

    def options(self) -> dict[str, str]:
        """Return the options as the packager's ``-o`` takes them, leaving defaults out."""
        data = self.cleaned_data
        options = {
            "filterBundles": data.get("filter_bundles", "").strip(),
            "includeBundles": data.get("include_bundles", "").strip(),
            "updatedAfter": data.get("updated_after", "").strip(),
            "unauthorized": data.get("unauthorized", ""),
            "validate": data.get("validate", ""),
        }
        if data.get("passwords"):
            options["passwords"] = "true"
        if data.get("manifest_only"):
            options["manifestOnly"] = "true"
        return {name: value for name, value in options.items() if value}


class RestoreForm(forms.Form):
    """A package to ingest (uploaded or in the AIP storage), the ingest mode and its options."""

    MODE_SUBMIT = "submit"
    MODE_RESTORE = "restore"
    MODE_KEEP = "keep"
    MODE_REPLACE = "replace"
    MODES = (
        (MODE_SUBMIT, "Submit (-s): new handles, under the parent below"),
        (MODE_RESTORE, "Restore (-r): handles and parent from the package; fails if an object exists"),
        (MODE_KEEP, "Restore, keeping existing objects (-r -k): existing objects and their children are skipped"),
        (MODE_REPLACE, "Replace (-r -f): existing objects are emptied and refilled from the package"),
    )

    upload = forms.FileField(
        required=False,
        label="Upload a package",
        help_text='A .zip AIP; it is stored in the "aips" storage under uploads/.',
    )
    stored = forms.CharField(
        required=False,
        label='Or pick a package from the "aips" storage',
        widget=forms.Select(),
    )
    mode = forms.ChoiceField(choices=MODES, initial=MODE_RESTORE, widget=forms.RadioSelect)
    recursive = forms.BooleanField(required=False, label="Also ingest all child packages (-a)")
    parent_handle = forms.CharField(
        required=False,
        label="Parent handle (-p)",
        help_text="Needed for submit; for restore only with ignoreParent=true or when the package names no parent. "
        "The site's handle (the handle prefix, then /0) makes a top-level community.",
    )
    ignore_handle = forms.ChoiceField(
        required=False, choices=DEFAULT_TRUE_FALSE, label="Mint new handles (ignoreHandle)",
        help_text="Default: yes for submit, no for restore.",
    )
    ignore_parent = forms.ChoiceField(
        required=False, choices=DEFAULT_TRUE_FALSE, label="Use the parent above, not the package's (ignoreParent)",
        help_text="Default: yes for submit, no for restore.",
    )
    skip_if_parent_missing = forms.BooleanField(
        required=False,
        label="Skip packages whose parent is missing (skipIfParentMissing)",
        help_text="A package whose parent does not exist, or a missing child package, is skipped with a warning.",
    )
    create_metadata_fields = forms.BooleanField(
        required=False,
        initial=True,
        label="Create missing metadata fields (createMetadataFields)",
        help_text="Unticked, a field that is not in the registry fails the run, naming it.",
    )
    dmd = forms.ChoiceField(
        required=False,
        choices=(("", "Default (DIM, else MODS)"), ("DIM", "DIM"), ("MODS", "MODS")),
        label="Descriptive metadata to read (dmd)",
    )
    validate = forms.BooleanField(
        required=False, label="Validate manifests against the schemas in AIP_SCHEMA_DIR (validate)"
    )
    use_workflow = forms.BooleanField(
        required=False,
        initial=True,
        label="Send submitted items through their collection's workflow",
        help_text="Submit only; unticked is the packager's -w.",
    )
    parts = parts_field(
        "Restore or replace with all child packages only. The job first restores the site, communities and "
        "collections, then that many part jobs restore the items at once, each all-or-nothing; a retry of the job "
        "runs again only the parts that failed. Empty runs one job, all-or-nothing as a whole."
    )

    def __init__(self, *args, package_names: list[str], modes: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stored"].widget.choices = [("", "---------")] + [(name, name) for name in package_names]
        self.fields["mode"].choices = [choice for choice in self.MODES if choice[0] in modes]

    def clean_stored(self) -> str:
        return stored_name_check(self.cleaned_data.get("stored", ""))

    def clean_parent_handle(self) -> str:
        return handle_check(self.cleaned_data.get("parent_handle", ""))

    def clean(self):
        data = super().clean()
        if bool(data.get("upload")) == bool(data.get("stored")):
            raise forms.ValidationError('Upload a package or pick one from the "aips" storage; give exactly one.')
        # An unknown handle already has its own error, so the "needs a parent" errors apply only to an empty field.
        if "parent_handle" in data and not data["parent_handle"]:
            self._parent_needed_check(data)
        if "mode" in data:
            try:
                self.ingest_options()
            except InvalidOptionError as error:
                raise forms.ValidationError(str(error)) from None
            self._parts_check(data)
        return data

    def _parts_check(self, data: dict) -> None:
        if not data.get("parts"):
            return
        if data["mode"] == self.MODE_SUBMIT:
            self.add_error("parts", "A submit cannot be split into part jobs: its items need the new handles of "
                           "their collections from the same job. Leave the field empty.")
        elif not data.get("recursive"):
            self.add_error("parts", "Only a restore with all child packages (-a) can be split into part jobs. "
                           "Tick that box, or leave the field empty.")

    def part_count(self) -> int:
        """Return the number of part jobs to split the restore into, or 0 for one job."""
        return self.cleaned_data.get("parts") or 0

    def _parent_needed_check(self, data: dict) -> None:
        if data.get("mode") == self.MODE_SUBMIT:
            self.add_error("parent_handle", "Submit needs a parent handle: the community or collection to add to.")
        elif data.get("mode") in (self.MODE_RESTORE, self.MODE_KEEP, self.MODE_REPLACE) and (
            data.get("ignore_parent") == "true"
        ):
            self.add_error(
                "parent_handle",
                "ignoreParent=true places the package under the parent handle given here, but none is given. "
                "Give a parent handle, or set ignoreParent to Default or No to use the package's own parent.",
            )

    def options(self) -> dict[str, str]:
        """Return the options as the packager's ``-o`` takes them, leaving defaults out."""
        data = self.cleaned_data
        options = {
            "ignoreHandle": data.get("ignore_handle", ""),
            "ignoreParent": data.get("ignore_parent", ""),
            "dmd": data.get("dmd", ""),
        }
        if data.get("skip_if_parent_missing"):
            options["skipIfParentMissing"] = "true"
        if not data.get("create_metadata_fields"):
            options["createMetadataFields"] = "false"
        if data.get("validate"):
            options["validate"] = "true"
        return {name: value for name, value in options.items() if value}

    def ingest_options(self):
        """Return the parsed options of the chosen mode, as the job will parse them."""
        mode = self.cleaned_data["mode"]
        return ingest_options(
            self.options(),
            restore=mode != self.MODE_SUBMIT,
            keep_existing=mode == self.MODE_KEEP,
            replace=mode == self.MODE_REPLACE,
            recursive=self.cleaned_data.get("recursive", False),
            use_workflow=self.workflow_wanted(),
        )

    def workflow_wanted(self) -> bool:
        """Tell whether submitted items go through their collection's workflow; other modes do not submit."""
        return self.cleaned_data["mode"] != self.MODE_SUBMIT or bool(self.cleaned_data.get("use_workflow"))


class VerifyForm(forms.Form):
    """A package to verify: a file on the server, an uploaded zip, or a package in the AIP storage."""

    path = forms.CharField(
        required=False,
        label="Package on the server",
        help_text="Full path of a .zip (or manifest-only .xml) package inside a folder of AIP_SERVER_ROOTS.",
    )
    upload = forms.FileField(required=False, label="Or upload a package", help_text="A single .zip package.")
    stored = forms.CharField(
        required=False,
        label='Or pick a package from the "aips" storage',
        help_text="With all child packages, a backup or export folder is verified from its top package.",
        widget=forms.Select(),
    )
    recursive = forms.BooleanField(required=False, label="Also verify all child packages (-a)")
    validate = forms.BooleanField(required=False, label="Validate manifests against the schemas (AIP_SCHEMA_DIR)")

    def __init__(self, *args, package_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stored"].widget.choices = [("", "---------")] + [(name, name) for name in package_names]

    def clean_stored(self) -> str:
        return stored_name_check(self.cleaned_data.get("stored", ""))

    def clean_path(self) -> str:
        return server_path_check(self.cleaned_data.get("path", ""))

    def clean(self):
        data = super().clean()
        sources = [name for name in ("path", "upload", "stored") if data.get(name)]
        if len(sources) != 1:
            raise forms.ValidationError(
                "Give either a package path on the server or an uploaded package, or pick one from the "
                '"aips" storage; give exactly one.'
            )
        return data


def stored_name_check(name: str) -> str:
    """Reject a storage name that is not a plain relative .zip name; whether it exists is checked on use."""
    name = name.strip()
    if not name:
        return ""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name:
        raise forms.ValidationError(f"{name!r} is not a package name inside the storage; pick one from the list.")
    if path.suffix.lower() != ".zip":
        raise forms.ValidationError(f"{name!r} is not a .zip package; pick a .zip from the list.")
    return name


def server_path_check(path: str) -> str:
    """Return ``path`` resolved, or raise a form error when it lies outside every folder of AIP_SERVER_ROOTS.

    Symbolic links and ".." are resolved first, so neither leads out of an allowed folder. The job
    gets the resolved path, which contained no symbolic link when it was checked.
    """
    path = path.strip()
    if not path:
        return ""
    if not Path(path).is_absolute():
        raise forms.ValidationError(f"{path!r} is not a full path; give it from the root, starting with '/'.")
    resolved = Path(path).resolve()
    roots = [Path(root).resolve() for root in settings.AIP_SERVER_ROOTS]
    if not any(resolved.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(root) for root in roots) or "(none)"
        raise forms.ValidationError(
            f"{path!r} is outside the folders that server paths may name: {allowed}. Move the package into one "
            "of them, upload it, or ask an operator to add its folder to AIP_SERVER_ROOTS."
        )
    return str(resolved)


def handle_check(handle: str) -> str:
    """Return ``handle`` when an object has it (or it is empty); otherwise raise a form error naming it."""
    handle = handle.strip()
    if handle and selectors.object_by_handle(handle) is None:
        raise forms.ValidationError(
            f"No object has the handle {handle!r}. Check the handle (for the whole site use "
            f"{selectors.site_handle()})."
        )
    return handle
