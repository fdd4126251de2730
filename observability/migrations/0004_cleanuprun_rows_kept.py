"""Cleanup runs record the rows the retention policy kept, and why (issue 12)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('observability', '0003_session_snapshot'),
    ]

    operations = [
        migrations.AddField(
            model_name='cleanuprun',
            name='kept_reasons',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='cleanuprun',
            name='rows_kept',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name='cleanuprun',
            name='total_kept',
            field=models.BigIntegerField(default=0),
        ),
    ]
