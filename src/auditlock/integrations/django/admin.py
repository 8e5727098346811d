"""An "Audit history" page per object in the Django admin, read from the trail and itself recorded.

    from auditlock.integrations.django.admin import AuditHistoryMixin

    @admin.register(Order)
    class OrderAdmin(AuditHistoryMixin, admin.ModelAdmin):
        ...

Adds `<object>/audit-history/` (and an "Audit history" button on the change form) for tracked models: the
object's events, newest first, from the archive and the local spool through the query engine of `auditlock query`
(`auditlock[query]`), with their before/after values. Who looked is recorded exactly as the admin view records it
(`ui.access_log`: `audit_log.searched`, target `AuditLog`, fsync'd before the page is sent); an access that cannot be
recorded is refused with 503 and shows nothing. Only users with view or change permission on the object see it.
"""

from __future__ import annotations

import functools
from typing import Any

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from auditlock.handler.context import current_actor
from auditlock.integrations.django.auth_events import actor_id_of
from auditlock.integrations.django.runtime import runtime

HISTORY_SIZE = 100


class AuditHistoryMixin:
    """A ModelAdmin mixin: the object's audit history page."""

    change_form_template = "auditlock/change_form.html"
    audit_history_template = "auditlock/audit_history.html"

    def get_urls(self) -> list[Any]:
        """The admin's URLs plus `<object_id>/audit-history/`."""
        opts = self.model._meta  # type: ignore[attr-defined]
        view = self.admin_site.admin_view(self.audit_history_view)  # type: ignore[attr-defined]
        name = f"{opts.app_label}_{opts.model_name}_audit_history"
        return [path("<path:object_id>/audit-history/", view, name=name), *super().get_urls()]  # type: ignore[misc]

    def audit_history_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The page: record the access, then show the object's events."""
        obj = self.get_object(request, unquote(object_id))  # type: ignore[attr-defined]
        tracked = runtime().tracked_write(self.model)  # type: ignore[attr-defined]  # a child: its tracked parent
        if obj is None or tracked is None:
            raise Http404("no such tracked object")
        if not self.has_view_or_change_permission(request, obj):  # type: ignore[attr-defined]
            raise PermissionDenied
        try:
            events = _history().read(request, tracked.target_type, str(obj.pk))
        except _AccessRefused as exc:
            return HttpResponse(f"Refused: {exc}", status=503, content_type="text/plain; charset=utf-8")
        context = {**self.admin_site.each_context(request), "title": f"Audit history: {obj}",  # type: ignore[attr-defined]
                   "object": obj, "opts": self.model._meta, "events": events}  # type: ignore[attr-defined]
        return TemplateResponse(request, self.audit_history_template, context)


class _AccessRefused(Exception):
    """The access could not be recorded."""


class _History:
    """The archive reader and the access log, made once per process."""

    def __init__(self) -> None:
        from auditlock.query.cache import default_cache_dir  # noqa: PLC0415 - the query extra, on first use
        from auditlock.ui.access_log import AccessLog  # noqa: PLC0415
        from auditlock.ui.reader import ArchiveReader  # noqa: PLC0415

        config = runtime().config
        cache_dir = config.ui.cache_dir or config.query.cache_dir or default_cache_dir()
        self.reader = ArchiveReader(config, cache_dir)
        self.access = AccessLog(config)

    def read(self, request: HttpRequest, target_type: str, target_id: str) -> list[dict[str, Any]]:
        from auditlock.query.filters import EventFilter  # noqa: PLC0415
        from auditlock.ui import present  # noqa: PLC0415
        from auditlock.ui.access_log import SEARCHED, AccessNotRecorded  # noqa: PLC0415

        event_filter = EventFilter(target_type=target_type, target_id=target_id)
        found = self.reader.search(event_filter, HISTORY_SIZE, include_spool=True)
        bound = current_actor()
        viewer = actor_id_of(getattr(request, "user", None)) or "anonymous"
        try:
            self.access.record(SEARCHED, viewer, bound.ip if bound else request.META.get("REMOTE_ADDR"),
                               filters={"target_type": target_type, "target_id": target_id},
                               range={"since": None, "until": None}, page=1, results=found.total)
        except AccessNotRecorded as exc:
            raise _AccessRefused(str(exc)) from exc
        return [{**event, "changes": present.changes(event["payload"])}
                for event in map(present.present, found.page.events)]


@functools.cache
def _history() -> _History:
    return _History()


__all__ = ["AuditHistoryMixin"]
