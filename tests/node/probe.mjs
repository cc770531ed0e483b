#!/usr/bin/env node
// A Node.js gRPC client of Troupe, generated at run time from the repository's proto/ with
// @grpc/proto-loader and @grpc/grpc-js: the access tests use it to make the same calls as a
// user's Node program would, and report what the server answered.
//
// Usage (modules from $TROUPE_NODE_MODULES, which scripts/test.sh installs under .tools/):
//
//   node tests/node/probe.mjs --server 127.0.0.1:PORT [--ca CA.pem] [--token TOKEN] \
//       [--proto DIR] < calls.json
//
// stdin is a JSON array of calls, made in order on one channel:
//
//   [{"service": "ResourceService", "method": "Get", "request": {...}},
//    {"service": "ResourceService", "method": "Watch", "request": {...}, "stream": true,
//     "maxMessages": 10, "timeoutMs": 5000, "until": "EVENT_TYPE_BOOKMARK"},
//    {"service": "PromotionService", "method": "Promote", "request": {...},
//     "metadata": {"troupe-impersonate-user": "bob"}}]
//
// Requests and answers are proto3 JSON (lowerCamel field names, 64-bit integers and
// timestamps as strings, enums by name). For each call one JSON line goes to stdout:
// `{"code": N, "message": "...", "response": {...}}` for a unary call, and
// `{"code": N, "message": "...", "messages": [...]}` for a server stream, where N is the
// gRPC status code (0 when a stream was ended by the probe: after `maxMessages` messages,
// after `timeoutMs`, or once a message's JSON contains the text `until`). Without `--ca` the
// channel is plaintext. The exit code is 0 once every call was made, whatever it answered,
// and 2 when the probe cannot run (bad arguments, modules or proto files missing).

import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

// A unary call or a stream with no deadline of its own ends after this long.
const DEFAULT_TIMEOUT_MS = 10000;

