"""Everything a running server shares: settings, identity, store and the flow services."""

from __future__ import annotations

from dataclasses import dataclass

from hatchway.config import Settings
from hatchway.flows.enrolment import EnrolmentService
from hatchway.flows.messaging import MessageService
from hatchway.runtime import Clock, Random, system_clock, system_random
from hatchway.server.datadir import ServerIdentity, ensure_data_dir
from hatchway.store import Store


@dataclass(slots=True)
class ServerContext:
    settings: Settings
    identity: ServerIdentity
    store: Store
    enrolment: EnrolmentService
    messages: MessageService

    @classmethod
    def create(
        cls, settings: Settings, *, clock: Clock = system_clock, random: Random = system_random
    ) -> ServerContext:
        identity = ensure_data_dir(settings.data_dir)
        store = Store.open(settings.resolved_database_url)
        common = {
            "store": store,
            "identity": identity,
            "settings": settings,
            "clock": clock,
            "random": random,
        }
        return cls(
            settings=settings,
            identity=identity,
            store=store,
            enrolment=EnrolmentService(**common),  # type: ignore[arg-type]
            messages=MessageService(**common),  # type: ignore[arg-type]
        )

    def close(self) -> None:
        self.store.close()
