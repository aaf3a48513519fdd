"""Settings for the AIP backup application.

Every value that differs between installations comes from the environment, with
a default that runs on one machine with no services: an SQLite file under
``var/`` and bitstreams on the local disk.
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-development-key-set-DJANGO_SECRET_KEY")
DEBUG = os.environ.get("DJANGO_DEBUG", "false").lower() == "true"
ALLOWED_HOSTS = [host for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if host]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "repository",
    "aip",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's static files under gunicorn, from STATIC_ROOT after collectstatic.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    # EPeople, including people restored from an AIP, log in with their DSpace password.
    "repository.auth.EPersonBackend",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The embedded default is an SQLite file; production and the test suite use
# PostgreSQL through DATABASE_URL (postgres://user@host:port/name).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # A restore is one long transaction, so writers wait for each other instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 60

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# WhiteNoise finds the admin's files in the installed apps, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True

# Bitstream files live in the "bitstreams" storage: the local disk by default,
# any django-storages backend (S3-compatible object storage, for one) by settings.
BITSTREAM_ROOT = Path(os.environ.get("BITSTREAM_ROOT", VAR_DIR / "assetstore"))
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / "media")},
    },
    "bitstreams": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(BITSTREAM_ROOT)},
    },
    # Where AIPs written from the admin and by scheduled backups live: see the "aips" section below.
    "aips": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(Path(os.environ.get("AIP_STORAGE_ROOT", VAR_DIR / "aips")))},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


# The "aips" storage is a folder (AIP_STORAGE_ROOT) unless AIP_S3_BUCKET names an S3-compatible bucket,
# and the "bitstreams" storage a folder (BITSTREAM_ROOT) unless BITSTREAM_S3_BUCKET names one.
def aip_s3_storage(environ, *, bucket_variable: str = "AIP_S3_BUCKET", prefix_variable: str = "AIP_S3_PREFIX") -> dict:
    """Build the STORAGES entry of an S3-compatible storage from the AIP_S3_* variables in ``environ``.

    The bucket and the key prefix come from ``bucket_variable`` and ``prefix_variable``, so the
    bitstream storage can use another bucket on the same endpoint with the same credentials.
    """
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from django.core.exceptions import ImproperlyConfigured

    access_key = environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key:
        raise ImproperlyConfigured(
            f"{bucket_variable} is set, so AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set too: "
            f"set both to the access key of the bucket, or unset {bucket_variable} to keep the files on the local disk."
        )
    chunk_size = _positive_int(environ, "AIP_S3_CHUNK_SIZE_MB", "8", minimum=5) * 1024 * 1024
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": environ[bucket_variable],
            # Unset means AWS's own endpoint for the region; S3-compatible services need their URL here.
            "endpoint_url": environ.get("AIP_S3_ENDPOINT_URL") or None,
            "region_name": environ.get("AIP_S3_REGION") or None,
            "location": environ.get(prefix_variable, "").strip("/"),
            "access_key": access_key,
            "secret_key": secret_key,
            "security_token": environ.get("AWS_SESSION_TOKEN") or None,
            "file_overwrite": True,
            # A file read from S3 is spooled to a temporary file beyond this size, so a download
            # of a large AIP does not sit in memory.
            "max_memory_size": 8 * 1024 * 1024,
            "default_acl": None,
            "querystring_auth": True,
            "client_config": Config(
                s3={"addressing_style": environ.get("AIP_S3_ADDRESSING_STYLE") or "auto"},
                signature_version="s3v4",
                connect_timeout=10,
                read_timeout=60,
                # botocore retries each request; aip.storage retries each whole operation on top.
                retries={"mode": "standard", "max_attempts": 3},
            ),
            # Files of at least one chunk go as multipart uploads whose parts are read from disk while
            # they are sent, and downloads are written as they arrive, so memory does not grow with file size.
            "transfer_config": TransferConfig(
                multipart_threshold=chunk_size,
                multipart_chunksize=chunk_size,
                max_concurrency=_positive_int(environ, "AIP_S3_MAX_CONCURRENCY", "4", minimum=1),
                # Downloaded blocks (256 KiB, boto3's io_chunksize) waiting for the disk: at most 4 MiB.
                max_io_queue=16,
                use_threads=True,
            ),
        },
    }


def _positive_int(environ, name: str, default: str, *, minimum: int) -> int:
    from django.core.exceptions import ImproperlyConfigured

    value = environ.get(name, default)
    if not value.isdigit() or int(value) < minimum:
        raise ImproperlyConfigured(f"{name} is {value!r}; set it to a whole number of at least {minimum}.")
    return int(value)


if os.environ.get("AIP_S3_BUCKET"):
    STORAGES["aips"] = aip_s3_storage(os.environ)
if os.environ.get("BITSTREAM_S3_BUCKET"):
    STORAGES["bitstreams"] = aip_s3_storage(
        os.environ, bucket_variable="BITSTREAM_S3_BUCKET", prefix_variable="BITSTREAM_S3_PREFIX"
    )

# Jobs go to Redis when REDIS_URL is set; without it they run in the calling process.
REDIS_URL = os.environ.get("REDIS_URL", "")
RQ_QUEUES = {
    "default": {
        "URL": REDIS_URL or "redis://127.0.0.1:6379/0",
        "DEFAULT_TIMEOUT": 24 * 3600,
        "ASYNC": bool(REDIS_URL),
    },
}

# Maximum run time of one background job, in seconds, before RQ stops it; a full-site backup takes hours.
AIP_JOB_TIMEOUT = int(os.environ.get("AIP_JOB_TIMEOUT", str(24 * 3600)))
# Seconds a job or packager run waits for another one working on the same objects before it fails
# with a message naming that job; 0 fails at once.
AIP_LOCK_WAIT = float(os.environ.get("AIP_LOCK_WAIT", "300"))
# Folders whose packages the admin's "Verify AIP" page may read by server path; a path outside
# them (after resolving symbolic links and "..") is rejected. Comma-separated in the environment.
AIP_SERVER_ROOTS = [
    Path(folder.strip()) for folder in os.environ.get("AIP_SERVER_ROOTS", str(VAR_DIR)).split(",") if folder.strip()
]

# Handle prefix of this installation; the site's own handle is "<prefix>/0".
HANDLE_PREFIX = os.environ.get("HANDLE_PREFIX", "123456789")
# Base URL of the repository's web interface, written into PREMIS object identifiers
# and the SITE AIP. It must stay the same between two exports that should be identical.
SITE_URL = os.environ.get("SITE_URL", "http://localhost:8000")
SITE_NAME = os.environ.get("SITE_NAME", "DSpace-compatible repository")

# Folder of local copies of the METS, MODS, PREMIS and METSRights schemas used to
# validate manifests. Unset means validation is not available.
AIP_SCHEMA_DIR = os.environ.get("AIP_SCHEMA_DIR", "")

# Whether an item whose submitter is unknown creates that EPerson on ingest (DSpace's
# mets.dspaceAIP.ingest.createSubmitter).
AIP_CREATE_SUBMITTER = os.environ.get("AIP_CREATE_SUBMITTER", "false").lower() == "true"

# Sections that exports write, chosen as DSpace's aip.disseminate.* settings choose crosswalks.
# dmdSec types in order (MODS, DIM); DIM is the one ingest reads, so keep it.
AIP_DISSEMINATE_DMD = [name.strip() for name in os.environ.get("AIP_DISSEMINATE_DMD", "MODS,DIM").split(",") if name.strip()]
# Administrative sections: PREMIS and DSPACE-ROLES (techMD), DSpaceDepositLicense, CreativeCommonsRDF,
# CreativeCommonsText and METSRIGHTS (rightsMD), AIP-TECHMD (sourceMD).
AIP_DISSEMINATE_SECTIONS = [
    name.strip()
    for name in os.environ.get(
        "AIP_DISSEMINATE_SECTIONS",
        "PREMIS,DSPACE-ROLES,DSpaceDepositLicense,CreativeCommonsRDF,CreativeCommonsText,METSRIGHTS,AIP-TECHMD",
    ).split(",")
    if name.strip()
]
# Sections ingest reads past, as DSpace's mets.dspaceAIP.ingest.crosswalk.<type> = NULLSTREAM does.
# Licences arrive anyway as files of the LICENSE and CC-LICENSE bundles.
AIP_INGEST_IGNORED_SECTIONS = [
    name.strip()
    for name in os.environ.get(
        "AIP_INGEST_IGNORED_SECTIONS", "DSpaceDepositLicense,CreativeCommonsRDF,CreativeCommonsText"
    ).split(",")
    if name.strip()
]

# Deposit licence given to items submitted (-s) into a collection that has no licence of its own.
AIP_DEFAULT_LICENSE = os.environ.get(
    "AIP_DEFAULT_LICENSE",
    "By submitting this item you grant the repository the non-exclusive right to reproduce, "
    "convert and distribute it in electronic form for preservation and access.",
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "aip": {"handlers": ["console"], "level": os.environ.get("AIP_LOG_LEVEL", "ERROR")},
        "repository": {"handlers": ["console"], "level": os.environ.get("AIP_LOG_LEVEL", "ERROR")},
    },
}
