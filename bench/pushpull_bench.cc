// PushPull throughput of PsClient against real dcasgd-ps processes, beside a
// raw gRPC bidi stream baseline (bench/raw_stream.proto) in the same run.
//
// A round of one worker = one PushPull of the whole model: the gradient goes
// up in 65536-float chunks, the new weights come back in the same chunks. The
// baseline does exactly that over a stream with no parameter-server logic: a
// child process (like the shards) echoes the chunks after the half-close.
// Both copy the values from and into float buffers, as any client must.
//
// BM_RoundTrip: one worker, one shard, small models: a PushPull's latency
// beside a bare unary call of the same bytes (see there).
//
// BM_WireDtype: one shard, float32 against bfloat16 on the wire
// (ClientOptions.wire_dtype), rounds interleaved in the same run (see there).
//
// BM_Replicated: one shard run as a synchronous pair (dcasgd-ps --replicas=2
// with a dcasgd-witness) beside the same shard alone, in the same run: what
// replication costs a round (see there).
//
// Counters per configuration (model floats / shards / workers):
//   MB/s, rounds/s          PsClient::PushPull, payload bytes up + down
//   raw_MB/s, raw_rounds/s  the baseline with the same shards and workers
//   ratio                   MB/s / raw_MB/s
//   send_ms, wait_ms,       W=1 only: a round's phases (PushStats): gradient
//   recv_ms                 upload to the half-close, wait for the first new
//                           chunk (validation + update), download
//
// Run: build/<dir>/bench/pushpull_bench [--benchmark_filter=...]
// The binary re-executes itself with --raw_server to host the baseline.

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/process_setup.h"
#include "base/status_macros.h"
#include "bench/child_process.h"
#include "bench/raw_stream.grpc.pb.h"
#include "benchmark/benchmark.h"
#include "clients/cpp/ps_client.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace dcasgd {
namespace {

constexpr uint32_t kChunkElements = 65536;
constexpr int kMaxMessageBytes = 64 << 20;

using bench::ChildProcess;
using bench::CpuSeconds;
using bench::FreePort;
using bench::SelfPath;
using bench::TempDir;

// ---------------------------------------------------------------------------
// The raw baseline: server (in the child) and client.

class EchoReactor final : public grpc::ServerBidiReactor<bench::RawChunk, bench::RawChunk> {
 public:
  EchoReactor() { StartRead(&incoming_); }

  void OnReadDone(bool ok) override {
    if (ok) {
      chunks_.push_back(std::move(incoming_));
      incoming_.Clear();
      StartRead(&incoming_);
      return;
    }
    WriteNext();  // the client half-closed
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    if (next_ == chunks_.size()) {
      Finish(grpc::Status::OK);
      return;
    }
    StartWrite(&chunks_[next_++]);
  }

