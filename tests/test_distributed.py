"""The pieces of a multi-process run that need no second process: when a process joins one, how the
mesh is laid over hosts, which batch rows a process reads, and what `lmx launch local` gives each
process (tests/test_multiprocess.py runs real processes)."""

import jax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from lmx.cluster.local import cpu_devices, process_environments
from lmx.config import MeshConfig
from lmx.errors import ClusterError, ConfigError
from lmx.parallel import make_mesh
from lmx.parallel.distributed import DistributedConfig, detected_cluster, initialize
from lmx.parallel.mapping import process_rows, step_batch_sharding
from lmx.parallel.mesh import host_split


def mesh_config(shape, data_hosts=-1) -> MeshConfig:
    data, fsdp, tensor = shape
    return MeshConfig(data=data, fsdp=fsdp, tensor=tensor, data_hosts=data_hosts)


SLURM_STEP = {
    "SLURM_JOB_ID": "7",
    "SLURM_STEP_NODELIST": "node[1-2]",
    "SLURM_NTASKS": "16",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "3",
}


@pytest.mark.parametrize(
    ("env", "cluster"),
    [
        (SLURM_STEP, "SLURM"),
        ({**SLURM_STEP, "SLURM_NTASKS": "1"}, None),  # srun -n 1: one process is the whole run
        ({k: v for k, v in SLURM_STEP.items() if k != "SLURM_STEP_NODELIST"}, None),  # the batch script, not srun
        ({"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}, "Open MPI"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "0"}, "Kubernetes"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, None),  # a pod, but not of an Indexed Job
        ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, "Cloud TPU"),
        ({}, None),
    ],
)
def test_a_cluster_is_detected_only_when_it_launched_several_processes(env, cluster):
    assert detected_cluster(env) == cluster


def test_explicit_flags_go_together_and_are_checked():
    with pytest.raises(ConfigError, match="--num-processes, --process-id missing"):
        DistributedConfig(coordinator="host:1")
    with pytest.raises(ConfigError, match="--process-id=2, --num-processes=2"):
        DistributedConfig("host:1", 2, 2)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        DistributedConfig("host", 2, 0)
    # One process named explicitly, or nothing given outside a cluster: nothing to join.
    assert initialize(DistributedConfig("127.0.0.1:1", 1, 0)) is False
    assert initialize(DistributedConfig()) is False


@pytest.mark.parametrize(
    ("shape", "processes", "data_hosts", "split"),
    [
        ((2, 2, 2), 2, -1, (2, 1, 1)),  # 2 x 4 devices: data across hosts
        ((2, 2, 2), 4, -1, (2, 2, 1)),  # 4 x 2: data, then fsdp, across hosts; tensor within
        ((8, 1, 1), 4, -1, (4, 1, 1)),
        ((2, 4, 1), 4, 1, (1, 4, 1)),  # mesh.data_hosts=1: data within hosts, fsdp across them
    ],
)
def test_tensor_stays_within_a_host_and_data_spans_hosts_first(shape, processes, data_hosts, split):
    assert host_split(mesh_config(shape, data_hosts), shape, processes) == split


@pytest.mark.parametrize(
    ("shape", "processes", "data_hosts", "message"),
    [
        ((1, 1, 8), 2, -1, "mesh.tensor=8 must fit within one process"),
        ((2, 2, 2), 4, 4, "mesh.data_hosts=4 must divide both mesh.data=2"),
        ((2, 2, 1), 4, 1, "leave 4 host groups for mesh.fsdp=2"),
    ],
)
def test_a_mesh_that_cannot_be_laid_over_the_hosts_names_the_sizes(shape, processes, data_hosts, message):
    with pytest.raises(ClusterError, match=message):
        host_split(mesh_config(shape, data_hosts), shape, processes)


def test_one_process_reads_every_row_and_the_mesh_is_unchanged():
    mesh = make_mesh(mesh_config((2, 2, 2)))
    assert mesh.devices.flatten().tolist() == jax.devices()
    assert process_rows(step_batch_sharding(mesh), 16) == (0, 16)
    assert process_rows(NamedSharding(mesh, PartitionSpec()), 16) == (0, 16)  # replicated


def test_the_local_launcher_splits_the_devices_among_the_processes():
    assert cpu_devices({"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}) == 8
    assert cpu_devices({"JAX_NUM_CPU_DEVICES": "6", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}) == 6
    envs = process_environments(4, None, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, gpus=0)
    assert [e["JAX_NUM_CPU_DEVICES"] for e in envs] == ["2"] * 4
    assert [e["JAX_NUM_CPU_DEVICES"] for e in process_environments(2, None, {}, gpus=0)] == ["1", "1"]
    gpus = process_environments(2, None, {}, gpus=8)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in gpus] == ["0,1,2,3", "4,5,6,7"]
    with pytest.raises(ClusterError, match="this machine has 8 GPUs"):
        process_environments(3, 3, {}, gpus=8)
