"""What a :class:`~hatchway.flows.messaging.MessageService` holds, and its constructor.

The service is one class assembled from the mixins of this package (peers, delivery,
dispatch, admission, revocation, service); its state is set here, once, so each mixin
type-checks against the same attributes and none of them grows an ``__init__``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from hatchway.config import Settings
from hatchway.flows import firmware as fw
from hatchway.flows.ingest.committer import DEFAULT_MAX_BATCH, Committer, GroupCommitter
from hatchway.flows.keyring import ServerKeyring
from hatchway.flows.keyrotation import DeviceKeyRotation
from hatchway.msgsec import MessageType, OpenPolicy
from hatchway.runtime import Clock, Random
from hatchway.server.datadir import ServerIdentity
from hatchway.store import Store

if TYPE_CHECKING:  # peers builds on this module
    from hatchway.flows.messaging.peers import _Peer

#: Kinds a device may send to the server; everything else is refused at the door.
INBOUND = frozenset(
    {
        MessageType.TELEMETRY,
        MessageType.POLL,
        MessageType.COMMAND_RESULT,
        MessageType.DEREGISTER,
        MessageType.KEY_ROTATE,
        MessageType.FIRMWARE_REPORT,
    }
)


class ServiceState:
    """The collaborators and caches every step of the pipeline shares."""

    def __init__(
        self,
        *,
        store: Store,
        identity: ServerIdentity,
        settings: Settings,
        clock: Clock,
        random: Random,
        cache_size: int = 4096,
        max_batch: int = DEFAULT_MAX_BATCH,
        keyring: ServerKeyring | None = None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.settings = settings
        self.clock = clock
        self.random = random
        self.server_id = settings.issuer
        self.keyring = keyring or ServerKeyring(
            store,
            identity,
            clock=clock,
            random=random,
            refresh_interval=settings.server_key_refresh,
        )
        self.rotation = DeviceKeyRotation(store=store, identity=identity, settings=settings)
        self._policy = OpenPolicy(
            audience=self.server_id,
            expected=INBOUND,
            max_size=settings.max_message_size,
        )
        # kid -> peer; enrolment and de-registration go through the store, so a miss
        # (or a stale entry on another replica) is resolved by asking the store again.
        self._peers: OrderedDict[str, _Peer] = OrderedDict()
        self._peers_lock = threading.Lock()
        self._cache_size = cache_size
        self._next_purge = 0.0
        #: In process; ``hatchway serve --workers N`` swaps in the shared writer's link.
        self.committer: Committer = GroupCommitter(store, max_batch=max_batch)
        self.offers = fw.Offers(store, random)

    def close(self) -> None:
        """Commit and acknowledge what is queued, then stop the writer thread."""
        self.committer.close()
