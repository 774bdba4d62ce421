// The witness (services/witness/): the register rules of docs/design.md,
// "Members, roles and the witness", on WitnessRegisters with an in-memory
// saver, its file, and a real dcasgd-witness process on loopback: one grant
// per epoch under concurrent claims, registers kept across SIGKILL, role
// checks, health and metrics.
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "auth/tls.h"
#include "base/file.h"
#include "dcasgd/v1/replication.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "services/witness/witness_options.h"
#include "services/witness/witness_registers.h"
#include "tests/testing/ps_process.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

// ---------------------------------------------------------------------------
// The rules, on the registers alone.

// Registers of `shard_count` shards whose saves land in `saved` (every text
// written, in order) and fail while `fail` is set.
struct Recorded {
  std::vector<std::string> saved;
  bool fail = false;
};

std::unique_ptr<WitnessRegisters> MakeRegisters(uint32_t shard_count, Recorded* recorded) {
  return std::make_unique<WitnessRegisters>(shard_count, std::vector<WitnessRegister>{},
                                            [recorded](const std::string& text) {
                                              if (recorded->fail)
                                                return absl::ResourceExhaustedError("disk full");
                                              recorded->saved.push_back(text);
                                              return absl::OkStatus();
                                            });
}

WitnessRegister Reg(uint64_t epoch, Member holder, bool paired) {
  return WitnessRegister{epoch, holder, paired};
}

// The register of `shard` in the last text saved.
WitnessRegister LastSaved(const Recorded& recorded, uint32_t shard) {
  uint32_t count = 0;
  absl::StatusOr<std::vector<WitnessRegister>> parsed =
      WitnessRegisters::Parse(recorded.saved.back(), &count);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? (*parsed)[shard] : WitnessRegister{};
}

TEST(WitnessRules, NewJobGoesToMemberA) {
  Recorded recorded;
  auto registers = MakeRegisters(2, &recorded);
  absl::StatusOr<ClaimResult> b = registers->Claim(0, 2, Member::kB, 0, "start");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(b->granted);  // b catches up from a
  EXPECT_EQ(b->state, Reg(0, Member::kNone, false));
  EXPECT_TRUE(recorded.saved.empty());  // a refusal writes nothing

  absl::StatusOr<ClaimResult> a = registers->Claim(0, 2, Member::kA, 0, "start");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->granted);
  EXPECT_EQ(a->state, Reg(1, Member::kA, false));
  ASSERT_EQ(recorded.saved.size(), 1u);
  EXPECT_EQ(LastSaved(recorded, 0), Reg(1, Member::kA, false));  // saved before the answer
  EXPECT_EQ(*registers->Get(1), Reg(0, Member::kNone, false));   // other shards untouched
}

TEST(WitnessRules, SoloRegisterOnlyItsHolderMayClaim) {
  Recorded recorded;
  auto registers = MakeRegisters(1, &recorded);
  ASSERT_TRUE(registers->Claim(0, 1, Member::kA, 0, "")->granted);
  // b (the replica that timed out) is refused: a solo primary may hold
  // updates b lacks. The answer is the register that refused.
  absl::StatusOr<ClaimResult> b = registers->Claim(0, 1, Member::kB, 1, "primary silent");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->granted);
  EXPECT_EQ(b->state, Reg(1, Member::kA, false));
  // a restarting as solo primary renews.
  absl::StatusOr<ClaimResult> a = registers->Claim(0, 1, Member::kA, 1, "restart");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->granted);
  EXPECT_EQ(a->state, Reg(2, Member::kA, false));
}

TEST(WitnessRules, PairedRegisterEitherMemberMayClaimOnce) {
  Recorded recorded;
  auto registers = MakeRegisters(1, &recorded);
  ASSERT_TRUE(registers->Claim(0, 1, Member::kA, 0, "")->granted);
  ASSERT_EQ(*registers->SetPaired(0, Member::kA, 1, true), Reg(1, Member::kA, true));
  EXPECT_EQ(LastSaved(recorded, 0), Reg(1, Member::kA, true));

  absl::StatusOr<ClaimResult> b = registers->Claim(0, 1, Member::kB, 1, "primary silent");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->granted);
  EXPECT_EQ(b->state, Reg(2, Member::kB, false));  // a grant unpairs
  // The old primary's claim of the same epoch comes second: refused.
  absl::StatusOr<ClaimResult> a = registers->Claim(0, 1, Member::kA, 1, "replica silent");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->granted);
  EXPECT_EQ(a->state, Reg(2, Member::kB, false));
}

