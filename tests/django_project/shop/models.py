import uuid

from django.db import models


class Customer(models.Model):
    name = models.CharField(max_length=100)
    email = models.CharField(max_length=200, default="")


class Tag(models.Model):
    name = models.CharField(max_length=50)


class Order(models.Model):
    customer = models.ForeignKey(Customer, null=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    note = models.CharField(max_length=200, default="")  # not allowlisted: never in the trail
    tags = models.ManyToManyField(Tag, blank=True)


class Item(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=50, default="")


class Sku(models.Model):
    code = models.CharField(max_length=20, primary_key=True)
    name = models.CharField(max_length=50, default="")


class Place(models.Model):  # tracked; its untracked child Restaurant saves it inside
    name = models.CharField(max_length=50, default="")


class Restaurant(Place):
    serves = models.CharField(max_length=50, default="")


class Vehicle(models.Model):  # untracked parent of the tracked Car
    wheels = models.IntegerField(default=4)


class Car(Vehicle):
    plate = models.CharField(max_length=20, default="")


class RushOrder(Order):  # a proxy of the tracked Order
    class Meta:
        proxy = True


class OpenTickets(models.Manager):
    def get_queryset(self):
        return super().get_queryset().exclude(status="closed")


class Shelf(models.Model):  # untracked: deleting it cascades to tracked tickets
    name = models.CharField(max_length=20, default="")


class Ticket(models.Model):  # its default manager hides closed rows
    status = models.CharField(max_length=20, default="open")
    shelf = models.ForeignKey(Shelf, null=True, on_delete=models.CASCADE)
    objects = OpenTickets()


class Document(models.Model):  # hostile values
    title = models.CharField(max_length=200, default="")
    body = models.TextField(default="")
    blob = models.BinaryField(null=True)
    data = models.JSONField(default=dict)
    due = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    attachment = models.FileField(null=True, blank=True)
    took = models.DurationField(null=True)
