#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <filesystem>

#include "m3d/error.h"

namespace m3d::io {
namespace {

void fsync_directory_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dir_fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

}  // namespace

void require_directory_of(const std::string& path) {
  const auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::is_directory(dir, ec)) fail("{}: cannot write: directory {} does not exist", path, dir.string());
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  require_directory_of(path_);
  temp_path_ = fmt::format("{}.tmp.{}", path_, ::getpid());
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("{}: cannot write: {}", path_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t size) {
  const auto* bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, bytes, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("{}: write failed: {}", path_, std::strerror(errno));
    }
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) fail("{}: write failed (fsync): {}", path_, std::strerror(errno));
  if (::close(fd_) != 0) {
    const int err = errno;
    fd_ = -1;
    ::unlink(temp_path_.c_str());
    fail("{}: write failed (close): {}", path_, std::strerror(err));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(temp_path_.c_str());
    fail("{}: cannot rename {} into place: {}", path_, temp_path_, std::strerror(err));
  }
  fsync_directory_of(path_);  // make the rename itself durable
}

AppendFile::AppendFile(std::string path, std::string what) : path_(std::move(path)), what_(std::move(what)), file_(std::fopen(path_.c_str(), "ab")) {
  if (file_ == nullptr) fail("{}: cannot append to {}: {}", path_, what_, std::strerror(errno));
}

AppendFile::~AppendFile() { std::fclose(file_); }

void AppendFile::append_line(std::string_view line) {
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fputc('\n', file_) == EOF || std::fflush(file_) != 0) {
    fail("{}: cannot append to {}: {}", path_, what_, std::strerror(errno));
  }
}

void AppendFile::sync() {
  if (::fsync(::fileno(file_)) != 0) fail("{}: cannot sync {}: {}", path_, what_, std::strerror(errno));
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile file(path);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

void write_via_temp(const std::string& path, const std::function<void(const std::string& temp)>& write,
                    const std::function<void(const std::string& temp)>& check) {
  require_directory_of(path);
  const std::filesystem::path target(path);
  const std::string temp = (target.parent_path() / fmt::format(".tmp.{}.{}", ::getpid(), target.filename().string())).string();
  struct Remove {
    const std::string& temp;
    bool armed = true;
    ~Remove() {
      if (armed) ::unlink(temp.c_str());
    }
  } remove{temp};
  // The temporary is created here first: third-party writers that cannot create it say
  // so without the OS reason (niftilib) or in their own words (ITK), open's errno says why.
  const int created = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (created < 0) fail("{}: cannot write: {}", path, std::strerror(errno));
  ::close(created);
  write(temp);
  std::error_code ec;
  if (std::filesystem::file_size(temp, ec) == 0 || ec) fail("{}: cannot write: the writer produced no data", path);
  if (check) check(temp);
  const int fd = ::open(temp.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot write: {}", path, std::strerror(errno));
  const int synced = ::fsync(fd), err = errno;
  ::close(fd);
  if (synced != 0) fail("{}: write failed (fsync): {}", path, std::strerror(err));
  if (::rename(temp.c_str(), path.c_str()) != 0) fail("{}: cannot rename the written file into place: {}", path, std::strerror(errno));
  remove.armed = false;
  fsync_directory_of(path);
}

}  // namespace m3d::io
