"""Every registered message, for the code map (docs/architecture.md) and tests.

Importing a channel's module registers its messages; this module imports them all, so the
registry it reads is complete. Receivers import only their own channel's module.
"""

from __future__ import annotations

import shoal.wire.controller  # noqa: F401 (each import registers its channel's messages)
import shoal.wire.relay  # noqa: F401
import shoal.wire.script  # noqa: F401
import shoal.wire.site  # noqa: F401
from shoal.wire.messages import CHANNELS, REGISTRY, Message


def all_messages() -> list[type[Message]]:
    """Every message class, channel by channel (in CHANNELS order), then by type name."""
    return [cls for channel in CHANNELS for _, cls in sorted(REGISTRY.get(channel.name, {}).items())]


def message_table() -> str:
    """The Markdown table of the messages: type, channel, sender, receiver, class."""
    rows = [
        "| channel | type | sender → receiver | class |",
        "|---|---|---|---|",
    ]
    for cls in all_messages():
        where = f"{cls.__module__}.{cls.__name__}"
        rows.append(f"| {cls.CHANNEL.name} | `{cls.TYPE}` | {cls.SENDER} → {cls.RECEIVER} | `{where}` |")
    return "\n".join(rows) + "\n"
