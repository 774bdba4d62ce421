// Hostile clients against real dcasgd-ps processes: every defect of the
// hostile-input review, each sent the way a broken or malicious client would
// send it (raw bytes through gRPC's generic stub where the typed stub cannot
// say it), with what the shard must do instead. docs/security.md lists the
// limits these tests hold the shard to.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "clients/cpp/ps_client.h"
#include "dcasgd/v1/coordinator.grpc.pb.h"
#include "dcasgd/v1/ps.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/grpc.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "tests/testing/exchange_round.h"
#include "tests/testing/float_bytes.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;
using testing::PsProcess;

// --- helpers ----------------------------------------------------------------

using testing::Bytes;
using testing::Floats;

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

template <typename Message>
grpc::ByteBuffer Serialized(const Message& message) {
  return Buffer(message.SerializeAsString());
}

std::shared_ptr<grpc::Channel> Channel(const std::string& address, bool large_messages = false) {
  grpc::ChannelArguments args;
  // Each test's own connection, so one test's broken stream cannot touch
  // another's.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (large_messages) {
    args.SetMaxSendMessageSize(-1);
    args.SetMaxReceiveMessageSize(-1);
  }
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// A raw call of any kind: sends `requests` (then half-closes, unless
// `cancel_instead` cancels the call after the last write), reads every
// response, returns the status. Works for unary, client-, server- and bidi-
// streaming methods alike (they differ only in how many messages go each
// way).
class RawCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  RawCall(grpc::GenericStub* stub, const std::string& method,
          std::vector<grpc::ByteBuffer> requests, absl::Duration timeout,
          bool cancel_instead = false)
      : requests_(std::move(requests)), cancel_instead_(cancel_instead) {
    context_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    stub->PrepareBidiStreamingCall(&context_, method, grpc::StubOptions(), this);
    StartRead(&response_);
    NextWrite();
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the call ended; OnDone reports why
    NextWrite();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    {
      absl::MutexLock lock(&mu_);
      responses_.push_back(response_);
    }
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& status) override {
    status_ = status;
    done_.Notify();
  }

  grpc::Status Wait() {
    done_.WaitForNotification();
    return status_;
  }
  std::vector<grpc::ByteBuffer> responses() {
    absl::MutexLock lock(&mu_);
    return responses_;
  }

 private:
  void NextWrite() {
    if (next_ < requests_.size()) {
      StartWrite(&requests_[next_++]);
    } else if (cancel_instead_) {
      context_.TryCancel();
    } else {
      StartWritesDone();
    }
  }

  grpc::ClientContext context_;
  std::vector<grpc::ByteBuffer> requests_;
  const bool cancel_instead_;
  size_t next_ = 0;
  grpc::ByteBuffer response_;
  absl::Mutex mu_;
  std::vector<grpc::ByteBuffer> responses_ ABSL_GUARDED_BY(mu_);
  grpc::Status status_;
  absl::Notification done_;
};

grpc::Status Raw(grpc::GenericStub* stub, const std::string& method,
                 std::vector<grpc::ByteBuffer> requests, bool cancel_instead = false) {
  RawCall call(stub, method, std::move(requests), absl::Seconds(30), cancel_instead);
  return call.Wait();
}

// The sessions that HostileTest::Join got, by worker id, so that the
// helpers below act as the worker that joined (ids are random: one map
// serves every test). Tests of the session itself set sessions explicitly.
absl::Mutex sessions_mu;
std::map<uint64_t, std::string>& JoinedSessions() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sessions_mu) {
  static auto* sessions = new std::map<uint64_t, std::string>();  // never deleted
  return *sessions;
}
std::string SessionOf(uint64_t worker) {
  absl::MutexLock lock(&sessions_mu);
  auto it = JoinedSessions().find(worker);
  return it == JoinedSessions().end() ? std::string() : it->second;
}

// A push message; a first one (worker != 0) carries the worker's session.
v1::PushRequest Gradient(uint64_t worker, uint32_t count, const std::string& tensor, uint64_t chunk,
                         const std::vector<float>& values) {
  v1::PushRequest request;
  request.set_worker_id(worker);
  if (worker != 0) request.set_session(SessionOf(worker));
  request.set_chunk_count(count);
  request.mutable_gradient()->set_tensor(tensor);
  request.mutable_gradient()->set_chunk_index(chunk);
  request.mutable_gradient()->set_values(Bytes(values));
  return request;
}

