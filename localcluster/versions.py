"""Every pinned version of the local control plane, in one place.

Changing a version here changes the cache key, so the next run builds a fresh set.
"""

from __future__ import annotations

import hashlib

KUBERNETES_VERSION = "v1.35.4"
# The staging modules (k8s.io/api, k8s.io/client-go, ...) are versioned v0.<minor>.<patch>.
KUBERNETES_STAGING_VERSION = "v0.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
HELM_VERSION = "v3.22.0"
# The OCI registry the release test pushes to (distribution's cmd/registry). It has its own
# cache entry (registry_cache_key), so pinning it never rebuilds the control-plane binaries.
REGISTRY_MODULE = "github.com/distribution/distribution/v3"
REGISTRY_VERSION = "v3.1.2"

# Commands built from k8s.io/kubernetes (one `go get` names all of them).
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
)
# The binaries a control plane needs (the kubelet is only for the real-node end-to-end test).
CONTROL_PLANE_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)


def cache_key() -> str:
    """A short name for this set of versions, used as the cache folder name."""
    joined = "|".join(
        [KUBERNETES_VERSION, ETCD_VERSION, KWOK_VERSION, HELM_VERSION, *KUBERNETES_COMMANDS]
    )
    digest = hashlib.sha256(joined.encode()).hexdigest()[:8]
    return f"k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}-kwok-{KWOK_VERSION}-{digest}"


def registry_cache_key() -> str:
    """The cache folder name of the registry binary (independent of cache_key())."""
    return f"registry-{REGISTRY_VERSION}"