function fail(message) {
  process.stderr.write(`probe: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { server: "", ca: "", token: "", proto: "" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in args) || argv[i + 1] === undefined) {
      fail(`unknown or incomplete argument ${argv[i]}`);
    }
    args[key] = argv[i + 1];
  }
  if (!args.server) fail("--server HOST:PORT is required");
  if (!args.proto) {
    const here = path.dirname(fileURLToPath(import.meta.url));
    args.proto = path.resolve(here, "..", "..", "proto");
  }
  return args;
}

// The modules, required by path from $TROUPE_NODE_MODULES so no global install is needed.
function loadModules() {
  const modules = process.env.TROUPE_NODE_MODULES;
  if (!modules) fail("TROUPE_NODE_MODULES is not set (scripts/test.sh installs them)");
  const require = createRequire(path.join(path.resolve(modules), "probe-anchor.js"));
  const from = (name) => {
    try {
      return require(path.join(path.resolve(modules), name));
    } catch (e) {
      fail(`cannot load ${name} from ${modules}: ${e.message}`);
    }
  };
  // The protobufjs that proto-loader uses (hoisted next to it), so the JSON mappings
  // registered below apply to the types it loads.
  return { grpc: from("@grpc/grpc-js"), loader: from("@grpc/proto-loader"), protobuf: from("protobufjs") };
}

// An RFC 3339 time as a Timestamp message, to the nanosecond; `self` is the Timestamp type
// with its own (unwrapped) fromObject.
function toTimestamp(self, json) {
  if (typeof json !== "string") return self.fromObject(json);
  const fraction = /\.(\d+)/.exec(json);
  const millis = Date.parse(json.replace(/\.\d+/, ""));
  if (Number.isNaN(millis)) throw new Error(`not an RFC 3339 time: ${json}`);
  return self.create({
    seconds: Math.floor(millis / 1000),
    nanos: fraction ? Number(fraction[1].slice(0, 9).padEnd(9, "0")) : 0,
  });
}

// A Timestamp as proto3 JSON writes it: `2026-12-01T19:00:00Z`, with 3, 6 or 9 fractional
// digits when there are nanoseconds.
function fromTimestamp(ts) {
  const seconds = Number(String(ts.seconds || 0));
  const whole = new Date(seconds * 1000).toISOString().replace(".000Z", "");
  const nanos = ts.nanos || 0;
  if (nanos === 0) return `${whole}Z`;
  let digits = String(nanos).padStart(9, "0");
  while (digits.length > 3 && digits.endsWith("000")) digits = digits.slice(0, -3);
  return `${whole}.${digits}Z`;
}

// Teaches protobufjs the proto3 JSON forms of the well-known types the API uses, so a
// Struct is a plain JSON object (a Component's parameters) and a Timestamp an RFC 3339
// string, as in YAML, grpcurl and the Python client.
function registerJsonMappings(protobuf) {
  const type = (self, name) => self.root.lookupType(`.google.protobuf.${name}`);
  const toValue = (self, json) => {
    const Value = type(self, "Value");
    if (json === null || json === undefined) return Value.create({ nullValue: 0 });
    if (typeof json === "number") return Value.create({ numberValue: json });
    if (typeof json === "string") return Value.create({ stringValue: json });
    if (typeof json === "boolean") return Value.create({ boolValue: json });
    if (Array.isArray(json)) return Value.create({ listValue: toList(self, json) });
    return Value.create({ structValue: toStruct(self, json) });
  };
  const toList = (self, json) =>
    type(self, "ListValue").create({ values: json.map((v) => toValue(self, v)) });
  const toStruct = (self, json) => {
    const fields = {};
    for (const [k, v] of Object.entries(json)) fields[k] = toValue(self, v);
    return type(self, "Struct").create({ fields });
  };
  const fromValue = (value) => {
    switch (value.kind) {
      case "numberValue":
        return value.numberValue;
      case "stringValue":
        return value.stringValue;
      case "boolValue":
        return value.boolValue;
      case "structValue":
        return fromStruct(value.structValue);
      case "listValue":
        return (value.listValue.values || []).map(fromValue);
      default:
        return null;
    }
  };
  const fromStruct = (struct) => {
    const json = {};
    for (const [k, v] of Object.entries(struct.fields || {})) json[k] = fromValue(v);
    return json;
  };
  const wrap = (name, fromJson, toJson) => {
    protobuf.wrappers[`.google.protobuf.${name}`] = {
      fromObject(json) {
        return json instanceof this.ctor ? json : fromJson(this, json);
      },
      toObject(message) {
        return toJson(message);
      },
    };
  };
  wrap("Struct", toStruct, fromStruct);
  wrap("Value", toValue, fromValue);
  wrap("ListValue", toList, (list) => (list.values || []).map(fromValue));
  wrap("Timestamp", toTimestamp, fromTimestamp);
}

// Every service of troupe.v1alpha1, generated from the .proto files under `protoDir`.
function loadServices(grpc, loader, protoDir) {
  const dir = path.join(protoDir, "troupe", "v1alpha1");
  let files;
  try {
    files = fs.readdirSync(dir).filter((f) => f.endsWith(".proto"));
  } catch (e) {
    fail(`cannot read ${dir}: ${e.message}`);
  }
  const definition = loader.loadSync(
    files.map((f) => path.join("troupe", "v1alpha1", f)),
    { includeDirs: [protoDir], keepCase: false, longs: String, enums: String, defaults: true, oneofs: true },
  );
  return grpc.loadPackageDefinition(definition).troupe.v1alpha1;
}

function metadataFor(grpc, token, extra) {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  for (const [key, value] of Object.entries(extra || {})) {
    for (const v of Array.isArray(value) ? value : [value]) metadata.add(key, String(v));
  }
  return metadata;
}

function unary(client, call, metadata) {
  const deadline = new Date(Date.now() + (call.timeoutMs || DEFAULT_TIMEOUT_MS));
  return new Promise((resolve) => {
    client[call.method](call.request || {}, metadata, { deadline }, (err, response) => {
      if (err) resolve({ code: err.code, message: err.details ?? err.message });
      else resolve({ code: 0, message: "", response });
    });
  });
}

function serverStream(client, call, metadata) {
  return new Promise((resolve) => {
    const messages = [];
    const stream = client[call.method](call.request || {}, metadata);
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...result, messages });
      stream.cancel();
    };
    const timer = setTimeout(
      () => finish({ code: 0, message: "" }),
      call.timeoutMs || DEFAULT_TIMEOUT_MS,
    );
    stream.on("data", (message) => {
      messages.push(message);
      const reached = call.maxMessages && messages.length >= call.maxMessages;
      const matched = call.until && JSON.stringify(message).includes(call.until);
      if (reached || matched) finish({ code: 0, message: "" });
    });
    stream.on("error", (err) => finish({ code: err.code, message: err.details ?? err.message }));
    stream.on("end", () => finish({ code: 0, message: "" }));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { grpc, loader, protobuf } = loadModules();
  registerJsonMappings(protobuf);
  const services = loadServices(grpc, loader, args.proto);
  let calls;
  try {
    calls = JSON.parse(fs.readFileSync(0, "utf8"));
  } catch (e) {
    fail(`stdin is not a JSON list of calls: ${e.message}`);
  }
  const credentials = args.ca
    ? grpc.credentials.createSsl(fs.readFileSync(args.ca))
    : grpc.credentials.createInsecure();
  const clients = {};
  for (const call of calls) {
    const Service = services[call.service];
    if (!Service) fail(`no service ${call.service} in troupe.v1alpha1`);
    clients[call.service] ??= new Service(args.server, credentials);
    const client = clients[call.service];
    if (typeof client[call.method] !== "function") fail(`no method ${call.service}/${call.method}`);
    const metadata = metadataFor(grpc, args.token, call.metadata);
    // Streaming is the method's, as the proto declares it (`stream` in a call is a hint).
    const streaming = Service.service[call.method]?.responseStream ?? Boolean(call.stream);
    const result = streaming
      ? await serverStream(client, call, metadata)
      : await unary(client, call, metadata);
    process.stdout.write(`${JSON.stringify(result)}\n`);
  }
  for (const client of Object.values(clients)) client.close();
}

main().catch((e) => fail(e.stack || String(e)));
