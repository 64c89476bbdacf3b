from django.db import migrations
from django.db import models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Entry",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("action", models.CharField(max_length=50)),
                ("at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
