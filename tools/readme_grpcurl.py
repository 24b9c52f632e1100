"""Replays every `grpcurl` line of the README's "grpcurl against the demo data" block, as
written, against a running server: the same flags (-plaintext, -H, -d), the same JSON, the
same method, resolved through server reflection and proto3 JSON as grpcurl does. A line
ending in `# ERROR: Code` must fail with that gRPC code, and its details must decode.

    tools/.venv/bin/python tools/readme_grpcurl.py README.md   # with ANALYST, SCHOOL, LW, SERVICE set

grpcurl is a Go program and cannot be installed on riskid's build machines; this is the
closest honest check that the README's lines work: any flag, JSON or method grpcurl would
reject, this rejects too.
"""

import json
import os
import re
import shlex
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

readme = open(sys.argv[1]).read()
block = readme.split("### grpcurl against the demo data", 1)[1]
block = block.split("```sh", 2)[2].split("```", 1)[0]
lines = [l for l in block.splitlines() if l.strip().startswith("grpcurl ")]
assert len(lines) >= 15, f"only {len(lines)} grpcurl lines found"

pools = {}


def pool_for(addr):
    if addr not in pools:
        ch = grpc.insecure_channel(addr)
        db = ProtoReflectionDescriptorDatabase(ch)
        pools[addr] = (ch, db, descriptor_pool.DescriptorPool(db))
    return pools[addr]


def json_values(text):
    dec, i, out = json.JSONDecoder(), 0, []
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            break
        v, i = dec.raw_decode(text, i)
        out.append(v)
    return out


failures = 0
for n, line in enumerate(lines, 1):
    expect = None
    m = re.search(r"#\s*ERROR:\s*(\w+)\s*$", line)
    if m:
        expect = m.group(1)
        line = line[: m.start()]
    words = shlex.split(os.path.expandvars(line))
    assert words[0] == "grpcurl"
    headers, data, rest, i = [], None, [], 1
    while i < len(words):
        w = words[i]
        if w == "-plaintext":
            i += 1
        elif w == "-H":
            k, v = words[i + 1].split(":", 1)
            headers.append((k.strip().lower(), v.strip()))
            i += 2
        elif w == "-d":
            data = words[i + 1]
            i += 2
        elif w.startswith("-"):
            raise SystemExit(f"line {n}: flag {w} is not one this replay knows")
        else:
            rest.append(w)
            i += 1
    addr, target = rest[0], (rest[1] if len(rest) > 1 else None)
    ch, db, pool = pool_for(addr)
    if target == "list":
        services = sorted(db.get_services())
        print(f"[{n}] list -> {len(services)} services")
        continue
    svc_name, meth_name = target.rsplit("/", 1) if "/" in target else target.rsplit(".", 1)
    method = pool.FindServiceByName(svc_name).FindMethodByName(meth_name)
    Req = message_factory.GetMessageClass(method.input_type)
    Resp = message_factory.GetMessageClass(method.output_type)
    reqs = [json_format.ParseDict(v, Req()) for v in json_values(data)] if data else [Req()]
    path = f"/{svc_name}/{meth_name}"
    kw = dict(request_serializer=Req.SerializeToString, response_deserializer=Resp.FromString)
    try:
        if method.client_streaming:
            out = [ch.stream_unary(path, **kw)(iter(reqs), metadata=headers)]
        elif method.server_streaming:
            out = list(ch.unary_stream(path, **kw)(reqs[0], metadata=headers))
        else:
            out = [ch.unary_unary(path, **kw)(reqs[0], metadata=headers)]
        if expect:
            print(f"[{n}] {meth_name}: expected {expect}, got OK")
            failures += 1
            continue
        size = sum(len(json_format.MessageToJson(o)) for o in out)
        print(f"[{n}] {meth_name}: OK ({size} bytes of JSON)")
    except grpc.RpcError as e:
        code = "".join(p.capitalize() for p in e.code().name.split("_"))
        details = ""
        raw = dict(e.trailing_metadata() or ()).get("grpc-status-details-bin")
        if raw:
            st = status_pb2.Status.FromString(raw)
            kinds = []
            for d in st.details:
                type_name = d.type_url.rsplit("/", 1)[1]
                msg = message_factory.GetMessageClass(pool.FindMessageTypeByName(type_name))()
                d.Unpack(msg)
                kinds.append(f"{type_name.rsplit('.', 1)[1]} {json_format.MessageToJson(msg, indent=None)[:120]}")
            details = "; ".join(kinds)
        if code == expect and details:
            print(f"[{n}] {meth_name}: {code} as expected; details: {details}")
        else:
            print(f"[{n}] {meth_name}: FAILED {code}: {e.details()} (expected {expect or 'OK'}; details: {details or 'none'})")
            failures += 1
print(f"{len(lines)} grpcurl lines replayed, {failures} failed")
sys.exit(1 if failures else 0)
