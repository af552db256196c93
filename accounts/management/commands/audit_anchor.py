"""Print a signed anchor of the audit chain's head: `manage.py audit_anchor`.

Keep the line outside the server (a ticket, a mail to the data protection officer, a
printout): `audit_verify --anchor FILE` later proves that no event up to it was removed,
even if the newest events were deleted together with the head. The chain is verified
first; a broken chain is not anchored.
"""

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import anchor_current, find_break


class Command(BaseCommand):
    help = "Verify the audit chain and print its head, signed with the audit key, to keep elsewhere."

    def handle(self, *args, **options):
        found = find_break()
        if found is not None:
            raise CommandError(f"audit chain broken: {found}; not anchoring it")
        self.stdout.write(str(anchor_current()))
