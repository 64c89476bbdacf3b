"""A data migration: the categories every shop starts with."""

from django.db import migrations

NAMES = ["books", "games", "music"]


def add(apps, schema_editor):  # type: ignore[no-untyped-def]
    category = apps.get_model("catalog", "Category")
    category.objects.using(schema_editor.connection.alias).bulk_create(
        category(name=name) for name in NAMES
    )


def remove(apps, schema_editor):  # type: ignore[no-untyped-def]
    category = apps.get_model("catalog", "Category")
    category.objects.using(schema_editor.connection.alias).filter(name__in=NAMES).delete()


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(add, remove)]
