"""The live page's websocket: first the experiment's state snapshot, then its live events.

The consumer joins the experiment's channel group before reading the snapshot, so no event falls
between the two; the browser drops live messages whose seq the snapshot already covers.
"""
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from frontend import live
from frontend.progress import group_name

CLOSE_NOT_FOUND = 4404  # application close code: no such experiment (the browser stops retrying)


class ExperimentConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.experiment_id = self.scope["url_route"]["kwargs"]["experiment_id"]
        self.group = group_name(self.experiment_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        state = await database_sync_to_async(live.live_state)(self.experiment_id)
        if state is None:
            await self.send_json({"type": "error", "message": f"there is no experiment {self.experiment_id}"})
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.send_json(state)

    async def disconnect(self, code):
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
