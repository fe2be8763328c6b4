"""media.aiortc_compat: every private name of aiortc and pylibsrtp the media node relies on is still
there, with the shape relied on. When an upgrade moves one, the failing case names it."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import pytest
from aiortc import RTCPeerConnection
from pylibsrtp import Policy, Session

from media import aiortc_compat
from media.aiortc_compat import REQUIRED, Required

pytestmark = pytest.mark.media

VERSIONS = f"aiortc {version('aiortc')}, pylibsrtp {version('pylibsrtp')}"


def resolve(path: str) -> Any:
    """A module or class from its dotted path."""
    module, _, attr = path.rpartition(".")
    try:
        return importlib.import_module(path)
    except ImportError:
        return getattr(importlib.import_module(module), attr)


def problem(req: Required, owner: Any, instance: Any) -> str | None:
    """What is wrong with one required name (``None``: nothing): ``owner`` is its class or module,
    ``instance`` a fresh instance of that class (attributes are set in ``__init__``)."""
    where = f"{req.owner}.{req.name} ({req.shape}, {VERSIONS})"
    if req.shape == "attribute":
        if not hasattr(instance, req.name):
            return f"{where} is missing"
        value = getattr(instance, req.name)
        if req.types and not isinstance(value, req.types):
            return f"{where} is a {type(value).__name__}, expected {' or '.join(t.__name__ for t in req.types)}"
        return None
    replaced = aiortc_compat.ORIGINALS.get((req.owner, req.name))  # checked, not our replacement
    member = replaced if replaced is not None else inspect.getattr_static(owner, req.name, None)
    if member is None:
        return f"{where} is missing"
    if req.shape == "module":
        return None if inspect.ismodule(member) else f"{where} is not a module"
    if req.shape == "classmethod" and not isinstance(member, classmethod):
        return f"{where} is not a classmethod"
    func = replaced if replaced is not None else getattr(owner, req.name)
    if not callable(func):
        return f"{where} is not callable"
    if req.shape == "coroutine" and not inspect.iscoroutinefunction(func):
        return f"{where} is no longer a coroutine function"
    if req.shape == "method" and inspect.iscoroutinefunction(func):
        return f"{where} became a coroutine function"
    params = list(inspect.signature(func).parameters)
    if req.shape in ("method", "coroutine") and params[:1] == ["self"]:
        params = params[1:]
    if tuple(params) != req.params:
        return f"{where} takes {tuple(params)}, expected {req.params}"
    return None


@pytest.fixture
async def instances() -> AsyncIterator[dict[str, Any]]:
    """A fresh instance of every class whose instance attributes are required."""
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    try:
        yield {
            aiortc_compat.SENDER: transceiver.sender,
            aiortc_compat.RECEIVER: transceiver.receiver,
            aiortc_compat.ICE_GATHERER: transceiver.sender.transport.transport.iceGatherer,
            aiortc_compat.SRTP_SESSION: Session(policy=Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)),
            aiortc_compat.ICE_TRANSPORT: transceiver.receiver.transport.transport,
            aiortc_compat.ICE_CONNECTION: transceiver.receiver.transport.transport._connection,
        }
    finally:
        await pc.close()


@pytest.mark.parametrize("req", REQUIRED, ids=[f"{r.owner}.{r.name}" for r in REQUIRED])
async def test_required_name_is_there(req: Required, instances: dict[str, Any]) -> None:
    owner = resolve(req.owner)
    assert req.shape != "attribute" or req.owner in instances, f"no instance of {req.owner} to check"
    assert problem(req, owner, instances.get(req.owner)) is None, problem(req, owner, instances.get(req.owner))


def test_every_shape_checked_can_fail() -> None:
    """The check names what moved: a missing attribute, method or module, a wrong type, a changed
    signature, a coroutine that became a plain method."""

    class Moved:
        def __init__(self) -> None:
            self.count = "not an int"

        def send(self, data: bytes, extra: int) -> None: ...

    owner, instance = Moved, Moved()
    cases = [
        Required("x.Moved", "_gone", "attribute"),
        Required("x.Moved", "count", "attribute", types=(int,)),
        Required("x.Moved", "_gone", "method"),
        Required("x.Moved", "send", "method", ("data",)),
        Required("x.Moved", "send", "coroutine", ("data", "extra")),
        Required("x.Moved", "send", "classmethod", ("data", "extra")),
        Required("x.Moved", "count", "module"),
    ]
    for req in cases:
        found = problem(req, owner, instance)
        assert found is not None and f"x.Moved.{req.name}" in found, req
    assert problem(Required("x.Moved", "send", "method", ("data", "extra")), owner, instance) is None

