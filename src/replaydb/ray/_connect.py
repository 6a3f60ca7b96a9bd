"""Joining or starting Ray: loopback only, token authentication, fast failures."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from replaydb.errors import InvalidArgumentError
from replaydb.ray._common import NAMESPACE, _ray

log = logging.getLogger("replaydb.ray")


def _connect(address: str | None) -> bool:
    """Connect to Ray; return whether this call started it (and so must shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return False
    if address is not None:
        _join(address)
        return False
    if _token_auth_supported(ray.__version__) and not _token_auth_default(ray.__version__):
        # Ray 2.52-2.58 has token auth but leaves it off; 2.59+ turns it on for local
        # clusters itself (and setting it here would fight Ray's per-process cache).
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    with _loopback_only(ray):
        ray.init(
            namespace=NAMESPACE,
            include_dashboard=False,
            _node_ip_address=_LOOPBACK,
            log_to_driver=False,
            configure_logging=False,
        )
    gcs = str(ray.get_runtime_context().gcs_address)
    if not gcs.startswith(_LOOPBACK + ":"):
        log.warning(
            "the local Ray started by replaydb listens on %s, not loopback only; "
            "firewall its ports (see docs/ray.md, 'Security')",
            gcs,
        )
    return True


_LOOPBACK = "127.0.0.1"

#: Environment of the Ray processes a local start spawns (GCS, raylet, agents,
#: workers). ``RAY_enable_metrics_collection=false`` turns the raylet's and the
#: dashboard agent's Prometheus exporters off. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``
#: tells Ray this is a single-machine cluster, so a node address of 127.0.0.1 stays
#: 127.0.0.1 (Ray >= 2.5x maps it to the host's address otherwise) and every gRPC
#: server binds loopback only.
_LOCAL_ENV = {"RAY_enable_metrics_collection": "false", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


#: How long a joining process waits for the cluster's GCS to answer the token check.
_CONNECT_TIMEOUT_S = 5.0


def _join(address: str) -> None:
    """Connect this process to a running Ray cluster; fail in seconds if it would hang.

    Before ``ray.init`` (which retries a refused or unreachable cluster for a long
    time), one GCS call with a deadline of :data:`_CONNECT_TIMEOUT_S`, carrying the
    token Ray itself would send, tells a wrong address or a missing or wrong token
    apart with a clear error. A loopback address is joined as a single-machine
    cluster (see :func:`_single_machine`), since a loopback-only cluster is not
    reachable at the host's address.
    """
    ray = _ray()
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS") or _latest_local_address(ray) or ""
        if not target:
            raise InvalidArgumentError(
                "address='auto' found no running Ray cluster on this machine; pass the "
                "address printed by `replaydb serve` (address='host:port')"
            )
    host = target.rsplit(":", 1)[0].strip("[]")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    _check_gcs(target, _token_to_send(auto=address == "auto"))
    with _single_machine(ray) if loopback else contextlib.nullcontext():
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)


def _latest_local_address(ray: Any) -> str | None:
    """The address of the newest cluster started on this machine, as Ray's "auto" finds it."""
    find = getattr(getattr(ray, "_private", None), "services", None)
    find = getattr(find, "get_ray_address_from_environment", None)
    if find is None:
        return None
    try:
        found = find("auto", None)
    except Exception:  # no cluster, or several
        return None
    return None if found is None else str(found)


def _token_to_send(*, auto: bool) -> str | None:
    """The token Ray will present: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.

    Ray sends it when ``RAY_AUTH_MODE=token``, and with the mode unset only when
    it found a local cluster itself (``address="auto"``) and a token exists.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        return None
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        with contextlib.suppress(OSError):
            token = path.read_text().strip()
    if mode is None and not (auto and token):
        return None
    return token or ""


def _check_gcs(address: str, token: str | None) -> None:
    """One GCS call with a deadline: raise at once for a refused token or no answer."""
    import importlib

    try:
        grpc: Any = importlib.import_module("grpc")
        gcs_service_pb2: Any = importlib.import_module("ray.core.generated.gcs_service_pb2")
        gcs_service_pb2_grpc: Any = importlib.import_module(
            "ray.core.generated.gcs_service_pb2_grpc"
        )
    except ImportError:  # another Ray layout: let ray.init report what it finds
        return
    metadata = [] if token is None else [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(),
                timeout=_CONNECT_TIMEOUT_S,
                metadata=metadata,
            )
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                if token is None:
                    raise InvalidArgumentError(
                        f"the Ray cluster at address={address!r} requires token "
                        "authentication and this process sends no token; set "
                        "RAY_AUTH_MODE=token in its environment (the token is read from "
                        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
                    ) from None
                raise InvalidArgumentError(
                    f"the Ray cluster at address={address!r} refused this process's "
                    "authentication token; use the cluster's token (RAY_AUTH_TOKEN, "
                    "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token as on the head node)"
                ) from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise InvalidArgumentError(
                    f"no Ray cluster answered at address={address!r} within "
                    f"{_CONNECT_TIMEOUT_S:g}s ({code.name}); check the address and that "
                    "the cluster runs (`replaydb serve` prints its address)"
                ) from None
            # Any other answer means a GCS is there: let ray.init take it from here.


@contextlib.contextmanager
def _single_machine(ray: Any) -> Iterator[None]:
    """Keep 127.0.0.1 as 127.0.0.1 while ``ray.init`` runs.

    Ray maps a loopback node or cluster address to the host's address unless it
    runs as a single-machine cluster, a switch it reads once, at import, from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` into
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``: this flips that value for
    the duration of the call (the one private Ray name replaydb touches).
    """
    consts: Any = getattr(getattr(ray, "_private", None), "ray_constants", None)
    had = getattr(consts, "ENABLE_RAY_CLUSTER", None)
    if had is not None:
        consts.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had is not None:
            consts.ENABLE_RAY_CLUSTER = had


@contextlib.contextmanager
def _loopback_only(ray: Any) -> Iterator[None]:
    """Start a local Ray with its node address on 127.0.0.1 and no metrics exporters.

    Sets :data:`_LOCAL_ENV` while Ray spawns its processes (they inherit it) and
    restores the environment afterwards; the driver itself runs under
    :func:`_single_machine`.
    """
    saved = {k: os.environ.get(k) for k in _LOCAL_ENV}
    for k, v in _LOCAL_ENV.items():
        if saved[k] is None:
            os.environ[k] = v
    try:
        with _single_machine(ray):
            yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)


def _version(version: str) -> tuple[int, int]:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return (0, 0)
    return (major, minor)


def _token_auth_supported(version: str) -> bool:
    """Ray >= 2.52 has token authentication (``RAY_AUTH_MODE=token``)."""
    return _version(version) >= (2, 52)


def _token_auth_default(version: str) -> bool:
    """Ray >= 2.59 enables token authentication by default for local clusters."""
    return _version(version) >= (2, 59)
