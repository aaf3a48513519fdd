"""Namespace URIs, fixed attribute values and code tables of the DSpace AIP format.

Shared by the METS reader and writer, so this module contains constants and small
mapping dicts only. The values follow DSpace's own packager and crosswalk code
(``AbstractMETSDisseminator``, ``METSRightsCrosswalk``, ``Choices``).
"""

# Namespace URIs. The prefixes DSpace writes are given in the comments.
METS = "http://www.loc.gov/METS/"  # default namespace
XLINK = "http://www.w3.org/1999/xlink"  # xlink:
XSI = "http://www.w3.org/2001/XMLSchema-instance"  # xsi:
MODS = "http://www.loc.gov/mods/v3"  # mods:
DIM = "http://www.dspace.org/xmlns/dspace/dim"  # dim:
PREMIS = "http://www.loc.gov/standards/premis"  # premis: (PREMIS 1.0)
METSRIGHTS = "http://cosimo.stanford.edu/sdr/metsrights/"  # rights:
DSROLES = "http://www.dspace.org/xmlns/dspace/dspace-roles"  # dsroles:, declared but unused by DSpace

# DSpace's ingester compares mets@PROFILE with this string for equality.
# The URL does not resolve to a real schema.
PROFILE = "http://www.dspace.org/schema/aip/mets_aip_1_0.xsd"

# mets@TYPE and div@TYPE are "DSpace " followed by one of the object types.
TYPE_PREFIX = "DSpace "
OBJECT_TYPES = ("SITE", "COMMUNITY", "COLLECTION", "ITEM")

# Authority confidence: the word written in dim:field@confidence and the number DSpace stores.
CONFIDENCE_BY_WORD = {
    "UNSET": -1,
    "NOVALUE": 0,
    "REJECTED": 100,
    "FAILED": 200,
    "NOTFOUND": 300,
    "AMBIGUOUS": 400,
    "UNCERTAIN": 500,
    "ACCEPTED": 600,
}
WORD_BY_CONFIDENCE = {number: word for word, number in CONFIDENCE_BY_WORD.items()}

# DSpace resource policy actions (org.dspace.core.Constants).
READ = 0
WRITE = 1
DELETE = 2
ADD = 3
REMOVE = 4
DEFAULT_BITSTREAM_READ = 9
DEFAULT_ITEM_READ = 10
ADMIN = 11
WITHDRAWN_READ = 12

ACTION_BY_NAME = {
    "READ": READ,
    "WRITE": WRITE,
    "DELETE": DELETE,
    "ADD": ADD,
    "REMOVE": REMOVE,
    "DEFAULT_BITSTREAM_READ": DEFAULT_BITSTREAM_READ,
    "DEFAULT_ITEM_READ": DEFAULT_ITEM_READ,
    "ADMIN": ADMIN,
    "WITHDRAWN_READ": WITHDRAWN_READ,
}
NAME_BY_ACTION = {number: name for name, number in ACTION_BY_NAME.items()}

# rights:Permissions attributes written for each action, in DSpace's attribute order.
# DSpace writes no attributes at all for WITHDRAWN_READ, so its ingester turns that
# policy into action -1. This project writes WITHDRAWN_READ with the READ flags and
# OTHERPERMITTYPE="WITHDRAWN READ" instead, so that the action survives a round trip.
PERMISSIONS_BY_ACTION = {
    READ: {"DISCOVER": "true", "DISPLAY": "true", "MODIFY": "false", "DELETE": "false"},
    DEFAULT_ITEM_READ: {
        "DISCOVER": "true", "DISPLAY": "true", "MODIFY": "false", "DELETE": "false",
        "OTHER": "true", "OTHERPERMITTYPE": "READ ITEM CONTENTS",
    },
    DEFAULT_BITSTREAM_READ: {
        "DISCOVER": "true", "DISPLAY": "true", "MODIFY": "false", "DELETE": "false",
        "OTHER": "true", "OTHERPERMITTYPE": "READ FILE CONTENTS",
    },
    WRITE: {"DISCOVER": "true", "DISPLAY": "true", "MODIFY": "true", "DELETE": "false"},
    ADD: {
        "DISCOVER": "true", "DISPLAY": "true", "MODIFY": "true", "DELETE": "false",
        "OTHER": "true", "OTHERPERMITTYPE": "ADD CONTENTS",
    },
    DELETE: {"DISCOVER": "true", "DISPLAY": "true", "MODIFY": "true", "DELETE": "true"},
    REMOVE: {
        "DISCOVER": "true", "DISPLAY": "true", "MODIFY": "true", "DELETE": "true",
        "OTHER": "true", "OTHERPERMITTYPE": "REMOVE CONTENTS",
    },
    ADMIN: {
        "DISCOVER": "true", "DISPLAY": "true", "COPY": "true", "DUPLICATE": "true",
        "MODIFY": "true", "DELETE": "true", "PRINT": "true",
        "OTHER": "true", "OTHERPERMITTYPE": "ADMIN",
    },
    WITHDRAWN_READ: {
        "DISCOVER": "true", "DISPLAY": "true", "MODIFY": "false", "DELETE": "false",
        "OTHER": "true", "OTHERPERMITTYPE": "WITHDRAWN READ",
    },
}
ACTION_BY_OTHERPERMITTYPE = {
    attributes["OTHERPERMITTYPE"]: action
    for action, attributes in PERMISSIONS_BY_ACTION.items()
    if "OTHERPERMITTYPE" in attributes
}

# rights:Context@CONTEXTCLASS values.
GENERAL_PUBLIC = "GENERAL PUBLIC"
REPOSITORY_MGR = "REPOSITORY MGR"
MANAGED_GRP = "MANAGED GRP"
ACADEMIC_USER = "ACADEMIC USER"

# The two groups that have their own CONTEXTCLASS instead of MANAGED GRP + UserName.
CONTEXTCLASS_BY_GROUP = {"Anonymous": GENERAL_PUBLIC, "Administrator": REPOSITORY_MGR}
GROUP_BY_CONTEXTCLASS = {context_class: group for group, context_class in CONTEXTCLASS_BY_GROUP.items()}

# OTHERCONSTRAINTTYPE of the rights:Constraints element that carries a policy's description.
# DSpace writes no description and ignores Constraints when reading.
POLICY_DESCRIPTION_CONSTRAINT = "DSpace policy description"
