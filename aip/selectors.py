"""Read-only queries over the repository: handles, hierarchy walks and the
relations an AIP lists, each in the fixed order that export relies on."""
from __future__ import annotations

from django.conf import settings
from django.db.models import Q, QuerySet

from aip.errors import ObjectNotFoundError
from repository.models import Collection, Community, Handle, Item, Site


def site_handle() -> str:
    return f"{settings.HANDLE_PREFIX}/0"


def site_get() -> Site:
    """Return this installation's Site, creating it with the handle "<prefix>/0" on first use."""
    site = Site.objects.select_related("handle").first()
    if site is not None:
        return site
    handle, _ = Handle.objects.get_or_create(
        handle=site_handle(),
        defaults={"prefix": settings.HANDLE_PREFIX, "suffix": "0", "suffix_number": 0, "resource_type": "SITE"},
    )
    return Site.objects.create(name=settings.SITE_NAME, handle=handle)


def object_by_handle(handle: str):
    """Return the site, community, collection or item with ``handle``, or None."""
    record = (
        Handle.objects.filter(handle=handle)
        .select_related("site", "community", "collection", "item")
        .first()
    )
    if record is None:
        if handle == site_handle():
            return site_get()
        return None
    for relation in ("site", "community", "collection", "item"):
        obj = getattr(record, relation, None)
        if obj is not None:
            return obj
    return None


def object_by_handle_or_error(handle: str):
    obj = object_by_handle(handle)
    if obj is None:
        raise ObjectNotFoundError(
            f"No object has the handle '{handle}'. Check the handle (for the whole site use {site_handle()})."
        )
    return obj


def top_communities() -> QuerySet[Community]:
    return Community.objects.filter(parent__isnull=True).select_related("handle").order_by("name", "uuid")


def subcommunities(community: Community) -> QuerySet[Community]:
    return community.subcommunities.select_related("handle").order_by("name", "uuid")


def community_collections(community: Community) -> QuerySet[Collection]:
    return community.collections.select_related("handle").order_by("name", "uuid")


def exported_items(collection: Collection) -> QuerySet[Item]:
    """Items a collection AIP lists: archived or withdrawn, owned by or mapped into it.

    Withdrawn items are listed too, unlike DSpace's code (which drops them from
    recursive exports although its documentation says they are kept).
    """
    return (
        Item.objects.filter(Q(owning_collection=collection) | Q(mapped_collections=collection))
        .filter(Q(in_archive=True) | Q(withdrawn=True))
        .select_related("handle")
        .distinct()
        .order_by("handle__prefix", "handle__suffix_number", "handle__suffix", "uuid")
    )


# Set by ``children_listed`` on the instance it lists the children of.
_CHILDREN = "_aip_children"


def children_listed(obj) -> list:
    """Return ``children_of(obj)``, read once per instance: an export lists them in the manifest and walks them.

    For use within one export only, which takes the list back with ``children_taken``.
    """
    if not hasattr(obj, _CHILDREN):
        setattr(obj, _CHILDREN, children_of(obj))
    return getattr(obj, _CHILDREN)


def children_taken(obj) -> list:
    """Return the children ``children_listed`` kept on ``obj`` (or read them now), and drop them from ``obj``.

    The site instance lives for the whole export: were its communities, their collections and
    their items kept on it, every item read would stay in memory until the export ends.
    """
    children = children_listed(obj)
    delattr(obj, _CHILDREN)
    return children


def children_of(obj) -> list:
    """Return the objects whose AIPs the AIP of ``obj`` lists, in package order."""
    if isinstance(obj, Site):
        return list(top_communities())
    if isinstance(obj, Community):
        return list(subcommunities(obj)) + list(community_collections(obj))
    if isinstance(obj, Collection):
        return list(exported_items(obj))
    return []


def parent_handle_of(obj) -> str | None:
    """Return the handle of the object an AIP names as its parent."""
    if isinstance(obj, Site):
        return None
    if isinstance(obj, Community):
        return obj.parent.handle_string if obj.parent_id else site_handle()
    if isinstance(obj, Collection):
        return obj.community.handle_string if obj.community_id else None
    if isinstance(obj, Item):
        return obj.owning_collection.handle_string if obj.owning_collection_id else None
    return None


def package_file_name(obj, extension: str = "zip") -> str:
    """Return the DSpace name of an object's package: ``<TYPE>@<handle with dashes>.zip``.

    Manifest-only packages end in ``.xml`` instead.
    """
    handle = obj.handle_string
    if handle:
        return f"{obj.object_type}@{handle.replace('/', '-')}.{extension}"
    return f"{obj.object_type}@internal-id-{obj.uuid}.{extension}"


def tree_size(obj) -> int:
    """Return how many packages a recursive export of ``obj`` writes: the object and every descendant."""
    if isinstance(obj, Item):
        return 1
    if isinstance(obj, Collection):
        return 1 + exported_items(obj).order_by().count()
    if isinstance(obj, Site):
        communities = list(Community.objects.values_list("pk", flat=True))
        collections = list(Collection.objects.values_list("pk", flat=True))
    else:
        communities = _community_subtree(obj)
        collections = list(Collection.objects.filter(community__in=communities).values_list("pk", flat=True))
    items = (
        Item.objects.filter(Q(owning_collection__in=collections) | Q(mapped_collections__in=collections))
        .filter(Q(in_archive=True) | Q(withdrawn=True))
        .order_by()
        .values("pk")
        .distinct()
        .count()
    )
    return int(isinstance(obj, Site)) + len(communities) + len(collections) + items


def _community_subtree(community: Community) -> list[int]:
    """Return the ids of ``community`` and all communities below it, one query per level."""
    found = [community.pk]
    level = [community.pk]
    while level:
        level = list(Community.objects.filter(parent__in=level).values_list("pk", flat=True))
        found.extend(level)
    return found
