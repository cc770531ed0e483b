#!/usr/bin/env python3
"""Troupe's gRPC API works from a client generated in another language.

This script proves that a non-Rust program needs nothing but Troupe's .proto files to use the
API: it generates a Python client with grpcio-tools from ``proto/troupe/v1alpha1``, then,
against a freshly started and empty Troupe server, it

1. applies every document of the examples YAML file as a typed ``Resource`` (the oneof field is
   the lowerCamel kind, the inner document is the YAML object as-is) and expects CREATED;
2. reads each object back with ``Get`` and checks that its spec round-trips unchanged and that
   the server filled in ``metadata.uid`` and ``metadata.resourceVersion``;
3. lists the components of namespace ``acme`` and expects exactly those of the examples;
4. applies a Project with an invalid name and expects INVALID_ARGUMENT naming ``metadata.name``;
5. deletes the Project ``shop`` and expects its Component and Workload to be deleted with it.

Usage (cwd = project root; the Rust integration test runs it this way):

    TROUPE_TOKEN=... $TROUPE_PYTHON tests/python/client_test.py --server 127.0.0.1:PORT \
        --ca DATA_DIR/pki/ca.crt --proto proto --examples examples/platform.yaml

With ``--ca`` the channel is TLS trusting that CA (``grpc.secure_channel``); without it,
plaintext. The token in ``TROUPE_TOKEN``, if set, goes with every call as
``authorization: Bearer TOKEN`` metadata.

Needs only the standard library, grpcio, grpcio-tools, protobuf and PyYAML. Exits 0 when every
check passes, 1 when a check fails and 2 when the test cannot run at all (bad arguments, code
generation or import failure, server unreachable). The last line of output is a summary such as
``python client: 42 passed, 0 failed``.
"""

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile

import grpc
import yaml
from google.protobuf import json_format

# Deadline for every RPC, so that a wedged server fails the test instead of hanging it.
RPC_TIMEOUT_S = 10.0

# The namespace, project and component of the examples that the later checks work on.
NAMESPACE = "acme"
PROJECT = "shop"


class SetupError(Exception):
    """The test could not run at all (as opposed to a check failing)."""


