"""Alert deliveries: ``too_old``, a transition seen too long ago to page about (not sent)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("observability", "0010_snapshot_keys_seen_until"),
    ]

    operations = [
        migrations.AlterField(
            model_name="alertdelivery",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("pending", "pending"),
                    ("sending", "sending"),
                    ("delivered", "delivered"),
                    ("failed", "failed (gave up)"),
                    ("suppressed", "suppressed (cooldown)"),
                    ("no_webhook", "no webhook configured"),
                    ("too_old", "not sent (seen too long ago)"),
                ],
                db_index=True,
                max_length=12,
            ),
        ),
    ]
