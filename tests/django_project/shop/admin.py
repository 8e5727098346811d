from django.contrib import admin

from auditlock.integrations.django.admin import AuditHistoryMixin
from tests.django_project.shop.models import Order, Restaurant


@admin.register(Order)
class OrderAdmin(AuditHistoryMixin, admin.ModelAdmin):
    list_display = ("id", "status")


@admin.register(Restaurant)
class RestaurantAdmin(AuditHistoryMixin, admin.ModelAdmin):  # untracked child of the tracked Place
    pass
