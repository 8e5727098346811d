from django.contrib import admin

from auditlock.integrations.django.admin import AuditHistoryMixin
from tests.django_project.shop.models import Order


@admin.register(Order)
class OrderAdmin(AuditHistoryMixin, admin.ModelAdmin):
    list_display = ("id", "status")
