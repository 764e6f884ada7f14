"""The cluster, as the k8s runtime talks to it: a CoreV1Api on the kubeconfig the
testbed's setup wrote (or $KUBECONFIG), with the API's refusals turned into our errors."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from testbed.errors import ComponentError

T = TypeVar("T")
REQUEST_TIMEOUT_S = 10.0  # one API call; waits poll with calls of their own
SETUP_FIX = "run `testbed setup --k8s`, or set KUBECONFIG to a cluster's kubeconfig"


def kubeconfig_path() -> Path:
    """$KUBECONFIG, else the testbed cluster's; ComponentError naming the fix otherwise."""
    try:
        from testbed.components.kube.cluster import require_kubeconfig
    except ImportError:  # the cluster's setup is not in this checkout: $KUBECONFIG only
        found = os.environ.get("KUBECONFIG")
        if not found or not Path(found).is_file():
            raise ComponentError(f"no Kubernetes cluster configured (no kubeconfig). Fix: "
                                 f"{SETUP_FIX}") from None
        return Path(found)
    return Path(require_kubeconfig())


def ensure_images(refs: list[str]) -> None:
    """Have the cluster's containerd hold these docker images (the setup's loader; a
    foreign cluster must have them already: pods then fail naming the image)."""
    try:
        from testbed.components.kube.images import ensure_images as load
    except ImportError:
        return
    load(refs)


def api_error(exc: BaseException) -> int | None:
    """The HTTP status of an API refusal (None: not one)."""
    from kubernetes.client.exceptions import ApiException

    return exc.status if isinstance(exc, ApiException) else None


@dataclass
class Cluster:
    """A connection to the cluster: the core API and the kubeconfig kubectl is given."""

    kubeconfig: Path
    core: Any  # kubernetes.client.CoreV1Api
    api_client: Any

    def call(self, what: str, fn: Callable[[], T], ok: tuple[int, ...] = ()) -> T | None:
        """An API call; a status in ``ok`` (404 on a delete: gone already) gives None,
        any other refusal a ComponentError with the API's reason."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn()
        except ApiException as exc:
            if exc.status in ok:
                return None
            raise ComponentError(f"the Kubernetes API refused {what}: {exc.status} "
                                 f"{exc.reason}: {_message(exc)}") from exc
        except (HTTPError, OSError) as exc:
            raise ComponentError(f"the Kubernetes API did not answer {what}: {exc}. Fix: "
                                 f"{SETUP_FIX}") from exc

    def discovery(self) -> Any:
        """The discovery.k8s.io API (EndpointSlices: where a Service routes to)."""
        from kubernetes import client

        return client.DiscoveryV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()


def _message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message", exc.body))
    except (TypeError, ValueError, AttributeError):
        return str(exc.body)


def connect(kubeconfig: Path | None = None, timeout: float = REQUEST_TIMEOUT_S) -> Cluster:
    """A connection to the cluster, checked with one call; ComponentError naming the fix
    when there is none or it does not answer."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig or kubeconfig_path()
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=str(path), client_configuration=configuration,
                                persist_config=False)
    except (ConfigException, OSError, ValueError) as exc:
        raise ComponentError(f"the kubeconfig {path} is unusable: {exc}. Fix: "
                             f"{SETUP_FIX}") from exc
    configuration.retries = 0  # an unreachable cluster fails at once, not after backoffs
    api_client = client.ApiClient(configuration)
    core = client.CoreV1Api(api_client)
    cluster = Cluster(path, core, api_client)
    try:
        cluster.call(f"a first request (the cluster of {path})",
                     lambda: core.list_namespace(limit=1, _request_timeout=timeout))
    except ComponentError as exc:
        api_client.close()
        raise ComponentError(f"the Kubernetes cluster of {path} is unreachable: {exc}. Fix: "
                             f"{SETUP_FIX}") from exc
    return cluster
