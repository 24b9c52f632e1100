"""Checks a running riskid server the way grpcurl would, using only server reflection.

    pip install grpcio grpcio-reflection grpcio-health-checking
    python3 tools/reflection_check.py "$RISKID_KEY" [127.0.0.1:50051] [110001] [2023/24] [SUMMER]

Lists the services, calls RiskService/ListSchoolRisks dynamically (no generated code), checks
health, and shows that a call without a key is refused.
"""
import sys, json, grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf import message_factory, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
addr = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:50051"
school, year, term = (sys.argv[3:6] + ["110001", "2023/24", "SUMMER"][len(sys.argv[3:6]):])[:3]
ch = grpc.insecure_channel(addr)
db = ProtoReflectionDescriptorDatabase(ch)
services = db.get_services()
print("services:", sorted(services))
pool = DescriptorPool(db)
svc = pool.FindServiceByName("riskid.v1.RiskService")
m = svc.FindMethodByName("ListSchoolRisks")
Req = message_factory.GetMessageClass(m.input_type); Resp = message_factory.GetMessageClass(m.output_type)
req = json_format.Parse(json.dumps({"school_term": {"school_urn": school, "academic_year": year, "term": term}, "band": "HIGH", "page_size": 2}), Req())
call = ch.unary_unary("/riskid.v1.RiskService/ListSchoolRisks", request_serializer=Req.SerializeToString, response_deserializer=Resp.FromString)
resp = call(req, metadata=[("authorization", "Bearer " + sys.argv[1])])
d = json_format.MessageToDict(resp)
print("model", d["modelId"], "risks", len(d["risks"]), "first reason:", d["risks"][0]["outcomes"][0]["reasons"][0]["text"][:60])
print("health:", health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest()).status)
try:
    call(req)
except grpc.RpcError as e:
    print("no key:", e.code())
