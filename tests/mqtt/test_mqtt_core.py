"""The sans-I/O MQTT pieces: topic scheme, broker URLs, generated ACL, settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.config import Settings, settings_from_env
from hatchway.errors import ConfigurationError
from hatchway.flows.enrolment import DEVICE_ID_RE as ENROLMENT_DEVICE_ID_RE
from hatchway.mqtt import BrokerUrl, Topics
from hatchway.mqtt.acl import check_server_user, mosquitto_acl
from hatchway.mqtt.discovery import enrolment_endpoints, metadata_entries
from hatchway.mqtt.topics import DEVICE_ID_RE, check_share_group

device_ids = st.from_regex(DEVICE_ID_RE, fullmatch=True)


def test_device_id_rule_is_the_enrolment_rule() -> None:
    assert DEVICE_ID_RE.pattern == ENROLMENT_DEVICE_ID_RE.pattern


def test_topics_of_a_device() -> None:
    topics = Topics("site-3/hatchway")
    assert topics.uplink("meter-001") == "site-3/hatchway/d/meter-001/up"
    assert topics.downlink("meter-001") == "site-3/hatchway/d/meter-001/down"
    assert topics.shared_subscription("g1") == "$share/g1/site-3/hatchway/d/+/up"
    assert topics.uplink_template() == "site-3/hatchway/d/{device_id}/up"


@given(device_ids)
def test_uplink_round_trips(device_id: str) -> None:
    topics = Topics()
    assert topics.device_of_uplink(topics.uplink(device_id)) == device_id
    assert topics.device_of_uplink(topics.downlink(device_id)) is None


@given(st.text(max_size=120))
def test_uplink_parser_never_yields_a_non_device(topic: str) -> None:
    """Whatever topic the broker hands over, the parser returns a valid device id or None."""
    device_id = Topics().device_of_uplink(topic)
    assert device_id is None or (
        DEVICE_ID_RE.fullmatch(device_id) and Topics().uplink(device_id) == topic
    )


@pytest.mark.parametrize(
    "topic",
    [
        "hatchway/v1/d/+/up",
        "hatchway/v1/d/#/up",
        "hatchway/v1/d/a/b/up",
        "hatchway/v1/d//up",
        "hatchway/v1/d/-x/up",
        "other/v1/d/meter/up",
        "hatchway/v1/d/meter/up/",
    ],
)
def test_uplink_parser_refuses(topic: str) -> None:
    assert Topics().device_of_uplink(topic) is None


@pytest.mark.parametrize("device_id", ["a/b", "+", "#", "", "$SYS", "x" * 65])
def test_topics_refuse_non_device_ids(device_id: str) -> None:
    with pytest.raises(ValueError, match="not a device id"):
        Topics().uplink(device_id)


@pytest.mark.parametrize("prefix", ["", "/a", "a/", "a//b", "a/+", "a/#", "$SYS/x", "a b"])
def test_bad_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topics(prefix)


@pytest.mark.parametrize("group", ["", "a/b", "a+", "a#", "x" * 65])
def test_bad_share_groups(group: str) -> None:
    with pytest.raises(ValueError, match="share group"):
        check_share_group(group)


def test_broker_urls() -> None:
    url = BrokerUrl.parse("mqtt://hatchway%40server:s3cret@broker.example:1884")
    assert (url.host, url.port, url.tls) == ("broker.example", 1884, False)
    assert (url.username, url.password) == ("hatchway@server", "s3cret")
    assert url.public == "mqtt://broker.example:1884" and "s3cret" not in repr(url)
    assert BrokerUrl.parse("mqtts://b").port == 8883 and BrokerUrl.parse("mqtts://b").tls
    assert BrokerUrl.parse("mqtt://[::1]").public == "mqtt://[::1]:1883"


@pytest.mark.parametrize(
    "bad", ["http://b", "mqtt://", "mqtt://b:99999", "mqtt://b/path", "mqtt://b?q=1", "b:1883"]
)
def test_bad_broker_urls(bad: str) -> None:
    with pytest.raises(ValueError):
        BrokerUrl.parse(bad)


@given(st.text(max_size=80))
def test_broker_url_parser_fails_only_with_value_error(text: str) -> None:
    try:
        url = BrokerUrl.parse(text)
    except ValueError:
        return
    assert url.host and 0 < url.port < 65536


def test_acl_confines_devices_by_username_and_names_the_server() -> None:
    text = mosquitto_acl(Topics("p/q"), server_users=["hatchway@server"])
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "user hatchway@server",
        "topic read p/q/d/+/up",
        "topic write p/q/d/+/down",
        "pattern write p/q/d/%u/up",
        "pattern read p/q/d/%u/down",
    ]


@pytest.mark.parametrize("user", ["hatchway", "meter-001", "a:b", "a+b", "a/b", "a b", ""])
def test_server_user_can_never_be_a_device(user: str) -> None:
    with pytest.raises(ValueError):
        check_server_user(user)


def test_settings_read_and_checked() -> None:
    s = settings_from_env(
        {
            "HATCHWAY_MQTT_URL": "mqtt://hatchway%40server:pw@10.0.0.5:1883",
            "HATCHWAY_MQTT_SHARE_GROUP": "fleet",
            "HATCHWAY_MQTT_TOPIC_PREFIX": "acme/hatchway",
        }
    )
    assert s.mqtt_enabled and s.mqtt_broker.password == "pw"
    assert s.mqtt_device_broker == "mqtt://10.0.0.5:1883"  # no credentials for devices
    public = s.with_overrides(mqtt_public_url="mqtts://mqtt.example.com")
    assert public.mqtt_device_broker == "mqtts://mqtt.example.com:8883"
    assert not settings_from_env({}).mqtt_enabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HATCHWAY_MQTT_URL", "http://broker"),
        ("HATCHWAY_MQTT_URL", "mqtt://hatchway:pw@broker"),  # a device-like server user
        ("HATCHWAY_MQTT_SHARE_GROUP", "a/b"),
        ("HATCHWAY_MQTT_TOPIC_PREFIX", "a/#"),
        ("HATCHWAY_MQTT_PUBLIC_URL", "mqtt://dev:secret@broker"),
        ("HATCHWAY_MQTT_CA_FILE", "/nonexistent/ca.pem"),
        ("HATCHWAY_MQTT_SESSION_EXPIRY", "-1"),
        ("HATCHWAY_MQTT_SESSION_EXPIRY", "604801"),
    ],
)
def test_bad_settings_fail_at_start(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match="MQTT"):
        settings_from_env({name: value})


def test_discovery_only_when_configured() -> None:
    off = Settings()
    assert metadata_entries(off) == {} and enrolment_endpoints(off, "m1") == {}
    on = Settings(mqtt_url="mqtt://127.0.0.1:1883")
    assert metadata_entries(on)["hatchway_mqtt_uplink_topic"] == "hatchway/v1/d/{device_id}/up"
    assert enrolment_endpoints(on, "m1") == {
        "mqtt_broker": "mqtt://127.0.0.1:1883",
        "mqtt_uplink": "hatchway/v1/d/m1/up",
        "mqtt_downlink": "hatchway/v1/d/m1/down",
    }
