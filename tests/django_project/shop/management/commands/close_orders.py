from django.core.management.base import BaseCommand

from tests.django_project.shop.models import Order


class Command(BaseCommand):
    help = "Close every paid order (one save each)."

    def handle(self, *args, **options):
        for order in Order.objects.filter(status="paid"):
            order.status = "closed"
            order.save()
