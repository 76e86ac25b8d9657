"""``hatchway mqtt …``: the broker side of the MQTT transport (docs/mqtt.md).

``acl`` writes a Mosquitto ``acl_file`` that lets every device publish only to its own
uplink and read only its own downlink, and the server read every uplink and write
every downlink.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hatchway.cli.common import JsonOption, load_settings
from hatchway.cli.output import console, emit, errors_reported

app = typer.Typer(help="MQTT transport: broker configuration.", no_args_is_help=True)


@app.command()
def acl(
    out: Annotated[Path, typer.Option("--out", help="Where to write the Mosquitto acl_file.")],
    server_user: Annotated[
        list[str] | None,
        typer.Option(
            "--server-user",
            help="The server's broker username (repeatable). Default: the user in "
            "HATCHWAY_MQTT_URL, else hatchway@server. Must not be a valid device id.",
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option("--prefix", help="Topic prefix [env: HATCHWAY_MQTT_TOPIC_PREFIX]"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a Mosquitto acl_file: each device (username = device id) gets its own topics."""
    from hatchway.mqtt.acl import DEFAULT_SERVER_USER, mosquitto_acl
    from hatchway.mqtt.broker import BrokerUrl
    from hatchway.mqtt.topics import Topics
    from hatchway.pki.files import write_public

    with errors_reported(as_json):
        settings = load_settings()
        topics = Topics(prefix or settings.mqtt_topic_prefix)
        users = list(server_user or [])
        if not users:
            configured = BrokerUrl.parse(settings.mqtt_url).username if settings.mqtt_url else None
            users = [configured or DEFAULT_SERVER_USER]
        text = mosquitto_acl(topics, server_users=users)
        # Not secret, and the broker (often its own system user) must be able to read it.
        write_public(out, text.encode())
        data = {
            "acl_file": str(out),
            "server_users": users,
            "device_username": "{device_id}",
            "uplink_topic": topics.uplink_template(),
            "downlink_topic": topics.downlink_template(),
            "server_subscription": topics.shared_subscription(settings.mqtt_share_group),
            "mosquitto_conf": [
                "allow_anonymous false",
                "password_file /etc/mosquitto/passwd",
                f"acl_file {out}",
            ],
        }
        emit(
            as_json,
            data,
            lambda: console.print(
                f"wrote {out}\n"
                f"devices (username = device id) may publish to {topics.uplink_template()}\n"
                f"  and read {topics.downlink_template()}, nothing else;\n"
                f"the server ({', '.join(users)}) reads {topics.uplink_filter} through "
                f"{data['server_subscription']}\n  and writes {topics.downlink_filter}.\n"
                "Add to mosquitto.conf:  allow_anonymous false / password_file FILE / "
                f"acl_file {out}\n"
                "and give each device a password (mosquitto_passwd) or a client certificate "
                "whose CN is its device id (use_identity_as_username true).",
                highlight=False,
            ),
        )
