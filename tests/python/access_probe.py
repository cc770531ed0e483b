#!/usr/bin/env python3
"""A Python gRPC client of Troupe that makes the calls it is given and reports the answers.

The access tests use it to call the API the way a user's Python program would: the client is
generated at run time with grpcio-tools from the repository's ``proto/`` into a temporary
directory (as ``client_test.py`` does), and every call carries ``authorization: Bearer TOKEN``.

Usage (cwd = project root; ``--ca`` makes it TLS, otherwise the channel is plaintext):

    $TROUPE_PYTHON tests/python/access_probe.py --server 127.0.0.1:PORT \
        [--ca CA.pem] [--token TOKEN] [--proto proto] < calls.json

stdin is a JSON list of calls, made in order on one channel::

    [{"service": "ResourceService", "method": "Get", "request": {...}},
     {"service": "ResourceService", "method": "Watch", "request": {...}, "stream": true,
      "maxMessages": 10, "timeoutMs": 5000, "until": "EVENT_TYPE_BOOKMARK"},
     {"service": "PromotionService", "method": "Promote", "request": {...},
      "metadata": {"troupe-impersonate-user": "bob"}}]

Requests and answers are proto3 JSON (``google.protobuf.json_format``). For each call one JSON
line goes to stdout: ``{"code": N, "message": "...", "response": {...}}`` for a unary call and
``{"code": N, "message": "...", "messages": [...]}`` for a server stream, N being the gRPC
status code (0 when the probe ended a stream: after ``maxMessages``, after ``timeoutMs``, or
once a message's JSON contains the text ``until``). Exits 0 once every call was made, whatever
it answered, and 2 when the probe cannot run.
"""

import argparse
import glob
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading

import grpc
from google.protobuf import json_format

# A unary call or a stream with no deadline of its own ends after this long.
DEFAULT_TIMEOUT_S = 10.0


class SetupError(Exception):
    """The probe cannot run at all."""


def generate(proto_dir, out_dir):
    """Generates the Python client of every troupe/v1alpha1 proto into `out_dir`.

    Returns {service name: (stub class, {method name: (request class, server streaming)})}.
    """
    proto_dir = os.path.abspath(proto_dir)
    sources = sorted(
        os.path.relpath(p, proto_dir)
        for p in glob.glob(os.path.join(proto_dir, "troupe", "v1alpha1", "*.proto"))
    )
    if not sources:
        raise SetupError(f"no .proto files under {proto_dir}/troupe/v1alpha1")
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}",
        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *sources,
    ]
    result = subprocess.run(cmd, cwd=proto_dir, capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(f"protoc failed (exit {result.returncode}): {result.stderr}")
    sys.path.insert(0, out_dir)
    services = {}
    for source in sources:
        module = source[: -len(".proto")].replace(os.sep, ".")
        pb = importlib.import_module(module + "_pb2")
        pb_grpc = importlib.import_module(module + "_pb2_grpc")
        for service in pb.DESCRIPTOR.services_by_name.values():
            methods = {
                m.name: (
                    getattr(message_module(m.input_type), m.input_type.name),
                    m.server_streaming,
                )
                for m in service.methods
            }
            services[service.name] = (getattr(pb_grpc, f"{service.name}Stub"), methods)
    return services


def message_module(descriptor):
    """The generated module that defines the message `descriptor` describes."""
    return importlib.import_module(descriptor.file.name[: -len(".proto")].replace("/", ".") + "_pb2")


def to_json(message):
    """A message as proto3 JSON, every field written (as the Node probe writes them)."""
    try:
        return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf before 5.26 names the option differently
        return json_format.MessageToDict(message, including_default_value_fields=True)


def status_of(error):
    return {"code": error.code().value[0], "message": error.details() or ""}


def unary(method, request, metadata, call):
    try:
        response = method(request, metadata=metadata, timeout=call.get("timeoutMs", DEFAULT_TIMEOUT_S * 1000) / 1000)
    except grpc.RpcError as e:
        return status_of(e)
    return {"code": 0, "message": "", "response": to_json(response)}


def server_stream(method, request, metadata, call):
    stream = method(request, metadata=metadata)
    messages = []
    ended_by_probe = threading.Event()

    def stop():
        ended_by_probe.set()
        stream.cancel()

    timer = threading.Timer(call.get("timeoutMs", DEFAULT_TIMEOUT_S * 1000) / 1000, stop)
    timer.start()
    try:
        for message in stream:
            messages.append(to_json(message))
            reached = call.get("maxMessages") and len(messages) >= call["maxMessages"]
            matched = call.get("until") and call["until"] in json.dumps(messages[-1])
            if reached or matched:
                stop()
                break
        result = {"code": 0, "message": ""}
    except grpc.RpcError as e:
        if ended_by_probe.is_set() and e.code() == grpc.StatusCode.CANCELLED:
            result = {"code": 0, "message": ""}
        else:
            result = status_of(e)
    finally:
        timer.cancel()
    result["messages"] = messages
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="address of the server, host:port")
    parser.add_argument("--ca", default="", help="PEM of the CA to trust; plaintext without")
    parser.add_argument("--token", default="", help="bearer token sent with every call")
    parser.add_argument("--proto", default="proto", help="directory holding troupe/v1alpha1")
    args = parser.parse_args()
    try:
        calls = json.load(sys.stdin)
    except ValueError as e:
        print(f"probe: stdin is not a JSON list of calls: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="troupe-access-probe-") as gen_dir:
        try:
            services = generate(args.proto, gen_dir)
        except (SetupError, ImportError) as e:
            print(f"probe: {e}", file=sys.stderr)
            return 2
        if args.ca:
            with open(args.ca, "rb") as f:
                channel = grpc.secure_channel(args.server, grpc.ssl_channel_credentials(f.read()))
        else:
            channel = grpc.insecure_channel(args.server)
        with channel:
            for call in calls:
                if call["service"] not in services:
                    print(f"probe: no service {call['service']}", file=sys.stderr)
                    return 2
                stub_class, methods = services[call["service"]]
                if call["method"] not in methods:
                    print(f"probe: no method {call['service']}/{call['method']}", file=sys.stderr)
                    return 2
                request_class, streaming = methods[call["method"]]
                request = json_format.ParseDict(call.get("request", {}), request_class())
                metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
                for key, value in (call.get("metadata") or {}).items():
                    for v in value if isinstance(value, list) else [value]:
                        metadata.append((key, str(v)))
                method = getattr(stub_class(channel), call["method"])
                run = server_stream if streaming else unary
                print(json.dumps(run(method, request, metadata, call)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
