"""The incremental refresh's high-water mark: where the next one starts reading changed rows."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("observability", "0009_table_size_sample"),
    ]

    operations = [
        migrations.AddField(
            model_name="snapshot",
            name="keys_seen_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
