"""An independent gRPC client for tests/grpc_python.rs: Python's grpcio with
generic (codegen-free) stubs and hand-encoded protobuf, so the proxy is
checked against a second gRPC implementation. Prints one JSON document."""
import json
import sys

import grpc


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_request(user_id, count):
    u = user_id.encode()
    return b"\x0a" + varint(len(u)) + u + b"\x10" + varint(count)


def decode_reply(data):
    """RecommendReply: items (1, repeated string), model (2, string)."""
    items, model, i = [], "", 0
    while i < len(data):
        key = data[i]
        i += 1
        length, shift = 0, 0
        while True:
            b = data[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        value = data[i:i + length].decode()
        i += length
        if key == 0x0a:
            items.append(value)
        elif key == 0x12:
            model = value
    return {"items": items, "model": model}


def main():
    target = sys.argv[1]
    out = {}
    with grpc.insecure_channel(target) as channel:
        recommend = channel.unary_unary(
            "/reco.Recommender/Recommend",
            request_serializer=lambda r: r,
            response_deserializer=decode_reply,
        )
        reply, call = recommend.with_call(
            encode_request("py-user", 2), metadata=[("x-user-id", "py-user")], timeout=10
        )
        out["unary"] = reply
        out["unary_metadata"] = {k: v for k, v in call.initial_metadata() if isinstance(v, str)}
        out["unary_code"] = call.code().name

        stream = channel.unary_stream(
            "/reco.Recommender/StreamItems",
            request_serializer=lambda r: r,
            response_deserializer=decode_reply,
        )
        out["stream"] = [m["items"][0] for m in stream(encode_request("py", 5), timeout=10)]

        failing = stream(encode_request("fail-at-end", 2), timeout=10)
        got = []
        try:
            for m in failing:
                got.append(m["items"][0])
        except grpc.RpcError as e:
            out["stream_error"] = {
                "code": e.code().name,
                "details": e.details(),
                "trailing": {k: list(v) for k, v in e.trailing_metadata() if k.endswith("-bin")},
                "messages": got,
            }

        missing = channel.unary_unary(
            "/nothing.Here/Method", request_serializer=lambda r: r, response_deserializer=lambda b: b
        )
        try:
            missing(b"", timeout=10)
        except grpc.RpcError as e:
            out["no_route"] = e.code().name
    print(json.dumps(out))


main()
