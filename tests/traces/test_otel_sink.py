"""Live OpenTelemetry export through the SDK (issue 6, optional exporter)."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from tests.runtime._msgs import Boom, Counter, Get, Incr
from trioxide import traces
from trioxide.runtime import open_runtime

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
export = pytest.importorskip("opentelemetry.sdk.trace.export")


def test_spans_producer_consumer_links_and_errors() -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    sink = traces.otel.OtelSink(provider.get_tracer("test"), epoch_ns=10**18)

    async def main() -> None:
        async with open_runtime(tracer=traces.Tracer(sink)) as rt:
            ref = await rt.spawn(Counter, name="counter")
            await ref.tell(Incr(2))
            assert await ref.ask(Get()) == 2
            with pytest.raises(ValueError):
                await ref.ask(Boom("bad"))
            await trio.sleep(1.5)
            await ref.tell(Incr(1))
            assert await ref.ask(Get()) == 3  # handled (not drained at exit)

    trio.run(main, clock=MockClock(autojump_threshold=0))
    sink.close()
    spans = exporter.get_finished_spans()
    producers = [s for s in spans if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert len(producers) == len(consumers) == 5
    by_id = {s.context.span_id: s for s in producers}
    for c in consumers:
        assert c.links and c.links[0].context.span_id in by_id  # linked to its producer
        assert c.parent is not None and c.parent.span_id == c.links[0].context.span_id
        assert c.attributes["messaging.system"] == "trioxide"
    failed = [c for c in consumers if c.status.status_code is StatusCode.ERROR]
    assert len(failed) == 1 and "bad" in (failed[0].status.description or "")
    last = max(consumers, key=lambda s: s.start_time)
    assert last.start_time == 10**18 + int(1.5e9)  # virtual time on the given epoch
    assert sink.errors == 0
