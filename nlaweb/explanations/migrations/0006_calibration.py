from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("explanations", "0005_specificity"),
    ]

    operations = [
        migrations.AddField(
            model_name="explanation",
            name="calibration",
            field=models.CharField(blank=True, max_length=16),
        ),
        migrations.AddField(
            model_name="explanation",
            name="confidence_note",
            field=models.TextField(blank=True),
        ),
    ]
