"""The ``k8s`` runtime: the docker runtime's containers as pods on a Kubernetes cluster.

manifests.py  what a run becomes, as plain manifests: labels, hostAliases, affinity
api.py        the cluster connection (kubeconfig), API refusals as our errors
pods.py       create / wait ready / delete / exec of pods
forward.py    kubectl port-forward to 127.0.0.1, kept up while wanted
handles.py    a service, RabbitMQ and Kafka in pods (ServiceHandle, BrokerControl, ...)
runtime.py    K8sRuntime (the Runtime protocol): namespace, Services, pods, teardown
cleanup.py    deleting a run's namespace: close, the watchdog, `testbed gc`
"""

from testbed.runtime.k8s.cleanup import collect_k8s_garbage, dead_run_namespaces
from testbed.runtime.k8s.runtime import K8sRuntime

__all__ = ["K8sRuntime", "collect_k8s_garbage", "dead_run_namespaces"]