TEST(WitnessRules, WrongExpectedEpochIsRefused) {
  Recorded recorded;
  auto registers = MakeRegisters(1, &recorded);
  ASSERT_TRUE(registers->Claim(0, 1, Member::kA, 0, "")->granted);
  ASSERT_TRUE(registers->SetPaired(0, Member::kA, 1, true).ok());
  const size_t saves = recorded.saved.size();
  for (uint64_t expected : {0u, 2u, 7u}) {
    absl::StatusOr<ClaimResult> claim = registers->Claim(0, 1, Member::kA, expected, "");
    ASSERT_TRUE(claim.ok());
    EXPECT_FALSE(claim->granted) << expected;
    EXPECT_EQ(claim->state, Reg(1, Member::kA, true));
  }
  EXPECT_EQ(recorded.saved.size(), saves);
}

TEST(WitnessRules, SetPairedOnlyByTheHolderAtItsEpoch) {
  Recorded recorded;
  auto registers = MakeRegisters(1, &recorded);
  // Nobody holds epoch 0.
  EXPECT_EQ(registers->SetPaired(0, Member::kA, 0, true).status().code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(registers->Claim(0, 1, Member::kA, 0, "")->granted);
  const absl::Status other = registers->SetPaired(0, Member::kB, 1, true).status();
  EXPECT_EQ(other.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(other.message()), HasSubstr("epoch 1 held by a"));
  EXPECT_EQ(registers->SetPaired(0, Member::kA, 2, true).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*registers->Get(0), Reg(1, Member::kA, false));
  const size_t saves = recorded.saved.size();
  EXPECT_EQ(*registers->SetPaired(0, Member::kA, 1, true), Reg(1, Member::kA, true));
  EXPECT_EQ(recorded.saved.size(), saves + 1);
  EXPECT_EQ(*registers->SetPaired(0, Member::kA, 1, true), Reg(1, Member::kA, true));
  EXPECT_EQ(recorded.saved.size(), saves + 1);  // no change, no write
  EXPECT_EQ(*registers->SetPaired(0, Member::kA, 1, false), Reg(1, Member::kA, false));
}

TEST(WitnessRules, ForceGrantsTheNextEpochWhateverTheRegister) {
  Recorded recorded;
  auto registers = MakeRegisters(2, &recorded);
  ASSERT_TRUE(registers->Claim(1, 2, Member::kA, 0, "")->granted);
  // a is solo: only Force moves the shard to b.
  EXPECT_EQ(*registers->Force(1, Member::kB, "node of a lost"), Reg(2, Member::kB, false));
  EXPECT_EQ(LastSaved(recorded, 1), Reg(2, Member::kB, false));
  EXPECT_EQ(*registers->Force(0, Member::kB, ""), Reg(1, Member::kB, false));  // from epoch 0
  // The fenced member's claim of its old epoch is refused.
  EXPECT_FALSE(registers->Claim(1, 2, Member::kA, 1, "")->granted);
}

TEST(WitnessRules, BadRequestsAreInvalidArgumentAndChangeNothing) {
  Recorded recorded;
  auto registers = MakeRegisters(2, &recorded);
  auto code = [](const auto& result) { return result.status().code(); };
  const auto invalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(code(registers->Claim(2, 2, Member::kA, 0, "")), invalid);
  EXPECT_THAT(std::string(registers->Claim(2, 2, Member::kA, 0, "").status().message()),
              HasSubstr("shard_index 2 is not below the witness's --shard_count=2"));
  EXPECT_EQ(code(registers->Claim(0, 2, Member::kNone, 0, "")), invalid);
  EXPECT_EQ(code(registers->Claim(0, 0, Member::kA, 0, "")), invalid);
  EXPECT_EQ(code(registers->Claim(0, 2, Member::kA, 0, std::string(1025, 'x'))), invalid);
  EXPECT_EQ(code(registers->Claim(0, 3, Member::kA, 0, "")),
            absl::StatusCode::kFailedPrecondition);  // another job's member
  EXPECT_EQ(code(registers->SetPaired(5, Member::kA, 0, true)), invalid);
  EXPECT_EQ(code(registers->SetPaired(0, Member::kNone, 0, true)), invalid);
  EXPECT_EQ(code(registers->Get(2)), invalid);
  EXPECT_EQ(code(registers->Force(2, Member::kA, "")), invalid);
  EXPECT_EQ(code(registers->Force(0, Member::kNone, "")), invalid);
  EXPECT_EQ(code(registers->Init(0, 0, Member::kA)), invalid);
  EXPECT_TRUE(recorded.saved.empty());
  for (uint32_t shard = 0; shard < 2; ++shard) {
    EXPECT_EQ(*registers->Get(shard), Reg(0, Member::kNone, false));
  }
}

TEST(WitnessRules, FailedSaveIsUnavailableAndChangesNothing) {
  Recorded recorded;
  auto registers = MakeRegisters(1, &recorded);
  recorded.fail = true;
  const absl::Status claim = registers->Claim(0, 1, Member::kA, 0, "").status();
  EXPECT_EQ(claim.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(claim.message()), HasSubstr("disk full"));
  EXPECT_EQ(registers->Force(0, Member::kB, "").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(*registers->Get(0), Reg(0, Member::kNone, false));
  recorded.fail = false;
  // The epoch that could not be saved was never granted: it is granted now.
  EXPECT_EQ(registers->Claim(0, 1, Member::kA, 0, "")->state, Reg(1, Member::kA, false));
  recorded.fail = true;
  EXPECT_EQ(registers->SetPaired(0, Member::kA, 1, true).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(*registers->Get(0), Reg(1, Member::kA, false));
}

TEST(WitnessRules, InitNeverLowersAnEpoch) {
  Recorded recorded;
  auto registers = MakeRegisters(2, &recorded);
  EXPECT_TRUE(*registers->Init(1, 7, Member::kB));
  EXPECT_EQ(*registers->Get(1), Reg(7, Member::kB, false));
  EXPECT_FALSE(*registers->Init(1, 7, Member::kB));  // the same --init at a restart
  EXPECT_FALSE(*registers->Init(1, 3, Member::kA));
  EXPECT_EQ(*registers->Get(1), Reg(7, Member::kB, false));
  EXPECT_TRUE(*registers->Init(1, 9, Member::kA));
  EXPECT_EQ(*registers->Get(1), Reg(9, Member::kA, false));
  // The recreated holder claims on as before.
  EXPECT_TRUE(registers->Claim(1, 2, Member::kA, 9, "")->granted);
}

// ---------------------------------------------------------------------------
// The file.

TEST(WitnessFile, RoundTrips) {
  const std::vector<WitnessRegister> registers = {Reg(0, Member::kNone, false),
                                                  Reg(3, Member::kB, true),
                                                  Reg(18446744073709551615u, Member::kA, false)};
  const std::string text = WitnessRegisters::Serialize(3, registers);
  EXPECT_EQ(text,
            "dcasgd-witness 1\nshards 3\nregister 1 3 b 1\n"
            "register 2 18446744073709551615 a 0\nend 2\n");
  uint32_t count = 0;
  absl::StatusOr<std::vector<WitnessRegister>> parsed = WitnessRegisters::Parse(text, &count);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(count, 3u);
  EXPECT_EQ(*parsed, registers);
}

TEST(WitnessFile, RejectsCorruptText) {
  const std::string good = "dcasgd-witness 1\nshards 2\nregister 1 3 b 1\nend 1\n";
  uint32_t count = 0;
  ASSERT_TRUE(WitnessRegisters::Parse(good, &count).ok());
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "truncated"},
      {good.substr(0, good.size() - 1), "truncated"},
      {"dcasgd-witness 1\nshards 2\nregister 1 3 b 1\n", "expected 'end 0'"},
      {"dcasgd-witness 2\nshards 2\nend 0\n", "line 1"},
      {"dcasgd-witness 1\nshards 0\nend 0\n", "line 2"},
      {"dcasgd-witness 1\nshards 5000\nend 0\n", "line 2"},
      {"dcasgd-witness 1\nshards 2\nregister 2 3 b 1\nend 1\n", "is not below 2"},
      {"dcasgd-witness 1\nshards 2\nregister 1 3 b 1\nregister 1 4 a 0\nend 2\n", "twice"},
      {"dcasgd-witness 1\nshards 2\nregister 1 0 b 1\nend 1\n", "epoch '0'"},
      {"dcasgd-witness 1\nshards 2\nregister 1 3 - 1\nend 1\n", "holder '-'"},
      {"dcasgd-witness 1\nshards 2\nregister 1 3 b 2\nend 1\n", "paired '2'"},
      {"dcasgd-witness 1\nshards 2\nregister 1 3 b\nend 1\n", "expected 'register"},
      {"dcasgd-witness 1\nshards 2\nregister 1 3 b 1\nend 2\n", "expected 'end 1'"},
  };
  for (const auto& [text, message] : bad) {
    const absl::Status status = WitnessRegisters::Parse(text, &count).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message)) << text;
  }
}

class WitnessFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("witness-file");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
  }
  void TearDown() override { testing::RemoveTree(dir_); }
  std::string path() const { return dir_ + "/" + kWitnessStateFileName; }

  std::string dir_;
};

TEST_F(WitnessFileTest, CreatedAtStartAndRestored) {
  std::string restored;
  {
    auto registers = OpenWitnessRegisters(dir_, 2, &restored);
    ASSERT_TRUE(registers.ok()) << registers.status();
    EXPECT_THAT(restored, HasSubstr("absent"));
    EXPECT_EQ(*ReadWholeFile(path()), "dcasgd-witness 1\nshards 2\nend 0\n");
    ASSERT_TRUE((*registers)->Claim(1, 2, Member::kA, 0, "")->granted);
    ASSERT_TRUE((*registers)->SetPaired(1, Member::kA, 1, true).ok());
  }
  auto reopened = OpenWitnessRegisters(dir_, 2, &restored);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_THAT(restored, HasSubstr("1 of 2 registers held, highest epoch 1"));
  EXPECT_EQ(*(*reopened)->Get(1), Reg(1, Member::kA, true));
}

TEST_F(WitnessFileTest, CorruptFileIsDataLoss) {
  ASSERT_TRUE(WriteFileAtomically(path(), "dcasgd-witness 1\nshards 2\nregister 1 3 b 1\n").ok());
  std::string restored;
  const absl::Status status = OpenWitnessRegisters(dir_, 2, &restored).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr(path()));
  EXPECT_THAT(std::string(status.message()), HasSubstr("--init"));
}

