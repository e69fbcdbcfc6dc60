"""Code generation with Apache TVM: IR -> Relax -> compiled library; artifacts; run; time.

``build`` compiles a graph for a TVM target, ``write_artifact`` / ``load_artifact``
store and verify it, ``run`` executes it on numpy feeds, ``measure`` times it here and
``measure_remote`` times it on a device behind TVM's RPC tracker. Importing this
package imports TVM (seconds) and sizes TVM's CPU thread pool to this machine's cores
(``host_cpu.size_thread_pool``: TVM's own default is one thread on a 2-vCPU x86 VM).
"""

from optc.codegen.artifact import LoadedArtifact, load_artifact, write_artifact
from optc.codegen.build import BuiltModule, build
from optc.codegen.host_cpu import host_target, size_thread_pool
from optc.codegen.manifest import Manifest, read_manifest
from optc.codegen.measure import Timing, measure
from optc.codegen.relax_pipeline import ModuleHook, relax_pipeline
from optc.codegen.remote import measure_remote, run_remote
from optc.codegen.run import run
from optc.codegen.signature import TensorSpec

size_thread_pool()  # before any TVM module runs: the pool is sized once, on first use

__all__ = [
    "BuiltModule", "LoadedArtifact", "Manifest", "ModuleHook", "TensorSpec", "Timing", "build",
    "host_target", "load_artifact", "measure", "measure_remote", "read_manifest",
    "relax_pipeline", "run", "run_remote", "write_artifact",
]
