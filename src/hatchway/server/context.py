"""Everything a running server shares: settings, identity, store and the flow services."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hatchway.bus import Bus, bus_from_url
from hatchway.config import Settings
from hatchway.flows.clients import ensure_default_clients
from hatchway.flows.enrolment import EnrolmentService
from hatchway.flows.firmware import import_legacy_trust
from hatchway.flows.keyring import ServerKeyring
from hatchway.flows.login.service import LoginService
from hatchway.flows.messaging import MessageService
from hatchway.flows.sechannel import SecureChannelService, ensure_application_identity
from hatchway.limits import limits_from_settings
from hatchway.runtime import Clock, Random, system_clock, system_random
from hatchway.se.appcert import web_origin
from hatchway.server.datadir import ServerIdentity, ensure_data_dir
from hatchway.store import Store


@dataclass(slots=True)
class ServerContext:
    settings: Settings
    identity: ServerIdentity
    store: Store
    enrolment: EnrolmentService
    messages: MessageService
    bus: Bus
    login: LoginService
    #: The secure-element channel's OCE side (``None`` only when built by hand).
    sechannel: SecureChannelService | None = None
    #: Set while the MQTT gateway holds its subscription (``None``: MQTT is off).
    mqtt_connected: asyncio.Event | None = None

    @classmethod
    def create(
        cls, settings: Settings, *, clock: Clock = system_clock, random: Random = system_random
    ) -> ServerContext:
        identity = ensure_data_dir(settings.data_dir)
        store = Store.open(settings.resolved_database_url)
        # First run: register hatchway-cli, so `hatchway login` works out of the box.
        ensure_default_clients(store, now=clock())
        # Before revision 0006 the firmware trust store was a file in the data dir.
        import_legacy_trust(store, settings.data_dir, now=clock())
        # One bus per process; a PostgreSQL store shares its database as the bus,
        # so an approval on one replica wakes the device waiting on another.
        bus = bus_from_url(settings.database_url or None)
        keyring = ServerKeyring(
            store,
            identity,
            clock=clock,
            random=random,
            refresh_interval=settings.server_key_refresh,
        )
        return cls(
            settings=settings,
            identity=identity,
            store=store,
            enrolment=EnrolmentService(
                store=store,
                identity=identity,
                settings=settings,
                clock=clock,
                random=random,
                keyring=keyring,
            ),
            messages=MessageService(
                store=store,
                identity=identity,
                settings=settings,
                clock=clock,
                random=random,
                keyring=keyring,
            ),
            bus=bus,
            login=LoginService(
                store=store,
                identity=identity,
                settings=settings,
                clock=clock,
                random=random,
                bus=bus,
                # Redis when HATCHWAY_REDIS_URL is set: budgets every replica shares.
                limits=limits_from_settings(settings),
            ),
            sechannel=SecureChannelService(
                ensure_application_identity(
                    settings.data_dir,
                    identity.ca,
                    origin=web_origin(settings.issuer),
                    tls_cert_path=identity.tls_cert_path,
                    now=clock(),
                ),
                clock=clock,
                random=random,
            ),
        )

    def close(self) -> None:
        self.messages.close()
        self.login.limits.close()
        self.store.close()