TEST_F(WitnessFileTest, AnotherShardCountIsRefused) {
  std::string restored;
  ASSERT_TRUE(OpenWitnessRegisters(dir_, 2, &restored).ok());
  const absl::Status status = OpenWitnessRegisters(dir_, 3, &restored).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("registers of 2 shards"));
}

TEST_F(WitnessFileTest, MissingDirectoryIsCreated) {
  std::string restored;
  ASSERT_TRUE(OpenWitnessRegisters(dir_ + "/new/state", 2, &restored).ok());
  EXPECT_TRUE(ReadWholeFile(dir_ + "/new/state/" + kWitnessStateFileName).ok());
}

TEST_F(WitnessFileTest, UnusableDirectoryFailsTheStart) {
  // A directory that cannot be made (a file is in the way).
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/file", "x").ok());
  std::string restored;
  const absl::Status status = OpenWitnessRegisters(dir_ + "/file/state", 2, &restored).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("cannot create --state_dir"));
}

TEST(WitnessOptions, ParsesInit) {
  absl::StatusOr<std::vector<WitnessInit>> init = ParseWitnessInit(" 0:4:a, 2:9:b ", 3);
  ASSERT_TRUE(init.ok()) << init.status();
  ASSERT_EQ(init->size(), 2u);
  EXPECT_EQ((*init)[1].shard, 2u);
  EXPECT_EQ((*init)[1].epoch, 9u);
  EXPECT_EQ((*init)[1].member, Member::kB);
  EXPECT_TRUE(ParseWitnessInit("", 3)->empty());
  for (const char* bad : {"0:4", "3:4:a", "0:0:a", "0:4:c", "0:4:a,0:5:b", "x:4:a"}) {
    EXPECT_EQ(ParseWitnessInit(bad, 3).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(WitnessOptions, RequiresStateDirAndShardCount) {
  const EnvLookup no_env = [](const std::string&) { return std::nullopt; };
  EXPECT_THAT(std::string(ParseWitnessOptions({"--shard_count=2"}, no_env).status().message()),
              HasSubstr("--state_dir is required"));
  EXPECT_THAT(std::string(ParseWitnessOptions({"--state_dir=/x"}, no_env).status().message()),
              HasSubstr("--shard_count=0"));
  const EnvLookup env = [](const std::string& name) -> std::optional<std::string> {
    if (name == "DCASGD_SHARD_COUNT") return "4";
    if (name == "DCASGD_STATE_DIR") return "/var/lib/dcasgd/witness";
    return std::nullopt;
  };
  absl::StatusOr<WitnessOptions> options = ParseWitnessOptions({"--init=3:2:b"}, env);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->shard_count, 4u);
  EXPECT_EQ(options->state_dir, "/var/lib/dcasgd/witness");
  EXPECT_EQ(options->init.size(), 1u);
}

// The shared server flags (auth/server_flags.h) are the witness's too, read
// and checked as dcasgd-ps reads them.
TEST(WitnessOptions, ReadsTheSharedSecurityFlags) {
  const EnvLookup no_env = [](const std::string&) { return std::nullopt; };
  absl::StatusOr<WitnessOptions> options = ParseWitnessOptions(
      {"--state_dir=/x", "--shard_count=1", "--tls_cert=/c", "--tls_key=/k", "--tls_ca=/ca",
       "--auth_cert_roles=member-a=replication", "--health_listen=127.0.0.1:0"},
      no_env);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->tls.client_ca, "/ca");
  EXPECT_EQ(options->health_listen, "127.0.0.1:0");
  EXPECT_EQ(options->auth.cert_roles.size(), 1u);
  EXPECT_THAT(options->DebugString(), HasSubstr("tls=mutual auth=certificates"));
  EXPECT_THAT(
      std::string(ParseWitnessOptions({"--state_dir=/x", "--shard_count=1", "--tls_key=/k"}, no_env)
                      .status()
                      .message()),
      HasSubstr("TLS needs both --tls_cert and --tls_key"));
}

// ---------------------------------------------------------------------------
// A real dcasgd-witness process.

// A client of one witness with its own channel (a member, or an operator).
class WitnessClient {
 public:
  WitnessClient(const std::string& address, const std::string& token_file = "") {
    auth::ClientSecurity security;
    security.token_file = token_file;
    absl::StatusOr<std::shared_ptr<const auth::ClientCredentials>> credentials =
        auth::ClientCredentials::Load(security);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    grpc::ChannelArguments args;
    // A channel of its own, not shared with the other clients' (one TCP
    // connection each, as separate member processes have).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stub_ = v1::Witness::NewStub((*credentials)->NewChannel(address, args));
  }

  grpc::Status Claim(uint32_t shard, uint32_t shard_count, v1::Member member, uint64_t expected,
                     v1::ClaimResponse* response) {
    v1::ClaimRequest request;
    request.set_shard_index(shard);
    request.set_shard_count(shard_count);
    request.set_member(member);
    request.set_expected_epoch(expected);
    request.set_reason("witness_test");
    grpc::ClientContext context;
    Deadline(&context);
    return stub_->Claim(&context, request, response);
  }
  grpc::Status SetPaired(uint32_t shard, v1::Member member, uint64_t epoch,
                         v1::WitnessRegister* response) {
    v1::SetPairedRequest request;
    request.set_shard_index(shard);
    request.set_member(member);
    request.set_epoch(epoch);
    request.set_paired(true);
    grpc::ClientContext context;
    Deadline(&context);
    return stub_->SetPaired(&context, request, response);
  }
  grpc::Status Get(uint32_t shard, v1::WitnessRegister* response) {
    v1::GetRegisterRequest request;
    request.set_shard_index(shard);
    grpc::ClientContext context;
    Deadline(&context);
    return stub_->GetRegister(&context, request, response);
  }
  grpc::Status Force(uint32_t shard, v1::Member member, v1::WitnessRegister* response) {
    v1::ForceRequest request;
    request.set_shard_index(shard);
    request.set_member(member);
    request.set_reason("witness_test");
    grpc::ClientContext context;
    Deadline(&context);
    return stub_->Force(&context, request, response);
  }

 private:
  static void Deadline(grpc::ClientContext* context) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  }
  std::unique_ptr<v1::Witness::Stub> stub_;
};

class WitnessProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::string> dir = testing::MakeTempDir("witness-process");
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = *dir;
  }
  void TearDown() override {
    witness_.reset();
    testing::RemoveTree(dir_);
  }

  void StartWitness(std::vector<std::string> flags) {
    flags.push_back("--state_dir=" + dir_);
    absl::StatusOr<std::unique_ptr<testing::PsProcess>> witness =
        testing::PsProcess::StartBinary(testing::WitnessBinaryPath(), std::move(flags));
    ASSERT_TRUE(witness.ok()) << witness.status();
    witness_ = *std::move(witness);
  }
  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    EXPECT_TRUE(WriteFileAtomically(path, text, /*durable=*/false).ok());
    return path;
  }

  std::string dir_;
  std::unique_ptr<testing::PsProcess> witness_;
};

// Many members' clients race for every epoch; each winner pairs its register
// so that the next epoch is open to both members again. Every epoch must be
// granted exactly once: one grant per epoch is what rules out two primaries.
TEST_F(WitnessProcessTest, ConcurrentClaimsGrantEachEpochOnce) {
  StartWitness({"--shard_count=2"});
  constexpr int kClients = 12;
  constexpr uint64_t kLastEpoch = 60;
  absl::Mutex mu;
  std::map<uint64_t, int> grants;  // epoch -> how many clients were granted it
  std::atomic<int> refusals{0};    // counted from several threads
  // Every client connects before any claims, so that they all race.
  absl::Barrier* start = new absl::Barrier(kClients);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      WitnessClient client(witness_->address());
      v1::WitnessRegister first;
      EXPECT_TRUE(client.Get(1, &first).ok());  // connected
      if (start->Block()) delete start;
      const v1::Member member = c % 2 == 0 ? v1::MEMBER_A : v1::MEMBER_B;
      while (true) {
        v1::WitnessRegister reg;
        ASSERT_TRUE(client.Get(1, &reg).ok());
        if (reg.epoch() >= kLastEpoch) return;
        v1::ClaimResponse claim;
        const grpc::Status status = client.Claim(1, 2, member, reg.epoch(), &claim);
        ASSERT_TRUE(status.ok()) << status.error_message();
        if (!claim.granted()) {
          refusals.fetch_add(1);
          continue;
        }
        EXPECT_EQ(claim.state().epoch(), reg.epoch() + 1);
        EXPECT_EQ(claim.state().holder(), member);
        {
          absl::MutexLock lock(&mu);
          ++grants[claim.state().epoch()];
        }
        v1::WitnessRegister paired;
        // A faster client of the same member name may have moved on already.
        const grpc::Status set = client.SetPaired(1, member, claim.state().epoch(), &paired);
        EXPECT_TRUE(set.ok() || set.error_code() == grpc::StatusCode::FAILED_PRECONDITION)
            << set.error_message();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_EQ(grants.size(), kLastEpoch);
  uint64_t expected = 1;
  for (const auto& [epoch, count] : grants) {
    EXPECT_EQ(epoch, expected++);
    EXPECT_EQ(count, 1) << "epoch " << epoch << " granted " << count << " times";
  }
  EXPECT_GT(refusals.load(), 0);  // the clients did race
  WitnessClient client(witness_->address());
  v1::WitnessRegister other;
  ASSERT_TRUE(client.Get(0, &other).ok());
  EXPECT_EQ(other.epoch(), 0u);  // shard 0 untouched
  // The metrics count the same.
  absl::StatusOr<std::string> metrics = testing::HttpGet(witness_->metrics_port(), "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_THAT(*metrics,
              HasSubstr(absl::StrCat("dcasgd_witness_claims_total{result=\"granted\",shard=\"1\"} ",
                                     kLastEpoch, "\n")));
  EXPECT_THAT(*metrics,
              HasSubstr(absl::StrCat("dcasgd_witness_claims_total{result=\"refused\",shard=\"1\"} ",
                                     refusals.load(), "\n")));
  EXPECT_THAT(*metrics,
              HasSubstr(absl::StrCat("dcasgd_witness_epoch{shard=\"1\"} ", kLastEpoch, "\n")));
  EXPECT_THAT(*metrics, HasSubstr("dcasgd_witness_epoch{shard=\"0\"} 0\n"));
  // The exposition passes Prometheus' own lint.
  const std::string file = dir_ + "/metrics.txt";
  std::ofstream(file) << *metrics;
  const int lint = std::system(("promtool check metrics < " + file + " 2>&1").c_str());
  ASSERT_TRUE(WIFEXITED(lint));
  EXPECT_EQ(WEXITSTATUS(lint), 0) << "promtool check metrics failed on:\n" << *metrics;
}

TEST_F(WitnessProcessTest, RegistersSurviveSigkill) {
  StartWitness({"--shard_count=3"});
  {
    WitnessClient client(witness_->address());
    v1::ClaimResponse claim;
    v1::WitnessRegister reg;
    ASSERT_TRUE(client.Claim(2, 3, v1::MEMBER_A, 0, &claim).ok());
    ASSERT_TRUE(claim.granted());
    ASSERT_TRUE(client.SetPaired(2, v1::MEMBER_A, 1, &reg).ok());
    ASSERT_TRUE(client.Claim(2, 3, v1::MEMBER_B, 1, &claim).ok());
    ASSERT_TRUE(claim.granted());  // answered: so it was durable before
  }
  ASSERT_TRUE(witness_->Kill(SIGKILL).ok());
  ASSERT_EQ(*witness_->WaitExit(), 128 + SIGKILL);
  ASSERT_TRUE(witness_->Restart().ok()) << witness_->Log();
  WitnessClient client(witness_->address());
  v1::WitnessRegister reg;
  ASSERT_TRUE(client.Get(2, &reg).ok());
  EXPECT_EQ(reg.epoch(), 2u);
  EXPECT_EQ(reg.holder(), v1::MEMBER_B);
  EXPECT_FALSE(reg.paired());
  // The deposed a's claim of epoch 2 stays refused after the restart.
  v1::ClaimResponse claim;
  ASSERT_TRUE(client.Claim(2, 3, v1::MEMBER_A, 1, &claim).ok());
  EXPECT_FALSE(claim.granted());
  EXPECT_EQ(claim.state().epoch(), 2u);
  ASSERT_TRUE(client.Claim(2, 3, v1::MEMBER_B, 2, &claim).ok());
  EXPECT_TRUE(claim.granted());
  EXPECT_THAT(witness_->Log(), HasSubstr("1 of 3 registers held, highest epoch 2"));
}

TEST_F(WitnessProcessTest, BadRequestsChangeNothing) {
  StartWitness({"--shard_count=2"});
  WitnessClient client(witness_->address());
  v1::ClaimResponse claim;
  grpc::Status status = client.Claim(2, 2, v1::MEMBER_A, 0, &claim);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("shard_index 2"));
  status = client.Claim(0, 2, static_cast<v1::Member>(7), 0, &claim);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("member must be member a or b"));
  status = client.Claim(0, 4, v1::MEMBER_A, 0, &claim);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  v1::WitnessRegister reg;
  EXPECT_EQ(client.Get(9, &reg).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(client.SetPaired(0, v1::MEMBER_A, 0, &reg).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  for (uint32_t shard = 0; shard < 2; ++shard) {
    ASSERT_TRUE(client.Get(shard, &reg).ok());
    EXPECT_EQ(reg.epoch(), 0u);
  }
  EXPECT_EQ(*ReadWholeFile(dir_ + "/" + kWitnessStateFileName),
            "dcasgd-witness 1\nshards 2\nend 0\n");
}

TEST_F(WitnessProcessTest, ReplicationRoleClaimsAdminForces) {
  const std::string tokens = WriteFile("tokens",
                                       "replication-token-0123456789 replication shards\n"
                                       "worker-token-01234567890123 worker\n"
                                       "admin-token-012345678901234 admin ops\n");
  StartWitness({"--shard_count=1", "--auth_tokens_file=" + tokens});
  v1::ClaimResponse claim;
  v1::WitnessRegister reg;

  WitnessClient anonymous(witness_->address());
  EXPECT_EQ(anonymous.Claim(0, 1, v1::MEMBER_A, 0, &claim).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(anonymous.Get(0, &reg).error_code(), grpc::StatusCode::UNAUTHENTICATED);

  WitnessClient worker(witness_->address(),
                       WriteFile("worker.token", "worker-token-01234567890123\n"));
  const grpc::Status denied = worker.Claim(0, 1, v1::MEMBER_A, 0, &claim);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("needs role replication or admin"));
  EXPECT_EQ(worker.Get(0, &reg).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  WitnessClient member(witness_->address(),
                       WriteFile("replication.token", "replication-token-0123456789\n"));
  ASSERT_TRUE(member.Claim(0, 1, v1::MEMBER_A, 0, &claim).ok());
  EXPECT_TRUE(claim.granted());
  EXPECT_EQ(member.Force(0, v1::MEMBER_B, &reg).error_code(), grpc::StatusCode::PERMISSION_DENIED);

  WitnessClient admin(witness_->address(),
                      WriteFile("admin.token", "admin-token-012345678901234\n"));
  ASSERT_TRUE(admin.Force(0, v1::MEMBER_B, &reg).ok());
  EXPECT_EQ(reg.epoch(), 2u);
  EXPECT_EQ(reg.holder(), v1::MEMBER_B);
  EXPECT_THAT(witness_->Log(), HasSubstr("FORCED epoch 2 to member b"));
}

TEST_F(WitnessProcessTest, CorruptStateStopsTheStart) {
  WriteFile(kWitnessStateFileName, "dcasgd-witness 1\nshards 2\nregister 0 4 a 0\n");
  absl::StatusOr<std::unique_ptr<testing::PsProcess>> witness = testing::PsProcess::StartBinary(
      testing::WitnessBinaryPath(), {"--shard_count=2", "--state_dir=" + dir_});
  ASSERT_FALSE(witness.ok());
  EXPECT_THAT(std::string(witness.status().message()), HasSubstr("exited with 1"));
  EXPECT_THAT(std::string(witness.status().message()), HasSubstr("DATA_LOSS"));
}

TEST_F(WitnessProcessTest, APortInUseStopsTheStartInsteadOfBeingShared) {
  StartWitness({"--shard_count=1", "--health_listen=127.0.0.1:0"});
  absl::StatusOr<std::string> other_dir = testing::MakeTempDir("witness-process-other");
  ASSERT_TRUE(other_dir.ok()) << other_dir.status();
  for (const std::string& flag :
       {absl::StrCat("--listen=127.0.0.1:", witness_->grpc_port()),
        absl::StrCat("--health_listen=127.0.0.1:", witness_->health_port())}) {
    absl::StatusOr<std::unique_ptr<testing::PsProcess>> second = testing::PsProcess::StartBinary(
        testing::WitnessBinaryPath(), {"--shard_count=1", "--state_dir=" + *other_dir, flag});
    ASSERT_FALSE(second.ok()) << flag;
    EXPECT_THAT(std::string(second.status().message()), HasSubstr("exited with 1")) << flag;
    EXPECT_THAT(std::string(second.status().message()), HasSubstr("address in use")) << flag;
  }
  testing::RemoveTree(*other_dir);
}

TEST_F(WitnessProcessTest, InitRecreatesLostRegisters) {
  StartWitness({"--shard_count=2", "--init=1:7:b"});
  WitnessClient client(witness_->address());
  v1::WitnessRegister reg;
  ASSERT_TRUE(client.Get(1, &reg).ok());
  EXPECT_EQ(reg.epoch(), 7u);
  EXPECT_EQ(reg.holder(), v1::MEMBER_B);
  v1::ClaimResponse claim;
  ASSERT_TRUE(client.Claim(1, 2, v1::MEMBER_B, 7, &claim).ok());
  EXPECT_TRUE(claim.granted());
  // Restarted with the same --init, the register is not set back to 7.
  ASSERT_TRUE(witness_->Restart().ok()) << witness_->Log();
  WitnessClient again(witness_->address());
  ASSERT_TRUE(again.Get(1, &reg).ok());
  EXPECT_EQ(reg.epoch(), 8u);
}

// grpc.health.v1 Check through a generic stub (the health protos are not
// compiled into the tests): the witness's service is SERVING.
TEST_F(WitnessProcessTest, ServesHealth) {
  StartWitness({"--shard_count=1"});
  auto channel = grpc::CreateChannel(witness_->address(), grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  const std::string service = "dcasgd.v1.Witness";
  std::string request = std::string(1, static_cast<char>(1 << 3 | 2)) +
                        std::string(1, static_cast<char>(service.size())) + service;
  grpc::Slice slice(request);
  grpc::ByteBuffer buffer(&slice, 1);
  grpc::ByteBuffer reply;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  absl::Mutex mu;
  bool done = false;
  grpc::Status result;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &buffer, &reply,
                 [&](grpc::Status status) {
                   absl::MutexLock lock(&mu);
                   result = std::move(status);
                   done = true;
                 });
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&done));
  }
  ASSERT_TRUE(result.ok()) << result.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(reply.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(s.begin(), s.end());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // SERVING
}

}  // namespace
}  // namespace dcasgd
