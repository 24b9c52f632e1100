"""riskid's API as clients nobody at riskid wrote see it: grpcio with no generated code
(server reflection only), grpcio-status, and NVIDIA's tritonclient for the Open Inference
Protocol.

    tools/setup.sh                      # once: tools/.venv with the clients
    tools/.venv/bin/python tools/api_check.py ADDR SCHOOL_URN SCHOOL_KEY SERVICE_KEY

Checks, failing loudly on the first surprise:
  1. health answers SERVING without a key;
  2. reflection lists riskid.v1 and inference.GRPCInferenceService, and serves
     google.rpc.BadRequest and ErrorInfo (so grpcurl can decode error details);
  3. a rejected feed's status decodes with grpcio-status: ErrorInfo FEED_REJECTED and a
     BadRequest whose field paths are `lines[N].column`;
  4. gzip works both ways;
  5. tritonclient sees the server live and ready, reads the model's metadata, and ModelInfer
     (raw contents, read with as_numpy) gives exactly the probabilities ScoreRecords gives.
`tools/run_checks.sh` starts a server on the demo data and runs this (and the README's grpcurl
lines) against it.
"""

import csv
import json
import os
import sys

import grpc
import numpy as np
import tritonclient.grpc as triton
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

addr, urn, school_key, service_key = sys.argv[1:5]
fixtures = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
ch = grpc.insecure_channel(addr)


def ok(what):
    print(f"ok  {what}")


# 1. Health, no key.
status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()).status
assert status == health_pb2.HealthCheckResponse.SERVING, status
ok("health: SERVING without a key")

# 2. Reflection.
db = ProtoReflectionDescriptorDatabase(ch)
services = set(db.get_services())
for s in ["riskid.v1.FeedService", "riskid.v1.RiskService", "riskid.v1.CohortService", "inference.GRPCInferenceService"]:
    assert s in services, (s, services)
pool = descriptor_pool.DescriptorPool(db)
for symbol in ["google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.RetryInfo"]:
    pool.FindMessageTypeByName(symbol)
ok(f"reflection: {len(services)} services; google.rpc error details are served")


def method(full):
    svc, name = full.rsplit("/", 1)
    m = pool.FindServiceByName(svc).FindMethodByName(name)
    return m, message_factory.GetMessageClass(m.input_type), message_factory.GetMessageClass(m.output_type)


def auth(key):
    return [("authorization", "Bearer " + key)]


# 3. A rejected feed, decoded with grpcio-status.
_, SubmitReq, SubmitResp = method("riskid.v1.FeedService/SubmitFeed")
with open(os.path.join(fixtures, "invalid-feed.csv"), "rb") as f:
    body = f.read()
header = {"header": {"school_term": {"school_urn": urn, "academic_year": "2025/26", "term": "TERM_NAME_SPRING"}, "dry_run": True}}
parts = [json_format.ParseDict(header, SubmitReq()), SubmitReq(csv_chunk=body)]
submit = ch.stream_unary("/riskid.v1.FeedService/SubmitFeed", request_serializer=SubmitReq.SerializeToString,
                         response_deserializer=SubmitResp.FromString)
try:
    submit(iter(parts), metadata=auth(school_key))
    raise SystemExit("the invalid feed was accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.code()
    st = rpc_status.from_call(e)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    for d in st.details:
        if d.Is(info.DESCRIPTOR):
            d.Unpack(info)
        elif d.Is(bad.DESCRIPTOR):
            d.Unpack(bad)
    assert (info.reason, info.domain) == ("FEED_REJECTED", "riskid"), info
    assert info.metadata["error_count"] == "9", info.metadata
    fields = [v.field for v in bad.field_violations]
    assert all(f.startswith("lines[") for f in fields) and "lines[3].ncyear" in fields, fields
    ok(f"rejected feed: ErrorInfo {info.reason}, BadRequest {len(fields)} violations, e.g. {fields[1]} {bad.field_violations[1].reason}")

# 4. gzip, both ways.
_, ListReq, ListResp = method("riskid.v1.FeedService/ListSubmissions")
gz = grpc.insecure_channel(addr, compression=grpc.Compression.Gzip)
lst = gz.unary_unary("/riskid.v1.FeedService/ListSubmissions", request_serializer=ListReq.SerializeToString,
                     response_deserializer=ListResp.FromString)
resp = lst(ListReq(page_size=3), metadata=auth(school_key), compression=grpc.Compression.Gzip)
assert len(resp.submissions) == 3, resp
ok("gzip: a compressed request and reply")

# 5. The Open Inference Protocol with tritonclient, against ScoreRecords.
with open(os.path.join(fixtures, "valid-feed.csv"), newline="") as f:
    rows = list(csv.DictReader(f))
columns = list(rows[0].keys())
term = {"school_urn": urn, "academic_year": "2025/26", "term": "TERM_NAME_SPRING"}
counts = {"school_moves", "sessions_possible", "sessions_authorised", "sessions_unauthorised", "absence_spells",
          "suspensions", "suspension_sessions", "behaviour_incidents", "sdq_emotional", "sdq_conduct",
          "sdq_hyperactivity", "sdq_peer", "sdq_prosocial"}
flags = {"fsm", "eal", "young_carer", "permanent_exclusion", "mh_referral"}


def record(row):
    out = {}
    for k, v in row.items():
        if v == "":
            continue
        out[k] = int(v) if k in counts else (v == "Y") if k in flags else v
    return out


_, ScoreReq, ScoreResp = method("riskid.v1.RiskService/ScoreRecords")
score = ch.unary_unary("/riskid.v1.RiskService/ScoreRecords", request_serializer=ScoreReq.SerializeToString,
                       response_deserializer=ScoreResp.FromString)
req = json_format.ParseDict({"pupils": [{"school_term": term, "record": record(r)} for r in rows]}, ScoreReq())
expected = score(req, metadata=auth(service_key))

tc = triton.InferenceServerClient(url=addr)
assert tc.is_server_live() and tc.is_server_ready() and tc.is_model_ready("riskid")
meta = tc.get_model_metadata("riskid")
assert meta.versions == [expected.model_id], (meta.versions, expected.model_id)
inputs = []
values = {"school_urn": [urn] * len(rows), "academic_year": ["2025/26"] * len(rows), "term": ["spring"] * len(rows)}
values.update({c: [r[c] for r in rows] for c in columns})
for name, vals in values.items():
    t = triton.InferInput(name, [len(rows)], "BYTES")
    t.set_data_from_numpy(np.array([v.encode() for v in vals], dtype=np.object_))
    inputs.append(t)
outputs = [triton.InferRequestedOutput(n) for n in ["p_persistent_absence", "p_suspension", "p_mh_referral", "band_suspension"]]
result = tc.infer("riskid", inputs, outputs=outputs, headers={"authorization": "Bearer " + service_key})
for i, name in enumerate(["p_persistent_absence", "p_suspension", "p_mh_referral"]):
    got = result.as_numpy(name)
    want = np.array([r.outcomes[i].probability for r in expected.risks])
    assert got.dtype == np.float64 and np.array_equal(got, want), (name, got, want)
bands = result.as_numpy("band_suspension")
ok(f"tritonclient ModelInfer: {len(rows)} pupils, the same probabilities as ScoreRecords to the bit; bands {sorted(set(b.decode() for b in bands))}")
try:
    tc.infer("riskid", inputs)
    raise SystemExit("ModelInfer without a key was answered")
except triton.InferenceServerException as e:
    assert "UNAUTHENTICATED" in str(e.status()), e.status()
    ok("ModelInfer without a key: UNAUTHENTICATED")
print("all API checks passed")
