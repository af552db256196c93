"""The embedded channel layer: Channels' in-memory layer that knows who listens.

Most events go to groups nobody in this process listens to right now (a collaboration
without an open portal page, a node that is not connected): the layer can say so
without waking the event loop (core.events), and drops them without setting up an
empty fan-out.
"""

from channels.layers import InMemoryChannelLayer as ChannelsInMemoryChannelLayer


class InMemoryChannelLayer(ChannelsInMemoryChannelLayer):
    def listened_groups(self, groups: list[str]) -> list[str]:
        """Those of `groups` with a member; callable from any thread (a dict lookup each)."""
        return [group for group in groups if group in self.groups]

    async def group_send(self, group, message):
        if group not in self.groups:
            self.require_valid_group_name(group)
            return
        await super().group_send(group, message)
