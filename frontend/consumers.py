"""The live page's websocket: first the experiment's state snapshot, then its live events.

The consumer joins the experiment's channel group before reading the snapshot, so no event falls
between the two; the browser drops live messages whose seq the snapshot already covers.
"""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from frontend import access, live
from frontend.progress import group_name

CLOSE_NOT_FOUND = 4404  # application close code: no such experiment (the browser stops retrying)


def _allowed_experiment_id(scope) -> int | None:
    """The experiment this socket may follow (by id for a signed-in user, or by share token), else None."""
    kwargs = scope["url_route"]["kwargs"]
    try:
        if "token" in kwargs:
            return access.shared_experiment(kwargs["token"]).pk
        return access.experiment_for(scope["user"], kwargs["experiment_id"]).pk
    except Http404:
        return None


class ExperimentConsumer(AsyncJsonWebsocketConsumer):
    group = None

    async def connect(self):
        self.experiment_id = await database_sync_to_async(_allowed_experiment_id)(self.scope)
        await self.accept()
        if self.experiment_id is None:  # missing and not allowed look the same
            await self.send_json({"type": "error", "message": "there is no such experiment"})
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = group_name(self.experiment_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        state = await database_sync_to_async(live.live_state)(self.experiment_id)
        if state is None:  # deleted meanwhile
            await self.send_json({"type": "error", "message": "there is no such experiment"})
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_json(state)

    async def disconnect(self, code):
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        try:
            await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)
        except ValueError:  # not JSON: a confused client is ignored, not disconnected with an error
            await self.send_json({"type": "error", "message": "messages must be JSON"})

    async def receive_json(self, content, **kwargs):
        if isinstance(content, dict) and content.get("type") == "snapshot_request":
            # The browser asks again when it sees a gap in the sequence numbers.
            await self.send_json(await database_sync_to_async(live.live_state)(self.experiment_id))

    async def experiment_events(self, message):
        await self.send_json({"type": "events", "seq": message["seq"], "events": message["events"],
                              "progress": message["progress"]})
