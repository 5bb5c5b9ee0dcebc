"""The CRM's sales pipelines, read from `pipelines` (the front end writes them) and kept for a
minute, so a person's change reaches the routing within one run or two."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from pymongo.collection import Collection

from models.pipeline import MalformedPipeline, Pipeline, parse_pipeline, pipeline_for

log = logging.getLogger(__name__)

REFRESH_SECONDS = 60.0


class PipelineCatalog:
    def __init__(self, collection: Collection, clock: Callable[[], float] = time.monotonic):
        self._collection = collection
        self._clock = clock
        self._lock = threading.Lock()
        self._pipelines: list[Pipeline] = []
        self._loaded_at: float | None = None

    def for_agent(self, agent_id: str | None) -> Pipeline | None:
        """The call's pipeline, or None where the CRM has none (contacts then get no stage)."""
        return pipeline_for(agent_id, self.pipelines())

    def pipelines(self) -> list[Pipeline]:
        with self._lock:
            if self._loaded_at is None or self._clock() - self._loaded_at >= REFRESH_SECONDS:
                self._pipelines = self._load()
                self._loaded_at = self._clock()
            return self._pipelines

    def _load(self) -> list[Pipeline]:
        pipelines = []
        for document in self._collection.find({"active": {"$ne": False}}, sort=[("_id", 1)]):
            try:
                pipelines.append(parse_pipeline(document))
            except MalformedPipeline as exc:
                # Its contacts get no stage from it; the others still route.
                log.warning("pipeline %s is ignored: %s", document.get("_id"), exc, extra={"event": "pipeline_malformed"})
        return pipelines
