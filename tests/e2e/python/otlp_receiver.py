"""A small OTLP/HTTP trace receiver for the tracing end-to-end test (test_tracing.py).

It accepts ``POST /v1/traces`` with an ``ExportTraceServiceRequest`` protobuf body (the
``http/protobuf`` OTLP transport, optionally gzip-compressed), answers with an empty
``ExportTraceServiceResponse``, and keeps every span it received, flattened to a dict:
``trace_id``, ``span_id``, ``parent_span_id`` (hex), ``name``, ``kind`` (``SERVER``,
``CLIENT``, ...), ``attributes`` (plain Python values), ``status`` (``UNSET``, ``OK``,
``ERROR``) and ``resource`` (the resource's attributes). The raw request bodies are kept too.

Used in-process (``OtlpReceiver().start()``; its ``endpoint`` is the base URL to put in
``OTEL_EXPORTER_OTLP_ENDPOINT``) or standalone (``python otlp_receiver.py``), which prints
``listening on <endpoint>`` and then one JSON line per span received, until interrupted. Only
the standard library and ``opentelemetry-proto`` (with ``protobuf``) are used. It listens on
127.0.0.1 only.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MAX_BODY = 16 * 1024 * 1024  # bytes; a larger export is refused with 413


def plain(value):
    """An OTLP ``AnyValue`` as a Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(pairs) -> dict:
    return {kv.key: plain(kv.value) for kv in pairs}


def flatten(request: ExportTraceServiceRequest) -> list[dict]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        "attributes": attributes(span.attributes),
                        "events": [e.name for e in span.events],
                        "status": Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        "resource": resource,
                    }
                )
    return spans


class OtlpReceiver:
    """The server and what it received; ``endpoint`` is its base URL once started."""

    def __init__(self):
        self.endpoint = ""
        self.bodies: list[bytes] = []  # every decoded request body, as received
        self._spans: list[dict] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None
        self.on_spans = None  # optional callable(list[dict]), called for each export

    def start(self) -> "OtlpReceiver":
        receiver = self

        class Handler(_Handler):
            sink = receiver

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        host, port = self._httpd.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "OtlpReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def spans(self) -> list[dict]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, predicate, timeout: float) -> list[dict]:
        """Waits (at most ``timeout`` seconds) until ``predicate(spans)`` is true; returns the
        spans then, or raises TimeoutError with what did arrive."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate(list(self._spans)):
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [(s["name"], s["trace_id"]) for s in self._spans]
                    raise TimeoutError(f"spans not received within {timeout}s; got {names}")
                self._arrived.wait(left)
            return list(self._spans)

    def _receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = flatten(request)
        with self._arrived:
            self.bodies.append(body)
            self._spans.extend(spans)
            self._arrived.notify_all()
        if self.on_spans is not None:
            self.on_spans(spans)


class _Handler(BaseHTTPRequestHandler):
    sink: OtlpReceiver

    def do_POST(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/") != "/v1/traces":
            return self._answer(404, b"")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self._answer(413, b"")
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        if "protobuf" not in self.headers.get("Content-Type", ""):
            return self._answer(415, b"")
        try:
            self.sink._receive(body)
        except Exception as err:  # a malformed export: the gateway sent something wrong
            return self._answer(400, str(err).encode())
        self._answer(200, ExportTraceServiceResponse().SerializeToString())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's naming)
        pass


def main() -> int:
    receiver = OtlpReceiver()
    receiver.on_spans = lambda spans: [print(json.dumps(s), flush=True) for s in spans]
    receiver.start()
    print(f"listening on {receiver.endpoint}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
