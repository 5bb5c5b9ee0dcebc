"""The CRM's sales pipelines, read from `pipelines` (the front end writes them) and kept for a
minute, so a person's change reaches the routing within one run or two."""
from __future__ import annotations

import logging
import threading

from cachetools import TTLCache, cachedmethod
from pymongo.collection import Collection

from models.pipeline import MalformedPipeline, Pipeline, parse_pipeline, pipeline_for

log = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0


class PipelineCatalog:
    def __init__(self, collection: Collection):
        self._collection = collection
        self._cache = TTLCache(maxsize=1, ttl=REFRESH_SECONDS)
        self._lock = threading.Lock()

    def for_agent(self, agent_id: str | None) -> Pipeline | None:
        """The call's pipeline, or None where the CRM has none (contacts then get no stage)."""
        return pipeline_for(agent_id, self._pipelines())

    @cachedmethod(lambda self: self._cache, lock=lambda self: self._lock)
    def _pipelines(self) -> list[Pipeline]:
        pipelines = []
        for document in self._collection.find({"active": {"$ne": False}}, sort=[("_id", 1)]):
            try:
                pipelines.append(parse_pipeline(document))
            except MalformedPipeline as exc:
                # Its contacts get no stage from it; the others still route.
                log.warning("pipeline %s is ignored: %s", document.get("_id"), exc, extra={"event": "pipeline_malformed"})
        return pipelines