// A value of the shard's /metrics text, or -1.
double Metric(const PsProcess& ps, const std::string& name) {
  absl::StatusOr<std::string> text = testing::HttpGet(ps.metrics_port(), "/metrics");
  if (!text.ok()) return -1;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
  }
  return -1;
}

// Resident memory of a process from /proc/<pid>/status ("VmRSS", "VmHWM").
uint64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  absl::StatusOr<std::string> text = [&]() -> absl::StatusOr<std::string> {
    FILE* f = std::fopen(absl::StrCat("/proc/", pid, "/status").c_str(), "r");
    if (f == nullptr) return absl::NotFoundError("no /proc status");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    std::fclose(f);
    return out;
  }();
  if (!text.ok()) return 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    if (!absl::StartsWith(line, field + ":")) continue;
    std::vector<absl::string_view> parts =
        absl::StrSplit(line.substr(field.size() + 1), ' ', absl::SkipWhitespace());
    uint64_t kib = 0;
    if (!parts.empty() && absl::SimpleAtoi(parts[0], &kib)) return kib * 1024;
  }
  return 0;
}

// One shard process of a test, with a typed and a raw stub.
class HostileTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags) {
    absl::StatusOr<std::unique_ptr<PsProcess>> ps = PsProcess::Start(std::move(flags));
    ASSERT_TRUE(ps.ok()) << ps.status();
    ps_ = *std::move(ps);
    channel_ = Channel(ps_->address(), /*large_messages=*/true);
    stub_ = v1::ParameterShard::NewStub(channel_);
    generic_ = std::make_unique<grpc::GenericStub>(channel_);
  }

  void Declare(const std::string& name, int64_t elements, uint32_t chunk_elements,
               float value = 1.0f) {
    v1::DeclareTensorsRequest request;
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name(name);
    spec->add_shape(elements);
    spec->set_chunk_elements(chunk_elements);
    spec->mutable_init()->mutable_constant()->set_value(value);
    v1::DeclareTensorsResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub_->DeclareTensors(&context, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  uint64_t Join(const std::string& name) {
    v1::JoinRequest request;
    request.set_worker_name(name);
    v1::JoinResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub_->Join(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    absl::MutexLock lock(&sessions_mu);
    JoinedSessions()[response.worker_id()] = response.session();
    return response.worker_id();
  }

  grpc::Status Leave(uint64_t worker) {
    v1::LeaveRequest request;
    request.set_worker_id(worker);
    request.set_session(SessionOf(worker));
    v1::LeaveResponse response;
    grpc::ClientContext context;
    return stub_->Leave(&context, request, &response);
  }

  // Every chunk of the pull, by index.
  std::map<uint64_t, std::vector<float>> Pull(uint64_t worker, const std::string& tensor) {
    v1::PullRequest request;
    request.set_worker_id(worker);
    request.set_session(SessionOf(worker));
    request.add_tensors(tensor);
    grpc::ClientContext context;
    auto reader = stub_->Pull(&context, request);
    std::map<uint64_t, std::vector<float>> chunks;
    v1::PullResponse message;
    while (reader->Read(&message)) {
      chunks[message.chunk().chunk_index()] = Floats(message.chunk().values());
    }
    const grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    return chunks;
  }

  v1::ShardStatus Status() {
    v1::ShardStatus status;
    grpc::ClientContext context;
    const grpc::Status s = stub_->GetStatus(&context, v1::GetStatusRequest(), &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  std::unique_ptr<PsProcess> ps_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ParameterShard::Stub> stub_;
  std::unique_ptr<grpc::GenericStub> generic_;
};

constexpr char kPush[] = "/dcasgd.v1.ParameterShard/Push";
constexpr char kPushPull[] = "/dcasgd.v1.ParameterShard/PushPull";
constexpr char kExchange[] = "/dcasgd.v1.ParameterShard/Exchange";

// A message of round `round` of an Exchange stream: the push message
// `push` (worker id, session, chunk count, step when its first) as a round.
v1::ExchangeRequest AsRound(uint64_t round, const v1::PushRequest& push, bool pull_back) {
  return testing::RoundOf(round, {push}, pull_back, /*header=*/push.worker_id() != 0);
}

// --- 1. a push is all or nothing --------------------------------------------

// One valid chunk, then a message above the shard's receive limit: the call
// fails, and nothing of the push may be applied, whether the oversized
// message was one of the announced chunks or an extra one after them, for
// Push and PushPull alike. Repeated, because the old shard applied the first
// chunk in most (not all) attempts.
TEST_F(HostileTest, OversizedMessageAfterAValidChunkAppliesNothing) {
  Start({"--update_rule=asgd", "--max_message_bytes=1048576"});
  Declare("w", 2048, 1024);
  const uint64_t worker = Join("w0");
  const auto before = Pull(worker, "w");
  const std::string oversized = std::string(2 << 20, 'x');
  for (int attempt = 0; attempt < 16; ++attempt) {
    const bool fused = attempt % 2 == 1;
    const uint32_t announced = attempt % 4 < 2 ? 2 : 1;
    v1::PushRequest big = Gradient(0, 0, "w", 1, {});
    big.mutable_gradient()->set_values(oversized);
    const grpc::Status status =
        Raw(generic_.get(), fused ? kPushPull : kPush,
            {Serialized(Gradient(worker, announced, "w", 0, std::vector<float>(1024, 1.0f))),
             Serialized(big)});
    EXPECT_FALSE(status.ok()) << "attempt " << attempt;
    ASSERT_EQ(Status().version(), 0u)
        << "attempt " << attempt << " (" << (fused ? "PushPull" : "Push") << ", announced "
        << announced << "): part of a failed push was applied";
  }
  EXPECT_EQ(Pull(0, "w"), before);
}

// Every chunk sent, but the client cancels instead of half-closing, or its
// deadline passes mid-stream: nothing is applied.
TEST_F(HostileTest, CancelledOrExpiredPushAppliesNothing) {
  Start({"--update_rule=asgd"});
  Declare("w", 8, 4);
  const uint64_t worker = Join("w0");
  Pull(worker, "w");
  for (const char* method : {kPush, kPushPull}) {
    const grpc::Status cancelled = Raw(generic_.get(), method,
                                       {Serialized(Gradient(worker, 2, "w", 0, {1, 1, 1, 1})),
                                        Serialized(Gradient(0, 0, "w", 1, {1, 1, 1, 1}))},
                                       /*cancel_instead=*/true);
    EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::CANCELLED) << cancelled.error_message();

    // One of two chunks, then silence until the deadline.
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
    v1::PushResponse response;
    auto writer = stub_->Push(&context, &response);
    ASSERT_TRUE(writer->Write(Gradient(worker, 2, "w", 0, {1, 1, 1, 1})));
    const grpc::Status expired = writer->Finish();
    EXPECT_EQ(expired.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << expired.error_message();
  }
  EXPECT_EQ(Status().version(), 0u);
  // And a complete push still works.
  grpc::ClientContext context;
  v1::PushResponse response;
  auto writer = stub_->Push(&context, &response);
  writer->Write(Gradient(worker, 2, "w", 0, {1, 1, 1, 1}));
  writer->Write(Gradient(0, 0, "w", 1, {1, 1, 1, 1}));
  writer->WritesDone();
  ASSERT_TRUE(writer->Finish().ok());
  EXPECT_EQ(response.version(), 1u);
}

// The same for a round of an Exchange stream: a round is applied only when
// every announced chunk arrived; a stream that breaks first (a message above
// the size limit, a cancel, its deadline) applies nothing of it.
TEST_F(HostileTest, ExchangeAppliesNoIncompleteRound) {
  Start({"--update_rule=asgd", "--max_message_bytes=1048576"});
  Declare("w", 2048, 1024);
  const uint64_t worker = Join("w0");
  const auto before = Pull(worker, "w");
  const v1::PushRequest first = Gradient(worker, 2, "w", 0, std::vector<float>(1024, 1.0f));
  v1::PushRequest big = Gradient(0, 0, "w", 1, {});
  big.mutable_gradient()->set_values(std::string(2 << 20, 'x'));
  for (int attempt = 0; attempt < 8; ++attempt) {
    const grpc::Status status =
        Raw(generic_.get(), kExchange,
            {Serialized(AsRound(1, first, attempt % 2 == 1)), Serialized(AsRound(1, big, false))});
    EXPECT_FALSE(status.ok()) << "attempt " << attempt;
    ASSERT_EQ(Status().version(), 0u) << "attempt " << attempt << ": part of a round applied";
  }
  const grpc::Status cancelled =
      Raw(generic_.get(), kExchange, {Serialized(AsRound(1, first, true))},
          /*cancel_instead=*/true);
  EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::CANCELLED) << cancelled.error_message();
  {
    // One of two chunks, then silence until the deadline.
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(300)));
    auto stream = stub_->Exchange(&context);
    ASSERT_TRUE(stream->Write(AsRound(1, first, true)));
    v1::ExchangeResponse answer;
    EXPECT_FALSE(stream->Read(&answer)) << "an incomplete round was answered";
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  EXPECT_EQ(Status().version(), 0u);
  EXPECT_EQ(Pull(0, "w"), before);
  // The shard sees the ends of the streams a little after the client.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Metric(*ps_, "dcasgd_ps_inflight_bytes") != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(Metric(*ps_, "dcasgd_ps_inflight_bytes"), 0) << "every reservation was returned";
}

// --- 2. no backups for workers that are gone ---------------------------------

// A pull of thousands of chunks; after its first message the worker leaves.
// The rest of the stream still arrives (the values are the weights), but no
// backup of a departed worker may stay behind, however often it happens.
TEST_F(HostileTest, PullOfAWorkerThatLeftLeavesNoBackup) {
  Start({"--update_rule=dcasgd-a"});
  Declare("big", 4096 * 16, 16);
  for (int round = 0; round < 3; ++round) {
    const uint64_t worker = Join("leaver");
    v1::PullRequest request;
    request.set_worker_id(worker);
    request.set_session(SessionOf(worker));
    grpc::ClientContext context;
    auto reader = stub_->Pull(&context, request);
    v1::PullResponse message;
    ASSERT_TRUE(reader->Read(&message));
    ASSERT_TRUE(Leave(worker).ok());
    size_t received = 1;
    while (reader->Read(&message)) ++received;
    EXPECT_TRUE(reader->Finish().ok());
    EXPECT_EQ(received, 4096u);
    const v1::ShardStatus status = Status();
    EXPECT_EQ(status.active_workers(), 0u);
    EXPECT_EQ(status.backup_bytes(), 0u) << "round " << round;
  }
}

// The same with a lease that expires during the pull (16 MiB: more than the
// transport buffers before the client reads on).
TEST_F(HostileTest, PullOfAWorkerWhoseLeaseExpiredLeavesNoBackup) {
  Start({"--update_rule=dcasgd-c", "--lease_seconds=0.3"});
  Declare("big", 4096 * 1024, 1024);
  const uint64_t worker = Join("sleeper");
  v1::PullRequest request;
  request.set_worker_id(worker);
  request.set_session(SessionOf(worker));
  grpc::ClientContext context;
  auto reader = stub_->Pull(&context, request);
  v1::PullResponse message;
  ASSERT_TRUE(reader->Read(&message));
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Status().active_workers() != 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(Status().active_workers(), 0u) << "the lease did not expire";
  while (reader->Read(&message)) {
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(Status().backup_bytes(), 0u);
}

// PushPull replies become backups too: a worker that leaves while its
// PushPull of many chunks is being applied keeps none.
TEST_F(HostileTest, PushPullOfAWorkerThatLeavesLeavesNoBackup) {
  Start({"--update_rule=dcasgd-c"});
  Declare("big", 2048 * 256, 256);
  for (int round = 0; round < 4; ++round) {
    const uint64_t worker = Join("leaver");
    Pull(worker, "big");
    std::vector<grpc::ByteBuffer> messages;
    for (uint64_t c = 0; c < 2048; ++c) {
      messages.push_back(Serialized(
          Gradient(c == 0 ? worker : 0, c == 0 ? 2048 : 0, "big", c, std::vector<float>(256, 0))));
    }
    RawCall call(generic_.get(), kPushPull, std::move(messages), absl::Seconds(30));
    std::thread leaver([&] {
      // Leave as soon as the update started (the version moved).
      const absl::Time deadline = absl::Now() + absl::Seconds(10);
      while (Status().version() == static_cast<uint64_t>(round) && absl::Now() < deadline) {
      }
      EXPECT_TRUE(Leave(worker).ok());
    });
    call.Wait();
    leaver.join();
    EXPECT_EQ(Status().active_workers(), 0u);
    EXPECT_EQ(Status().backup_bytes(), 0u) << "round " << round;
  }
}

// --- 3. declarations have a memory budget ------------------------------------

TEST_F(HostileTest, HugeDeclarationsAreRejectedWithTheNumbersAndAllocateNothing) {
  Start({"--update_rule=dcasgd-a"});
  const uint64_t rss_before = ProcStatusBytes(ps_->pid(), "VmRSS");
  struct Case {
    std::vector<int64_t> shape;
    uint32_t chunk_elements;
  };
  for (const Case& c :
       {Case{{int64_t{1} << 40}, 0}, Case{{int64_t{1} << 31}, 0}, Case{{int64_t{1} << 31}, 1},
        Case{{1000000, 1000000}, 0}, Case{{int64_t{1} << 24}, 1}}) {
    v1::DeclareTensorsRequest request;
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name("huge");
    for (int64_t d : c.shape) spec->add_shape(d);
    spec->set_chunk_elements(c.chunk_elements);
    v1::DeclareTensorsResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    const grpc::Status status = stub_->DeclareTensors(&context, request, &response);
    const std::string shape =
        absl::StrCat(c.shape[0], c.shape.size() > 1 ? "x..." : "", " by ", c.chunk_elements);
    ASSERT_TRUE(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                status.error_code() == grpc::StatusCode::INVALID_ARGUMENT)
        << shape << ": " << status.error_code() << " " << status.error_message();
    EXPECT_FALSE(status.error_message().empty());
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      EXPECT_THAT(status.error_message(), ::testing::AnyOf(HasSubstr("budget"), HasSubstr("limit")))
          << shape;
    }
  }
  const v1::ShardStatus status = Status();
  EXPECT_EQ(status.tensors_size(), 0);
  EXPECT_EQ(status.weight_bytes(), 0u);
  // Nothing was allocated (a generous margin for gRPC's own buffers).
  EXPECT_LT(ProcStatusBytes(ps_->pid(), "VmRSS"), rss_before + (uint64_t{64} << 20));
}

TEST_F(HostileTest, JoinBeyondMaxWorkersIsResourceExhausted) {
  Start({"--max_workers=2"});
  Join("a");
  Join("b");
  v1::JoinRequest request;
  request.set_worker_name("c");
  v1::JoinResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub_->Join(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("max_workers"));
  EXPECT_EQ(Status().active_workers(), 2u);
  Join("a");  // a live worker's name replaces it: no new slot needed
  EXPECT_EQ(Status().active_workers(), 2u);
}

// A large (accepted) declaration allocates without the store's lock: other
// calls are answered while it runs.
TEST_F(HostileTest, ALargeDeclarationDoesNotBlockOtherCalls) {
  Start({"--update_rule=asgd"});
  Declare("small", 4, 4);
  std::atomic<bool> declared{false};
  grpc::Status declare_status;
  std::thread declarer([&] {
    v1::DeclareTensorsRequest request;
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name("large");
    spec->add_shape(int64_t{1} << 26);  // 256 MiB, a random draw per element
    spec->mutable_init()->mutable_uniform()->set_low(-1);
    spec->mutable_init()->mutable_uniform()->set_high(1);
    v1::DeclareTensorsResponse response;
    grpc::ClientContext context;
    declare_status = stub_->DeclareTensors(&context, request, &response);
    declared = true;
  });
  // Wait until the declaration is in the shard (its RSS grows), then ask.
  const uint64_t rss = ProcStatusBytes(ps_->pid(), "VmRSS");
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!declared && ProcStatusBytes(ps_->pid(), "VmRSS") < rss + (uint64_t{32} << 20) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  int answered_during = 0;
  while (!declared) {
    const v1::ShardStatus status = Status();
    if (declared) break;
    if (status.tensors_size() == 2) {
      // The shard finished and published it (its reply is still on the
      // way): it must be there whole, every chunk.
      for (const v1::TensorStatus& t : status.tensors()) {
        if (t.spec().name() != "large") continue;
        ASSERT_GT(t.spec().chunk_elements(), 0u);
        const uint64_t chunk = t.spec().chunk_elements();
        EXPECT_EQ(t.owned_chunks(), ((uint64_t{1} << 26) + chunk - 1) / chunk)
            << "the large tensor appeared before it was complete";
      }
      break;
    }
    EXPECT_EQ(status.tensors_size(), 1) << "a tensor other than the two declared appeared";
    auto chunks = Pull(0, "small");
    if (!declared) ++answered_during;
  }
  declarer.join();
  ASSERT_TRUE(declare_status.ok()) << declare_status.error_message();
  EXPECT_GT(answered_during, 0) << "GetStatus and Pull waited for the declaration";
  EXPECT_EQ(Status().tensors_size(), 2);
}

// A budget larger than the memory the shard can really get (here an address-
// space limit of 1 GiB, set with prlimit): the allocation fails part way, and
// the declaration is RESOURCE_EXHAUSTED with nothing kept, not a crash or a
// bare UNKNOWN.
TEST_F(HostileTest, AnAllocationFailureDuringADeclarationIsResourceExhausted) {
  absl::StatusOr<std::string> dir = testing::MakeTempDir("hostile-prlimit");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string wrapper = *dir + "/dcasgd-ps";
  {
    FILE* f = std::fopen(wrapper.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fprintf(f, "#!/bin/sh\nexec prlimit --as=1073741824 '%s' \"$@\"\n",
                 testing::PsBinaryPath().c_str());
    std::fclose(f);
    ASSERT_EQ(chmod(wrapper.c_str(), 0755), 0);
  }
  const std::string saved = testing::PsBinaryPath();
  setenv("DCASGD_PS_BINARY", wrapper.c_str(), 1);
  Start({"--update_rule=asgd", "--memory_budget_bytes=68719476736",
         "--max_inflight_bytes=8589934592"});
  setenv("DCASGD_PS_BINARY", saved.c_str(), 1);
  v1::DeclareTensorsRequest request;
  v1::TensorSpec* spec = request.add_tensors();
  spec->set_name("more-than-there-is");
  spec->add_shape(int64_t{1} << 30);  // 4 GiB
  v1::DeclareTensorsResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub_->DeclareTensors(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("could not allocate"));
  EXPECT_EQ(Status().tensors_size(), 0);
  Declare("small", 1024, 256);  // and the shard goes on serving
  EXPECT_EQ(Status().tensors_size(), 1);
  ps_.reset();
  testing::RemoveTree(*dir);
}

// --- 4. the data coordinator's bounds ----------------------------------------

TEST_F(HostileTest, AHugeDataJobIsRejectedAndLeavesNothingBehind) {
  Start({});
  auto coordinator = v1::DataCoordinator::NewStub(channel_);
  for (auto [shards, epochs] : {std::pair<uint32_t, uint32_t>{4000000000u, 4000000000u},
                                {4000000000u, 1},
                                {1, 4000000000u},
                                {1u << 16, 1u << 16}}) {
    v1::AcquireDataShardRequest request;
    request.set_worker_name("w");
    request.set_num_data_shards(shards);
    request.set_epochs(epochs);
    v1::AcquireDataShardResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    const grpc::Status status = coordinator->AcquireDataShard(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << shards << " x " << epochs << ": " << status.error_message();
    v1::JobStatus job;
    grpc::ClientContext status_context;
    ASSERT_TRUE(coordinator->GetJobStatus(&status_context, v1::GetJobStatusRequest(), &job).ok());
    EXPECT_FALSE(job.configured());
  }
  v1::AcquireDataShardRequest request;
  request.set_worker_name("w");
  request.set_num_data_shards(10);
  request.set_epochs(2);
  v1::AcquireDataShardResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(coordinator->AcquireDataShard(&context, request, &response).ok());
  EXPECT_TRUE(response.has_lease());
  EXPECT_LT(ProcStatusBytes(ps_->pid(), "VmHWM"), uint64_t{512} << 20);
}

// --- 5. malformed bodies -----------------------------------------------------

TEST_F(HostileTest, MalformedBodiesAreInvalidArgumentWithAMessage) {
  absl::StatusOr<std::string> checkpoints = testing::MakeTempDir("hostile-malformed");
  ASSERT_TRUE(checkpoints.ok()) << checkpoints.status();
  Start({"--checkpoint_dir=" + *checkpoints});
  const std::vector<std::string> methods = {"/dcasgd.v1.ParameterShard/DeclareTensors",
                                            "/dcasgd.v1.ParameterShard/Join",
                                            "/dcasgd.v1.ParameterShard/Heartbeat",
                                            "/dcasgd.v1.ParameterShard/Leave",
                                            "/dcasgd.v1.ParameterShard/Pull",
                                            kPush,
                                            kPushPull,
                                            kExchange,
                                            "/dcasgd.v1.ParameterShard/GetStatus",
                                            "/dcasgd.v1.ParameterShard/Checkpoint",
                                            "/dcasgd.v1.DataCoordinator/AcquireDataShard",
                                            "/dcasgd.v1.DataCoordinator/RenewDataLease",
                                            "/dcasgd.v1.DataCoordinator/CompleteDataShard",
                                            "/dcasgd.v1.DataCoordinator/GetJobStatus"};
  const std::vector<std::string> bodies = {
      std::string("\xff\xff\xff\xff", 4),  // a tag that never ends
      std::string("\x0a\x05"
                  "ab",
                  4),          // field 1 says 5 bytes, 2 follow
      std::string("\x08", 1),  // a varint field with no value
  };
  for (const std::string& method : methods) {
    for (size_t b = 0; b < bodies.size(); ++b) {
      const grpc::Status status = Raw(generic_.get(), method, {Buffer(bodies[b])});
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << method << " body " << b << ": " << status.error_code() << " '"
          << status.error_message() << "'";
      EXPECT_FALSE(status.error_message().empty()) << method << " body " << b;
    }
  }
  EXPECT_EQ(Status().version(), 0u);
  ps_.reset();
  testing::RemoveTree(*checkpoints);
}

// --- 6. bounded names and messages -------------------------------------------

// A default client (8 KiB metadata limit) sees the shard's own answer to a
// 1 MiB name, not "metadata size exceeds limit".
TEST_F(HostileTest, LongNamesGetShortAnswers) {
  Start({});
  Declare("w", 4, 4);
  auto stub = v1::ParameterShard::NewStub(Channel(ps_->address()));
  const std::string huge(1 << 20, 'n');
  const std::string longest(256, 'n');  // the limit: undeclared, so NOT_FOUND
  const uint64_t worker = Join("w0");
  for (const auto& [name, code] : {std::pair{huge, grpc::StatusCode::INVALID_ARGUMENT},
                                   std::pair{longest, grpc::StatusCode::NOT_FOUND}}) {
    v1::PullRequest pull;
    pull.add_tensors(name);
    grpc::ClientContext pull_context;
    auto reader = stub->Pull(&pull_context, pull);
    v1::PullResponse message;
    while (reader->Read(&message)) {
    }
    const grpc::Status pulled = reader->Finish();
    EXPECT_EQ(pulled.error_code(), code) << pulled.error_message().substr(0, 200);
    EXPECT_LT(pulled.error_message().size(), 512u);

    v1::PushResponse response;
    grpc::ClientContext push_context;
    auto writer = stub->Push(&push_context, &response);
    writer->Write(Gradient(worker, 1, name, 0, {1, 1, 1, 1}));
    writer->WritesDone();
    const grpc::Status pushed = writer->Finish();
    EXPECT_EQ(pushed.error_code(), code) << pushed.error_message().substr(0, 200);
    EXPECT_LT(pushed.error_message().size(), 512u);
  }
  {
    v1::DeclareTensorsRequest request;
    request.add_tensors()->set_name(huge);
    v1::DeclareTensorsResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub->DeclareTensors(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_LT(status.error_message().size(), 512u);
  }
  {
    v1::JoinRequest request;
    request.set_worker_name(huge);
    v1::JoinResponse response;
    grpc::ClientContext context;
    const grpc::Status status = stub->Join(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_LT(status.error_message().size(), 512u);
  }
  {
    auto coordinator = v1::DataCoordinator::NewStub(Channel(ps_->address()));
    v1::AcquireDataShardRequest request;
    request.set_worker_name(huge);
    request.set_num_data_shards(1);
    request.set_epochs(1);
    v1::AcquireDataShardResponse response;
    grpc::ClientContext context;
    const grpc::Status status = coordinator->AcquireDataShard(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_LT(status.error_message().size(), 512u);
  }
  EXPECT_EQ(Status().tensors_size(), 1);
}

// --- 7. a push is checked before it is buffered ------------------------------

// A worker id that never joined: the first message is rejected, so the shard
// reads (and holds) one chunk, not the hundreds of MB that follow.
TEST_F(HostileTest, PushOfAnUnknownWorkerIsRejectedAtItsFirstMessage) {
  Start({});
  Declare("w", 64 << 18, 1 << 18);  // 64 chunks of 1 MiB
  std::vector<grpc::ByteBuffer> messages;
  const std::vector<float> chunk(1 << 18, 1.0f);
  for (uint64_t c = 0; c < 64; ++c) {
    messages.push_back(Serialized(Gradient(c == 0 ? 424242 : 0, c == 0 ? 64 : 0, "w", c, chunk)));
  }
  const grpc::Status status = Raw(generic_.get(), kPush, std::move(messages));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  const double received = Metric(*ps_, "dcasgd_ps_received_bytes_total");
  EXPECT_GE(received, 0) << "no metric";
  EXPECT_LE(received, double{1 << 20}) << "the shard read past the first message";
}

// Many concurrent pushes that together exceed the shard-wide in-flight
// budget: the streams wait their turn (back-pressure) instead of failing.
TEST_F(HostileTest, ConcurrentPushesBeyondTheInflightBudgetWaitAndSucceed) {
  Start({"--update_rule=asgd", "--max_inflight_bytes=1048576"});
  constexpr int kClients = 8;
  constexpr int kRounds = 4;
  // 1 MiB per push, the whole budget: each push holds all of it from its
  // first message to its last answer, so pushes that overlap must wait.
  constexpr int64_t kElements = 1 << 18;
  std::vector<std::unique_ptr<PsClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    ClientOptions options;
    options.shard_addresses = {ps_->address()};
    options.worker_name = absl::StrCat("w", i);
    absl::StatusOr<std::unique_ptr<PsClient>> client = PsClient::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*std::move(client));
  }
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {kElements};
  spec.chunk_elements = 1 << 14;
  const absl::Status declared = clients[0]->Declare({spec});
  ASSERT_TRUE(declared.ok()) << declared;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      TensorMap weights;
      if (!clients[i]->Pull({"w"}, &weights).ok()) ++failures;
      TensorMap gradient = {{"w", std::vector<float>(kElements, 0.001f)}};
      for (int r = 0; r < kRounds; ++r) {
        absl::Status s =
            r % 2 ? clients[i]->PushPull(gradient, &weights) : clients[i]->Push(gradient);
        if (!s.ok()) {
          ADD_FAILURE() << s;
          ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(Status().version(), static_cast<uint64_t>(kClients * kRounds));
  EXPECT_GT(Metric(*ps_, "dcasgd_ps_inflight_waits_total"), 0) << "no stream ever waited";
  EXPECT_EQ(Metric(*ps_, "dcasgd_ps_inflight_bytes"), 0);
}

// SSGD rounds need one push of every worker at once: pushes that wait for
// their round must not hold the in-flight budget that the round's other
// pushes wait for.
TEST_F(HostileTest, SsgdRoundsLargerThanTheInflightBudgetComplete) {
  Start({"--sync=ssgd", "--max_inflight_bytes=1048576"});
  constexpr int kClients = 6;
  constexpr int64_t kElements = 1 << 17;  // 512 KiB: two pushes fill the budget
  std::vector<std::unique_ptr<PsClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    ClientOptions options;
    options.shard_addresses = {ps_->address()};
    options.worker_name = absl::StrCat("w", i);
    options.rpc_timeout = absl::Seconds(30);
    absl::StatusOr<std::unique_ptr<PsClient>> client = PsClient::Connect(options);
    ASSERT_TRUE(client.ok()) << client.status();
    clients.push_back(*std::move(client));
  }
  TensorSpec spec;
  spec.name = "w";
  spec.shape = {kElements};
  for (auto& client : clients) ASSERT_TRUE(client->Declare({spec}).ok());
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      TensorMap weights;
      TensorMap gradient = {{"w", std::vector<float>(kElements, 0.001f)}};
      for (int round = 0; round < 2; ++round) {
        const absl::Status s = clients[i]->PushPull(gradient, &weights);
        EXPECT_TRUE(s.ok()) << s;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(Status().version(), 2u) << "two SSGD rounds";
  EXPECT_EQ(Metric(*ps_, "dcasgd_ps_inflight_bytes"), 0);
}

// --- 9. finite but huge gradients --------------------------------------------

TEST_F(HostileTest, HugeFiniteGradientsCannotMakeTheWeightsNonFinite) {
  Start({"--update_rule=dcasgd-c", "--lr=10"});
  Declare("w", 4, 4);
  const uint64_t attacker = Join("attacker");
  const uint64_t honest = Join("honest");
  Pull(attacker, "w");
  auto push = [&](uint64_t worker, float g) {
    grpc::ClientContext context;
    auto stream = stub_->PushPull(&context);
    stream->Write(Gradient(worker, 1, "w", 0, {g, -g, g, 1}));
    stream->WritesDone();
    v1::PullResponse message;
    std::vector<float> values;
    while (stream->Read(&message)) values = Floats(message.chunk().values());
    return std::make_pair(stream->Finish(), values);
  };
  const auto [rejected, none] = push(attacker, std::numeric_limits<float>::max());
  EXPECT_EQ(rejected.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << rejected.error_message();
  EXPECT_EQ(Status().version(), 0u);
  // Gradients at the bound, many times, with a large rate: the weights stay
  // finite and within the clamp, and so does every honest reply.
  for (int i = 0; i < 50; ++i) {
    const auto [status, values] = push(attacker, 1e6f);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (float v : values) {
      ASSERT_TRUE(std::isfinite(v)) << "push " << i;
      ASSERT_LE(std::fabs(v), 1e6f);
    }
  }
  Pull(honest, "w");
  const auto [status, values] = push(honest, 0.5f);
  ASSERT_TRUE(status.ok()) << status.error_message();
  for (float v : values) EXPECT_TRUE(std::isfinite(v));
  for (const auto& [index, chunk] : Pull(0, "w")) {
    for (float v : chunk) EXPECT_TRUE(std::isfinite(v) && std::fabs(v) <= 1e6f);
  }
}

}  // namespace
}  // namespace dcasgd
