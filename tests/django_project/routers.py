"""Two databases: shop.Sku lives in "other", everything else in "default"."""


class SkuRouter:
    def db_for_read(self, model, **hints):
        return "other" if model._meta.label == "shop.Sku" else "default"

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return None
