"""Plain data read from, or written to, one AIP's mets.xml.

These classes hold no ORM objects, so parsing and building METS can be tested
without a database.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass
class DimValue:
    """One ``dim:field``: a metadata value with its schema, element and qualifier."""

    schema: str
    element: str
    qualifier: str | None = None
    value: str = ""
    language: str | None = None
    authority: str | None = None
    confidence: int | None = None


@dataclass
class PolicyRecord:
    """One ``rights:Context`` of METSRights: a resource policy."""

    action: int | None
    context_class: str
    group_name: str | None = None
    eperson_email: str | None = None
    name: str | None = None
    description: str | None = None
    start_date: date | None = None
    end_date: date | None = None


@dataclass
class PersonRecord:
    """One ``Person`` of DSPACE-ROLES."""

    id: str | None = None
    email: str | None = None
    netid: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language: str | None = None
    password_hash: str | None = None
    password_digest_algorithm: str | None = None
    password_salt: str | None = None
    can_log_in: bool = False
    require_certificate: bool = False
    self_registered: bool = False


@dataclass
class GroupRecord:
    """One ``Group`` of DSPACE-ROLES, with members by email and member groups by name."""

    name: str
    id: str | None = None
    type: str | None = None
    member_emails: list[str] = field(default_factory=list)
    member_group_names: list[str] = field(default_factory=list)


@dataclass
class RolesRecord:
    groups: list[GroupRecord] = field(default_factory=list)
    people: list[PersonRecord] = field(default_factory=list)


@dataclass
class AdminMetadata:
    """The sections of one amdSec that ingest uses."""

    techmd_dim: list[DimValue] | None = None  # AIP-TECHMD (a sourceMD)
    policies: list[PolicyRecord] | None = None  # METSRIGHTS; None when the section is absent
    premis: PremisRecord | None = None
    roles: RolesRecord | None = None
    license_hrefs: dict[str, str] = field(default_factory=dict)  # OTHERMDTYPE -> zip entry name


@dataclass
class PremisRecord:
    original_name: str | None = None
    size: int | None = None
    digest_algorithm: str | None = None
    digest: str | None = None
    format_name: str | None = None


@dataclass
class FileRecord:
    """One ``file`` of the fileSec."""

    id: str
    href: str
    mimetype: str | None = None
    sequence_id: int | None = None
    size: int | None = None
    checksum: str | None = None
    checksum_type: str | None = None
    group_id: str | None = None
    admin: AdminMetadata = field(default_factory=AdminMetadata)


@dataclass
class BundleRecord:
    """One ``fileGrp``: a bundle of an item, or the LOGO group of a container."""

    name: str
    files: list[FileRecord] = field(default_factory=list)
    admin: AdminMetadata = field(default_factory=AdminMetadata)


@dataclass
class DescriptiveMetadata:
    """One dmdSec: its type (``DIM``, ``MODS``...) and, for DIM, its values."""

    md_type: str
    dim: list[DimValue] | None = None
    mods_xml: bytes | None = None
    group_id: str | None = None


@dataclass
class ChildReference:
    object_type: str  # "COMMUNITY", "COLLECTION" or "ITEM"
    href: str | None  # package file name, relative to the parent package
    handle: str | None


@dataclass
class PackageManifest:
    """Everything ingest needs from one mets.xml."""

    object_type: str  # "SITE", "COMMUNITY", "COLLECTION" or "ITEM"
    handle: str | None
    uuid: str | None
    profile: str
    last_modified: datetime | None
    parent_handle: str | None
    descriptive: list[DescriptiveMetadata]
    admin: AdminMetadata
    bundles: list[BundleRecord]
    primary_file_id: str | None
    logo: FileRecord | None
    children: list[ChildReference]
    template_descriptive: list[DescriptiveMetadata] | None
