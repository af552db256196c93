from django.db import migrations


def create_default_roles(apps, schema_editor):
    from accounts.default_roles import install_default_roles

    install_default_roles(apps.get_model("accounts", "Role"), apps.get_model("accounts", "Rule"))


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(create_default_roles, migrations.RunPython.noop)]
