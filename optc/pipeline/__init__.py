"""Passes and the pass manager: ``Pass``, ``PassContext``, ``Pipeline``, instruments.

    from optc.pipeline import Pipeline, PassContext, VerifyInstrument
    pipeline = Pipeline.parse("fold-constants,fold-batchnorm,eliminate-dead-code")
    result = pipeline.run(graph, PassContext(), instruments=[VerifyInstrument()])
    result.graph, result.records

Passes are discovered through the ``optc.passes`` entry-point group
(``available_passes()``); optc's own passes are registered the same way.
"""

from optc.pipeline.base import PASS_NAME, Pass, pass_class_problems
from optc.pipeline.context import AnalysisCache, AnalysisFn, PassContext, ProgressFn
from optc.pipeline.discovery import (
    PASS_GROUP,
    PassRegistry,
    available_pass_plugins,
    available_passes,
    check_registry,
    lookup_pass,
)
from optc.pipeline.errors import PassError, PassVerificationError, PipelineSyntaxError
from optc.pipeline.grammar import RawPass, split_pipeline
from optc.pipeline.instruments import (
    Instrument,
    InstrumentLike,
    IRDumpInstrument,
    TimingInstrument,
    VerifyInstrument,
)
from optc.pipeline.manager import (
    PassRecord,
    Pipeline,
    PipelineResult,
    parse_pipeline,
    pipeline_from_specs,
    run_pass,
)
from optc.pipeline.options import OptionSpec
from optc.pipeline.toml_form import (
    load_pipeline_toml,
    parse_pipeline_toml,
    pipeline_from_data,
    pipeline_to_toml,
)

__all__ = [
    "PASS_GROUP", "PASS_NAME", "AnalysisCache", "AnalysisFn", "IRDumpInstrument", "Instrument",
    "InstrumentLike", "OptionSpec", "Pass", "PassContext", "PassError", "PassRecord",
    "PassRegistry", "PassVerificationError", "Pipeline", "PipelineResult", "PipelineSyntaxError",
    "ProgressFn", "RawPass", "TimingInstrument", "VerifyInstrument", "available_pass_plugins",
    "available_passes", "check_registry", "load_pipeline_toml", "lookup_pass", "parse_pipeline",
    "parse_pipeline_toml", "pass_class_problems", "pipeline_from_data", "pipeline_from_specs",
    "pipeline_to_toml", "run_pass", "split_pipeline",
]