  bench::RawChunk incoming_;
  std::vector<bench::RawChunk> chunks_;
  size_t next_ = 0;
};

// Answers each message of a PingPong stream as soon as it is read.
class PingPongReactor final : public grpc::ServerBidiReactor<bench::RawChunk, bench::RawChunk> {
 public:
  PingPongReactor() { StartRead(&incoming_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    outgoing_ = std::move(incoming_);
    incoming_.Clear();
    StartWrite(&outgoing_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    StartRead(&incoming_);
  }
  void OnDone() override { delete this; }

 private:
  bench::RawChunk incoming_, outgoing_;
};

class EchoService final : public bench::RawStream::CallbackService {
  grpc::ServerBidiReactor<bench::RawChunk, bench::RawChunk>* PingPong(
      grpc::CallbackServerContext*) override {
    return new PingPongReactor();
  }
  grpc::ServerBidiReactor<bench::RawChunk, bench::RawChunk>* Echo(
      grpc::CallbackServerContext*) override {
    return new EchoReactor();
  }
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const bench::RawChunk* request,
                                 bench::RawChunk* response) override {
    *response->mutable_data() = request->data();
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

int RunRawServer(const std::string& port_file) {
  EchoService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return 1;
  const std::string tmp = port_file + ".tmp";
  {
    std::ofstream out(tmp);
    out << "grpc " << port << "\n";
  }
  std::rename(tmp.c_str(), port_file.c_str());
  server->Wait();  // until killed
  return 0;
}

// One worker of the baseline: a channel per raw server, chunks placed
// round-robin like the shards place them.
class RawWorker {
 public:
  RawWorker(const std::vector<std::string>& addresses, uint64_t elements)
      : gradient_(elements, 0.001f), weights_(elements) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    for (const std::string& address : addresses) {
      stubs_.push_back(bench::RawStream::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
    }
  }

  absl::Status Round() {
    std::vector<absl::Status> results(stubs_.size());
    if (stubs_.size() == 1) {
      results[0] = EchoOn(0);
    } else {
      std::vector<std::thread> threads;
      for (size_t s = 0; s < stubs_.size(); ++s) {
        threads.emplace_back([&, s] { results[s] = EchoOn(s); });
      }
      for (std::thread& t : threads) t.join();
    }
    for (const absl::Status& s : results) RETURN_IF_ERROR(s);
    return absl::OkStatus();
  }

 private:
  absl::Status EchoOn(size_t shard) {
    const uint64_t elements = gradient_.size();
    const uint64_t chunks = (elements + kChunkElements - 1) / kChunkElements;
    grpc::ClientContext context;
    auto stream = stubs_[shard]->Echo(&context);
    bench::RawChunk chunk;
    uint64_t sent = 0;
    for (uint64_t i = shard; i < chunks; i += stubs_.size()) {
      const uint64_t offset = i * kChunkElements;
      const uint64_t length = std::min<uint64_t>(kChunkElements, elements - offset);
      chunk.mutable_data()->assign(reinterpret_cast<const char*>(gradient_.data() + offset),
                                   length * sizeof(float));
      if (!stream->Write(chunk)) break;
      ++sent;
    }
    stream->WritesDone();
    uint64_t i = shard;
    while (stream->Read(&chunk)) {
      std::memcpy(weights_.data() + i * kChunkElements, chunk.data().data(), chunk.data().size());
      i += stubs_.size();
    }
    const grpc::Status status = stream->Finish();
    if (!status.ok()) return absl::UnavailableError(status.error_message());
    if (i != shard + sent * stubs_.size()) return absl::InternalError("echo lost chunks");
    return absl::OkStatus();
  }

  std::vector<std::unique_ptr<bench::RawStream::Stub>> stubs_;
  std::vector<float> gradient_;
  std::vector<float> weights_;
};

// ---------------------------------------------------------------------------
// The measured system.

struct Config {
  uint64_t elements;
  int shards;
  int workers;
  bool operator==(const Config& o) const {
    return elements == o.elements && shards == o.shards && workers == o.workers;
  }
};

// Runs `round(w)` for every worker w at once; returns the first error.
template <typename Round>
absl::Status RunWorkers(int workers, Round round) {
  if (workers == 1) return round(0);
  std::vector<absl::Status> results(workers);
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] { results[w] = round(w); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

// CPU seconds so far of this process and `servers`.
double CpuSecondsWith(const std::vector<pid_t>& servers) {
  double seconds = CpuSeconds();
  for (pid_t pid : servers) seconds += CpuSeconds(pid);
  return seconds;
}

struct RawResult {
  double mb_per_s = 0;
  double rounds_per_s = 0;
  // CPU milliseconds per worker round of the bench and the raw servers.
  double cpu_ms = 0;
};

absl::StatusOr<RawResult> MeasureRaw(const Config& config) {
  std::vector<std::unique_ptr<ChildProcess>> servers;
  std::vector<std::string> addresses;
  std::vector<pid_t> pids;
  for (int s = 0; s < config.shards; ++s) {
    const std::string port_file = absl::StrCat(TempDir(), "/raw-", s, ".port");
    ASSIGN_OR_RETURN(auto child,
                     ChildProcess::Start({SelfPath(), "--raw_server", port_file}, port_file));
    addresses.push_back(child->address());
    pids.push_back(child->pid());
    servers.push_back(std::move(child));
  }
  std::vector<std::unique_ptr<RawWorker>> workers;
  for (int w = 0; w < config.workers; ++w) {
    workers.push_back(std::make_unique<RawWorker>(addresses, config.elements));
  }
  // Warm-up (connections, allocator), then at least 2 s of rounds.
  RETURN_IF_ERROR(RunWorkers(config.workers, [&](int w) { return workers[w]->Round(); }));
  const double cpu_start = CpuSecondsWith(pids);
  const absl::Time start = absl::Now();
  int rounds = 0;
  while (rounds < 3 || absl::Now() - start < absl::Seconds(2)) {
    RETURN_IF_ERROR(RunWorkers(config.workers, [&](int w) { return workers[w]->Round(); }));
    ++rounds;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  RawResult result;
  result.cpu_ms = (CpuSecondsWith(pids) - cpu_start) * 1e3 / (rounds * config.workers);
  result.rounds_per_s = rounds * config.workers / seconds;
  result.mb_per_s = result.rounds_per_s * 2.0 * config.elements * sizeof(float) / 1e6;
  return result;
}

// Microseconds per call of `call`: after a warm-up of 20, at least 100
// calls and 2 s.
absl::StatusOr<double> MicrosPerCall(absl::FunctionRef<absl::Status()> call) {
  for (int i = 0; i < 20; ++i) RETURN_IF_ERROR(call());
  const absl::Time start = absl::Now();
  int calls = 0;
  while (calls < 100 || absl::Now() - start < absl::Seconds(2)) {
    RETURN_IF_ERROR(call());
    ++calls;
  }
  return absl::ToDoubleMicroseconds(absl::Now() - start) / calls;
}

// A round on a long-lived PingPong stream with gRPC's callback API, as the
// client's Exchange stream works: the caller writes and sleeps; gRPC's
// threads run the callbacks and wake it.
class PingPongClient final : public grpc::ClientBidiReactor<bench::RawChunk, bench::RawChunk> {
 public:
  explicit PingPongClient(bench::RawStream::Stub* stub) {
    stub->async()->PingPong(&context_, this);
    AddHold();
    StartCall();
  }
  ~PingPongClient() override {
    context_.TryCancel();
    RemoveHold();
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&done_));
  }

  // Sends `bytes` and waits for the answer, copied into `out`.
  absl::Status Round(absl::string_view bytes, char* out) {
    request_.mutable_data()->assign(bytes.data(), bytes.size());
    {
      absl::MutexLock lock(&mu_);
      read_ = written_ = false;
    }
    StartRead(&response_);
    StartWrite(&request_);
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](PingPongClient* c) ABSL_EXCLUSIVE_LOCKS_REQUIRED(c->mu_) {
          return (c->read_ && c->written_) || c->done_;
        },
        this));
    if (!ok_ || response_.data().size() != bytes.size()) {
      return absl::UnavailableError("the ping-pong stream broke");
    }
    std::memcpy(out, response_.data().data(), bytes.size());
    return absl::OkStatus();
  }

