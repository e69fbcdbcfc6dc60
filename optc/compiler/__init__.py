"""``optc compile`` and ``optc measure`` as a Python API.

``compile_model(model, target, out)`` runs the whole way from a model to a checked,
timed artifact folder (see ``optc.compiler.api``); ``measure_artifact(out)`` times an
existing artifact here or on a device behind a TVM RPC tracker. Importing this
package does not import TVM; compiling does.
"""

from optc.compiler.api import CompileResult, compile_model
from optc.compiler.checking import OutputMismatchError
from optc.compiler.measuring import measure_artifact
from optc.compiler.rpc import RpcTracker

__all__ = ["CompileResult", "OutputMismatchError", "RpcTracker", "compile_model",
           "measure_artifact"]