class Checks:
    """Records named pass/fail checks and prints each as it is made."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        """Record one check; `detail` explains a failure. Returns `ok`."""
        if ok:
            self.passed += 1
            print(f"ok    {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""))
        return ok

    def summary(self):
        return f"python client: {self.passed} passed, {self.failed} failed"


# --- code generation ---------------------------------------------------------------------------


def generate_client(proto_dir, out_dir):
    """Runs grpcio-tools' protoc over proto/troupe/v1alpha1/*.proto and imports the result.

    Returns the (resource_service_pb2, resource_service_pb2_grpc) modules.
    """
    proto_dir = os.path.abspath(proto_dir)
    sources = sorted(
        os.path.relpath(p, proto_dir)
        for p in glob.glob(os.path.join(proto_dir, "troupe", "v1alpha1", "*.proto"))
    )
    if not sources:
        raise SetupError(f"no .proto files under {proto_dir}/troupe/v1alpha1")
    # `python -m grpc_tools.protoc` adds grpcio-tools' bundled include directory itself, so the
    # google/protobuf/*.proto imports resolve without a system protoc.
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    result = subprocess.run(cmd, cwd=proto_dir, capture_output=True, text=True)
    if result.returncode != 0:
        raise SetupError(
            f"protoc failed (exit {result.returncode}): {' '.join(cmd)}\n{result.stderr}"
        )

    # protoc writes troupe/v1alpha1/*_pb2.py without __init__.py files; Python 3 imports those
    # directories as implicit namespace packages. Put the output first on the path and make sure
    # the modules really come from it (not from some other `troupe` package).
    sys.path.insert(0, out_dir)
    try:
        from troupe.v1alpha1 import resource_service_pb2 as pb
        from troupe.v1alpha1 import resource_service_pb2_grpc as pb_grpc
    except ImportError as e:
        raise SetupError(f"cannot import the generated client: {e}") from e
    for module in (pb, pb_grpc):
        origin = os.path.realpath(module.__file__)
        if not origin.startswith(os.path.realpath(out_dir) + os.sep):
            raise SetupError(f"{module.__name__} was imported from {origin}, not from {out_dir}")
    return pb, pb_grpc


# --- the connection ----------------------------------------------------------------------------


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    """Call details a client interceptor can build (grpc's own are read-only)."""


class BearerToken(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer TOKEN`` to the metadata of every unary call."""

    def __init__(self, token):
        self.header = ("authorization", f"Bearer {token}")

    def intercept_unary_unary(self, continuation, details, request):
        details = _CallDetails(
            details.method,
            details.timeout,
            list(details.metadata or []) + [self.header],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        return continuation(details, request)


def open_channel(args):
    """The channel to the server: TLS trusting ``--ca`` when given, with the token if any."""
    if args.ca:
        with open(args.ca, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.server, credentials)
    else:
        channel = grpc.insecure_channel(args.server)
    token = os.environ.get("TROUPE_TOKEN", "").strip()
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(token))
    return channel


# --- helpers -----------------------------------------------------------------------------------


def lower_camel(kind):
    """`DataPlane` -> `dataPlane`: the JSON name of a kind's field in the Resource oneof."""
    return kind[:1].lower() + kind[1:]


def normalize(value):
    """Makes a JSON-like value comparable across a protobuf round trip.

    google.protobuf.Struct stores every number as a double, so an integer from YAML comes back
    as a float: integral floats become ints. Booleans are left alone (True is not 1 here).
    """
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def canonical(value):
    """Type-strict, order-independent text of a JSON-like value, for comparing and printing."""
    return json.dumps(normalize(value), sort_keys=True)


def typed_object(resource):
    """The object set in a Resource's oneof, or None."""
    which = resource.WhichOneof("object")
    return getattr(resource, which) if which else None


def ref(kind, namespace, name):
    return f"{kind} {namespace + '/' if namespace else ''}{name}"


def rpc_error(e):
    return f"{e.code().name}: {e.details()}"


# --- the checks --------------------------------------------------------------------------------


def run(args, checks):
    with open(args.examples) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if not docs:
        raise SetupError(f"no documents in {args.examples}")

    with tempfile.TemporaryDirectory(prefix="troupe-pyclient-") as gen_dir:
        pb, pb_grpc = generate_client(args.proto, gen_dir)
        print(f"generated the Python client from {args.proto} into {gen_dir}")

        with open_channel(args) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
            except grpc.FutureTimeoutError:
                raise SetupError(f"cannot connect to the Troupe server at {args.server}")
            stub = pb_grpc.ResourceServiceStub(channel)

            apply_examples(stub, pb, docs, checks)
            get_examples(stub, pb, docs, checks)
            list_components(stub, pb, docs, checks)
            reject_bad_name(stub, pb, checks)
            delete_project_cascades(stub, pb, docs, checks)


def apply_examples(stub, pb, docs, checks):
    """1. Every example document applies as a typed Resource and is CREATED."""
    for doc in docs:
        kind, meta = doc["kind"], doc["metadata"]
        what = ref(kind, meta.get("namespace", ""), meta["name"])
        try:
            resource = json_format.ParseDict({lower_camel(kind): doc}, pb.Resource())
        except json_format.ParseError as e:
            checks.check(f"apply {what}", False, f"YAML does not parse as a Resource: {e}")
            continue
        try:
            reply = stub.Apply(pb.ApplyRequest(resource=resource), timeout=RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            checks.check(f"apply {what}", False, rpc_error(e))
            continue
        outcome = pb.ApplyOutcome.Name(reply.outcome)
        checks.check(
            f"apply {what} -> {outcome}",
            reply.outcome == pb.APPLY_OUTCOME_CREATED,
            "expected APPLY_OUTCOME_CREATED",
        )


def get_examples(stub, pb, docs, checks):
    """2. Every object reads back with its spec unchanged and server-written metadata."""
    for doc in docs:
        kind, meta = doc["kind"], doc["metadata"]
        namespace = meta.get("namespace", "")
        what = ref(kind, namespace, meta["name"])
        try:
            reply = stub.Get(
                pb.GetRequest(kind=kind, namespace=namespace, name=meta["name"]),
                timeout=RPC_TIMEOUT_S,
            )
        except grpc.RpcError as e:
            checks.check(f"get {what}", False, rpc_error(e))
            continue
        obj = typed_object(reply.resource)
        if not checks.check(
            f"get {what}: typed as {kind}",
            obj is not None and obj.kind == kind
            and reply.resource.WhichOneof("object")
            == pb.Resource.DESCRIPTOR.fields_by_camelcase_name[lower_camel(kind)].name,
            f"got resource {json_format.MessageToDict(reply.resource)}",
        ):
            continue
        got, want = json_format.MessageToDict(obj.spec), doc.get("spec", {})
        checks.check(
            f"get {what}: spec round-trips",
            canonical(got) == canonical(want),
            f"\n        sent: {canonical(want)}\n         got: {canonical(got)}",
        )
        checks.check(
            f"get {what}: uid and resourceVersion set",
            obj.metadata.uid != "" and obj.metadata.resource_version > 0,
            f"uid={obj.metadata.uid!r} resourceVersion={obj.metadata.resource_version}",
        )


def list_components(stub, pb, docs, checks):
    """3. Listing components in the namespace returns exactly the example components."""
    want = sorted(
        d["metadata"]["name"]
        for d in docs
        if d["kind"] == "Component" and d["metadata"].get("namespace") == NAMESPACE
    )
    try:
        reply = stub.List(
            pb.ListRequest(kind="components", namespace=NAMESPACE), timeout=RPC_TIMEOUT_S
        )
    except grpc.RpcError as e:
        checks.check(f"list components in {NAMESPACE}", False, rpc_error(e))
        return
    items = [typed_object(r) for r in reply.items]
    got = sorted(o.metadata.name if o is not None else "<empty>" for o in items)
    checks.check(
        f"list components in {NAMESPACE} -> {got}",
        got == want
        and all(r.WhichOneof("object") == "component" for r in reply.items)
        and not reply.next_page_token,
        f"expected exactly {want} on one page",
    )


def reject_bad_name(stub, pb, checks):
    """4. An invalid name is INVALID_ARGUMENT naming metadata.name, and nothing is stored."""
    bad = {
        "project": {
            "apiVersion": "troupe.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": "Bad_Name", "namespace": NAMESPACE},
            "spec": {"deploymentPipelineRef": "default"},
        }
    }
    request = pb.ApplyRequest(resource=json_format.ParseDict(bad, pb.Resource()))
    try:
        stub.Apply(request, timeout=RPC_TIMEOUT_S)
        checks.check("apply Project Bad_Name is rejected", False, "the server accepted it")
    except grpc.RpcError as e:
        checks.check(
            f"apply Project Bad_Name -> {rpc_error(e)}",
            e.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata.name" in (e.details() or ""),
            "expected INVALID_ARGUMENT mentioning metadata.name",
        )
    expect_not_found(stub, pb, checks, "Project", NAMESPACE, "Bad_Name")


def delete_project_cascades(stub, pb, docs, checks):
    """5. Deleting the project also deletes its component(s) and their workload(s)."""
    children = [
        d for d in docs
        if d["kind"] in ("Component", "Workload")
        and d["metadata"].get("namespace") == NAMESPACE
        and d["spec"].get("owner", {}).get("projectName") == PROJECT
    ]
    try:
        reply = stub.Delete(
            pb.DeleteRequest(kind="Project", namespace=NAMESPACE, name=PROJECT),
            timeout=RPC_TIMEOUT_S,
        )
    except grpc.RpcError as e:
        checks.check(f"delete Project {NAMESPACE}/{PROJECT}", False, rpc_error(e))
        return
    deleted = typed_object(reply.resource)
    checks.check(
        f"delete Project {NAMESPACE}/{PROJECT} returns the project",
        reply.resource.WhichOneof("object") == "project" and deleted.metadata.name == PROJECT,
        f"got {json_format.MessageToDict(reply.resource)}",
    )
    got = sorted((r.kind, r.namespace, r.name) for r in reply.cascaded)
    want = sorted((d["kind"], NAMESPACE, d["metadata"]["name"]) for d in children)
    checks.check(
        f"delete Project {NAMESPACE}/{PROJECT} cascades to {got}",
        got == want,
        f"expected exactly {want}",
    )
    expect_not_found(stub, pb, checks, "Project", NAMESPACE, PROJECT)
    for d in children:
        expect_not_found(stub, pb, checks, d["kind"], NAMESPACE, d["metadata"]["name"])


def expect_not_found(stub, pb, checks, kind, namespace, name):
    what = f"get {ref(kind, namespace, name)}"
    try:
        stub.Get(pb.GetRequest(kind=kind, namespace=namespace, name=name), timeout=RPC_TIMEOUT_S)
        checks.check(f"{what} -> NOT_FOUND", False, "the object exists")
    except grpc.RpcError as e:
        checks.check(
            f"{what} -> {e.code().name}", e.code() == grpc.StatusCode.NOT_FOUND, rpc_error(e)
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="address of the server, host:port")
    parser.add_argument("--ca", help="PEM file of the CA to trust the server by (TLS)")
    parser.add_argument("--proto", required=True, help="directory holding troupe/v1alpha1/*.proto")
    parser.add_argument("--examples", required=True, help="multi-document YAML of example objects")
    args = parser.parse_args()

    checks = Checks()
    try:
        run(args, checks)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        print(checks.summary())
        return 2
    print(checks.summary())
    return 0 if checks.failed == 0 and checks.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
