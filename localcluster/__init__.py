"""A real local Kubernetes control plane for tests and the demo.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as plain local
processes; the binaries are built from their Go modules into a cache outside the clone.
"""
