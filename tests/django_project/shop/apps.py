from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "tests.django_project.shop"
    label = "shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import post_save

        from tests.django_project.shop.models import Item

        def slugify_after_create(sender, instance, created, **kwargs):  # saves the same object again, as many do
            if created and instance.name == "slug me":
                instance.name = "slugged"
                instance.save()
        post_save.connect(slugify_after_create, sender=Item, dispatch_uid="shop.slugify", weak=False)
