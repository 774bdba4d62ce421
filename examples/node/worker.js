#!/usr/bin/env node
// A dcasgd worker in Node.js: joins every shard, declares a small tensor,
// pulls it, pushes one gradient with PushPull and leaves. It uses nothing but
// the repository's protos (protos/dcasgd/v1/ps.proto) and npm's
// @grpc/grpc-js + @grpc/proto-loader: the API is language-neutral, and the
// chunking/placement rule (docs/api.md) is a few lines in any language.
//
// Usage: node worker.js --ps HOST:PORT[,HOST:PORT...] [--name NAME]
//          [--tensor NAME] [--proto_dir DIR]
// Prints one JSON line: {"pulled": [...], "after": [...], "versions": [...],
// "staleness": [...]} (values as float32 read back from the wire).
// Exit 0 on success, 1 with the gRPC status on stderr otherwise.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

function parseArgs(argv) {
  const args = {
    ps: process.env.DCASGD_PS || 'localhost:7000',
    name: 'node-worker',
    tensor: 'node/w',
    proto_dir: path.join(__dirname, '..', '..', 'protos'),
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in args) || i + 1 >= argv.length) {
      throw new Error(`unknown or incomplete argument '${argv[i]}'`);
    }
    args[key] = argv[i + 1];
  }
  args.ps = args.ps.split(',').filter((a) => a.length > 0);
  return args;
}

// Placement (docs/api.md): chunk i of tensor `name` lives on shard
// (fnv1a64(utf8(name)) + i) mod N, the sum wrapping mod 2^64.
const MASK64 = (1n << 64n) - 1n;
function fnv1a64(name) {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(name, 'utf8')) {
    h = ((h ^ BigInt(byte)) * 0x100000001b3n) & MASK64;
  }
  return h;
}
function shardOfChunk(name, chunkIndex, shardCount) {
  return Number(((fnv1a64(name) + BigInt(chunkIndex)) & MASK64) % BigInt(shardCount));
}

// Values travel as little-endian float32.
function toBytes(values) {
  const buffer = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => buffer.writeFloatLE(v, 4 * i));
  return buffer;
}
function fromBytes(buffer) {
  const out = [];
  for (let i = 0; i < buffer.length; i += 4) out.push(buffer.readFloatLE(i));
  return out;
}

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 30000 }, (error, response) =>
      (error ? reject(error) : resolve(response)));
  });
}

// Collects a stream of PullResponse into values[chunk_index * chunkElements ...].
function collectChunks(call, values, chunkElements, perShard) {
  return new Promise((resolve, reject) => {
    call.on('data', (response) => {
      const offset = Number(response.chunk.chunk_index) * chunkElements;
      fromBytes(response.chunk.values).forEach((v, i) => { values[offset + i] = v; });
      perShard.version = Number(response.version);
      perShard.staleness = Number(response.staleness);
    });
    call.on('error', reject);
    call.on('end', resolve);
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const definition = protoLoader.loadSync('dcasgd/v1/ps.proto', {
    includeDirs: [args.proto_dir],
    keepCase: true,
    longs: String, // uint64 worker ids and versions, without precision loss
    defaults: true,
  });
  const ParameterShard = grpc.loadPackageDefinition(definition).dcasgd.v1.ParameterShard;
  const shards = args.ps.map((a) => new ParameterShard(a, grpc.credentials.createInsecure()));
  const shardCount = shards.length;

  // A tensor of 6 elements in chunks of 2: three chunks, spread over the
  // shards by the placement rule. Initial values are explicit.
  const shape = [6];
  const chunkElements = 2;
  const numChunks = 3;
  const initial = [0, 1, 2, 3, 4, 5].map((i) => i * 0.5);
  const gradient = [0, 1, 2, 3, 4, 5].map((i) => 0.25 * (i + 1));

  const joined = [];
  for (let s = 0; s < shardCount; s++) {
    const reply = await unary(shards[s], 'Join', { worker_name: args.name });
    if (reply.shard_index !== s || reply.shard_count !== shardCount) {
      throw new Error(`shard ${args.ps[s]} is shard ${reply.shard_index} of ` +
                      `${reply.shard_count}, not ${s} of ${shardCount}`);
    }
    // The worker id and its session (a secret: every call that acts as the
    // worker carries both; never log the session).
    joined.push({ worker_id: reply.worker_id, session: reply.session });
  }
  try {
    const spec = {
      name: args.tensor, shape, chunk_elements: chunkElements,
      init: { values: toBytes(initial) },
    };
    for (const shard of shards) await unary(shard, 'DeclareTensors', { tensors: [spec] });

    // Pull: every shard streams the chunks it owns; this records our backup.
    const pulled = new Array(initial.length).fill(NaN);
    await Promise.all(shards.map((shard, s) => collectChunks(
      shard.Pull({ ...joined[s], tensors: [args.tensor] },
                 { deadline: Date.now() + 30000 }), pulled, chunkElements, {})));

    // PushPull: to each shard, the gradient chunks it owns in one stream; the
    // first message carries worker_id, session, chunk_count and the push step.
    const owned = shards.map(() => []);
    for (let c = 0; c < numChunks; c++) owned[shardOfChunk(args.tensor, c, shardCount)].push(c);
    const after = new Array(initial.length).fill(NaN);
    const perShard = shards.map(() => ({ version: 0, staleness: 0 }));
    await Promise.all(shards.map((shard, s) => {
      if (owned[s].length === 0) return Promise.resolve();
      const call = shard.PushPull({ deadline: Date.now() + 30000 });
      const done = collectChunks(call, after, chunkElements, perShard[s]);
      owned[s].forEach((c, k) => {
        const values = gradient.slice(c * chunkElements, (c + 1) * chunkElements);
        const message = { gradient: { tensor: args.tensor, chunk_index: c, values: toBytes(values) } };
        if (k === 0) Object.assign(message, { ...joined[s], chunk_count: owned[s].length, step: 1 });
        call.write(message);
      });
      call.end();
      return done;
    }));
    console.log(JSON.stringify({
      pulled, after, versions: perShard.map((p) => p.version),
      staleness: perShard.map((p) => p.staleness), owned,
    }));
  } finally {
    await Promise.all(shards.map((shard, s) => unary(shard, 'Leave', joined[s])
      .catch(() => {})));
    shards.forEach((shard) => shard.close());
  }
}

main().catch((error) => {
  const code = error.code !== undefined ? `${grpc.status[error.code] || error.code}: ` : '';
  console.error(`worker.js: ${code}${error.details || error.message}`);
  process.exit(1);
});
