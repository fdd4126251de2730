"""Session states: the login marks an incremental refresh compares, the bot flag as a column."""

import django.contrib.postgres.fields
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('observability', '0011_alert_delivery_too_old'),
    ]

    operations = [
        migrations.AddField(
            model_name='sessionstate',
            name='bot_flagged_disconnected',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='sessionstate',
            name='login_marks',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.TextField(), blank=True, null=True, size=None),
        ),
    ]
