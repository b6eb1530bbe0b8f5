"""trioxide traces: the event model, tracer, sinks and trace files.

This package never imports ``runtime`` or ``actors``.
"""

from . import otel
from ._event import (
    KINDS,
    NO_PAYLOAD,
    OUTCOMES,
    RUN_LINES,
    SCHEMA_VERSION,
    RunBody,
    TraceEvent,
    TraceHeader,
)
from ._expand import expand, is_folded, records_of
from ._flight import FlightRecorder
from ._links import LinkStatistics, TraceLinks
from ._reader import LineError, TraceFile, follow_trace, iter_trace, read_trace
from ._runs import RUN_MAX_MESSAGES, HandleRun, SendRun
from ._sinks import JsonlFileSink, MemorySink, SinkStatistics, TraceFileObject
from ._tracer import Recorder, Sink, Tracer, describe, unwrap
from .diff import Divergence, causal_chain, first_divergence, format_divergence
from .export import to_otlp, to_perfetto, write_otlp, write_perfetto
from .merge import (
    MergedTrace,
    MergeSource,
    MergeStatistics,
    merge_files,
    merge_traces,
    write_trace,
)

__all__ = [
    "KINDS",
    "NO_PAYLOAD",
    "OUTCOMES",
    "RUN_LINES",
    "RUN_MAX_MESSAGES",
    "SCHEMA_VERSION",
    "Divergence",
    "FlightRecorder",
    "HandleRun",
    "JsonlFileSink",
    "LineError",
    "LinkStatistics",
    "MemorySink",
    "MergeSource",
    "MergeStatistics",
    "MergedTrace",
    "Recorder",
    "RunBody",
    "SendRun",
    "Sink",
    "SinkStatistics",
    "TraceEvent",
    "TraceFile",
    "TraceFileObject",
    "TraceHeader",
    "TraceLinks",
    "Tracer",
    "causal_chain",
    "describe",
    "expand",
    "first_divergence",
    "follow_trace",
    "format_divergence",
    "is_folded",
    "iter_trace",
    "merge_files",
    "merge_traces",
    "otel",
    "read_trace",
    "records_of",
    "to_otlp",
    "to_perfetto",
    "unwrap",
    "write_otlp",
    "write_perfetto",
    "write_trace",
]
