"""What devices are told about MQTT: RFC 8414 metadata entries and enrolment endpoints.

Only when MQTT is configured; the broker URL given out never carries credentials.
"""

from __future__ import annotations

from typing import Any

from hatchway.config import Settings
from hatchway.mqtt.topics import Topics


def metadata_entries(settings: Settings) -> dict[str, Any]:
    """``hatchway_mqtt_*`` discovery entries (topic templates name ``{device_id}``)."""
    if not settings.mqtt_enabled:
        return {}
    topics = Topics(settings.mqtt_topic_prefix)
    return {
        "hatchway_mqtt_broker": settings.mqtt_device_broker,
        "hatchway_mqtt_uplink_topic": topics.uplink_template(),
        "hatchway_mqtt_downlink_topic": topics.downlink_template(),
        "hatchway_mqtt_username": "{device_id}",
        "hatchway_mqtt_qos": 1,
    }


def enrolment_endpoints(settings: Settings, device_id: str) -> dict[str, str]:
    """The device's own broker and topics, saved in its state file's ``endpoints``."""
    if not settings.mqtt_enabled:
        return {}
    topics = Topics(settings.mqtt_topic_prefix)
    return {
        "mqtt_broker": settings.mqtt_device_broker,
        "mqtt_uplink": topics.uplink(device_id),
        "mqtt_downlink": topics.downlink(device_id),
    }
