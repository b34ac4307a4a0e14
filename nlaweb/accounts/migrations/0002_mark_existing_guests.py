"""Users made by the old guest middleware (a `guest-` name and no usable password) become guests."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import migrations


def mark_guests(apps: Any, schema_editor: Any) -> None:
    User = apps.get_model("auth", "User")
    Guest = apps.get_model("accounts", "Guest")
    old = User.objects.filter(
        username__startswith="guest-", password__startswith=UNUSABLE_PASSWORD_PREFIX
    )
    Guest.objects.bulk_create(
        [Guest(user_id=pk) for pk in old.values_list("pk", flat=True)], ignore_conflicts=True
    )


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_guest")]

    operations = [migrations.RunPython(mark_guests, migrations.RunPython.noop)]
