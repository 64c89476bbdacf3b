"""A small shop: a catalogue (with a data migration), orders, and an audit log kept in a
database of its own. The HOST, PORT, USER and PASSWORD below are those of production; with
``pg_django = true`` the test databases are on pytest-pgsandbox's server instead."""

SECRET_KEY = "only-for-tests"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "catalog",
    "orders",
    "audit",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "HOST": "db.example.invalid",
        "PORT": "5432",
        "USER": "shop",
        "PASSWORD": "",
        "CONN_MAX_AGE": 300,
    },
    "audit": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop_audit",
        "HOST": "audit.example.invalid",
        "PORT": "5432",
        "USER": "shop",
        "PASSWORD": "",
    },
}
DATABASE_ROUTERS = ["project.routers.AuditRouter"]

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "shop_cache",
    }
}
STATIC_URL = "/static/"
