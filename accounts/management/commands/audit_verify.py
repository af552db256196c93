"""Verify the audit chain: `manage.py audit_verify [--anchor FILE]`.

Exit 0 with one line when intact; otherwise exit 1 with one line naming the first
altered or missing event. `--anchor` takes a file holding a line printed earlier by
`audit_anchor` (or `-` for standard input): the chain must still reach that event.
"""

import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from accounts.audit import Anchor, find_break
from accounts.models import AuditChainHead


class Command(BaseCommand):
    help = "Verify the keyed hash chain of the audit log (and, given one, against a kept anchor)."

    def add_arguments(self, parser):
        parser.add_argument("--anchor", metavar="FILE", help="a file with an anchor line from audit_anchor, or -")

    def handle(self, *args, anchor=None, **options):
        kept = None
        if anchor:
            try:
                text = sys.stdin.read() if anchor == "-" else Path(anchor).read_text()
            except OSError as exc:
                raise CommandError(f"cannot read the anchor {anchor}: {exc.strerror}")
            try:
                kept = Anchor.parse(text)
            except ValueError as exc:
                raise CommandError(f"--anchor {anchor}: {exc}")
        found = find_break(anchor=kept)
        if found is not None:
            raise CommandError(f"audit chain broken: {found}")
        head = AuditChainHead.objects.filter(pk=1).first()
        newest = head.last_id if head else 0
        against = f", reaching the anchored event #{kept.last_id}" if kept else ""
        self.stdout.write(f"audit chain intact: events up to #{newest} verified{against}")
