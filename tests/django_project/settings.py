"""A small Django project for the integration's tests: settings from the environment the test gives.

AUDITLOCK_CONFIG: the auditlock.toml; AUDITLOCK_TEST_DB: "sqlite:<path>" or "postgres:<host>:<port>:<name>";
AUDITLOCK_TEST_MODELS: JSON of AUDITLOCK["MODELS"] (default: Order, Customer, User and the shop's other models);
AUDITLOCK_TEST_ATOMIC_REQUESTS: set for ATOMIC_REQUESTS on "default"; AUDITLOCK_TEST_OTHER_DB: a SQLite path for a
second database "other" that holds shop.Sku (routers.SkuRouter).
"""

import json
import os

SECRET_KEY = "test-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "tests.django_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; the hash never reaches the trail

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "tests.django_project.shop",
    "auditlock.integrations.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "auditlock.integrations.django.AuditMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                 "django.contrib.auth.context_processors.auth",
                                                 "django.contrib.messages.context_processors.messages"]}}]

_kind, _, _where = os.environ.get("AUDITLOCK_TEST_DB", "sqlite::memory:").partition(":")
if _kind == "postgres":
    _host, _port, _name = _where.split(":")
    DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "HOST": _host, "PORT": _port,
                             "NAME": _name, "USER": "postgres"}}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _where or ":memory:"}}

if os.environ.get("AUDITLOCK_TEST_ATOMIC_REQUESTS"):
    DATABASES["default"]["ATOMIC_REQUESTS"] = True
if os.environ.get("AUDITLOCK_TEST_OTHER_DB"):  # a second database (SQLite) holding shop.Sku
    DATABASES["other"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["AUDITLOCK_TEST_OTHER_DB"]}
    DATABASE_ROUTERS = ["tests.django_project.routers.SkuRouter"]

AUDITLOCK = {
    "CONFIG": os.environ["AUDITLOCK_CONFIG"],
    "MODELS": json.loads(os.environ.get("AUDITLOCK_TEST_MODELS", "null"))
    or {"shop.Order": "Order", "shop.Customer": "Customer", "auth.User": "User", "shop.Item": "Item",
        "shop.Sku": "Sku", "shop.Place": "Place", "shop.Car": "Car", "shop.Ticket": "Ticket",
        "shop.Document": "Document"},
    "TRUSTED_PROXIES": ["127.0.0.1/32"],
}
