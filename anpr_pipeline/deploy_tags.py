"""Where steps run on Kubernetes: GPU steps on the GPU node pool, everything else on CPU nodes.

Production runs use the ``K8sRunLauncher`` (one pod per run, placed on the CPU pool by the
Helm values' ``runK8sConfig``) and, with ``ANPR_EXECUTOR=k8s``, the ``k8s_job_executor``
(one pod per step). dagster-k8s deep-merges a step's ``dagster-k8s/config`` op tag onto the
run launcher's ``runK8sConfig``, so the GPU steps below override the *same* node-label key
(``NODE_POOL_LABEL``) with the GPU pool's value, add the GPU taint's toleration and ask for
one ``nvidia.com/gpu``. The tests build the real step pod spec from these tags merged with
``deploy/helm/values.yaml`` and check the result, so the two files cannot drift apart.

On the embedded default (no Kubernetes) these tags are inert metadata.
"""

from __future__ import annotations

from typing import Any

# Label every node of a pool with this key; the value names the pool.
NODE_POOL_LABEL = "anpr.io/node-pool"
CPU_POOL = "cpu"
GPU_POOL = "gpu"
# The extended resource the NVIDIA device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
# GKE, AKS and the NVIDIA GPU operator taint GPU nodes with this key, so only pods that
# tolerate it (and so actually want a GPU) land there.
GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
]

USER_DEFINED_K8S_CONFIG_KEY = "dagster-k8s/config"

# Detection and OCR of one video: one GPU, and enough CPU to decode the video feeding it
# (decode is the CPU floor, see DESIGN §7).
GPU_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "2", "memory": "6Gi", GPU_RESOURCE: "1"},
            "limits": {"memory": "12Gi", GPU_RESOURCE: "1"},
        },
    },
    "pod_spec_config": {
        "nodeSelector": {NODE_POOL_LABEL: GPU_POOL},
        "tolerations": GPU_TOLERATIONS,
    },
}

# Merged into the op_tags of the GPU assets (frames_and_detections, plate_reads).
GPU_OP_TAGS: dict[str, Any] = {USER_DEFINED_K8S_CONFIG_KEY: GPU_K8S_CONFIG}

EXECUTORS = ("multiprocess", "in_process", "k8s")


def executor_for(name: str):
    """The executor for ``ANPR_EXECUTOR``; None keeps Dagster's default (multiprocess).

    ``k8s`` needs the ``dagster-k8s`` package and the ``K8sRunLauncher`` (Helm chart):
    each step becomes its own Kubernetes Job, so the tags above decide its node.
    """
    if name == "multiprocess":
        return None
    if name == "in_process":
        from dagster import in_process_executor

        return in_process_executor
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    raise ValueError(f"ANPR_EXECUTOR={name!r}: expected one of {', '.join(EXECUTORS)}")
