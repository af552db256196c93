from django.db import migrations


def update_default_roles(apps, schema_editor):
    from accounts.default_roles import install_default_roles

    install_default_roles(apps.get_model("accounts", "Role"), apps.get_model("accounts", "Rule"))


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_default_roles")]

    operations = [migrations.RunPython(update_default_roles, migrations.RunPython.noop)]
