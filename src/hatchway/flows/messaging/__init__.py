"""Sealed messages after TLS: US 11,546,310 B2 claim step 5 and claims 2–5, server side.

Transport-agnostic: ``MessageService.handle`` takes the sealed token bytes from any
transport (plain HTTP today, MQTT later) and returns the sealed reply bytes. Every
failure raises the opaque ``InvalidMessage``; the real reason is logged here and
never sent back.

The replay check, the ``jti`` record and the stored message commit in one store
transaction, so a crash or restart can neither lose an accepted message nor let a
replay in. A device that retries after a lost reply re-seals the same payload with a
fresh ``seq``/``jti`` but the same ``mid``; the store then acknowledges the duplicate
instead of storing it twice.

A poll is answered by at most one command delivery: the store picks the command,
and keeps the sealed reply under the poll's ``mid``, in one transaction, so a
retransmitted or held-back-and-released poll gets the same bytes again and a
command is never handed out twice while a delivery of it is unexpired.

Many transport threads call ``handle`` at once: each opens and verifies its message
itself, then the store step goes through one :class:`GroupCommitter`, which commits
the messages queued meanwhile in one transaction and wakes each caller only after
that commit (issue 10 §1). ``handle`` keeps its signature and its semantics.

A device the operator revoked (:mod:`hatchway.flows.deregistration`) is answered,
once, with a sealed ``DEREGISTERED`` notice instead; nothing of its message is stored,
and everything after the notice is refused.

``MessageService`` is one class assembled from a chain of mixins, one module each, so
every step can be read on its own (each mixin builds on the one before it):

* :mod:`.state` — the constructor and the shared state;
* :mod:`.peers` — the sender's keys by signing kid (the per-replica key cache);
* :mod:`.delivery` — sealing, command and firmware-offer delivery, server pushes;
* :mod:`.dispatch` — the reply to each accepted message kind (incl. key rotation);
* :mod:`.admission` — prechecks, and the store step through the group committer;
* :mod:`.revocation` — the de-registration notice for revoked devices;
* :mod:`.service` — ``handle`` and ``handle_async`` (the event-loop fast path).
"""

from hatchway.flows.messaging.admission import JTI_PURGE_INTERVAL, MAX_MID_LENGTH
from hatchway.flows.messaging.delivery import check_command, command_body
from hatchway.flows.messaging.service import MessageService
from hatchway.flows.messaging.state import INBOUND

__all__ = [
    "INBOUND",
    "JTI_PURGE_INTERVAL",
    "MAX_MID_LENGTH",
    "MessageService",
    "check_command",
    "command_body",
]
