"""The embedded channel layer: Channels' in-memory layer without its per-call sweep.

Channels' InMemoryChannelLayer walks every channel queue and every group membership on
each receive() and group_send() to drop expired entries. Every connected consumer waits
in receive(), so one event to N sockets costs N sweeps of N entries: with 1,000 node
sockets that was about half the server's CPU and 0.4 s per fanned-out event
(bench/events.py). Sweeping at most once a second keeps expiry (60 s for messages, a day
for group memberships) while fan-out cost grows linearly.
"""

import time

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer

SWEEP_INTERVAL_SECONDS = 1.0


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    _swept_at = float("-inf")

    def listened_groups(self, groups: list[str]) -> list[str]:
        """Those of `groups` with a member; callable from any thread (a dict lookup each)."""
        return [group for group in groups if group in self.groups]

    async def group_send(self, group, message):
        # Most events go to groups nobody listens to right now (a collaboration without
        # an open portal page): Channels would still set up an empty fan-out for them.
        if group not in self.groups:
            self.require_valid_group_name(group)
            return
        await super().group_send(group, message)

    def _clean_expired(self):
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_INTERVAL_SECONDS:
            self._swept_at = now
            super()._clean_expired()
