"""Vantage settings: every value from the environment, with embedded defaults.

No DATABASE_URL: SQLite under VANTAGE_DATA_DIR. No REDIS_URL: in-memory channel layer
and eager Celery inside the one server process. See README.md, "Production settings".
"""

from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from vantage.env import database_from_url, env_bool, env_int, env_list, env_str, sqlite_database

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("VANTAGE_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEVELOPMENT_SECRET_KEY = "vantage-development-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
DEBUG = env_bool("DEBUG", True)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY: set SECRET_KEY (or SECRET_KEY_FILE) to a long random value when DEBUG is off"
    )
if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY: use at least 32 characters")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here (no CDN)
    "accounts",
    "collaborations",
    "tasks",
    "nodeagent",
    "portal",
]

# Sessions, CSRF, the session user and messages are Django's, except that API requests
# with a bearer token skip them (core/middleware.py).
MIDDLEWARE = [
    "core.api_errors.ApiErrorsAsJson",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the admin's CSS and JavaScript, Swagger UI) from the server itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "core.csp.ContentSecurityPolicyMiddleware",
    "core.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "core.middleware.CsrfViewMiddleware",
    "core.middleware.AuthenticationMiddleware",
    "core.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# Django's deploy check looks for CsrfViewMiddleware by its dotted path; the subclass
# above (core.middleware) is Django's CSRF protection for every browser request.
SILENCED_SYSTEM_CHECKS = (
    [] if "django.middleware.csrf.CsrfViewMiddleware" in MIDDLEWARE else ["security.W003"]
)

ROOT_URLCONF = "vantage.urls"
ASGI_APPLICATION = "vantage.asgi.application"
WSGI_APPLICATION = None

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

DATABASE_URL = env_str("DATABASE_URL")
DATABASES = {
    "default": database_from_url(DATABASE_URL) if DATABASE_URL else sqlite_database(DATA_DIR / "db.sqlite3")
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# WhiteNoise serves the apps' static files straight from their folders (found once at
# start), so neither the demo nor a production server needs `collectstatic` or a
# separate web server for them; files collected into STATIC_ROOT are served too.
WHITENOISE_USE_FINDERS = True
try:
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # else WhiteNoise warns at every start
except OSError:
    pass  # a read-only data folder: WhiteNoise serves from the apps' folders alone
MEDIA_ROOT = Path(env_str("VANTAGE_MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = None  # result files are only served through the authorised API
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Request bodies: form/JSON bodies stay small; result files stream to disk in chunks.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("VANTAGE_MAX_REQUEST_BYTES", 20 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# Result files are readable by the server's own user only (Django's default is 0644).
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
VANTAGE_MAX_RESULT_BYTES = env_int("VANTAGE_MAX_RESULT_BYTES", 2 * 1024**3, minimum=1)
# Results up to this size are kept in the run's row rather than as files: aggregates are
# small, and a row costs a fraction of a file's creation (0 keeps every result as a file).
VANTAGE_RESULT_IN_DATABASE_BYTES = env_int("VANTAGE_RESULT_IN_DATABASE_BYTES", 64 * 1024, minimum=0)
# Catalogue approvals needed from reviewers other than the submitter (four eyes at least).
VANTAGE_CATALOGUE_REVIEWERS = env_int("VANTAGE_CATALOGUE_REVIEWERS", 1, minimum=1)
# The registries the server reads reviewers' image signatures from when they approve (TOML:
# [registries."host"] with username and password or password_file, as in node.toml; an
# empty table reads anonymously). No other host is contacted. Unset: approvals are refused.
VANTAGE_REGISTRIES_FILE = env_str("VANTAGE_REGISTRIES_FILE", "")
VANTAGE_MAX_INPUT_BYTES = env_int("VANTAGE_MAX_INPUT_BYTES", 8 * 1024 * 1024, minimum=1)
VANTAGE_RUN_LOG_MAX_CHARS = env_int("VANTAGE_RUN_LOG_MAX_CHARS", 256 * 1024, minimum=1024)
VANTAGE_NODE_KEY_SECRET = env_str("VANTAGE_NODE_KEY_SECRET") or SECRET_KEY
# How many reverse proxies in front of the server append to X-Forwarded-For. 0 (default):
# the header is ignored and the client is the socket's peer; n: the n-th address from the
# right is the client (password-reset throttle, lockout audit). Anything further left was
# written by the client and is never believed.
VANTAGE_TRUSTED_PROXIES = env_int("VANTAGE_TRUSTED_PROXIES", 0, minimum=0)
# The audit chain's HMAC key: outside the database, so that whoever can write the
# database cannot rewrite the log unnoticed (accounts.audit). Without it the key is
# derived from SECRET_KEY, and `check --deploy` warns (accounts.W001).
VANTAGE_AUDIT_KEY = env_str("VANTAGE_AUDIT_KEY") or ""
if VANTAGE_AUDIT_KEY and len(VANTAGE_AUDIT_KEY) < 32:
    raise ImproperlyConfigured("VANTAGE_AUDIT_KEY: use at least 32 characters")
VANTAGE_HTTP_THREADS = env_int("VANTAGE_HTTP_THREADS", 8, minimum=1)
# Request bodies are read whole before Django runs (vantage/body.py): a body must arrive
# within VANTAGE_BODY_TIMEOUT_SECONDS plus one second per VANTAGE_BODY_MIN_RATE bytes,
# with no silence longer than VANTAGE_BODY_IDLE_SECONDS (else 408); at most
# VANTAGE_MAX_SPOOLING_BODIES arrive at once per process (else 503).
VANTAGE_BODY_TIMEOUT_SECONDS = env_int("VANTAGE_BODY_TIMEOUT_SECONDS", 30, minimum=1)
VANTAGE_BODY_IDLE_SECONDS = env_int("VANTAGE_BODY_IDLE_SECONDS", 10, minimum=1)
VANTAGE_BODY_MIN_RATE = env_int("VANTAGE_BODY_MIN_RATE", 64 * 1024, minimum=1)
VANTAGE_MAX_SPOOLING_BODIES = env_int("VANTAGE_MAX_SPOOLING_BODIES", 128, minimum=1)

REST_FRAMEWORK = {
    # One class per kind of bearer token, each living with the model it authenticates
    # (core/authentication.py): users last, since they take every token the others left.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tasks.authentication.ContainerTokenAuthentication",
        "collaborations.authentication.NodeTokenAuthentication",
        "accounts.authentication.UserTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Fail closed: a view refuses every action its `rules` do not name (core/views.py), unless
    # it lists its own permissions (AllowAny for login and health, IsNode for a node's calls).
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.HasRule"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["core.filters.FilterBackend"],
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.exceptions.exception_handler",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "core.negotiation.ContentNegotiation",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_THROTTLE_RATES": {"password-reset": env_str("VANTAGE_PASSWORD_RESET_RATE", "5/hour")},
    "UNAUTHENTICATED_USER": None,
    # Throttles key on the client's address: see VANTAGE_TRUSTED_PROXIES.
    "NUM_PROXIES": VANTAGE_TRUSTED_PROXIES,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("VANTAGE_ACCESS_TOKEN_MINUTES", 15, minimum=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(hours=env_int("VANTAGE_REFRESH_TOKEN_HOURS", 24, minimum=1)),
    "SIGNING_KEY": SECRET_KEY,
    "ALGORITHM": "HS256",
    "UPDATE_LAST_LOGIN": False,
}
VANTAGE_NODE_TOKEN_LIFETIME = timedelta(minutes=env_int("VANTAGE_NODE_TOKEN_MINUTES", 30, minimum=1))

SPECTACULAR_SETTINGS = {
    "TITLE": "Vantage API",
    "DESCRIPTION": "Privacy-preserving federated analysis: organisations, collaborations, tasks, runs.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a `status` field with different choices; name each enum.
    "ENUM_NAME_OVERRIDES": {
        "CollaborationStatusEnum": "collaborations.models.Collaboration.Status",
        "NodeStatusEnum": "collaborations.models.Node.Status",
        "AlgorithmStatusEnum": "tasks.models.Algorithm.Status",
        "AlgorithmReviewStatusEnum": ["approved", "rejected", "retired"],
        "TaskStatusEnum": "tasks.models.Task.Status",
        "RunStatusEnum": "tasks.models.Run.Status",
        "RunFinalStatusEnum": "tasks.models.Run.FINAL_STATUSES",
    },
}

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # Embedded default: one server process, so in-process layer and cache are enough.
    CHANNEL_LAYERS = {"default": {"BACKEND": "core.channel_layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery: a Redis broker with separate worker and beat processes in production; without
# REDIS_URL every job runs eagerly inside the process that enqueued it.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = {
    "mark-offline-nodes": {"task": "collaborations.jobs.mark_offline_nodes", "schedule": 30.0},
    "time-out-overdue-runs": {"task": "tasks.jobs.time_out_overdue_runs", "schedule": 60.0},
    "purge-expired-results": {"task": "tasks.jobs.purge_expired_results", "schedule": 3600.0},
}
VANTAGE_NODE_OFFLINE_AFTER_SECONDS = env_int("VANTAGE_NODE_OFFLINE_AFTER_SECONDS", 90, minimum=10)
VANTAGE_RUN_DEADLINE_SECONDS = env_int("VANTAGE_RUN_DEADLINE_SECONDS", 24 * 3600, minimum=10)

VANTAGE_LOCKOUT_THRESHOLD = env_int("VANTAGE_LOCKOUT_THRESHOLD", 5, minimum=1)
VANTAGE_LOCKOUT_MINUTES = env_int("VANTAGE_LOCKOUT_MINUTES", 15, minimum=1)
VANTAGE_PUBLIC_URL = (env_str("VANTAGE_PUBLIC_URL", "http://127.0.0.1:8000") or "").rstrip("/")
PASSWORD_RESET_TIMEOUT = env_int("VANTAGE_PASSWORD_RESET_SECONDS", 3600, minimum=60)

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "vantage@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    # HSTS on every HTTPS answer: browsers then refuse plain http to this host for a year.
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    # Off by default: the node agents, tests and benchmarks talk plain http on loopback.
    # Behind a TLS proxy, set it with --proxy-headers on the server (README).
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
    SECURE_REDIRECT_EXEMPT = [r"^api/health/$"]  # load balancers probe over http
