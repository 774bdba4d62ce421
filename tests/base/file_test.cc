#include "base/file.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "base/port_file.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace dcasgd {
namespace {

using ::testing::HasSubstr;

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/dcasgd_file_test.XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }

  // The names in the directory (temporary files would show here).
  std::vector<std::string> Entries() const {
    std::vector<std::string> names;
    DIR* d = opendir(dir_.c_str());
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(d);
    return names;
  }

  std::string dir_;
};

TEST_F(FileTest, WriteReplacesTheFileWhole) {
  const std::string path = dir_ + "/state";
  ASSERT_TRUE(WriteFileAtomically(path, "first").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second, longer").ok());
  EXPECT_EQ(ReadWholeFile(path).value(), "second, longer");
  EXPECT_EQ(Entries(), std::vector<std::string>{"state"}) << "no temporary file is left";
}

TEST_F(FileTest, AnUncommittedWriterLeavesTheOldFileAndNoTemporary) {
  const std::string path = dir_ + "/state";
  ASSERT_TRUE(WriteFileAtomically(path, "kept").ok());
  {
    absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer = AtomicFileWriter::Create(path);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Write("never committed").ok());
  }
  EXPECT_EQ(ReadWholeFile(path).value(), "kept");
  EXPECT_EQ(Entries(), std::vector<std::string>{"state"});
}

TEST_F(FileTest, StreamedWritesArriveInOrder) {
  const std::string path = dir_ + "/big";
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> writer =
      AtomicFileWriter::Create(path, "checkpoint");
  ASSERT_TRUE(writer.ok()) << writer.status();
  std::string expected;
  for (int i = 0; i < 1000; ++i) {
    const std::string piece = std::to_string(i) + ",";
    ASSERT_TRUE((*writer)->Write(piece).ok());
    expected += piece;
  }
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(ReadWholeFile(path).value(), expected);
}

TEST_F(FileTest, ErrorsNameTheFileAndTheStep) {
  const std::string path = dir_ + "/missing-dir/state";
  const absl::Status s = WriteFileAtomically(path, "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_THAT(s.message(), HasSubstr("create"));
  absl::StatusOr<std::unique_ptr<AtomicFileWriter>> labelled =
      AtomicFileWriter::Create(path, "checkpoint");
  EXPECT_THAT(labelled.status().message(), HasSubstr("checkpoint " + path));
}

TEST_F(FileTest, ReadingAMissingFileIsNotFound) {
  EXPECT_EQ(ReadWholeFile(dir_ + "/nothing").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FileTest, PortFileListsEveryPortOnItsLine) {
  const std::string path = dir_ + "/ports";
  ASSERT_TRUE(WritePortFile(path, {{"grpc", 7000}, {"metrics", 9100}}).ok());
  EXPECT_EQ(ReadWholeFile(path).value(), "grpc 7000\nmetrics 9100\n");
  ASSERT_TRUE(WritePortFile(path, {{"metrics", 0}}).ok());
  EXPECT_EQ(ReadWholeFile(path).value(), "metrics 0\n");
}

}  // namespace
}  // namespace dcasgd
