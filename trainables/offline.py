"""Whether the user declared this machine offline: then nothing tries the network, not even to ask.

``IMAGE_SEARCH_OFFLINE=1`` declares it for this tool's own network calls: torchvision's data set
downloads and MODEL "auto"'s check of the model hub. ``HF_HUB_OFFLINE=1``, the Hugging Face hub
library's own switch, declares the hub offline: "auto" then resolves offline too, and timm's
ImageNet weights (``--weights imagenet``) come from the local hub cache or fail, never downloaded.
A value declares it unless it is empty, "0", "false", "no" or "off" (any case). The test suite
sets both (tests/conftest.py), so no test depends on the network.
"""

from __future__ import annotations

import os

__all__ = ["HUB_VARIABLES", "TOOL_VARIABLES", "offline_reason"]

TOOL_VARIABLES = ("IMAGE_SEARCH_OFFLINE",)  # what declares the data downloads offline
HUB_VARIABLES = ("IMAGE_SEARCH_OFFLINE", "HF_HUB_OFFLINE")  # what declares the model hub offline
_NOT_SET = ("", "0", "false", "no", "off")


def offline_reason(variables: tuple[str, ...] = TOOL_VARIABLES) -> str | None:
    """ "NAME is set" for the first of ``variables`` that declares offline, else None."""
    for name in variables:
        if os.environ.get(name, "").strip().lower() not in _NOT_SET:
            return f"{name} is set"
    return None
