"""MQTT transport for sealed messages (docs/mqtt.md).

Sans-I/O pieces live here: the topic scheme (:mod:`.topics`), broker URLs
(:mod:`.broker`) and the broker ACL hatchway generates (:mod:`.acl`). The adapters
are thin: :mod:`hatchway.mqtt.gateway` on the server (started by ``hatchway serve``)
and :mod:`hatchway.device.mqtt` on the device.
"""

from hatchway.mqtt.broker import BrokerUrl
from hatchway.mqtt.topics import DEFAULT_PREFIX, DEFAULT_SHARE_GROUP, Topics

__all__ = ["DEFAULT_PREFIX", "DEFAULT_SHARE_GROUP", "BrokerUrl", "Topics"]