  void OnReadDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    ok_ = ok_ && ok;
    read_ = true;
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    ok_ = ok_ && ok;
    written_ = true;
  }
  void OnDone(const grpc::Status&) override {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }

 private:
  grpc::ClientContext context_;
  bench::RawChunk request_, response_;
  absl::Mutex mu_;
  bool read_ ABSL_GUARDED_BY(mu_) = false;
  bool written_ ABSL_GUARDED_BY(mu_) = false;
  bool ok_ ABSL_GUARDED_BY(mu_) = true;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// The benches' model: one tensor "model" of `elements` floats in chunks of
// kChunkElements, initialised uniformly in [-0.1, 0.1].
TensorSpec ModelSpec(uint64_t elements) {
  TensorSpec spec;
  spec.name = "model";
  spec.shape = {static_cast<int64_t>(elements)};
  spec.chunk_elements = kChunkElements;
  spec.init.kind = Initializer::Kind::kUniform;
  spec.init.a = -0.1f;
  spec.init.b = 0.1f;
  spec.init.seed = 1;
  return spec;
}

// BM_RoundTrip's floors, microseconds per round trip of `elements` floats
// each way to a raw server child (callback API, as dcasgd-ps):
//   unary           a bare unary call (bench.RawStream/Ping), synchronous
//   sync_stream     one message each way on a long-lived PingPong stream,
//                   synchronous API: the caller's thread polls for the answer
//   callback_stream the same with the callback API, as the client's Exchange
//                   stream: one more thread hop per round on the client side
struct RoundTripFloors {
  double unary_us = 0;
  double sync_stream_us = 0;
  double callback_stream_us = 0;
};

absl::StatusOr<RoundTripFloors> MeasureFloors(uint64_t elements) {
  const std::string port_file = absl::StrCat(TempDir(), "/ping.port");
  ASSIGN_OR_RETURN(auto child,
                   ChildProcess::Start({SelfPath(), "--raw_server", port_file}, port_file));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stub = bench::RawStream::NewStub(
      grpc::CreateCustomChannel(child->address(), grpc::InsecureChannelCredentials(), args));
  // A float buffer copied into the request and out of the answer, as the
  // worker does.
  const std::vector<float> gradient(elements, 0.001f);
  const absl::string_view bytes(reinterpret_cast<const char*>(gradient.data()),
                                elements * sizeof(float));
  std::vector<float> weights(elements);
  char* out = reinterpret_cast<char*>(weights.data());
  RoundTripFloors floors;
  ASSIGN_OR_RETURN(floors.unary_us, MicrosPerCall([&]() -> absl::Status {
                     bench::RawChunk request, response;
                     request.mutable_data()->assign(bytes.data(), bytes.size());
                     grpc::ClientContext context;
                     const grpc::Status status = stub->Ping(&context, request, &response);
                     if (!status.ok()) return absl::UnavailableError(status.error_message());
                     if (response.data().size() != bytes.size()) {
                       return absl::InternalError("ping answered the wrong size");
                     }
                     std::memcpy(out, response.data().data(), bytes.size());
                     return absl::OkStatus();
                   }));
  {
    grpc::ClientContext context;
    auto stream = stub->PingPong(&context);
    bench::RawChunk request, response;
    ASSIGN_OR_RETURN(floors.sync_stream_us, MicrosPerCall([&]() -> absl::Status {
                       request.mutable_data()->assign(bytes.data(), bytes.size());
                       if (!stream->Write(request) || !stream->Read(&response) ||
                           response.data().size() != bytes.size()) {
                         return absl::UnavailableError("the ping-pong stream broke");
                       }
                       std::memcpy(out, response.data().data(), bytes.size());
                       return absl::OkStatus();
                     }));
    stream->WritesDone();
    stream->Finish().IgnoreError();
  }
  {
    PingPongClient client(stub.get());
    ASSIGN_OR_RETURN(floors.callback_stream_us,
                     MicrosPerCall([&] { return client.Round(bytes, out); }));
  }
  return floors;
}

// The shards, the worker clients and their buffers of one configuration.
struct PsSetup {
  Config config;
  std::vector<std::unique_ptr<ChildProcess>> shards;
  std::vector<std::unique_ptr<PsClient>> clients;
  std::vector<TensorMap> gradients;
  std::vector<TensorMap> weights;
  RawResult raw;
  RoundTripFloors floors;  // BM_RoundTrip's baselines, once measured
  ClientOptions options;   // of the clients (BM_RoundTrip's per-call client)
  double per_call_us = 0;  // BM_RoundTrip: PushPull without the stream
  // BM_WireDtype: a second worker whose values travel as bfloat16.
  std::unique_ptr<PsClient> bf16_client;
  TensorMap bf16_weights;
};

absl::StatusOr<std::unique_ptr<PsSetup>> StartPs(const Config& config) {
#ifndef DCASGD_PS_BINARY
  return absl::FailedPreconditionError("built without services/ps (no dcasgd-ps)");
#else
  auto setup = std::make_unique<PsSetup>();
  setup->config = config;
  // The baseline first, so that the shards do not sit in memory meanwhile.
  ASSIGN_OR_RETURN(setup->raw, MeasureRaw(config));
  ClientOptions options;
  for (int s = 0; s < config.shards; ++s) {
    const std::string port_file = absl::StrCat(TempDir(), "/ps-", s, ".port");
    ASSIGN_OR_RETURN(
        auto child,
        ChildProcess::Start(
            {DCASGD_PS_BINARY, "--listen=127.0.0.1:0", absl::StrCat("--port_file=", port_file),
             "--metrics_address=", absl::StrCat("--shard_index=", s),
             absl::StrCat("--shard_count=", config.shards), "--update_rule=dcasgd-a", "--lr=0.01",
             absl::StrCat("--max_message_bytes=", kMaxMessageBytes)},
            port_file));
    options.shard_addresses.push_back(child->address());
    setup->shards.push_back(std::move(child));
  }
  options.max_message_bytes = kMaxMessageBytes;
  setup->options = options;
  const TensorSpec spec = ModelSpec(config.elements);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> small(-1e-3f, 1e-3f);
  for (int w = 0; w < config.workers; ++w) {
    options.worker_name = absl::StrCat("bench-worker-", w);
    ASSIGN_OR_RETURN(auto client, PsClient::Connect(options));
    if (w == 0) RETURN_IF_ERROR(client->Declare({spec}));
    TensorMap weights;
    RETURN_IF_ERROR(client->Pull({"model"}, &weights));
    TensorMap gradients;
    std::vector<float>& g = gradients["model"];
    g.resize(config.elements);
    for (float& x : g) x = small(rng);
    setup->clients.push_back(std::move(client));
    setup->gradients.push_back(std::move(gradients));
    setup->weights.push_back(std::move(weights));
  }
  return setup;
#endif
}

// One configuration lives while its benchmark runs (the library calls the
// function several times while it picks an iteration count).
std::unique_ptr<PsSetup>& CurrentSetup() {
  static auto* setup = new std::unique_ptr<PsSetup>();
  return *setup;
}

// The current configuration's setup, started if it is another one; null
// (and the benchmark skipped) when it cannot start.
PsSetup* SetupFor(const Config& config, benchmark::State& state) {
  std::unique_ptr<PsSetup>& setup = CurrentSetup();
  if (setup == nullptr || !(setup->config == config)) {
    setup.reset();
    absl::StatusOr<std::unique_ptr<PsSetup>> started = StartPs(config);
    if (!started.ok()) {
      state.SkipWithError(started.status().ToString().c_str());
      return nullptr;
    }
    setup = std::move(started).value();
  }
  return setup.get();
}

void BM_PushPull(benchmark::State& state) {
  const Config config{static_cast<uint64_t>(state.range(0)), static_cast<int>(state.range(1)),
                      static_cast<int>(state.range(2))};
  PsSetup* setup = SetupFor(config, state);
  if (setup == nullptr) return;
  // With one worker, where a round's time goes (PushStats phases).
  double send_ms = 0, wait_ms = 0, receive_ms = 0;
  PushStats stats;
  std::vector<pid_t> shards;
  for (const auto& shard : setup->shards) shards.push_back(shard->pid());
  const double cpu_start = CpuSecondsWith(shards);
  const absl::Time start = absl::Now();
  int64_t rounds = 0;
  for (auto _ : state) {
    const absl::Status status = RunWorkers(config.workers, [&](int w) {
      return setup->clients[w]->PushPull(setup->gradients[w], &setup->weights[w],
                                         w == 0 ? &stats : nullptr);
    });
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
    send_ms += absl::ToDoubleMilliseconds(stats.send_time);
    wait_ms += absl::ToDoubleMilliseconds(stats.wait_time);
    receive_ms += absl::ToDoubleMilliseconds(stats.receive_time);
    ++rounds;
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double cpu_ms = (CpuSecondsWith(shards) - cpu_start) * 1e3 / (rounds * config.workers);
  if (config.workers == 1 && rounds > 0) {
    state.counters["send_ms"] = send_ms / rounds;
    state.counters["wait_ms"] = wait_ms / rounds;
    state.counters["recv_ms"] = receive_ms / rounds;
  }
  const double bytes_per_round = 2.0 * config.elements * sizeof(float);
  const double rounds_per_s = rounds * config.workers / seconds;
  const double mb_per_s = rounds_per_s * bytes_per_round / 1e6;
  state.counters["MB/s"] = mb_per_s;
  state.counters["rounds/s"] = rounds_per_s;
  state.counters["raw_MB/s"] = setup->raw.mb_per_s;
  state.counters["raw_rounds/s"] = setup->raw.rounds_per_s;
  state.counters["ratio"] = mb_per_s / setup->raw.mb_per_s;
  // CPU per round of both sides (bench, and shards or raw servers): on a
  // machine whose cores both runs keep busy, raw_cpu_ms / cpu_ms bounds the
  // ratio that PushPull can reach (the shard's update, checks and backups
  // are work the echo server does not do).
  state.counters["cpu_ms"] = cpu_ms;
  state.counters["raw_cpu_ms"] = setup->raw.cpu_ms;
  state.counters["cpu_bound"] = setup->raw.cpu_ms / cpu_ms;
}

// Model floats, shards, workers.
BENCHMARK(BM_PushPull)
    ->ArgNames({"floats", "shards", "workers"})
    ->ArgsProduct({{1 << 20, 10 << 20}, {1, 2}, {1, 4}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(3.0);

// Round-trip latency of one worker against one shard, beside the floors of
// MeasureFloors moving the same bytes both ways in the same run.
//   us/round       PsClient::PushPull, synchronous
//   unary_us       a bare unary call (RoundTripFloors)
//   ratio          us/round / unary_us (target <= 1.2)
//   sync_stream_us, cb_stream_us
//                  one message each way on a long-lived raw stream, with the
//                  synchronous and with the callback API (RoundTripFloors):
//                  cb_stream_us - sync_stream_us is the client's thread hop,
//                  us/round - cb_stream_us the Exchange stream's own work
//   per_call_us    the same PushPull with one call per push (the client
//                  before the Exchange stream: ClientOptions.push_stream false)
//   vs_per_call    us/round / per_call_us
void BM_RoundTrip(benchmark::State& state) {
  const Config config{static_cast<uint64_t>(state.range(0)), 1, 1};
  PsSetup* setup = SetupFor(config, state);
  if (setup == nullptr) return;
  // Measured once per configuration (the library calls this function
  // several times while it picks an iteration count).
  if (setup->floors.unary_us == 0) {
    absl::StatusOr<RoundTripFloors> measured = MeasureFloors(config.elements);
    if (!measured.ok()) {
      state.SkipWithError(measured.status().ToString().c_str());
      return;
    }
    setup->floors = *measured;
  }
  if (setup->per_call_us == 0) {
    ClientOptions options = setup->options;
    options.worker_name = "bench-per-call";
    options.push_stream = false;
    absl::StatusOr<std::unique_ptr<PsClient>> client = PsClient::Connect(options);
    TensorMap weights;
    const absl::Status pulled =
        client.ok() ? (*client)->Pull({"model"}, &weights) : client.status();
    const absl::StatusOr<double> per_call =
        pulled.ok()
            ? MicrosPerCall([&] { return (*client)->PushPull(setup->gradients[0], &weights); })
            : absl::StatusOr<double>(pulled);
    if (!per_call.ok()) {
      state.SkipWithError(per_call.status().ToString().c_str());
      return;
    }
    setup->per_call_us = *per_call;
  }
  const absl::Time start = absl::Now();
  int64_t rounds = 0;
  for (auto _ : state) {
    const absl::Status status =
        setup->clients[0]->PushPull(setup->gradients[0], &setup->weights[0]);
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
    ++rounds;
  }
  const double us = absl::ToDoubleMicroseconds(absl::Now() - start) / std::max<int64_t>(1, rounds);
  const RoundTripFloors& floors = setup->floors;
  state.counters["us/round"] = us;
  state.counters["unary_us"] = floors.unary_us;
  state.counters["ratio"] = us / floors.unary_us;
  state.counters["sync_stream_us"] = floors.sync_stream_us;
  state.counters["cb_stream_us"] = floors.callback_stream_us;
  state.counters["per_call_us"] = setup->per_call_us;
  state.counters["vs_per_call"] = us / setup->per_call_us;
}

// One worker of float32 and one of bfloat16 on the wire, against the same
// shard, taking turns round by round (so that the machine's load, which
// varies, weighs on both alike):
//   f32_rounds/s, bf16_rounds/s   PushPull rounds per second of each
//   rounds_ratio                  bf16_rounds/s / f32_rounds/s
//   f32_MB/s, bf16_MB/s           payload bytes on the wire per second, up +
//                                 down (4 or 2 bytes per value)
//   bf16_model_MB/s               bfloat16 rounds counted in float32 bytes:
//                                 the model moved per second
void BM_WireDtype(benchmark::State& state) {
  const Config config{static_cast<uint64_t>(state.range(0)), 1, 1};
  PsSetup* setup = SetupFor(config, state);
  if (setup == nullptr) return;
  if (setup->bf16_client == nullptr) {
    ClientOptions options = setup->options;
    options.worker_name = "bench-bf16";
    options.wire_dtype = Dtype::kBfloat16;
    absl::StatusOr<std::unique_ptr<PsClient>> client = PsClient::Connect(options);
    absl::Status status =
        client.ok() ? (*client)->Pull({"model"}, &setup->bf16_weights) : client.status();
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
    setup->bf16_client = *std::move(client);
  }
  absl::Duration f32_time, bf16_time;
  int64_t rounds = 0;
  for (auto _ : state) {
    absl::Time start = absl::Now();
    absl::Status status = setup->clients[0]->PushPull(setup->gradients[0], &setup->weights[0]);
    const absl::Time middle = absl::Now();
    if (status.ok()) {
      status = setup->bf16_client->PushPull(setup->gradients[0], &setup->bf16_weights);
    }
    if (!status.ok()) {
      state.SkipWithError(status.ToString().c_str());
      return;
    }
    f32_time += middle - start;
    bf16_time += absl::Now() - middle;
    ++rounds;
  }
  if (rounds == 0) return;
  const double f32_rounds_per_s = rounds / absl::ToDoubleSeconds(f32_time);
  const double bf16_rounds_per_s = rounds / absl::ToDoubleSeconds(bf16_time);
  const double values_per_round = 2.0 * config.elements;  // up + down
  state.counters["f32_rounds/s"] = f32_rounds_per_s;
  state.counters["bf16_rounds/s"] = bf16_rounds_per_s;
  state.counters["rounds_ratio"] = bf16_rounds_per_s / f32_rounds_per_s;
  state.counters["f32_MB/s"] = f32_rounds_per_s * values_per_round * 4 / 1e6;
  state.counters["bf16_MB/s"] = bf16_rounds_per_s * values_per_round * 2 / 1e6;
  state.counters["bf16_model_MB/s"] = bf16_rounds_per_s * values_per_round * 4 / 1e6;
}

// Rounds per second and the spread of one round's latency when `workers`
// threads each run rounds back to back for `duration` (no barrier between
// workers, as real asynchronous workers run).
struct FreeRun {
  double rounds_per_s = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  // CPU seconds per second of this process and `servers` together: how
  // many of the machine's cores the run kept busy.
  double cores_busy = 0;
};

absl::StatusOr<FreeRun> RunFree(int workers, absl::Duration duration,
                                const std::function<absl::Status(int)>& round,
                                const std::vector<pid_t>& servers) {
  std::vector<std::vector<double>> latencies(workers);
  std::vector<absl::Status> results(workers);
  const double cpu_start = CpuSecondsWith(servers);
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&, w] {
      while (absl::Now() < end) {
        const absl::Time t0 = absl::Now();
        results[w] = round(w);
        if (!results[w].ok()) return;
        latencies[w].push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double cpu_seconds = CpuSecondsWith(servers) - cpu_start;
  for (const absl::Status& s : results) RETURN_IF_ERROR(s);
  std::vector<double> all;
  for (const std::vector<double>& l : latencies) all.insert(all.end(), l.begin(), l.end());
  if (all.empty()) return absl::DeadlineExceededError("no round finished in time");
  std::sort(all.begin(), all.end());
  FreeRun run;
  run.rounds_per_s = all.size() / seconds;
  run.p50_ms = all[all.size() / 2];
  run.p99_ms = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  run.cores_busy = cpu_seconds / seconds;
  return run;
}

// Many asynchronous workers on 1 or 2 shards: total rounds/s and p50/p99
// of one round, for PsClient::PushPull against the dcasgd-ps shards and, in
// the same run just before, for the raw echo stream with as many workers.
// cores_busy (raw_cores_busy): CPU seconds per second of the bench and the
// shards (the raw servers) together while measured; on a machine of C cores
// rounds/s can grow with workers only while it is below C.
void BM_ManyWorkers(benchmark::State& state) {
  const Config config{static_cast<uint64_t>(state.range(0)), static_cast<int>(state.range(1)),
                      static_cast<int>(state.range(2))};
  PsSetup* setup = SetupFor(config, state);
  if (setup == nullptr) return;
  constexpr absl::Duration kRun = absl::Seconds(4);
  for (auto _ : state) {
    std::vector<std::unique_ptr<ChildProcess>> servers;
    std::vector<std::string> addresses;
    for (int s = 0; s < config.shards; ++s) {
      const std::string port_file = absl::StrCat(TempDir(), "/many-raw-", s, ".port");
      absl::StatusOr<std::unique_ptr<ChildProcess>> child =
          ChildProcess::Start({SelfPath(), "--raw_server", port_file}, port_file);
      if (!child.ok()) {
        state.SkipWithError(child.status().ToString().c_str());
        return;
      }
      addresses.push_back((*child)->address());
      servers.push_back(*std::move(child));
    }
    std::vector<std::unique_ptr<RawWorker>> raw_workers;
    for (int w = 0; w < config.workers; ++w) {
      raw_workers.push_back(std::make_unique<RawWorker>(addresses, config.elements));
    }
    std::vector<pid_t> pids;
    for (const auto& server : servers) pids.push_back(server->pid());
    absl::StatusOr<FreeRun> raw = RunFree(
        config.workers, kRun, [&](int w) { return raw_workers[w]->Round(); }, pids);
    servers.clear();
    pids.clear();
    for (const auto& shard : setup->shards) pids.push_back(shard->pid());
    absl::StatusOr<FreeRun> ps = RunFree(
        config.workers, kRun,
        [&](int w) { return setup->clients[w]->PushPull(setup->gradients[w], &setup->weights[w]); },
        pids);
    if (!raw.ok() || !ps.ok()) {
      state.SkipWithError((raw.ok() ? ps.status() : raw.status()).ToString().c_str());
      return;
    }
    state.counters["rounds/s"] = ps->rounds_per_s;
    state.counters["p50_ms"] = ps->p50_ms;
    state.counters["p99_ms"] = ps->p99_ms;
    state.counters["raw_rounds/s"] = raw->rounds_per_s;
    state.counters["raw_p50_ms"] = raw->p50_ms;
    state.counters["raw_p99_ms"] = raw->p99_ms;
    state.counters["ratio"] = ps->rounds_per_s / raw->rounds_per_s;
    state.counters["cores_busy"] = ps->cores_busy;
    state.counters["raw_cores_busy"] = raw->cores_busy;
  }
}

// ---------------------------------------------------------------------------
// Replicated shards: one shard alone and the same shard as a pair.

// The replication role `address` reports in GetStatus ("" when it does not
// answer).
std::string RoleOf(const std::string& address) {
  auto stub =
      v1::ParameterShard::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  v1::ShardStatus status;
  if (!stub->GetStatus(&context, v1::GetStatusRequest(), &status).ok()) return "";
  return status.replication_role();
}

// One shard (alone, or a witness and members a and b), `workers` clients
// that declared and pulled a model of `elements` floats, and free-running
// rounds of them for `duration`.
absl::StatusOr<FreeRun> RunShard(bool paired, uint64_t elements, int workers,
                                 absl::Duration duration) {
#if !defined(DCASGD_PS_BINARY) || !defined(DCASGD_WITNESS_BINARY)
  return absl::FailedPreconditionError("built without dcasgd-ps or dcasgd-witness");
#else
  // A fresh directory per run: a witness or member finding an earlier
  // run's registers and epochs would wait for that run's peer.
  static int runs = 0;  // benchmarks run one at a time, on one thread
  const std::string dir = absl::StrCat(TempDir(), paired ? "/pair-" : "/alone-", ++runs);
  mkdir(dir.c_str(), 0700);
  const std::vector<std::string> common = {
      "--metrics_address=", "--shard_index=0",
      "--shard_count=1",    "--update_rule=dcasgd-a",
      "--lr=0.01",          absl::StrCat("--max_message_bytes=", kMaxMessageBytes)};
  std::vector<std::unique_ptr<ChildProcess>> children;
  ClientOptions options;
  options.max_message_bytes = kMaxMessageBytes;
  if (!paired) {
    std::vector<std::string> argv = {DCASGD_PS_BINARY, "--listen=127.0.0.1:0",
                                     absl::StrCat("--port_file=", dir, "/ps.port")};
    argv.insert(argv.end(), common.begin(), common.end());
    ASSIGN_OR_RETURN(auto shard, ChildProcess::Start(argv, dir + "/ps.port"));
    options.shard_addresses.push_back(shard->address());
    children.push_back(std::move(shard));
  } else {
    ASSIGN_OR_RETURN(auto witness,
                     ChildProcess::Start({DCASGD_WITNESS_BINARY, "--listen=127.0.0.1:0",
                                          "--metrics_address=", "--shard_count=1",
                                          absl::StrCat("--state_dir=", dir, "/witness"),
                                          absl::StrCat("--port_file=", dir, "/witness.port")},
                                         dir + "/witness.port"));
    const std::string address[2] = {absl::StrCat("127.0.0.1:", FreePort()),
                                    absl::StrCat("127.0.0.1:", FreePort())};
    for (int m = 0; m < 2; ++m) {
      const std::string name = m == 0 ? "a" : "b";
      std::vector<std::string> argv = {DCASGD_PS_BINARY,
                                       absl::StrCat("--listen=", address[m]),
                                       absl::StrCat("--port_file=", dir, "/", name, ".port"),
                                       "--replicas=2",
                                       absl::StrCat("--member=", name),
                                       absl::StrCat("--peer_address=", address[1 - m]),
                                       absl::StrCat("--witness_address=", witness->address()),
                                       absl::StrCat("--checkpoint_dir=", dir, "/", name),
                                       "--checkpoint_interval_seconds=3600"};
      argv.insert(argv.end(), common.begin(), common.end());
      ASSIGN_OR_RETURN(auto member,
                       ChildProcess::Start(argv, absl::StrCat(dir, "/", name, ".port")));
      children.push_back(std::move(member));
    }
    children.push_back(std::move(witness));
    options.shard_addresses.push_back(address[0]);
    options.replica_addresses.push_back(address[1]);
  }
  std::vector<std::unique_ptr<PsClient>> clients;
  std::vector<TensorMap> gradients(workers), weights(workers);
  const TensorSpec spec = ModelSpec(elements);
  for (int w = 0; w < workers; ++w) {
    options.worker_name = absl::StrCat("bench-worker-", w);
    ASSIGN_OR_RETURN(auto client, PsClient::Connect(options));
    if (w == 0) RETURN_IF_ERROR(client->Declare({spec}));
    RETURN_IF_ERROR(client->Pull({"model"}, &weights[w]));
    gradients[w]["model"].assign(elements, 0.0005f);
    clients.push_back(std::move(client));
  }
  if (paired) {
    // Measure the pair, not a primary alone while its replica catches up.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (RoleOf(options.shard_addresses[0]) != "primary") {
      if (absl::Now() > deadline) return absl::DeadlineExceededError("the pair did not form");
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  // Warm-up: a round per worker.
  RETURN_IF_ERROR(
      RunWorkers(workers, [&](int w) { return clients[w]->PushPull(gradients[w], &weights[w]); }));
  absl::StatusOr<FreeRun> run =
      RunFree(workers, duration,
              [&](int w) { return clients[w]->PushPull(gradients[w], &weights[w]); }, {});
  if (run.ok() && paired && RoleOf(options.shard_addresses[0]) != "primary") {
    return absl::InternalError("the pair came apart while measured");
  }
  return run;
#endif
}

// What synchronous replication costs: `workers` asynchronous workers
// running PushPull rounds back to back for 4 s against one shard alone, then
// for 4 s against the same shard as a pair (every answer waits for the
// replica's acknowledgement), in the same run.
//   rounds/s, p50_ms, p99_ms                     the pair
//   alone_rounds/s, alone_p50_ms, alone_p99_ms   the shard alone
//   ratio                                        rounds/s / alone_rounds/s
void BM_Replicated(benchmark::State& state) {
  const uint64_t elements = static_cast<uint64_t>(state.range(0));
  const int workers = static_cast<int>(state.range(1));
  constexpr absl::Duration kRun = absl::Seconds(4);
  for (auto _ : state) {
    absl::StatusOr<FreeRun> alone = RunShard(false, elements, workers, kRun);
    absl::StatusOr<FreeRun> pair =
        alone.ok() ? RunShard(true, elements, workers, kRun) : alone.status();
    if (!pair.ok()) {
      state.SkipWithError(pair.status().ToString().c_str());
      return;
    }
    state.counters["rounds/s"] = pair->rounds_per_s;
    state.counters["p50_ms"] = pair->p50_ms;
    state.counters["p99_ms"] = pair->p99_ms;
    state.counters["alone_rounds/s"] = alone->rounds_per_s;
    state.counters["alone_p50_ms"] = alone->p50_ms;
    state.counters["alone_p99_ms"] = alone->p99_ms;
    state.counters["ratio"] = pair->rounds_per_s / alone->rounds_per_s;
  }
}

// 7850 floats (softmax, 31 KB), 1 Mi and 10 Mi floats; 1 and 4 workers.
BENCHMARK(BM_Replicated)
    ->ArgNames({"floats", "workers"})
    ->ArgsProduct({{7850, 1 << 20, 10 << 20}, {1, 4}})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

// 7850 floats (softmax, 31 KB) and 1 Mi floats; 1 and 2 shards; 1, 2, 4
// and 16 workers (whether rounds/s grow with workers until the cores are
// full: cores_busy says when they are). One measured iteration of 4 s per
// side.
BENCHMARK(BM_ManyWorkers)
    ->ArgNames({"floats", "shards", "workers"})
    ->ArgsProduct({{7850, 1 << 20}, {1, 2}, {1, 2, 4, 16}})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

// Model floats (1 Mi and 10 Mi), one shard, one worker of each dtype.
BENCHMARK(BM_WireDtype)
    ->ArgNames({"floats"})
    ->Arg(1 << 20)
    ->Arg(10 << 20)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->MinTime(3.0);

// 7850 floats: the softmax model (31 KB); 262144: 1 MiB.
BENCHMARK(BM_RoundTrip)
    ->ArgNames({"floats"})
    ->Arg(7850)
    ->Arg(1 << 18)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime()
    ->MinTime(3.0);

}  // namespace
}  // namespace dcasgd

int main(int argc, char** argv) {
  // As dcasgd-ps and dcasgd-worker do: the client side and the raw
  // baseline's server get the same allocator settings as the shards
  // (DCASGD_MALLOC_DEFAULTS=1 turns them off for all of them) and no lock
  // order tracking.
  dcasgd::PrepareServiceProcess();
  if (argc == 3 && std::strcmp(argv[1], "--raw_server") == 0) {
    return dcasgd::RunRawServer(argv[2]);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  dcasgd::CurrentSetup().reset();
  return 0;
}
