"""The device SDK: enrol once over TLS, then exchange sealed messages over any transport.

device = Device.enroll(server="https://localhost:8443", device_id="meter-001",
                       secret=secret, state_path=Path("meter-001.json"), ca_file=ca)
device.send({"kwh": 12.5})
command = device.poll()
"""

from hatchway.device.client import Command, Device
from hatchway.device.enrol import EnrolmentError
from hatchway.device.mqtt import MqttTransport
from hatchway.device.revoked import DeviceRevoked
from hatchway.device.state import DeviceState, StateFile
from hatchway.device.transport import HttpTransport, MessageRejected, Transport, TransportError

__all__ = [
    "Command",
    "Device",
    "DeviceRevoked",
    "DeviceState",
    "EnrolmentError",
    "HttpTransport",
    "MessageRejected",
    "MqttTransport",
    "StateFile",
    "Transport",
    "TransportError",
]
