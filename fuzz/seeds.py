#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets, fuzz/corpus/<name>/, from the repository's own
files (configs/*.yaml, tests/tokenizer_edge_cases.txt) and from the small inputs the unit tests
build (token files, checkpoint manifests and headers, safetensors files, config.json files,
journals, activations, the master's requests). Deterministic; run it after changing a format.
Crash reproducers kept as regression seeds (crash-*, named by libFuzzer) are left alone.

Needs libxxhash (the journal's and token files' checksums) and protoc (the requests)."""
import ctypes
import ctypes.util
import json
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")

_xxh = ctypes.CDLL(ctypes.util.find_library("xxhash") or "libxxhash.so.0")
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def xxh3(data):
    return _xxh.XXH3_64bits(data, len(data))


def put(name, file, data):
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, file), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def clear(name):
    d = os.path.join(CORPUS, name)
    if os.path.isdir(d):
        for f in os.listdir(d):
            if not f.startswith("crash-"):
                os.remove(os.path.join(d, f))


def config():
    for f in sorted(os.listdir(os.path.join(ROOT, "configs"))):
        if f.endswith(".yaml"):
            with open(os.path.join(ROOT, "configs", f), "rb") as fh:
                put("config", f, fh.read())
    # config_test.cpp's cases: flow maps, lists, overrides after NULs.
    put("config", "overrides", "data: {path: d}\n\0train.lr=3e-4\0train.activation_checkpointing=yes")
    put("config", "int_list", "parallel: {pp_layers: [3, 4, 4, 2]}\ndata: {path: 'my dir'}\n"
        "\0parallel.pp_layers= [ 1 , 0 , 2 ] ")
    put("config", "model", "model:\n  arch: llama\n  n_kv_head: 2\n  ffn_hidden: 40\n"
        "data:\n  path: d\n\0model.norm_eps=1e-6\0train.precision=bf16")


def token_file(ids, vocab):
    dtype = 2 if vocab <= 65536 else 4
    payload = b"".join(i.to_bytes(dtype, "little") for i in ids)
    header = b"CAIRNTOK" + struct.pack("<IIIQQ", 1, vocab, dtype, len(ids), xxh3(payload))
    return header.ljust(64, b"\0") + payload


def token_files():
    put("token_file", "uint16", token_file([0, 1, 50256, 65535, 42], 65536))
    put("token_file", "uint32", token_file([0, 70000, 3, 99999], 100000))
    put("token_file", "empty", token_file([], 50257))


def tokenizer():
    with open(os.path.join(ROOT, "tests", "tokenizer_edge_cases.txt"), "rb") as f:
        lines = f.read().split(b"\n")
    for i, line in enumerate(lines):
        if line:
            put("tokenizer", "edge-%02d" % i, line)
    put("tokenizer", "invalid_utf8", b"caf\xc3 \xff\xfe na\xef\xbf ve\xed\xa0\x80 end")


def manifest(tensors):
    return json.dumps({"format": "cairn-checkpoint", "format_version": 1, "step": 42,
                       "created": 1.5e9, "mesh": {"world_size": 2, "dp": 2, "tp": 1, "pp": 1},
                       "files": ["rank-00000.bin", "rank-00001.bin"], "tensors": tensors,
                       "state": {"step": 42, "config": {"train.lr": "0.001"}}}, indent=1)


def shard(slice_, file, offset, nbytes):
    return {"slice": slice_, "file": file, "offset": offset, "bytes": nbytes,
            "xxh3": "0123456789abcdef"}


def ckpt():
    put("ckpt_manifest", "whole", manifest([
        {"name": "model.wte.weight", "dtype": "float32", "shape": [4, 3],
         "shards": [shard([[0, 4], [0, 3]], "rank-00000.bin", 64, 48)]},
        {"name": "step", "dtype": "int64", "shape": [],
         "shards": [shard([], "rank-00000.bin", 128, 8)]}]))
    put("ckpt_manifest", "sharded", manifest([
        {"name": "model.h.0.attn.c_attn.weight", "dtype": "bfloat16", "shape": [6, 2],
         "shards": [shard([[0, 3], [0, 2]], "rank-00000.bin", 64, 12),
                    shard([[3, 6], [0, 2]], "rank-00001.bin", 64, 12)]},
        {"name": "empty", "dtype": "bool", "shape": [0, 5],
         "shards": [shard([[0, 0], [0, 5]], "rank-00001.bin", 128, 0)]}]))
    header = b"CAIRNCKD" + struct.pack("<IIQ", 1, 0, 16)
    put("ckpt_header", "rank0", header.ljust(64, b"\0") + bytes(range(16)))
    put("ckpt_header", "rank1_empty", (b"CAIRNCKD" + struct.pack("<IIQ", 1, 1, 0)).ljust(64, b"\0"))


def safetensors(entries, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, dtype, shape, blob in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def safetensor_files():
    put("safetensors", "gpt2", safetensors([
        ("transformer.wte.weight", "F32", [2, 3], struct.pack("<6f", *range(6))),
        ("transformer.h.0.attn.bias", "BOOL", [1, 1, 2, 2], b"\1\0\1\1")],
        {"format": "pt"}))
    put("safetensors", "dtypes", safetensors([
        ("f64", "F64", [2], struct.pack("<2d", 1.5, -2)), ("f16", "F16", [2], b"\0\x3c\0\xc0"),
        ("bf16", "BF16", [1], b"\x80\x3f"), ("i64", "I64", [], struct.pack("<q", -5)),
        ("i32", "I32", [1, 2], struct.pack("<2i", 7, 8)), ("i16", "I16", [1], b"\1\0"),
        ("i8", "I8", [3], b"\x80\0\x7f"), ("u8", "U8", [2], b"\0\xff"),
        ("empty", "F32", [0, 4], b"")], {"step": "12"}))


def hf_configs():
    put("hf_config", "gpt2.json", json.dumps({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 50257,
        "n_positions": 1024, "n_ctx": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
        "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": True,
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "torch_dtype": "float32"},
        indent=2))
    put("hf_config", "llama.json", json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000,
        "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
        "rope_scaling": None, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": False, "initializer_range": 0.02, "torch_dtype": "float32"},
        indent=2))


def journal_records():
    member = lambda i, r, b: {"id": i, "host": "h" + i, "nproc": 2, "node_rank": r, "rank_base": b}
    return [
        {"type": "node_joined", "node": {"id": "b", "host": "hb", "nproc": 2, "store_port": 30000,
                                         "incarnation": 1}, "at": 1.7e9},
        {"type": "node_joined", "node": {"id": "a", "host": "ha", "nproc": 2, "store_port": 30001,
                                         "incarnation": 18364758544493064720}},
        {"type": "round_completed", "round": {"number": 1, "members": [member("a", 0, 0),
         member("b", 1, 2)], "world_size": 4, "master_addr": "ha", "master_port": 30001}},
        {"type": "failure", "node_id": "b", "rank": 3, "signaled": True, "code": 9,
         "diagnosis": "crash: signal 9"},
        {"type": "node_removed", "node_id": "b", "reason": "dropped"},
        {"type": "round_opened", "number": 2, "restart": False, "reason": "member b stopped"},
        {"type": "node_excluded", "node_id": "c", "reason": "failed the node check"},
    ]


def journals():
    def line(text):
        return "%016x %s" % (xxh3(text.encode()), text)
    header = line(json.dumps({"format": "cairn-master-journal", "format_version": 1},
                             separators=(",", ":")))
    texts = [json.dumps(r, separators=(",", ":")) for r in journal_records()]
    put("journal", "raw", "\n".join([header] + [line(t) for t in texts]) + "\n")
    put("journal", "raw_torn", "\n".join([header] + [line(t) for t in texts[:3]]) + "\n" +
        line(texts[3])[:40])
    put("journal", "records", "\n".join(texts) + "\n")
    put("journal", "records_torn", "\n".join(texts[:2]) + "\n" + texts[2][:30])


def activations():
    def message(env):
        return b"cairn-activate 1\n" + b"".join(e.encode() + b"\0" for e in env)
    put("activation", "round", message(["A=1", "B=", "C=x=y", "PATH=/usr/bin:/bin",
                                        "RANK=3", "WORLD_SIZE=4", "MASTER_ADDR=10.0.0.1"]))
    put("activation", "empty", message([]))


def encode(message, text):
    proto = os.path.join(ROOT, "src", "elastic", "master")
    out = subprocess.run(["protoc", "-I" + proto, "--encode=cairn.v1." + message, "cairn.proto"],
                         input=text.encode(), capture_output=True, check=True)
    return out.stdout


def call(method, seconds, message, text):
    body = encode(message, text)
    return bytes([seconds * 16 + method]) + struct.pack("<H", len(body)) + body


def requests():
    node = lambda i, port: 'node { node_id: "%s" host: "h%s" nproc: 2 store_port: %d ' \
                           'incarnation: 7 }' % (i, i, port)
    rendezvous = b"".join([
        call(0, 0, "JoinRequest", node("a", 30000)),
        call(0, 1, "JoinRequest", node("b", 30001) + " last_round: 0"),
        call(1, 1, "HeartbeatRequest", 'node_id: "a" round: 1 last_step: 5'),
        call(5, 0, "CheckNodeRequest", 'node_id: "a" round: 1'),
        call(5, 1, "CheckNodeRequest", 'node_id: "b" round: 1 check_id: "r1" check_round: 1 '
             'result { ok: true matmul_s: 0.5 allreduce_s: 0.25 }'),
        call(3, 0, "ReportFailureRequest", 'node_id: "b" rank: 3 signal: 9 diagnosis: "hang"'),
        call(4, 2, "GetStatusRequest", ""),
        call(2, 0, "LeaveRequest", 'node_id: "a"'),
        call(12, 15, "GetStatusRequest", ""),
    ])
    put("rpc", "rendezvous", rendezvous)
    dataset = 'dataset: "data/kjv/train.bin"'
    shards = b"".join([
        call(6, 0, "CreateDatasetRequest", dataset + ' params { num_samples: 100 shard_size: 8 '
             'seed: 3 num_epochs: 2 lease_s: 5 max_attempts: 3 }'),
        call(7, 0, "GetShardsRequest", dataset + ' worker: "w0" want: 2'),
        call(7, 1, "GetShardsRequest", dataset + ' worker: "w0" want: 2 done_step: 1 step: 2 '
             'rank: 0 world: 2 step_quota: 4 done { epoch: 0 index: 1 start: 8 end: 16 }'),
        call(9, 0, "ShardSnapshotRequest", dataset + " max_step: 1"),
        call(10, 0, "RestoreShardsRequest", dataset + ' snapshot { shard_size: 8 seed: 3 '
             'num_epochs: 2 num_samples: 100 epoch: 0 done { epoch: 0 index: [0, 3] } }'),
        call(11, 0, "ExtendDatasetRequest", dataset + " num_samples: 120 finished: true"),
        call(8, 6, "ReleaseShardsRequest", dataset + ' worker: "w0"'),
        call(13, 9, "GetStatusRequest", ""),
    ])
    put("rpc", "shards", shards)
    put("rpc", "stream", b"".join([
        call(6, 0, "CreateDatasetRequest", 'dataset: "s" params { num_samples: 10 shard_size: 4 '
             'num_epochs: 1 lease_s: 1 max_attempts: 1 streaming: true }'),
        call(11, 1, "ExtendDatasetRequest", 'dataset: "s" num_samples: 30'),
        call(7, 3, "GetShardsRequest", 'dataset: "s" worker: "w1" want: 8'),
    ]))


def main():
    if len(sys.argv) > 1:
        sys.exit("usage: fuzz/seeds.py")
    for name in ["config", "token_file", "tokenizer", "ckpt_manifest", "ckpt_header",
                 "safetensors", "hf_config", "journal", "activation", "rpc"]:
        clear(name)
    config()
    token_files()
    tokenizer()
    ckpt()
    safetensor_files()
    hf_configs()
    journals()
    activations()
    requests()


if __name__ == "__main__":
    main()
